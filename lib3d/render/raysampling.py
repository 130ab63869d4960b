"""Ray bundles and ray samplers (PyTorch3D's ``pytorch3d.renderer.implicit.raysampling`` semantics).

``RayBundle``, ``NDCMultinomialRaysampler`` (alias ``NDCGridRaysampler``), ``MultinomialRaysampler``,
``MonteCarloRaysampler``, ``ray_bundle_to_ray_points``, ``sample_images_at_mc_locs``, NeRF's hierarchical
``sample_pdf``, and the depth helpers of NeRF-style renderers (``stratified_lengths``,
``ray_aabb_intersect``, ``image_rays``).

Dimension names used below:

- ``N``: batch (one entry per camera);
- ``...``: the spatial shape of the rays of one camera (``(H, W)`` for full images, ``(R,)`` for
  ``R`` random rays);
- ``S``: samples (points) per ray (PyTorch3D's ``n_pts_per_ray``); ``B``: bins of a PDF.

Conventions (PyTorch3D's): rays are generated in NDC, +X left and +Y up, the shorter image side spanning
[-1, 1]; ``directions`` are not normalised by default (their view-space z is 1, so ``lengths`` are
view-space depths); ray points are ``origins + lengths * directions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, check_tensor

__all__ = [
    "GridRaysampler",
    "HeterogeneousRayBundle",
    "MonteCarloRaysampler",
    "MultinomialRaysampler",
    "NDCGridRaysampler",
    "NDCMultinomialRaysampler",
    "RayBundle",
    "image_rays",
    "jiggle_within_stratas",
    "ray_aabb_intersect",
    "ray_bundle_to_ray_points",
    "ray_bundle_variables_to_ray_points",
    "sample_images_at_mc_locs",
    "sample_pdf",
    "sample_pdf_python",
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


class HeterogeneousRayBundle(NamedTuple):
    """Rays drawn over a whole batch of cameras (PyTorch3D's ``HeterogeneousRayBundle``).

    Returned by the raysamplers when ``n_rays_total`` is set: ``R_total`` rays packed along the batch
    dimension, camera by camera; the rays of camera ``camera_ids[j]`` are ``camera_counts[j]`` consecutive
    rows (in the order of ``camera_ids``).

    Attributes:
        origins: ``(R_total, ..., 3)`` float (``...`` is ``(1,)`` for ``MonteCarloRaysampler``, ``(1, 1)``
            for ``MultinomialRaysampler``).
        directions: ``(R_total, ..., 3)`` float.
        lengths: ``(R_total, ..., S)`` float.
        xys: ``(R_total, ..., 2)`` float NDC locations.
        camera_ids: ``(M,)`` long, the sorted distinct cameras drawn (indices into the batch), or None.
        camera_counts: ``(M,)`` long, how many rays each of them has (sum ``R_total``), or None.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    lengths: torch.Tensor
    xys: torch.Tensor
    camera_ids: torch.Tensor | None = None
    camera_counts: torch.Tensor | None = None


def _sample_cameras(n_rays_total: int, n_cameras: int, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n_rays_total`` cameras uniformly with replacement -> ``(distinct ids (M,), counts (M,))``."""
    if not isinstance(n_rays_total, int) or isinstance(n_rays_total, bool) or n_rays_total < 1:
        raise ValueError(f"n_rays_total must be a positive int, got {n_rays_total!r}")
    if n_cameras < 1:
        raise ValueError("n_rays_total needs at least one camera")
    device = generator.device if generator is not None else torch.device("cpu")
    ids = torch.randint(0, n_cameras, (n_rays_total,), generator=generator, device=device)
    return torch.unique(ids, return_counts=True)


def _pack_ray_bundle(bundle: RayBundle, camera_ids: torch.Tensor, camera_counts: torch.Tensor
                     ) -> HeterogeneousRayBundle:
    """Keep the first ``camera_counts[j]`` rays of row ``j`` of a ``(M, R, ...)`` bundle, packed to
    ``(sum counts, 1, ...)``."""
    r = bundle.origins.shape[1]
    keep = torch.arange(r, device=bundle.origins.device)[None] < camera_counts.to(bundle.origins.device)[:, None]

    def pack(x: torch.Tensor) -> torch.Tensor:
        return x[keep][:, None]  # boolean (M, R) mask: rows in camera order, rays in drawing order

    return HeterogeneousRayBundle(pack(bundle.origins), pack(bundle.directions), pack(bundle.lengths),
                                  pack(bundle.xys), camera_ids, camera_counts)


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
    """Per row: ``n`` draws without replacement when the row has at least ``n`` non-zero weights, else with
    replacement (PyTorch3D's ``_safe_multinomial``; a zero weight is never drawn)."""
    short = (weights > 0).sum(dim=-1) < n  # (B,) rows that cannot be drawn without replacement
    if not bool(short.any()):
        return torch.multinomial(weights, n, replacement=False, generator=generator)
    out = torch.multinomial(weights, n, replacement=True, generator=generator)
    if not bool(short.all()):
        out[~short] = torch.multinomial(weights[~short], n, replacement=False, generator=generator)
    return out


class MultinomialRaysampler(torch.nn.Module):
    """Rays through a regular grid of image points (PyTorch3D's ``MultinomialRaysampler``).

    The grid has ``image_height x image_width`` points spanning ``[min_x, max_x] x [min_y, max_y]``
    (``torch.linspace``); with ``n_rays_per_image`` set, that many grid points are drawn per camera
    (uniformly, or proportionally to ``mask``, without replacement when enough points have a non-zero
    weight); with ``n_rays_total`` set, that many rays are drawn over the whole batch: ``n_rays_total``
    cameras are drawn uniformly with replacement and one grid point for each draw (distinct points within a
    camera), returned as a ``HeterogeneousRayBundle``.

    Args:
        min_x, max_x, min_y, max_y: NDC extent of the grid (centres of the border pixels).
        image_width, image_height: grid size ``W``, ``H``.
        n_pts_per_ray: ``S``.
        min_depth, max_depth: depth range.
        n_rays_per_image: optional number of grid rays drawn per camera.
        n_rays_total: optional number of rays drawn over the batch (not with ``n_rays_per_image``).
        unit_directions: normalise the directions.
        stratified_sampling: jitter depths within their strata.

    Example:
        >>> raysampler = NDCMultinomialRaysampler(image_width=128, image_height=128, n_pts_per_ray=150,
        ...                                       min_depth=0.1, max_depth=3.0)
        >>> bundle = raysampler(cameras)   # origins (N, 128, 128, 3), lengths (N, 128, 128, 150)
    """

    def __init__(self, *, min_x: float, max_x: float, min_y: float, max_y: float, image_width: int,
                 image_height: int, n_pts_per_ray: int, min_depth: float, max_depth: float,
                 n_rays_per_image: int | None = None, n_rays_total: int | None = None,
                 unit_directions: bool = False, stratified_sampling: bool = False) -> None:
        super().__init__()
        self._n_pts_per_ray = int(n_pts_per_ray)
        self._min_depth, self._max_depth = float(min_depth), float(max_depth)
        self._n_rays_per_image = n_rays_per_image
        self._n_rays_total = n_rays_total
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling
        self.min_x, self.max_x, self.min_y, self.max_y = min_x, max_x, min_y, max_y
        ys = torch.linspace(min_y, max_y, image_height, dtype=torch.float32)
        xs = torch.linspace(min_x, max_x, image_width, dtype=torch.float32)
        Y, X = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("_xy_grid", torch.stack((X, Y), dim=-1), persistent=False)

    def forward(self, cameras, *, mask: torch.Tensor | None = None, min_depth: float | None = None,
                max_depth: float | None = None, n_rays_per_image: int | None = None,
                n_pts_per_ray: int | None = None, stratified_sampling: bool | None = None,
                n_rays_total: int | None = None, generator: torch.Generator | None = None,
                **kwargs) -> RayBundle | HeterogeneousRayBundle:
        """Sample rays for a batch of ``N`` cameras.

        Args:
            cameras: ``N`` cameras (``unproject_points``, ``R``, indexable by a long tensor).
            mask: optional ``(N, H, W)`` sampling weights for ``n_rays_per_image`` / ``n_rays_total`` draws.
            min_depth, max_depth, n_rays_per_image, n_pts_per_ray, stratified_sampling, n_rays_total:
                overrides of the constructor's values.
            generator: random generator (camera draws, ray draws and jitter).

        Returns:
            ``RayBundle``: origins/directions ``(N, H, W, 3)``, lengths ``(N, H, W, S)``, xys
            ``(N, H, W, 2)``; with ``n_rays_per_image = R`` (or a mask: the smallest mask's count) the
            spatial shape is ``(R, 1)``. With ``n_rays_total = R_total``: a ``HeterogeneousRayBundle`` of
            spatial shape ``(1, 1)`` and batch ``R_total``.

        Raises:
            ValueError: both ``n_rays_per_image`` and ``n_rays_total`` set (here or in the constructor).
        """
        n_rays_total = n_rays_total or self._n_rays_total
        n_rays_per_image = n_rays_per_image or self._n_rays_per_image
        if n_rays_total is not None and n_rays_per_image is not None:
            raise ValueError("n_rays_total and n_rays_per_image cannot both be set, got "
                             f"{n_rays_total} and {n_rays_per_image}")
        camera_ids = camera_counts = None
        if n_rays_total:
            camera_ids, camera_counts = _sample_cameras(n_rays_total, len(cameras), generator)
            cameras = cameras[camera_ids]
            if mask is not None:
                mask = mask[camera_ids.to(mask.device)]
            n_rays_per_image = int(camera_counts.max())
        batch_size = cameras.R.shape[0]
        device = cameras.R.device
        xy_grid = self._xy_grid.to(device).expand(batch_size, *self._xy_grid.shape)
        if mask is not None and n_rays_per_image is None:
            n_rays_per_image = int(mask.sum(dim=(1, 2)).min().item())
        if n_rays_per_image is not None:
            num_rays = xy_grid.shape[1] * xy_grid.shape[2]
            if mask is not None:
                check_shape("mask", mask, (batch_size, xy_grid.shape[1], xy_grid.shape[2]))
                weights = mask.reshape(batch_size, num_rays).to(xy_grid.dtype)
            else:
                weights = xy_grid.new_ones(batch_size, num_rays)
            rays_idx = _safe_multinomial(weights, n_rays_per_image, generator)[..., None].expand(-1, -1, 2)
            xy_grid = torch.gather(xy_grid.reshape(batch_size, num_rays, 2), 1, rays_idx)[:, :, None]
        bundle = xy_to_ray_bundle(
            cameras, xy_grid,
            self._min_depth if min_depth is None else min_depth,
            self._max_depth if max_depth is None else max_depth,
            self._n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray,
            self._unit_directions,
            self._stratified_sampling if stratified_sampling is None else stratified_sampling,
            generator=generator)
        return bundle if camera_ids is None else _pack_ray_bundle(bundle, camera_ids, camera_counts)


class NDCMultinomialRaysampler(MultinomialRaysampler):
    """Rays through every pixel centre of an ``H x W`` image in PyTorch3D's NDC convention.

    The shorter side spans [-1, 1] and the longer ``[-W/H, W/H]`` (or ``H/W``); pixel ``[i, j]`` (row
    0 at the top, column 0 at the left) looks through NDC ``x = r_x - (2 j + 1) r_x / W``,
    ``y = r_y - (2 i + 1) r_y / H`` (+X left, +Y up), so ``images[n, i, j]`` matches ``xys[n, i, j]``.

    Args:
        image_width, image_height: ``W``, ``H``.
        n_pts_per_ray, min_depth, max_depth, n_rays_per_image, n_rays_total, unit_directions,
            stratified_sampling: as ``MultinomialRaysampler``.
    """

    def __init__(self, *, image_width: int, image_height: int, n_pts_per_ray: int, min_depth: float,
                 max_depth: float, n_rays_per_image: int | None = None, n_rays_total: int | None = None,
                 unit_directions: bool = False, stratified_sampling: bool = False) -> None:
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
                         n_rays_total=n_rays_total, unit_directions=unit_directions,
                         stratified_sampling=stratified_sampling)


GridRaysampler = MultinomialRaysampler
NDCGridRaysampler = NDCMultinomialRaysampler


class MonteCarloRaysampler(torch.nn.Module):
    """Rays through uniformly random image points (PyTorch3D's ``MonteCarloRaysampler``).

    Exactly one of ``n_rays_per_image`` (``R`` rays per camera) and ``n_rays_total`` (``R_total`` rays over
    the batch: ``R_total`` cameras drawn uniformly with replacement, one random point per draw) is set.

    Args:
        min_x, max_x, min_y, max_y: NDC rectangle to draw from.
        n_rays_per_image: ``R`` rays per camera, or None with ``n_rays_total``.
        n_pts_per_ray: ``S``.
        min_depth, max_depth: depth range.
        unit_directions: normalise directions.
        stratified_sampling: jitter depths within their strata.
        n_rays_total: ``R_total`` rays over the batch (keyword only), or None.

    Returns (forward):
        ``RayBundle`` with origins/directions ``(N, R, 3)``, lengths ``(N, R, S)``, xys ``(N, R, 2)``; with
        ``n_rays_total``: a ``HeterogeneousRayBundle`` with origins ``(R_total, 1, 3)``, ...

    Raises:
        ValueError (forward): not exactly one of ``n_rays_per_image`` and ``n_rays_total`` set.
    """

    def __init__(self, min_x: float, max_x: float, min_y: float, max_y: float, n_rays_per_image: int | None,
                 n_pts_per_ray: int, min_depth: float, max_depth: float, unit_directions: bool = False,
                 stratified_sampling: bool = False, *, n_rays_total: int | None = None) -> None:
        super().__init__()
        self._min_x, self._max_x, self._min_y, self._max_y = min_x, max_x, min_y, max_y
        self._n_rays_per_image = n_rays_per_image
        self._n_rays_total = n_rays_total
        self._n_pts_per_ray = n_pts_per_ray
        self._min_depth, self._max_depth = min_depth, max_depth
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling

    def forward(self, cameras, *, stratified_sampling: bool | None = None,
                generator: torch.Generator | None = None, **kwargs) -> RayBundle | HeterogeneousRayBundle:
        """Draw the rays (see the class docstring); ``generator`` drives every draw."""
        if (self._n_rays_total is None) == (self._n_rays_per_image is None):
            raise ValueError("exactly one of n_rays_per_image and n_rays_total must be set, got "
                             f"{self._n_rays_per_image} and {self._n_rays_total}")
        camera_ids = camera_counts = None
        n_rays = self._n_rays_per_image
        if self._n_rays_total is not None:
            camera_ids, camera_counts = _sample_cameras(self._n_rays_total, len(cameras), generator)
            cameras = cameras[camera_ids]
            n_rays = int(camera_counts.max())
        batch_size = cameras.R.shape[0]
        device = cameras.R.device
        u = torch.rand((batch_size, n_rays, 2), generator=generator, dtype=torch.float32, device=device)
        lo = torch.tensor([self._min_x, self._min_y], dtype=torch.float32, device=device)
        hi = torch.tensor([self._max_x, self._max_y], dtype=torch.float32, device=device)
        rays_xy = u * (hi - lo) + lo
        bundle = xy_to_ray_bundle(cameras, rays_xy, self._min_depth, self._max_depth, self._n_pts_per_ray,
                                  self._unit_directions,
                                  self._stratified_sampling if stratified_sampling is None else stratified_sampling,
                                  generator=generator)
        return bundle if camera_ids is None else _pack_ray_bundle(bundle, camera_ids, camera_counts)


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
# Depths along rays
# ----------------------------------------------------------------------------------------------------
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



def image_rays(cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre of every camera (``NDCMultinomialRaysampler``'s grid and conventions).

    Args:
        cameras: ``N`` cameras.
        height, width: image size ``H``, ``W``.

    Returns:
        ``(origins (N, H, W, 3), directions (N, H, W, 3))``: pixel ``[n, i, j]`` of an image rendered by
        ``NDCMultinomialRaysampler`` is seen along ``directions[n, i, j]`` (view-space z of the directions is
        1 for perspective cameras).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    rs = NDCMultinomialRaysampler(image_width=width, image_height=height, n_pts_per_ray=0, min_depth=0.1,
                                  max_depth=1.0)
    b = rs(cameras)
    return b.origins, b.directions
