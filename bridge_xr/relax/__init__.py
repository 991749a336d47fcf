"""Relaxometry: T2 / T2* maps of multi-echo MRI (Rician, least-squares or log-linear fits).

Examples
--------
>>> from bridge_xr import relax
>>> "relax" in relax.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "fit_t2": "fitting",
        "rician_mean": "fitting",
        "relax": "maps",
        "echo_times": "maps",
        "pse": "enhancement",
        "roi_means": "enhancement",
    },
)
