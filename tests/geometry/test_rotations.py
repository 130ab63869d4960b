"""Rotations: PyTorch3D golden parity, slow references, round trips, gradients and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.geometry import (
    acos_linear_extrapolation,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_angles_to_matrix,
    hat,
    hat_inv,
    matrix_to_axis_angle,
    matrix_to_euler_angles,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_apply,
    quaternion_invert,
    quaternion_multiply,
    quaternion_raw_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_quaternions,
    random_rotations,
    rotation_6d_to_matrix,
    se3_exp_map,
    se3_log_map,
    so3_exp_map,
    so3_log_map,
    so3_relative_angle,
    so3_rotation_angle,
    standardize_quaternion,
)
from tests.helpers import golden_case, load_golden

CONVENTIONS = ["XYZ", "ZYX", "XZY", "YXZ", "YZX", "ZXY", "XYX", "XZX", "YXY", "YZY", "ZXZ", "ZYZ"]
HYP = settings(max_examples=25, deadline=None)


def _tol_near_pi(angle: torch.Tensor) -> torch.Tensor:
    """Golden README: 1e-5 absolute, 1e-4 within 1e-2 of angle pi."""
    return torch.where((angle - math.pi).abs() < 1e-2, 1e-4, 1e-5)


def _rand_rot(n, seed=0, dtype=torch.float64):
    return random_rotations(n, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden():
    return load_golden("transforms")[0]


def test_golden_so3(golden):
    c = golden_case(golden, "so3")
    torch.testing.assert_close(hat(c["log_rot"]), c["hat"], atol=1e-5, rtol=0)
    torch.testing.assert_close(so3_exp_map(c["log_rot"]), c["exp"], atol=1e-5, rtol=0)
    # rows 0-5 (tiny angles, angle ~pi) are not in the golden log; the rest is log(exp(log_rot[6:]))
    log = so3_log_map(c["exp"][6:])
    err = (log - c["log"]).abs().amax(-1)
    assert bool((err <= _tol_near_pi(c["log"].norm(dim=-1))).all()), err.max()


def test_golden_quaternion(golden):
    c = golden_case(golden, "quaternion")
    torch.testing.assert_close(matrix_to_quaternion(c["R"]), c["q"], atol=1e-5, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(c["q2"]), c["q2_matrix"], atol=1e-5, rtol=0)
    torch.testing.assert_close(quaternion_multiply(c["q"], c["q2"]), c["q_mul"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_golden_euler(golden, convention):
    c = golden_case(golden, f"euler_{convention}")
    torch.testing.assert_close(euler_angles_to_matrix(c["angles"], convention), c["matrix"], atol=1e-5, rtol=0)
    back = matrix_to_euler_angles(c["matrix"], convention)
    # "back" values agree up to equivalent angles: compare the rotations they describe
    torch.testing.assert_close(euler_angles_to_matrix(back, convention),
                               euler_angles_to_matrix(c["back"], convention), atol=1e-5, rtol=0)
    torch.testing.assert_close(euler_angles_to_matrix(back, convention), c["matrix"], atol=1e-5, rtol=0)


def test_golden_axis_angle(golden):
    c = golden_case(golden, "axis_angle")
    torch.testing.assert_close(axis_angle_to_matrix(c["axis_angle"]), c["matrix"], atol=1e-5, rtol=0)
    back = matrix_to_axis_angle(c["matrix"])
    torch.testing.assert_close(axis_angle_to_matrix(back), axis_angle_to_matrix(c["back"]), atol=1e-5, rtol=0)
    err = (back - c["back"]).abs().amax(-1)
    assert bool((err <= _tol_near_pi(c["back"].norm(dim=-1))).all())


def test_golden_rotation_6d(golden):
    c = golden_case(golden, "rotation_6d")
    torch.testing.assert_close(matrix_to_rotation_6d(c["R"]), c["d6"], atol=1e-5, rtol=0)
    c = golden_case(golden, "rotation_6d_in")
    torch.testing.assert_close(rotation_6d_to_matrix(c["d6"]), c["matrix"], atol=1e-5, rtol=0)


def test_golden_se3(golden):
    c = golden_case(golden, "se3")
    torch.testing.assert_close(se3_exp_map(c["log"]), c["exp"], atol=1e-5, rtol=0)
    torch.testing.assert_close(se3_log_map(c["exp"]), c["log_back"], atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------- slow references
def test_so3_exp_matches_matrix_exponential_forward_and_backward():
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(64, 3, generator=g, dtype=torch.float64) * 1.5)
    w[:4] *= 1e-4  # tiny angles take the series branch
    w.requires_grad_(True)
    fast = so3_exp_map(w)
    w_ref = w.detach().clone().requires_grad_(True)
    ref = torch.linalg.matrix_exp(hat(w_ref))  # slow reference: exp of the skew matrix
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=0)
    up = torch.randn(64, 3, 3, generator=g, dtype=torch.float64)
    (gf,) = torch.autograd.grad((fast * up).sum(), w)
    (gr,) = torch.autograd.grad((ref * up).sum(), w_ref)
    torch.testing.assert_close(gf, gr, atol=1e-10, rtol=1e-8)


def test_se3_exp_matches_matrix_exponential():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 6, generator=g, dtype=torch.float64)
    x[:3, 3:] *= 1e-5
    # se(3) element as a column-vector 4x4 [[hat(w), v], [0, 0]]; PyTorch3D returns its exp transposed
    A = torch.zeros(32, 4, 4, dtype=torch.float64)
    A[:, :3, :3] = hat(x[:, 3:])
    A[:, :3, 3] = x[:, :3]
    ref = torch.linalg.matrix_exp(A).transpose(1, 2)
    torch.testing.assert_close(se3_exp_map(x), ref, atol=1e-12, rtol=0)


def test_quaternion_apply_matches_matrix():
    q = random_quaternions(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    p = torch.randn(16, 3, dtype=torch.float64)
    torch.testing.assert_close(quaternion_apply(q, p), (quaternion_to_matrix(q) @ p[..., None])[..., 0])


def test_quaternion_multiply_is_matrix_product():
    g = torch.Generator().manual_seed(4)
    a = random_quaternions(16, dtype=torch.float64, generator=g)
    b = random_quaternions(16, dtype=torch.float64, generator=g)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_multiply(a, b)),
                               quaternion_to_matrix(a) @ quaternion_to_matrix(b))
    ident = quaternion_raw_multiply(a, quaternion_invert(a))
    torch.testing.assert_close(ident, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(16, 4))


def test_hand_computed():
    # 90 degrees about z maps x to y (column vectors)
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    q = axis_angle_to_quaternion(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(q, torch.tensor([math.sqrt(0.5), 0, 0, math.sqrt(0.5)]))
    torch.testing.assert_close(hat(torch.tensor([1.0, 2.0, 3.0])),
                               torch.tensor([[0.0, -3.0, 2.0], [3.0, 0.0, -1.0], [-2.0, 1.0, 0.0]]))
    torch.testing.assert_close(euler_angles_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]), "XYZ"), R)


# ------------------------------------------------------------------------------------ round trips
vec3 = st.tuples(*[st.floats(-3.0, 3.0) for _ in range(3)])


@HYP
@given(st.lists(vec3, min_size=1, max_size=8), st.sampled_from([1.0, 1e-3, 1e-7]))
def test_exp_log_round_trip(ws, scale):
    w = torch.tensor(ws, dtype=torch.float64) * scale
    w = w * (torch.clamp(w.norm(dim=-1, keepdim=True), max=math.pi - 1e-3) / w.norm(dim=-1, keepdim=True)
             .clamp(min=1e-300))
    R = so3_exp_map(w)
    torch.testing.assert_close(so3_log_map(R), w, atol=1e-9, rtol=0)
    torch.testing.assert_close(so3_exp_map(so3_log_map(R)), R, atol=1e-9, rtol=0)


@HYP
@given(st.integers(0, 2**31 - 1))
def test_log_exp_round_trip_any_rotation(seed):
    R = _rand_rot(16, seed)
    torch.testing.assert_close(so3_exp_map(so3_log_map(R)), R, atol=1e-10, rtol=0)
    assert bool((so3_log_map(R).norm(dim=-1) <= math.pi + 1e-9).all())
    x = torch.cat([torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
                   so3_log_map(R)], dim=1)
    torch.testing.assert_close(se3_log_map(se3_exp_map(x)), x, atol=1e-9, rtol=0)


def test_log_near_pi_is_accurate():
    axis = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(9)), dim=-1)
    for delta in [1e-1, 1e-4, 1e-7]:
        w = axis * (math.pi - delta)
        torch.testing.assert_close(so3_log_map(so3_exp_map(w)), w, atol=1e-7, rtol=0)
    # exactly pi: w and -w are the same rotation, either is a correct logarithm
    w = axis * math.pi
    back = so3_log_map(so3_exp_map(w))
    err = torch.minimum((back - w).abs().amax(-1), (back + w).abs().amax(-1))
    assert float(err.max()) < 1e-7


@HYP
@given(st.integers(0, 2**31 - 1))
def test_quaternion_matrix_round_trip(seed):
    q = random_quaternions(16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(q)), standardize_quaternion(q))
    R = quaternion_to_matrix(q)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(16, 3, 3))
    torch.testing.assert_close(axis_angle_to_matrix(quaternion_to_axis_angle(q)), R)


@HYP
@given(st.integers(0, 2**31 - 1), st.sampled_from(CONVENTIONS))
def test_euler_round_trip(seed, convention):
    R = _rand_rot(16, seed)
    angles = matrix_to_euler_angles(R, convention)
    torch.testing.assert_close(euler_angles_to_matrix(angles, convention), R, atol=1e-9, rtol=0)
    # angles in the canonical range come back unchanged
    again = matrix_to_euler_angles(euler_angles_to_matrix(angles, convention), convention)
    torch.testing.assert_close(again, angles, atol=1e-7, rtol=0)


@HYP
@given(st.integers(0, 2**31 - 1))
def test_6d_round_trip(seed):
    R = _rand_rot(16, seed)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R)


def test_batch_shapes():
    w = torch.randn(2, 5, 3)
    assert so3_exp_map(w).shape == (2, 5, 3, 3)
    assert so3_log_map(so3_exp_map(w)).shape == (2, 5, 3)
    assert se3_exp_map(torch.randn(2, 5, 6)).shape == (2, 5, 4, 4)
    assert matrix_to_quaternion(so3_exp_map(w)).shape == (2, 5, 4)
    assert euler_angles_to_matrix(torch.randn(3), "ZYZ").shape == (3, 3)
    assert so3_exp_map(torch.randn(3, dtype=torch.float64)).dtype == torch.float64


# -------------------------------------------------------------------------------------- gradients
def test_gradcheck_exp_log():
    g = torch.Generator().manual_seed(5)
    for w in [torch.zeros(1, 3), torch.full((1, 3), 1e-6), torch.full((1, 3), 1e-3), torch.randn(3, 3, generator=g)]:
        w = w.double().requires_grad_(True)
        assert torch.autograd.gradcheck(so3_exp_map, (w,))
        x = torch.cat([torch.randn(w.shape[0], 3, generator=g).double(), w.detach()], 1).requires_grad_(True)
        assert torch.autograd.gradcheck(se3_exp_map, (x,))
    for R in [torch.eye(3)[None], so3_exp_map(torch.full((1, 3), 1e-4)), _rand_rot(3, 6).float(),
              so3_exp_map(torch.tensor([[math.pi - 1e-2, 0.0, 0.0]]))]:
        R = R.double().requires_grad_(True)
        assert torch.autograd.gradcheck(so3_log_map, (R,))


def test_gradients_finite_at_identity_and_pi():
    for w in [torch.zeros(2, 3), torch.tensor([[math.pi, 0.0, 0.0], [0.0, 0.0, -math.pi]])]:
        w = w.requires_grad_(True)
        log = so3_log_map(so3_exp_map(w))
        (gw,) = torch.autograd.grad(log.sum(), w)
        assert bool(torch.isfinite(gw).all())
    R = torch.eye(3).expand(2, 3, 3).clone().requires_grad_(True)
    (gR,) = torch.autograd.grad(so3_rotation_angle(R).sum(), R)
    assert bool(torch.isfinite(gR).all())


def test_rotation_angles():
    w = torch.tensor([[0.3, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(so3_rotation_angle(so3_exp_map(w)), torch.tensor([0.3, 2.0], dtype=torch.float64))
    torch.testing.assert_close(so3_relative_angle(so3_exp_map(w), so3_exp_map(w)),
                               torch.zeros(2, dtype=torch.float64), atol=2e-2, rtol=0)
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(acos_linear_extrapolation(x, (-0.9, 0.9))[1:4], torch.acos(x[1:4]))


# ------------------------------------------------------------------------------------- randomness
def test_random_rotations_generator():
    a = random_rotations(8, generator=torch.Generator().manual_seed(7))
    b = random_rotations(8, generator=torch.Generator().manual_seed(7))
    c = random_rotations(8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(torch.linalg.det(a), torch.ones(8))
    assert bool((random_quaternions(100, generator=torch.Generator().manual_seed(0))[:, 0] >= 0).all())


# -------------------------------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(ValueError, match="log_rot"):
        so3_exp_map(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="log_rot"):
        so3_exp_map([[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match="log_rot"):
        so3_exp_map(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="R"):
        so3_log_map(torch.zeros(4, 3, 4))
    with pytest.raises(ValueError, match="trace"):
        so3_log_map(5 * torch.eye(3)[None])
    with pytest.raises(ValueError, match="skew"):
        hat_inv(torch.eye(3)[None])
    not_row_vector = torch.eye(4)[None].clone()
    not_row_vector[0, 0, 3] = 1.0  # translation in the last column: the column-vector layout
    with pytest.raises(ValueError, match="transform"):
        se3_log_map(not_row_vector)
    with pytest.raises(ValueError, match="quaternions"):
        quaternion_to_matrix(torch.zeros(3))
    for bad in ["XY", "XXY", "XYW", "XYY"]:
        with pytest.raises(ValueError, match="convention"):
            euler_angles_to_matrix(torch.zeros(3), bad)
    with pytest.raises(ValueError, match="n must"):
        random_rotations(-1)


def test_axis_angle_fast_and_quaternion_paths_agree():
    """PyTorch3D's ``fast=`` switch of axis_angle_to_matrix / matrix_to_axis_angle: both paths, same result,
    including angles near 0 and near pi (where the fast inverse reads the axis from (R + I) / 2)."""
    import math

    from lib3d.geometry import axis_angle_to_matrix, matrix_to_axis_angle

    g = torch.Generator().manual_seed(3)
    axis = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=1)
    angle = torch.cat([torch.rand(490, generator=g, dtype=torch.float64) * 3.1,
                       torch.full((5,), 1e-9, dtype=torch.float64), torch.full((5,), math.pi - 1e-7, dtype=torch.float64)])
    aa = axis * angle[:, None]
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(axis_angle_to_matrix(aa, fast=True), R, rtol=0, atol=1e-12)
    for fast in (False, True):
        back = matrix_to_axis_angle(R, fast=fast)
        torch.testing.assert_close(axis_angle_to_matrix(back), R, rtol=0, atol=1e-6)
        torch.testing.assert_close(back[:490], aa[:490], rtol=0, atol=1e-9)


SCRIPTABLE = ["quaternion_to_matrix", "matrix_to_quaternion", "axis_angle_to_matrix", "matrix_to_axis_angle",
              "axis_angle_to_quaternion", "quaternion_to_axis_angle", "rotation_6d_to_matrix",
              "matrix_to_rotation_6d", "quaternion_multiply", "quaternion_raw_multiply", "quaternion_invert",
              "quaternion_apply", "standardize_quaternion", "so3_exp_map", "so3_log_map", "hat", "hat_inv",
              "so3_relative_angle", "so3_rotation_angle", "se3_exp_map", "se3_log_map"]


@pytest.mark.parametrize("name", SCRIPTABLE + ["euler_angles_to_matrix", "matrix_to_euler_angles"])
def test_rotation_functions_compile_with_torchscript(name):
    """As in PyTorch3D, the conversions compile with torch.jit.script (the input checks run only in eager
    mode) and give the eager results; eager calls still check their inputs."""
    import inspect

    import lib3d.geometry.rotations as rot

    fn = getattr(rot, name)
    scripted = torch.jit.script(fn)
    g = torch.Generator().manual_seed(0)
    R = rot.random_rotations(5, generator=g, dtype=torch.float64)
    q = rot.matrix_to_quaternion(R)
    inputs = {"matrix": R, "R": R, "R1": R, "R2": R.flip(0), "quaternions": q, "quaternion": q, "a": q,
              "b": q.flip(0), "point": torch.rand(5, 3, dtype=torch.float64), "axis_angle": rot.matrix_to_axis_angle(R),
              "d6": rot.matrix_to_rotation_6d(R), "log_rot": rot.so3_log_map(R), "v": torch.rand(5, 3, dtype=torch.float64),
              "h": rot.hat(torch.rand(5, 3, dtype=torch.float64)), "euler_angles": torch.rand(5, 3, dtype=torch.float64),
              "log_transform": torch.rand(5, 6, dtype=torch.float64), "convention": "XYZ",
              "transform": rot.se3_exp_map(torch.rand(5, 6, dtype=torch.float64))}
    params = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
    args = [inputs[p.name] for p in params]
    torch.testing.assert_close(scripted(*args), fn(*args))
    if params[0].name != "convention":
        with pytest.raises((ValueError, TypeError)):
            fn(torch.zeros(5, 7, dtype=torch.float64), *args[1:])
