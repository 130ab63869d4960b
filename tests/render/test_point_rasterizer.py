"""Tests of lib3d.render.point_rasterizer: PyTorch3D parity, fast vs brute force, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.render.compositing import AlphaCompositor, NormWeightedCompositor, PointsRenderer
from lib3d.render.point_rasterizer import (
    PointsRasterizationSettings,
    PointsRasterizer,
    rasterize_packed_points,
    rasterize_points,
    rasterize_points_reference,
)
from lib3d.structures import Pointclouds
from tests.helpers import golden_case, load_golden

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs CUDA"))]


def _cloud(n_points=(300, 200), seed=0, dtype=torch.float32, device="cpu", features=3) -> Pointclouds:
    g = torch.Generator().manual_seed(seed)
    pts, feats = [], []
    for p in n_points:
        xy = (torch.rand(p, 2, generator=g) * 2 - 1) * 1.2
        z = torch.rand(p, 1, generator=g) * 3 - 0.3  # a few points behind the camera
        pts.append(torch.cat((xy, z), 1).to(dtype=dtype, device=device))
        feats.append(torch.rand(p, features, generator=g).to(dtype=dtype, device=device))
    return Pointclouds(points=pts, features=feats)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["r002_k8_64", "r005_k4_96x64"])
def test_golden_parity(case, device):
    tensors, cases = load_golden("rasterize_points")
    g = golden_case(tensors, case)
    meta = cases[case]
    pc = Pointclouds(points=g["points_ndc"].to(device), features=g["features"].to(device))
    K = g["idx"].shape[-1]
    fr = rasterize_points(pc, meta["image_size"], meta["radius"], K, bin_size=0)
    assert fr.idx.dtype == torch.int64
    agree = fr.idx.cpu() == g["idx"].long()
    assert agree.float().mean() >= 0.999
    m = agree & (g["idx"] >= 0)
    torch.testing.assert_close(fr.zbuf.cpu()[m], g["zbuf"][m], atol=1e-5, rtol=0)
    torch.testing.assert_close(fr.dists.cpu()[m], g["dists"][m], atol=1e-5, rtol=0)
    # Compositors on alphas = clamp(1 - dists / r^2, 0, 1).
    r = meta["radius"]
    alphas = (1 - fr.dists / r ** 2).clamp(0, 1).permute(0, 3, 1, 2)
    idx = fr.idx.permute(0, 3, 1, 2)
    feats = pc.features_packed().t()
    torch.testing.assert_close(AlphaCompositor()(idx, alphas, feats).cpu(), g["alpha_composite"], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(NormWeightedCompositor()(idx, alphas, feats).cpu(), g["norm_weighted"],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_size,radius,K", [(32, 0.05, 5), ((24, 40), 0.08, 3), ((40, 24), 0.03, 1)])
def test_fast_matches_reference_forward_backward(image_size, radius, K, device):
    pc = _cloud(device=device)
    pts = pc.points_packed().detach().requires_grad_(True)
    pc = Pointclouds(points=[pts[:300], pts[300:]])
    fast = rasterize_points(pc, image_size, radius, K, max_pairs_per_chunk=301)
    ref = rasterize_points_reference(pc, image_size, radius, K)
    assert torch.equal(fast.idx, ref.idx)
    assert (fast.idx >= 0).any()
    torch.testing.assert_close(fast.zbuf, ref.zbuf)
    torch.testing.assert_close(fast.dists, ref.dists)
    wz = torch.randn(fast.zbuf.shape, generator=torch.Generator().manual_seed(1)).to(device)
    wd = torch.randn(fast.zbuf.shape, generator=torch.Generator().manual_seed(2)).to(device)

    def loss(fr):
        m = fr.idx >= 0
        return (fr.zbuf * wz * m).sum() + (fr.dists * wd * m).sum()

    g_fast, = torch.autograd.grad(loss(fast), pts)
    g_ref, = torch.autograd.grad(loss(ref), pts)
    torch.testing.assert_close(g_fast, g_ref)


def test_per_point_radius_packed_and_padded():
    pc = _cloud((50, 30), seed=3)
    radius = torch.linspace(0.01, 0.2, 80)
    fr = rasterize_points(pc, 24, radius, 4)
    ref = rasterize_points_reference(pc, 24, radius, 4)
    assert torch.equal(fr.idx, ref.idx)
    padded = torch.zeros(2, 50)
    padded[0] = radius[:50]
    padded[1, :30] = radius[50:]
    assert torch.equal(rasterize_points(pc, 24, padded, 4).idx, fr.idx)
    # A bigger radius covers more pixels.
    assert (fr.idx >= 0).sum() > (rasterize_points(pc, 24, 0.01, 4).idx >= 0).sum()


def test_hand_computed_single_point():
    # One point at the centre of pixel (row 1, col 2) of a 4x4 image: NDC (-0.25, 0.25), z = 2.
    pc = Pointclouds(points=[torch.tensor([[-0.25, 0.25, 2.0], [-0.25, 0.25, -1.0]])])
    fr = rasterize_points(pc, 4, radius=0.3, points_per_pixel=2)
    assert fr.idx[0, 1, 2].tolist() == [0, -1]  # the point behind the camera is skipped
    assert fr.zbuf[0, 1, 2, 0] == 2.0 and fr.dists[0, 1, 2, 0] == 0.0
    # Neighbour centres are 0.5 away: outside radius 0.3.
    assert (fr.idx[0, :, :, 0] >= 0).sum() == 1
    fr = rasterize_points(pc, 4, radius=0.51, points_per_pixel=1)
    torch.testing.assert_close(fr.dists[0, 1, 1, 0], torch.tensor(0.25))
    assert (fr.idx[0, :, :, 0] >= 0).sum() == 5  # the pixel and its 4 neighbours


def test_depth_order_ties_by_index():
    pts = torch.tensor([[0.0, 0.0, 3.0], [0.01, 0.0, 1.0], [0.0, 0.01, 3.0]])
    fr = rasterize_points(Pointclouds(points=[pts]), 2, radius=1.0, points_per_pixel=3)
    assert fr.idx[0, 0, 0].tolist() == [1, 0, 2]


def test_gradcheck_float64():
    pts0 = torch.tensor([[0.1, 0.2, 1.5], [-0.3, 0.05, 2.0], [0.22, -0.41, 1.1]], dtype=torch.float64)

    def fn(p):
        fr = rasterize_packed_points(p, torch.tensor([0]), torch.tensor([3]), 8, 0.37, 2)
        m = (fr.idx >= 0).to(p.dtype)
        return fr.zbuf * m, fr.dists * m

    assert torch.autograd.gradcheck(fn, (pts0.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


def test_points_renderer_is_differentiable_in_points_and_features():
    geometry = pytest.importorskip("lib3d.geometry")
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(1, 400, 3, generator=g) - 0.5).requires_grad_(True)
    feats = torch.rand(1, 400, 3, generator=g).requires_grad_(True)
    R, T = geometry.look_at_view_transform(2.0, 10.0, 20.0)
    cameras = geometry.FoVPerspectiveCameras(R=R, T=T)
    renderer = PointsRenderer(PointsRasterizer(cameras, PointsRasterizationSettings(image_size=32, radius=0.05,
                                                                                    points_per_pixel=6)),
                              AlphaCompositor(background_color=(0.0, 0.0, 1.0)))
    img = renderer(Pointclouds(points=pts, features=feats))
    assert img.shape == (1, 32, 32, 3)
    img.sum().backward()
    assert pts.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0
    assert torch.isfinite(pts.grad).all()


def test_bad_inputs_raise():
    pc = _cloud((5,))
    with pytest.raises(TypeError, match="pointclouds"):
        rasterize_points(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="points_per_pixel"):
        rasterize_points(pc, 8, 0.1, 0)
    with pytest.raises(ValueError, match="radius"):
        rasterize_points(pc, 8, torch.ones(4), 2)
    with pytest.raises(TypeError, match="radius"):
        rasterize_points(pc, 8, [0.1, 0.2], 2)
    with pytest.raises(ValueError, match="image_size"):
        rasterize_points(pc, (0, 8))
    with pytest.raises(ValueError, match="points"):
        rasterize_packed_points(torch.zeros(5, 2), torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="cameras"):
        PointsRasterizer()(pc)




@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(1, 16), w=st.integers(1, 16), K=st.integers(1, 6),
       radius=st.floats(0.01, 0.5), budget=st.integers(1, 500))
def test_property_fast_equals_brute_force(seed, h, w, K, radius, budget):
    pc = _cloud((23, 11), seed=seed)
    fast = rasterize_points(pc, (h, w), radius, K, max_pairs_per_chunk=budget)
    ref = rasterize_points_reference(pc, (h, w), radius, K)
    assert torch.equal(fast.idx, ref.idx)
    torch.testing.assert_close(fast.zbuf, ref.zbuf)
    torch.testing.assert_close(fast.dists, ref.dists)


@pytest.mark.parametrize("per_point_radius", [False, True])
@pytest.mark.parametrize("budget", [1, 97, 1 << 20])
def test_selected_hits_are_pixel_major_and_by_point_is_point_major(per_point_radius, budget):
    # The pair list behind the fragments (and SynSin's splatting): pixel ascending, nearest first, ranks
    # 0..count-1, the K-culling exact (small budgets cull across chunks), by_point a valid point-major order.
    from lib3d.render.point_rasterizer import _select_hits

    pc = _cloud((120, 80), seed=5)
    pts = pc.points_packed()
    K, H, W = 3, 12, 10
    g = torch.Generator().manual_seed(4)
    rad = torch.rand(200, generator=g) * 0.3 + 0.05 if per_point_radius else torch.full((200,), 0.25)
    cloud = torch.cat((torch.zeros(120, dtype=torch.int64), torch.ones(80, dtype=torch.int64)))
    hits = _select_hits(pts, cloud, 2, rad, H, W, K, budget)
    ref = rasterize_points_reference(pc, (H, W), rad, K)
    slots = torch.nonzero(ref.idx.reshape(-1) >= 0).squeeze(1)
    assert torch.equal(hits.pix, torch.div(slots, K, rounding_mode="floor"))
    assert torch.equal(hits.rank, slots % K)
    assert torch.equal(hits.order[hits.j], ref.idx.reshape(-1)[slots])
    jb, pb = hits.j[hits.by_point], hits.pix[hits.by_point]
    assert torch.equal(torch.sort(hits.by_point).values, torch.arange(hits.pix.numel()))
    assert bool(((jb[1:] > jb[:-1]) | ((jb[1:] == jb[:-1]) & (pb[1:] > pb[:-1]))).all())


def test_equal_radius_window_path_matches_general_path():
    # A float radius takes the dense-window path; the same radius with one point's radius nudged takes the
    # general path. Both agree with each other and with the brute force (with culling: K = 2).
    pc = _cloud((400,), seed=7)
    P = 400
    r = torch.full((P,), 0.15)
    r_general = r.clone()
    r_general[0] = 0.15 * (1 + 1e-6)
    a = rasterize_points(pc, (20, 28), 0.15, 2, max_pairs_per_chunk=500)
    b = rasterize_points(pc, (20, 28), r_general, 2, max_pairs_per_chunk=500)
    ref = rasterize_points_reference(pc, (20, 28), r_general, 2)
    assert torch.equal(b.idx, ref.idx) and torch.equal(b.dists, ref.dists)
    ref = rasterize_points_reference(pc, (20, 28), 0.15, 2)
    assert torch.equal(a.idx, ref.idx) and torch.equal(a.zbuf, ref.zbuf) and torch.equal(a.dists, ref.dists)
