"""Lesions: connected components of thresholded probability maps, per ROI, exact across chunks.

Examples
--------
>>> from bridge_xr import lesions
>>> "component_table" in lesions.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "component_table": "components",
        "lesion_table": "tables",
        "lesion_tables": "tables",
        "LesionTables": "tables",
        "polygon_labels": "rois",
        "read_polygons": "rois",
        "roi_mri": "status",
        "compare_status": "status",
        "read_status": "status",
        "colocalize": "coloc",
        "Colocalization": "coloc",
        "agreement": "coloc",
        "otsu_of": "coloc",
    },
)
