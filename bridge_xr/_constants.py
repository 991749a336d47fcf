"""Names shared by every part of bridge_xr (attribute keys, coordinate-system names, versions)."""

from __future__ import annotations

#: OME-Zarr version written by bridge_xr (exactly this string).
OME_VERSION = "0.6"
#: Versions bridge_xr reads; dev tags and pre-releases are normalised to their release.
READABLE_VERSIONS = ("0.4", "0.5", "0.6")
#: Key of bridge_xr's own metadata, beside (never inside) ``ome``.
ATTRS_KEY = "bridge_xr"
#: Schema tag of the ``bridge_xr`` attribute block.
SCHEMA_TAG = "bridge_xr/1"
#: Name of an image's own physical coordinate system (voxel size only).
INTRINSIC = "intrinsic"
#: Name of the MRI scanner system (RAS+, axes ordered z=S, y=A, x=R).
SCANNER_RAS = "scanner_ras"
#: Name of the subject's reference system at scene level (micrometres).
REFERENCE = "reference"
#: Spatial axis names, in array order, in every coordinate system.
SPATIAL_AXES = ("z", "y", "x")
#: Pyramid level path prefix (``s0``, ``s1`` ...).
LEVEL_PREFIX = "s"
#: Group of the rasterised fields of registrations (``coordinateTransformations/<name>``).
FIELDS_GROUP = "coordinateTransformations"
#: Group of quality-control images (``qc/<name>/tre_map``, ``qc/<image>/block_error``).
QC_GROUP = "qc"


def field_path(registration: str, *, inverse: bool = False) -> str:
    """Where the rasterised (inverse) field of ``registration`` lives in the store.

    Examples
    --------
    >>> field_path("2p_to_mri", inverse=True)
    'coordinateTransformations/2p_to_mri_inverse'
    """
    return f"{FIELDS_GROUP}/{registration}{'_inverse' if inverse else ''}"


def tre_map_path(registration: str) -> str:
    """Where the bootstrap TRE map of ``registration`` lives.

    Examples
    --------
    >>> tre_map_path("2p_to_mri")
    'qc/2p_to_mri/tre_map'
    """
    return f"{QC_GROUP}/{registration}/tre_map"


def block_error_path(image: str) -> str:
    """Where the per-block mapping-error bound of a resampled ``image`` lives.

    Examples
    --------
    >>> block_error_path("registered/d060/angiogram")
    'qc/registered/d060/angiogram/block_error'
    """
    return f"{QC_GROUP}/{image}/block_error"


#: Key of an archive's manifest at the root of its prefix (``bridge archive`` writes it last).
ARCHIVE_MANIFEST = "bridge_xr-manifest.json"
