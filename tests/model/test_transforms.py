import numpy as np
import pytest

from bridge_xr.errors import NoAffineError, NotInvertibleError, UnitError
from bridge_xr.model.coords import check_edge_units, spatial_system
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
    Translation,
    parse_transform,
    simplify,
)

rng = np.random.default_rng(42)


def random_rotation() -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def all_invertible():
    m = np.eye(4)
    m[:3, :3] = random_rotation() @ np.diag([1.1, 0.9, 1.3])
    m[:3, 3] = rng.normal(size=3) * 10
    return [
        Identity(),
        Scale(scale=(2.0, 0.5, 1.5)),
        Translation(translation=(1.0, -2.0, 3.0)),
        Affine.from_matrix(m),
        Rotation(rotation=tuple(map(tuple, random_rotation()))),
        MapAxis(mapAxis=(2, 0, 1)),
        Sequence(
            transformations=(Scale(scale=(2.0, 2.0, 2.0)), Translation(translation=(1, 2, 3)))
        ),
    ]


@pytest.mark.parametrize("t", all_invertible(), ids=lambda t: t.type)
def test_inverse_undoes_forward(t) -> None:
    p = rng.normal(size=(50, 3)) * 100
    back = t.inverse().transform_points(t.transform_points(p))
    np.testing.assert_allclose(back, p, atol=1e-9)


@pytest.mark.parametrize("t", all_invertible(), ids=lambda t: t.type)
def test_to_affine_agrees_with_transform_points(t) -> None:
    p = rng.normal(size=(20, 3))
    m = t.to_affine(3)
    np.testing.assert_allclose(p @ m[:3, :3].T + m[:3, 3], t.transform_points(p), atol=1e-12)


@pytest.mark.parametrize("t", all_invertible(), ids=lambda t: t.type)
def test_json_round_trip(t) -> None:
    again = parse_transform(t.to_ome())
    assert again == t


def test_composition_matches_matrix_product_and_simplify() -> None:
    a, b = all_invertible()[3], all_invertible()[6]
    seq = a.then(b)
    p = rng.normal(size=(10, 3))
    np.testing.assert_allclose(seq.transform_points(p), b.transform_points(a.transform_points(p)))
    np.testing.assert_allclose(seq.to_affine(3), b.to_affine(3) @ a.to_affine(3))
    assert isinstance(simplify(seq), Affine)


def test_displacements_need_data_and_map_points_with_linear_interpolation() -> None:
    d = Displacements(path="coordinateTransformations/warp")
    with pytest.raises(ValueError, match="not loaded"):
        d.transform_points(np.zeros((1, 3)))
    field = np.zeros((3, 4, 4, 4))
    field[2] = np.arange(4)[None, None, :] * 1.0  # x displacement grows with x index
    bound = d.bind(field, spacing=(10.0, 10.0, 10.0), origin=(0.0, 0.0, 0.0))
    out = bound.transform_points(np.array([[5.0, 5.0, 15.0]]))
    np.testing.assert_allclose(out, [[5.0, 5.0, 16.5]])
    with pytest.raises(NotInvertibleError):
        d.inverse()
    with pytest.raises(NoAffineError):
        d.to_affine(3)


def test_bijection_uses_its_stored_inverse() -> None:
    fwd = Translation(translation=(1.0, 2.0, 3.0))
    bij = Bijection(forward=fwd, inverse=fwd.inverse())
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose(bij.inverse().transform_points(bij.transform_points(p)), p)
    assert parse_transform(bij.to_ome()) == bij


def test_invalid_transforms_are_refused() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        Scale(scale=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="N\\+1"):
        Affine(affine=((1.0, 0.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="orthonormal"):
        Rotation(rotation=((1.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(NotInvertibleError):
        Affine.from_matrix(np.zeros((4, 4)) + np.eye(4) * [1, 1, 0, 1]).inverse()


def test_edges_must_make_unit_changes_explicit() -> None:
    um, mm = spatial_system("a", "um"), spatial_system("b", "mm")
    check_edge_units(Scale(scale=(1e-3,) * 3), um, mm)
    check_edge_units(
        Sequence(transformations=(Scale(scale=(1e-3,) * 3), Translation(translation=(1, 2, 3)))),
        um,
        mm,
    )
    check_edge_units(Affine.from_matrix(np.eye(4)), um, spatial_system("c", "micron"))
    for bad in (Identity(), Affine.from_matrix(np.eye(4)), Scale(scale=(1.0,) * 3)):
        with pytest.raises(UnitError, match="explicit"):
            check_edge_units(bad, um, mm)


def test_input_output_references_survive() -> None:
    t = Scale(
        scale=(1.0, 2.0, 3.0),
        input=CoordinateSystemRef(path="a", name="x"),
        output=CoordinateSystemRef(name="y"),
    )
    inv = t.inverse()
    assert inv.input == t.output
    assert inv.output == t.input
