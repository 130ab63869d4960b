"""An immutable, batched ``Transform3d`` in PyTorch3D's row-vector convention.

A transform is one ``(N, 4, 4)`` matrix ``M`` applied to row vectors: ``[x, y, z, 1] @ M``; the
translation sits in the last row ``M[:, 3, :3]``. ``a.compose(b)`` applies ``a`` first, then ``b``
(matrix ``M_a @ M_b``). Every operation returns a new ``Transform3d``; nothing is mutated. A batch of
size 1 broadcasts against any batch size ``N`` (in ``compose`` and in ``transform_points``).

Differences from PyTorch3D: the composed matrix is computed eagerly (PyTorch3D keeps a lazy list), so
``inverse(invert_composed=...)`` gives the same result either way; ``dtype=None`` (the default of the
constructors) follows the inputs instead of forcing float32.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from lib3d._checks import TypeValueError, check_choice, check_shape, check_tensor, is_tracing
from lib3d.geometry.rotations import _axis_angle_rotation, se3_log_map

__all__ = ["Rotate", "RotateAxisAngle", "Scale", "Transform3d", "Translate"]


def _resolve(dtype, device, *values) -> tuple[torch.dtype, torch.device]:
    """dtype/device from explicit arguments, else from the first tensor among ``values``, else float32/CPU."""
    for v in values:
        if isinstance(v, torch.Tensor):
            if dtype is None and v.is_floating_point():
                dtype = v.dtype
            if device is None:
                device = v.device
            break
    return (dtype if dtype is not None else torch.float32,
            torch.device(device) if device is not None else torch.device("cpu"))


class Transform3d:
    """A batch of ``N`` 3D transforms: one ``(N, 4, 4)`` matrix, row-vector convention, immutable.

    Args:
        dtype: dtype of the identity when ``matrix`` is None (default float32).
        device: device of the identity when ``matrix`` is None (default CPU).
        matrix: ``(4, 4)`` or ``(N, 4, 4)`` float; its dtype and device win over ``dtype``/``device``.

    Example:
        >>> t = Transform3d().scale(2.0).translate(1.0, 0.0, 0.0)   # scale first, then translate
        >>> t.transform_points(torch.ones(5, 3))                    # (5, 3): (3, 2, 2)
    """

    __slots__ = ("_matrix",)

    def __init__(self, dtype: torch.dtype | None = None, device: Any = None,
                 matrix: torch.Tensor | None = None) -> None:
        if matrix is None:
            dtype, device = _resolve(dtype, device)
            m = torch.eye(4, dtype=dtype, device=device)[None]
        else:
            check_tensor("matrix", matrix, dtype="float")
            if matrix.ndim not in (2, 3):
                raise ValueError(f"matrix must have shape (4, 4) or (N, 4, 4), got {tuple(matrix.shape)}")
            check_shape("matrix", matrix, (..., 4, 4))
            m = matrix.reshape(-1, 4, 4)
        object.__setattr__(self, "_matrix", m)

    def __setattr__(self, name, value):
        raise AttributeError("Transform3d is immutable; its methods return new transforms")

    # -- basic properties ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self._matrix.dtype

    def __len__(self) -> int:
        return self._matrix.shape[0]

    def __repr__(self) -> str:
        return f"Transform3d(N={len(self)}, dtype={self.dtype}, device={self.device})"

    def _same_kind(self, matrix: torch.Tensor) -> Transform3d:
        """A transform of this one's class (``Translate``, ``Rotate``, ...) holding ``matrix (N, 4, 4)``."""
        out = object.__new__(type(self))
        object.__setattr__(out, "_matrix", matrix)
        return out

    def __getitem__(self, index) -> Transform3d:
        """Select batch elements (int, slice, list, bool or long tensor); always keeps the batch dim and the
        class (indexing a ``Translate`` gives a ``Translate``, as in PyTorch3D)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"transform index {index} out of range for {len(self)} transforms")
            index = [index]
        return self._same_kind(self._matrix[index])

    def get_matrix(self) -> torch.Tensor:
        """The ``(N, 4, 4)`` matrix (row-vector convention, translation in the last row)."""
        return self._matrix

    def clone(self) -> Transform3d:
        return self._same_kind(self._matrix.clone())

    def detach(self) -> Transform3d:
        return self._same_kind(self._matrix.detach())

    def to(self, device: Any = None, copy: bool = False, dtype: torch.dtype | None = None) -> Transform3d:
        """A transform on ``device`` / with ``dtype`` (returns ``self`` when nothing changes and not ``copy``)."""
        m = self._matrix.to(device=device, dtype=dtype, copy=copy)
        return self if m is self._matrix else self._same_kind(m)

    def cpu(self) -> Transform3d:
        return self.to("cpu")

    def cuda(self) -> Transform3d:
        return self.to("cuda")

    # -- algebra ------------------------------------------------------------------------------------
    def compose(self, *others: Transform3d) -> Transform3d:
        """``self`` followed by each of ``others``: matrix ``M_self @ M_1 @ M_2 ...`` (N=1 broadcasts).

        Raises:
            TypeError: an argument is not a ``Transform3d`` (a ``TypeValueError``: also a ``ValueError``, as
                PyTorch3D raises).
            ValueError: batch sizes neither equal nor 1.
        """
        m = self._matrix
        for i, other in enumerate(others):
            if not isinstance(other, Transform3d):
                raise TypeValueError(f"others[{i}] must be a Transform3d, got {type(other).__name__}")
            m = _broadcast_bmm(m, other.get_matrix().to(dtype=m.dtype, device=m.device), "others")
        return Transform3d(matrix=m)

    def inverse(self, invert_composed: bool = False) -> Transform3d:
        """The inverse transform (``torch.linalg.inv`` of the matrix); ``invert_composed`` is accepted for
        PyTorch3D compatibility and has no effect (the composed matrix is always inverted)."""
        return Transform3d(matrix=torch.linalg.inv(self._matrix))

    def stack(self, *others: Transform3d) -> Transform3d:
        """Concatenate the batches of ``self`` and ``others``."""
        mats = [self._matrix] + [o.get_matrix().to(dtype=self.dtype, device=self.device) for o in others]
        return Transform3d(matrix=torch.cat(mats, dim=0))

    def translate(self, *args, **kwargs) -> Transform3d:
        """``self.compose(Translate(*args, **kwargs))``."""
        kwargs.setdefault("dtype", self.dtype)
        kwargs.setdefault("device", self.device)
        return self.compose(Translate(*args, **kwargs))

    def scale(self, *args, **kwargs) -> Transform3d:
        """``self.compose(Scale(*args, **kwargs))``."""
        kwargs.setdefault("dtype", self.dtype)
        kwargs.setdefault("device", self.device)
        return self.compose(Scale(*args, **kwargs))

    def rotate(self, *args, **kwargs) -> Transform3d:
        """``self.compose(Rotate(*args, **kwargs))``."""
        kwargs.setdefault("dtype", self.dtype)
        kwargs.setdefault("device", self.device)
        return self.compose(Rotate(*args, **kwargs))

    def rotate_axis_angle(self, *args, **kwargs) -> Transform3d:
        """``self.compose(RotateAxisAngle(*args, **kwargs))``."""
        kwargs.setdefault("dtype", self.dtype)
        kwargs.setdefault("device", self.device)
        return self.compose(RotateAxisAngle(*args, **kwargs))

    def get_se3_log(self, eps: float = 1e-4, cos_bound: float = 1e-4) -> torch.Tensor:
        """``se3_log_map`` of the matrix: ``(N, 6)``, translation part first (rigid transforms only)."""
        return se3_log_map(self._matrix, eps=eps, cos_bound=cos_bound)

    # -- application --------------------------------------------------------------------------------
    def transform_points(self, points: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Apply the transform to points, with the homogeneous divide.

        ``[x', y', z', w'] = [x, y, z, 1] @ M``; returns ``[x', y', z'] / w'``.

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` float (a batch of 1 broadcasts against the transform's).
            eps: if given, ``|w'|`` is clamped to at least ``eps`` (keeping its sign; 0 counts as +).

        Returns:
            ``(N, P, 3)``; ``(P, 3)`` when ``points`` is ``(P, 3)`` and the transform has ``N = 1``.

        Raises:
            ValueError: ``points`` is not ``(P, 3)`` / ``(N, P, 3)`` or batch sizes do not broadcast.
            TypeError: ``points`` is not a float tensor of the transform's dtype.
        """
        out = self._apply_affine(points, "points", translate=True)
        xyz, w = out[..., :3], out[..., 3:]
        if eps is not None:
            sign = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
            w = sign * w.abs().clamp(min=eps)
        res = xyz / w
        if points.dim() == 2 and res.shape[0] == 1:
            res = res[0]
        return res

    def transform_normals(self, normals: torch.Tensor) -> torch.Tensor:
        """Apply the transform to normals: ``n @ (M[:3, :3]^-1)^T`` (inverse transpose; not renormalised).

        Args:
            normals: ``(P, 3)`` or ``(N, P, 3)`` float.

        Returns:
            ``(N, P, 3)``; ``(P, 3)`` when ``normals`` is ``(P, 3)`` and ``N = 1``.
        """
        self._check_input(normals, "normals")
        mat = torch.linalg.inv(self._matrix[:, :3, :3]).transpose(1, 2)
        batch = normals if normals.dim() == 3 else normals[None]
        res = _broadcast_bmm(batch, mat, "normals")
        if normals.dim() == 2 and res.shape[0] == 1:
            res = res[0]
        return res

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        check_tensor(name, x, dtype="float")
        if x.dim() not in (2, 3) or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (P, 3) or (N, P, 3), got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"{name} must have the transform's dtype {self.dtype}, got {x.dtype}")

    def _apply_affine(self, x: torch.Tensor, name: str, translate: bool) -> torch.Tensor:
        """``[x, 1] @ M`` as ``(N, P, 4)`` without materialising the homogeneous coordinate."""
        self._check_input(x, name)
        batch = x if x.dim() == 3 else x[None]
        m = self._matrix
        if batch.shape[0] != m.shape[0] and batch.shape[0] != 1 and m.shape[0] != 1:
            raise ValueError(f"{name} has batch size {batch.shape[0]}, which does not broadcast with the "
                             f"transform's batch size {m.shape[0]}")
        return torch.matmul(batch, m[:, :3, :]) + m[:, 3:4, :]


def _broadcast_bmm(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """Batched ``a @ b`` where a batch of 1 broadcasts; ``(N, *, *)``."""
    if a.shape[0] != b.shape[0] and a.shape[0] != 1 and b.shape[0] != 1:
        raise ValueError(f"{name}: batch sizes {a.shape[0]} and {b.shape[0]} do not broadcast "
                         "(they must be equal or one of them 1)")
    return torch.matmul(a, b)


# ----------------------------------------------------------------------------------------------------
# constructors
# ----------------------------------------------------------------------------------------------------


def _handle_coord(name: str, c, dtype, device) -> torch.Tensor:
    if isinstance(c, torch.Tensor):
        if c.dim() > 1:
            raise ValueError(f"{name} must be a scalar or have shape (N,), got {tuple(c.shape)}")
        c = c.to(dtype=dtype, device=device)
    else:
        c = torch.as_tensor(c, dtype=dtype, device=device)
        if c.dim() > 1:
            raise ValueError(f"{name} must be a scalar or have shape (N,), got {tuple(c.shape)}")
    return c.reshape(-1)


def _handle_input(x, y, z, dtype, device, name: str, allow_singleton: bool = False) -> torch.Tensor:
    """``(N, 3)`` from ``x`` of shape (N, 3), or from scalars / (N,) tensors ``x, y, z`` (broadcast)."""
    dtype, device = _resolve(dtype, device, x, y, z)
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        check_shape("x", x, (None, 3))
        if y is not None or z is not None:
            raise ValueError(f"{name}: y and z must be None when x has shape (N, 3)")
        return x.to(dtype=dtype, device=device)
    if allow_singleton and y is None and z is None:
        y = z = x
    if y is None or z is None:
        raise ValueError(f"{name}: give x of shape (N, 3), or all of x, y, z")
    xyz = [_handle_coord(n, c, dtype, device) for n, c in zip("xyz", (x, y, z))]
    sizes = [c.shape[0] for c in xyz]
    n = max(sizes)
    if any(s not in (1, n) for s in sizes):
        raise ValueError(f"{name}: x, y, z have batch sizes {sizes}, which do not broadcast")
    return torch.stack([c.expand(n) for c in xyz], dim=1)


class Translate(Transform3d):
    """Translation by ``(x, y, z)``: matrix with ``M[:, 3, :3] = xyz``.

    Args:
        x: ``(N, 3)`` float (then ``y``, ``z`` must be None), or a scalar / ``(N,)``.
        y, z: scalars / ``(N,)`` when ``x`` is.
        dtype, device: default: follow the tensor inputs, else float32 / CPU.
    """

    __slots__ = ()

    def __init__(self, x, y=None, z=None, dtype: torch.dtype | None = None, device: Any = None) -> None:
        xyz = _handle_input(x, y, z, dtype, device, "Translate")
        m = torch.eye(4, dtype=xyz.dtype, device=xyz.device).repeat(xyz.shape[0], 1, 1)
        m = torch.cat([m[:, :3], torch.cat([xyz, torch.ones_like(xyz[:, :1])], 1)[:, None]], dim=1)
        super().__init__(matrix=m)


class Scale(Transform3d):
    """Scaling ``diag(x, y, z)``; a single scalar / ``(N,)`` ``x`` scales uniformly.

    Args:
        x: ``(N, 3)`` float, or a scalar / ``(N,)``.
        y, z: scalars / ``(N,)`` (both None for a uniform scale).
        dtype, device: default: follow the tensor inputs, else float32 / CPU.
    """

    __slots__ = ()

    def __init__(self, x, y=None, z=None, dtype: torch.dtype | None = None, device: Any = None) -> None:
        xyz = _handle_input(x, y, z, dtype, device, "Scale", allow_singleton=True)
        m = torch.diag_embed(torch.cat([xyz, torch.ones_like(xyz[:, :1])], dim=1))
        super().__init__(matrix=m)


class Rotate(Transform3d):
    """Rotation by ``R`` in the row-vector convention: ``points @ R``.

    Args:
        R: ``(3, 3)`` or ``(N, 3, 3)`` float rotation matrices (applied to row vectors).
        dtype, device: default: those of ``R``.
        orthogonal_tol: warn (as PyTorch3D) if ``|R R^T - I| > orthogonal_tol`` or ``det R <= 0``
            (skipped while tracing; ``None`` disables the check, which costs a device sync).
    """

    __slots__ = ()

    def __init__(self, R: torch.Tensor, dtype: torch.dtype | None = None, device: Any = None,
                 orthogonal_tol: float | None = 1e-5) -> None:
        check_tensor("R", R, dtype="float")
        if R.dim() == 2:
            R = R[None]
        check_shape("R", R, (None, 3, 3))
        dtype, device = _resolve(dtype, device, R)
        R = R.to(dtype=dtype, device=device)
        if orthogonal_tol is not None and not is_tracing() and R.shape[0] > 0:
            eye = torch.eye(3, dtype=dtype, device=device)
            err = float((R @ R.transpose(1, 2) - eye).abs().max())
            # float32 rotations built by chains of products drift ~1e-6 per product; the tolerance scales
            # with the dtype's precision so that valid float32 inputs pass.
            tol = max(orthogonal_tol, 100 * torch.finfo(dtype).eps)
            if err > tol or bool((torch.linalg.det(R) <= 0).any()):
                warnings.warn(f"Rotate: R is not a valid rotation matrix (max |R R^T - I| = {err:.3g} or "
                              "det <= 0)", stacklevel=2)
        m = torch.cat([torch.cat([R, torch.zeros_like(R[:, :, :1])], 2),
                       torch.eye(4, dtype=dtype, device=device)[None, 3:].expand(R.shape[0], 1, 4)], dim=1)
        super().__init__(matrix=m)


class RotateAxisAngle(Transform3d):
    """Counter-clockwise rotation by ``angle`` about a coordinate axis, for row vectors.

    Args:
        angle: scalar or ``(N,)``.
        axis: ``"X"``, ``"Y"`` or ``"Z"``.
        degrees: ``angle`` in degrees (default) or radians.
        dtype, device: default: follow ``angle``, else float32 / CPU.
    """

    __slots__ = ()

    def __init__(self, angle, axis: str = "X", degrees: bool = True, dtype: torch.dtype | None = None,
                 device: Any = None) -> None:
        axis = check_choice("axis", axis.upper() if isinstance(axis, str) else axis, ("X", "Y", "Z"))
        dtype, device = _resolve(dtype, device, angle)
        angle = _handle_coord("angle", angle, dtype, device)
        if degrees:
            angle = angle / 180.0 * math.pi
        # _axis_angle_rotation is for column vectors; transpose for row vectors.
        R = _axis_angle_rotation(axis, angle).transpose(1, 2)
        super().__init__(matrix=Rotate(R, orthogonal_tol=None).get_matrix())
