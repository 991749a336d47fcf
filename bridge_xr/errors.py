"""Exception hierarchy of bridge_xr.

Every error a user can cause by giving bad input is an :class:`InvalidInputError`; the CLI turns
it into one line on stderr and exit status 2.
"""

from __future__ import annotations


class BridgeXRError(Exception):
    """Base class of every bridge_xr error."""


class InvalidInputError(BridgeXRError, ValueError):
    """The user gave input that cannot be used (missing file, bad units, clashing path ...)."""


class UnitError(InvalidInputError):
    """A unit is unknown, of the wrong dimensionality, or does not match across a transform."""


class FormatVersionError(InvalidInputError):
    """An OME-Zarr store declares a version bridge_xr cannot read."""


class NotInvertibleError(BridgeXRError, NotImplementedError):
    """A transform has no closed-form inverse (e.g. a displacement field without its inverse)."""


class NoAffineError(BridgeXRError, TypeError):
    """A transform is not affine and cannot be written as a matrix."""


class EstimationError(InvalidInputError):
    """Landmarks cannot determine the requested model (too few, degenerate, singular)."""
