from pathlib import Path

from bridge_xr.model.metadata import generate_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_match_the_models() -> None:
    generated = generate_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMAS.glob("*.schema.json")}
    assert set(on_disk) == set(generated), "regenerate: python -m bridge_xr.model.metadata schemas"
    for name, text in generated.items():
        assert on_disk[name] == text, f"{name} drifted; regenerate with make schemas"
