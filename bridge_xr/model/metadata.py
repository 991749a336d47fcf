"""bridge_xr's own metadata (kept under the top-level ``bridge_xr`` attribute, never in ``ome``).

These frozen pydantic models are the source of truth for ``schemas/*.json``; regenerate with
``python -m bridge_xr.model.metadata schemas/`` (a test fails when the files drift).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge_xr._constants import SCHEMA_TAG

Modality = Literal[
    "mri", "twophoton", "widefield", "expansion", "labels", "displacement", "derived", "other"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_assignment=True)


class Provenance(_Frozen):
    """Who made an artefact, from what, with which parameters, when."""

    tool: str = "bridge_xr"
    version: str
    created: str = Field(description="ISO-8601 UTC time stamp")
    operation: str = Field(description="what was done, e.g. 'convert mri'")
    inputs: tuple[str, ...] = ()
    parameters: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def now(cls, operation: str, *, inputs: tuple[str, ...] = (), **parameters: Any) -> Provenance:
        """Provenance stamped with the current time and bridge_xr version."""
        from bridge_xr import __version__

        stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        return cls(
            version=__version__,
            created=stamp,
            operation=operation,
            inputs=inputs,
            parameters=parameters,
        )


class Acquisition(_Frozen):
    """Acquisition parameters known for an image (all optional; units in the field names)."""

    field_strength_T: float | None = None
    sequence: str | None = None
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    objective: str | None = None
    excitation_nm: float | None = None
    pixel_size_um: tuple[float, ...] | None = None
    expansion_factor: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class NiftiInfo(_Frozen):
    """Exact NIfTI geometry (RAS, voxel -> mm as in the file) and the raw header for export."""

    header_b64: str = Field(description="raw header bytes (348 or 540), base64")
    sform: tuple[tuple[float, ...], ...]
    sform_code: int
    qform: tuple[tuple[float, ...], ...]
    qform_code: int
    scl_slope: float | None = None
    scl_inter: float | None = None
    shape: tuple[int, ...] | None = Field(
        default=None, description="the header's data shape (trailing singleton axes included)"
    )
    raw_dtype: str | None = Field(
        default=None, description="on-disk dtype before scl_slope/scl_inter were applied"
    )


class ImageMetadata(_Frozen):
    """One image of a subject scene."""

    path: str
    modality: Modality
    kind: Literal["image", "labels", "displacements"] = "image"
    session: str | None = None
    channel_names: tuple[str, ...] | None = None
    source: str | None = Field(default=None, description="file or folder the image came from")
    acquisition: Acquisition = Field(default_factory=Acquisition)
    nifti: NiftiInfo | None = None
    dicom: dict[str, str] | None = None
    provenance: Provenance


class Landmark(_Frozen):
    """A pair of corresponding points (micrometres, each image's intrinsic space; x = last axis)."""

    name: str
    moving: tuple[float, float, float] = Field(description="(x, y, z) in micrometres")
    fixed: tuple[float, float, float] = Field(description="(x, y, z) in micrometres")
    active: bool = True


class LandmarkSet(_Frozen):
    """Landmarks between a moving and a fixed image."""

    moving: str
    fixed: str
    landmarks: tuple[Landmark, ...]
    rater: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> LandmarkSet:
        names = [lm.name for lm in self.landmarks]
        if len(set(names)) != len(names):
            raise ValueError("landmark names must be unique")
        return self


class Registration(_Frozen):
    """One landmark registration, kept exactly (the scene edge holds its OME-Zarr form)."""

    name: str
    fixed: str
    moving: str
    model: Literal["rigid", "similarity", "affine", "tps", "slices", "bspline"] = Field(
        description="'slices': one 2D model per slice of a slice stack (definition.planes); "
        "'bspline': an intensity registration (affine + cubic B-spline lattice, inline)"
    )
    kernel: Literal["r", "r2logr"] | None = None
    smoothing: float | None = None
    direction: Literal["fixed->moving"] = "fixed->moving"
    definition: dict[str, Any] = Field(
        description="exact model in µm, xyz: matrix/translation, or TPS centres/weights/affine"
    )
    landmarks: LandmarkSet
    field_path: str | None = Field(default=None, description="rasterised TPS displacement field")
    field_spacing_um: tuple[float, float, float] | None = None
    certified_max_error_um: float | None = Field(
        default=None, description="max |field - exact TPS| found at the certification points"
    )
    report: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance


class Tile(_Frozen):
    """One field of view of a tile scan: its own image and where the stage put it."""

    id: str = Field(description="tile id, e.g. t003 (acquisition order)")
    path: str = Field(description="the tile's image path in the store")
    source: str | None = None
    stage_um: tuple[float, float, float] = Field(
        description="(z, y, x) of the tile's first voxel centre in stage space, micrometres"
    )
    registered_um: tuple[float, float, float] | None = Field(
        default=None, description="(z, y, x) after `bridge stitch`; the stage position is kept"
    )
    registered_affine: tuple[tuple[float, float, float, float], ...] | None = Field(
        default=None,
        description="after `bridge stitch --model affine`: 3 rows (z, y, x) of 4 numbers mapping "
        "the tile's intrinsic µm to registered µm; its last column is `registered_um`",
    )


class TileScan(_Frozen):
    """A tile scan: tiles as images of the scene, their stage and registered positions."""

    path: str = Field(description="the scan's path, e.g. twophoton/d060/angiogram")
    tiles: tuple[Tile, ...]
    spacing_um: tuple[float, float, float] = Field(description="(z, y, x) voxel size, µm")
    channel_names: tuple[str, ...] | None = None
    stage_error_um: float | None = Field(
        default=None, description="largest correction `stitch` may apply to a stage offset"
    )
    flatfield: str | None = Field(default=None, description="flat-field image path (y, x)")
    stitch: dict[str, Any] = Field(
        default_factory=dict, description="summary of the last `bridge stitch` (links, RMS)"
    )
    provenance: tuple[Provenance, ...] = ()


class AtlasSection(_Frozen):
    """One section's atlas anchoring (QuickNII) and nonlinear markers (VisuAlign)."""

    nr: int = Field(description="section number in the alignment file")
    filename: str
    stack_index: int = Field(description="plane of the slice stack it anchors (0-based)")
    width: int = Field(description="width (px) of the image the anchoring was made on")
    height: int = Field(description="height (px) of that image")
    anchoring: tuple[float, ...] = Field(
        description="o, u, v (9 numbers, atlas voxels): atlas = o + x/width u + y/height v"
    )
    markers: tuple[tuple[float, float, float, float], ...] = Field(
        default=(), description="VisuAlign markers x0, y0, x1, y1 (px of the anchoring image)"
    )


class AtlasAlignment(_Frozen):
    """A slice stack's alignment to a reference atlas (e.g. Allen CCFv3 via QuickNII)."""

    image: str = Field(description="the slice stack it aligns")
    source: str = Field(description="the QuickNII/VisuAlign JSON it came from")
    target: str | None = Field(default=None, description="atlas named in the file")
    target_resolution: tuple[int, ...] | None = Field(
        default=None, description="the atlas' voxel grid (x, y, z) named in the file"
    )
    voxel_um: float = Field(description="atlas voxel size (µm)")
    axes: str = "QuickNII atlas voxels: x left->right, y posterior->anterior, z inferior->superior"
    sections: tuple[AtlasSection, ...]
    provenance: Provenance


class SubjectMetadata(_Frozen):
    """The ``bridge_xr`` block of a subject store's root group."""

    schema_: str = Field(default=SCHEMA_TAG, alias="schema")
    subject: str | None = None
    reference_image: str | None = Field(
        default=None, description="image whose system defines the subject's reference system"
    )
    images: dict[str, ImageMetadata] = Field(default_factory=dict)
    landmarks: dict[str, LandmarkSet] = Field(default_factory=dict)
    registrations: dict[str, Registration] = Field(default_factory=dict)
    current_registrations: tuple[str, ...] = Field(
        default=(),
        description="registrations marked current for their image pair (at most one per pair); "
        "an ambiguous chain uses them instead of refusing",
    )
    tile_scans: dict[str, TileScan] = Field(default_factory=dict)
    atlas: dict[str, AtlasAlignment] = Field(
        default_factory=dict, description="atlas alignments of slice stacks, by image path"
    )
    provenance: tuple[Provenance, ...] = ()

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "subject": SubjectMetadata,
    "image": ImageMetadata,
    "provenance": Provenance,
    "landmarks": LandmarkSet,
    "registration": Registration,
    "tilescan": TileScan,
    "atlas": AtlasAlignment,
}


def generate_schemas() -> dict[str, str]:
    """JSON Schema text of every bridge_xr metadata model, by file name."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(by_alias=True), indent=2) + "\n"
        for name, model in SCHEMA_MODELS.items()
    }


def _main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "schemas")
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in generate_schemas().items():
        (out / fname).write_text(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main(sys.argv[1:]))
