"""Which registrations join two images: every chain, chosen explicitly, never by list order.

A subject's registrations form an undirected multigraph over its images (one edge per
registration, walked forwards fixed -> moving or backwards). Two registrations of the same pair
(a model comparison, a re-registration under a new name) or two routes through other images give
two different answers; :func:`resolve_chain` refuses such a choice unless it is made:

* ``via=["a", "b"]``: for every image pair a named registration joins, only the named one is
  used, and the chain must pass through the named registrations in that order;
* otherwise a registration marked current for its pair (``bridge register --current``) stands
  for the pair;
* otherwise a pair with several registrations, or several routes, is an error that lists the
  candidate chains.

Examples
--------
>>> from bridge_xr.testing import tiny_scene
>>> [(rec.name, forward) for rec, forward in resolve_chain(tiny_scene(registered=True).subject, "mri", "micro")]
[('micro_to_mri', True)]
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.bspline import BSplineModel
from bridge_xr.model.metadata import (
    Registration,
    SubjectMetadata,
)
from bridge_xr.model.pointmaps import LinearModel, Model, ThinPlateSpline
from bridge_xr.model.slices import SliceStackModel

Hop = tuple[Registration, bool]  # (registration, walked forwards fixed -> moving?)
Via = Sequence[str] | str | None  # registration names in chain order ("a,b" or ["a", "b"])

#: Enumeration stops after this many chains (the error lists the first few anyway).
_MAX_CHAINS = 64


def _pair(rec: Registration) -> frozenset[str]:
    return frozenset((rec.fixed, rec.moving))


def parse_via(via: Via) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; empty -> ``None``."""
    if via is None:
        return None
    items = via.split(",") if isinstance(via, str) else [p for v in via for p in v.split(",")]
    names = [v.strip() for v in items if v.strip()]
    return names or None


def current_for_pair(subject: SubjectMetadata, a: str, b: str) -> str | None:
    """The registration marked current for the image pair ``{a, b}``, if any."""
    pair = frozenset((a, b))
    for name in subject.current_registrations:
        rec = subject.registrations.get(name)
        if rec is not None and _pair(rec) == pair:
            return name
    return None


def registrations_between(subject: SubjectMetadata, a: str, b: str) -> list[Registration]:
    """Registrations that join images ``a`` and ``b`` directly (either direction)."""
    pair = frozenset((a, b))
    return [r for r in subject.registrations.values() if _pair(r) == pair]


def _eligible(subject: SubjectMetadata, via: list[str] | None) -> list[Registration]:
    regs = list(subject.registrations.values())
    if via:
        unknown = [v for v in via if v not in subject.registrations]
        if unknown:
            known = ", ".join(sorted(subject.registrations)) or "none"
            raise InvalidInputError(
                f"`via` names unknown registration(s) {', '.join(unknown)}; known: {known}"
            )
        chosen = {_pair(subject.registrations[v]): v for v in via}
        regs = [r for r in regs if _pair(r) not in chosen or chosen[_pair(r)] == r.name]
    by_pair: dict[frozenset[str], list[Registration]] = {}
    for r in regs:
        by_pair.setdefault(_pair(r), []).append(r)
    out: list[Registration] = []
    current = set(subject.current_registrations)
    for group in by_pair.values():
        marked = [r for r in group if r.name in current]
        out.extend(marked if len(group) > 1 and len(marked) == 1 else group)
    return out


def simple_paths(
    adj: Mapping[Any, Sequence[tuple[Any, Any]]],
    src: Any,
    dst: Any,
    *,
    limit: int = _MAX_CHAINS,
    exclusive: Mapping[Any, Any] | None = None,
) -> list[list[Any]]:
    """Every simple path from ``src`` to ``dst``.

    Every simple path from ``src`` to ``dst`` as its list of edges (``adj``: node ->
    ``(next node, edge)``), depth first, at most ``limit`` paths. ``exclusive`` maps nodes to
    a group: a path visits at most one node of each group (the stage and the registered
    layout of one tile scan are alternatives, never steps of one route).
    """
    found: list[list[Any]] = []
    groups = exclusive or {}
    taken: dict[Any, Any] = {}

    def walk(node: Any, seen: set[Any], edges: list[Any]) -> None:
        if len(found) >= limit:
            return
        if node == dst:
            found.append(list(edges))
            return
        for nxt, edge in adj.get(node, ()):
            if nxt in seen:
                continue
            group = groups.get(nxt)
            if group is not None and taken.get(group, nxt) != nxt:
                continue
            if group is not None:
                taken[group] = nxt
            seen.add(nxt)
            edges.append(edge)
            walk(nxt, seen, edges)
            edges.pop()
            seen.discard(nxt)
            if group is not None and taken.get(group) == nxt and nxt not in seen:
                del taken[group]

    if src in groups:
        taken[groups[src]] = src
    walk(src, {src}, [])
    return found


def _simple_paths(regs: Iterable[Registration], src: str, dst: str) -> list[list[Hop]]:
    adj: dict[str, list[tuple[str, Hop]]] = {}
    for rec in regs:
        adj.setdefault(rec.fixed, []).append((rec.moving, (rec, True)))
        adj.setdefault(rec.moving, []).append((rec.fixed, (rec, False)))
    return simple_paths(adj, src, dst)


def _describe(chain: list[Hop]) -> str:
    return "[" + ",".join(r.name for r, _ in chain) + "]"


def _in_order(chain: list[Hop], via: list[str]) -> bool:
    names = iter(r.name for r, _ in chain)
    return all(v in names for v in via)


def candidate_chains(
    subject: SubjectMetadata, src: str, dst: str, *, via: Via = None
) -> list[list[Hop]]:
    """Every chain of registrations from ``src`` to ``dst`` that the rules above leave open."""
    names = parse_via(via)
    if src == dst:
        return [[]]
    chains = _simple_paths(_eligible(subject, names), src, dst)
    if names:
        chains = [c for c in chains if _in_order(c, names)]
    return chains


_PREFERRED: ContextVar[tuple[list[str], list[str]] | None] = ContextVar("via", default=None)


@contextlib.contextmanager
def using(via: Via) -> Iterator[list[str]]:
    """Within the block, chains resolved without an explicit ``via`` prefer these registrations.

    For operations that resolve several chains (extraction over channels, study exports): a name
    applies to the chains it can lie on and is ignored by the others. Yields the list of
    registration names the resolved chains used (in order of first use), for provenance.

    Parameters
    ----------
    via : str or list of str, optional
        Preferred registration names.

    Yields
    ------
    list of str
        The registration names used inside the block (filled as chains are resolved).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> from bridge_xr.scene import path_between
    >>> scene = tiny_scene(registered=True)
    >>> with using("micro_to_mri") as used:
    ...     _ = path_between(scene, "micro", "mri")
    >>> used
    ['micro_to_mri']
    """
    names = parse_via(via)
    outer = _PREFERRED.get()
    used: list[str] = outer[1] if outer is not None else []
    token = _PREFERRED.set((names if names is not None else (outer[0] if outer else []), used))
    try:
        yield used
    finally:
        _PREFERRED.reset(token)


P = ParamSpec("P")
R = TypeVar("R")


def with_via(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside :func:`using` of its own ``via=`` keyword.

    Run ``func`` inside :func:`using` of its own ``via=`` keyword (the function declares
    ``via`` for its signature and reads the names used with :func:`used_registrations`).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with using(kwargs.get("via")):  # type: ignore[arg-type]
            return func(*args, **kwargs)

    return wrapper


def used_registrations() -> list[str]:
    """Registration names the chains resolved in the current :func:`using` block went through."""
    ctx = _PREFERRED.get()
    return list(ctx[1]) if ctx is not None else []


def _record(chain: list[Hop]) -> list[Hop]:
    ctx = _PREFERRED.get()
    if ctx is not None:
        for r, _ in chain:
            if r.name not in ctx[1]:
                ctx[1].append(r.name)
    return chain


def resolve_chain(
    subject: SubjectMetadata,
    src: str,
    dst: str,
    *,
    via: Via = None,
    what: str = "store",
) -> list[Hop]:
    """The one chain of registrations from image ``src`` to image ``dst``, or a clear error."""
    names = parse_via(via)
    for p in (src, dst):
        if p not in subject.images:
            raise InvalidInputError(f"no image {p!r} in the {what}; `bridge info` lists them")
    if src == dst:
        return []
    ctx = _PREFERRED.get()
    if names is None and ctx is not None and ctx[0]:
        on_some_chain = {
            r.name for c in _simple_paths(subject.registrations.values(), src, dst) for r, _ in c
        }
        names = [n for n in ctx[0] if n in on_some_chain] or None
    chains = candidate_chains(subject, src, dst, via=names)
    if len(chains) == 1:
        return _record(chains[0])
    if not chains:
        if names and _simple_paths(subject.registrations.values(), src, dst):
            raise InvalidInputError(
                f"no chain of registrations from {src!r} to {dst!r} goes through "
                f"{','.join(names)} in that order; `bridge info` lists the registrations"
            )
        raise InvalidInputError(
            f"no chain of registrations connects {src!r} to {dst!r}; run `bridge register`"
        )
    listed = "; ".join(_describe(c) for c in chains[:8])
    more = f" (and {len(chains) - 8} more)" if len(chains) > 8 else ""
    raise InvalidInputError(
        f"{len(chains)} chains of registrations join {src!r} and {dst!r}: {listed}{more}; "
        "choose one with `via` (names in chain order) or mark one current (`current=True`)"
    )


def chain_names(chain: Sequence[Hop]) -> list[str]:
    """Registration names of a chain, in order (for provenance)."""
    return [r.name for r, _ in chain]


def model_from_record(rec: Registration) -> Model:
    """The exact model of a stored registration."""
    d = rec.definition
    if rec.model == "tps":
        return ThinPlateSpline.from_description(d)
    if rec.model == "slices":
        return SliceStackModel.from_description(d)
    if rec.model == "bspline":
        return BSplineModel.from_description(d)
    return LinearModel(rec.model, np.asarray(d["matrix"]), np.asarray(d["translation"]))


def models_of(chain: Sequence[Hop]) -> list[tuple[Model, bool]]:
    """The exact models of a chain's registrations, with their directions.

    An empty chain (an image onto its own space) is one identity hop.
    """
    models = [(model_from_record(rec), forward) for rec, forward in chain]
    return models or [(LinearModel.identity(), True)]


def apply_hops(
    hops: Sequence[tuple[Model, bool]], points_zyx_um: np.ndarray, *, strict: bool = False
) -> np.ndarray:
    """``(N, 3)`` points (z, y, x µm) through a chain of models; ``forward``: fixed -> moving.

    Against a TPS (moving -> fixed) points without an inverse raise, or become NaN when not
    ``strict``.
    """
    out = np.asarray(points_zyx_um, dtype=np.float64)
    for model, forward in hops:
        out = model.transform_points(out, inverse=not forward, strict=strict)
    return out


def chain_error(chain: Sequence[Hop]) -> dict[str, Any]:
    """Each hop's landmark error and the chain's accumulated error (root sum of squares).

    A hop's error is its leave-one-out TRE RMS (its RMSE where LOO was not possible). Hops are
    independent registrations, so their errors add in quadrature; this assumes the later hops
    neither magnify nor shrink distances much (near-isometric), as between MRI and microscopy of
    the same tissue. ``accumulated_um`` is None when a hop has no error figure.

    Parameters
    ----------
    chain : sequence of (Registration, bool)
        Hops, e.g. from :func:`resolve_chain`.

    Returns
    -------
    dict
        ``hops`` (name, model, direction, loo_tre_rms_um, rmse_um) and ``accumulated_um``.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene(registered=True)
    >>> chain_error(resolve_chain(scene.subject, "mri", "micro"))["accumulated_um"] < 1e-6
    True
    """
    hops: list[dict[str, Any]] = []
    errs: list[float | None] = []
    for rec, forward in chain:
        loo, rmse = rec.report.get("loo_tre_rms_um"), rec.report.get("rmse_um")
        errs.append(float(loo) if loo is not None else None if rmse is None else float(rmse))
        hops.append({
            "registration": rec.name,
            "model": rec.model,
            "direction": "fixed->moving" if forward else "moving->fixed",
            "loo_tre_rms_um": loo,
            "rmse_um": rmse,
        })  # fmt: skip
    known = [e for e in errs if e is not None]
    total = float(np.sqrt(sum(e**2 for e in known))) if len(known) == len(errs) else None
    return {"hops": hops, "accumulated_um": total}
