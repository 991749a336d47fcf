"""The README's Python section, run verbatim on a phantom study (the docs cannot rot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import write_phantom_study

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_python_section_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the README's paths are relative: demo-out/...
    study = write_phantom_study(tmp_path / "demo-out", PhantomConfig.tiny())
    section = README.read_text(encoding="utf-8").split("## Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    fov = np.asarray(study.phantom.config.twop_fov_um)
    cells = pd.DataFrame({"x": [fov[2] / 2], "y": [fov[1] / 2], "z": [fov[0] / 2]})
    ns: dict[str, object] = {"cells_df": cells}
    exec(compile(code, str(README), "exec"), ns)
    # what it computed is right, not just that it ran
    truth = study.phantom.truth.inverse(cells[["z", "y", "x"]].to_numpy())
    got = ns["cells"][["z", "y", "x"]].to_numpy()  # type: ignore[index]
    out, scene = ns["out"], ns["scene"]
    # rater 1's landmarks are noisy: the error is bounded by the registration's own accuracy
    from bridge_xr.register import loo_tre_um
    from bridge_xr.register.landmarks import arrays

    _, f, m = arrays(ns["landmarks"])  # type: ignore[arg-type]
    loo = float(np.sqrt(np.mean(loo_tre_um("tps", f, m) ** 2)))
    assert np.linalg.norm(got - truth, axis=1).max() < 3 * loo
    assert out.shape == scene["invivo_mri/d060/T2w"].shape  # type: ignore[index, attr-defined]
    assert "registered/d060/angiogram" in scene  # type: ignore[operator]
    assert float(ns["omnibus"]["p"].iloc[0]) < 0.05  # type: ignore[index]
