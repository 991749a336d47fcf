"""dask's scheduler and rechunk method for bridge_xr, chosen without importing distributed.

Given no scheduler, dask looks for a dask-distributed ``Client`` on every compute, and given no
rechunk method it looks for one on every ``rechunk``; the first look imports ``distributed``
(about 0.3 s). No client can exist before ``distributed`` has been imported, so until then
bridge_xr names what dask would pick itself (the threaded scheduler, the ``tasks`` rechunk);
once it is imported, or when the user has configured a choice, dask decides as usual.
"""

from __future__ import annotations

import functools
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


def write_scheduler() -> Any:
    """``scheduler=`` for a computation whose tasks write to zarr: one thread more than cores.

    A task that writes a shard waits while zarr's event loop compresses and stores it (zarr's own
    threads do that work); with one thread per core, a core that could be computing the next
    block stays idle meanwhile. One more thread keeps the cores busy (a resample into a sharded
    store: 8-12 % less wall time on 2 cores, measured in ``benchmarks/bench_resample.py``).
    Like :func:`scheduler`, None when ``distributed`` is imported or a scheduler is configured;
    a configured ``num_workers`` is used as it is.

    Returns
    -------
    callable or None
        ``dask.threaded.get`` with ``cpu_count + 1`` workers, or None (dask decides).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(num_workers=3):
    ...     write_scheduler() is scheduler()
    True
    """
    get = scheduler()
    if get is None or dask.config.get("num_workers", None) is not None:
        return get
    from dask.system import CPU_COUNT

    return functools.partial(get, num_workers=CPU_COUNT + 1)


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
