"""Volumetric rendering: PyTorch3D parity (golden), hand-computed compositing, references, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from lib3d.render import (
    AbsorptionOnlyRaymarcher,
    EmissionAbsorptionRaymarcher,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    VolumeRenderer,
    Volumes,
    VolumeSampler,
    accumulate_along_rays,
    emission_absorption,
    jiggle_within_stratas,
    ray_aabb_intersect,
    ray_bundle_to_ray_points,
    render_rays,
    render_weight_from_alpha,
    render_weight_from_density,
    sample_images_at_mc_locs,
    sample_pdf,
    sample_pdf_python,
    sample_volume,
    stratified_lengths,
)
from lib3d.render.trilinear import trilinear_sample
from tests.helpers import golden_case, load_golden

TOL = 1e-5


def _cams(R, T):
    from lib3d.geometry import FoVPerspectiveCameras

    return FoVPerspectiveCameras(R=R, T=T)


@pytest.fixture(scope="module")
def golden():
    return load_golden("volumes")[0]


def test_raysampler_golden(golden):
    g = golden_case(golden, "raysampler")
    rs = NDCMultinomialRaysampler(image_width=20, image_height=16, n_pts_per_ray=12, min_depth=0.1, max_depth=3.0)
    b = rs(_cams(g["R"], g["T"]))
    for k in ("origins", "directions", "lengths", "xys"):
        torch.testing.assert_close(getattr(b, k), g[k], atol=TOL, rtol=TOL)


def _golden_bundle(golden):
    g = golden_case(golden, "raysampler")
    return RayBundle(g["origins"], g["directions"], g["lengths"], g["xys"]), g


def test_volume_sampler_golden(golden):
    bundle, _ = _golden_bundle(golden)
    v = golden_case(golden, "volume_sampler")
    vol = Volumes(v["densities"], v["features"], voxel_size=0.25, volume_translation=(0.1, -0.2, 0.05))
    d, f = VolumeSampler(vol)(bundle)
    torch.testing.assert_close(d, v["rays_densities"], atol=TOL, rtol=0)
    torch.testing.assert_close(f, v["rays_features"], atol=TOL, rtol=0)


def test_volume_sampler_shared_grid_fast_path_matches(golden):
    """One grid declared shared (``Volumes.from_shared_grid``) is sampled once for the batch; it must equal
    per-camera grid_sample of the same grid copied per camera, for points and along rays."""
    bundle, _ = _golden_bundle(golden)
    v = golden_case(golden, "volume_sampler")
    shared = Volumes.from_shared_grid(v["densities"][0], v["features"][0], batch_size=2, voxel_size=0.25,
                                      volume_translation=(0.1, -0.2, 0.05))
    copied = Volumes(v["densities"][:1].repeat(2, 1, 1, 1, 1), v["features"][:1].repeat(2, 1, 1, 1, 1),
                     voxel_size=0.25, volume_translation=(0.1, -0.2, 0.05))
    assert shared.is_shared and shared[0].is_shared and shared.detach().is_shared and not copied.is_shared
    pts = ray_bundle_to_ray_points(bundle)
    for fast in (sample_volume(shared, pts), VolumeSampler(shared)(bundle)):
        slow = sample_volume(copied, pts)
        torch.testing.assert_close(fast[0], slow[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(fast[1], slow[1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="batch_size"):
        Volumes.from_shared_grid(v["densities"][0], batch_size=0)


def test_raymarchers_golden(golden):
    v = golden_case(golden, "volume_sampler")
    r = golden_case(golden, "raymarchers")
    ea = EmissionAbsorptionRaymarcher()(v["rays_densities"], v["rays_features"])
    ao = AbsorptionOnlyRaymarcher()(v["rays_densities"])
    torch.testing.assert_close(ea, r["emission_absorption"], atol=TOL, rtol=0)
    torch.testing.assert_close(ao, r["absorption_only"], atol=TOL, rtol=0)


def test_volume_renderer_golden(golden):
    g = golden_case(golden, "raysampler")
    v = golden_case(golden, "volume_sampler")
    rs = NDCMultinomialRaysampler(image_width=20, image_height=16, n_pts_per_ray=12, min_depth=0.1, max_depth=3.0)
    vol = Volumes(v["densities"], v["features"], voxel_size=0.25, volume_translation=(0.1, -0.2, 0.05))
    img, bundle = VolumeRenderer(rs, EmissionAbsorptionRaymarcher())(cameras=_cams(g["R"], g["T"]), volumes=vol)
    torch.testing.assert_close(img, golden_case(golden, "volume_renderer")["image"], atol=TOL, rtol=0)
    assert bundle.lengths.shape == (2, 16, 20, 12)


def test_emission_absorption_hand_computed():
    # densities 0.5, 0.5 -> weights 0.5 and 0.5 * (1 - 0.5) = 0.25; opacity 1 - 0.25 = 0.75
    d = torch.tensor([[0.5], [0.5]])
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = emission_absorption(d, f, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.25, 0.75]))


def test_render_weight_from_density_hand_computed():
    # sigma = ln 2 on unit intervals: alpha = 0.5; T = [1, 0.5, 0.25]; w = [0.5, 0.25, 0.125]
    s = torch.full((3,), math.log(2.0))
    w, T, a = render_weight_from_density(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]), s)
    torch.testing.assert_close(w, torch.tensor([0.5, 0.25, 0.125]))
    torch.testing.assert_close(T, torch.tensor([1.0, 0.5, 0.25]))
    w2, T2 = render_weight_from_alpha(a)
    torch.testing.assert_close(w2, w)
    torch.testing.assert_close(accumulate_along_rays(w), torch.tensor([0.875]))


def test_one_compositing_routine():
    """Emission-absorption, NeRF weights and packed samples all go through render_weight_from_alpha."""
    g = torch.Generator().manual_seed(0)
    d = torch.rand(4, 6, generator=g, dtype=torch.float64)
    f = torch.rand(4, 6, 3, generator=g, dtype=torch.float64)
    for thick in (1, 2):
        w, _ = render_weight_from_alpha(d, 1 + 1e-10 - d, shift=thick)
        ref = torch.stack([d[:, i] * torch.prod(1 + 1e-10 - d[:, :max(i - thick + 1, 0)], dim=1) for i in range(6)], 1)
        torch.testing.assert_close(w, ref)
        out = emission_absorption(d[..., None], f, surface_thickness=thick)
        torch.testing.assert_close(out[..., :3], (w[..., None] * f).sum(1))
    # packed (rays of 6, 0, 2, 6 samples kept) equals padded
    t0 = torch.rand(4, 6, generator=g, dtype=torch.float64).cumsum(1)
    t1 = t0 + 0.3
    sig = torch.rand(4, 6, generator=g, dtype=torch.float64) * 3
    keep = torch.tensor([[1] * 6, [0] * 6, [1, 1, 0, 0, 0, 0], [1] * 6], dtype=torch.bool)
    w_pad, T_pad, _ = render_weight_from_density(t0, t1, sig.masked_fill(~keep, 0.0))
    ray = torch.arange(4)[:, None].expand(4, 6)[keep]
    w_pk, T_pk, _ = render_weight_from_density(t0[keep], t1[keep], sig[keep], ray_indices=ray)
    torch.testing.assert_close(w_pk, w_pad[keep])
    torch.testing.assert_close(T_pk, T_pad[keep])
    acc = accumulate_along_rays(w_pk, f[keep], ray_indices=ray, num_rays=4)
    torch.testing.assert_close(acc, accumulate_along_rays(w_pad, f))
    torch.testing.assert_close(accumulate_along_rays(w_pk, ray_indices=ray, num_rays=4), accumulate_along_rays(w_pad))
    with pytest.raises(ValueError, match="shift"):
        render_weight_from_alpha(d.reshape(-1), ray_indices=torch.zeros(24, dtype=torch.long), shift=2)
    with pytest.raises(ValueError, match="num_rays"):
        accumulate_along_rays(w_pk, ray_indices=ray)


def test_render_rays_in_box_matches_render_rays():
    """The packed marcher with callbacks equals ``render_rays`` on the same samples (no skipping)."""
    from lib3d.render import render_rays_in_box

    def density(p):
        return 4.0 * torch.exp(-(p ** 2).sum(-1) * 3)

    def color(p, d):
        return torch.sigmoid(torch.stack([p[:, 0], p[:, 1] + d[:, 2], p[:, 2]], -1))

    o = torch.tensor([[0.1, -0.2, -3.0], [0.3, 0.2, -3.0], [5.0, 5.0, -3.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.1, 1.0], [-0.1, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64) * 2.0
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    step = 0.05
    out = render_rays_in_box(density, color, o, d, step, aabb, color_threshold=0.0, background=0.2)
    t0, t1, hit = ray_aabb_intersect(o, torch.nn.functional.normalize(d, dim=-1), aabb[0], aabb[1])
    assert hit.tolist() == [True, True, False]
    for r in range(2):  # the same samples, padded, through render_rays (lengths in units of |d|)
        n = int(torch.ceil((t1[r] - t0[r]) / step))
        t = t0[r] + (torch.arange(n, dtype=torch.float64) + 0.5) * step
        t = t[t < t1[r]]
        def field(p, dd):
            return color(p, torch.nn.functional.normalize(dd, dim=-1)), density(p)

        ref = render_rays(field, o[r], d[r], t / d[r].norm(), far=float((t[-1] + step) / d[r].norm()),
                          background=0.2)
        torch.testing.assert_close(out.rgb[r], ref.rgb)
        torch.testing.assert_close(out.opacity[r], ref.opacity)
    torch.testing.assert_close(out.rgb[2], torch.full((3,), 0.2, dtype=torch.float64))
    # an empty occupancy grid skips every sample
    empty = render_rays_in_box(density, color, o, d, step, aabb, occupancy=torch.zeros(4, 4, 4, dtype=torch.bool))
    assert empty.num_samples == 0 and float(empty.opacity.abs().max()) == 0.0


def test_render_weight_gradcheck():
    t0 = torch.tensor([[0.0, 0.3, 0.7]], dtype=torch.float64)
    t1 = torch.tensor([[0.3, 0.7, 1.2]], dtype=torch.float64)
    s = torch.rand(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: render_weight_from_density(t0, t1, x)[0], (s,))


def test_render_rays_constant_field():
    # constant sigma: opacity = 1 - exp(-sigma * total length); colour = opacity * c + (1 - opacity) * bg
    def field(p, d):
        return torch.full(p.shape[:-1] + (3,), 0.2), torch.full(p.shape[:-1], 0.5)

    o = torch.zeros(4, 3)
    d = torch.tensor([[0.0, 0.0, 2.0]]).expand(4, 3)  # |d| = 2: world length is twice the depth range
    t = torch.linspace(0, 1, 11)[:-1].expand(4, 10)
    out = render_rays(field, o, d, t, far=1.0, background=1.0)
    op = 1 - math.exp(-0.5 * 2.0)
    torch.testing.assert_close(out.opacity, torch.full((4, 1), op))
    torch.testing.assert_close(out.rgb, torch.full((4, 3), 0.2 * op + (1 - op)))


def test_sample_pdf_matches_reference():
    g = torch.Generator().manual_seed(0)
    bins = torch.sort(torch.rand(4, 9, generator=g), -1)[0]
    w = torch.rand(4, 8, generator=g)
    w[1] = 0
    fast = sample_pdf(bins, w, 16, det=False, generator=torch.Generator().manual_seed(1))
    slow = sample_pdf_python(bins, w, 16, det=False, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    det = sample_pdf(bins, w, 7, det=True)
    assert bool((det >= bins[:, :1] - 1e-6).all()) and bool((det <= bins[:, -1:] + 1e-6).all())


def test_sample_pdf_concentrates_on_heavy_bin():
    bins = torch.linspace(0, 1, 11)[None]
    w = torch.zeros(1, 10)
    w[0, 3] = 1.0
    s = sample_pdf(bins, w, 200, generator=torch.Generator().manual_seed(0))
    assert float(((s >= 0.3) & (s <= 0.4)).float().mean()) > 0.95


@pytest.mark.parametrize("n", [1, 3])
def test_trilinear_sample_matches_grid_sample_forward_backward(n):
    g = torch.Generator().manual_seed(n)
    grid = torch.randn(n, 5, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    pts = torch.rand(300, 3, generator=g, dtype=torch.float64) * 2.8 - 1.4  # many outside
    out = trilinear_sample(grid, pts)
    ref = F.grid_sample(grid[None], pts.view(1, -1, 1, 1, 3), align_corners=True).view(n, -1).t()
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(out)
    (ga,) = torch.autograd.grad((out * w).sum(), grid)
    (gb,) = torch.autograd.grad((ref * w).sum(), grid)
    torch.testing.assert_close(ga, gb)


def test_monte_carlo_and_images_at_locs():
    from lib3d.geometry import look_at_view_transform

    R, T = look_at_view_transform(2.7, 0, torch.tensor([0.0, 90.0]))
    cams = _cams(R, T)
    mc = MonteCarloRaysampler(-1, 1, -1, 1, n_rays_per_image=50, n_pts_per_ray=8, min_depth=0.1, max_depth=3.0)
    b = mc(cams, generator=torch.Generator().manual_seed(0))
    assert b.origins.shape == (2, 50, 3) and b.lengths.shape == (2, 50, 8) and b.xys.shape == (2, 50, 2)
    assert bool((b.xys.abs() <= 1).all())
    # an image whose value is its own NDC x: sampled values must equal the rays' x
    H = W = 16
    full = NDCMultinomialRaysampler(image_width=W, image_height=H, n_pts_per_ray=1, min_depth=1, max_depth=1)(cams)
    img = full.xys[..., :1].contiguous()
    vals = sample_images_at_mc_locs(img, full.xys)
    # the book samples with align_corners=True: NDC x maps to pixel j = (1 - x) (W - 1) / 2 (left is +x)
    x = full.xys[..., :1]
    expected = 1 - ((1 - x) * (W - 1) + 1) / W
    torch.testing.assert_close(vals, expected, atol=1e-5, rtol=0)


def test_jiggle_and_stratified_stay_in_strata():
    c = torch.linspace(0, 1, 5).expand(3, 5)
    j = jiggle_within_stratas(c, generator=torch.Generator().manual_seed(0))
    assert bool((j[:, 1:] >= j[:, :-1]).all())
    t = stratified_lengths(1.0, 2.0, 4, (3,), generator=torch.Generator().manual_seed(0))
    assert t.shape == (3, 4) and bool((t >= 1).all() and (t <= 2).all())


def test_ray_aabb():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 5.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t0, t1, hit = ray_aabb_intersect(o, d, (-1, -1, -1), (1, 1, 1))
    torch.testing.assert_close(t0[0], torch.tensor(2.0))
    torch.testing.assert_close(t1[0], torch.tensor(4.0))
    assert hit.tolist() == [True, False]


def test_implicit_renderer_with_callback(golden):
    g = golden_case(golden, "raysampler")
    rs = NDCMultinomialRaysampler(image_width=8, image_height=6, n_pts_per_ray=5, min_depth=0.1, max_depth=3.0)

    def vf(ray_bundle, **kw):
        shape = ray_bundle.lengths.shape
        return torch.full(shape + (1,), 0.1), torch.ones(shape + (3,))

    img, b = ImplicitRenderer(rs, EmissionAbsorptionRaymarcher())(cameras=_cams(g["R"], g["T"]), volumetric_function=vf)
    assert img.shape == (2, 6, 8, 4)
    torch.testing.assert_close(img[..., 3], torch.full((2, 6, 8), 1 - 0.9 ** 5))


def test_errors():
    with pytest.raises(ValueError, match="rays_densities"):
        emission_absorption(torch.full((3, 1), 1.5), torch.ones(3, 2))
    with pytest.raises(ValueError, match="rays_features"):
        emission_absorption(torch.full((3, 1), 0.5), torch.ones(4, 2))
    with pytest.raises(ValueError, match="bins"):
        sample_pdf(torch.rand(2, 5), torch.rand(2, 5), 3)
    with pytest.raises(ValueError, match="densities"):
        Volumes(torch.rand(2, 4, 4, 4))
    with pytest.raises(TypeError):
        render_weight_from_density(torch.zeros(3), torch.ones(3), [1, 2, 3])


def test_volume_sampler_gradient_reaches_points():
    """Camera/ray gradients flow through the sampler as in PyTorch3D (grid_sample path)."""
    g = torch.Generator().manual_seed(0)
    dens = torch.rand(1, 1, 5, 6, 7, generator=g, dtype=torch.float64).expand(2, -1, -1, -1, -1)
    pts = (torch.rand(2, 10, 3, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    vol = Volumes(dens, voxel_size=0.3)
    assert torch.autograd.gradcheck(lambda p: sample_volume(vol, p)[0], (pts,))
