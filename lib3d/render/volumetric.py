"""Volumetric rendering: ray bundles, ray samplers, dense volumes, ray marchers (PyTorch3D semantics).

This module ports PyTorch3D's ``pytorch3d.renderer.implicit`` and ``Volumes`` with the same names and
numbers (``NDCMultinomialRaysampler``, ``MonteCarloRaysampler``, ``EmissionAbsorptionRaymarcher``,
``AbsorptionOnlyRaymarcher``, ``VolumeSampler``, ``VolumeRenderer``, ``ImplicitRenderer``,
``ray_bundle_to_ray_points``, ``sample_pdf``), and adds NeRF's functional compositing in the style of
nerfacc (``render_weight_from_density``, ``accumulate_along_rays``, ``render_rays``) where a field
reaches the renderer as a callback ``field(points, dirs) -> (rgb, density)``.

Dimension names used below:

- ``N``: batch (one entry per camera);
- ``...``: the spatial shape of the rays of one camera (``(H, W)`` for full images, ``(R,)`` for
  ``R`` random rays);
- ``S``: samples (points) per ray (PyTorch3D's ``n_pts_per_ray``);
- ``C``: feature channels; ``D, H, W``: volume depth, height, width (voxels).

Conventions (PyTorch3D's): rays are generated in NDC, +X left and +Y up, the shorter image side spanning
[-1, 1]; ``directions`` are not normalised by default (their view-space z is 1, so ``lengths`` are
view-space depths); ray points are ``origins + lengths * directions``. Volume local coordinates are
``grid_sample``'s (``align_corners=True``): (-1, -1, -1) is the centre of voxel (0, 0, 0), x indexes
W, y indexes H and z indexes D.

Compositing formulas:

- emission-absorption (PyTorch3D, densities ``d_i`` in [0, 1]): ``w_i = d_i prod_{j<i} (1 + eps - d_j)``,
  ``features = sum_i w_i f_i``, ``opacity = 1 - prod_i (1 - d_i)``;
- NeRF (Mildenhall et al. 2020, eq. 3): ``alpha_i = 1 - exp(-sigma_i delta_i)``,
  ``T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i alpha_i``,
  ``rgb = sum_i w_i c_i``, ``opacity = sum_i w_i``, ``depth = sum_i w_i t_i``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_choice, check_shape, check_shapes, check_tensor, is_tracing
from lib3d.render.trilinear import sample_grid_along_rays, trilinear_sample

__all__ = [
    "AbsorptionOnlyRaymarcher",
    "EmissionAbsorptionRaymarcher",
    "GridRaysampler",
    "ImplicitRenderer",
    "MonteCarloRaysampler",
    "MultinomialRaysampler",
    "NDCGridRaysampler",
    "NDCMultinomialRaysampler",
    "RayBundle",
    "RenderOutput",
    "VolumeRenderer",
    "VolumeSampler",
    "Volumes",
    "absorption_only",
    "accumulate_along_rays",
    "emission_absorption",
    "jiggle_within_stratas",
    "ray_aabb_intersect",
    "ray_bundle_to_ray_points",
    "ray_bundle_variables_to_ray_points",
    "render_rays",
    "render_weight_from_alpha",
    "render_weight_from_density",
    "sample_images_at_mc_locs",
    "sample_pdf",
    "sample_pdf_python",
    "sample_volume",
    "stratified_lengths",
    "xy_to_ray_bundle",
]


# ----------------------------------------------------------------------------------------------------
# Ray bundles
# ----------------------------------------------------------------------------------------------------
class RayBundle(NamedTuple):
    """A batch of rays (PyTorch3D's ``RayBundle``).

    Attributes:
        origins: ``(N, ..., 3)`` float, ray origins in world coordinates.
        directions: ``(N, ..., 3)`` float, ray directions in world coordinates (not normalised unless
            the sampler was asked to).
        lengths: ``(N, ..., S)`` float, distances along each ray in units of ``|directions|``.
        xys: ``(N, ..., 2)`` float, the NDC location of each ray in the image (+X left, +Y up).
    """

    origins: torch.Tensor
    directions: torch.Tensor
    lengths: torch.Tensor
    xys: torch.Tensor


def ray_bundle_variables_to_ray_points(origins: torch.Tensor, directions: torch.Tensor,
                                       lengths: torch.Tensor) -> torch.Tensor:
    """Points along rays: ``points[..., s, :] = origins + lengths[..., s] * directions``.

    Args:
        origins: ``(..., 3)`` float.
        directions: ``(..., 3)`` float.
        lengths: ``(..., S)`` float.

    Returns:
        ``(..., S, 3)`` float world points.
    """
    _check_rays(origins, directions, lengths)
    return origins[..., None, :] + lengths[..., :, None] * directions[..., None, :]


def _check_rays(origins: torch.Tensor, directions: torch.Tensor, lengths: torch.Tensor) -> None:
    check_shapes(origins=(origins, (..., 3)), directions=(directions, (..., 3)), dtype="float")
    check_shape("lengths", lengths, (..., None), dtype="float")
    if lengths.shape[:-1] != origins.shape[:-1] or directions.shape != origins.shape:
        raise ValueError(f"origins {tuple(origins.shape)}, directions {tuple(directions.shape)} and "
                         f"lengths {tuple(lengths.shape)} must share their leading dimensions")


def ray_bundle_to_ray_points(ray_bundle: RayBundle) -> torch.Tensor:
    """Points along the rays of a bundle (PyTorch3D's ``ray_bundle_to_ray_points``).

    Args:
        ray_bundle: a ``RayBundle`` with origins/directions ``(N, ..., 3)`` and lengths ``(N, ..., S)``.

    Returns:
        ``(N, ..., S, 3)`` float: ``origins + lengths * directions``.
    """
    return ray_bundle_variables_to_ray_points(ray_bundle.origins, ray_bundle.directions, ray_bundle.lengths)


def jiggle_within_stratas(bin_centers: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified jitter: move each depth uniformly within its stratum (PyTorch3D's ``_jiggle_within_stratas``).

    The stratum of sample ``i`` spans the midpoints to its neighbours (the first and last strata are
    half-open at the ends).

    Args:
        bin_centers: ``(..., S)`` float, sorted depths.
        generator: optional random generator.

    Returns:
        ``(..., S)`` float jittered depths.
    """
    check_tensor("bin_centers", bin_centers, dtype="float")
    mids = 0.5 * (bin_centers[..., 1:] + bin_centers[..., :-1])
    upper = torch.cat((mids, bin_centers[..., -1:]), dim=-1)
    lower = torch.cat((bin_centers[..., :1], mids), dim=-1)
    u = torch.rand(lower.shape, generator=generator, device=lower.device, dtype=lower.dtype)
    return lower + (upper - lower) * u


def xy_to_ray_bundle(cameras, xy_grid: torch.Tensor, min_depth: float, max_depth: float, n_pts_per_ray: int,
                     unit_directions: bool = False, stratified_sampling: bool = False,
                     generator: torch.Generator | None = None) -> RayBundle:
    """Rays through NDC points of each camera (PyTorch3D's ``_xy_to_ray_bundle``).

    Every NDC point is unprojected at view depths 1 and 2; the direction is the difference and the
    origin is the depth-1 point minus the direction (so, for perspective cameras, the camera centre,
    and ``lengths`` are view depths when ``unit_directions`` is False).

    Args:
        cameras: a batch of ``N`` cameras with ``unproject_points(xy_depth, world_coordinates=True,
            from_ndc=True)`` and ``R (N, 3, 3)``.
        xy_grid: ``(N, ..., 2)`` float NDC locations.
        min_depth, max_depth: depth range of the samples.
        n_pts_per_ray: ``S``, samples per ray (``torch.linspace(min_depth, max_depth, S)``).
        unit_directions: normalise the directions.
        stratified_sampling: jitter the depths within their strata.
        generator: random generator for the jitter.

    Returns:
        ``RayBundle`` with origins/directions ``(N, ..., 3)``, lengths ``(N, ..., S)``, xys ``xy_grid``.
    """
    check_shape("xy_grid", xy_grid, (..., 2), dtype="float")
    batch_size = xy_grid.shape[0]
    spatial_size = xy_grid.shape[1:-1]
    n_rays = spatial_size.numel()
    rays_zs = xy_grid.new_empty((batch_size, n_rays, 0))
    if n_pts_per_ray > 0:
        depths = torch.linspace(min_depth, max_depth, n_pts_per_ray, dtype=xy_grid.dtype, device=xy_grid.device)
        rays_zs = depths[None, None].expand(batch_size, n_rays, n_pts_per_ray)
        if stratified_sampling:
            rays_zs = jiggle_within_stratas(rays_zs, generator=generator)
    xy = xy_grid.reshape(batch_size, 1, n_rays, 2).expand(batch_size, 2, n_rays, 2).reshape(batch_size, 2 * n_rays, 2)
    ones = xy_grid.new_ones(batch_size, n_rays, 1)
    to_unproject = torch.cat((xy, torch.cat((ones, 2.0 * ones), dim=1)), dim=-1)
    unprojected = cameras.unproject_points(to_unproject, world_coordinates=True, from_ndc=True)
    plane1, plane2 = unprojected[:, :n_rays], unprojected[:, n_rays:]
    directions = plane2 - plane1
    origins = plane1 - directions
    if unit_directions:
        directions = F.normalize(directions, dim=-1)
    return RayBundle(origins.reshape(batch_size, *spatial_size, 3), directions.reshape(batch_size, *spatial_size, 3),
                     rays_zs.reshape(batch_size, *spatial_size, n_pts_per_ray), xy_grid)


def _safe_multinomial(weights: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Multinomial without replacement that falls back to replacement when too few non-zero weights."""
    try:
        return torch.multinomial(weights, n, replacement=False, generator=generator)
    except RuntimeError:
        return torch.multinomial(weights, n, replacement=True, generator=generator)


class MultinomialRaysampler(torch.nn.Module):
    """Rays through a regular grid of image points (PyTorch3D's ``MultinomialRaysampler``).

    The grid has ``image_height x image_width`` points spanning ``[min_x, max_x] x [min_y, max_y]``
    (``torch.linspace``); with ``n_rays_per_image`` set, that many grid points are drawn per camera
    (uniformly, or proportionally to ``mask``).

    Args:
        min_x, max_x, min_y, max_y: NDC extent of the grid (centres of the border pixels).
        image_width, image_height: grid size ``W``, ``H``.
        n_pts_per_ray: ``S``.
        min_depth, max_depth: depth range.
        n_rays_per_image: optional number of grid rays drawn per camera.
        unit_directions: normalise the directions.
        stratified_sampling: jitter depths within their strata.

    Example:
        >>> raysampler = NDCMultinomialRaysampler(image_width=128, image_height=128, n_pts_per_ray=150,
        ...                                       min_depth=0.1, max_depth=3.0)
        >>> bundle = raysampler(cameras)   # origins (N, 128, 128, 3), lengths (N, 128, 128, 150)
    """

    def __init__(self, *, min_x: float, max_x: float, min_y: float, max_y: float, image_width: int,
                 image_height: int, n_pts_per_ray: int, min_depth: float, max_depth: float,
                 n_rays_per_image: int | None = None, unit_directions: bool = False,
                 stratified_sampling: bool = False) -> None:
        super().__init__()
        self._n_pts_per_ray = int(n_pts_per_ray)
        self._min_depth, self._max_depth = float(min_depth), float(max_depth)
        self._n_rays_per_image = n_rays_per_image
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling
        ys = torch.linspace(min_y, max_y, image_height, dtype=torch.float32)
        xs = torch.linspace(min_x, max_x, image_width, dtype=torch.float32)
        Y, X = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("_xy_grid", torch.stack((X, Y), dim=-1), persistent=False)

    def forward(self, cameras, *, mask: torch.Tensor | None = None, min_depth: float | None = None,
                max_depth: float | None = None, n_rays_per_image: int | None = None,
                n_pts_per_ray: int | None = None, stratified_sampling: bool | None = None,
                generator: torch.Generator | None = None, **kwargs) -> RayBundle:
        """Sample rays for a batch of ``N`` cameras.

        Args:
            cameras: ``N`` cameras (``unproject_points``, ``R``).
            mask: optional ``(N, H, W)`` sampling weights for ``n_rays_per_image`` draws.
            min_depth, max_depth, n_rays_per_image, n_pts_per_ray, stratified_sampling: overrides.
            generator: random generator (ray draws and jitter).

        Returns:
            ``RayBundle``: origins/directions ``(N, H, W, 3)``, lengths ``(N, H, W, S)``, xys
            ``(N, H, W, 2)``; with ``n_rays_per_image = R`` the spatial shape is ``(R, 1)``.
        """
        batch_size = cameras.R.shape[0]
        device = cameras.R.device
        xy_grid = self._xy_grid.to(device).expand(batch_size, *self._xy_grid.shape)
        if mask is not None and n_rays_per_image is None:
            n_rays_per_image = int(mask.sum(dim=(1, 2)).min().item())
        n_rays_per_image = n_rays_per_image if n_rays_per_image is not None else self._n_rays_per_image
        if n_rays_per_image is not None:
            num_rays = xy_grid.shape[1] * xy_grid.shape[2]
            if mask is not None:
                check_shape("mask", mask, (batch_size, xy_grid.shape[1], xy_grid.shape[2]))
                weights = mask.reshape(batch_size, num_rays).to(xy_grid.dtype)
            else:
                weights = xy_grid.new_ones(batch_size, num_rays)
            rays_idx = _safe_multinomial(weights, n_rays_per_image, generator)[..., None].expand(-1, -1, 2)
            xy_grid = torch.gather(xy_grid.reshape(batch_size, num_rays, 2), 1, rays_idx)[:, :, None]
        return xy_to_ray_bundle(
            cameras, xy_grid,
            self._min_depth if min_depth is None else min_depth,
            self._max_depth if max_depth is None else max_depth,
            self._n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray,
            self._unit_directions,
            self._stratified_sampling if stratified_sampling is None else stratified_sampling,
            generator=generator)


class NDCMultinomialRaysampler(MultinomialRaysampler):
    """Rays through every pixel centre of an ``H x W`` image in PyTorch3D's NDC convention.

    The shorter side spans [-1, 1] and the longer ``[-W/H, W/H]`` (or ``H/W``); pixel ``[i, j]`` (row
    0 at the top, column 0 at the left) looks through NDC ``x = r_x - (2 j + 1) r_x / W``,
    ``y = r_y - (2 i + 1) r_y / H`` (+X left, +Y up), so ``images[n, i, j]`` matches ``xys[n, i, j]``.

    Args:
        image_width, image_height: ``W``, ``H``.
        n_pts_per_ray, min_depth, max_depth, n_rays_per_image, unit_directions, stratified_sampling: as
            ``MultinomialRaysampler``.
    """

    def __init__(self, *, image_width: int, image_height: int, n_pts_per_ray: int, min_depth: float,
                 max_depth: float, n_rays_per_image: int | None = None, unit_directions: bool = False,
                 stratified_sampling: bool = False) -> None:
        if image_width >= image_height:
            range_x, range_y = image_width / image_height, 1.0
        else:
            range_x, range_y = 1.0, image_height / image_width
        half_pix_width = range_x / image_width
        half_pix_height = range_y / image_height
        super().__init__(min_x=range_x - half_pix_width, max_x=-range_x + half_pix_width,
                         min_y=range_y - half_pix_height, max_y=-range_y + half_pix_height,
                         image_width=image_width, image_height=image_height, n_pts_per_ray=n_pts_per_ray,
                         min_depth=min_depth, max_depth=max_depth, n_rays_per_image=n_rays_per_image,
                         unit_directions=unit_directions, stratified_sampling=stratified_sampling)


GridRaysampler = MultinomialRaysampler
NDCGridRaysampler = NDCMultinomialRaysampler


class MonteCarloRaysampler(torch.nn.Module):
    """Rays through uniformly random image points (PyTorch3D's ``MonteCarloRaysampler``).

    Args:
        min_x, max_x, min_y, max_y: NDC rectangle to draw from.
        n_rays_per_image: ``R`` rays per camera.
        n_pts_per_ray: ``S``.
        min_depth, max_depth: depth range.
        unit_directions: normalise directions.
        stratified_sampling: jitter depths within their strata.

    Returns (forward):
        ``RayBundle`` with origins/directions ``(N, R, 3)``, lengths ``(N, R, S)``, xys ``(N, R, 2)``.
    """

    def __init__(self, min_x: float, max_x: float, min_y: float, max_y: float, n_rays_per_image: int,
                 n_pts_per_ray: int, min_depth: float, max_depth: float, unit_directions: bool = False,
                 stratified_sampling: bool = False) -> None:
        super().__init__()
        self._min_x, self._max_x, self._min_y, self._max_y = min_x, max_x, min_y, max_y
        self._n_rays_per_image = n_rays_per_image
        self._n_pts_per_ray = n_pts_per_ray
        self._min_depth, self._max_depth = min_depth, max_depth
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling

    def forward(self, cameras, *, stratified_sampling: bool | None = None,
                generator: torch.Generator | None = None, **kwargs) -> RayBundle:
        """Draw ``R`` random rays per camera (see the class docstring)."""
        batch_size = cameras.R.shape[0]
        device = cameras.R.device
        u = torch.rand((batch_size, self._n_rays_per_image, 2), generator=generator, dtype=torch.float32,
                       device=device)
        lo = torch.tensor([self._min_x, self._min_y], dtype=torch.float32, device=device)
        hi = torch.tensor([self._max_x, self._max_y], dtype=torch.float32, device=device)
        rays_xy = u * (hi - lo) + lo
        return xy_to_ray_bundle(cameras, rays_xy, self._min_depth, self._max_depth, self._n_pts_per_ray,
                                self._unit_directions,
                                self._stratified_sampling if stratified_sampling is None else stratified_sampling,
                                generator=generator)


def sample_images_at_mc_locs(target_images: torch.Tensor, sampled_rays_xy: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample images at NDC ray locations (the book's ``sample_images_at_mc_locs``).

    NDC has +X left and +Y up while ``grid_sample`` has +x right and +y down, hence the sign flip.

    Args:
        target_images: ``(N, H, W, C)`` float.
        sampled_rays_xy: ``(N, ..., 2)`` float NDC locations.

    Returns:
        ``(N, ..., C)`` float samples (``align_corners=True``).
    """
    check_shape("target_images", target_images, ("N", None, None, None), dtype="float")
    check_shape("sampled_rays_xy", sampled_rays_xy, (..., 2), dtype="float")
    ba, dim = target_images.shape[0], target_images.shape[-1]
    spatial = sampled_rays_xy.shape[1:-1]
    out = F.grid_sample(target_images.permute(0, 3, 1, 2), -sampled_rays_xy.reshape(ba, -1, 1, 2),
                        align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(ba, *spatial, dim)


# ----------------------------------------------------------------------------------------------------
# Hierarchical sampling
# ----------------------------------------------------------------------------------------------------
def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, det: bool = False,
               eps: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw samples from the piecewise-constant PDF given by ``weights`` over ``bins`` (NeRF coarse-to-fine).

    Inverse-transform sampling (Mildenhall et al. 2020, sec. 5.2): ``pdf = (w + eps) / sum(w + eps)``,
    ``cdf = [0, cumsum(pdf)]``, and a uniform ``u`` maps to ``bins[k] + (u - cdf[k]) / pdf[k] *
    (bins[k+1] - bins[k])`` for ``cdf[k] <= u < cdf[k+1]``. Same semantics as PyTorch3D's
    ``sample_pdf``.

    Args:
        bins: ``(..., B + 1)`` float, sorted bin edges.
        weights: ``(..., B)`` float, non-negative bin weights.
        n_samples: number of samples per row.
        det: deterministic ``u = linspace(0, 1, n_samples)`` instead of uniform random.
        eps: added to the weights (avoids NaN on all-zero rows).
        generator: random generator when ``det`` is False.

    Returns:
        ``(..., n_samples)`` float samples (not sorted when random).
    """
    check_shapes(bins=(bins, (..., None)), weights=(weights, (..., None)), dtype="float")
    if bins.shape[:-1] != weights.shape[:-1] or bins.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(f"bins must have shape (..., B + 1) for weights (..., B); got bins "
                         f"{tuple(bins.shape)} and weights {tuple(weights.shape)}")
    weights = weights + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    shape = list(cdf.shape[:-1]) + [n_samples]
    if det:
        u = torch.linspace(0.0, 1.0, n_samples, device=cdf.device, dtype=cdf.dtype).expand(shape).contiguous()
    else:
        u = torch.rand(shape, generator=generator, device=cdf.device, dtype=cdf.dtype)
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp(0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bins_lo, bins_hi = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    t = (u - cdf_lo) / denom
    return bins_lo + t * (bins_hi - bins_lo)


def sample_pdf_python(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, det: bool = False,
                      eps: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Slow per-row reference of ``sample_pdf`` (loops over rows; for tests)."""
    lead = bins.shape[:-1]
    b2, w2 = bins.reshape(-1, bins.shape[-1]), weights.reshape(-1, weights.shape[-1])
    if det:
        u = torch.linspace(0.0, 1.0, n_samples, dtype=bins.dtype, device=bins.device).expand(b2.shape[0], n_samples)
    else:
        u = torch.rand((b2.shape[0], n_samples), generator=generator, dtype=bins.dtype, device=bins.device)
    out = torch.empty_like(u)
    for r in range(b2.shape[0]):
        w = w2[r] + eps
        cdf = torch.cat([w.new_zeros(1), torch.cumsum(w / w.sum(), 0)])
        for s in range(n_samples):
            k = int((cdf <= u[r, s]).sum()) - 1
            k0, k1 = max(k, 0), min(k + 1, cdf.numel() - 1)
            den = cdf[k1] - cdf[k0]
            den = den if den >= eps else den.new_ones(())
            out[r, s] = b2[r, k0] + (u[r, s] - cdf[k0]) / den * (b2[r, k1] - b2[r, k0])
    return out.reshape(*lead, n_samples)


# ----------------------------------------------------------------------------------------------------
# Dense volumes
# ----------------------------------------------------------------------------------------------------
def _as_per_volume(value, n: int, ref: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a scalar / (3,) / (N, 3) / (N, 1) value to ``(N, 3)``."""
    v = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if v.ndim == 0:
        v = v.expand(3)
    if v.ndim == 1:
        if v.shape[0] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3); got {tuple(v.shape)}")
        v = v.expand(3)[None].expand(n, 3)
    elif v.ndim == 2:
        if v.shape[0] != n or v.shape[1] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3) with N={n}; got {tuple(v.shape)}")
        v = v.expand(n, 3)
    else:
        raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3); got {tuple(v.shape)}")
    return v


class Volumes:
    """A batch of dense volumes of the same size (PyTorch3D's ``Volumes``, padded representation).

    Coordinates:

    - local: ``grid_sample``'s normalised coordinates with ``align_corners=True``: (-1, -1, -1) and
      (1, 1, 1) are the centres of the corner voxels; x indexes W, y indexes H, z indexes D.
    - world: ``world = local * 0.5 * (size_xyz - 1) * voxel_size - volume_translation``
      with ``size_xyz = (W, H, D)``: the volume centre sits at ``-volume_translation``.

    Args:
        densities: ``(N, D_d, D, H, W)`` float (or a list of ``(D_d, D, H, W)`` of equal size).
        features: optional ``(N, C, D, H, W)`` float (or a list).
        voxel_size: scalar, ``(3,)`` or ``(N, 3)`` world size of a voxel along x, y, z.
        volume_translation: ``(3,)`` or ``(N, 3)``.
    """

    def __init__(self, densities, features=None, voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0)) -> None:
        if isinstance(densities, (list, tuple)):
            densities = torch.stack(list(densities))
        if isinstance(features, (list, tuple)):
            features = torch.stack(list(features))
        check_shape("densities", densities, ("N", None, "D", "H", "W"), dtype="float")
        if features is not None:
            sizes = check_shape("densities", densities, ("N", None, "D", "H", "W"))
            check_shape("features", features, ("N", None, "D", "H", "W"), sizes, dtype="float")
        self._densities = densities
        self._features = features
        n = densities.shape[0]
        self._voxel_size = _as_per_volume(voxel_size, n, densities, "voxel_size")
        self._volume_translation = _as_per_volume(volume_translation, n, densities, "volume_translation")

    def densities(self) -> torch.Tensor:
        """``(N, D_d, D, H, W)`` densities."""
        return self._densities

    def features(self) -> torch.Tensor | None:
        """``(N, C, D, H, W)`` features or ``None``."""
        return self._features

    def get_grid_sizes(self) -> torch.Tensor:
        """``(N, 3)`` long: ``(D, H, W)`` of each volume."""
        d, h, w = self._densities.shape[-3:]
        return torch.tensor([[d, h, w]], dtype=torch.long, device=self.device).expand(len(self), 3)

    @property
    def device(self) -> torch.device:
        return self._densities.device

    def __len__(self) -> int:
        return self._densities.shape[0]

    def __getitem__(self, index) -> Volumes:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        feats = None if self._features is None else self._features[index]
        return Volumes(self._densities[index], feats, self._voxel_size[index], self._volume_translation[index])

    def _scale(self) -> torch.Tensor:
        size_xyz = torch.tensor(self._densities.shape[-3:][::-1], dtype=self._densities.dtype, device=self.device)
        return 0.5 * (size_xyz - 1) * self._voxel_size  # (N, 3)

    def local_to_world_coords(self, points_3d_local: torch.Tensor) -> torch.Tensor:
        """Local ``(N, ..., 3)`` -> world ``(N, ..., 3)`` (see the class docstring)."""
        if points_3d_local.ndim < 2 or points_3d_local.shape[0] != len(self) or points_3d_local.shape[-1] != 3:
            raise ValueError(f"points_3d_local must have shape ({len(self)}, ..., 3), got "
                             f"{tuple(points_3d_local.shape)}")
        shape = (len(self),) + (1,) * (points_3d_local.ndim - 2) + (3,)
        return points_3d_local * self._scale().view(shape) - self._volume_translation.view(shape)

    def world_to_local_coords(self, points_3d_world: torch.Tensor) -> torch.Tensor:
        """World ``(N, ..., 3)`` -> local ``(N, ..., 3)`` (inverse of ``local_to_world_coords``)."""
        if points_3d_world.ndim < 2 or points_3d_world.shape[0] != len(self) or points_3d_world.shape[-1] != 3:
            raise ValueError(f"points_3d_world must have shape ({len(self)}, ..., 3), got "
                             f"{tuple(points_3d_world.shape)}")
        shape = (len(self),) + (1,) * (points_3d_world.ndim - 2) + (3,)
        return (points_3d_world + self._volume_translation.view(shape)) / self._scale().view(shape)

    def get_coord_grid(self, world_coordinates: bool = True) -> torch.Tensor:
        """``(N, D, H, W, 3)`` coordinates of the voxel centres (world or local)."""
        d, h, w = self._densities.shape[-3:]
        axes = [torch.linspace(-1.0, 1.0, r, dtype=self._densities.dtype, device=self.device) for r in (d, h, w)]
        Z, Y, X = torch.meshgrid(*axes, indexing="ij")
        local = torch.stack((X, Y, Z), dim=3)[None].expand(len(self), d, h, w, 3)
        return self.local_to_world_coords(local) if world_coordinates else local

    def get_local_to_world_coords_transform(self):
        """The local-to-world map as a ``lib3d.geometry.Transform3d`` (needs ``lib3d.geometry``)."""
        from lib3d.geometry import Scale, Translate
        return Scale(self._scale(), device=self.device).compose(
            Translate(-self._volume_translation, device=self.device))

    def get_voxel_size(self) -> torch.Tensor:
        return self._voxel_size

    def get_volume_translation(self) -> torch.Tensor:
        return self._volume_translation

    def update_padded(self, new_densities: torch.Tensor, new_features: torch.Tensor | None = None) -> Volumes:
        """A new ``Volumes`` with the same locator and new densities (and features)."""
        return Volumes(new_densities, new_features if new_features is not None else self._features,
                       self._voxel_size, self._volume_translation)

    def to(self, device) -> Volumes:
        f = None if self._features is None else self._features.to(device)
        return Volumes(self._densities.to(device), f, self._voxel_size.to(device),
                       self._volume_translation.to(device))

    def clone(self) -> Volumes:
        f = None if self._features is None else self._features.clone()
        return Volumes(self._densities.clone(), f, self._voxel_size.clone(), self._volume_translation.clone())

    def detach(self) -> Volumes:
        f = None if self._features is None else self._features.detach()
        return Volumes(self._densities.detach(), f, self._voxel_size, self._volume_translation)


def _expanded_single(x: torch.Tensor) -> bool:
    """True when a batched tensor is one tensor expanded along the batch (stride 0)."""
    return x.shape[0] > 1 and x.stride(0) == 0


def _shared_grid(volumes: Volumes, sample_mode: str, padding_mode: str
                 ) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor, torch.Tensor] | None:
    """One ``(C, D, H, W)`` grid (densities then features), its channel groups (``(D_d,)`` or
    ``(D_d, C_f)``) and the volumes' common ``(translation (3,), scale (3,))`` when every volume of the
    batch is the same; else None."""
    if sample_mode != "bilinear" or padding_mode != "zeros":
        return None
    dens, feats = volumes.densities(), volumes.features()
    grids = [g for g in (dens, feats) if g is not None]
    n = dens.shape[0]
    if n > 1:
        if not all(_expanded_single(g) for g in grids):
            return None
        if not bool((volumes._scale() == volumes._scale()[:1]).all()
                    and (volumes._volume_translation == volumes._volume_translation[:1]).all()):
            return None
    grid = torch.cat([g[0] for g in grids], dim=0) if len(grids) > 1 else grids[0][0]
    groups = tuple(g.shape[1] for g in grids)
    return grid, groups, volumes._volume_translation[0], volumes._scale()[0]


def _densities_features(groups: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    return groups[0], (groups[1] if len(groups) > 1 else None)


def sample_volume(volumes: Volumes, points_world: torch.Tensor, sample_mode: str = "bilinear",
                  padding_mode: str = "zeros") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the densities and features of ``volumes`` at world points.

    Args:
        volumes: ``N`` volumes.
        points_world: ``(N, ..., 3)`` float world points.
        sample_mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.
        padding_mode: ``grid_sample`` padding mode outside the volume.

    Returns:
        ``(densities (N, ..., D_d), features (N, ..., C) or None)``.

    When the points require grad (e.g. cameras optimised through the renderer) every volume is sampled
    with ``grid_sample`` so that the gradient reaches the points; otherwise one grid shared by the batch
    takes a fused fast path (``trilinear_sample``).
    """
    check_choice("sample_mode", sample_mode, ("bilinear", "nearest"))
    check_shape("points_world", points_world, (..., 3), dtype="float")
    local = volumes.world_to_local_coords(points_world)
    n = local.shape[0]
    lead = local.shape[:-1]
    shared = None if local.requires_grad else _shared_grid(volumes, sample_mode, padding_mode)
    if shared is not None:
        # One grid shared by the batch: one sampling call for densities and features together.
        grid, groups = shared[0], shared[1]
        vals = trilinear_sample(grid, local.reshape(-1, 3)).view(*lead, grid.shape[0])
        # split, not slices: its backward concatenates the gradients instead of zero-filling one per slice
        return _densities_features(torch.split(vals, list(groups), dim=-1))
    outs = []
    for grid in (volumes.densities(), volumes.features()):
        if grid is None:
            outs.append(None)
            continue
        vals = F.grid_sample(grid, local.reshape(n, -1, 1, 1, 3), mode=sample_mode, padding_mode=padding_mode,
                             align_corners=True)
        outs.append(vals.reshape(n, grid.shape[1], -1).permute(0, 2, 1).reshape(*lead, grid.shape[1]))
    return outs[0], outs[1]


class VolumeSampler(torch.nn.Module):
    """Samples a ``Volumes`` at the points of a ray bundle (PyTorch3D's ``VolumeSampler``).

    Args:
        volumes: the volumes (one per camera).
        sample_mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``grid_sample`` padding.

    Returns (forward(ray_bundle)):
        ``(rays_densities (N, ..., S, D_d), rays_features (N, ..., S, C))``.

    When every camera sees the same grid (one grid expanded along the batch, as the book's
    ``VolumeModel`` does) and the rays are constants, the grid is sampled along the rays without
    materialising the points (``sample_grid_along_rays``, compiled on CPU for large inputs); the outputs
    are then channel-first tensors seen as ``(N, ..., S, c)``. Otherwise the points go through
    ``sample_volume``.
    """

    def __init__(self, volumes: Volumes, sample_mode: str = "bilinear", padding_mode: str = "zeros") -> None:
        super().__init__()
        check_choice("sample_mode", sample_mode, ("bilinear", "nearest"))
        self._volumes = volumes
        self._sample_mode = sample_mode
        self._padding_mode = padding_mode

    def forward(self, ray_bundle: RayBundle, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = ray_bundle
        shared = None
        if not any(x.requires_grad for x in (b.origins, b.directions, b.lengths)):
            shared = _shared_grid(self._volumes, self._sample_mode, self._padding_mode)
        if shared is not None and b.origins.shape[0] == len(self._volumes):
            # one grid for the batch and constant rays: sample along the rays without materialising points
            grid, groups, translation, scale = shared
            S = b.lengths.shape[-1]
            _check_rays(b.origins, b.directions, b.lengths)
            vals = sample_grid_along_rays(grid, b.origins.reshape(-1, 3), b.directions.reshape(-1, 3),
                                          b.lengths.reshape(-1, S), translation, scale, groups)
            return _densities_features([v.view(*b.lengths.shape, v.shape[-1]) for v in vals])
        points = ray_bundle_to_ray_points(ray_bundle)
        return sample_volume(self._volumes, points, self._sample_mode, self._padding_mode)


# ----------------------------------------------------------------------------------------------------
# Ray marchers (PyTorch3D)
# ----------------------------------------------------------------------------------------------------
def _check_density_bounds(rays_densities: torch.Tensor, bounds=(0.0, 1.0)) -> None:
    if is_tracing():
        return
    if bool((rays_densities < bounds[0]).any()) or bool((rays_densities > bounds[1]).any()):
        raise ValueError(f"rays_densities must lie in [{bounds[0]}, {bounds[1]}], got values in "
                         f"[{float(rays_densities.min())}, {float(rays_densities.max())}]")


def _shifted_cumprod(x: torch.Tensor, shift: int = 1) -> torch.Tensor:
    cp = torch.cumprod(x, dim=-1)
    return torch.cat([torch.ones_like(cp[..., :shift]), cp[..., :-shift]], dim=-1)


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
    absorption = _shifted_cumprod((1.0 + eps) - d, shift=surface_thickness)
    weights = d * absorption
    features = (weights[..., None] * rays_features).sum(dim=-2)
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

    ``forward(cameras, volumes)`` returns ``(images (N, ..., C + 1), ray_bundle)``.
    """

    def __init__(self, raysampler: torch.nn.Module, raymarcher: torch.nn.Module, sample_mode: str = "bilinear") -> None:
        super().__init__()
        self.renderer = ImplicitRenderer(raysampler, raymarcher)
        self._sample_mode = sample_mode

    def forward(self, cameras, volumes: Volumes, **kwargs) -> tuple[torch.Tensor, RayBundle]:
        return self.renderer(cameras=cameras, volumetric_function=VolumeSampler(volumes, self._sample_mode), **kwargs)


# ----------------------------------------------------------------------------------------------------
# NeRF compositing (nerfacc style)
# ----------------------------------------------------------------------------------------------------
def render_weight_from_alpha(alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights from per-sample opacities: ``w_i = T_i alpha_i``, ``T_i = prod_{j<i} (1 - alpha_j)``.

    Args:
        alphas: ``(..., S)`` float in [0, 1].

    Returns:
        ``(weights (..., S), transmittance (..., S))``.
    """
    check_tensor("alphas", alphas, dtype="float")
    trans = torch.cumprod(torch.cat([torch.ones_like(alphas[..., :1]), 1.0 - alphas[..., :-1]], dim=-1), dim=-1)
    return trans * alphas, trans


def render_weight_from_density(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NeRF compositing weights from densities (Mildenhall et al. 2020, eq. 3).

    ``delta_i = t_end_i - t_start_i``, ``alpha_i = 1 - exp(-sigma_i delta_i)``,
    ``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i alpha_i``.

    Args:
        t_starts: ``(..., S)`` float interval starts (in units of the ray direction's length).
        t_ends: ``(..., S)`` float interval ends.
        sigmas: ``(..., S)`` float non-negative densities.

    Returns:
        ``(weights, transmittance, alphas)``, each ``(..., S)``.

    Example:
        >>> # one ray, two unit intervals, sigma = ln 2: alpha = 0.5, T = [1, 0.5], w = [0.5, 0.25]
        >>> render_weight_from_density(torch.tensor([0., 1.]), torch.tensor([1., 2.]), torch.tensor([0.6931, 0.6931]))
    """
    sizes = check_shapes(t_starts=(t_starts, (..., "S")), t_ends=(t_ends, (..., "S")), sigmas=(sigmas, (..., "S")),
                         dtype="float")
    del sizes
    if not (t_starts.shape == t_ends.shape == sigmas.shape):
        raise ValueError(f"t_starts {tuple(t_starts.shape)}, t_ends {tuple(t_ends.shape)} and sigmas "
                         f"{tuple(sigmas.shape)} must have the same shape")
    sd = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sd)
    acc = torch.cumsum(sd, dim=-1)
    trans = torch.exp(-torch.cat([torch.zeros_like(acc[..., :1]), acc[..., :-1]], dim=-1))
    return trans * alphas, trans, alphas


def accumulate_along_rays(weights: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i w_i v_i`` along the samples of each ray.

    Args:
        weights: ``(..., S)`` float.
        values: ``(..., S, C)`` float, or ``None`` to accumulate the weights themselves (opacity).

    Returns:
        ``(..., C)`` (or ``(..., 1)`` when ``values`` is None).
    """
    check_tensor("weights", weights, dtype="float")
    if values is None:
        return weights.sum(dim=-1, keepdim=True)
    check_shape("values", values, (..., None), dtype="float")
    if values.shape[:-1] != weights.shape:
        raise ValueError(f"values must have shape {tuple(weights.shape)} + (C,), got {tuple(values.shape)}")
    return (weights[..., None] * values).sum(dim=-2)


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


def stratified_lengths(near: torch.Tensor | float, far: torch.Tensor | float, n_samples: int, shape: Sequence[int],
                       stratified: bool = True, generator: torch.Generator | None = None,
                       device=None, dtype=torch.float32) -> torch.Tensor:
    """Sample depths uniformly (or stratified-uniformly) in ``[near, far]`` per ray.

    ``t_s = near + (far - near) * (s + u_s) / S`` with ``u_s ~ U[0, 1)`` (``u_s = 0.5`` when not
    stratified).

    Args:
        near, far: floats or ``(...)`` tensors broadcastable to ``shape``.
        n_samples: ``S``.
        shape: leading ray shape ``(...)``.
        stratified: random offsets within each bin.
        generator: random generator.
        device, dtype: of the output.

    Returns:
        ``(..., S)`` float sorted depths.
    """
    shape = tuple(shape)
    if stratified:
        u = torch.rand(shape + (n_samples,), generator=generator, device=device, dtype=dtype)
    else:
        u = torch.full(shape + (n_samples,), 0.5, device=device, dtype=dtype)
    s = (torch.arange(n_samples, device=device, dtype=dtype) + u) / n_samples
    near = torch.as_tensor(near, device=device, dtype=dtype)
    far = torch.as_tensor(far, device=device, dtype=dtype)
    near = near[..., None] if near.ndim else near
    far = far[..., None] if far.ndim else far
    return near + (far - near) * s


def ray_aabb_intersect(origins: torch.Tensor, directions: torch.Tensor, aabb_min, aabb_max
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab intersection of rays with an axis-aligned box.

    Args:
        origins: ``(..., 3)`` float.
        directions: ``(..., 3)`` float.
        aabb_min, aabb_max: ``(3,)`` box corners (sequences or tensors).

    Returns:
        ``(t_near (...), t_far (...), hit (...) bool)`` in units of ``|directions|``; ``t_near`` is
        clamped at 0 (origins inside the box).
    """
    check_shapes(origins=(origins, (..., 3)), directions=(directions, (..., 3)), dtype="float")
    lo = torch.as_tensor(aabb_min, dtype=origins.dtype, device=origins.device)
    hi = torch.as_tensor(aabb_max, dtype=origins.dtype, device=origins.device)
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    inv = 1.0 / safe
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far, t_far > t_near


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
