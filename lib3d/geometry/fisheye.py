"""Fisheye cameras with radial, tangential and thin-prism distortion (PyTorch3D's ``FishEyeCameras``).

The model (PyTorch3D's, after Project Aria's "FisheyeRadTanThinPrism"), for a point ``(x, y, z)`` in view
space (PyTorch3D's axes):

1. ``a = x / z``, ``b = y / z``, ``r = sqrt(a^2 + b^2)``, ``theta = atan(r)``;
2. radial: ``(x_r, y_r) = theta (1 + k_0 theta^2 + k_1 theta^4 + ... + k_5 theta^12) / r * (a, b)``;
3. tangential (``p_0, p_1``), with ``r_d^2 = x_r^2 + y_r^2``:
   ``t = 2 (x_r p_0 + y_r p_1) (x_r, y_r) + r_d^2 (p_0, p_1)``;
4. thin prism (``s_0 .. s_3``): ``s = (s_0 r_d^2 + s_1 r_d^4, s_2 r_d^2 + s_3 r_d^4)``;
5. ``uv = f * ((x_r, y_r) + t + s) + (c_u, c_v)`` in pixels.

``use_radial=False`` replaces step 2's result by ``(a, b)`` for the output (as PyTorch3D, the tangential and
thin-prism terms are still computed from the radially distorted ``(x_r, y_r)``).
The model is symmetric in z: ``project(p) == project(-p)``. Unprojection inverts steps 3-4 with Newton
iterations on the 2x2 Jacobian and step 2 with Newton iterations on ``theta``, and returns the direction
``(tan(theta) / r_d * (x_r, y_r), 1)`` (z = 1), as PyTorch3D.

Every camera of a batch is evaluated at once (no loop over cameras). Dimension names: N cameras, P points.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lib3d._checks import check_tensor
from lib3d.geometry.cameras import _R0, CamerasBase
from lib3d.geometry.transforms import Transform3d

__all__ = ["FishEyeCameras", "fisheye_project", "fisheye_unproject"]

_EPS = 1e-10


def _distort(ab: torch.Tensor, radial: torch.Tensor, tangential: torch.Tensor, prism: torch.Tensor,
             use_radial: bool, use_tangential: bool, use_thin_prism: bool) -> torch.Tensor:
    """Steps 1-4 of the module docstring on normalised coordinates ``ab (..., 2)``; parameters broadcast
    against ``ab``'s leading dimensions (``radial (..., 6)``, ``tangential (..., 2)``, ``prism (..., 4)``)."""
    r = ab.norm(dim=-1)
    theta = torch.atan(r)
    t2 = theta * theta
    powers = torch.stack([t2 ** (i + 1) for i in range(radial.shape[-1])], -1)
    th_radial = 1 + (powers * radial).sum(-1)
    th_div_r = torch.where(r.abs() < _EPS, torch.ones_like(r), theta / r.clamp(min=_EPS))
    xr = (th_radial * th_div_r)[..., None] * ab
    rd2 = (xr * xr).sum(-1, keepdim=True)
    uv = xr if use_radial else ab
    if use_tangential:
        uv = uv + 2 * (xr * tangential).sum(-1, keepdim=True) * xr + rd2 * tangential
    if use_thin_prism:
        uv = uv + torch.stack([prism[..., 0] * rd2[..., 0] + prism[..., 1] * rd2[..., 0] ** 2,
                               prism[..., 2] * rd2[..., 0] + prism[..., 3] * rd2[..., 0] ** 2], -1)
    return uv


def fisheye_project(points: torch.Tensor, focal: torch.Tensor, principal_point: torch.Tensor,
                    radial: torch.Tensor, tangential: torch.Tensor, prism: torch.Tensor, use_radial: bool = True,
                    use_tangential: bool = True, use_thin_prism: bool = True) -> torch.Tensor:
    """Pixel coordinates of view-space points (the module docstring's model).

    Args:
        points: ``(N, P, 3)`` float view-space points (z != 0).
        focal: ``(N, 1)`` float; principal_point ``(N, 2)``; radial ``(N, R)`` with R <= 6;
            tangential ``(N, 2)``; prism ``(N, 4)``.
        use_radial, use_tangential, use_thin_prism: which distortions apply.

    Returns:
        ``(N, P, 2)`` float pixel coordinates ``(u, v)``.
    """
    ab = points[..., :2] / points[..., 2:3]
    uv = _distort(ab, radial[:, None], tangential[:, None], prism[:, None], use_radial, use_tangential,
                  use_thin_prism)
    return focal[:, None] * uv + principal_point[:, None]


def _undistort_tangential_prism(uv: torch.Tensor, tangential: torch.Tensor, prism: torch.Tensor,
                                use_tangential: bool, use_thin_prism: bool, iters: int) -> torch.Tensor:
    """``(x_r, y_r)`` with ``x + t(x) + s(x) = uv`` by Newton's method (2x2 Jacobian in closed form)."""
    if not (use_tangential or use_thin_prism):
        return uv
    x = uv
    eye = torch.eye(2, dtype=uv.dtype, device=uv.device)
    for _ in range(iters):
        rd2 = (x * x).sum(-1, keepdim=True)
        f = x.clone()
        jac = eye.expand(*x.shape[:-1], 2, 2).clone()
        if use_tangential:
            xp = (x * tangential).sum(-1, keepdim=True)
            f = f + 2 * xp * x + rd2 * tangential
            # d/dx [2 (x.p) x + |x|^2 p] = 2 x p^T + 2 (x.p) I + 2 p x^T
            jac = jac + 2 * (x[..., :, None] * tangential[..., None, :] + tangential[..., :, None] * x[..., None, :]
                             + xp[..., None] * eye)
        if use_thin_prism:
            f = f + torch.stack([prism[..., 0] * rd2[..., 0] + prism[..., 1] * rd2[..., 0] ** 2,
                                 prism[..., 2] * rd2[..., 0] + prism[..., 3] * rd2[..., 0] ** 2], -1)
            du = (prism[..., 0] + 2 * prism[..., 1] * rd2[..., 0])[..., None] * 2 * x
            dv = (prism[..., 2] + 2 * prism[..., 3] * rd2[..., 0])[..., None] * 2 * x
            jac = jac + torch.stack([du, dv], -2)
        step = torch.linalg.solve(jac, (f - uv)[..., None])[..., 0]
        x = x - step
    return x


def _theta_from_radius(rd: torch.Tensor, radial: torch.Tensor, use_radial: bool, iters: int) -> torch.Tensor:
    """``theta`` with ``theta (1 + sum_i k_i theta^(2i+2)) = rd`` by Newton's method (``atan(rd)`` without the
    radial model)."""
    if not use_radial:
        return torch.atan(rd)
    theta = rd.clone()
    for _ in range(iters):
        t2 = theta * theta
        g = theta * (1 + sum(radial[..., i] * t2 ** (i + 1) for i in range(radial.shape[-1]))) - rd
        dg = 1 + sum((2 * i + 3) * radial[..., i] * t2 ** (i + 1) for i in range(radial.shape[-1]))
        theta = theta - g / dg
    return theta


def fisheye_unproject(uv: torch.Tensor, focal: torch.Tensor, principal_point: torch.Tensor, radial: torch.Tensor,
                      tangential: torch.Tensor, prism: torch.Tensor, use_radial: bool = True,
                      use_tangential: bool = True, use_thin_prism: bool = True, iters: int = 50) -> torch.Tensor:
    """View-space directions (z = 1) of pixel coordinates: the inverse of :func:`fisheye_project`.

    Args:
        uv: ``(N, P, 2)`` float pixel coordinates; the camera parameters as in :func:`fisheye_project`.
        iters: Newton iterations for each of the two inversions (PyTorch3D uses 50).

    Returns:
        ``(N, P, 3)`` float points ``(x, y, 1)`` on the ray of each pixel.
    """
    d = (uv - principal_point[:, None]) / focal[:, None]
    xr = _undistort_tangential_prism(d, tangential[:, None], prism[:, None], use_tangential, use_thin_prism, iters)
    rd = xr.norm(dim=-1)
    theta = _theta_from_radius(rd, radial[:, None], use_radial, iters)
    scale = torch.where(rd < _EPS, torch.ones_like(rd), torch.tan(theta) / rd.clamp(min=_EPS))
    if not use_radial:
        scale = torch.ones_like(rd)
    return torch.cat([scale[..., None] * xr, torch.ones_like(rd)[..., None]], -1)


def _rows(name: str, v: Any, width: int) -> Any:
    if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == width:
        return v[None]
    return v


class FishEyeCameras(CamerasBase):
    """Fisheye cameras (PyTorch3D's ``FishEyeCameras``): pixel projection with radial, tangential and
    thin-prism distortion (see the module docstring).

    Args:
        focal_length: ``(N, 1)`` float (or a scalar), in pixels per unit of the normalised image plane.
        principal_point: ``(N, 2)`` float ``(c_u, c_v)`` in pixels.
        radial_params: ``(N, 6)`` float ``k_0..k_5`` (fewer columns allowed: the missing are zero).
        tangential_params: ``(N, 2)`` float ``p_0, p_1``.
        thin_prism_params: ``(N, 4)`` float ``s_0..s_3``.
        R, T: world-to-view pose (used when ``world_coordinates``).
        world_coordinates: ``transform_points`` takes world points (True) or view-space points (False,
            PyTorch3D's default).
        use_radial, use_tangential, use_thin_prism: which distortions apply.
        image_size: optional ``(N, 2)`` ``(H, W)``.
        device: device of the fields.
    """

    focal_length: torch.Tensor
    principal_point: torch.Tensor
    radial_params: torch.Tensor
    tangential_params: torch.Tensor
    thin_prism_params: torch.Tensor
    image_size: torch.Tensor | None
    world_coordinates: bool
    use_radial: bool
    use_tangential: bool
    use_thin_prism: bool

    _tensor_fields: ClassVar[tuple[str, ...]] = ("focal_length", "principal_point", "radial_params",
                                                 "tangential_params", "thin_prism_params", "R", "T", "image_size")
    _flag_fields: ClassVar[tuple[str, ...]] = ("world_coordinates", "use_radial", "use_tangential",
                                               "use_thin_prism")

    def __init__(self, focal_length=((1.0,),), principal_point=((0.0, 0.0),), radial_params=((0.0,) * 6,),
                 tangential_params=((0.0, 0.0),), thin_prism_params=((0.0,) * 4,), R=_R0, T=((0.0, 0.0, 0.0),),
                 world_coordinates: bool = False, use_radial: bool = True, use_tangential: bool = True,
                 use_thin_prism: bool = True, device: Any = None, image_size=None) -> None:
        flags = {"world_coordinates": bool(world_coordinates), "use_radial": bool(use_radial),
                 "use_tangential": bool(use_tangential), "use_thin_prism": bool(use_thin_prism)}
        self._setup(device, flags, focal_length=focal_length, principal_point=_rows("principal_point",
                    principal_point, 2), radial_params=radial_params, tangential_params=_rows(
                    "tangential_params", tangential_params, 2), thin_prism_params=_rows("thin_prism_params",
                    thin_prism_params, 4), R=R, T=T, image_size=_rows("image_size", image_size, 2)
                    if image_size is not None else None)

    def _setup(self, device, flags: dict, **values) -> None:
        super()._setup(device, flags, **values)
        n = len(self)
        fl = self.focal_length.reshape(n, -1) if self.focal_length.numel() == n else self.focal_length
        if fl.shape != (n, 1):
            raise ValueError(f"focal_length must have shape ({n}, 1), got {tuple(self.focal_length.shape)}")
        object.__setattr__(self, "focal_length", fl)
        radial = self.radial_params.reshape(n, -1)
        if radial.shape[1] > 6:
            raise ValueError(f"radial_params must have at most 6 columns, got {radial.shape[1]}")
        object.__setattr__(self, "radial_params", radial)
        for name, width in (("principal_point", 2), ("tangential_params", 2), ("thin_prism_params", 4)):
            if getattr(self, name).shape != (n, width):
                raise ValueError(f"{name} must have shape ({n}, {width}), got {tuple(getattr(self, name).shape)}")
        if self.image_size is not None and bool((self.image_size < 1).any()):
            raise ValueError(f"image_size must be positive (H, W), got {self.image_size.tolist()}")

    def is_perspective(self) -> bool:
        return True

    def in_ndc(self) -> bool:
        return False

    def _params(self) -> tuple[torch.Tensor, ...]:
        return (self.focal_length, self.principal_point, self.radial_params, self.tangential_params,
                self.thin_prism_params)

    def get_projection_transform(self, **kwargs) -> Transform3d:
        raise NotImplementedError("FishEyeCameras: the fisheye projection is not a linear transform; use "
                                  "transform_points / unproject_points")

    def transform_points(self, points: torch.Tensor, eps: float | None = None, **kwargs) -> torch.Tensor:
        """Pixel coordinates of points (view space, or world space with ``world_coordinates``).

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` float (an ``(M, P, 3)`` batch needs N = 1 cameras).
            eps: clamp of the world-to-view divisor (unused by the rigid world-to-view transform).

        Returns:
            ``(N, P, 3)`` float ``(u, v, 1)`` (PyTorch3D's layout: the third coordinate is 1); ``(P, 3)``
            when ``points`` is ``(P, 3)`` and N = 1.
        """
        cam = self._with(kwargs)
        check_tensor("points", points, dtype="float")
        if points.dim() not in (2, 3) or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (P, 3) or (N, P, 3), got {tuple(points.shape)}")
        flat = points.dim() == 2
        pts = points.to(device=cam.device, dtype=cam.dtype)
        if cam.world_coordinates:
            pts = cam.get_world_to_view_transform().transform_points(pts if not flat else pts[None].expand(
                len(cam), -1, -1))
        pts = pts if pts.dim() == 3 else pts[None]
        n = max(len(cam), pts.shape[0])
        if pts.shape[0] not in (1, n) or len(cam) not in (1, n):
            raise ValueError(f"points of batch {pts.shape[0]} do not broadcast with {len(cam)} cameras")
        params = [p.expand(n, *p.shape[1:]) for p in cam._params()]
        uv = fisheye_project(pts.expand(n, -1, -1), *params, cam.use_radial, cam.use_tangential,
                             cam.use_thin_prism)
        out = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
        return out[0] if flat and n == 1 else out

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True, **kwargs) -> torch.Tensor:
        """Directions (z = 1, view space) of pixel coordinates: the inverse of ``transform_points``.

        Args:
            xy_depth: ``(P, 2|3)`` or ``(N, P, 2|3)`` float pixel coordinates (a third column is ignored, as
                PyTorch3D).
            world_coordinates: accepted for the base class's signature; as PyTorch3D's fisheye camera the
                result is always in view space (z = 1); passing True with ``self.world_coordinates`` raises
                rather than returning view-space points as if they were world points.

        Returns:
            ``(N, P, 3)`` float (``(P, 3)`` for ``(P, .)`` input and N = 1).
        """
        cam = self._with(kwargs)
        if world_coordinates and cam.world_coordinates:
            raise ValueError("FishEyeCameras.unproject_points returns view-space directions (z = 1); pass "
                             "world_coordinates=False")
        check_tensor("xy_depth", xy_depth, dtype="float")
        if xy_depth.dim() not in (2, 3) or xy_depth.shape[-1] not in (2, 3):
            raise ValueError(f"xy_depth must have shape (P, 2|3) or (N, P, 2|3), got {tuple(xy_depth.shape)}")
        flat = xy_depth.dim() == 2
        uv = xy_depth[..., :2].to(device=cam.device, dtype=cam.dtype)
        uv = uv if uv.dim() == 3 else uv[None]
        n = max(len(cam), uv.shape[0])
        params = [p.expand(n, *p.shape[1:]) for p in cam._params()]
        out = fisheye_unproject(uv.expand(n, -1, -1), *params, cam.use_radial, cam.use_tangential,
                                cam.use_thin_prism)
        return out[0] if flat and n == 1 else out
