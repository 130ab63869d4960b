"""Cameras with PyTorch3D's coordinate systems, as immutable batched containers over pure functions.

Coordinate systems (exactly PyTorch3D's):

- **World -> view**: ``X_view = X_world @ R + T`` (row vectors); view space is right-handed with +X left,
  +Y up, +Z into the scene (the camera looks along +Z).
- **View -> NDC** (``get_projection_transform``): NDC has +X left, +Y up, and for non-square images the
  *shorter* side spans ``[-1, 1]`` (the longer one ``[-u, u]``, ``u = long / short``). Perspective cameras
  return ``z_ndc`` as PyTorch3D: ``FoVPerspectiveCameras`` map ``z in [znear, zfar]`` to ``[0, 1]``,
  ``PerspectiveCameras`` return ``1 / z``; orthographic cameras return an affine ``z``.
- **Screen**: pixels, +X right, +Y down, origin at the top-left corner of the image:
  ``x_s = W/2 - s x_ndc``, ``y_s = H/2 - s y_ndc`` with ``s = min(H, W) / 2``
  (:func:`get_ndc_to_screen_transform`). ``image_size`` is always ``(H, W)``.
- ``PerspectiveCameras`` / ``OrthographicCameras`` with ``in_ndc=False`` take ``focal_length`` and
  ``principal_point`` in pixels; their ``transform_points`` then returns PyTorch3D's "screen projection"
  ``(fx x/z + px, fy y/z + py, 1/z)`` (x measured towards +X of view space), and
  ``transform_points_ndc`` / ``transform_points_screen`` convert it as PyTorch3D does.

The projection matrices ``K`` (argument ``K=`` and the pure functions below) use PyTorch3D's layout: they
act on **column** vectors ``K @ [x, y, z, 1]``; the ``Transform3d`` matrix is ``K^T``.

Broadcasting of constructor arguments follows PyTorch3D's ``convert_to_tensors_and_broadcast``: every
argument becomes a tensor with a leading batch dimension (a scalar becomes ``(1,)``); all batch sizes must
be 1 or ``N``. As conveniences (supersets of PyTorch3D), ``R`` may be ``(3, 3)``, ``T`` ``(3,)``, ``K``
``(4, 4)`` and ``image_size`` / ``principal_point`` a flat ``(H, W)`` / ``(px, py)`` pair for one camera.
dtype follows the first floating tensor argument (float32 otherwise); device follows ``device`` or the
first tensor argument (CPU otherwise). Methods take PyTorch3D's ``**kwargs`` overrides of any field (e.g.
``cameras.transform_points(x, R=R, T=T)``); keys that are not fields are ignored, as in PyTorch3D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from lib3d._checks import TypeValueError, check_shape, check_tensor, is_tracing
from lib3d.geometry.transforms import Transform3d

__all__ = [
    "CamerasBase",
    "FoVOrthographicCameras",
    "FoVPerspectiveCameras",
    "OpenGLOrthographicCameras",
    "OpenGLPerspectiveCameras",
    "OrthographicCameras",
    "PerspectiveCameras",
    "SfMOrthographicCameras",
    "SfMPerspectiveCameras",
    "camera_position_from_spherical_angles",
    "fov_orthographic_projection_matrix",
    "fov_perspective_projection_matrix",
    "get_ndc_to_screen_transform",
    "get_screen_to_ndc_transform",
    "get_world_to_view_transform",
    "look_at_rotation",
    "look_at_view_transform",
    "ndc_to_screen_matrix",
    "sfm_projection_matrix",
    "world_to_view_matrix",
]


# ----------------------------------------------------------------------------------------------------
# broadcasting helpers (PyTorch3D's convert_to_tensors_and_broadcast)
# ----------------------------------------------------------------------------------------------------


def _pick_dtype_device(values, device=None) -> tuple[torch.dtype, torch.device]:
    dtype = None
    for v in values:
        if isinstance(v, torch.Tensor):
            if device is None:
                device = v.device
            if dtype is None and v.is_floating_point():
                dtype = v.dtype
    return (dtype or torch.float32, torch.device(device) if device is not None else torch.device("cpu"))


def _broadcast(names: tuple[str, ...], values: tuple, dtype: torch.dtype, device: torch.device
               ) -> list[torch.Tensor]:
    """Tensors with a shared leading batch size N (each given batch size must be 1 or N)."""
    ts = []
    for name, v in zip(names, values):
        t = v.to(dtype=dtype, device=device) if isinstance(v, torch.Tensor) else \
            torch.as_tensor(v, dtype=dtype, device=device)
        if t.dim() == 0:
            t = t.reshape(1)
        ts.append(t)
    sizes = [t.shape[0] for t in ts]
    n = max(sizes) if sizes else 1
    for name, t in zip(names, ts):
        if t.shape[0] not in (1, n):
            raise ValueError(f"{name} has batch size {t.shape[0]}, which does not broadcast with the other "
                             f"arguments' batch sizes {dict(zip(names, sizes))}")
    return [t.expand((n,) + t.shape[1:]) for t in ts]


def _as_rows(name: str, v, width: int):
    """A flat length-``width`` sequence/tensor -> ``(1, width)``; anything else unchanged."""
    if isinstance(v, torch.Tensor):
        return v[None] if v.dim() == 1 and v.shape[0] == width else v
    if isinstance(v, (list, tuple)) and len(v) == width and all(
            not isinstance(c, (list, tuple)) and not (isinstance(c, torch.Tensor) and c.dim() > 0)
            for c in v):
        return [list(v)]
    return v


# ----------------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------------


def world_to_view_matrix(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Row-vector world-to-view matrix ``[[R, 0], [T, 1]]``: ``[X, 1] @ M = [X @ R + T, 1]``.

    Args:
        R: ``(N, 3, 3)`` float.
        T: ``(N, 3)`` float.

    Returns:
        ``(N, 4, 4)`` float.
    """
    if not torch.jit.is_scripting():  # the checks stay out of TorchScript (f-strings); eager calls check
        sizes = check_shape("R", R, ("N", 3, 3), dtype="float")
        check_shape("T", T, ("N", 3), sizes, dtype="float")
    top = torch.cat([R, torch.zeros_like(R[:, :, :1])], dim=2)
    bottom = torch.cat([T, torch.ones_like(T[:, :1])], dim=1)[:, None]
    return torch.cat([top, bottom], dim=1)


def get_world_to_view_transform(R: torch.Tensor | None = None, T: torch.Tensor | None = None) -> Transform3d:
    """``Transform3d`` of :func:`world_to_view_matrix` (defaults: identity ``R``, zero ``T``).

    Args:
        R: ``(N, 3, 3)`` float; T: ``(N, 3)`` float (one of them may have batch 1).
    """
    if R is None:
        R = torch.eye(3, dtype=T.dtype if T is not None else torch.float32,
                      device=T.device if T is not None else None)[None]
    if T is None:
        T = R.new_zeros(1, 3)
    R, T = _broadcast(("R", "T"), (R, T), R.dtype, R.device)
    return Transform3d(matrix=world_to_view_matrix(R, T))


def fov_perspective_projection_matrix(znear: torch.Tensor, zfar: torch.Tensor, fov: torch.Tensor,
                                      aspect_ratio: torch.Tensor, degrees: bool = True) -> torch.Tensor:
    """OpenGL-style perspective projection, PyTorch3D's variant (``K`` layout, column vectors).

    With ``t = tan(fov / 2)``: ``K[0,0] = 1 / (t aspect)``, ``K[1,1] = 1 / t``, ``K[3,2] = 1``,
    ``K[2,2] = zfar / (zfar - znear)``, ``K[2,3] = -zfar znear / (zfar - znear)``, so that
    ``z_ndc = 0`` at ``znear`` and 1 at ``zfar`` after the divide by ``w = z``.

    Args:
        znear, zfar, fov, aspect_ratio: ``(N,)`` float (``fov`` is the vertical field of view).
        degrees: ``fov`` is in degrees.

    Returns:
        ``(N, 4, 4)`` float.
    """
    znear, zfar, fov, aspect_ratio = _broadcast(
        ("znear", "zfar", "fov", "aspect_ratio"), (znear, zfar, fov, aspect_ratio),
        *_pick_dtype_device((znear, zfar, fov, aspect_ratio)))
    if degrees:
        fov = (math.pi / 180) * fov
    tan_half_fov = torch.tan(fov / 2)
    max_y = tan_half_fov * znear
    min_y = -max_y
    max_x = max_y * aspect_ratio
    min_x = -max_x
    zero = torch.zeros_like(znear)
    one = torch.ones_like(znear)
    rows = [
        [2.0 * znear / (max_x - min_x), zero, (max_x + min_x) / (max_x - min_x), zero],
        [zero, 2.0 * znear / (max_y - min_y), (max_y + min_y) / (max_y - min_y), zero],
        [zero, zero, zfar / (zfar - znear), -(zfar * znear) / (zfar - znear)],
        [zero, zero, one, zero],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def fov_orthographic_projection_matrix(znear, zfar, max_x, min_x, max_y, min_y,
                                       scale_xyz) -> torch.Tensor:
    """Orthographic projection of the box ``[min_x, max_x] x [min_y, max_y] x [znear, zfar]`` to
    ``[-1, 1]^2 x [0, 1]`` (PyTorch3D's ``FoVOrthographicCameras``; ``K`` layout, column vectors).

    Args:
        znear, zfar, max_x, min_x, max_y, min_y: ``(N,)`` float.
        scale_xyz: ``(N, 3)`` float extra scale of x, y, z.

    Returns:
        ``(N, 4, 4)`` float.
    """
    names = ("znear", "zfar", "max_x", "min_x", "max_y", "min_y", "scale_xyz")
    vals = (znear, zfar, max_x, min_x, max_y, min_y, scale_xyz)
    znear, zfar, max_x, min_x, max_y, min_y, scale_xyz = _broadcast(names, vals, *_pick_dtype_device(vals))
    check_shape("scale_xyz", scale_xyz, (None, 3))
    zero = torch.zeros_like(znear)
    one = torch.ones_like(znear)
    rows = [
        [(2.0 / (max_x - min_x)) * scale_xyz[:, 0], zero, zero, -(max_x + min_x) / (max_x - min_x)],
        [zero, (2.0 / (max_y - min_y)) * scale_xyz[:, 1], zero, -(max_y + min_y) / (max_y - min_y)],
        [zero, zero, (1.0 / (zfar - znear)) * scale_xyz[:, 2], -znear / (zfar - znear)],
        [zero, zero, zero, one],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def sfm_projection_matrix(focal_length: torch.Tensor, principal_point: torch.Tensor,
                          orthographic: bool = False) -> torch.Tensor:
    """Pinhole (SfM) calibration matrix of ``PerspectiveCameras`` / ``OrthographicCameras`` (``K`` layout).

    Perspective: ``K = [[fx, 0, px, 0], [0, fy, py, 0], [0, 0, 0, 1], [0, 0, 1, 0]]`` so that
    ``(x, y, z) -> (fx x/z + px, fy y/z + py, 1/z)``. Orthographic:
    ``K = [[fx, 0, 0, px], [0, fy, 0, py], [0, 0, 1, 0], [0, 0, 0, 1]]``.

    Args:
        focal_length: ``(N, 2)`` float ``(fx, fy)``.
        principal_point: ``(N, 2)`` float ``(px, py)``.
        orthographic: which of the two.

    Returns:
        ``(N, 4, 4)`` float.
    """
    if not torch.jit.is_scripting():  # the checks stay out of TorchScript (f-strings); eager calls check
        sizes = check_shape("focal_length", focal_length, ("N", 2), dtype="float")
        check_shape("principal_point", principal_point, ("N", 2), sizes, dtype="float")
    fx, fy = focal_length.unbind(1)
    px, py = principal_point.to(fx.dtype).unbind(1)
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    if orthographic:
        rows = [[fx, zero, zero, px], [zero, fy, zero, py], [zero, zero, one, zero], [zero, zero, zero, one]]
    else:
        rows = [[fx, zero, px, zero], [zero, fy, py, zero], [zero, zero, zero, one], [zero, zero, one, zero]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _image_size_rows(image_size, device) -> torch.Tensor:
    if image_size is None:
        raise ValueError("image_size=(H, W) must be given for conversions between NDC and screen space")
    s = image_size if isinstance(image_size, torch.Tensor) else torch.as_tensor(image_size, device=device)
    if s.numel() % 2 != 0 or s.numel() == 0:
        raise ValueError(f"image_size must be (H, W) or (N, 2), got shape {tuple(s.shape)}")
    return s.reshape(-1, 2)


def ndc_to_screen_matrix(image_size, with_xyflip: bool = True, dtype: torch.dtype = torch.float32,
                         device: Any = None) -> torch.Tensor:
    """Row-vector matrix taking NDC to screen pixels (PyTorch3D's ``get_ndc_to_screen_transform``).

    ``x_s = W/2 - s x``, ``y_s = H/2 - s y`` with ``s = min(H, W) / 2`` (with the flip; without it
    ``x_s = s x - W/2``, ``y_s = s y - H/2``); ``z`` unchanged.

    Args:
        image_size: ``(H, W)`` or ``(N, 2)`` (tensor or sequence).
        with_xyflip: flip x and y (NDC +X left/+Y up -> pixels +X right/+Y down).
        dtype, device: of the result.

    Returns:
        ``(N or 1, 4, 4)`` float.
    """
    hw = _image_size_rows(image_size, device).to(dtype=dtype)
    h, w = hw.unbind(1)
    scale = hw.min(dim=1).values / 2.0
    sign = -1.0 if with_xyflip else 1.0
    m = torch.zeros(hw.shape[0], 4, 4, dtype=dtype, device=hw.device)
    m[:, 0, 0] = sign * scale
    m[:, 1, 1] = sign * scale
    m[:, 3, 0] = -sign * w / 2.0
    m[:, 3, 1] = -sign * h / 2.0
    m[:, 2, 2] = 1.0
    m[:, 3, 3] = 1.0
    return m


def _screen_to_ndc_matrix(image_size, with_xyflip: bool, dtype, device) -> torch.Tensor:
    """Closed-form inverse of :func:`ndc_to_screen_matrix`."""
    hw = _image_size_rows(image_size, device).to(dtype=dtype)
    h, w = hw.unbind(1)
    inv = 2.0 / hw.min(dim=1).values
    sign = -1.0 if with_xyflip else 1.0
    m = torch.zeros(hw.shape[0], 4, 4, dtype=dtype, device=hw.device)
    m[:, 0, 0] = sign * inv
    m[:, 1, 1] = sign * inv
    m[:, 3, 0] = w / 2.0 * inv * sign
    m[:, 3, 1] = h / 2.0 * inv * sign
    m[:, 2, 2] = 1.0
    m[:, 3, 3] = 1.0
    return m


def get_ndc_to_screen_transform(cameras: CamerasBase, with_xyflip: bool = False,
                                image_size=None) -> Transform3d:
    """``Transform3d`` from NDC to screen for a batch of cameras (PyTorch3D's function of that name).

    Args:
        cameras: the cameras (for batch size, dtype and device).
        with_xyflip: flip x and y (the screen convention; ``transform_points_screen`` uses True).
        image_size: ``(H, W)`` or ``(N, 2)``.
    """
    m = ndc_to_screen_matrix(image_size, with_xyflip, dtype=cameras.dtype, device=cameras.device)
    return Transform3d(matrix=m.to(cameras.device).expand(len(cameras), 4, 4))


def get_screen_to_ndc_transform(cameras: CamerasBase, with_xyflip: bool = False,
                                image_size=None) -> Transform3d:
    """Inverse of :func:`get_ndc_to_screen_transform`."""
    m = _screen_to_ndc_matrix(image_size, with_xyflip, dtype=cameras.dtype, device=cameras.device)
    return Transform3d(matrix=m.to(cameras.device).expand(len(cameras), 4, 4))


# ----------------------------------------------------------------------------------------------------
# look-at
# ----------------------------------------------------------------------------------------------------


def camera_position_from_spherical_angles(distance, elevation, azimuth, degrees: bool = True,
                                          device: Any = None) -> torch.Tensor:
    """Camera centres on a sphere around the origin: ``(d cos(e) sin(a), d sin(e), d cos(e) cos(a))``.

    Elevation is measured from the XZ plane towards +Y; azimuth from +Z towards +X.

    Args:
        distance, elevation, azimuth: scalars, sequences or ``(N,)`` tensors (broadcast to ``N``).
        degrees: angles in degrees.
        device: of the result (default: that of the tensor arguments, else CPU).

    Returns:
        ``(N, 3)`` float.
    """
    vals = (distance, elevation, azimuth)
    dist, elev, azim = _broadcast(("distance", "elevation", "azimuth"), vals, *_pick_dtype_device(vals, device))
    for n, t in (("distance", dist), ("elevation", elev), ("azimuth", azim)):
        if t.dim() != 1:
            raise ValueError(f"{n} must be a scalar or have shape (N,), got {tuple(t.shape)}")
    if degrees:
        elev = math.pi / 180.0 * elev
        azim = math.pi / 180.0 * azim
    x = dist * torch.cos(elev) * torch.sin(azim)
    y = dist * torch.sin(elev)
    z = dist * torch.cos(elev) * torch.cos(azim)
    return torch.stack([x, y, z], dim=1).reshape(-1, 3)


def look_at_rotation(camera_position, at=((0, 0, 0),), up=((0, 1, 0),), device: Any = None) -> torch.Tensor:
    """World-to-view rotations ``R`` of cameras at ``camera_position`` looking at ``at``.

    The view axes (columns of ``R``) are ``z = normalise(at - C)``, ``x = normalise(up x z)``,
    ``y = normalise(z x x)``; when ``up`` is nearly parallel to the viewing direction, ``x`` falls back to
    ``normalise(y x z)`` as PyTorch3D (this rescues e.g. ``elev=90`` in float32, where ``up x z`` is tiny
    but not zero).

    Degenerate views raise instead of returning a non-rotation. PyTorch3D silently returns an all-zero
    matrix when ``C == at``, zero ``x`` and ``y`` axes when ``up`` is exactly parallel to ``at - C`` (its
    fallback derives ``y`` from the zero ``x``), and axes shorter than 1 when ``|at - C|`` or ``|up x z|``
    is below its normalisation epsilon (1e-5). Here every camera's three axes must come out of unit length
    (within 1e-3); otherwise a ``ValueError`` names the camera and the cause. The check is skipped while
    ``torch.compile`` traces.

    Args:
        camera_position: ``(N, 3)`` / ``(3,)``-like.
        at: ``(N, 3)`` / ``(1, 3)``-like.
        up: ``(N, 3)`` / ``(1, 3)``-like.
        device: of the result (default: that of the tensor arguments, else CPU).

    Returns:
        ``(N, 3, 3)`` float, for use as ``X_view = X_world @ R + T``.

    Raises:
        ValueError: when a camera sits at (within 1e-5 of) the point it looks at, or ``up`` is parallel (or
            zero) relative to its viewing direction ``at - camera_position``.
    """
    vals = (_as_rows("camera_position", camera_position, 3), _as_rows("at", at, 3), _as_rows("up", up, 3))
    camera_position, at, up = _broadcast(("camera_position", "at", "up"), vals, *_pick_dtype_device(vals, device))
    for n, t in (("camera_position", camera_position), ("at", at), ("up", up)):
        check_shape(n, t, (None, 3))
    z_axis = F.normalize(at - camera_position, eps=1e-5)
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    is_close = torch.isclose(x_axis, torch.zeros_like(x_axis), atol=5e-3).all(dim=1, keepdim=True)
    replacement = F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5)
    x_axis = torch.where(is_close, replacement, x_axis)
    R = torch.cat((x_axis[:, None, :], y_axis[:, None, :], z_axis[:, None, :]), dim=1)
    if not is_tracing():
        _check_look_at(R, camera_position, at, up)
    return R.transpose(1, 2)


def _check_look_at(axes: torch.Tensor, camera_position: torch.Tensor, at: torch.Tensor, up: torch.Tensor) -> None:
    """Raise when a look-at frame is not a rotation: ``axes`` (N, 3, 3) holds the x, y, z axes as rows."""
    bad = ((axes.norm(dim=2) - 1.0).abs() > 1e-3).any(dim=1)  # NaN inputs compare False: they pass through
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0, 0])
    c, a, u = (t[i].tolist() for t in (camera_position, at, up))
    if float((at[i] - camera_position[i]).norm()) < 1e-5:
        raise ValueError(f"look_at: camera {i} sits at the point it looks at (camera_position/eye {c}, at {a}): "
                         "the viewing direction at - eye is undefined")
    raise ValueError(f"look_at: up {u} of camera {i} is zero or parallel to its viewing direction at - eye "
                     f"(eye {c}, at {a}): the view's x axis up x (at - eye) is undefined; pick another up")


def look_at_view_transform(dist=1.0, elev=0.0, azim=0.0, degrees: bool = True, eye=None,
                           at=((0, 0, 0),), up=((0, 1, 0),), device: Any = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, T)`` of cameras looking at ``at``, placed by ``dist/elev/azim`` (around ``at``) or by ``eye``.

    Args:
        dist, elev, azim: scalars, sequences or ``(N,)`` tensors (broadcast together with ``at``/``up``).
        degrees: ``elev`` / ``azim`` in degrees.
        eye: ``(N, 3)``-like camera centres; when given, ``dist/elev/azim`` are ignored.
        at: ``(N, 3)`` / ``(1, 3)``-like point to look at.
        up: ``(N, 3)`` / ``(1, 3)``-like up direction.
        device: of the result (default: that of the tensor arguments, else CPU).

    Returns:
        ``R``: ``(N, 3, 3)`` float; ``T``: ``(N, 3)`` float, ``T = -C @ R``, for ``X_view = X @ R + T``.

    Raises:
        ValueError: for a degenerate view (``eye == at``, ``dist == 0``, or ``up`` parallel to the viewing
            direction; see ``look_at_rotation``) instead of PyTorch3D's silent all-zero "rotation".
    """
    if eye is not None:
        vals = (_as_rows("eye", eye, 3), _as_rows("at", at, 3), _as_rows("up", up, 3))
        eye, at, up = _broadcast(("eye", "at", "up"), vals, *_pick_dtype_device(vals, device))
        C = eye
    else:
        vals = (dist, elev, azim, _as_rows("at", at, 3), _as_rows("up", up, 3))
        dist, elev, azim, at, up = _broadcast(("dist", "elev", "azim", "at", "up"), vals,
                                              *_pick_dtype_device(vals, device))
        C = camera_position_from_spherical_angles(dist, elev, azim, degrees=degrees) + at
    R = look_at_rotation(C, at, up)
    T = -torch.bmm(R.transpose(1, 2), C[:, :, None])[:, :, 0]
    return R, T


# ----------------------------------------------------------------------------------------------------
# camera containers
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, init=False, eq=False, repr=False)
class CamerasBase:
    """Fields and methods shared by all cameras; a frozen dataclass holding ``(N, ...)`` tensors.

    Attributes:
        R: ``(N, 3, 3)`` float world-to-view rotation (row vectors: ``X @ R + T``).
        T: ``(N, 3)`` float world-to-view translation.
        K: ``(N, 4, 4)`` float projection matrix overriding the computed one (``K`` layout), or None.
    """

    R: torch.Tensor
    T: torch.Tensor
    K: torch.Tensor | None

    # names of the tensor fields broadcast to N (in constructor order) and of the plain flag fields
    _tensor_fields: ClassVar[tuple[str, ...]] = ()
    _flag_fields: ClassVar[tuple[str, ...]] = ()

    # -- construction -------------------------------------------------------------------------------
    def _setup(self, device, flags: dict, **values) -> None:
        """Broadcast ``values`` (None allowed for K / image_size), check shapes, freeze."""
        values = dict(values)
        values["R"] = _as_matrix(values["R"], 2)
        values["T"] = _as_rows("T", values["T"], 3)
        if values.get("K") is not None:
            values["K"] = _as_matrix(values["K"], 4)
        present = {k: v for k, v in values.items() if v is not None}
        # dtype/device: R and T first (the pose decides), then the other tensor arguments
        dtype, dev = _pick_dtype_device((present["R"], present["T"], *present.values()), device)
        tensors = _broadcast(tuple(present), tuple(present.values()), dtype, dev)
        out = dict.fromkeys(values)
        out.update(zip(present, tensors))
        sizes = check_shape("R", out["R"], ("N", 3, 3))
        check_shape("T", out["T"], ("N", 3), sizes)
        if out.get("K") is not None:
            check_shape("K", out["K"], ("N", 4, 4), sizes)
        for k, v in out.items():
            object.__setattr__(self, k, v)
        for k, v in flags.items():
            object.__setattr__(self, k, v)

    def _fields(self) -> dict:
        return {f: getattr(self, f) for f in self._tensor_fields + self._flag_fields}

    def _rebuild(self, **fields) -> CamerasBase:
        """A camera of the same type from (possibly overridden) field values."""
        new = object.__new__(type(self))
        flags = {f: fields.pop(f) for f in self._flag_fields}
        new._setup(None, flags, **fields)
        return new

    def _with(self, kwargs: dict) -> CamerasBase:
        """Apply PyTorch3D-style keyword overrides of fields (other keys ignored)."""
        over = {k: v for k, v in kwargs.items()
                if v is not None and (k in self._tensor_fields or k in self._flag_fields)}
        if not over:
            return self
        f = self._fields()
        for k, v in over.items():
            if isinstance(v, torch.Tensor):
                v = v.to(device=self.device)
            f[k] = v
        return self._rebuild(**f)

    # -- container protocol -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.R.device

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    @property
    def _N(self) -> int:  # PyTorch3D's attribute name, used by code ported from it
        return self.R.shape[0]

    def __len__(self) -> int:
        return self.R.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={len(self)}, dtype={self.dtype}, device={self.device})"

    def __getitem__(self, index) -> CamerasBase:
        """Cameras selected by an int, slice, list of ints or a 1-D bool/long tensor (the batch dim is kept).

        Raises:
            IndexError: an index out of range.
            ValueError: any other kind of index (a ``TypeValueError``, also a ``TypeError``), or a bool
                tensor that is not ``(N,)`` (as PyTorch3D).
        """
        if isinstance(index, int) and not isinstance(index, bool):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} cameras")
            index = [index]
        elif isinstance(index, list):
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
                raise TypeValueError(f"a list index must hold ints, got {[type(i).__name__ for i in index]}")
        elif isinstance(index, torch.Tensor):
            if index.dtype == torch.bool:
                if index.shape != (len(self),):
                    raise ValueError(f"boolean index of shape {tuple(index.shape)} does not match {len(self)} "
                                     "cameras")
            elif index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
                raise TypeValueError(f"a tensor index must be 1-D long or bool, got {index.dtype} of shape "
                                     f"{tuple(index.shape)}")
        elif not isinstance(index, slice):
            raise TypeValueError(f"index must be an int, slice, list or bool/long tensor, got {type(index).__name__}")
        f = self._fields()
        for k in self._tensor_fields:
            if f[k] is not None:
                f[k] = f[k][index]
        return self._rebuild(**f)

    def _map(self, fn) -> CamerasBase:
        f = self._fields()
        for k in self._tensor_fields:
            if f[k] is not None:
                f[k] = fn(f[k])
        return self._rebuild(**f)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> CamerasBase:
        """The cameras on ``device`` (and/or as float ``dtype``)."""
        return self._map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    def cpu(self) -> CamerasBase:
        return self.to("cpu")

    def cuda(self) -> CamerasBase:
        return self.to("cuda")

    def clone(self) -> CamerasBase:
        return self._map(torch.clone)

    def detach(self) -> CamerasBase:
        return self._map(torch.Tensor.detach)

    # -- queries --------------------------------------------------------------------------------------
    def is_perspective(self) -> bool:
        raise NotImplementedError

    def in_ndc(self) -> bool:
        return True

    def get_znear(self) -> torch.Tensor | None:
        """``(N,)`` near planes, or None for cameras without one."""
        return getattr(self, "znear", None)

    def get_image_size(self) -> torch.Tensor | None:
        """``(N, 2)`` image sizes ``(H, W)``, or None."""
        return getattr(self, "image_size", None)

    # -- transforms ------------------------------------------------------------------------------------
    def get_world_to_view_transform(self, **kwargs) -> Transform3d:
        """World to view: matrix ``[[R, 0], [T, 1]]`` (``X_view = X @ R + T``), ``(N, 4, 4)``."""
        cam = self._with(kwargs)
        return Transform3d(matrix=world_to_view_matrix(cam.R, cam.T))

    def get_projection_transform(self, **kwargs) -> Transform3d:
        """View to NDC (or to the camera's screen projection when not ``in_ndc``); matrix ``K^T``."""
        cam = self._with(kwargs)
        K = cam.K if cam.K is not None else cam._compute_K()
        return Transform3d(matrix=K.transpose(1, 2))

    def _compute_K(self) -> torch.Tensor:
        raise NotImplementedError

    def get_full_projection_transform(self, **kwargs) -> Transform3d:
        """World to projection: ``get_world_to_view_transform().compose(get_projection_transform())``."""
        cam = self._with(kwargs)
        return cam.get_world_to_view_transform().compose(cam.get_projection_transform())

    def transform_points(self, points: torch.Tensor, eps: float | None = None, **kwargs) -> torch.Tensor:
        """Project world points with the full projection (NDC for NDC cameras), with the divide.

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` float world points.
            eps: clamp of the homogeneous divisor (see ``Transform3d.transform_points``).

        Returns:
            ``(N, P, 3)`` (``(P, 3)`` if ``points`` is ``(P, 3)`` and ``N = 1``): x, y and the camera's
            depth-like z (see the module docstring).
        """
        return self.get_full_projection_transform(**kwargs).transform_points(points, eps=eps)

    def get_ndc_camera_transform(self, **kwargs) -> Transform3d:
        """From the camera's projection space to NDC (identity for NDC cameras)."""
        return Transform3d(matrix=torch.eye(4, dtype=self.dtype, device=self.device)[None].expand(
            len(self), 4, 4))

    def transform_points_ndc(self, points: torch.Tensor, eps: float | None = None, **kwargs) -> torch.Tensor:
        """World points to NDC ``(N, P, 3)`` (converting screen-space cameras' projections to NDC)."""
        cam = self._with(kwargs)
        t = cam.get_full_projection_transform()
        if not cam.in_ndc():
            t = t.compose(cam.get_ndc_camera_transform(image_size=kwargs.get("image_size")))
        return t.transform_points(points, eps=eps)

    def transform_points_screen(self, points: torch.Tensor, eps: float | None = None,
                                with_xyflip: bool = True, **kwargs) -> torch.Tensor:
        """World points to screen pixels ``(N, P, 3)`` (+X right, +Y down, origin top-left; z as NDC).

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` float.
            eps: clamp of the homogeneous divisor.
            with_xyflip: flip x and y from NDC (PyTorch3D's default True).
            image_size: keyword, ``(H, W)`` or ``(N, 2)``; defaults to the camera's ``image_size``.
        """
        cam = self._with(kwargs)
        points_ndc = cam.transform_points_ndc(points, eps=eps)
        image_size = kwargs.get("image_size")
        image_size = cam.get_image_size() if image_size is None else image_size
        return get_ndc_to_screen_transform(cam, with_xyflip=with_xyflip, image_size=image_size
                                           ).transform_points(points_ndc, eps=eps)

    def get_camera_center(self, **kwargs) -> torch.Tensor:
        """``(N, 3)`` camera centres in world coordinates, ``C = -T @ R^T``."""
        cam = self._with(kwargs)
        return -(cam.T[:, None, :] @ cam.R.transpose(1, 2))[:, 0]

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True, **kwargs
                         ) -> torch.Tensor:
        raise NotImplementedError


def _as_matrix(v, size: int):
    """A single ``(size, size)`` matrix (tensor or nested sequence) -> ``(1, size, size)``."""
    if isinstance(v, torch.Tensor):
        return v[None] if v.dim() == 2 else v
    if v is not None and np.asarray(v).ndim == 2:
        return [v]
    return v


def _check_xy_depth(xy_depth: torch.Tensor) -> None:
    check_tensor("xy_depth", xy_depth, dtype="float")
    if xy_depth.dim() not in (2, 3) or xy_depth.shape[-1] != 3:
        raise ValueError(f"xy_depth must have shape (P, 3) or (N, P, 3), got {tuple(xy_depth.shape)}")


_R0 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True, init=False, eq=False, repr=False)
class FoVPerspectiveCameras(CamerasBase):
    """OpenGL-style perspective cameras given by a vertical field of view (PyTorch3D's class).

    Args:
        znear, zfar: near / far planes, scalar or ``(N,)``; NDC z is 0 at ``znear`` and 1 at ``zfar``.
        aspect_ratio: width / height of the pixel grid's NDC box (PyTorch3D default 1; the rasterizer
            handles non-square images through the NDC convention).
        fov: vertical field of view, scalar or ``(N,)``.
        degrees: ``fov`` in degrees.
        R: ``(N, 3, 3)`` world-to-view rotations; T: ``(N, 3)`` translations.
        K: optional ``(N, 4, 4)`` projection matrix replacing the computed one.
        device: device of the fields (default: from the tensor arguments, else CPU).
    """

    znear: torch.Tensor
    zfar: torch.Tensor
    aspect_ratio: torch.Tensor
    fov: torch.Tensor
    degrees: bool

    _tensor_fields: ClassVar[tuple[str, ...]] = ("znear", "zfar", "aspect_ratio", "fov", "R", "T", "K")
    _flag_fields: ClassVar[tuple[str, ...]] = ("degrees",)

    def __init__(self, znear=1.0, zfar=100.0, aspect_ratio=1.0, fov=60.0, degrees: bool = True, R=_R0,
                 T=((0.0, 0.0, 0.0),), K=None, device: Any = None) -> None:
        self._setup(device, {"degrees": bool(degrees)}, znear=znear, zfar=zfar, aspect_ratio=aspect_ratio,
                    fov=fov, R=R, T=T, K=K)

    def _compute_K(self) -> torch.Tensor:
        return fov_perspective_projection_matrix(self.znear, self.zfar, self.fov, self.aspect_ratio,
                                                 self.degrees)

    def is_perspective(self) -> bool:
        return True

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True,
                         scaled_depth_input: bool = False, **kwargs) -> torch.Tensor:
        """Inverse of the projection: NDC ``(x, y)`` and view depth ``z`` to world (or view) points.

        Args:
            xy_depth: ``(P, 3)`` or ``(N, P, 3)`` float ``(x_ndc, y_ndc, depth)``.
            world_coordinates: return world points (else view-space points).
            scaled_depth_input: the third coordinate is already NDC z (not view depth).

        Returns:
            ``(N, P, 3)`` float (``(P, 3)`` when ``N = 1`` and the input is ``(P, 3)``).
        """
        _check_xy_depth(xy_depth)
        cam = self._with(kwargs)
        to_ndc = cam.get_full_projection_transform() if world_coordinates else cam.get_projection_transform()
        if scaled_depth_input:
            xy_sdepth = xy_depth
        else:
            K = cam.get_projection_transform().get_matrix()
            shape = [1] * xy_depth.dim()
            shape[0] = K.shape[0]
            f1 = K[:, 2, 2].reshape(shape)
            f2 = K[:, 3, 2].reshape(shape)
            depth = xy_depth[..., 2:3]
            xy_sdepth = torch.cat((xy_depth[..., 0:2], (f1 * depth + f2) / depth), dim=-1)
        return to_ndc.inverse().transform_points(xy_sdepth)


@dataclass(frozen=True, init=False, eq=False, repr=False)
class FoVOrthographicCameras(CamerasBase):
    """Orthographic cameras given by the view-space box ``[min_x, max_x] x [min_y, max_y] x [znear, zfar]``.

    Args:
        znear, zfar, max_y, min_y, max_x, min_x: scalars or ``(N,)``.
        scale_xyz: ``(N, 3)`` extra scale of x, y, z (default ones).
        R, T, K, device: as :class:`FoVPerspectiveCameras`.
    """

    znear: torch.Tensor
    zfar: torch.Tensor
    max_y: torch.Tensor
    min_y: torch.Tensor
    max_x: torch.Tensor
    min_x: torch.Tensor
    scale_xyz: torch.Tensor

    _tensor_fields: ClassVar[tuple[str, ...]] = ("znear", "zfar", "max_y", "min_y", "max_x", "min_x",
                                                 "scale_xyz", "R", "T", "K")

    def __init__(self, znear=1.0, zfar=100.0, max_y=1.0, min_y=-1.0, max_x=1.0, min_x=-1.0,
                 scale_xyz=((1.0, 1.0, 1.0),), R=_R0, T=((0.0, 0.0, 0.0),), K=None, device: Any = None) -> None:
        self._setup(device, {}, znear=znear, zfar=zfar, max_y=max_y, min_y=min_y, max_x=max_x, min_x=min_x,
                    scale_xyz=_as_rows("scale_xyz", scale_xyz, 3), R=R, T=T, K=K)

    def _compute_K(self) -> torch.Tensor:
        return fov_orthographic_projection_matrix(self.znear, self.zfar, self.max_x, self.min_x, self.max_y,
                                                  self.min_y, self.scale_xyz)

    def is_perspective(self) -> bool:
        return False

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True,
                         scaled_depth_input: bool = False, **kwargs) -> torch.Tensor:
        """Inverse of the projection: NDC ``(x, y)`` and view depth to world (or view) points.

        Args:
            xy_depth: ``(P, 3)`` or ``(N, P, 3)`` float ``(x_ndc, y_ndc, depth)``.
            world_coordinates: return world points (else view-space points).
            scaled_depth_input: the third coordinate is already NDC z.

        Returns:
            ``(N, P, 3)`` float (``(P, 3)`` when ``N = 1`` and the input is ``(P, 3)``).
        """
        _check_xy_depth(xy_depth)
        cam = self._with(kwargs)
        to_ndc = cam.get_full_projection_transform() if world_coordinates else cam.get_projection_transform()
        if scaled_depth_input:
            xy_sdepth = xy_depth
        else:
            K = cam.get_projection_transform().get_matrix()
            shape = [1] * xy_depth.dim()
            shape[0] = K.shape[0]
            mid_z = K[:, 3, 2].reshape(shape)
            scale_z = K[:, 2, 2].reshape(shape)
            xy_sdepth = torch.cat((xy_depth[..., :2], scale_z * xy_depth[..., 2:3] + mid_z), dim=-1)
        return to_ndc.inverse().transform_points(xy_sdepth)


@dataclass(frozen=True, init=False, eq=False, repr=False)
class _SfMCameras(CamerasBase):
    """Shared body of ``PerspectiveCameras`` and ``OrthographicCameras`` (SfM-style intrinsics)."""

    focal_length: torch.Tensor
    principal_point: torch.Tensor
    image_size: torch.Tensor | None
    _in_ndc: bool

    _tensor_fields: ClassVar[tuple[str, ...]] = ("focal_length", "principal_point", "R", "T", "K",
                                                 "image_size")
    _flag_fields: ClassVar[tuple[str, ...]] = ("_in_ndc",)
    _orthographic: ClassVar[bool] = False

    def __init__(self, focal_length=1.0, principal_point=((0.0, 0.0),), R=_R0, T=((0.0, 0.0, 0.0),), K=None,
                 device: Any = None, in_ndc: bool = True, image_size=None) -> None:
        self._setup(device, {"_in_ndc": bool(in_ndc)}, focal_length=focal_length,
                    principal_point=principal_point, R=R, T=T, K=K, image_size=image_size)

    def _setup(self, device, flags: dict, **values) -> None:
        for name in ("principal_point", "focal_length"):  # PyTorch3D also takes column vectors (N, 2, 1)
            v = values[name]
            if isinstance(v, torch.Tensor) and v.dim() == 3 and v.shape[2] == 1 and v.shape[1] in (1, 2):
                values[name] = v[..., 0]
        values["principal_point"] = _as_rows("principal_point", values["principal_point"], 2)
        if values.get("image_size") is not None:
            values["image_size"] = _as_rows("image_size", values["image_size"], 2)
        super()._setup(device, flags, **values)
        fl = self.focal_length
        if fl.dim() == 1:
            fl = fl[:, None]
        if fl.dim() != 2 or fl.shape[1] not in (1, 2):
            raise ValueError(f"focal_length must be a scalar, (N,), (N, 1), (N, 2) or (N, 2, 1), got {tuple(fl.shape)}")
        object.__setattr__(self, "focal_length", fl.expand(-1, 2))
        check_shape("principal_point", self.principal_point, (len(self), 2))
        if self.image_size is not None:
            check_shape("image_size", self.image_size, (len(self), 2))
            if bool((self.image_size < 1).any()):
                raise ValueError(f"image_size must be positive (H, W), got {self.image_size.tolist()}")

    def _compute_K(self) -> torch.Tensor:
        return sfm_projection_matrix(self.focal_length, self.principal_point, orthographic=self._orthographic)

    def in_ndc(self) -> bool:
        return self._in_ndc

    def get_principal_point(self, **kwargs) -> torch.Tensor:
        """``(N, 2)`` principal points as read back from the projection matrix (respects ``K``)."""
        m = self.get_projection_transform(**kwargs).get_matrix()
        return m[:, 3, :2] if self._orthographic else m[:, 2, :2]

    def get_ndc_camera_transform(self, **kwargs) -> Transform3d:
        """From the camera's projection space to NDC: identity when ``in_ndc``; otherwise flip the
        principal point to PyTorch3D's +X left/+Y up axes and rescale pixels by ``2 / min(H, W)``."""
        cam = self._with(kwargs)
        if cam.in_ndc():
            return super().get_ndc_camera_transform()
        pp = cam.get_principal_point()
        fix = torch.eye(4, dtype=cam.dtype, device=cam.device).repeat(len(cam), 1, 1)
        fix[:, 3, :2] = -2.0 * pp  # row-vector form of PyTorch3D's pr_point_fix
        image_size = kwargs.get("image_size")
        image_size = cam.get_image_size() if image_size is None else image_size
        return Transform3d(matrix=fix).compose(get_screen_to_ndc_transform(cam, with_xyflip=False,
                                                                           image_size=image_size))

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True,
                         from_ndc: bool = False, **kwargs) -> torch.Tensor:
        """Inverse of the projection.

        Args:
            xy_depth: ``(P, 3)`` or ``(N, P, 3)`` float ``(x, y, depth)``: ``x, y`` in the camera's
                projection space (NDC if ``in_ndc``, else its screen projection), depth in view units.
            world_coordinates: return world points (else view-space points).
            from_ndc: ``x, y`` are NDC even for a screen-space camera.

        Returns:
            ``(N, P, 3)`` float (``(P, 3)`` when ``N = 1`` and the input is ``(P, 3)``).
        """
        _check_xy_depth(xy_depth)
        cam = self._with(kwargs)
        t = cam.get_full_projection_transform() if world_coordinates else cam.get_projection_transform()
        if from_ndc:
            t = t.compose(cam.get_ndc_camera_transform(image_size=kwargs.get("image_size")))
        if self._orthographic:
            xy_z = xy_depth
        else:
            xy_z = torch.cat((xy_depth[..., :2], 1.0 / xy_depth[..., 2:3]), dim=-1)
        return t.inverse().transform_points(xy_z)


@dataclass(frozen=True, init=False, eq=False, repr=False)
class PerspectiveCameras(_SfMCameras):
    """Pinhole cameras with SfM intrinsics (PyTorch3D's ``PerspectiveCameras``).

    Projection: ``(x, y, z) -> (fx x/z + px, fy y/z + py, 1/z)``, in NDC when ``in_ndc`` (default) or in
    pixels when ``in_ndc=False`` (then give ``image_size``).

    Args:
        focal_length: scalar, ``(N,)``, ``(N, 1)`` or ``(N, 2)`` ``(fx, fy)``.
        principal_point: ``(N, 2)`` (or one ``(px, py)`` pair).
        R, T, K, device: as :class:`FoVPerspectiveCameras`.
        in_ndc: intrinsics in NDC units (True) or pixels (False).
        image_size: ``(N, 2)`` (or one ``(H, W)`` pair); needed for screen conversions.
    """

    _orthographic: ClassVar[bool] = False

    def is_perspective(self) -> bool:
        return True


@dataclass(frozen=True, init=False, eq=False, repr=False)
class OrthographicCameras(_SfMCameras):
    """Orthographic cameras with SfM intrinsics (PyTorch3D's ``OrthographicCameras``).

    Projection: ``(x, y, z) -> (fx x + px, fy y + py, z)``; arguments as :class:`PerspectiveCameras`.
    """

    _orthographic: ClassVar[bool] = True

    def is_perspective(self) -> bool:
        return False


# ----------------------------------------------------------------------------------------------------
# PyTorch3D's deprecated aliases (older code and the book's era)
# ----------------------------------------------------------------------------------------------------


def OpenGLPerspectiveCameras(znear=1.0, zfar=100.0, aspect_ratio=1.0, fov=60.0, degrees: bool = True, R=_R0,
                             T=((0.0, 0.0, 0.0),), device: Any = None) -> FoVPerspectiveCameras:
    """Deprecated PyTorch3D name of :class:`FoVPerspectiveCameras` (same arguments)."""
    warnings.warn("OpenGLPerspectiveCameras is deprecated, use FoVPerspectiveCameras", DeprecationWarning,
                  stacklevel=2)
    return FoVPerspectiveCameras(znear=znear, zfar=zfar, aspect_ratio=aspect_ratio, fov=fov, degrees=degrees,
                                 R=R, T=T, device=device)


def OpenGLOrthographicCameras(znear=1.0, zfar=100.0, top=1.0, bottom=-1.0, left=-1.0, right=1.0,
                              scale_xyz=((1.0, 1.0, 1.0),), R=_R0, T=((0.0, 0.0, 0.0),),
                              device: Any = None) -> FoVOrthographicCameras:
    """Deprecated PyTorch3D name of :class:`FoVOrthographicCameras` (``top/bottom/left/right`` are
    ``max_y/min_y/min_x/max_x``)."""
    warnings.warn("OpenGLOrthographicCameras is deprecated, use FoVOrthographicCameras", DeprecationWarning,
                  stacklevel=2)
    return FoVOrthographicCameras(znear=znear, zfar=zfar, max_y=top, min_y=bottom, max_x=right, min_x=left,
                                  scale_xyz=scale_xyz, R=R, T=T, device=device)


def SfMPerspectiveCameras(focal_length=1.0, principal_point=((0.0, 0.0),), R=_R0, T=((0.0, 0.0, 0.0),),
                          device: Any = None) -> PerspectiveCameras:
    """Deprecated PyTorch3D name of :class:`PerspectiveCameras` (NDC intrinsics)."""
    warnings.warn("SfMPerspectiveCameras is deprecated, use PerspectiveCameras", DeprecationWarning, stacklevel=2)
    return PerspectiveCameras(focal_length=focal_length, principal_point=principal_point, R=R, T=T, device=device)


def SfMOrthographicCameras(focal_length=1.0, principal_point=((0.0, 0.0),), R=_R0, T=((0.0, 0.0, 0.0),),
                           device: Any = None) -> OrthographicCameras:
    """Deprecated PyTorch3D name of :class:`OrthographicCameras` (NDC intrinsics)."""
    warnings.warn("SfMOrthographicCameras is deprecated, use OrthographicCameras", DeprecationWarning,
                  stacklevel=2)
    return OrthographicCameras(focal_length=focal_length, principal_point=principal_point, R=R, T=T, device=device)


def join_cameras_as_batch(cameras_list: Sequence[CamerasBase]) -> CamerasBase:
    """One batch of the cameras of ``cameras_list`` concatenated in order (PyTorch3D's
    ``join_cameras_as_batch``).

    Args:
        cameras_list: cameras of one class, with the same flags (``degrees``, ``in_ndc`` ...), on one
            device; optional fields (``K``, ``image_size``) set on all of them or on none.

    Returns:
        A camera of that class with ``sum(len(c))`` cameras.

    Raises:
        ValueError: for an empty list, mixed classes, flags or devices, or an optional field set on only
            some cameras.
    """
    cams = list(cameras_list)
    if not cams:
        raise ValueError("join_cameras_as_batch: cameras_list is empty")
    kind = type(cams[0])
    if not all(isinstance(c, CamerasBase) for c in cams) or any(type(c) is not kind for c in cams):
        raise ValueError(f"join_cameras_as_batch: all cameras must be of one class, got "
                         f"{sorted({type(c).__name__ for c in cams})}")
    if len({c.device for c in cams}) > 1:
        raise ValueError(f"join_cameras_as_batch: cameras are on different devices {sorted({str(c.device) for c in cams})}")
    fields = [c._fields() for c in cams]
    for flag in kind._flag_fields:
        if len({f[flag] for f in fields}) > 1:
            raise ValueError(f"join_cameras_as_batch: cameras disagree on {flag!r}: {[f[flag] for f in fields]}")
    joined = dict(fields[0])
    for name in kind._tensor_fields:
        values = [f[name] for f in fields]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"join_cameras_as_batch: {name!r} is set on some cameras and not on others")
        joined[name] = torch.cat([v.to(cams[0].dtype) if v.is_floating_point() else v for v in values], 0)
    return cams[0]._rebuild(**joined)
