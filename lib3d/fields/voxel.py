"""Voxel-grid fields: the book's chapter-5 volume and the fast grid radiance field (names in ``lib3d.fields``).

The fast field (``GridRadianceField`` + ``render_grid_field``) follows DVGO (Sun et al. 2022, "Direct Voxel
Grid Optimization"): a dense density grid, a low-resolution feature grid decoded by a tiny MLP with the
view direction, rendered by ``lib3d.render.render_rays_in_box`` with the field's density and colour as
callbacks: rays clipped to the grid's box and marched with a fixed metric step, samples in voxels the
boolean occupancy grid marks empty dropped (the occupancy starts from the visual hull of the silhouettes,
``lib3d.fields.occupancy``, and is pruned from the density as it trains), packed NeRF compositing, colours
only where the weight exceeds a threshold (early ray termination).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape
from lib3d.fields.encodings import harmonic_embedding
from lib3d.render.raymarching import PackedRenderOutput, render_rays_in_box
from lib3d.render.trilinear import trilinear_sample
from lib3d.render.volumes import Volumes

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

    The one grid is shared by the batch (``Volumes.from_shared_grid``): sampled once along all the rays.

    Args:
        renderer: a ``VolumeRenderer``.
        cameras: ``N`` cameras.
        log_densities: ``(1, D, H, W)`` float logits of the densities (in [0, 1] after the sigmoid).
        log_colors: ``(3, D, H, W)`` float logits of the colours.
        voxel_size: world size of a voxel.

    Returns:
        ``(N, H_img, W_img, 4)`` images: RGB then opacity.
    """
    volumes = Volumes.from_shared_grid(torch.sigmoid(log_densities), torch.sigmoid(log_colors),
                                       batch_size=cameras.R.shape[0], voxel_size=voxel_size)
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


GridRenderOutput = PackedRenderOutput
"""Per-ray results of ``render_grid_field`` (``lib3d.render.PackedRenderOutput``: rgb, opacity, depth,
num_samples, num_color_samples)."""


def render_grid_field(field: GridRadianceField, origins: torch.Tensor, directions: torch.Tensor, step: float,
                      stratified: bool = False, generator: torch.Generator | None = None,
                      background: torch.Tensor | float | None = None, color_threshold: float = 1e-4,
                      use_occupancy: bool = True) -> GridRenderOutput:
    """Render rays through a ``GridRadianceField``: ``render_rays_in_box`` with the field's density and
    colour as callbacks, its box and (``use_occupancy``) its occupancy grid.

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
    return render_rays_in_box(functools.partial(grid_density, field), functools.partial(grid_color, field),
                              origins, directions, step, field.aabb, field.occupancy if use_occupancy else None,
                              stratified=stratified, generator=generator, background=background,
                              color_threshold=color_threshold)


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
