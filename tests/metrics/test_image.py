"""PSNR / SSIM: hand-computed values, a slow SSIM reference, errors."""


import pytest
import torch

from lib3d.metrics import psnr, ssim


def test_psnr_hand_computed():
    a = torch.zeros(4, 4, 3)
    b = torch.full((4, 4, 3), 0.1)  # MSE = 0.01 -> 20 dB
    torch.testing.assert_close(psnr(a, b), torch.tensor(20.0))
    assert psnr(torch.stack([a, a]), torch.stack([b, a])).shape == (2,)


def _ssim_reference(x, y, win=11, sigma=1.5, L=1.0):
    """Slow loop over windows, one channel at a time (valid windows)."""
    g = torch.exp(-((torch.arange(win, dtype=x.dtype) - (win - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = g[:, None] * g[None]
    w = w / w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    H, W, C = x.shape
    for c in range(C):  # loop over channels and windows: a slow reference
        for i in range(H - win + 1):
            for j in range(W - win + 1):
                px, py = x[i:i + win, j:j + win, c], y[i:i + win, j:j + win, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx = (w * px * px).sum() - mx ** 2
                vy = (w * py * py).sum() - my ** 2
                cxy = (w * px * py).sum() - mx * my
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return torch.stack(vals).mean()


def test_ssim_matches_reference_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(14, 13, 2, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(14, 13, 2, generator=g, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(ssim(x, y), _ssim_reference(x, y))
    torch.testing.assert_close(ssim(x, x), torch.tensor(1.0, dtype=torch.float64))
    assert float(ssim(x, 1 - x)) < 0.5


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match="at least"):
        ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))
    with pytest.raises(TypeError):
        psnr(torch.zeros(4, 4, 3, dtype=torch.long), torch.zeros(4, 4, 3))
