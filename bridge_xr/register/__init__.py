"""Landmark registration: fit models, store them, measure their accuracy, export them.

Examples
--------
>>> from bridge_xr import register
>>> "fit" in register.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "fit": "registration",
        "landmark_set": "registration",
        "register": "registration",
        "import_landmarks": "landmarks",
        "export_landmarks": "landmarks",
        "registration_report": "accuracy",
        "rmse_um": "accuracy",
        "loo_tre_um": "accuracy",
        "inter_rater": "raters",
        "refine_landmarks": "refine",
        "export_itk": "itk",
        "registration_table": "summary",
        "register_slices": "slices",
        "import_atlas": "atlas",
        "atlas_points": "atlas",
        "atlas_image": "atlas",
        "place_sample": "navigation",
        "register_intensity": "intensity",
    },
)
