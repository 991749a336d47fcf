"""Per-voxel extraction: microscopy density in every MRI voxel, tables, longitudinal change.

Examples
--------
>>> from bridge_xr import extract
>>> "density" in extract.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "density": "densities",
        "table": "tables",
        "extract_table": "tables",
        "write_table": "tables",
        "read_tables": "tables",
        "analysis_mask": "masks",
        "extract_study": "study",
        "run_longitudinal": "longitudinal",
        "region_densities": "regions",
    },
)
