"""Synthetic data with known ground truth, for tests, examples and benchmarks.

Examples
--------
>>> from bridge_xr import testing
>>> "tiny_scene" in testing.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "tiny_scene": "tiny",
        "tiny_landmarks": "tiny",
        "slice_scene": "exvivo",
        "human_scene": "human",
    },
)
