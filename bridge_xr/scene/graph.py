"""Mapping points through every coordinate transformation of a scene, whoever authored it.

The nodes are coordinate systems: each image's own systems (``intrinsic``, ``scanner_ras``, ...)
and the scene's (``reference``, a stitching ``world``). The edges are

* the transformations inside each image's ``multiscales`` (intrinsic -> its other systems);
* the scene's ``coordinateTransformations`` (between systems of different images or of the
  scene), as OME-Zarr 0.6 defines them: forward *point* maps from ``input`` to ``output``, walked
  backwards only where an inverse exists (closed form or ``bijection``);
* bridge_xr's own registrations, which replace their rasterised scene edge by the exact model.

Points travel as vectors in each system's own axis order and units; at the two ends the
``x, y, z`` micrometre columns of a point table are matched to the space axes by name.
Ambiguous routes are refused as for registrations (:mod:`bridge_xr.scene.chains`): pass
``via`` (edge names in chain order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge_xr._constants import INTRINSIC
from bridge_xr.errors import BridgeXRError, InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import _legacy_io, _pick_intrinsic, ome_block, open_group
from bridge_xr.io.subject import _root_attrs, read_subject
from bridge_xr.model.coords import CoordinateSystem
from bridge_xr.model.metadata import SubjectMetadata
from bridge_xr.model.pointmaps import Model
from bridge_xr.model.transforms import (
    Transform,
    parse_transform,
)
from bridge_xr.model.units import conversion_factor
from bridge_xr.scene.binding import bind_arrays
from bridge_xr.scene.chains import (
    Hop,
    Via,
    apply_hops,
    current_for_pair,
    model_from_record,
    models_of,
    parse_via,
    resolve_chain,
    simple_paths,
)

Node = tuple[str, str]  # (image path, or "" for a scene system; system name)
PointMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Edge:
    """One transformation between two coordinate systems."""

    name: str
    src: Node
    dst: Node
    forward: PointMap
    backward: PointMap | None
    registration: str | None = None  # a bridge_xr registration (exact model)

    def __repr__(self) -> str:
        return f"Edge({self.name!r}: {_node_label(self.src)} -> {_node_label(self.dst)})"


def _node_label(n: Node) -> str:
    return n[1] if not n[0] else f"{n[0]}#{n[1]}"


class TransformGraph:
    """The one transform graph of a subject store: every coordinate system and transformation.

    Two views of one graph:

    * :meth:`chain` / :meth:`models`: the bridge_xr registrations joining two *images*, as exact
      models (what resampling, footprints and tables use); reads only the subject metadata;
    * :meth:`path` / :meth:`map_points`: routes between any two coordinate systems through every
      edge of the scene, whoever authored it (built on first use).

    Ambiguous routes are refused unless ``via`` names the edges in order, or a registration is
    marked current for its pair (:mod:`bridge_xr.scene.chains`).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> g = tiny_scene(registered=True).graph
    >>> [(rec.name, forward) for rec, forward in g.chain("micro", "mri")]
    [('micro_to_mri', False)]
    >>> [e.name for e, _ in g.path("mri", "micro")]
    ['micro_to_mri']
    """

    def __init__(self, where: StoreLike) -> None:
        self.store = resolve_store(where)
        self.where = describe_store(self.store)
        self.subject: SubjectMetadata = read_subject(self.store)
        self._systems: dict[Node, CoordinateSystem] | None = None
        self._sys: dict[Node, CoordinateSystem] = {}
        self.intrinsic: dict[str, str] = {}
        self._edges: list[Edge] = []

    # -- registrations (exact models) ----------------------------------------------------------
    def chain(self, src: str, dst: str, *, via: Via = None) -> list[Hop]:
        """The registrations from image ``src`` to image ``dst``: ``(record, forward?)`` per hop.

        ``forward`` means walked fixed -> moving. Empty for ``src == dst``.
        """
        return resolve_chain(self.subject, src, dst, via=via) if src != dst else []

    def models(self, src: str, dst: str, *, via: Via = None) -> list[tuple[Model, bool]]:
        """The exact models of :meth:`chain` (one identity hop for ``src == dst``)."""
        return models_of(self.chain(src, dst, via=via))

    # -- every edge ------------------------------------------------------------------------------
    @property
    def systems(self) -> dict[Node, CoordinateSystem]:
        """Every coordinate system, by ``(image path or "", name)``."""
        if self._systems is None:
            self._systems = self._sys = {}
            self._build()
        return self._systems

    @property
    def edges(self) -> list[Edge]:
        """Every transformation of the scene (registrations as exact models)."""
        _ = self.systems
        return self._edges

    def _build(self) -> None:
        attrs = _root_attrs(self.store)
        scene: dict[str, Any] = {}
        if "ome" in attrs:
            block, _ = ome_block(attrs)
            scene = dict(block.get("scene") or {})
        for cs in scene.get("coordinateSystems", []) or []:
            sysm = self._system(cs, f"scene of {self.where}")
            self._sys[("", sysm.name)] = sysm
        raw = list(scene.get("coordinateTransformations", []) or [])
        parsed = [
            parse_transform(_legacy_io(t), where=f"the scene of {self.where}")
            for t in raw
            if isinstance(t, dict)
        ]
        if len(parsed) != len(raw):
            raise InvalidInputError(
                f"the scene of {self.where} has a coordinateTransformation that is not an object"
            )
        paths = set(self.subject.images)
        for t in parsed:
            for ref in (t.input, t.output):
                if ref is not None and ref.path:
                    paths.add(ref.path)
        for p in sorted(paths):
            self._read_image(p)
        regs = self.subject.registrations
        for k, t in enumerate(parsed):
            if t.name in regs:
                continue  # replaced by the exact model below
            self._add_transform(t, f"scene transform #{k}")
        for rec in regs.values():
            self._add_registration(rec.name)

    # -- reading -----------------------------------------------------------------------------
    def _system(self, cs: Any, where: str) -> CoordinateSystem:
        try:
            return CoordinateSystem.model_validate(cs)
        except (ValueError, BridgeXRError) as exc:
            name = cs.get("name") if isinstance(cs, dict) else None
            raise InvalidInputError(
                f"malformed coordinate system {name!r} in {where}: {str(exc).splitlines()[0]}"
            ) from None

    def _read_image(self, path: str) -> None:
        try:
            attrs = open_group(self.store, path).attrs.asdict()
        except InvalidInputError:
            raise InvalidInputError(
                f"the scene of {self.where} refers to image {path!r}, which is not in the store"
            ) from None
        block, version = ome_block(attrs)
        ms = (block.get("multiscales") or [{}])[0]
        where = f"image {path!r} of {self.where}"
        if version != "0.6" or "coordinateSystems" not in ms:
            axes = ms.get("axes") or [{"name": n, "type": "space"} for n in "zyx"]
            axes = [{"name": a, "type": "space"} if isinstance(a, str) else a for a in axes]
            cs = {"name": INTRINSIC, "axes": axes}
            self._sys[(path, INTRINSIC)] = self._system(cs, where)
            self.intrinsic[path] = INTRINSIC
            return
        for cs in ms["coordinateSystems"]:
            sysm = self._system(cs, where)
            self._sys[(path, sysm.name)] = sysm
        self.intrinsic[path] = str(_pick_intrinsic(ms)["name"])
        for k, t in enumerate(ms.get("coordinateTransformations", []) or []):
            parsed = parse_transform(_legacy_io(t), where=where)
            self._add_transform(parsed, f"{path} transform #{k}", default_path=path)

    def _add_transform(self, t: Transform, label: str, *, default_path: str = "") -> None:
        if t.input is None or t.output is None:
            raise InvalidInputError(f"{label} of {self.where} lacks its input or output system")

        def node(ref: Any) -> Node:
            path = ref.path if ref.path is not None else default_path
            name = ref.name if ref.name else self.intrinsic.get(path, INTRINSIC)
            return (path, name)

        src, dst = node(t.input), node(t.output)
        for n in (src, dst):
            if n not in self.systems:
                raise InvalidInputError(
                    f"{label} of {self.where} refers to coordinate system "
                    f"{_node_label(n)!r}, which is not defined"
                )
        bound = bind_arrays(self.store, t, where=self.where)
        try:
            inv = bound.inverse()
            backward: PointMap | None = inv.transform_points
        except BridgeXRError:
            backward = None
        name = t.name or f"{_node_label(src)}->{_node_label(dst)}"
        self._edges.append(Edge(name, src, dst, bound.transform_points, backward))

    def _add_registration(self, name: str) -> None:
        rec = self.subject.registrations[name]
        model = model_from_record(rec)
        fi = (rec.fixed, self.intrinsic.get(rec.fixed, INTRINSIC))
        mi = (rec.moving, self.intrinsic.get(rec.moving, INTRINSIC))

        def fwd(p: np.ndarray) -> np.ndarray:
            out = apply_hops([(model, True)], self._to_xyz_um(fi, p)[:, ::-1], strict=False)
            return self._from_xyz_um(mi, out[:, ::-1])

        def bwd(p: np.ndarray) -> np.ndarray:
            out = apply_hops([(model, False)], self._to_xyz_um(mi, p)[:, ::-1], strict=False)
            return self._from_xyz_um(fi, out[:, ::-1])

        self._edges.append(Edge(name, fi, mi, fwd, bwd, registration=name))

    # -- points at the ends ------------------------------------------------------------------
    def _space_axes(self, n: Node) -> tuple[CoordinateSystem, dict[str, int], float]:
        cs = self.systems[n]
        idx: dict[str, int] = {}
        for i, a in enumerate(cs.axes):
            if a.type == "space":
                key = a.name.lower()
                if key not in ("x", "y", "z"):
                    names = ", ".join(x.name for x in cs.axes if x.type == "space")
                    raise InvalidInputError(
                        f"coordinate system {_node_label(n)!r} of {self.where} has space axes "
                        f"({names}); bridge_xr maps point tables (x, y, z) only onto axes named "
                        "x, y, z: add a mapAxis transform to such a system, or name the axes"
                    )
                idx[key] = i
        if not idx:
            raise InvalidInputError(
                f"coordinate system {_node_label(n)!r} of {self.where} has no space axes"
            )
        fac = conversion_factor(cs.spatial_unit or "micrometer", "micrometer")
        return cs, idx, fac

    def _from_xyz_um(self, n: Node, xyz: np.ndarray) -> np.ndarray:
        cs, idx, fac = self._space_axes(n)
        out = np.zeros((len(xyz), len(cs.axes)))
        for k, name in enumerate("xyz"):
            if name in idx:
                out[:, idx[name]] = xyz[:, k] / fac
        return out

    def _to_xyz_um(self, n: Node, vec: np.ndarray) -> np.ndarray:
        _, idx, fac = self._space_axes(n)
        out = np.zeros((len(vec), 3))
        for k, name in enumerate("xyz"):
            if name in idx:
                out[:, k] = vec[:, idx[name]] * fac
        return out

    # -- routes ------------------------------------------------------------------------------
    def node(self, spec: str) -> Node:
        """``IMAGE`` (its intrinsic system), ``IMAGE#SYSTEM``, or a scene system's name."""
        _ = self.systems
        path, sep, name = spec.partition("#")
        if sep:
            n = (path.strip("/"), name)
            if n not in self.systems:
                have = sorted(s for p, s in self.systems if p == n[0])
                raise InvalidInputError(
                    f"no coordinate system {name!r} in image {n[0]!r} of {self.where}; "
                    f"it has {have or 'none (no such image)'}"
                )
            return n
        p = spec.strip("/")
        if p in self.intrinsic:
            return (p, self.intrinsic[p])
        if ("", spec) in self.systems:
            return ("", spec)
        raise InvalidInputError(
            f"no image or scene coordinate system {spec!r} in {self.where}; `bridge info` lists them"
        )

    def _eligible(self, via: list[str] | None) -> list[Edge]:
        edges = self.edges
        names = {e.name for e in edges}
        if via:
            unknown = [v for v in via if v not in names]
            if unknown:
                raise InvalidInputError(
                    f"`via` names unknown transformation(s) {', '.join(unknown)}; known: "
                    f"{', '.join(sorted(names)) or 'none'}"
                )
            chosen = {frozenset((e.src, e.dst)): e.name for e in edges if e.name in via}
            edges = [e for e in edges if chosen.get(frozenset((e.src, e.dst)), e.name) == e.name]
        out = []
        for e in edges:
            if e.registration is not None and not via:
                rec = self.subject.registrations[e.registration]
                cur = current_for_pair(self.subject, rec.fixed, rec.moving)
                if cur is not None and cur != e.name:
                    continue
            out.append(e)
        return out

    def chains(self, src: Node, dst: Node, via: list[str] | None) -> list[list[tuple[Edge, bool]]]:
        """Every simple route from ``src`` to ``dst`` (edge, walked forwards?)."""
        adj: dict[Node, list[tuple[Node, tuple[Edge, bool]]]] = {}
        for e in self._eligible(via):
            adj.setdefault(e.src, []).append((e.dst, (e, True)))
            if e.backward is not None:
                adj.setdefault(e.dst, []).append((e.src, (e, False)))
        layouts = {
            ("", f"{scan}:{kind}"): scan
            for scan in self.subject.tile_scans
            for kind in ("stage", "registered")
        }
        found: list[list[tuple[Edge, bool]]] = simple_paths(adj, src, dst, exclusive=layouts)
        if via:

            def in_order(c: list[tuple[Edge, bool]]) -> bool:
                it = iter(e.name for e, _ in c)
                return all(v in it for v in via)

            found = [c for c in found if in_order(c)]
        return found

    def path(self, src: str, dst: str, *, via: Via = None) -> list[tuple[Edge, bool]]:
        """The one route between two systems (see :meth:`node`): ``(edge, forward?)`` per step.

        Raises :class:`~bridge_xr.errors.InvalidInputError` when there is none, or several and
        ``via`` does not choose.
        """
        return self._route(src, dst, self.node(src), self.node(dst), via)

    def _route(self, src: str, dst: str, a: Node, b: Node, via: Any) -> list[tuple[Edge, bool]]:
        names = parse_via(via)
        if a == b:
            return []
        found = self.chains(a, b, names)
        if len(found) == 1:
            return found[0]
        if not found:
            one_way = [e.name for e in self.edges if e.backward is None]
            hint = (
                f" ({', '.join(one_way)} cannot be walked backwards: no inverse)" if one_way else ""
            )
            extra = f" through {','.join(names)} in that order" if names else ""
            raise InvalidInputError(
                f"no chain of transformations from {src!r} to {dst!r}{extra} in {self.where}{hint}"
            )
        listed = "; ".join("[" + ",".join(e.name for e, _ in c) + "]" for c in found[:8])
        raise InvalidInputError(
            f"{len(found)} chains of transformations join {src!r} and {dst!r}: {listed}; "
            "choose one with `via` (names in chain order) or mark one current (`current=True`)"
        )

    def map_points(
        self, points_xyz_um: np.ndarray, src: str, dst: str, *, via: Any = None
    ) -> tuple[np.ndarray, list[str]]:
        """Points (x, y, z µm in ``src``) in ``dst``, and the names of the edges used."""
        a, b = self.node(src), self.node(dst)
        route = self._route(src, dst, a, b, via)
        vec = self._from_xyz_um(a, np.asarray(points_xyz_um, dtype=np.float64))
        for e, fwd in route:
            fn = e.forward if fwd else e.backward
            assert fn is not None
            vec = fn(vec)
        return self._to_xyz_um(b, vec), [e.name for e, _ in route]


__all__ = ["Edge", "TransformGraph"]
