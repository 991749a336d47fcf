"""bridge_xr: correlative MRI-microscopy imaging on calibrated OME-Zarr 0.6 stores."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
