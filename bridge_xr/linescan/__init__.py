"""Line scans: red-cell velocity from kymographs (Radon transform or drawn lines).

Examples
--------
>>> from bridge_xr import linescan
>>> "radon_velocity" in linescan.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "Calibration": "streaks",
        "radon_velocity": "streaks",
        "manual_velocity": "streaks",
        "synthetic_kymograph": "streaks",
        "read_kymograph": "reading",
        "velocity": "run",
    },
)
