"""Voxel-grid fields: the book's chapter-5 volume and the fast grid radiance field (names in ``lib3d.fields``).

The fast field (``GridRadianceField`` + ``render_grid_field``) follows DVGO (Sun et al. 2022, "Direct Voxel
Grid Optimization"): a dense density grid, a low-resolution feature grid decoded by a tiny MLP with the
view direction, and a renderer that only evaluates what matters:

1. each ray is clipped to the grid's box and marched with a fixed metric step (jittered per ray);
2. samples in voxels the boolean occupancy grid marks empty are dropped (empty-space skipping; the
   occupancy starts from the visual hull of the silhouettes and is pruned from the density as it trains);
3. densities are interpolated trilinearly at the remaining samples and composited per ray in packed form
   (``alpha_i = 1 - exp(-sigma_i delta)``, ``T_i = exp(-sum_{j<i} sigma_j delta)``, ``w_i = T_i alpha_i``);
4. colours are computed only where ``w_i`` exceeds a threshold (early ray termination: samples behind
   the surface have ``T_i ~ 0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes
from lib3d.fields.encodings import harmonic_embedding
from lib3d.render.trilinear import trilinear_sample
from lib3d.render.volumetric import Volumes, ray_aabb_intersect

__all__ = [
    "GridRadianceField",
    "GridRenderOutput",
    "VolumeModel",
    "grid_color",
    "grid_density",
    "render_grid_field",
    "render_volume_model",
    "update_occupancy",
    "upsample_grid_field",
    "world_to_grid",
]


# ----------------------------------------------------------------------------------------------------
# The book's chapter-5 volume
# ----------------------------------------------------------------------------------------------------
def render_volume_model(renderer, cameras, log_densities: torch.Tensor, log_colors: torch.Tensor,
                        voxel_size: float) -> torch.Tensor:
    """Render the book's ``VolumeModel``: ``Volumes(sigmoid(log_densities), sigmoid(log_colors))``.

    Args:
        renderer: a ``VolumeRenderer``.
        cameras: ``N`` cameras.
        log_densities: ``(1, D, H, W)`` float logits of the densities (in [0, 1] after the sigmoid).
        log_colors: ``(3, D, H, W)`` float logits of the colours.
        voxel_size: world size of a voxel.

    Returns:
        ``(N, H_img, W_img, 4)`` images: RGB then opacity.
    """
    n = cameras.R.shape[0]
    densities = torch.sigmoid(log_densities)
    colors = torch.sigmoid(log_colors)
    volumes = Volumes(densities=densities[None].expand(n, *log_densities.shape),
                      features=colors[None].expand(n, *log_colors.shape), voxel_size=voxel_size)
    return renderer(cameras=cameras, volumes=volumes)[0]


class VolumeModel(torch.nn.Module):
    """The book's chapter-5 ``VolumeModel``: a dense grid of density and colour logits.

    ``log_densities`` start at -4 (density ``sigmoid(-4) = 0.018``), ``log_colors`` at 0 (grey).

    Args:
        renderer: a ``VolumeRenderer`` (ray sampler + ``EmissionAbsorptionRaymarcher``).
        volume_size: ``(D, H, W)``.
        voxel_size: world size of a voxel.

    ``forward(cameras) -> (N, H, W, 4)`` (see ``render_volume_model``).
    """

    def __init__(self, renderer, volume_size: Sequence[int] = (64, 64, 64), voxel_size: float = 0.1) -> None:
        super().__init__()
        self.log_densities = torch.nn.Parameter(-4.0 * torch.ones(1, *volume_size))
        self.log_colors = torch.nn.Parameter(torch.zeros(3, *volume_size))
        self._voxel_size = voxel_size
        self._renderer = renderer

    def forward(self, cameras) -> torch.Tensor:
        return render_volume_model(self._renderer, cameras, self.log_densities, self.log_colors, self._voxel_size)


# ----------------------------------------------------------------------------------------------------
# The fast grid radiance field
# ----------------------------------------------------------------------------------------------------
def _shift_for_alpha(alpha_init: float, step: float) -> float:
    """Density offset so that ``1 - exp(-softplus(0 + shift) * step) = alpha_init``."""
    return math.log(math.expm1(-math.log1p(-alpha_init) / step))


class GridRadianceField(torch.nn.Module):
    """DVGO-style field: density grid + feature grid + a tiny view-dependent MLP.

    ``sigma(x) = softplus(trilinear(density, x) + shift)``; ``rgb(x, d) = sigmoid(MLP([trilinear(features,
    x), gamma_L(d)]))``, or ``sigmoid(trilinear(features, x))`` when ``hidden == 0`` (then 3 features).

    Args:
        aabb: ``((x0, y0, z0), (x1, y1, z1))`` world box of the grids.
        density_res: ``(D, H, W)`` density (and occupancy) grid size.
        color_res: ``(D, H, W)`` feature grid size.
        n_features: ``C`` feature channels.
        hidden: MLP width (0: no MLP, direct RGB).
        n_dir_freqs: harmonic frequencies of the view direction.
        alpha_init: initial per-step opacity (sets ``shift``).
        step: the ray-marching step the ``alpha_init`` refers to.
        occupancy: optional ``(D, H, W)`` bool grid (True = may hold matter).

    ``forward(points (..., 3), dirs (..., 3)) -> (rgb (..., 3), sigma (...))`` is a dense field callback.
    """

    def __init__(self, aabb, density_res: Sequence[int], color_res: Sequence[int], n_features: int = 12,
                 hidden: int = 64, n_dir_freqs: int = 4, alpha_init: float = 1e-2, step: float = 0.01,
                 occupancy: torch.Tensor | None = None, shift: float | None = None) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        if not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must be ((x0, y0, z0), (x1, y1, z1)) with x1 > x0 ..., got {aabb.tolist()}")
        if hidden == 0 and n_features != 3:
            raise ValueError(f"n_features must be 3 when hidden == 0 (direct RGB), got {n_features}")
        self.register_buffer("aabb", aabb)
        self.shift = float(_shift_for_alpha(alpha_init, step) if shift is None else shift)
        self.density = torch.nn.Parameter(torch.zeros(1, *density_res))
        self.features = torch.nn.Parameter(torch.zeros(n_features, *color_res))
        if occupancy is None:
            occupancy = torch.ones(*density_res, dtype=torch.bool)
        check_shape("occupancy", occupancy, tuple(int(r) for r in density_res))
        self.register_buffer("occupancy", occupancy.bool())
        self.hidden = hidden
        self.n_dir_freqs = n_dir_freqs
        if hidden > 0:
            with torch.no_grad():
                self.features.uniform_(-0.1, 0.1)
            dir_dim = 3 * (2 * n_dir_freqs + 1)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(n_features + dir_dim, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 3))
            with torch.no_grad():
                self.mlp[-1].weight.zero_()
                self.mlp[-1].bias.zero_()
        else:
            self.mlp = None
        self.register_buffer("_freqs", 2.0 ** torch.arange(n_dir_freqs, dtype=torch.float32), persistent=False)

    def forward(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = points.shape[:-1]
        p = points.reshape(-1, 3)
        sigma = grid_density(self, p)
        rgb = grid_color(self, p, dirs.reshape(-1, 3))
        return rgb.view(*lead, 3), sigma.view(lead)


def world_to_grid(points: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """World ``(P, 3)`` -> grid-local ``[-1, 1]`` coordinates (``aabb[0]`` -> -1: the first voxel centre)."""
    return (points - aabb[0]) * (2.0 / (aabb[1] - aabb[0])) - 1.0


def grid_density(field: GridRadianceField, points: torch.Tensor) -> torch.Tensor:
    """``sigma = softplus(trilinear(density, x) + shift)`` at ``(P, 3)`` world points -> ``(P,)``."""
    raw = trilinear_sample(field.density, world_to_grid(points, field.aabb))[:, 0]
    return F.softplus(raw + field.shift)


def grid_color(field: GridRadianceField, points: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colours ``(P, 3)`` in [0, 1] at ``(P, 3)`` world points seen along ``(P, 3)`` directions."""
    feat = trilinear_sample(field.features, world_to_grid(points, field.aabb))
    if field.mlp is None:
        return torch.sigmoid(feat)
    d = harmonic_embedding(F.normalize(dirs, dim=-1), field._freqs.to(points.dtype), True)
    return torch.sigmoid(field.mlp(torch.cat([feat, d], dim=-1)))


class GridRenderOutput(NamedTuple):
    """Per-ray results of ``render_grid_field``.

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


def render_grid_field(field: GridRadianceField, origins: torch.Tensor, directions: torch.Tensor, step: float,
                      stratified: bool = False, generator: torch.Generator | None = None,
                      background: torch.Tensor | float | None = None, color_threshold: float = 1e-4,
                      use_occupancy: bool = True) -> GridRenderOutput:
    """Render rays through a ``GridRadianceField`` with empty-space skipping and early termination.

    See the module docstring for the algorithm. Samples are ``t_k = t_near + (k + u) * step`` (metric,
    ``u = 0.5`` or uniform per ray when ``stratified``) inside the grid's box.

    Args:
        field: the field.
        origins: ``(R, 3)`` float.
        directions: ``(R, 3)`` float (any length; depths are reported in its units).
        step: metric marching step (about half a voxel).
        stratified: random per-ray offset of the samples (training).
        generator: random generator.
        background: optional background colour (float or ``(3,)``).
        color_threshold: colours are evaluated only where ``w_i > color_threshold`` (0: everywhere).
        use_occupancy: skip samples in empty voxels.

    Returns:
        ``GridRenderOutput``.
    """
    sizes = check_shapes(origins=(origins, ("R", 3)), directions=(directions, ("R", 3)), dtype="float")
    R = sizes["R"]
    dev, dt = origins.device, origins.dtype
    scale = directions.norm(dim=-1)
    d = directions / scale[:, None]
    aabb = field.aabb.to(dt)
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
    if use_occupancy:
        occ = field.occupancy
        res = torch.tensor(occ.shape[::-1], device=dev, dtype=dt)  # (W, H, D) for (x, y, z)
        ijk = ((world_to_grid(pts, aabb) + 1) * 0.5 * (res - 1)).round().long()
        ijk = torch.minimum(ijk.clamp_min(0), (res - 1).long())
        flat = (ijk[:, 2] * occ.shape[1] + ijk[:, 1]) * occ.shape[2] + ijk[:, 0]
        keep = keep & occ.reshape(-1)[flat]
    idx = keep.nonzero().squeeze(1)
    ray_ids, t, pts = ray_ids[idx], t[idx], pts[idx]
    sigma = grid_density(field, pts)
    sd = sigma * step
    # Exclusive cumulative sum per ray on packed samples (float64: the global sum is large).
    sd64 = sd.double()
    cs = torch.cumsum(sd64, 0) - sd64
    counts = torch.bincount(ray_ids, minlength=R)
    first_kept = (torch.cumsum(counts, 0) - counts).clamp(max=max(cs.shape[0] - 1, 0))
    base = cs[first_kept][ray_ids] if cs.shape[0] > 0 else cs
    trans = torch.exp(-(cs - base)).to(dt)
    alpha = 1.0 - torch.exp(-sd)
    w = trans * alpha
    sel = (w > color_threshold).nonzero().squeeze(1) if color_threshold > 0 else torch.arange(w.shape[0], device=dev)
    rgb_s = grid_color(field, pts[sel], d[ray_ids[sel]])
    rgb = torch.zeros(R, 3, device=dev, dtype=dt).index_add(0, ray_ids[sel], w[sel, None] * rgb_s)
    opacity = torch.zeros(R, device=dev, dtype=dt).index_add(0, ray_ids, w)[:, None]
    depth = torch.zeros(R, device=dev, dtype=dt).index_add(0, ray_ids, w * t)[:, None] / scale[:, None]
    if background is not None:
        bg = torch.as_tensor(background, dtype=dt, device=dev)
        rgb = rgb + (1.0 - opacity) * bg
    return GridRenderOutput(rgb, opacity, depth, int(idx.shape[0]), int(sel.shape[0]))


@torch.no_grad()
def update_occupancy(field: GridRadianceField, step: float, alpha_threshold: float = 1e-3,
                     dilation: int = 1) -> torch.Tensor:
    """Prune the occupancy grid: keep voxels whose (dilated) per-step opacity exceeds the threshold.

    ``occupancy &= maxpool_{2 dilation + 1}(1 - exp(-softplus(density + shift) * step)) > alpha_threshold``.

    Args:
        field: the field (its ``occupancy`` buffer is replaced in place: the one mutation of training
            state, like an optimizer step).
        step: marching step.
        alpha_threshold: opacity under which a voxel is empty.
        dilation: voxels of safety margin.

    Returns:
        the new ``(D, H, W)`` bool occupancy.
    """
    alpha = 1.0 - torch.exp(-F.softplus(field.density + field.shift) * step)
    if dilation > 0:
        alpha = F.max_pool3d(alpha[None], 2 * dilation + 1, stride=1, padding=dilation)[0]
    occ = field.occupancy & (alpha[0] > alpha_threshold)
    field.occupancy.copy_(occ)
    return occ


def upsample_grid_field(field: GridRadianceField, density_res: Sequence[int], color_res: Sequence[int]
                        ) -> GridRadianceField:
    """A new field with grids resampled trilinearly (``align_corners=True``) to new sizes (coarse-to-fine).

    The occupancy is resampled by nearest neighbour and dilated by one voxel; the MLP is copied.
    """
    new = GridRadianceField(field.aabb, density_res, color_res, field.features.shape[0], field.hidden,
                            field.n_dir_freqs, shift=field.shift)
    new = new.to(field.density.device)
    with torch.no_grad():
        new.density.copy_(F.interpolate(field.density[None], size=tuple(density_res), mode="trilinear",
                                        align_corners=True)[0])
        new.features.copy_(F.interpolate(field.features[None], size=tuple(color_res), mode="trilinear",
                                         align_corners=True)[0])
        occ = F.max_pool3d(field.occupancy[None, None].float(), 3, stride=1, padding=1)
        occ = F.interpolate(occ, size=tuple(density_res), mode="nearest")[0, 0] > 0.5
        new.occupancy.copy_(occ)
        if field.mlp is not None:
            new.mlp.load_state_dict(field.mlp.state_dict())
    return new
