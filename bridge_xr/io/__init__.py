"""The only package that knows paths, stores and file formats: read and write images and subjects.

Examples
--------
>>> from bridge_xr import io
>>> "read_image" in io.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "resolve_store": "_store",
        "read_image": "read",
        "write_multiscale": "ome_zarr",
        "read_multiscale": "read",
        "add_image": "subject",
        "read_subject": "subject",
        "convert_mri": "convert",
        "convert_microscopy": "convert",
        "convert_slices": "slices",
        "convert_expansion": "expansion",
        "export_nifti": "export",
        "export_ome_zarr_05": "export",
        "validate_store": "validate",
        "subject_name": "study",
        "subject_stores": "study",
    },
)
