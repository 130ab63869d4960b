"""MLP radiance fields: the book's simplified NeRF and the original NeRF (dimension names in ``lib3d.fields``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape
from lib3d.fields.encodings import HarmonicEmbedding
from lib3d.render.volumetric import (
    RayBundle,
    RenderOutput,
    ray_bundle_to_ray_points,
    render_rays,
    sample_pdf,
    stratified_lengths,
)

__all__ = ["BookNeuralRadianceField", "NeRFMLP", "NeRFOutput", "OriginalNeRF", "render_nerf_hierarchical"]


class BookNeuralRadianceField(torch.nn.Module):
    """The book's chapter-6 NeRF (PyTorch3D's ``fit_simple_neural_radiance_field`` tutorial), exactly.

    ``embed = HarmonicEmbedding(60, omega_0=0.1, append_input=False)(points)``;
    ``features = softplus10(W2 softplus10(W1 embed))`` (256 wide, ``Softplus(beta=10)``);
    ``density = 1 - exp(-softplus10(w_d features))`` with the bias initialised to -1.5 (a per-sample
    opacity in [0, 1] for ``EmissionAbsorptionRaymarcher``);
    ``colour = sigmoid(W4 softplus10(W3 [features, embed(normalize(direction))]))``.

    Args:
        n_harmonic_functions: K (60 in the book).
        n_hidden_neurons: width (256 in the book).
        omega_0: base frequency of the embedding (0.1 in the book).

    Example:
        >>> nerf = BookNeuralRadianceField()
        >>> densities, colors = nerf(ray_bundle)   # (N, ..., S, 1), (N, ..., S, 3)
    """

    def __init__(self, n_harmonic_functions: int = 60, n_hidden_neurons: int = 256, omega_0: float = 0.1) -> None:
        super().__init__()
        self.harmonic_embedding = HarmonicEmbedding(n_harmonic_functions, omega_0=omega_0, append_input=False)
        embedding_dim = n_harmonic_functions * 2 * 3
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embedding_dim, n_hidden_neurons), torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, n_hidden_neurons), torch.nn.Softplus(beta=10.0))
        self.color_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons + embedding_dim, n_hidden_neurons), torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, 3), torch.nn.Sigmoid())
        self.density_layer = torch.nn.Sequential(torch.nn.Linear(n_hidden_neurons, 1), torch.nn.Softplus(beta=10.0))
        with torch.no_grad():
            self.density_layer[0].bias[0] = -1.5

    def forward(self, ray_bundle: RayBundle, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities ``(N, ..., S, 1)`` in [0, 1] and colours ``(N, ..., S, 3)`` at the bundle's points."""
        points = ray_bundle_to_ray_points(ray_bundle)
        features = self.mlp(self.harmonic_embedding(points))
        densities = 1 - (-self.density_layer(features)).exp()
        dirs = F.normalize(ray_bundle.directions, dim=-1)
        dir_embed = self.harmonic_embedding(dirs)[..., None, :].expand(*features.shape[:-1], -1)
        colors = self.color_layer(torch.cat((features, dir_embed), dim=-1))
        return densities, colors

    def batched_forward(self, ray_bundle: RayBundle, n_batches: int = 16, **kwargs
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` over ``n_batches`` chunks of the rays (bounded memory for full images)."""
        n_pts = ray_bundle.lengths.shape[-1]
        spatial = [*ray_bundle.origins.shape[:-1], n_pts]
        tot = ray_bundle.origins.shape[:-1].numel()
        chunks = torch.chunk(torch.arange(tot, device=ray_bundle.origins.device), n_batches)
        outs = []
        for idx in chunks:  # loop over chunks of rays
            sub = RayBundle(ray_bundle.origins.reshape(-1, 3)[idx], ray_bundle.directions.reshape(-1, 3)[idx],
                            ray_bundle.lengths.reshape(-1, n_pts)[idx], None)
            outs.append(self.forward(sub))
        dens = torch.cat([o[0] for o in outs]).view(*spatial, 1)
        cols = torch.cat([o[1] for o in outs]).view(*spatial, 3)
        return dens, cols


def nerf_mlp_forward(mlp: NeRFMLP, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The original NeRF MLP (Mildenhall et al. 2020, fig. 7).

    ``h = relu`` layers of width ``W`` on ``gamma_L(x)`` (L = 10) with ``gamma(x)`` concatenated again
    after layer ``skip``; ``sigma = relu(w_sigma h)``; ``rgb = sigmoid(W_c relu(W_d [W_f h, gamma_4(d)]))``.

    Args:
        mlp: the module holding the weights.
        points: ``(..., 3)`` float.
        dirs: ``(..., 3)`` float (normalised inside).

    Returns:
        ``(rgb (..., 3), sigma (...))``.
    """
    x = mlp.xyz_embedding(points)
    h = x
    for i, layer in enumerate(mlp.layers):  # loop over layers
        if i == mlp.skip and i > 0:
            h = torch.cat([h, x], dim=-1)
        h = F.relu(layer(h))
    sigma = F.relu(mlp.sigma_head(h))[..., 0]
    d = mlp.dir_embedding(F.normalize(dirs, dim=-1))
    feat = mlp.feature(h)
    rgb = torch.sigmoid(mlp.rgb_head(F.relu(mlp.view_layer(torch.cat([feat, d], dim=-1)))))
    return rgb, sigma


class NeRFMLP(torch.nn.Module):
    """Original NeRF MLP: 8 x 256 ReLU layers, skip connection at layer 4, view-dependent colour head.

    Args:
        n_layers: depth (8).
        width: width (256).
        skip: layer index that re-reads the input embedding (4).
        n_xyz_freqs: L for positions (10); ``n_dir_freqs``: L for directions (4).

    ``forward(points (..., 3), dirs (..., 3)) -> (rgb (..., 3), sigma (...))``: a field callback.
    """

    def __init__(self, n_layers: int = 8, width: int = 256, skip: int = 4, n_xyz_freqs: int = 10,
                 n_dir_freqs: int = 4) -> None:
        super().__init__()
        self.xyz_embedding = HarmonicEmbedding(n_xyz_freqs, append_input=True)
        self.dir_embedding = HarmonicEmbedding(n_dir_freqs, append_input=True)
        in_x = self.xyz_embedding.get_output_dim(3)
        in_d = self.dir_embedding.get_output_dim(3)
        self.skip = skip
        layers = []
        for i in range(n_layers):
            fan_in = in_x if i == 0 else (width + in_x if i == skip else width)
            layers.append(torch.nn.Linear(fan_in, width))
        self.layers = torch.nn.ModuleList(layers)
        self.sigma_head = torch.nn.Linear(width, 1)
        self.feature = torch.nn.Linear(width, width)
        self.view_layer = torch.nn.Linear(width + in_d, width // 2)
        self.rgb_head = torch.nn.Linear(width // 2, 3)

    def forward(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nerf_mlp_forward(self, points, dirs)


class NeRFOutput(NamedTuple):
    """Coarse and fine renders of ``render_nerf_hierarchical`` (each a ``RenderOutput``)."""

    coarse: RenderOutput
    fine: RenderOutput | None


def render_nerf_hierarchical(coarse, fine, origins: torch.Tensor, directions: torch.Tensor, near: float, far: float,
                             n_coarse: int = 64, n_fine: int = 128, stratified: bool = True,
                             background: float | torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> NeRFOutput:
    """NeRF's coarse-to-fine rendering (Mildenhall et al. 2020, sec. 5.2).

    ``n_coarse`` stratified samples in ``[near, far]`` are rendered by ``coarse``; ``n_fine`` more are
    drawn from the coarse weights with ``sample_pdf`` and the union (sorted) is rendered by ``fine``.

    Args:
        coarse, fine: field callbacks ``(points, dirs) -> (rgb, sigma)``; ``fine`` may be None.
        origins, directions: ``(R, 3)`` float rays.
        near, far: depth range (units of ``|directions|``).
        n_coarse, n_fine: samples per ray.
        stratified: jitter the coarse samples and draw the fine ones at random.
        background: optional background colour.
        generator: random generator.

    Returns:
        ``NeRFOutput(coarse, fine)``.
    """
    check_shape("origins", origins, ("R", 3), dtype="float")
    R = origins.shape[0]
    t = stratified_lengths(near, far, n_coarse, (R,), stratified, generator, origins.device, origins.dtype)
    out_c = render_rays(coarse, origins, directions, t, far=far, background=background)
    if fine is None or n_fine <= 0:
        return NeRFOutput(out_c, None)
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    t_f = sample_pdf(mids, out_c.weights[..., 1:-1].detach(), n_fine, det=not stratified, generator=generator)
    t_all, _ = torch.sort(torch.cat([t, t_f.detach()], dim=-1), dim=-1)
    out_f = render_rays(fine, origins, directions, t_all, far=far, background=background)
    return NeRFOutput(out_c, out_f)


class OriginalNeRF(torch.nn.Module):
    """The original NeRF: a coarse and a fine ``NeRFMLP`` rendered with ``render_nerf_hierarchical``.

    ``forward(origins (R, 3), directions (R, 3), near, far, ...) -> NeRFOutput``.
    """

    def __init__(self, n_layers: int = 8, width: int = 256, skip: int = 4) -> None:
        super().__init__()
        self.coarse = NeRFMLP(n_layers, width, skip)
        self.fine = NeRFMLP(n_layers, width, skip)

    def forward(self, origins: torch.Tensor, directions: torch.Tensor, near: float, far: float, n_coarse: int = 64,
                n_fine: int = 128, stratified: bool = True, background=None,
                generator: torch.Generator | None = None) -> NeRFOutput:
        return render_nerf_hierarchical(self.coarse, self.fine, origins, directions, near, far, n_coarse, n_fine,
                                        stratified, background, generator)
