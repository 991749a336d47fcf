"""Pure data: coordinate systems, transforms, units, metadata models, image helpers (no IO)."""

from bridge_xr.model.coords import Axis, CoordinateSystem, Orientation, spatial_system
from bridge_xr.model.metadata import (
    Acquisition,
    ImageMetadata,
    Landmark,
    LandmarkSet,
    NiftiInfo,
    Provenance,
    SubjectMetadata,
)
from bridge_xr.model.transforms import (
    Affine,
    Bijection,
    CoordinateSystemRef,
    Displacements,
    Identity,
    MapAxis,
    Rotation,
    Scale,
    Sequence,
    Transform,
    Translation,
    parse_transform,
)

__all__ = [
    "Acquisition",
    "Affine",
    "Axis",
    "Bijection",
    "CoordinateSystem",
    "CoordinateSystemRef",
    "Displacements",
    "Identity",
    "ImageMetadata",
    "Landmark",
    "LandmarkSet",
    "MapAxis",
    "NiftiInfo",
    "Orientation",
    "Provenance",
    "Rotation",
    "Scale",
    "Sequence",
    "SubjectMetadata",
    "Transform",
    "Translation",
    "parse_transform",
    "spatial_system",
]
