import pytest

from bridge_xr.errors import UnitError
from bridge_xr.model.units import canonical_unit, conversion_factor, parse_length


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("um", "micrometer"),
        ("µm", "micrometer"),
        ("μm", "micrometer"),
        ("micron", "micrometer"),
        ("micrometer", "micrometer"),
        ("mm", "millimeter"),
        ("millimeter", "millimeter"),
        ("nm", "nanometer"),
        ("m", "meter"),
        ("ms", "millisecond"),
        ("s", "second"),
    ],
)
def test_canonical_unit_writes_udunits_long_names(text: str, expected: str) -> None:
    assert canonical_unit(text) == expected


@pytest.mark.parametrize("bad", ["", "furlongs per fortnight", "foo", "kg"])
def test_unknown_or_non_length_units_are_refused(bad: str) -> None:
    with pytest.raises(UnitError):
        canonical_unit(bad)


def test_parse_length_and_conversion() -> None:
    assert parse_length("1.1838um") == (1.1838, "micrometer")
    assert parse_length("0.1 mm") == (0.1, "millimeter")
    assert parse_length("5", default_unit="um") == (5.0, "micrometer")
    assert conversion_factor("mm", "um") == pytest.approx(1000.0)
    with pytest.raises(UnitError, match="no unit"):
        parse_length("5")
    with pytest.raises(UnitError, match="positive"):
        parse_length("-1um")
    with pytest.raises(UnitError, match="unknown unit"):
        parse_length("1.2 bananas")
    with pytest.raises(UnitError, match="different things"):
        conversion_factor("mm", "s")
