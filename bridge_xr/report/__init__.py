"""Reports built on everything below: registration QC, model comparison, study report, demo.

Examples
--------
>>> from bridge_xr import report
>>> "registration_qc" in report.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "registration_qc": "qc",
        "compare_models": "compare",
        "write_report": "study",
        "register_slices_with_report": "slices_run",
    },
)
