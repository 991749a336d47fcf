"""The dask scheduler for bridge_xr's own computations, chosen without importing distributed.

Given no scheduler, dask looks for a dask-distributed ``Client`` on every compute, and the first
look imports ``distributed`` (about 0.3 s). No client can exist before ``distributed`` has been
imported, so until then bridge_xr names dask's threaded scheduler itself (what dask would pick);
once it is imported, or when the user has configured a scheduler, dask decides as usual.
"""

from __future__ import annotations

import sys
from typing import Any

import dask


def scheduler() -> Any:
    """``scheduler=`` for ``dask.compute`` / ``da.store``: threads, or None to let dask decide.

    Returns
    -------
    callable or None
        ``dask.threaded.get`` while ``distributed`` is not imported and no scheduler is
        configured; otherwise None (an active ``Client``, or the configured scheduler, is used).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(scheduler="synchronous"):
    ...     scheduler() is None
    True
    """
    if "distributed" in sys.modules or dask.config.get("scheduler", None) is not None:
        return None
    from dask.threaded import get

    return get
