"""Blending of per-slot colours into RGBA images, with PyTorch3D's formulas (``pytorch3d.renderer.blending``).

Dimension names (see ``lib3d.render``): N batch, H/W image, K per-pixel face slots (nearest first),
C colour channels (3). ``fragments`` is any object with the rasterizer's ``Fragments`` fields:
``pix_to_face (N, H, W, K)`` long (-1 empty), ``zbuf (N, H, W, K)``, ``bary_coords (N, H, W, K, 3)`` and
``dists (N, H, W, K)`` (signed squared NDC distance, negative inside the face).

All functions are out-of-place and differentiable with respect to ``colors``, ``dists`` and ``zbuf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lib3d._checks import check_shape, check_tensor

__all__ = ["BlendParams", "hard_rgb_blend", "sigmoid_alpha_blend", "softmax_rgb_blend"]


class BlendParams(NamedTuple):
    """Parameters of the soft blending functions (``pytorch3d.renderer.BlendParams``).

    Attributes:
        sigma: width of the sigmoid probability map of SoftRas, in squared NDC units.
        gamma: temperature of the depth softmax (smaller means closer to a hard z-buffer).
        background_color: (3,) colour of empty pixels.
    """

    sigma: float = 1e-4
    gamma: float = 1e-4
    background_color: torch.Tensor | Sequence[float] = (1.0, 1.0, 1.0)


def _check_fragments(fragments, colors: torch.Tensor | None = None) -> tuple[int, int, int, int]:
    for name in ("pix_to_face", "dists", "zbuf"):
        if not hasattr(fragments, name):
            raise TypeError(f"fragments must have a '{name}' field (a Fragments), got {type(fragments).__name__}")
    sizes = check_shape("fragments.pix_to_face", fragments.pix_to_face, ("N", "H", "W", "K"), dtype="int")
    if colors is not None:
        check_tensor("colors", colors, dtype="float")
        if colors.dim() != 5 or tuple(colors.shape[:3]) != tuple(fragments.pix_to_face.shape[:3]):
            raise ValueError(f"colors must have shape (N, H, W, K, C) with (N, H, W) = "
                             f"{tuple(fragments.pix_to_face.shape[:3])}, got {tuple(colors.shape)}")
    return sizes["N"], sizes["H"], sizes["W"], sizes["K"]


def _background(blend_params: BlendParams, like: torch.Tensor) -> torch.Tensor:
    bg = blend_params.background_color
    bg = bg.to(device=like.device, dtype=like.dtype) if isinstance(bg, torch.Tensor) else \
        torch.tensor(bg, device=like.device, dtype=like.dtype)
    if bg.shape != (3,) and bg.numel() != like.shape[-1]:
        raise ValueError(f"blend_params.background_color must have shape (3,), got {tuple(bg.shape)}")
    return bg.reshape(-1)


def hard_rgb_blend(colors: torch.Tensor, fragments, blend_params: BlendParams | None = None) -> torch.Tensor:
    """Nearest-face colour with the background where no face covers the pixel (hard z-buffer).

    ``rgb = colors[..., 0, :]`` if ``pix_to_face[..., 0] >= 0`` else ``background_color``;
    ``alpha = [pix_to_face[..., 0] >= 0]``.

    Args:
        colors: (N, H, W, K, 3) float per-slot colours (only slot 0 is read; K=1 is enough).
        fragments: rasterizer output (``pix_to_face`` (N, H, W, K') is read).
        blend_params: background colour; default ``BlendParams()`` (white).

    Returns:
        (N, H, W, 4) float RGBA.
    """
    blend_params = BlendParams() if blend_params is None else blend_params
    check_tensor("colors", colors, dtype="float")
    p2f = fragments.pix_to_face
    if colors.dim() != 5 or tuple(colors.shape[:3]) != tuple(p2f.shape[:3]):
        raise ValueError(f"colors must have shape (N, H, W, K, C) with (N, H, W) = {tuple(p2f.shape[:3])}, "
                         f"got {tuple(colors.shape)}")
    is_background = (p2f[..., 0] < 0)[..., None]  # (N, H, W, 1)
    rgb = torch.where(is_background, _background(blend_params, colors), colors[..., 0, :])
    alpha = (~is_background).to(colors.dtype)
    return torch.cat([rgb, alpha], dim=-1)


def _sigmoid_prob(fragments, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """SoftRas coverage probability per slot ``sigmoid(-dists / sigma) * [pix_to_face >= 0]`` (N, H, W, K)."""
    mask = fragments.pix_to_face >= 0
    return torch.sigmoid(-fragments.dists.to(dtype) / sigma) * mask


def sigmoid_alpha_blend(colors: torch.Tensor, fragments, blend_params: BlendParams | None = None) -> torch.Tensor:
    """SoftRas silhouette blending (Liu et al. 2019, "Soft Rasterizer").

    ``prob_k = sigmoid(-dists_k / sigma)`` on occupied slots (0 elsewhere);
    ``alpha = 1 - prod_k (1 - prob_k)``; rgb is the colour of slot 0 (PyTorch3D's choice).

    Args:
        colors: (N, H, W, K, 3) float colours (only slot 0 is read; the silhouette shader passes ones).
        fragments: rasterizer output (``pix_to_face``, ``dists`` (N, H, W, K)).
        blend_params: ``sigma`` is read; default ``BlendParams()``.

    Returns:
        (N, H, W, 4) float RGBA; alpha is the soft silhouette.
    """
    blend_params = BlendParams() if blend_params is None else blend_params
    _check_fragments(fragments, colors)
    prob = _sigmoid_prob(fragments, blend_params.sigma, colors.dtype)
    alpha = torch.prod(1.0 - prob, dim=-1)
    return torch.cat([colors[..., 0, :3], (1.0 - alpha)[..., None]], dim=-1)


def _as_batched(z, like: torch.Tensor):
    if isinstance(z, torch.Tensor):
        z = z.to(device=like.device, dtype=like.dtype)
        if z.dim() == 1:
            return z[:, None, None, None]
        return z
    return float(z)


def softmax_rgb_blend(colors: torch.Tensor, fragments, blend_params: BlendParams | None = None,
                      znear: float | torch.Tensor = 1.0, zfar: float | torch.Tensor = 100.0) -> torch.Tensor:
    """Soft depth-aware blending of SoftRas (Liu et al. 2019), exactly as PyTorch3D's ``softmax_rgb_blend``.

    With ``m_k = [pix_to_face_k >= 0]``, ``eps = 1e-10``::

        prob_k  = sigmoid(-dists_k / sigma) * m_k
        z_k     = (zfar - zbuf_k) / (zfar - znear) * m_k                  (inverse depth in [0, 1])
        z_max   = max(max_k z_k, eps)
        w_k     = prob_k * exp((z_k - z_max) / gamma)
        delta   = max(exp((eps - z_max) / gamma), eps)                     (background weight)
        rgb     = (sum_k w_k colors_k + delta * background) / (sum_k w_k + delta)
        alpha   = 1 - prod_k (1 - prob_k)

    Args:
        colors: (N, H, W, K, 3) float per-slot colours.
        fragments: rasterizer output (``pix_to_face``, ``zbuf``, ``dists`` (N, H, W, K)).
        blend_params: sigma, gamma, background colour; default ``BlendParams()``.
        znear: float or (N,) near plane (the cameras' ``znear``).
        zfar: float or (N,) far plane (the cameras' ``zfar``).

    Returns:
        (N, H, W, 4) float RGBA.
    """
    blend_params = BlendParams() if blend_params is None else blend_params
    _check_fragments(fragments, colors)
    if colors.shape[3] != fragments.pix_to_face.shape[3]:
        raise ValueError(f"colors must have K={fragments.pix_to_face.shape[3]} slots (as pix_to_face), "
                         f"got {tuple(colors.shape)}")
    eps = 1e-10
    mask = fragments.pix_to_face >= 0
    prob = _sigmoid_prob(fragments, blend_params.sigma, colors.dtype)
    alpha = torch.prod(1.0 - prob, dim=-1)
    znear = _as_batched(znear, colors)
    zfar = _as_batched(zfar, colors)
    z_inv = (zfar - fragments.zbuf.to(colors.dtype)) / (zfar - znear) * mask
    z_inv_max = torch.max(z_inv, dim=-1).values[..., None].clamp(min=eps)
    weights_num = prob * torch.exp((z_inv - z_inv_max) / blend_params.gamma)
    delta = torch.exp((eps - z_inv_max) / blend_params.gamma).clamp(min=eps)
    denom = weights_num.sum(dim=-1)[..., None] + delta
    weighted_colors = (weights_num[..., None] * colors).sum(dim=-2)
    rgb = (weighted_colors + delta * _background(blend_params, colors)) / denom
    return torch.cat([rgb, (1.0 - alpha)[..., None]], dim=-1)
