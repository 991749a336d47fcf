"""Strict JSON out: NaN and infinities become null (strict readers reject ``NaN``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_json(data: Any, path: Path) -> Path:
    """Write ``data`` as indented JSON with NaN written as null; returns ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_json({"rmse_um": float("nan")}, pathlib.Path(tempfile.mkdtemp()) / "r.json")
    >>> p.read_text().split()
    ['{', '"rmse_um":', 'null', '}']
    """
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=2), encoding="utf-8")
    return path
