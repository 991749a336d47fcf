"""Run independent tasks on the active dask-distributed client, or on local threads.

A ``bridge --scheduler tcp://...`` run (or any code that made a :class:`distributed.Client`)
sends the tasks to that cluster; otherwise they run on a thread pool sized to the machine.
Results come back in input order; ``progress(done, total)`` is called as tasks finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")


def active_client() -> Any:
    """The default dask-distributed client, or None."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def run_tasks(
    func: Callable[..., T],
    items: Sequence[Any],
    *,
    progress: Callable[[int, int], None] | None = None,
    client: Any = None,
    threads: int | None = None,
) -> list[T]:
    """``[func(*item) for item in items]``, in parallel; exceptions are raised as they are."""
    total = len(items)
    out: list[Any] = [None] * total
    if progress is not None:
        progress(0, total)
    client = client if client is not None else active_client()
    if client is not None:
        from distributed import as_completed as dist_completed

        futures = [client.submit(func, *item, pure=False) for item in items]
        index = {f.key: k for k, f in enumerate(futures)}
        for done, fut in enumerate(dist_completed(futures), start=1):
            out[index[fut.key]] = fut.result()
            if progress is not None:
                progress(done, total)
        return out
    workers = threads or max(1, min(os.cpu_count() or 1, total))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {pool.submit(func, *item): k for k, item in enumerate(items)}
        for done, fut in enumerate(as_completed(futs), start=1):
            out[futs[fut]] = fut.result()
            if progress is not None:
                progress(done, total)
    return out
