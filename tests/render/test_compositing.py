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


def _pairs(R=7, Q=9, C=3, seed=0, dtype=torch.float64):
    """Random (row, col) pairs, rows ascending, columns ascending and unique within a row."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(R, Q, generator=g) < 0.4
    row, col = torch.nonzero(keep, as_tuple=True)
    w = torch.rand(row.numel(), generator=g, dtype=dtype)
    feats = torch.rand(Q, C, generator=g, dtype=dtype)
    return row, col, w, feats


def test_pair_weighted_sum_matches_dense_and_gradcheck():
    from lib3d.render.compositing import _pair_weighted_sum

    row, col, w, feats = _pairs()
    dense = torch.zeros(7, 9, dtype=w.dtype).index_put((row, col), w)
    torch.testing.assert_close(_pair_weighted_sum(row, col, w, feats, 7), dense @ feats)
    by_col = torch.argsort(col * 7 + row)
    torch.testing.assert_close(_pair_weighted_sum(row, col, w, feats, 7, by_col), dense @ feats)
    w.requires_grad_(True)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: _pair_weighted_sum(row, col, a, b, 7), (w, feats))
    # No pairs at all: zeros, and zero gradients.
    e = torch.zeros(0, dtype=torch.int64)
    w0 = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    out = _pair_weighted_sum(e, e, w0, feats, 4)
    assert out.shape == (4, 3) and not out.any()
    out.sum().backward()
    assert feats.grad is not None and not feats.grad.any()


def test_pair_alpha_and_norm_weights_match_padded_compositors():
    from lib3d.render.compositing import _pair_alpha_weights, _pair_norm_weights

    # Padded slots with contiguous valid ranks per pixel, as the rasterizer makes them.
    g = torch.Generator().manual_seed(3)
    N, K, H, W, C, P = 2, 5, 3, 4, 3, 30
    count = torch.randint(0, K + 1, (N, H, W), generator=g)
    valid = torch.arange(K)[None, :, None, None] < count[:, None]
    idx = torch.where(valid, torch.randint(0, P, (N, K, H, W), generator=g), -1)
    alphas = torch.rand(N, K, H, W, generator=g, dtype=torch.float64)
    feats = torch.rand(C, P, generator=g, dtype=torch.float64)
    slot = torch.nonzero(idx.permute(0, 2, 3, 1).reshape(-1) >= 0).squeeze(1)
    pix, rank = torch.div(slot, K, rounding_mode="floor"), slot % K
    a = alphas.permute(0, 2, 3, 1).reshape(-1)[slot]
    p = idx.permute(0, 2, 3, 1).reshape(-1)[slot]
    n_pix = N * H * W
    # Dense sum over pairs (a point may repeat in a pixel here, so no CSR: index_add as the reference).
    def dense(w):
        return torch.zeros(n_pix, C, dtype=w.dtype).index_add(0, pix, w[:, None] * feats.t()[p]) \
            .view(N, H, W, C).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense(_pair_alpha_weights(pix, rank, a, n_pix)), alpha_composite(idx, alphas, feats))
    torch.testing.assert_close(dense(_pair_norm_weights(pix, a, n_pix)), norm_weighted_sum(idx, alphas, feats))


@pytest.mark.parametrize("accumulation", ["alphacomposite", "wsumnorm", "wsum"])
@pytest.mark.parametrize("K", [2, 40])
def test_splat_pair_path_equals_fragments_path(accumulation, K):
    # SynSin's splat_features composites straight from the rasterizer's pair list; it must give the
    # numbers (and gradients) of rasterize_packed_points + alphas + the padded compositor.
    from lib3d.render.point_rasterizer import rasterize_packed_points
    from lib3d.synthesis.synsin import alphas_from_dists, splat_features

    g = torch.Generator().manual_seed(11)
    N, P, C, H, W = 2, 150, 4, 12, 14
    pts = torch.rand(N, P, 3, generator=g, dtype=torch.float64) * 2.2 - 1.1
    pts[..., 2] = torch.rand(N, P, generator=g, dtype=torch.float64) * 2 - 0.2  # a few behind the camera
    feats = torch.rand(N, C, P, generator=g, dtype=torch.float64)
    radius_px, tau = 2.5, 1.5
    r = 2 * radius_px / min(H, W)
    comp = {"alphacomposite": alpha_composite, "wsumnorm": norm_weighted_sum, "wsum": weighted_sum}[accumulation]

    def fragments_path(p, f):
        fr = rasterize_packed_points(p.reshape(N * P, 3), torch.arange(N) * P, torch.full((N,), P), (H, W), r, K)
        a = alphas_from_dists(fr.dists, r, tau).permute(0, 3, 1, 2)
        return comp(fr.idx.permute(0, 3, 1, 2), a, f.permute(1, 0, 2).reshape(C, N * P))

    def pair_path(p, f):
        return splat_features(p, f, (H, W), radius_px=radius_px, points_per_pixel=K, tau=tau,
                              accumulation=accumulation)

    w = torch.rand(N, C, H, W, generator=g, dtype=torch.float64)
    outs = []
    for fn in (fragments_path, pair_path):
        p, f = pts.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        img = fn(p, f)
        (img * w).sum().backward()
        outs.append((img.detach(), p.grad, f.grad))
    assert outs[0][0].abs().sum() > 0
    for x, y in zip(*outs):
        torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


def test_splat_pair_path_gradcheck_with_culling():
    from lib3d.synthesis.synsin import splat_features

    g = torch.Generator().manual_seed(5)
    P = 8
    pts = torch.rand(1, P, 3, generator=g, dtype=torch.float64) * 1.2 - 0.6
    pts[..., 2] = torch.rand(1, P, generator=g, dtype=torch.float64) + 0.5
    f = torch.rand(1, 2, P, generator=g, dtype=torch.float64)
    fn = lambda p, x: splat_features(p, x, (5, 5), radius_px=2.0, points_per_pixel=2, tau=1.0)
    assert torch.autograd.gradcheck(fn, (pts.requires_grad_(True), f.requires_grad_(True)), eps=1e-6, atol=1e-5)
