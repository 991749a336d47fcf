"""Tile scans: convert, stitch (phase correlation + global optimisation), flat-field, fuse.

Examples
--------
>>> from bridge_xr import tiles
>>> "fuse" in tiles.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "convert_tiles": "convert",
        "write_tile_scan": "convert",
        "read_tile_scan": "scan",
        "stitch": "stitching",
        "estimate_flatfield": "flatfield",
        "pair_shift": "pairwise",
        "fuse": "fusion",
    },
)
