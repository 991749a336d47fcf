"""Chunk writes without zarr's slow "is this chunk all fill value?" check.

Before zarr (3.1) writes a chunk it asks whether the chunk holds only the fill value (then it
writes nothing). ``NDBuffer.all_equal`` answers through ``np.array_equal(..., equal_nan=True)``,
and NumPy's list of dtypes that cannot hold NaN leaves out the unsigned integers: for the
``uint8`` masks and ``uint16`` microscopy this toolkit writes, every chunk is tested with
``isnan``, copied by a boolean index, then compared. That is a quarter of zarr's own CPU time
in a plain copy of ``uint16`` shards (zarr-python PR #4382 proposes the same fix upstream).

:class:`FillCheckNDBuffer` answers the same question in one pass over the chunk for integer,
boolean and float chunks against a zero fill (``count_nonzero``; floats bit for bit, as zarr
does, so that ``-0.0`` is not taken for the fill ``0.0``) and defers to zarr otherwise. It is
used per call (:func:`write_region`, :class:`FastWrites`), through ``prototype=``, never through
zarr's global config; where the config names another buffer (a GPU one) zarr's own is kept.
In a sharded array zarr accepts its own prototype only (it asserts so) where a write reads a
chunk back to merge into it: such writes, not aligned to inner chunks, keep zarr's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.buffer import cpu
from zarr.core.buffer import BufferPrototype, default_buffer_prototype

__all__ = ["FastWrites", "FillCheckNDBuffer", "prototype", "write_region"]

_DEFAULT = ("zarr.buffer.cpu.Buffer", "zarr.buffer.cpu.NDBuffer")


class FillCheckNDBuffer(cpu.NDBuffer):
    """zarr's CPU ``NDBuffer`` with a one-pass :meth:`all_equal` against a zero fill value.

    Examples
    --------
    >>> import numpy as np
    >>> FillCheckNDBuffer(np.zeros((4, 4), np.uint16)).all_equal(np.uint16(0))
    True
    >>> FillCheckNDBuffer(np.array([0.0, -0.0], np.float32)).all_equal(np.float32(0.0))
    False
    """

    def all_equal(self, other: Any, equal_nan: bool = True) -> bool:
        """Whether every element equals the scalar ``other``, exactly as zarr's own answers.

        Parameters
        ----------
        other : scalar
            The fill value.
        equal_nan : bool
            NaN equals NaN (only reaches zarr's own test: a zero fill is not NaN).

        Returns
        -------
        bool

        Examples
        --------
        >>> import numpy as np
        >>> FillCheckNDBuffer(np.array([0, 3], np.uint8)).all_equal(np.uint8(0))
        False
        """
        data = self._data
        kind = data.dtype.kind
        fill = np.asarray(other) if other is not None else None
        if fill is not None and fill.ndim == 0 and fill.dtype.kind in "biuf" and fill == 0:
            if kind in "biu" and fill.dtype.kind in "biu":
                return not np.count_nonzero(data)
            # zarr compares the bits of a zero fill (so +0.0 and -0.0 differ)
            if kind == "f" and fill.dtype.kind == "f" and not np.signbit(fill):
                return not np.count_nonzero(data.view(f"u{data.dtype.itemsize}"))
        return super().all_equal(other, equal_nan=equal_nan)


_FAST = BufferPrototype(buffer=cpu.Buffer, nd_buffer=FillCheckNDBuffer)


def prototype(
    arr: zarr.Array[Any] | None = None, selection: tuple[Any, ...] | None = None
) -> BufferPrototype:
    """The buffer prototype for a chunk write: the fast fill check, unless zarr is set otherwise.

    Given a sharded ``arr`` and the ``selection`` written, zarr's own unless every inner chunk
    the write touches is covered whole (zarr merges the others through a path that accepts only
    its own prototype).

    Parameters
    ----------
    arr : zarr.Array, optional
        The array written.
    selection : tuple of slice, optional
        The region written.

    Returns
    -------
    zarr.core.buffer.BufferPrototype

    Examples
    --------
    >>> prototype().nd_buffer.__name__
    'FillCheckNDBuffer'
    """
    if (zarr.config.get("buffer"), zarr.config.get("ndbuffer")) != _DEFAULT:
        return default_buffer_prototype()
    if arr is not None and arr.shards is not None and not _whole_chunks(arr, selection):
        return default_buffer_prototype()
    return _FAST


def _whole_chunks(arr: zarr.Array[Any], selection: tuple[Any, ...] | None) -> bool:
    """Whether ``selection`` (slices) covers only whole inner chunks of ``arr``."""
    if not isinstance(selection, tuple) or len(selection) != arr.ndim:
        return False
    for sl, n, c in zip(selection, arr.shape, arr.chunks, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            return False
        start, stop, _ = sl.indices(n)
        if start % c or stop % c:  # an edge chunk the array ends inside is not whole either
            return False
    return True


def write_region(arr: zarr.Array[Any], selection: tuple[slice, ...], value: Any) -> None:
    """``arr[selection] = value`` with the fast fill check (see :func:`prototype`).

    Parameters
    ----------
    arr : zarr.Array
        The target.
    selection : tuple of slice
        The region.
    value : array-like
        What to write there.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> a = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="u1")
    >>> write_region(a, (slice(0, 2),), np.array([5, 6], np.uint8))
    >>> a[:].tolist()
    [5, 6, 0, 0]
    """
    arr.set_basic_selection(selection, value, prototype=prototype(arr, selection))


class FastWrites:
    """A zarr array as a ``dask.array.store`` target whose writes use :func:`write_region`.

    Parameters
    ----------
    arr : zarr.Array
        The target.

    Examples
    --------
    >>> import dask.array as da, numpy as np, zarr
    >>> a = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="u1")
    >>> da.store(da.arange(4, chunks=2).astype("u1"), FastWrites(a), lock=False)
    >>> a[:].tolist()
    [0, 1, 2, 3]
    """

    def __init__(self, arr: zarr.Array[Any]) -> None:
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.ndim = arr.ndim

    def __setitem__(self, selection: tuple[slice, ...], value: Any) -> None:
        write_region(self.arr, selection, value)
