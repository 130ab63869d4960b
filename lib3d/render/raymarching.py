"""Ray marching and compositing: PyTorch3D's ray marchers and renderers, NeRF's compositing (nerfacc style),
and a packed ray marcher with empty-space skipping for fields given as callbacks.

Dimension names: ``N`` batch (cameras); ``...`` the spatial shape of the rays of one camera; ``S`` samples
per ray; ``C`` feature channels; ``R`` rays; ``P`` packed samples (all rays' samples in one dimension, ray
by ray); ``D, H, W`` the cells of an occupancy grid.

One routine computes compositing weights, ``render_weight_from_alpha``::

    w_i = alpha_i T_i,    T_i = prod_{j <= i - shift} s_i    (s: the survival of a sample, default 1 - alpha)

on padded samples ``(..., S)`` or packed ones (``ray_indices``); everything else calls it:

- emission-absorption (PyTorch3D, densities ``d_i`` in [0, 1]): ``alpha = d``, ``s = 1 + eps - d``,
  ``shift = surface_thickness``; ``features = sum_i w_i f_i``, ``opacity = 1 - prod_i (1 - d_i)``;
- NeRF (Mildenhall et al. 2020, eq. 3), ``render_weight_from_density``: ``alpha_i = 1 - exp(-sigma_i
  delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``; ``rgb = sum_i w_i c_i``, ``opacity = sum_i w_i``,
  ``depth = sum_i w_i t_i`` (``accumulate_along_rays``).

Fields reach the renderers as callbacks: ``render_rays(field(points, dirs) -> (rgb, density))``,
``ImplicitRenderer(volumetric_function(ray_bundle) -> (densities, features))`` and
``render_rays_in_box(density_fn(points), color_fn(points, dirs))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from lib3d._checks import check_shape, check_shapes, check_tensor, is_tracing
from lib3d.render.raysampling import RayBundle, ray_aabb_intersect, ray_bundle_variables_to_ray_points
from lib3d.render.volumes import Volumes, VolumeSampler

__all__ = [
    "AbsorptionOnlyRaymarcher",
    "EmissionAbsorptionRaymarcher",
    "ImplicitRenderer",
    "PackedRenderOutput",
    "RenderOutput",
    "VolumeRenderer",
    "absorption_only",
    "accumulate_along_rays",
    "emission_absorption",
    "render_rays",
    "render_rays_in_box",
    "render_weight_from_alpha",
    "render_weight_from_density",
]


# ----------------------------------------------------------------------------------------------------
# Compositing weights (the one routine) and accumulation
# ----------------------------------------------------------------------------------------------------
def _exclusive_segment_cumsum(x: torch.Tensor, ray_indices: torch.Tensor) -> torch.Tensor:
    """``sum_{j < i, same ray} x_j`` of packed samples (rays contiguous), accumulated in float64 (the global
    running sum is large)."""
    x64 = x.double()
    cs = torch.cumsum(x64, 0) - x64
    if x.shape[0] == 0:
        return cs.to(x.dtype)
    start = torch.ones_like(ray_indices, dtype=torch.bool)
    start[1:] = ray_indices[1:] != ray_indices[:-1]
    pos = torch.arange(x.shape[0], device=x.device)
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    return (cs - cs[first]).to(x.dtype)


def render_weight_from_alpha(alphas: torch.Tensor, survival: torch.Tensor | None = None, *,
                             log_survival: torch.Tensor | None = None, shift: int = 1,
                             ray_indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights ``w_i = alpha_i T_i`` with ``T_i = prod_{j <= i - shift} s_j`` (module docstring).

    Args:
        alphas: ``(..., S)`` float per-sample opacities, or ``(P,)`` packed samples with ``ray_indices``.
        survival: ``s``, shaped like ``alphas``; default ``1 - alphas``.
        log_survival: ``log s`` instead of ``survival`` (then ``T = exp(sum log s)``, exact for densities).
        shift: the transmittance of sample ``i`` multiplies the survivals of samples ``j <= i - shift``
            (1: all earlier samples, NeRF's and PyTorch3D's default; PyTorch3D's ``surface_thickness``).
        ray_indices: ``(P,)`` long ray of each packed sample, non-decreasing (samples of a ray contiguous);
            ``shift`` must then be 1.

    Returns:
        ``(weights, transmittance)``, each shaped like ``alphas``.

    Example:
        >>> render_weight_from_alpha(torch.tensor([0.5, 0.5]))  # w = [0.5, 0.25], T = [1, 0.5]
    """
    check_tensor("alphas", alphas, dtype="float")
    if survival is not None and log_survival is not None:
        raise ValueError("pass survival or log_survival, not both")
    for name, v in (("survival", survival), ("log_survival", log_survival)):
        if v is not None and v.shape != alphas.shape:
            raise ValueError(f"{name} must have the shape of alphas {tuple(alphas.shape)}, got {tuple(v.shape)}")
    if not isinstance(shift, int) or shift < 1:
        raise ValueError(f"shift must be an int >= 1, got {shift!r}")
    if ray_indices is not None:
        check_shape("ray_indices", ray_indices, (alphas.shape[0],))
        if alphas.ndim != 1 or shift != 1:
            raise ValueError(f"packed samples need alphas of shape (P,) and shift 1, got {tuple(alphas.shape)} "
                             f"and shift {shift}")
        if log_survival is None:
            log_survival = torch.log(1.0 - alphas if survival is None else survival)
        trans = torch.exp(_exclusive_segment_cumsum(log_survival, ray_indices))
        return trans * alphas, trans
    if log_survival is not None:
        acc = torch.cumsum(log_survival, dim=-1)
        trans = torch.exp(torch.cat([torch.zeros_like(acc[..., :shift]), acc[..., :-shift]], dim=-1))
    else:
        cp = torch.cumprod(1.0 - alphas if survival is None else survival, dim=-1)
        trans = torch.cat([torch.ones_like(cp[..., :shift]), cp[..., :-shift]], dim=-1)
    return trans * alphas, trans


def render_weight_from_density(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor, *,
                               ray_indices: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NeRF compositing weights from densities (Mildenhall et al. 2020, eq. 3).

    ``delta_i = t_end_i - t_start_i``, ``alpha_i = 1 - exp(-sigma_i delta_i)``,
    ``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i alpha_i`` (``render_weight_from_alpha`` with
    ``log_survival = -sigma delta``).

    Args:
        t_starts: ``(..., S)`` float interval starts (in units of the ray direction's length), or ``(P,)``
            packed samples with ``ray_indices``.
        t_ends: interval ends, shaped like ``t_starts``.
        sigmas: non-negative densities, shaped like ``t_starts``.
        ray_indices: ``(P,)`` long ray of each packed sample (non-decreasing).

    Returns:
        ``(weights, transmittance, alphas)``, each shaped like ``t_starts``.

    Example:
        >>> # one ray, two unit intervals, sigma = ln 2: alpha = 0.5, T = [1, 0.5], w = [0.5, 0.25]
        >>> render_weight_from_density(torch.tensor([0., 1.]), torch.tensor([1., 2.]), torch.tensor([0.6931, 0.6931]))
    """
    check_shapes(t_starts=(t_starts, (..., "S")), t_ends=(t_ends, (..., "S")), sigmas=(sigmas, (..., "S")),
                 dtype="float")
    if not (t_starts.shape == t_ends.shape == sigmas.shape):
        raise ValueError(f"t_starts {tuple(t_starts.shape)}, t_ends {tuple(t_ends.shape)} and sigmas "
                         f"{tuple(sigmas.shape)} must have the same shape")
    sd = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sd)
    weights, trans = render_weight_from_alpha(alphas, log_survival=-sd, ray_indices=ray_indices)
    return weights, trans, alphas


def accumulate_along_rays(weights: torch.Tensor, values: torch.Tensor | None = None, *,
                          ray_indices: torch.Tensor | None = None, num_rays: int | None = None) -> torch.Tensor:
    """``sum_i w_i v_i`` along the samples of each ray.

    Args:
        weights: ``(..., S)`` float, or ``(P,)`` packed samples with ``ray_indices``.
        values: ``(..., S, C)`` (packed: ``(P, C)``) float, or ``None`` to accumulate the weights themselves
            (opacity).
        ray_indices: ``(P,)`` long ray of each packed sample.
        num_rays: ``R``, the number of rays (packed samples only).

    Returns:
        ``(..., C)`` (or ``(..., 1)`` when ``values`` is None); packed: ``(R, C)`` (or ``(R, 1)``).
    """
    check_tensor("weights", weights, dtype="float")
    if values is not None:
        check_shape("values", values, (..., None), dtype="float")
        if values.shape[:-1] != weights.shape:
            raise ValueError(f"values must have shape {tuple(weights.shape)} + (C,), got {tuple(values.shape)}")
    if ray_indices is not None:
        if num_rays is None or weights.ndim != 1:
            raise ValueError("packed samples need weights of shape (P,) and num_rays")
        check_shape("ray_indices", ray_indices, (weights.shape[0],))
        v = weights[:, None] if values is None else weights[:, None] * values
        return v.new_zeros((num_rays, v.shape[1])).index_add_(0, ray_indices, v)
    if values is None:
        return weights.sum(dim=-1, keepdim=True)
    return (weights[..., None] * values).sum(dim=-2)


# ----------------------------------------------------------------------------------------------------
# Ray marchers (PyTorch3D)
# ----------------------------------------------------------------------------------------------------
def _check_density_bounds(rays_densities: torch.Tensor, bounds=(0.0, 1.0)) -> None:
    if is_tracing():
        return
    if bool((rays_densities < bounds[0]).any()) or bool((rays_densities > bounds[1]).any()):
        raise ValueError(f"rays_densities must lie in [{bounds[0]}, {bounds[1]}], got values in "
                         f"[{float(rays_densities.min())}, {float(rays_densities.max())}]")


def emission_absorption(rays_densities: torch.Tensor, rays_features: torch.Tensor, eps: float = 1e-10,
                        surface_thickness: int = 1) -> torch.Tensor:
    """Emission-absorption compositing of densities in [0, 1] (PyTorch3D's ``EmissionAbsorptionRaymarcher``).

    ``w_i = d_i prod_{j < i - surface_thickness + 1} (1 + eps - d_j)``, ``features = sum_i w_i f_i``,
    ``opacity = 1 - prod_i (1 - d_i)``.

    Args:
        rays_densities: ``(..., S, 1)`` float in [0, 1].
        rays_features: ``(..., S, C)`` float.
        eps: the ``eps`` of the transmittance product.
        surface_thickness: shift of the cumulative product (1 = standard).

    Returns:
        ``(..., C + 1)`` float: features then opacity.

    Raises:
        ValueError: densities outside [0, 1] or mismatched shapes.
    """
    check_shape("rays_densities", rays_densities, (..., 1), dtype="float")
    check_shape("rays_features", rays_features, (..., None), dtype="float")
    if rays_features.shape[:-1] != rays_densities.shape[:-1]:
        raise ValueError(f"rays_features {tuple(rays_features.shape)} and rays_densities "
                         f"{tuple(rays_densities.shape)} must share their leading dimensions")
    _check_density_bounds(rays_densities)
    d = rays_densities[..., 0]
    weights, _ = render_weight_from_alpha(d, (1.0 + eps) - d, shift=surface_thickness)
    features = accumulate_along_rays(weights, rays_features)
    opacities = 1.0 - torch.prod(1.0 - d, dim=-1, keepdim=True)
    return torch.cat((features, opacities), dim=-1)


def absorption_only(rays_densities: torch.Tensor) -> torch.Tensor:
    """Opacity ``1 - prod_i (1 - d_i)`` of densities in [0, 1] (PyTorch3D's ``AbsorptionOnlyRaymarcher``).

    Args:
        rays_densities: ``(..., S, 1)`` float in [0, 1].

    Returns:
        ``(..., 1)`` float opacities.
    """
    check_shape("rays_densities", rays_densities, (..., 1), dtype="float")
    _check_density_bounds(rays_densities)
    return 1.0 - torch.prod(1.0 - rays_densities[..., 0], dim=-1, keepdim=True)


class EmissionAbsorptionRaymarcher(torch.nn.Module):
    """PyTorch3D's emission-absorption ray marcher; ``forward`` calls ``emission_absorption``."""

    def __init__(self, surface_thickness: int = 1) -> None:
        super().__init__()
        self.surface_thickness = surface_thickness

    def forward(self, rays_densities: torch.Tensor, rays_features: torch.Tensor, eps: float = 1e-10,
                **kwargs) -> torch.Tensor:
        return emission_absorption(rays_densities, rays_features, eps, self.surface_thickness)


class AbsorptionOnlyRaymarcher(torch.nn.Module):
    """PyTorch3D's absorption-only ray marcher; ``forward`` calls ``absorption_only``."""

    def forward(self, rays_densities: torch.Tensor, **kwargs) -> torch.Tensor:
        return absorption_only(rays_densities)


class ImplicitRenderer(torch.nn.Module):
    """Ray sampler + volumetric function + ray marcher (PyTorch3D's ``ImplicitRenderer``).

    ``forward(cameras, volumetric_function, **kwargs)`` samples rays, calls
    ``volumetric_function(ray_bundle=..., cameras=..., **kwargs) -> (rays_densities, rays_features)``
    and marches them; returns ``(images (N, ..., C + 1), ray_bundle)``.
    """

    def __init__(self, raysampler: torch.nn.Module, raymarcher: torch.nn.Module) -> None:
        super().__init__()
        self.raysampler = raysampler
        self.raymarcher = raymarcher

    def forward(self, cameras, volumetric_function: Callable, **kwargs) -> tuple[torch.Tensor, RayBundle]:
        if not callable(volumetric_function):
            raise TypeError("volumetric_function must be callable")
        ray_bundle = self.raysampler(cameras=cameras, volumetric_function=volumetric_function, **kwargs)
        rays_densities, rays_features = volumetric_function(ray_bundle=ray_bundle, cameras=cameras, **kwargs)
        images = self.raymarcher(rays_densities=rays_densities, rays_features=rays_features,
                                 ray_bundle=ray_bundle, **kwargs)
        return images, ray_bundle


class VolumeRenderer(torch.nn.Module):
    """Renders ``Volumes`` (PyTorch3D's ``VolumeRenderer``): ``ImplicitRenderer`` with a ``VolumeSampler``.

    ``compiled=True`` samples shared grids with the compiled CPU kernels (``lib3d.render.trilinear``).
    ``forward(cameras, volumes)`` returns ``(images (N, ..., C + 1), ray_bundle)``.
    """

    def __init__(self, raysampler: torch.nn.Module, raymarcher: torch.nn.Module, sample_mode: str = "bilinear",
                 compiled: bool = False) -> None:
        super().__init__()
        self.renderer = ImplicitRenderer(raysampler, raymarcher)
        self._sample_mode = sample_mode
        self._compiled = bool(compiled)

    def forward(self, cameras, volumes: Volumes, **kwargs) -> tuple[torch.Tensor, RayBundle]:
        sampler = VolumeSampler(volumes, self._sample_mode, compiled=self._compiled)
        return self.renderer(cameras=cameras, volumetric_function=sampler, **kwargs)


class RenderOutput(NamedTuple):
    """Per-ray rendering results.

    Attributes:
        rgb: ``(..., 3)`` composited colour (background added when one was given).
        opacity: ``(..., 1)`` accumulated weight ``sum_i w_i``.
        depth: ``(..., 1)`` expected ray length ``sum_i w_i t_i`` (in units of ``|directions|``).
        weights: ``(..., S)`` compositing weights ``w_i``.
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor


def render_rays(field: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                origins: torch.Tensor, directions: torch.Tensor, lengths: torch.Tensor,
                far: torch.Tensor | float | None = None, background: torch.Tensor | float | None = None
                ) -> RenderOutput:
    """Render rays through a radiance field with NeRF's compositing.

    The field is a callback ``field(points (..., S, 3), dirs (..., S, 3)) -> (rgb (..., S, 3),
    density (..., S))`` with non-negative densities. Interval ``i`` spans ``[t_i, t_{i+1})`` and the
    last one ends at ``far`` (or extends by the previous interval when ``far`` is None).

    Args:
        field: the radiance field callback.
        origins: ``(..., 3)`` float.
        directions: ``(..., 3)`` float (lengths are in units of ``|directions|``; densities are per unit
            world length, so intervals are scaled by ``|directions|``).
        lengths: ``(..., S)`` float sorted sample depths.
        far: optional end of the last interval (float or ``(...)``).
        background: optional background colour (float or ``(3,)``) added as ``(1 - opacity) * bg``.

    Returns:
        ``RenderOutput(rgb (..., 3), opacity (..., 1), depth (..., 1), weights (..., S))``.
    """
    check_shapes(origins=(origins, (..., 3)), directions=(directions, (..., 3)), dtype="float")
    check_shape("lengths", lengths, (..., None), dtype="float")
    points = ray_bundle_variables_to_ray_points(origins, directions, lengths)
    dirs = directions[..., None, :].expand_as(points)
    rgb, sigma = field(points, dirs)
    if far is None:
        last = lengths[..., -1:] + (lengths[..., -1:] - lengths[..., -2:-1])
    else:
        far_t = torch.as_tensor(far, dtype=lengths.dtype, device=lengths.device)
        last = far_t.expand(lengths.shape[:-1])[..., None] if far_t.ndim else far_t.expand(lengths[..., -1:].shape)
    ends = torch.cat([lengths[..., 1:], last], dim=-1)
    scale = directions.norm(dim=-1, keepdim=True)
    weights, _, _ = render_weight_from_density(lengths * scale, ends * scale, sigma)
    color = accumulate_along_rays(weights, rgb)
    opacity = accumulate_along_rays(weights)
    depth = accumulate_along_rays(weights, lengths[..., None])
    if background is not None:
        bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
        color = color + (1.0 - opacity) * bg
    return RenderOutput(color, opacity, depth, weights)


# ----------------------------------------------------------------------------------------------------
# Packed marching with empty-space skipping (fields as callbacks)
# ----------------------------------------------------------------------------------------------------
class PackedRenderOutput(NamedTuple):
    """Per-ray results of ``render_rays_in_box``.

    Attributes:
        rgb: ``(R, 3)`` colour (background added when given).
        opacity: ``(R, 1)`` accumulated weight.
        depth: ``(R, 1)`` expected depth (units of ``|directions|``).
        num_samples: number of density evaluations (after empty-space skipping).
        num_color_samples: number of colour evaluations (after early termination).
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    num_samples: int
    num_color_samples: int


def _occupied(points: torch.Tensor, aabb: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """``(P,)`` bool: the occupancy cell (nearest centre, ``align_corners=True`` layout over ``aabb``) of each
    ``(P, 3)`` point."""
    res = torch.tensor(occupancy.shape[::-1], device=points.device, dtype=points.dtype)  # (W, H, D): x, y, z
    ijk = ((points - aabb[0]) / (aabb[1] - aabb[0]) * (res - 1)).round().long()
    ijk = torch.minimum(ijk.clamp_min(0), (res - 1).long())
    flat = (ijk[:, 2] * occupancy.shape[1] + ijk[:, 1]) * occupancy.shape[2] + ijk[:, 0]
    return occupancy.reshape(-1)[flat]


def render_rays_in_box(density_fn: Callable[[torch.Tensor], torch.Tensor],
                       color_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       origins: torch.Tensor, directions: torch.Tensor, step: float, aabb: torch.Tensor,
                       occupancy: torch.Tensor | None = None, stratified: bool = False,
                       generator: torch.Generator | None = None, background: torch.Tensor | float | None = None,
                       color_threshold: float = 1e-4) -> PackedRenderOutput:
    """Render rays through a field inside a box, in packed form, evaluating only what matters.

    1. each ray is clipped to ``aabb`` and marched with a fixed metric step: ``t_k = t_near + (k + u)
       step`` (``u = 0.5``, or uniform per ray when ``stratified``);
    2. samples in cells that ``occupancy`` marks empty are dropped (empty-space skipping);
    3. densities are evaluated at the remaining samples and composited per ray (``render_weight_from_density``
       on packed samples);
    4. colours are evaluated only where ``w_i > color_threshold`` (early ray termination: samples behind a
       surface have ``T_i ~ 0``).

    Args:
        density_fn: ``density_fn(points (P, 3)) -> sigma (P,)``, non-negative, per unit world length.
        color_fn: ``color_fn(points (P, 3), unit dirs (P, 3)) -> rgb (P, 3)``.
        origins: ``(R, 3)`` float.
        directions: ``(R, 3)`` float (any length; depths are reported in its units).
        step: metric marching step.
        aabb: ``(2, 3)`` box ``(min, max)``.
        occupancy: optional ``(D, H, W)`` bool cells over ``aabb`` (True = may hold matter; cell centres at
            ``linspace(min, max, n)`` per axis, x along W).
        stratified: random per-ray offset of the samples (training).
        generator: random generator of the offsets.
        background: optional background colour (float or ``(3,)``) added as ``(1 - opacity) * bg``.
        color_threshold: colours are evaluated only where ``w_i > color_threshold`` (0: everywhere).

    Returns:
        ``PackedRenderOutput``.
    """
    sizes = check_shapes(origins=(origins, ("R", 3)), directions=(directions, ("R", 3)), dtype="float")
    check_shape("aabb", aabb, (2, 3), dtype="float")
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    R = sizes["R"]
    dev, dt = origins.device, origins.dtype
    scale = directions.norm(dim=-1)
    d = directions / scale[:, None]
    aabb = aabb.to(device=dev, dtype=dt)
    t0, t1, hit = ray_aabb_intersect(origins, d, aabb[0], aabb[1])
    n = torch.where(hit, ((t1 - t0) / step).ceil(), torch.zeros_like(t0)).long()
    ray_ids = torch.repeat_interleave(torch.arange(R, device=dev), n)
    first = torch.cumsum(n, 0) - n
    k = torch.arange(ray_ids.shape[0], device=dev) - first[ray_ids]
    if stratified:
        u = torch.rand(R, generator=generator, device=dev, dtype=dt)
    else:
        u = torch.full((R,), 0.5, device=dev, dtype=dt)
    t = t0[ray_ids] + (k.to(dt) + u[ray_ids]) * step
    keep = t < t1[ray_ids]
    pts = origins[ray_ids] + t[:, None] * d[ray_ids]
    if occupancy is not None:
        check_shape("occupancy", occupancy, (None, None, None))
        keep = keep & _occupied(pts, aabb, occupancy)
    idx = keep.nonzero().squeeze(1)
    ray_ids, t, pts = ray_ids[idx], t[idx], pts[idx]
    sigma = density_fn(pts)
    delta = torch.full_like(t, step)
    w, _, _ = render_weight_from_density(torch.zeros_like(t), delta, sigma, ray_indices=ray_ids)
    sel = (w > color_threshold).nonzero().squeeze(1) if color_threshold > 0 else torch.arange(w.shape[0], device=dev)
    rgb_s = color_fn(pts[sel], d[ray_ids[sel]])
    rgb = accumulate_along_rays(w[sel], rgb_s, ray_indices=ray_ids[sel], num_rays=R)
    opacity = accumulate_along_rays(w, ray_indices=ray_ids, num_rays=R)
    depth = accumulate_along_rays(w, t[:, None], ray_indices=ray_ids, num_rays=R) / scale[:, None]
    if background is not None:
        bg = torch.as_tensor(background, dtype=dt, device=dev)
        rgb = rgb + (1.0 - opacity) * bg
    return PackedRenderOutput(rgb, opacity, depth, int(idx.shape[0]), int(sel.shape[0]))
