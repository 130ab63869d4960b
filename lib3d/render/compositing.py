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

The per-slot weights are computed on the padded (N, K, H, W) layout; the feature sum then runs over the
valid (pixel, point) pairs as one sparse CSR matrix product (torch.sparse, CPU and CUDA), its backward a
sampled dense-dense product for the weights and a transposed CSR product for the features, so no
(N, K, H, W, C) tensor is built.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lib3d._checks import check_shape, check_shapes
from lib3d.ops.packed import gather_rows

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


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix (rows sorted, columns sorted and unique within each row, as torch requires)."""
    with warnings.catch_warnings():  # torch warns once that sparse CSR support is in beta
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _PairWeightedSum(torch.autograd.Function):
    """``out[r] = sum_{i: row_i = r} w_i feats[col_i]`` over M (row, col) pairs, as one sparse matmul.

    The pairs form a sparse (R, Q) matrix S in CSR layout (``crow``, ``col``; the weights are its values):
    ``out = S @ feats``, ``grad_w_i = <grad_out[row_i], feats[col_i]>`` (a sampled dense-dense product on
    S's pattern) and ``grad_feats = S^T @ grad_out`` with S^T in CSR layout too (``crow_t``, ``col_t``, the
    pairs in ``by_col`` order). No (M, C) tensor is built.
    """

    @staticmethod
    def forward(ctx, crow, col, crow_t, col_t, by_col, w, feats):
        R, Q = crow.numel() - 1, crow_t.numel() - 1
        ctx.save_for_backward(crow, col, crow_t, col_t, by_col, w, feats)
        if w.numel() == 0:
            return feats.new_zeros((R, feats.shape[1]))
        return _csr(crow, col, w, (R, Q)) @ feats

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        crow, col, crow_t, col_t, by_col, w, feats = ctx.saved_tensors
        R, Q = crow.numel() - 1, crow_t.numel() - 1
        grad_w = grad_f = None
        g = grad_out.contiguous()
        if ctx.needs_input_grad[5]:
            grad_w = torch.zeros_like(w) if w.numel() == 0 else torch.sparse.sampled_addmm(
                _csr(crow, col, w, (R, Q)), g, feats.t(), beta=0.0).values()
        if ctx.needs_input_grad[6]:
            grad_f = torch.zeros_like(feats) if w.numel() == 0 else _csr(crow_t, col_t, w[by_col], (Q, R)) @ g
        return None, None, None, None, None, grad_w, grad_f


def _pair_weighted_sum(row: torch.Tensor, col: torch.Tensor, w: torch.Tensor, feats: torch.Tensor,
                       num_rows: int, by_col: torch.Tensor | None = None) -> torch.Tensor:
    """``out[r] = sum_{i: row_i = r} w_i feats[col_i]``, differentiable w.r.t. ``w`` and ``feats``.

    Args:
        row: (M,) int64 output row of each pair, ascending.
        col: (M,) int64 feature row of each pair, ascending and unique within each output row.
        w: (M,) float weights.
        feats: (Q, C) float.
        num_rows: R.
        by_col: optional (M,) int64 permutation listing the pairs by ``col`` (rows ascending within a
            col); computed with a stable sort when not given.

    Returns:
        (R, C) float.
    """
    device = row.device
    Q = feats.shape[0]
    small = max(num_rows, Q, row.numel()) < 2 ** 31 - 1
    itype = torch.int32 if small else torch.int64
    if by_col is None:
        by_col = torch.sort(col.to(itype), stable=True).indices
    crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    crow_t = torch.zeros(Q + 1, dtype=torch.int64, device=device)
    crow_t[1:] = torch.cumsum(torch.bincount(col, minlength=Q), 0)
    return _PairWeightedSum.apply(crow.to(itype), col.to(itype), crow_t.to(itype), row[by_col].to(itype), by_col,
                                  w, feats.contiguous())


def _pair_alpha_weights(pix: torch.Tensor, rank: torch.Tensor, alphas: torch.Tensor, num_pixels: int
                        ) -> torch.Tensor:
    """Front-to-back weights ``w = alpha_k prod_{j<k} (1 - alpha_j)`` of pixel-major (pixel, slot) pairs.

    Args:
        pix: (M,) int64 pixel of each pair; rank: (M,) int64 its slot k (unique within a pixel).
        alphas: (M,) float.
        num_pixels: number of pixels.

    Returns:
        (M,) float weights, the same numbers as ``alpha_composite``'s on the padded (K, ...) layout: the
        exclusive cumulative product runs over a (pixels, max slot + 1) table with 1 in empty slots.
    """
    kmax = int(rank.max()) + 1 if rank.numel() else 1
    flat = pix * kmax + rank
    one_minus = alphas.new_ones(num_pixels * kmax).index_put((flat,), 1.0 - alphas).view(num_pixels, kmax)
    trans = torch.cumprod(torch.cat((torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]), dim=1), dim=1)
    return alphas * gather_rows(trans.reshape(-1), flat)


def _pair_norm_weights(pix: torch.Tensor, alphas: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """``w = alpha / max(sum of the pixel's alphas, 1e-4)`` per pair; pix (M,) int64, alphas (M,) float."""
    denom = alphas.new_zeros(num_pixels).index_add(0, pix, alphas).clamp_min(_NORM_EPS)
    return alphas / gather_rows(denom, pix)


def _weighted_gather_sum(idx: torch.Tensor, w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """``out[n, :, y, x] = sum_k w[n, k, y, x] * feats[:, idx[n, k, y, x]]`` over the slots with idx >= 0.

    The valid slots become (pixel, point) pairs (a point repeated in a pixel's slots is one pair with the
    summed weight) and ``_pair_weighted_sum`` does the rest: no (N, K, H, W, C) tensor is built.
    """
    N, K, H, W = idx.shape
    C, P = feats.shape
    slot_idx = idx.permute(0, 2, 3, 1).reshape(-1)  # pixel-major slots
    slot = torch.nonzero(slot_idx >= 0).squeeze(1)
    key = torch.div(slot, K, rounding_mode="floor") * P + slot_idx[slot]
    key, inv = torch.unique(key, sorted=True, return_inverse=True)
    wu = w.new_zeros(key.numel()).index_add(0, inv, gather_rows(w.permute(0, 2, 3, 1).reshape(-1), slot))
    out = _pair_weighted_sum(torch.div(key, P, rounding_mode="floor"), key % P, wu, feats.t(), N * H * W)
    return out.view(N, H, W, C).permute(0, 3, 1, 2)


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
