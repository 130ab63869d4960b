"""Rotation representations and the SO(3) / SE(3) exponential and logarithm maps (PyTorch3D's names).

Conventions (PyTorch3D's ``pytorch3d.transforms``):

- Rotation *matrices* returned by the conversion functions (``quaternion_to_matrix``,
  ``axis_angle_to_matrix``, ``so3_exp_map``, ``euler_angles_to_matrix``, ...) act on **column** vectors:
  ``x' = R @ x``. Use ``points @ R.transpose(-1, -2)`` (or ``Rotate(R.transpose(-1, -2))``) to rotate row
  vectors the same way. ``se3_exp_map`` is the exception: it returns the 4x4 matrix in the row-vector
  convention of ``Transform3d`` (rotation transposed, translation in the last row).
- Quaternions are real part first: ``(w, x, y, z)``; ``q`` and ``-q`` are the same rotation and
  "standardised" quaternions have ``w >= 0``.
- Axis-angle vectors ``a``: the rotation by ``|a|`` radians about ``a / |a|`` (counter-clockwise, right hand).
- Euler angles: three angles and a convention of three letters from ``{X, Y, Z}``, e.g. ``"XYZ"``
  gives ``R = R_X(a0) @ R_Y(a1) @ R_Z(a2)`` (intrinsic rotations). All 12 conventions are supported.
- The 6D representation (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
  CVPR 2019) is the first two **rows** of the matrix, ``(..., 6)``.

Every function accepts any number of leading batch dimensions ``...`` (PyTorch3D's so3/se3 functions
require exactly one, ``N``); dtype and device follow the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_tensor, is_tracing

__all__ = [
    "acos_linear_extrapolation",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "euler_angles_to_matrix",
    "hat",
    "hat_inv",
    "matrix_to_axis_angle",
    "matrix_to_euler_angles",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quaternion_apply",
    "quaternion_invert",
    "quaternion_multiply",
    "quaternion_raw_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_rotation",
    "random_rotations",
    "rotation_6d_to_matrix",
    "se3_exp_map",
    "se3_log_map",
    "so3_exp_map",
    "so3_log_map",
    "so3_relative_angle",
    "so3_rotation_angle",
    "standardize_quaternion",
]

HAT_INV_SKEW_SYMMETRIC_TOL = 1e-5


def _float_check(name: str, x, spec) -> torch.Tensor:
    check_shape(name, x, spec, dtype="float")
    return x


# ----------------------------------------------------------------------------------------------------
# hat / hat_inv
# ----------------------------------------------------------------------------------------------------


def hat(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric cross-product matrix of 3-vectors: ``hat(v) @ w == cross(v, w)``.

    Args:
        v: ``(..., 3)`` float.

    Returns:
        ``(..., 3, 3)`` float: ``[[0, -z, y], [z, 0, -x], [-y, x, 0]]``.

    Raises:
        ValueError: ``v`` is not ``(..., 3)``.
    """
    if not torch.jit.is_scripting():
        _float_check("v", v, (..., 3))
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(v.shape[:-1] + (3, 3))


def hat_inv(h: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat`: the vector of a skew-symmetric matrix.

    Args:
        h: ``(..., 3, 3)`` float skew-symmetric matrices.

    Returns:
        ``(..., 3)`` float ``(h[2, 1], h[0, 2], h[1, 0])``.

    Raises:
        ValueError: wrong shape, or ``h`` is not skew-symmetric (``|h + h^T|`` summed over a matrix above
            1e-5, as PyTorch3D; skipped while tracing).
    """
    if not torch.jit.is_scripting():
        _float_check("h", h, (..., 3, 3))
    if not torch.jit.is_scripting():
        if not is_tracing() and h.numel() > 0:
            ss_diff = (h + h.transpose(-1, -2)).abs().flatten(-2).sum(-1).max()
            if float(ss_diff) > HAT_INV_SKEW_SYMMETRIC_TOL:
                raise ValueError("h must be skew-symmetric, got |h + h^T| summed = " + str(float(ss_diff)))
    return torch.stack([h[..., 2, 1], h[..., 0, 2], h[..., 1, 0]], dim=-1)


# ----------------------------------------------------------------------------------------------------
# quaternions
# ----------------------------------------------------------------------------------------------------


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of (not necessarily unit) quaternions.

    ``R = I + 2 s [[-(y^2+z^2), xy - zw, xz + yw], ...]`` with ``s = 1 / |q|^2``.

    Args:
        quaternions: ``(..., 4)`` float, real part first ``(w, x, y, z)``.

    Returns:
        ``(..., 3, 3)`` float rotation matrices (column-vector convention).
    """
    if not torch.jit.is_scripting():
        _float_check("quaternions", quaternions, (..., 4))
    r, i, j, k = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack(
        (
            1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
            two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
            two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive_part(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(0, x))`` with a zero (not NaN/inf) gradient where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


# Shepperd's candidates: row k of the symmetric 4x4 matrix 4 q q^T (k = w, x, y, z) as indices into
# feats = (d_w, d_x, d_y, d_z, s_x, s_y, s_z, a_xy, a_xz, a_yz) with d = 4 q_k^2, s the antisymmetric
# and a the symmetric off-diagonal sums of the matrix (see matrix_to_quaternion).
# Shepperd's method: for the largest diagonal term k, the feature columns that give 4 q_k q (written out
# as a literal inside matrix_to_quaternion so that TorchScript can compile it):
# rows ((0, 4, 5, 6), (4, 1, 7, 8), (5, 7, 2, 9), (6, 8, 9, 3)) of feats = [d (4), sk (3), sy (3)].


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternions of rotation matrices (Shepperd's method: the best-conditioned of four candidates).

    With ``d_k = 4 q_k^2`` (``d_w = 1 + m00 + m11 + m22``, ``d_x = 1 + m00 - m11 - m22``, ...), the row
    ``k = argmax d`` of ``4 q q^T`` divided by ``2 sqrt(d_k) = 4 |q_k|`` is the quaternion (PyTorch3D's
    formulation, evaluated only for the chosen row).

    Args:
        matrix: ``(..., 3, 3)`` float rotation matrices (column-vector convention).

    Returns:
        ``(..., 4)`` float standardised quaternions ``(w, x, y, z)`` with ``w >= 0``.
    """
    if not torch.jit.is_scripting():
        _float_check("matrix", matrix, (..., 3, 3))
    batch_dim = matrix.shape[:-2]
    m = matrix.reshape(batch_dim + (9,))
    dev = matrix.device
    # m index: m00 0, m01 1, m02 2, m10 3, m11 4, m12 5, m20 6, m21 7, m22 8
    m00, m11, m22 = m[..., 0], m[..., 4], m[..., 8]
    d = torch.relu(torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22,
                                1.0 - m00 - m11 + m22], dim=-1))  # (..., 4) = 4 q_k^2 (clamped at 0)
    pick = torch.tensor([7, 2, 3, 5, 6, 1, 3, 2, 5, 1, 6, 7], device=dev)
    cols = m.index_select(-1, pick)  # (..., 12)
    sk = cols[..., 0:3] - cols[..., 3:6]  # m21 - m12, m02 - m20, m10 - m01
    sy = cols[..., 6:9] + cols[..., 9:12]  # m10 + m01, m02 + m20, m12 + m21
    feats = torch.cat([d, sk, sy], dim=-1)  # (..., 10)
    best = d.argmax(dim=-1, keepdim=True)  # (..., 1)
    rows = torch.tensor([[0, 4, 5, 6], [4, 1, 7, 8], [5, 7, 2, 9], [6, 8, 9, 3]], device=dev)[best[..., 0]]  # (..., 4)
    num = torch.gather(feats, -1, rows)
    q_abs = _sqrt_positive_part(torch.gather(d, -1, best))  # 2 |q_k|
    out = num / (2.0 * q_abs.clamp(min=0.1))
    return standardize_quaternion(out)


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip quaternions to a non-negative real part (``q`` and ``-q`` are the same rotation).

    Args:
        quaternions: ``(..., 4)`` float ``(w, x, y, z)``.

    Returns:
        ``(..., 4)`` float with ``w >= 0``.
    """
    if not torch.jit.is_scripting():
        _float_check("quaternions", quaternions, (..., 4))
    return torch.where(quaternions[..., 0:1] < 0, -quaternions, quaternions)


def quaternion_raw_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` (not standardised); the rotation "first b, then a".

    Args:
        a: ``(..., 4)`` float ``(w, x, y, z)``.
        b: ``(..., 4)`` float, broadcastable with ``a``.

    Returns:
        ``(..., 4)`` float.
    """
    if not torch.jit.is_scripting():
        _float_check("a", a, (..., 4))
    if not torch.jit.is_scripting():
        _float_check("b", b, (..., 4))
    aw, ax, ay, az = torch.unbind(a, -1)
    bw, bx, by, bz = torch.unbind(b, -1)
    ow = aw * bw - ax * bx - ay * by - az * bz
    ox = aw * bx + ax * bw + ay * bz - az * by
    oy = aw * by - ax * bz + ay * bw + az * bx
    oz = aw * bz + ax * by - ay * bx + az * bw
    return torch.stack((ow, ox, oy, oz), -1)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b``, standardised to ``w >= 0`` (PyTorch3D's ``quaternion_multiply``).

    Args:
        a: ``(..., 4)`` float ``(w, x, y, z)``.
        b: ``(..., 4)`` float, broadcastable with ``a``.

    Returns:
        ``(..., 4)`` float.
    """
    return standardize_quaternion(quaternion_raw_multiply(a, b))


def quaternion_invert(quaternion: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion.

    Args:
        quaternion: ``(..., 4)`` float.

    Returns:
        ``(..., 4)`` float.
    """
    if not torch.jit.is_scripting():
        _float_check("quaternion", quaternion, (..., 4))
    scaling = torch.tensor([1, -1, -1, -1], dtype=quaternion.dtype, device=quaternion.device)
    return quaternion * scaling


def quaternion_apply(quaternion: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Rotate 3D points by unit quaternions: ``q * (0, p) * q^-1``.

    Args:
        quaternion: ``(..., 4)`` float ``(w, x, y, z)``.
        point: ``(..., 3)`` float, broadcastable with ``quaternion``'s batch.

    Returns:
        ``(..., 3)`` float, equal to ``quaternion_to_matrix(q) @ p``.
    """
    if not torch.jit.is_scripting():
        _float_check("quaternion", quaternion, (..., 4))
    if not torch.jit.is_scripting():
        _float_check("point", point, (..., 3))
    real_parts = point.new_zeros(point.shape[:-1] + (1,))
    point_as_quaternion = torch.cat((real_parts, point), -1)
    out = quaternion_raw_multiply(
        quaternion_raw_multiply(quaternion, point_as_quaternion), quaternion_invert(quaternion)
    )
    return out[..., 1:]


def random_quaternions(
    n: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniformly distributed random unit quaternions (normalised 4D Gaussians), ``w >= 0``.

    Args:
        n: how many.
        dtype: float dtype (default ``torch.get_default_dtype()``).
        device: device (default: the generator's device, else CPU).
        generator: random generator, for reproducibility.

    Returns:
        ``(n, 4)`` float.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if device is None and generator is not None:
        device = generator.device
    o = torch.randn((n, 4), dtype=dtype, device=device, generator=generator)
    s = (o * o).sum(1)
    o = o / torch.copysign(torch.sqrt(s), o[:, 0])[:, None]
    return o


def random_rotations(
    n: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniformly distributed random rotation matrices.

    Args:
        n: how many.
        dtype, device, generator: as :func:`random_quaternions`.

    Returns:
        ``(n, 3, 3)`` float.
    """
    return quaternion_to_matrix(random_quaternions(n, dtype=dtype, device=device, generator=generator))


def random_rotation(dtype: torch.dtype | None = None, device=None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly distributed random rotation matrix ``(3, 3)``."""
    return random_rotations(1, dtype=dtype, device=device, generator=generator)[0]


# ----------------------------------------------------------------------------------------------------
# axis-angle
# ----------------------------------------------------------------------------------------------------


def _sinc_half_over_angle(angles: torch.Tensor) -> torch.Tensor:
    """``sin(angle / 2) / angle`` with its limit 1/2 at 0 (smooth, finite gradient)."""
    return 0.5 * torch.sinc(angles * (0.5 / math.pi))


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Quaternions of axis-angle vectors: ``(cos(t/2), sin(t/2) a/t)`` with ``t = |a|``.

    Args:
        axis_angle: ``(..., 3)`` float.

    Returns:
        ``(..., 4)`` float ``(w, x, y, z)`` (not standardised: ``w < 0`` when ``|a| > pi``).
    """
    if not torch.jit.is_scripting():
        _float_check("axis_angle", axis_angle, (..., 3))
    angles = torch.linalg.vector_norm(axis_angle, dim=-1, keepdim=True)
    return torch.cat([torch.cos(angles * 0.5), axis_angle * _sinc_half_over_angle(angles)], dim=-1)


def quaternion_to_axis_angle(quaternions: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors of quaternions: ``2 atan2(|v|, w) v / |v|``.

    Args:
        quaternions: ``(..., 4)`` float ``(w, x, y, z)``.

    Returns:
        ``(..., 3)`` float; the angle lies in ``[0, pi]`` for standardised input (``w >= 0``) and in
        ``[0, 2 pi)`` otherwise.
    """
    if not torch.jit.is_scripting():
        _float_check("quaternions", quaternions, (..., 4))
    norms = torch.linalg.vector_norm(quaternions[..., 1:], dim=-1, keepdim=True)
    half_angles = torch.atan2(norms, quaternions[..., :1])
    sin_half_angles_over_angles = 0.5 * torch.sinc(half_angles / math.pi)
    return quaternions[..., 1:] / sin_half_angles_over_angles


def axis_angle_to_matrix(axis_angle: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """Rotation matrices of axis-angle vectors.

    Args:
        axis_angle: ``(..., 3)`` float.
        fast: as PyTorch3D: True uses Rodrigues' formula directly (see :func:`so3_exp_map`); False goes through
            unit quaternions (``quaternion_to_matrix(axis_angle_to_quaternion(.))``). Both agree to float
            rounding; the quaternion path is PyTorch3D's default.

    Returns:
        ``(..., 3, 3)`` float (column-vector convention).
    """
    if not torch.jit.is_scripting():
        _float_check("axis_angle", axis_angle, (..., 3))
    if fast:
        return _rodrigues(axis_angle, 1e-4)
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def matrix_to_axis_angle(matrix: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """Axis-angle vectors of rotation matrices, angle in ``[0, pi]``.

    Args:
        matrix: ``(..., 3, 3)`` float rotation matrices.
        fast: as PyTorch3D: False goes through quaternions (stable everywhere); True reads the angle from the
            trace and the axis from the skew part, ``angle = atan2(|w|, tr(R) - 1)``, ``axis_angle = w / (2
            sinc(angle))`` with ``w = (R21 - R12, R02 - R20, R10 - R01)``, and near ``angle = pi`` (where
            ``w`` vanishes) the axis from the largest column of ``(R + I) / 2 = n n^T``.

    Returns:
        ``(..., 3)`` float.
    """
    if not fast:
        return quaternion_to_axis_angle(matrix_to_quaternion(matrix))
    if not torch.jit.is_scripting():
        _float_check("matrix", matrix, (..., 3, 3))
    w = torch.stack([matrix[..., 2, 1] - matrix[..., 1, 2], matrix[..., 0, 2] - matrix[..., 2, 0],
                     matrix[..., 1, 0] - matrix[..., 0, 1]], -1)
    norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    trace = matrix.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)
    angle = torch.atan2(norm, trace - 1)
    generic = 0.5 * w / torch.sinc(angle / math.pi)
    # near pi: (R + I) / 2 = n n^T; its largest column is |n_k| n, normalise and sign it by w
    nnt = 0.5 * (matrix + torch.eye(3, dtype=matrix.dtype, device=matrix.device))
    cols = torch.linalg.vector_norm(nnt, dim=-2)  # (..., 3) column norms
    pick = F.one_hot(cols.argmax(-1), 3).to(matrix.dtype)  # (..., 3) the largest column
    n = F.normalize((nnt * pick.unsqueeze(-2)).sum(-1), dim=-1)
    sign = torch.where((n * w).sum(-1, keepdim=True) < 0, -torch.ones_like(norm), torch.ones_like(norm))
    near_pi = (math.pi - angle) < 1e-3
    return torch.where(near_pi, sign * angle * n, generic)


# ----------------------------------------------------------------------------------------------------
# Euler angles
# ----------------------------------------------------------------------------------------------------

_AXES = ("X", "Y", "Z")


def _check_convention(convention) -> str:
    if not isinstance(convention, str):
        raise TypeError(f"convention must be a str of 3 letters, got {type(convention).__name__}")
    if len(convention) != 3:
        raise ValueError(f"convention must have 3 letters, got {convention!r}")
    for letter in convention:
        if letter not in _AXES:
            raise ValueError(f"convention letters must be X, Y or Z, got {letter!r} in {convention!r}")
    if convention[1] in (convention[0], convention[2]):
        raise ValueError(f"convention {convention!r} repeats an axis in consecutive positions")
    return convention


def _axis_angle_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Column-vector rotation matrices ``(..., 3, 3)`` about one coordinate axis by ``angle (...)``."""
    cos = torch.cos(angle)
    sin = torch.sin(angle)
    one = torch.ones_like(angle)
    zero = torch.zeros_like(angle)
    if axis == "X":
        r_flat = (one, zero, zero, zero, cos, -sin, zero, sin, cos)
    elif axis == "Y":
        r_flat = (cos, zero, sin, zero, one, zero, -sin, zero, cos)
    elif axis == "Z":
        r_flat = (cos, -sin, zero, sin, cos, zero, zero, zero, one)
    else:
        raise ValueError("axis must be one of 'X', 'Y', 'Z', got '" + axis + "'")
    return torch.stack(r_flat, -1).reshape(angle.shape + (3, 3))


def euler_angles_to_matrix(euler_angles: torch.Tensor, convention: str) -> torch.Tensor:
    """Rotation matrices of Euler angles: ``R = R_{c0}(a0) @ R_{c1}(a1) @ R_{c2}(a2)``.

    Args:
        euler_angles: ``(..., 3)`` float radians.
        convention: three letters from ``X, Y, Z`` without consecutive repeats (the 6 Tait-Bryan
            conventions ``XYZ``... and the 6 proper Euler conventions ``XYX``...).

    Returns:
        ``(..., 3, 3)`` float (column-vector convention).

    Raises:
        ValueError: bad shape or convention.
    """
    if not torch.jit.is_scripting():
        _float_check("euler_angles", euler_angles, (..., 3))
    if not torch.jit.is_scripting():
        _check_convention(convention)
    m = [_axis_angle_rotation(c, e) for c, e in zip(convention, torch.unbind(euler_angles, -1))]
    return m[0] @ m[1] @ m[2]


def _angle_from_tan(axis: str, other_axis: str, data: torch.Tensor, horizontal: bool,
                    tait_bryan: bool) -> torch.Tensor:
    """First or third Euler angle from a row/column of the matrix (PyTorch3D's ``_angle_from_tan``)."""
    i1, i2 = {"X": (2, 1), "Y": (0, 2), "Z": (1, 0)}[axis]
    if horizontal:
        i2, i1 = i1, i2
    even = (axis + other_axis) in ["XY", "YZ", "ZX"]
    if horizontal == even:
        return torch.atan2(data[..., i1], data[..., i2])
    if tait_bryan:
        return torch.atan2(-data[..., i2], data[..., i1])
    return torch.atan2(data[..., i2], -data[..., i1])


def matrix_to_euler_angles(matrix: torch.Tensor, convention: str) -> torch.Tensor:
    """Euler angles of rotation matrices (inverse of :func:`euler_angles_to_matrix`).

    The middle angle lies in ``[-pi/2, pi/2]`` (Tait-Bryan) or ``[0, pi]`` (proper Euler); the others in
    ``(-pi, pi]``. At gimbal lock the split between the first and third angle is arbitrary (the matrix
    is still reproduced).

    Args:
        matrix: ``(..., 3, 3)`` float rotation matrices.
        convention: as :func:`euler_angles_to_matrix`.

    Returns:
        ``(..., 3)`` float radians.
    """
    if not torch.jit.is_scripting():
        _float_check("matrix", matrix, (..., 3, 3))
    if not torch.jit.is_scripting():
        _check_convention(convention)
    i0 = "XYZ".index(convention[0])
    i2 = "XYZ".index(convention[2])
    tait_bryan = i0 != i2
    if tait_bryan:
        sign = -1.0 if i0 - i2 in [-1, 2] else 1.0
        central_angle = torch.asin((matrix[..., i0, i2] * sign).clamp(-1.0, 1.0))
    else:
        central_angle = torch.acos(matrix[..., i0, i0].clamp(-1.0, 1.0))
    o = (
        _angle_from_tan(convention[0], convention[1], matrix[..., i2], False, tait_bryan),
        central_angle,
        _angle_from_tan(convention[2], convention[1], matrix[..., i0, :], True, tait_bryan),
    )
    return torch.stack(o, -1)


# ----------------------------------------------------------------------------------------------------
# 6D representation
# ----------------------------------------------------------------------------------------------------


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from the 6D representation by Gram-Schmidt (Zhou et al., CVPR 2019).

    Rows: ``b1 = a1/|a1|``, ``b2 = normalise(a2 - (b1.a2) b1)``, ``b3 = b1 x b2``.

    Args:
        d6: ``(..., 6)`` float: two 3-vectors ``a1, a2``.

    Returns:
        ``(..., 3, 3)`` float with rows ``b1, b2, b3``.
    """
    if not torch.jit.is_scripting():
        _float_check("d6", d6, (..., 6))
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = F.normalize(b2, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """The 6D representation: the first two rows of the matrix, flattened.

    Args:
        matrix: ``(..., 3, 3)`` float.

    Returns:
        ``(..., 6)`` float.
    """
    if not torch.jit.is_scripting():
        _float_check("matrix", matrix, (..., 3, 3))
    return matrix[..., :2, :].clone().reshape(matrix.shape[:-2] + (6,))


# ----------------------------------------------------------------------------------------------------
# SO(3)
# ----------------------------------------------------------------------------------------------------


def _rodrigues_factors(theta2: torch.Tensor, eps: float, need_c: bool = True):
    """``(sin t / t, (1 - cos t) / t^2, (t - sin t) / t^3)`` from ``t^2``, Taylor series for ``t^2 < eps``.

    The series are exact to ``O(t^6)``; both branches are evaluated on safe inputs so gradients are
    finite everywhere (including at 0). ``need_c=False`` skips the third factor (returns None for it).
    """
    small = theta2 < eps
    t2s = torch.where(small, torch.ones_like(theta2), theta2)  # safe large-branch input
    t = torch.sqrt(t2s)
    sin, cos = torch.sin(t), torch.cos(t)
    a_big = sin / t
    b_big = (1.0 - cos) / t2s
    t2 = torch.where(small, theta2, torch.zeros_like(theta2))
    t4 = t2 * t2
    a_small = 1.0 - t2 / 6.0 + t4 / 120.0
    b_small = 0.5 - t2 / 24.0 + t4 / 720.0
    c: torch.Tensor | None = None
    if need_c:
        c_big = (t - sin) / (t2s * t)
        c_small = 1.0 / 6.0 - t2 / 120.0 + t4 / 5040.0
        c = torch.where(small, c_small, c_big)
    return torch.where(small, a_small, a_big), torch.where(small, b_small, b_big), c


def _rodrigues(log_rot: torch.Tensor, eps: float) -> torch.Tensor:
    """``I + a [w]_x + b [w]_x^2`` using ``[w]_x^2 = w w^T - t^2 I`` (no batched 3x3 products)."""
    theta2 = (log_rot * log_rot).sum(-1)
    a, b, _ = _rodrigues_factors(theta2, max(float(eps), 1e-12), need_c=False)
    skews = hat(log_rot)
    outer = log_rot[..., :, None] * log_rot[..., None, :]
    eye = torch.eye(3, dtype=log_rot.dtype, device=log_rot.device)
    return (1.0 - b * theta2)[..., None, None] * eye + a[..., None, None] * skews + b[..., None, None] * outer


def so3_exp_map(log_rot: torch.Tensor, eps: float = 0.0001) -> torch.Tensor:
    """Exponential map of so(3): rotation matrices of axis-angle vectors (Rodrigues' formula).

    ``R = I + sin(t)/t [w]_x + (1 - cos(t))/t^2 [w]_x^2`` with ``t = |w|``.

    Args:
        log_rot: ``(..., 3)`` float axis-angle vectors ``w`` (PyTorch3D: ``(N, 3)``).
        eps: below ``t^2 < eps`` the factors use their Taylor series (exact to ``O(t^6)``), so the map
            and its gradient are finite and accurate at and near 0. (PyTorch3D instead clamps
            ``t^2 >= eps``, which perturbs tiny rotations by ~``eps``; within the parity tolerance.)

    Returns:
        ``(..., 3, 3)`` float rotation matrices (column-vector convention).

    Raises:
        ValueError: ``log_rot`` is not ``(..., 3)``.
    """
    if not torch.jit.is_scripting():
        _float_check("log_rot", log_rot, (..., 3))
    return _rodrigues(log_rot, eps)


def acos_linear_extrapolation(x: torch.Tensor, bounds: tuple[float, float] = (-1.0 + 1e-4, 1.0 - 1e-4)
                              ) -> torch.Tensor:
    """``acos(x)`` inside ``bounds``, its first-order Taylor extension outside (finite gradients at +-1).

    Args:
        x: ``(...)`` float.
        bounds: ``(lower, upper)`` with ``-1 < lower <= upper < 1``.

    Returns:
        ``(...)`` float.
    """
    if not torch.jit.is_scripting():
        check_tensor("x", x, dtype="float")
    lower, upper = bounds
    if lower > upper:
        raise ValueError(f"bounds must satisfy lower <= upper, got {bounds}")
    if lower <= -1.0 or upper >= 1.0:
        raise ValueError(f"bounds must lie strictly inside (-1, 1), got {bounds}")

    # first-order Taylor expansion of acos at the bounds: acos(x0) - (x - x0) / sqrt(1 - x0^2)
    lin_upper = (x - upper) * (-1.0 / math.sqrt(1.0 - upper * upper)) + math.acos(upper)
    lin_lower = (x - lower) * (-1.0 / math.sqrt(1.0 - lower * lower)) + math.acos(lower)
    mid = torch.acos(x.clamp(lower, upper))
    return torch.where(x >= upper, lin_upper, torch.where(x <= lower, lin_lower, mid))


def so3_rotation_angle(R: torch.Tensor, eps: float = 1e-4, cos_angle: bool = False,
                       cos_bound: float = 1e-4) -> torch.Tensor:
    """Rotation angles ``acos((tr R - 1) / 2)`` of rotation matrices.

    Args:
        R: ``(..., 3, 3)`` float.
        eps: tolerance of the trace check ``-1 - eps <= tr R <= 3 + eps``.
        cos_angle: return the cosine instead of the angle.
        cos_bound: if > 0, ``acos`` is linearly extrapolated outside ``[-1 + cos_bound, 1 - cos_bound]``
            (finite gradients; see :func:`acos_linear_extrapolation`).

    Returns:
        ``(...)`` float angles in ``[0, pi]`` (or cosines).

    Raises:
        ValueError: bad shape or a trace outside the valid range.
    """
    if not torch.jit.is_scripting():
        _float_check("R", R, (..., 3, 3))
    rot_trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    if not torch.jit.is_scripting():
        if not is_tracing() and bool(((rot_trace < -1.0 - eps) | (rot_trace > 3.0 + eps)).any()):
            raise ValueError("R: a matrix has trace outside the valid range [-1-eps, 3+eps]")
    phi_cos = (rot_trace - 1.0) * 0.5
    if cos_angle:
        return phi_cos
    if cos_bound > 0.0:
        bound = 1.0 - cos_bound
        return acos_linear_extrapolation(phi_cos, (-bound, bound))
    return torch.acos(phi_cos)


def so3_relative_angle(R1: torch.Tensor, R2: torch.Tensor, cos_angle: bool = False,
                       cos_bound: float = 1e-4, eps: float = 1e-4) -> torch.Tensor:
    """Angles of the relative rotations ``R1 @ R2^T``.

    Args:
        R1: ``(..., 3, 3)`` float.
        R2: ``(..., 3, 3)`` float, broadcastable with ``R1``.
        cos_angle, cos_bound, eps: as :func:`so3_rotation_angle`.

    Returns:
        ``(...)`` float.
    """
    if not torch.jit.is_scripting():
        _float_check("R1", R1, (..., 3, 3))
    if not torch.jit.is_scripting():
        _float_check("R2", R2, (..., 3, 3))
    return so3_rotation_angle(R1 @ R2.transpose(-1, -2), cos_angle=cos_angle, cos_bound=cos_bound, eps=eps)


def so3_log_map(R: torch.Tensor, eps: float = 0.0001, cos_bound: float = 1e-4) -> torch.Tensor:
    """Logarithm map of SO(3): axis-angle vectors (angle in ``[0, pi]``) of rotation matrices.

    Computed through the quaternion (Shepperd's method, then ``2 atan2(|v|, w) v / |v|``), which is
    accurate and has finite gradients everywhere, including at the identity and at angle pi, where
    PyTorch3D's ``(R - R^T)``-based formula degrades.

    Args:
        R: ``(..., 3, 3)`` float rotation matrices (PyTorch3D: ``(N, 3, 3)``).
        eps: tolerance of the trace check (as PyTorch3D).
        cos_bound: accepted for PyTorch3D compatibility; unused (no ``acos`` is taken).

    Returns:
        ``(..., 3)`` float.

    Raises:
        ValueError: bad shape, or a trace outside ``[-1 - eps, 3 + eps]``.
    """
    if not torch.jit.is_scripting():
        _float_check("R", R, (..., 3, 3))
    if not torch.jit.is_scripting():
        if not is_tracing() and R.numel() > 0:
            tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
            if bool(((tr < -1.0 - eps) | (tr > 3.0 + eps)).any()):
                raise ValueError("R: a matrix has trace outside the valid range [-1-eps, 3+eps]")
    return matrix_to_axis_angle(R)


# ----------------------------------------------------------------------------------------------------
# SE(3)
# ----------------------------------------------------------------------------------------------------


def _se3_V_matrix(log_rotation: torch.Tensor, eps: float) -> torch.Tensor:
    """``V = I + (1 - cos t)/t^2 [w]_x + (t - sin t)/t^3 [w]_x^2`` (left Jacobian of SO(3)), ``(..., 3, 3)``."""
    theta2 = (log_rotation * log_rotation).sum(-1)
    _, b, c_opt = _rodrigues_factors(theta2, max(float(eps), 1e-12))
    if c_opt is None:  # never: need_c=True (TorchScript's Optional refinement)
        raise RuntimeError("_rodrigues_factors returned no third factor")
    c = c_opt
    skews = hat(log_rotation)
    outer = log_rotation[..., :, None] * log_rotation[..., None, :]
    eye = torch.eye(3, dtype=log_rotation.dtype, device=log_rotation.device)
    return (1.0 - c * theta2)[..., None, None] * eye + b[..., None, None] * skews + c[..., None, None] * outer


def se3_exp_map(log_transform: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Exponential map of se(3) in PyTorch3D's layout.

    With ``log_transform = (v, w)`` (translation part first): ``R = so3_exp_map(w)``, ``t = V(w) v``,
    returned as the row-vector matrix ``[[R^T, 0], [t^T, 1]]`` (translation in the last row), so that
    ``Transform3d(matrix=se3_exp_map(x))`` maps ``p -> p R^T + t``.

    Args:
        log_transform: ``(..., 6)`` float (PyTorch3D: ``(N, 6)``).
        eps: threshold of the small-angle Taylor series (see :func:`so3_exp_map`).

    Returns:
        ``(..., 4, 4)`` float.
    """
    if not torch.jit.is_scripting():
        _float_check("log_transform", log_transform, (..., 6))
    v = log_transform[..., :3]
    w = log_transform[..., 3:]
    R = _rodrigues(w, eps)
    # t = V v = v + b (w x v) + c (w (w.v) - t^2 v)
    theta2 = (w * w).sum(-1, keepdim=True)
    _, b, c_opt = _rodrigues_factors(theta2, max(float(eps), 1e-12))
    if c_opt is None:  # never: need_c=True (TorchScript's Optional refinement)
        raise RuntimeError("_rodrigues_factors returned no third factor")
    c = c_opt
    t = v + b * torch.cross(w, v, dim=-1) + c * (w * (w * v).sum(-1, keepdim=True) - theta2 * v)
    out = log_transform.new_zeros(log_transform.shape[:-1] + (4, 4))
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., 3, :3] = t
    out[..., 3, 3] = 1.0
    return out


def se3_log_map(transform: torch.Tensor, eps: float = 1e-4, cos_bound: float = 1e-4) -> torch.Tensor:
    """Logarithm map of SE(3) in PyTorch3D's layout (inverse of :func:`se3_exp_map`).

    Args:
        transform: ``(..., 4, 4)`` float row-vector matrices ``[[R^T, 0], [t^T, 1]]``.
        eps: threshold of the small-angle series and tolerance of the trace check.
        cos_bound: accepted for PyTorch3D compatibility (see :func:`so3_log_map`).

    Returns:
        ``(..., 6)`` float ``(v, w)``: translation part first, rotation angle in ``[0, pi]``.

    Raises:
        ValueError: bad shape, or the last column ``transform[..., :3, 3]`` is not zero.
    """
    if not torch.jit.is_scripting():
        _float_check("transform", transform, (..., 4, 4))
    if not torch.jit.is_scripting():
        if not is_tracing():
            last_col = transform[..., :3, 3]
            if not torch.allclose(last_col, torch.zeros_like(last_col)):
                raise ValueError("transform: all elements of transform[..., :3, 3] must be 0 "
                                 "(row-vector convention, translation in the last row)")
    R = transform[..., :3, :3].transpose(-1, -2)
    log_rotation = so3_log_map(R, eps=eps, cos_bound=cos_bound)
    T = transform[..., 3, :3]
    V = _se3_V_matrix(log_rotation, eps)
    log_translation = torch.linalg.solve(V, T[..., None])[..., 0]
    return torch.cat((log_translation, log_rotation), dim=-1)
