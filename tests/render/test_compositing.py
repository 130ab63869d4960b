"""Tests of lib3d.render.compositing against slow per-pixel loops (PyTorch3D's CPU kernels), gradients."""

from __future__ import annotations

import pytest
import torch

from lib3d.render.compositing import (
    AlphaCompositor,
    NormWeightedCompositor,
    WeightedCompositor,
    alpha_composite,
    norm_weighted_sum,
    weighted_sum,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs CUDA"))]


def _inputs(N=2, K=4, H=5, W=6, C=3, P=20, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(-1, P, (N, K, H, W), generator=g)
    alphas = torch.rand(N, K, H, W, generator=g, dtype=dtype)
    feats = torch.rand(C, P, generator=g, dtype=dtype)
    return idx.to(device), alphas.to(device), feats.to(device)


def _slow(kind, idx, alphas, feats):
    """Per-pixel loops written as PyTorch3D's CPU kernels."""
    N, K, H, W = idx.shape
    C = feats.shape[0]
    out = torch.zeros(N, C, H, W, dtype=feats.dtype)
    for n in range(N):
        for y in range(H):
            for x in range(W):
                cum, total = 1.0, 0.0
                for k in range(K):
                    if idx[n, k, y, x] >= 0:
                        total += alphas[n, k, y, x]
                total = max(float(total), 1e-4)
                for k in range(K):
                    i = int(idx[n, k, y, x])
                    if i < 0:
                        continue
                    a = alphas[n, k, y, x]
                    if kind == "alpha":
                        out[n, :, y, x] += cum * a * feats[:, i]
                        cum = cum * (1 - a)
                    elif kind == "norm":
                        out[n, :, y, x] += a * feats[:, i] / total
                    else:
                        out[n, :, y, x] += a * feats[:, i]
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,fn", [("alpha", alpha_composite), ("norm", norm_weighted_sum),
                                     ("weighted", weighted_sum)])
def test_matches_slow_loops(kind, fn, device):
    idx, alphas, feats = _inputs(device=device)
    out = fn(idx, alphas, feats)
    torch.testing.assert_close(out.cpu(), _slow(kind, idx.cpu(), alphas.cpu(), feats.cpu()))


@pytest.mark.parametrize("fn", [alpha_composite, norm_weighted_sum, weighted_sum])
def test_gradcheck(fn):
    idx, alphas, feats = _inputs(N=1, K=3, H=2, W=3, C=2, P=5)
    assert torch.autograd.gradcheck(fn, (idx, alphas.requires_grad_(True), feats.requires_grad_(True)))


def test_alpha_composite_hand_computed():
    idx = torch.tensor([0, -1, 1]).view(1, 3, 1, 1)
    alphas = torch.tensor([0.5, 0.9, 0.5]).view(1, 3, 1, 1)
    feats = torch.tensor([[1.0, 3.0]])
    # 0.5 * 1 + (1 - 0.5) * 0.5 * 3 = 1.25; the empty slot is skipped.
    assert alpha_composite(idx, alphas, feats).item() == pytest.approx(1.25)
    # (0.5 * 1 + 0.5 * 3) / (0.5 + 0.5) = 2
    assert norm_weighted_sum(idx, alphas, feats).item() == pytest.approx(2.0)
    assert weighted_sum(idx, alphas, feats).item() == pytest.approx(2.0)


def test_background_colour():
    idx = torch.tensor([[[-1, 0]], [[-1, 1]]])[None]  # (N=1, K=2, H=1, W=2)
    alphas = torch.ones(1, 2, 1, 2)
    feats = torch.tensor([[0.2, 0.4], [0.3, 0.5], [0.1, 0.9], [1.0, 1.0]])  # RGBA
    out = AlphaCompositor(background_color=(0.0, 1.0, 0.0))(idx, alphas, feats)
    assert out[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]  # first slot empty: background (+ alpha 1)
    torch.testing.assert_close(out[0, :, 0, 1], feats[:, 0])
    out = NormWeightedCompositor(background_color=torch.tensor([0.5, 0.5, 0.5, 0.0]))(idx, alphas, feats)
    assert out[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="background_color"):
        WeightedCompositor(background_color=(1.0, 0.0))(idx, alphas, feats)


def test_bad_inputs_raise():
    idx, alphas, feats = _inputs()
    with pytest.raises(ValueError, match="alphas"):
        alpha_composite(idx, alphas[:, :2], feats)
    with pytest.raises(TypeError, match="pointsidx"):
        alpha_composite(idx.float(), alphas, feats)
    with pytest.raises(ValueError, match="pt_clds"):
        norm_weighted_sum(idx, alphas, feats[0])
