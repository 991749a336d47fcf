"""Lazy, block-wise resampling through the transform graph, and writing the result.

Examples
--------
>>> from bridge_xr import resampling
>>> "resample" in resampling.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "resample": "blockwise",
        "resample_through": "blockwise",
        "block_errors": "blockwise",
        "resample_into": "write",
        "reslice": "slicing",
        "group_slices": "slicing",
    },
)
