"""What ``bridge info`` shows of a subject store, as one JSON-friendly dict."""

from __future__ import annotations

from typing import Any

from bridge_xr._constants import INTRINSIC
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, key_exists, resolve_store
from bridge_xr.io.convert import _discover
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.io.subject import read_subject, scene_transforms
from bridge_xr.model.image import physical_extent
from bridge_xr.scene.chains import candidate_chains, chain_names


def describe(where: StoreLike, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``bridge info`` shows: images, shapes, extents, units, transforms, provenance.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The subject store (opened read-only).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    dict
        ``store``, ``reference_image``, ``images`` (dims, shape, unit, spacing, extent, levels,
        systems, transforms, provenance), ``scene_transforms`` and ``registrations`` (pairs, their
        chains and which one is used).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> info = describe(tiny_scene(registered=True))
    >>> info["images"]["mri"]["shape"], info["registrations"][0]["used"]
    ([4, 8, 8], ['micro_to_mri'])
    """
    store = resolve_store(where, read_only=True, storage_options=storage_options)
    if not key_exists(store, "zarr.json"):
        raise InvalidInputError(f"{describe_store(store)} is not a zarr v3 store (no zarr.json)")
    subject = read_subject(store)
    images: dict[str, Any] = {}
    paths = list(subject.images) or _discover(store)
    for p in paths:
        group = open_group(store, p)
        info = read_multiscale_info(group)
        img = read_image(store, p)
        meta = subject.images.get(p)
        images[p] = {
            "modality": meta.modality if meta else None,
            "kind": meta.kind if meta else "image",
            "dims": list(img.dims),
            "shape": list(img.shape),
            "dtype": str(img.dtype),
            "unit": img.attrs["unit"],
            "spacing": img.attrs["spacing"],
            "extent": {k: list(v) for k, v in physical_extent(img).items()},
            "levels": len(info.level_paths),
            "coordinate_systems": [*info.systems] or [INTRINSIC],
            "transforms": {k: t.to_ome() for k, t in info.transforms.items()},
            "channel_names": list(meta.channel_names) if meta and meta.channel_names else None,
            "provenance": meta.provenance.model_dump(mode="json") if meta else None,
            "ome_version": info.version,
        }
    return {
        "store": describe_store(store),
        "reference_image": subject.reference_image,
        "images": images,
        "scene_transforms": [t.to_ome() for t in scene_transforms(store)],
        "registrations": registration_pairs(subject),
    }


def registration_pairs(subject: Any) -> list[dict[str, Any]]:
    """For every pair of registered images: the chains that join them and which one is used.

    ``used`` is the chain every command takes without ``--via`` (the only one, or the one made
    of registrations marked current); ``None`` when the pair is ambiguous (commands then refuse
    and list ``chains``).
    """
    regs = subject.registrations
    nodes = sorted({p for r in regs.values() for p in (r.fixed, r.moving)})
    out: list[dict[str, Any]] = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            every = candidate_chains(subject.model_copy(update={"current_registrations": ()}), a, b)
            if not every:
                continue
            left = candidate_chains(subject, a, b)
            out.append(
                {
                    "images": [a, b],
                    "chains": [chain_names(c) for c in every],
                    "current": [n for c in every for n in chain_names(c)
                                if n in subject.current_registrations],
                    "used": chain_names(left[0]) if len(left) == 1 else None,
                }
            )  # fmt: skip
    return out
