"""Image metrics: PSNR and SSIM.

Dimension names: N batch, H/W image height/width, C channels. Images are ``(N, H, W, C)`` or ``(H, W, C)``
float in [0, ``data_range``] (channels last, as lib3d's renderers produce them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_tensor

__all__ = ["mse", "psnr", "ssim"]


def _batched(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, dtype="float")
    if x.ndim == 3:
        return x[None]
    check_shape(name, x, (None, None, None, None))
    return x


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error: ``(N, H, W, C)`` x2 -> ``(N,)`` (or a scalar for ``(H, W, C)``)."""
    p, t = _batched("pred", pred), _batched("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    out = ((p - t) ** 2).flatten(1).mean(1)
    return out[0] if pred.ndim == 3 else out


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image, in dB.

    Args:
        pred, target: ``(N, H, W, C)`` or ``(H, W, C)`` float.
        data_range: peak value (1 for images in [0, 1]).

    Returns:
        ``(N,)`` (or a scalar) float.
    """
    m = mse(pred, target)
    return 10.0 * torch.log10(data_range ** 2 / m.clamp_min(1e-20))


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), per image.

    ``SSIM = mean over valid windows and channels of ((2 mu_x mu_y + C1)(2 s_xy + C2)) /
    ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``; statistics
    are Gaussian-weighted, computed per channel without padding ("valid" windows, as scikit-image's
    ``gaussian_weights=True`` / the NeRF papers' implementation).

    Args:
        pred, target: ``(N, H, W, C)`` or ``(H, W, C)`` float, H and W >= ``window_size``.
        data_range: L, the dynamic range.
        window_size, sigma: the Gaussian window.
        k1, k2: the stabilising constants.

    Returns:
        ``(N,)`` (or a scalar) float.
    """
    p, t = _batched("pred", pred), _batched("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if p.shape[1] < window_size or p.shape[2] < window_size:
        raise ValueError(f"images must be at least {window_size}x{window_size}, got {tuple(p.shape[1:3])}")
    C = p.shape[-1]
    g = _gaussian_window(window_size, sigma, p.dtype, p.device)
    w2 = (g[:, None] * g[None, :])[None, None].expand(C, 1, window_size, window_size)
    x, y = p.permute(0, 3, 1, 2), t.permute(0, 3, 1, 2)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w2, groups=C)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x ** 2
    syy = filt(y * y) - mu_y ** 2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    out = s.flatten(1).mean(1)
    return out[0] if pred.ndim == 3 else out
