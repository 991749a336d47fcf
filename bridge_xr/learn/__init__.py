"""Learning vessels in MRI from microscopy: dataset export, nnU-Net, metrics, vessel filters.

Examples
--------
>>> from bridge_xr import learn
>>> "dilated_dice" in learn.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "export_dataset": "dataset",
        "filter_vessels": "workflows",
        "evaluate_masks": "workflows",
        "vessel_visibility": "workflows",
        "train_folds": "workflows",
        "predict_into": "workflows",
        "dice": "metrics",
        "dilated_dice": "metrics",
        "masd": "metrics",
        "hd95": "metrics",
        "evaluate": "metrics",
    },
)
