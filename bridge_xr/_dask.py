"""dask's scheduler and rechunk method for bridge_xr, chosen without importing distributed.

Given no scheduler, dask looks for a dask-distributed ``Client`` on every compute, and given no
rechunk method it looks for one on every ``rechunk``; the first look imports ``distributed``
(about 0.3 s). No client can exist before ``distributed`` has been imported, so until then
bridge_xr names what dask would pick itself (the threaded scheduler, the ``tasks`` rechunk);
once it is imported, or when the user has configured a choice, dask decides as usual.
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


def rechunk_method() -> str | None:
    """``method=`` for ``dask.array.rechunk``: ``"tasks"``, or None to let dask decide.

    Returns
    -------
    str or None
        ``"tasks"`` while ``distributed`` is not imported and no method is configured (what
        dask picks without a client); otherwise None (dask may choose ``p2p`` on a cluster).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"array.rechunk.method": "tasks"}):
    ...     rechunk_method() is None
    True
    """
    if "distributed" in sys.modules or dask.config.get("array.rechunk.method", None):
        return None
    return "tasks"
