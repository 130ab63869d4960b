"""Compositing of rasterized points into images (PyTorch3D's compositors), differentiable in pure PyTorch.

Dimension names: N images (batch), K points per pixel, H/W image size, C feature channels, P packed points.

All compositors take PyTorch3D's argument layout: ``pointsidx (N, K, H, W)`` int64 indices into the packed
points (-1: empty slot, skipped), ``alphas (N, K, H, W)`` float weights, ``pt_clds (C, P)`` packed
features (channels first), and return images ``(N, C, H, W)``. They are differentiable w.r.t. alphas and
features (SynSin trains through them).

- ``alpha_composite``: front-to-back over operator,
  ``out = sum_k alpha_k * prod_{j<k, j valid} (1 - alpha_j) * f_k``.
- ``norm_weighted_sum``: ``out = sum_k alpha_k f_k / max(sum_k alpha_k, 1e-4)``.
- ``weighted_sum``: ``out = sum_k alpha_k f_k``.
"""

from __future__ import annotations

import torch
from torch import nn

from lib3d._checks import check_shape, check_shapes

__all__ = [
    "AlphaCompositor",
    "NormWeightedCompositor",
    "PointsRenderer",
    "WeightedCompositor",
    "alpha_composite",
    "norm_weighted_sum",
    "weighted_sum",
]

_NORM_EPS = 1e-4  # PyTorch3D's kEps in norm_weighted_sum


def _check(pointsidx: torch.Tensor, alphas: torch.Tensor, pt_clds: torch.Tensor):
    """Checks; returns (valid mask (N, K, H, W), alphas with empty slots zeroed)."""
    check_shapes(pointsidx=(pointsidx, ("N", "K", "H", "W")), alphas=(alphas, ("N", "K", "H", "W")))
    check_shape("pointsidx", pointsidx, (None, None, None, None), dtype="int")
    check_shape("alphas", alphas, (None, None, None, None), dtype="float")
    check_shape("pt_clds", pt_clds, ("C", "P"), dtype="float")
    valid = pointsidx >= 0
    return valid, torch.where(valid, alphas, torch.zeros((), dtype=alphas.dtype, device=alphas.device))


class _WeightedGatherSum(torch.autograd.Function):
    """``out[n, :, y, x] = sum_k w[n, k, y, x] * feats[:, idx[n, k, y, x]]`` without a (N, K, H, W, C) tensor.

    Forward and backward loop over the K slots (each step touches (N, H, W, C)), so memory stays
    O(N H W C) whatever K; the backward recomputes the gathers instead of saving them.
    """

    @staticmethod
    def forward(ctx, idx: torch.Tensor, w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        fT = feats.t()  # (P, C)
        safe = idx.clamp_min(0)
        N, K, H, W = idx.shape
        out = feats.new_zeros((N, H, W, feats.shape[0]))
        for k in range(K):
            out += w[:, k, :, :, None] * fT[safe[:, k]]
        ctx.save_for_backward(safe, w, feats)
        return out.permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        safe, w, feats = ctx.saved_tensors
        fT = feats.t()
        g = grad_out.permute(0, 2, 3, 1)  # (N, H, W, C)
        grad_w = grad_f = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.stack([(g * fT[safe[:, k]]).sum(-1) for k in range(safe.shape[1])], dim=1)
        if ctx.needs_input_grad[2]:
            gT = feats.new_zeros(fT.shape)
            C = g.shape[-1]
            for k in range(safe.shape[1]):
                gT.index_add_(0, safe[:, k].reshape(-1), (g * w[:, k, :, :, None]).reshape(-1, C))
            grad_f = gT.t()
        return None, grad_w, grad_f


def _weighted_gather_sum(idx: torch.Tensor, w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    return _WeightedGatherSum.apply(idx, w, feats)


def alpha_composite(pointsidx: torch.Tensor, alphas: torch.Tensor, pt_clds: torch.Tensor) -> torch.Tensor:
    """Front-to-back alpha compositing (PyTorch3D's ``alpha_composite``).

    ``out[n, c, y, x] = sum_k alpha_k T_k f[c, idx_k]`` with transmittance
    ``T_k = prod_{j < k} (1 - alpha_j)`` over the valid slots (empty slots, idx = -1, are skipped).

    Args:
        pointsidx: (N, K, H, W) int64 packed point index per slot, nearest first; -1 empty.
        alphas: (N, K, H, W) float opacity per slot.
        pt_clds: (C, P) float packed features.

    Returns:
        (N, C, H, W) float images.
    """
    _valid, a = _check(pointsidx, alphas, pt_clds)
    one_minus = 1.0 - a
    # Exclusive cumulative product along K: T_0 = 1, T_k = prod_{j<k} (1 - a_j).
    trans = torch.cumprod(torch.cat((torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]), dim=1), dim=1)
    return _weighted_gather_sum(pointsidx, a * trans, pt_clds)


def norm_weighted_sum(pointsidx: torch.Tensor, alphas: torch.Tensor, pt_clds: torch.Tensor) -> torch.Tensor:
    """Alpha-normalised weighted sum (PyTorch3D's ``norm_weighted_sum``).

    ``out = sum_k alpha_k f[:, idx_k] / max(sum_k alpha_k, 1e-4)`` over valid slots.

    Args:
        pointsidx: (N, K, H, W) int64; -1 empty.
        alphas: (N, K, H, W) float.
        pt_clds: (C, P) float.

    Returns:
        (N, C, H, W) float images.
    """
    _valid, a = _check(pointsidx, alphas, pt_clds)
    denom = a.sum(dim=1, keepdim=True).clamp_min(_NORM_EPS)
    return _weighted_gather_sum(pointsidx, a / denom, pt_clds)


def weighted_sum(pointsidx: torch.Tensor, alphas: torch.Tensor, pt_clds: torch.Tensor) -> torch.Tensor:
    """Weighted sum (PyTorch3D's ``weighted_sum``): ``out = sum_k alpha_k f[:, idx_k]`` over valid slots.

    Args:
        pointsidx: (N, K, H, W) int64; -1 empty.
        alphas: (N, K, H, W) float.
        pt_clds: (C, P) float.

    Returns:
        (N, C, H, W) float images.
    """
    _valid, a = _check(pointsidx, alphas, pt_clds)
    return _weighted_gather_sum(pointsidx, a, pt_clds)


def add_background_color(pointsidx: torch.Tensor, images: torch.Tensor, background_color) -> torch.Tensor:
    """Set pixels whose first slot is empty to ``background_color`` (PyTorch3D's helper).

    Args:
        pointsidx: (N, K, H, W) int64.
        images: (N, C, H, W) float.
        background_color: sequence or tensor of C values, or C-1 values (an alpha of 1 is appended).

    Returns:
        (N, C, H, W) images; differentiable w.r.t. ``images`` elsewhere.
    """
    bg = torch.as_tensor(background_color, dtype=images.dtype, device=images.device)
    if bg.ndim == 0:
        bg = bg.expand(images.shape[1])
    if bg.ndim != 1:
        raise ValueError(f"background_color must have shape (C,), got {tuple(bg.shape)}")
    if bg.shape[0] + 1 == images.shape[1]:
        bg = torch.cat((bg, bg.new_ones(1)))
    if bg.shape[0] != images.shape[1]:
        raise ValueError(f"background_color must have {images.shape[1]} (or {images.shape[1] - 1}) values, "
                         f"got {bg.shape[0]}")
    mask = (pointsidx[:, 0] < 0)[:, None]  # (N, 1, H, W)
    return torch.where(mask, bg[None, :, None, None], images)


class _Compositor(nn.Module):
    """A compositing function with an optional background colour; ``forward`` makes the one call."""

    _composite = None  # the compositing function, set by each subclass

    def __init__(self, background_color=None):
        super().__init__()
        self.background_color = background_color

    def forward(self, fragments: torch.Tensor, alphas: torch.Tensor, ptclds: torch.Tensor, **kwargs):
        """fragments (N, K, H, W) int64, alphas (N, K, H, W), ptclds (C, P) -> (N, C, H, W)."""
        bg = kwargs.get("background_color", self.background_color)
        images = type(self)._composite(fragments, alphas, ptclds)
        return images if bg is None else add_background_color(fragments, images, bg)


class AlphaCompositor(_Compositor):
    """``alpha_composite`` with an optional background colour (PyTorch3D's ``AlphaCompositor``)."""

    _composite = staticmethod(alpha_composite)


class NormWeightedCompositor(_Compositor):
    """``norm_weighted_sum`` with an optional background colour (PyTorch3D's ``NormWeightedCompositor``)."""

    _composite = staticmethod(norm_weighted_sum)


class WeightedCompositor(_Compositor):
    """``weighted_sum`` with an optional background colour."""

    _composite = staticmethod(weighted_sum)


class PointsRenderer(nn.Module):
    """Rasterize point clouds and composite their features (PyTorch3D's ``PointsRenderer``).

    Weights are ``1 - dists / r^2`` with the rasterizer's (scalar) radius r, as PyTorch3D does; the output
    is (N, H, W, C) with C the clouds' feature channels.
    """

    def __init__(self, rasterizer, compositor):
        super().__init__()
        self.rasterizer = rasterizer
        self.compositor = compositor

    def to(self, device):
        self.rasterizer = self.rasterizer.to(device)
        self.compositor = self.compositor.to(device)
        return self

    def forward(self, point_clouds, **kwargs) -> torch.Tensor:
        fragments = self.rasterizer(point_clouds, **kwargs)
        r = self.rasterizer.raster_settings.radius
        dists2 = fragments.dists.permute(0, 3, 1, 2)
        weights = 1 - dists2 / (r * r)
        feats = point_clouds.features_packed()
        if feats is None:
            raise ValueError("PointsRenderer needs point clouds with features")
        images = self.compositor(fragments.idx.long().permute(0, 3, 1, 2), weights, feats.permute(1, 0), **kwargs)
        return images.permute(0, 2, 3, 1)
