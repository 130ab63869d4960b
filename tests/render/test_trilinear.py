"""The compiled CPU trilinear sampler against ``grid_sample``: values, gradients, edge cases, fallbacks.

The compiled path is the caller's choice (``compiled=True``) and starts at ``COMPILED_MIN_POINTS`` points;
these tests lower the threshold to 0 so that small inputs take it (the first test pays the compilation,
about 10 s).
"""

import pytest
import torch
import torch.nn.functional as F

import lib3d.render.trilinear as tri
from lib3d.render import (
    NDCMultinomialRaysampler,
    Volumes,
    VolumeSampler,
    ray_bundle_to_ray_points,
    sample_volume,
)


@pytest.fixture
def compiled(monkeypatch):
    """Every input asked to be compiled takes the compiled path (kernels shared across tests)."""
    monkeypatch.setattr(tri, "COMPILED_MIN_POINTS", 0)
    return tri


def _reference(grid, local):
    """``grid_sample`` at ``(P, 3)`` local points -> ``(P, C)``."""
    c = grid.shape[0]
    return F.grid_sample(grid[None], local.reshape(1, -1, 1, 1, 3), align_corners=True).view(c, -1).t()


def _points(n, dtype, gen):
    pts = torch.rand(n, 3, generator=gen, dtype=dtype) * 3.2 - 1.6  # inside, at the border and outside
    pts[:4] = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0 + 1e-3, 0.0, 0.0], [-1.2, 0.3, 0.9]])
    return pts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [4, 1])
def test_points_match_grid_sample(compiled, dtype, channels):
    gen = torch.Generator().manual_seed(channels)
    grid = torch.randn(channels, 5, 6, 7, generator=gen, dtype=dtype, requires_grad=True)
    pts = _points(2000, dtype, gen)
    out = compiled.trilinear_sample(grid, pts, compiled=True)
    ref = _reference(grid, pts)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref, atol=tol, rtol=0)
    w = torch.randn(out.shape, generator=gen, dtype=dtype)
    (ga,) = torch.autograd.grad((out * w).sum(), grid)
    (gb,) = torch.autograd.grad((ref * w).sum(), grid)
    torch.testing.assert_close(ga, gb, atol=tol * 10, rtol=0)


def test_non_finite_points_read_zero_and_get_no_gradient(compiled):
    grid = torch.randn(4, 5, 6, 7, requires_grad=True)
    pts = torch.tensor([[float("nan"), 0.0, 0.0], [0.0, float("inf"), 0.0], [0.0, 0.0, -float("inf")],
                        [1e30, 0.0, 0.0]])
    out = compiled._TrilinearPoints.apply(grid, pts)  # straight to the kernel (no skipping of far points)
    assert torch.equal(out, torch.zeros(4, 4))
    (g,) = torch.autograd.grad(out.sum(), grid)
    assert torch.equal(g, torch.zeros_like(grid))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rays_match_grid_sample_per_channel_group(compiled, dtype):
    gen = torch.Generator().manual_seed(3)
    grid = torch.randn(4, 6, 5, 7, generator=gen, dtype=dtype, requires_grad=True)
    R, S = 60, 24
    o = torch.randn(R, 3, generator=gen, dtype=dtype) * 2
    d = torch.randn(R, 3, generator=gen, dtype=dtype)
    t = torch.rand(R, S, generator=gen, dtype=dtype).sort(dim=1).values * 4
    offset = torch.tensor([0.1, -0.2, 0.05], dtype=dtype)
    scale = torch.tensor([0.7, 0.8, 0.9], dtype=dtype)
    dens, feats = compiled.sample_grid_along_rays(grid, o, d, t, offset, scale, (1, 3), compiled=True)
    local = ((o[:, None] + t[..., None] * d[:, None]) + offset) / scale
    ref = _reference(grid, local).view(R, S, 4)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(dens, ref[..., :1], atol=tol, rtol=0)
    torch.testing.assert_close(feats, ref[..., 1:], atol=tol, rtol=0)
    # a loss that uses the two groups differently, and one that ignores the densities
    for loss_of in (lambda a, b: (a * 2).sum() + (b ** 2).sum(), lambda a, b: b.sum()):
        (ga,) = torch.autograd.grad(loss_of(*compiled.sample_grid_along_rays(grid, o, d, t, offset, scale, (1, 3),
                                                                              compiled=True)), grid)
        (gb,) = torch.autograd.grad(loss_of(ref[..., :1], ref[..., 1:]), grid, retain_graph=True)
        torch.testing.assert_close(ga, gb, atol=tol * 10, rtol=0)


def test_volume_sampler_compiled_matches_grid_sample_path(compiled, monkeypatch):
    from lib3d.geometry import look_at_view_transform
    from lib3d.geometry.cameras import FoVPerspectiveCameras

    R, T = look_at_view_transform(dist=2.7, elev=[10.0, 30.0], azim=[0.0, 120.0])
    bundle = NDCMultinomialRaysampler(image_width=12, image_height=10, n_pts_per_ray=20, min_depth=0.5,
                                      max_depth=4.0)(FoVPerspectiveCameras(R=R, T=T))
    gen = torch.Generator().manual_seed(0)
    dens = torch.rand(1, 1, 16, 16, 16, generator=gen, requires_grad=True)
    feats = torch.rand(1, 3, 16, 16, 16, generator=gen, requires_grad=True)
    vols = Volumes.from_shared_grid(dens[0], feats[0], batch_size=2, voxel_size=3.0 / 16,
                                    volume_translation=(0.1, 0.0, -0.2))
    assert vols.is_shared and not Volumes(dens.expand(2, -1, -1, -1, -1)).is_shared
    d_fast, f_fast = VolumeSampler(vols, compiled=True)(bundle)
    # the reference: each camera's own grid_sample over materialised world points
    d_ref, f_ref = sample_volume(Volumes(dens.expand(2, -1, -1, -1, -1).clone(), feats.expand(2, -1, -1, -1, -1)
                                         .clone(), voxel_size=3.0 / 16, volume_translation=(0.1, 0.0, -0.2)),
                                 ray_bundle_to_ray_points(bundle))
    assert d_fast.shape == d_ref.shape == (2, 10, 12, 20, 1) and f_fast.shape == f_ref.shape == (2, 10, 12, 20, 3)
    torch.testing.assert_close(d_fast, d_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(f_fast, f_ref, atol=1e-6, rtol=0)
    ga = torch.autograd.grad(d_fast.sum() + (f_fast * 3).sum(), (dens, feats))
    gb = torch.autograd.grad(d_ref.sum() + (f_ref * 3).sum(), (dens, feats))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.fixture
def broken_compiler(monkeypatch):
    """torch.compile that fails when the kernel runs (no C++ compiler); the kernel memo is emptied before
    and after, so that no other test sees the broken kernels."""
    def broken(fn):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    tri._compiled_kernel.cache_clear()
    monkeypatch.setattr(tri.torch, "compile", broken)
    monkeypatch.setattr(tri, "COMPILED_MIN_POINTS", 0)
    yield
    tri._compiled_kernel.cache_clear()


def test_compile_failure_names_the_remedy(broken_compiler):
    grid = torch.randn(2, 4, 5, 6, requires_grad=True)
    pts = _points(500, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler.*compiled=False"):
        tri.trilinear_sample(grid, pts, compiled=True)
    out = tri.trilinear_sample(grid, pts)  # the default never compiles
    torch.testing.assert_close(out, _reference(grid, pts), atol=1e-6, rtol=0)


def test_the_path_is_the_callers_choice(monkeypatch):
    """No environment variable, no module state: ``compiled`` and the input decide."""
    grid = torch.zeros(1, 4, 4, 4)
    monkeypatch.setenv("LIB3D_COMPILE", "0")  # the old switch: ignored
    assert tri._compiled_enabled(grid, tri.COMPILED_MIN_POINTS, True)
    assert not tri._compiled_enabled(grid, 10**9, False)
    assert not tri._compiled_enabled(grid, tri.COMPILED_MIN_POINTS - 1, True)
    assert not tri._compiled_enabled(grid.half(), 10**9, True)


def test_errors():
    grid = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        tri.sample_grid_along_rays(grid, torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 5), torch.zeros(3),
                                   torch.ones(3), (2,))
    with pytest.raises(ValueError, match="lengths"):
        tri.sample_grid_along_rays(grid, torch.zeros(2, 3), torch.ones(2, 3), torch.ones(3, 5), torch.zeros(3),
                                   torch.ones(3))
