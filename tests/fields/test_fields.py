"""Fields: harmonic embedding parity, the NeRF MLPs, the fast grid renderer against a slow reference."""

import math

import pytest
import torch

from lib3d.fields import (
    BookNeuralRadianceField,
    GridRadianceField,
    HarmonicEmbedding,
    NeRFMLP,
    OriginalNeRF,
    huber,
    render_grid_field,
    total_variation,
)
from lib3d.fields.voxel import update_occupancy, upsample_grid_field
from lib3d.render import RayBundle, ray_aabb_intersect
from tests.helpers import golden_case, load_golden


def test_harmonic_embedding_golden():
    g = golden_case(load_golden("ops")[0], "harmonic_embedding")
    torch.testing.assert_close(HarmonicEmbedding(6, 1.0, True, append_input=False)(g["x"]), g["out"],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(HarmonicEmbedding(6, 1.0, True, append_input=True)(g["x"]), g["out_append"],
                               atol=1e-5, rtol=0)


def test_harmonic_embedding_layout_and_dim():
    emb = HarmonicEmbedding(2, omega_0=0.5, append_input=True)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = emb(x)
    assert out.shape == (1, emb.get_output_dim(3)) == (1, 15)
    # [sin(x_d f_k)] for d, k then [cos(...)] then x; f = [0.5, 1.0]
    torch.testing.assert_close(out[0, 0], torch.sin(torch.tensor(0.5)))
    torch.testing.assert_close(out[0, 3], torch.sin(torch.tensor(2.0)))  # x_1 f_1 = 2 * 1
    torch.testing.assert_close(out[0, 6], torch.cos(torch.tensor(0.5)))
    torch.testing.assert_close(out[0, 12:], x[0])


def test_book_nerf_shapes_and_init():
    nerf = BookNeuralRadianceField(n_harmonic_functions=8, n_hidden_neurons=32)
    b = RayBundle(torch.zeros(2, 5, 3), torch.randn(2, 5, 3), torch.linspace(0.1, 3, 7).expand(2, 5, 7),
                  torch.zeros(2, 5, 2))
    dens, cols = nerf(b)
    assert dens.shape == (2, 5, 7, 1) and cols.shape == (2, 5, 7, 3)
    assert bool((dens >= 0).all() and (dens <= 1).all())
    assert float(nerf.density_layer[0].bias[0].detach()) == -1.5
    d2, c2 = nerf.batched_forward(b, n_batches=3)
    torch.testing.assert_close(d2, dens)
    torch.testing.assert_close(c2, cols)
    assert BookNeuralRadianceField().harmonic_embedding(torch.zeros(1, 3)).shape == (1, 360)


def test_original_nerf_shapes_and_skip():
    mlp = NeRFMLP()
    assert len(mlp.layers) == 8 and mlp.layers[4].in_features == 256 + 63
    rgb, sigma = mlp(torch.randn(10, 3), torch.randn(10, 3))
    assert rgb.shape == (10, 3) and sigma.shape == (10,) and bool((sigma >= 0).all())
    model = OriginalNeRF(n_layers=2, width=16, skip=1)
    out = model(torch.zeros(4, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3), 1.0, 3.0, n_coarse=8, n_fine=8,
                generator=torch.Generator().manual_seed(0))
    assert out.coarse.rgb.shape == (4, 3) and out.fine.weights.shape == (4, 16)


def test_huber_and_tv():
    # huber(0.3, 0, 0.1) = 0.1 * (sqrt(1 + 9) - 1)
    torch.testing.assert_close(huber(torch.tensor(0.3), torch.tensor(0.0)), torch.tensor(0.1 * (math.sqrt(10) - 1)))
    g = torch.zeros(3, 3, 3)
    g[1, 1, 1] = 1.0
    # 2 non-zero differences per axis out of 18 per axis: 3 * 2 / 18
    torch.testing.assert_close(total_variation(g), torch.tensor(3 * 2 / 18))


def _reference_render(field, o, d, step, background):
    """Slow per-ray loop with the same samples as render_grid_field (stratified=False, no skipping)."""
    rgbs, ops = [], []
    for r in range(o.shape[0]):  # loop over rays: a slow reference
        scale = d[r].norm()
        dn = d[r] / scale
        t0, t1, hit = ray_aabb_intersect(o[r:r + 1], dn[None], field.aabb[0], field.aabb[1])
        if not bool(hit[0]):
            rgbs.append(torch.zeros(3, dtype=o.dtype) + background)
            ops.append(torch.zeros((), dtype=o.dtype))
            continue
        n = int(math.ceil(float((t1 - t0) / step)))
        t = t0 + (torch.arange(n, dtype=o.dtype) + 0.5) * step
        t = t[t < t1]
        pts = o[r] + t[:, None] * dn
        rgb, sigma = field(pts, dn.expand_as(pts))
        alpha = 1 - torch.exp(-sigma * step)
        T = torch.cumprod(torch.cat([torch.ones(1, dtype=o.dtype), 1 - alpha[:-1]]), 0)
        w = T * alpha
        op = w.sum()
        rgbs.append((w[:, None] * rgb).sum(0) + (1 - op) * background)
        ops.append(op)
    return torch.stack(rgbs), torch.stack(ops)


@pytest.mark.parametrize("hidden", [0, 8])
def test_render_grid_field_matches_reference(hidden):
    torch.manual_seed(0)
    field = GridRadianceField(((-1, -1, -1), (1, 1, 1)), (6, 7, 5), (4, 5, 3), n_features=3 if hidden == 0 else 4,
                              hidden=hidden, alpha_init=0.1, step=0.2).double()
    with torch.no_grad():
        field.density.normal_(0, 2)
        field.features.normal_(0, 1)
        if hidden:
            for p in field.mlp.parameters():
                p.normal_(0, 0.3)
    o = torch.randn(12, 3, dtype=torch.float64) * 0.2 + torch.tensor([0, 0, -3.0], dtype=torch.float64)
    d = torch.randn(12, 3, dtype=torch.float64) * 0.2 + torch.tensor([0, 0, 1.0], dtype=torch.float64)
    d = d * 1.7  # non-unit directions
    out = render_grid_field(field, o, d, 0.2, background=0.3, color_threshold=0.0, use_occupancy=False)
    ref_rgb, ref_op = _reference_render(field, o, d, 0.2, 0.3)
    torch.testing.assert_close(out.rgb, ref_rgb)
    torch.testing.assert_close(out.opacity[:, 0], ref_op)
    w = torch.randn(12, 3, dtype=torch.float64)
    params = [field.density, field.features]
    ga = torch.autograd.grad((out.rgb * w).sum() + out.opacity.sum(), params)
    gb = torch.autograd.grad((ref_rgb * w).sum() + ref_op.sum(), params)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_occupancy_skipping_is_exact_on_empty_voxels():
    field = GridRadianceField(((-1, -1, -1), (1, 1, 1)), (8, 8, 8), (8, 8, 8), n_features=3, hidden=0, step=0.1)
    with torch.no_grad():
        field.density.fill_(-30.0)  # empty everywhere ...
        field.density[0, 2:6, 2:6, 2:6] = 5.0  # ... but a dense cube
    occ = update_occupancy(field, 0.1, alpha_threshold=1e-3)
    assert 0 < int(occ.sum()) < occ.numel()
    o = torch.tensor([[0.0, 0.0, -3.0], [0.9, 0.9, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    a = render_grid_field(field, o, d, 0.1, use_occupancy=True, color_threshold=0.0)
    b = render_grid_field(field, o, d, 0.1, use_occupancy=False, color_threshold=0.0)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=0)
    assert a.num_samples < b.num_samples
    up = upsample_grid_field(field, (12, 12, 12), (10, 10, 10))
    assert up.density.shape == (1, 12, 12, 12) and up.occupancy.shape == (12, 12, 12)


def test_grid_field_errors():
    with pytest.raises(ValueError, match="aabb"):
        GridRadianceField(((1, 1, 1), (0, 0, 0)), (4, 4, 4), (4, 4, 4))
    with pytest.raises(ValueError, match="n_features"):
        GridRadianceField(((-1, -1, -1), (1, 1, 1)), (4, 4, 4), (4, 4, 4), n_features=5, hidden=0)
    f = GridRadianceField(((-1, -1, -1), (1, 1, 1)), (4, 4, 4), (4, 4, 4))
    with pytest.raises(ValueError, match="directions"):
        render_grid_field(f, torch.zeros(3, 3), torch.ones(4, 3), 0.1)


def test_visual_hull_of_a_sphere():
    """Silhouettes of a sphere of radius 0.5 from 8 views carve a hull that holds the sphere and little more."""
    from lib3d.data.renders import view_cameras
    from lib3d.fields import hull_box, visual_hull, voxel_resolution

    cams = view_cameras(8, 180.0, endpoint=False, elev=torch.tensor([0.0, 30.0] * 4))
    H = W = 48
    from lib3d.render import image_rays

    o, d = image_rays(cams, H, W)
    # a pixel sees the sphere when its ray passes within 0.5 of the origin
    dn = torch.nn.functional.normalize(d, dim=-1)
    closest = o - (o * dn).sum(-1, keepdim=True) * dn
    sil = (closest.norm(dim=-1) < 0.5).float()
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    res = voxel_resolution(aabb, 21 ** 3)
    assert res == (21, 21, 21)
    hull = visual_hull(cams, sil, aabb, res, dilate_pixels=1)
    axis = torch.linspace(-1, 1, 21)
    Z, Y, X = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = torch.sqrt(X ** 2 + Y ** 2 + Z ** 2)
    assert bool(hull[r < 0.45].all())  # conservative: the sphere is inside
    assert not bool(hull[r > 0.9].any())  # and the far corners are carved away
    box = hull_box(hull, aabb, margin_voxels=0)
    assert bool((box[0] > -0.75).all() and (box[1] < 0.75).all() and (box[0] < -0.4).all())
    torch.testing.assert_close(hull_box(torch.zeros(3, 3, 3, dtype=torch.bool), aabb), aabb)


def test_harmonic_embedding_diag_cov_is_the_expected_encoding():
    """PyTorch3D's ``HarmonicEmbedding(...)(x, diag_cov=v)``: MipNeRF's integrated encoding equals the
    Monte-Carlo mean of the plain encoding under N(x, diag(v)); zero variance gives the plain encoding."""
    from lib3d.fields import HarmonicEmbedding

    g = torch.Generator().manual_seed(0)
    emb = HarmonicEmbedding(n_harmonic_functions=4, omega_0=1.0).double()
    x = torch.rand(3, 2, generator=g, dtype=torch.float64)
    var = torch.rand(3, 2, generator=g, dtype=torch.float64) * 0.05
    torch.testing.assert_close(emb(x, diag_cov=torch.zeros_like(var)), emb(x))
    samples = x + var.sqrt() * torch.randn(200_000, 3, 2, generator=g, dtype=torch.float64)
    mc = emb(samples).mean(0)
    ipe = emb(x, diag_cov=var)
    n = 2 * 2 * 4
    torch.testing.assert_close(ipe[:, :n], mc[:, :n], rtol=0, atol=5e-3)
    torch.testing.assert_close(ipe[:, n:], x)  # the appended input is x itself
    with pytest.raises(TypeError):
        emb(x, unknown=1)
