"""Transform3d: hand-computed cases, compose/inverse identities, broadcasting, dtype/device, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.geometry import (
    Rotate,
    RotateAxisAngle,
    Scale,
    Transform3d,
    Translate,
    random_rotations,
    se3_exp_map,
)

HYP = settings(max_examples=25, deadline=None)


def _random_transform(n: int, seed: int, dtype=torch.float64) -> Transform3d:
    g = torch.Generator().manual_seed(seed)
    R = random_rotations(n, dtype=dtype, generator=g)
    s = torch.rand(n, 3, dtype=dtype, generator=g) + 0.5
    t = torch.randn(n, 3, dtype=dtype, generator=g)
    return Transform3d(dtype=dtype).scale(s).rotate(R).translate(t)


def test_identity_and_matrix_layout():
    t = Transform3d()
    assert t.get_matrix().shape == (1, 4, 4) and t.dtype == torch.float32 and len(t) == 1
    m = Translate(1.0, 2.0, 3.0).get_matrix()[0]
    torch.testing.assert_close(m[3, :3], torch.tensor([1.0, 2.0, 3.0]))  # translation in the last row
    torch.testing.assert_close(m[:3, 3], torch.zeros(3))


def test_hand_computed_points():
    p = torch.tensor([[1.0, 1.0, 1.0]])
    # scale first, then translate
    t = Transform3d().scale(2.0).translate(1.0, 0.0, 0.0)
    torch.testing.assert_close(t.transform_points(p), torch.tensor([[3.0, 2.0, 2.0]]))
    # translate first, then scale
    t = Transform3d().translate(1.0, 0.0, 0.0).scale(2.0)
    torch.testing.assert_close(t.transform_points(p), torch.tensor([[4.0, 2.0, 2.0]]))
    # per-axis scale
    torch.testing.assert_close(Scale(1.0, 2.0, 3.0).transform_points(p), torch.tensor([[1.0, 2.0, 3.0]]))
    # RotateAxisAngle: counter-clockwise 90 degrees about Z maps +X to +Y for row vectors
    r = RotateAxisAngle(90.0, axis="Z")
    torch.testing.assert_close(r.transform_points(torch.tensor([[1.0, 0.0, 0.0]])),
                               torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(RotateAxisAngle(math.pi / 2, axis="z", degrees=False).get_matrix(),
                               r.get_matrix(), atol=1e-6, rtol=0)
    # Rotate(R) is points @ R
    R = random_rotations(1, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3)
    torch.testing.assert_close(Rotate(R).transform_points(x), x @ R[0])


def test_homogeneous_divide_and_eps():
    m = torch.eye(4)[None].clone()
    m[0, 2, 3], m[0, 3, 3] = 1.0, 0.0  # w' = z
    t = Transform3d(matrix=m)
    pts = torch.tensor([[2.0, 4.0, 2.0], [1.0, 1.0, 0.0]])
    out = t.transform_points(pts, eps=1e-2)
    torch.testing.assert_close(out[0], torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(out[1], torch.tensor([100.0, 100.0, 0.0]))  # w = 0 clamps to +eps
    assert bool(torch.isinf(t.transform_points(pts)[1, 0]))


@HYP
@given(st.integers(0, 2**31 - 1))
def test_compose_inverse_identities(seed):
    a, b, c = (_random_transform(3, seed + i) for i in range(3))
    x = torch.randn(3, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    torch.testing.assert_close(a.compose(a.inverse()).get_matrix(), eye)
    torch.testing.assert_close(a.inverse().inverse().get_matrix(), a.get_matrix())
    # associativity and order of application
    torch.testing.assert_close(a.compose(b).compose(c).get_matrix(), a.compose(b.compose(c)).get_matrix())
    torch.testing.assert_close(a.compose(b, c).transform_points(x),
                               c.transform_points(b.transform_points(a.transform_points(x))))
    # (ab)^-1 = b^-1 a^-1
    torch.testing.assert_close(a.compose(b).inverse().get_matrix(), b.inverse().compose(a.inverse()).get_matrix())
    torch.testing.assert_close(a.inverse().transform_points(a.transform_points(x)), x)


@HYP
@given(st.integers(0, 2**31 - 1))
def test_transform_normals_stay_perpendicular(seed):
    t = _random_transform(2, seed)
    g = torch.Generator().manual_seed(seed)
    # a tangent (difference of points) stays perpendicular to the transformed normal
    n = torch.randn(2, 10, 3, dtype=torch.float64, generator=g)
    u = torch.cross(n, torch.randn(2, 10, 3, dtype=torch.float64, generator=g), dim=-1)
    p = torch.randn(2, 10, 3, dtype=torch.float64, generator=g)
    tu = t.transform_points(p + u) - t.transform_points(p)
    tn = t.transform_normals(n)
    torch.testing.assert_close((tu * tn).sum(-1), torch.zeros(2, 10, dtype=torch.float64), atol=1e-9, rtol=0)


def test_translate_then_points_vs_slow_reference():
    t = _random_transform(4, 11)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    # slow reference: explicit homogeneous coordinates and a per-batch loop
    ref = []
    for i in range(4):
        h = torch.cat([x[i], torch.ones(6, 1, dtype=torch.float64)], 1) @ t.get_matrix()[i]
        ref.append(h[:, :3] / h[:, 3:])
    torch.testing.assert_close(t.transform_points(x), torch.stack(ref))


def test_broadcasting_and_shapes():
    t1, t4 = _random_transform(1, 0), _random_transform(4, 1)
    assert t1.compose(t4).get_matrix().shape == (4, 4, 4)
    assert t4.compose(t1).get_matrix().shape == (4, 4, 4)
    p = torch.randn(5, 3, dtype=torch.float64)
    assert t1.transform_points(p).shape == (5, 3)
    assert t4.transform_points(p).shape == (4, 5, 3)
    assert t4.transform_points(p[None]).shape == (4, 5, 3)
    assert t1.transform_points(torch.randn(4, 5, 3, dtype=torch.float64)).shape == (4, 5, 3)
    assert t4.transform_normals(p).shape == (4, 5, 3)
    assert Translate(torch.randn(3, 3)).get_matrix().shape == (3, 4, 4)
    assert Translate(torch.tensor([1.0, 2.0]), 0.0, 1.0).get_matrix().shape == (2, 4, 4)
    assert len(t4[1:3]) == 2 and len(t4[0]) == 1 and len(t4[[0, 3]]) == 2
    assert len(t4.stack(t1)) == 5


def test_se3_exp_is_a_transform():
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, 3:] = torch.nn.functional.normalize(x[:, 3:], dim=1) * torch.tensor([[0.1], [1.0], [3.0]])
    t = Transform3d(matrix=se3_exp_map(x))
    torch.testing.assert_close(t.get_se3_log(), x, atol=1e-9, rtol=0)
    assert t.transform_points(torch.randn(3, 2, 3, dtype=torch.float64)).shape == (3, 2, 3)


def test_dtype_device_follow_inputs():
    assert Translate(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float64
    assert Scale(2.0).dtype == torch.float32
    assert Transform3d(dtype=torch.float64).translate(1.0, 2.0, 3.0).dtype == torch.float64
    assert Rotate(torch.eye(3, dtype=torch.float64)).dtype == torch.float64
    t = Translate(1.0, 2.0, 3.0).to(dtype=torch.float64)
    assert t.dtype == torch.float64


def test_immutable_and_autograd():
    t = Translate(1.0, 2.0, 3.0)
    with pytest.raises(AttributeError):
        t._matrix = torch.eye(4)[None]
    before = t.get_matrix().clone()
    t.translate(1.0, 1.0, 1.0)
    assert torch.equal(t.get_matrix(), before)
    w = torch.randn(2, 3, requires_grad=True)
    out = Translate(w).scale(2.0).transform_points(torch.ones(2, 4, 3))
    (g,) = torch.autograd.grad(out.sum(), w)
    torch.testing.assert_close(g, torch.full((2, 3), 8.0))


def test_gradcheck_transform_points():
    m = (torch.eye(4) + 0.1 * torch.randn(4, 4)).double()[None].requires_grad_(True)
    x = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, x: Transform3d(matrix=m).transform_points(x), (m, x))


def test_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        Transform3d(matrix=torch.eye(3))
    with pytest.raises(TypeError, match="matrix"):
        Transform3d(matrix=torch.eye(4, dtype=torch.long))
    with pytest.raises(ValueError, match="points"):
        Transform3d().transform_points(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="points"):
        Transform3d().transform_points(torch.zeros(1, 2, 5, 3))
    with pytest.raises(TypeError, match="points"):
        Transform3d().transform_points(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="broadcast"):
        _random_transform(3, 0).transform_points(torch.zeros(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="broadcast"):
        _random_transform(3, 0).compose(_random_transform(2, 0))
    with pytest.raises(TypeError, match="Transform3d"):
        Transform3d().compose(torch.eye(4))
    with pytest.raises(ValueError, match="axis"):
        RotateAxisAngle(10.0, axis="W")
    with pytest.raises(ValueError, match="x"):
        Translate(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="broadcast"):
        Translate(torch.zeros(2), torch.zeros(3), 0.0)
    with pytest.warns(UserWarning, match="rotation"):
        Rotate(2 * torch.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    t = _random_transform(4, 3, dtype=torch.float32)
    x = torch.randn(4, 100, 3)
    tc = t.to("cuda")
    assert tc.device.type == "cuda"
    torch.testing.assert_close(tc.compose(tc.inverse()).transform_points(x.cuda()).cpu(), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(tc.transform_points(x.cuda()).cpu(), t.transform_points(x), atol=1e-5, rtol=1e-5)
    assert Translate(torch.zeros(2, 3, device="cuda")).device.type == "cuda"


def test_indexing_keeps_the_transform_class():
    """As PyTorch3D: indexing / cloning a Translate, Scale or Rotate gives the same class and matrices."""
    from lib3d.geometry import Rotate, RotateAxisAngle, Scale, Transform3d, Translate, random_rotations

    g = torch.Generator().manual_seed(0)
    for t in (Translate(torch.rand(4, 3, generator=g)), Scale(torch.rand(4, 3, generator=g) + 0.5),
              Rotate(random_rotations(4, generator=g)), RotateAxisAngle(torch.rand(4, generator=g) * 90, "Y")):
        for index in (1, -1, slice(1, 3), [0, 2], torch.tensor([True, False, True, False])):
            sub = t[index]
            assert type(sub) is type(t)
            torch.testing.assert_close(sub.get_matrix(), t.get_matrix()[[index] if isinstance(index, int) else index])
        assert type(t.clone()) is type(t) and type(t.detach()) is type(t)
        assert type(t.compose(Transform3d())) is Transform3d
    with pytest.raises(IndexError):
        Translate(torch.rand(2, 3))[2]
