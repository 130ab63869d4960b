"""PyTorch3D drop-in behaviour of ``Volumes`` / ``VolumeLocator`` (issue 14): ``align_corners``, the locator's
methods, and batches of differently sized volumes. Expected values come from PyTorch3D's documentation of
``pytorch3d.structures.Volumes`` (its worked examples) and from hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib3d.render import VolumeLocator, Volumes, VolumeSampler, sample_volume
from lib3d.render.raysampling import RayBundle


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_documented_example_trivial_volume():
    """PyTorch3D's docstring: a 5x5x5 volume, voxel_size 1, no translation maps world (-2, 0, 2) to local
    (-1, 0, 1)."""
    vol = Volumes(torch.zeros(1, 1, 5, 5, 5))
    world = torch.tensor([[[-2.0, 0.0, 2.0]]])
    torch.testing.assert_close(vol.world_to_local_coords(world), torch.tensor([[[-1.0, 0.0, 1.0]]]))
    torch.testing.assert_close(vol.local_to_world_coords(torch.tensor([[[-1.0, 0.0, 1.0]]])), world)
    assert vol.get_align_corners() is True
    assert vol.locator.get_align_corners() is True


@pytest.mark.parametrize("align_corners", [True, False])
def test_coord_grid_resamples_to_itself(align_corners):
    """``grid_sample(densities, get_coord_grid(False), align_corners)`` gives the densities back (PyTorch3D's
    documented identity), and so does sample_volume at the world coordinates of the grid."""
    dens = _rand(2, 2, 3, 4, 5)
    feats = _rand(2, 3, 3, 4, 5, seed=1)
    vol = Volumes(dens, feats, voxel_size=(0.2, 0.3, 0.4), volume_translation=(0.1, -0.5, 0.3),
                  align_corners=align_corners)
    local = vol.get_coord_grid(world_coordinates=False)
    assert local.shape == (2, 3, 4, 5, 3)
    back = F.grid_sample(dens, local, align_corners=align_corners)
    torch.testing.assert_close(back, dens)
    d, f = sample_volume(vol, vol.get_coord_grid(world_coordinates=True))
    torch.testing.assert_close(d, dens.permute(0, 2, 3, 4, 1))
    torch.testing.assert_close(f, feats.permute(0, 2, 3, 4, 1))


def test_align_corners_false_local_coordinates_by_hand():
    """align_corners=False: voxel k of r voxels sits at (2k+1)/r - 1 in local coordinates (grid_sample's
    convention); the local-to-world map is the same as with True (PyTorch3D's)."""
    vol_f = Volumes(torch.zeros(1, 1, 2, 4, 1, dtype=torch.float64), align_corners=False)
    vol_t = Volumes(torch.zeros(1, 1, 2, 4, 1, dtype=torch.float64), align_corners=True)
    g = vol_f.get_coord_grid(world_coordinates=False)[0]  # (D=2, H=4, W=1, 3)
    torch.testing.assert_close(g[0, :, 0, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(g[:, 0, 0, 2], torch.tensor([-0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(g[0, 0, 0, 0], torch.tensor(0.0, dtype=torch.float64))  # W = 1: the centre
    gt = vol_t.get_coord_grid(world_coordinates=False)[0]
    torch.testing.assert_close(gt[0, :, 0, 1], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    pts = _rand(1, 7, 3, seed=3)
    torch.testing.assert_close(vol_f.local_to_world_coords(pts), vol_t.local_to_world_coords(pts))


def test_align_corners_false_sampling_by_hand():
    """A ramp along W with values 0..3 (2 x 2 voxels in D, H): with align_corners=False the world point of
    voxel k's centre reads value k; with True the same world point reads grid_sample's corner convention."""
    ramp = torch.arange(4, dtype=torch.float64).view(1, 1, 1, 1, 4).expand(1, 1, 2, 2, 4)
    vol = Volumes(ramp, voxel_size=1.0, align_corners=False)
    centres = vol.get_coord_grid()[0, 0, 0]  # (4, 3) world coordinates of the voxel centres
    d, _ = sample_volume(vol, centres[None])
    torch.testing.assert_close(d[0, :, 0], torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    # world x of voxel k: ((2k+1)/4 - 1) * 0.5 * (4 - 1) * 1 = (2k - 3) * 3 / 8
    torch.testing.assert_close(centres[:, 0], torch.tensor([-9, -3, 3, 9], dtype=torch.float64) / 8)
    # the same world point x = 9/8 in align_corners=True volumes is local 0.75 -> index (0.75 + 1) / 2 * 3
    d_t, _ = sample_volume(Volumes(ramp, align_corners=True), centres[None])
    torch.testing.assert_close(d_t[0, 3, 0], torch.tensor(2.625, dtype=torch.float64))


def test_volume_sampler_uses_align_corners():
    dens = _rand(1, 1, 4, 4, 4)
    vol = Volumes.from_shared_grid(dens[0], batch_size=1, voxel_size=0.5, align_corners=False)
    bundle = RayBundle(origins=_rand(1, 6, 3, seed=2) - 0.5, directions=_rand(1, 6, 3, seed=4) - 0.5,
                       lengths=_rand(1, 6, 5, seed=5), xys=torch.zeros(1, 6, 2, dtype=torch.float64))
    d, _ = VolumeSampler(vol)(bundle)
    pts = bundle.origins[..., None, :] + bundle.lengths[..., None] * bundle.directions[..., None, :]
    local = (pts / (0.5 * 3 * 0.5)).reshape(1, -1, 1, 1, 3)
    ref = F.grid_sample(dens, local, align_corners=False).reshape(1, 6, 5, 1)
    torch.testing.assert_close(d, ref)


def test_locator_methods():
    loc = VolumeLocator(2, [(3, 4, 5), (2, 2, 2)], "cpu", voxel_size=torch.tensor([[0.5], [2.0]]),
                        volume_translation=torch.tensor([[1.0, 2.0, 3.0]]))
    assert len(loc) == 2
    assert loc.get_grid_sizes().tolist() == [[3, 4, 5], [2, 2, 2]]
    torch.testing.assert_close(loc.get_voxel_size(), torch.tensor([[0.5] * 3, [2.0] * 3]))
    torch.testing.assert_close(loc.get_translation(), torch.tensor([[1.0, 2.0, 3.0]] * 2))
    torch.testing.assert_close(loc.get_volume_translation(), loc.get_translation())
    pts = _rand(2, 4, 6, 3, dtype=torch.float32) * 2 - 1
    world = loc.local_to_world_coords(pts)
    # volume 0: x scale 0.5 * (5 - 1) * 0.5 = 1, y 0.5 * 3 * 0.5 = 0.75, z 0.5 * 2 * 0.5 = 0.5
    torch.testing.assert_close(world[0], pts[0] * torch.tensor([1.0, 0.75, 0.5]) - torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(world[1], pts[1] * 1.0 - torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(loc.world_to_local_coords(world), pts)
    l2w = loc.get_local_to_world_coords_transform()
    torch.testing.assert_close(l2w.transform_points(pts.reshape(2, -1, 3)).reshape(pts.shape), world)
    w2l = loc.get_world_to_local_coords_transform()
    torch.testing.assert_close(w2l.transform_points(world.reshape(2, -1, 3)).reshape(pts.shape), pts,
                               atol=1e-5, rtol=1e-5)
    assert loc.get_coord_grid().shape == (2, 3, 4, 5, 3)
    sub = loc[1]
    assert len(sub) == 1 and sub.get_grid_sizes().tolist() == [[2, 2, 2]]
    assert loc.to("cpu") is loc and loc.to("cpu", copy=True) is not loc
    # one (D, H, W) for every volume, or an (N, 3) tensor
    assert VolumeLocator(3, (2, 3, 4), "cpu").get_grid_sizes().tolist() == [[2, 3, 4]] * 3
    assert VolumeLocator(1, torch.tensor([[2, 3, 4]]), "cpu").get_grid_sizes().tolist() == [[2, 3, 4]]


def test_locator_errors():
    with pytest.raises(ValueError, match="grid_sizes"):
        VolumeLocator(2, [(2, 2, 2)], "cpu")
    with pytest.raises(ValueError, match="grid_sizes"):
        VolumeLocator(1, (2, 2), "cpu")
    with pytest.raises(ValueError, match="voxel_size"):
        VolumeLocator(2, (2, 2, 2), "cpu", voxel_size=(1.0, 2.0))
    with pytest.raises(ValueError, match="volume_translation"):
        VolumeLocator(2, (2, 2, 2), "cpu", volume_translation=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="points_3d_world"):
        VolumeLocator(2, (2, 2, 2), "cpu").world_to_local_coords(torch.zeros(3, 4, 3))


def test_heterogeneous_list_padding_and_sizes():
    """A list of differently sized grids: zero-padded to the largest, per-volume grid sizes, list getters
    give the inputs back (PyTorch3D's behaviour)."""
    d0, d1 = _rand(2, 3, 4, 5), _rand(2, 2, 6, 3, seed=1)
    f0, f1 = _rand(3, 3, 4, 5, seed=2), _rand(3, 2, 6, 3, seed=3)
    vol = Volumes([d0, d1], [f0, f1], voxel_size=0.1)
    assert vol.densities().shape == (2, 2, 3, 6, 5)
    assert vol.features().shape == (2, 3, 3, 6, 5)
    assert vol.get_grid_sizes().tolist() == [[3, 4, 5], [2, 6, 3]]
    assert float(vol.densities()[1, :, 2:].abs().sum()) == 0.0  # the padding is zeros
    for got, want in zip(vol.densities_list(), [d0, d1]):
        assert torch.equal(got, want)
    for got, want in zip(vol.features_list(), [f0, f1]):
        assert torch.equal(got, want)
    assert Volumes([d0, d1]).features_list() is None
    sub = vol[1]
    assert sub.get_grid_sizes().tolist() == [[2, 6, 3]] and torch.equal(sub.densities_list()[0], d1)
    sub = vol[torch.tensor([True, False])]
    assert sub.get_grid_sizes().tolist() == [[3, 4, 5]]


@pytest.mark.parametrize("align_corners", [True, False])
def test_heterogeneous_coordinates_and_sampling_match_single_volumes(align_corners):
    """Each volume of a padded batch has the local/world coordinates and samples of the same volume alone."""
    grids = [_rand(1, 3, 4, 5), _rand(1, 2, 6, 3, seed=1), _rand(1, 4, 4, 4, seed=2)]
    kw = {"voxel_size": torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.2, 0.1, 0.4]], dtype=torch.float64),
          "volume_translation": torch.tensor([[0.0, 0.1, 0.2], [0.3, -0.2, 0.1], [0.0, 0.0, 0.0]],
                                             dtype=torch.float64),
          "align_corners": align_corners}
    batch = Volumes(grids, **kw)
    world_batch = batch.get_coord_grid(world_coordinates=True)
    local_batch = batch.get_coord_grid(world_coordinates=False)
    pts = (_rand(3, 50, 3, seed=9) - 0.5) * 2.0
    d_batch, _ = sample_volume(batch, pts)
    for i, g in enumerate(grids):
        single = Volumes([g], voxel_size=kw["voxel_size"][i], volume_translation=kw["volume_translation"][i],
                         align_corners=align_corners)
        D, H, W = g.shape[1:]
        torch.testing.assert_close(world_batch[i, :D, :H, :W], single.get_coord_grid()[0])
        torch.testing.assert_close(local_batch[i, :D, :H, :W], single.get_coord_grid(False)[0])
        # sampling at the volume's own voxel centres gives its voxels
        d_own, _ = sample_volume(batch, world_batch[i:i + 1, :D, :H, :W].expand(3, -1, -1, -1, -1).contiguous())
        torch.testing.assert_close(d_own[i, ..., 0], g[0])
        # sampling at arbitrary points (inside and outside) equals the single volume's
        torch.testing.assert_close(d_batch[i], sample_volume(single, pts[i:i + 1])[0][0])


def test_heterogeneous_coord_grid_align_corners_true_continues_lattice():
    """With align_corners=True a padded volume's local coordinates continue its lattice past 1 (as PyTorch3D's
    get_coord_grid): voxel k of a 3-voxel axis padded to 5 is at k - 1."""
    vol = Volumes([torch.zeros(1, 1, 1, 3), torch.zeros(1, 1, 1, 5)])
    x = vol.get_coord_grid(world_coordinates=False)[0, 0, 0, :, 0]
    torch.testing.assert_close(x, torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))


def test_volumes_construction_errors_and_voxel_size_forms():
    with pytest.raises(ValueError, match="channels"):
        Volumes([torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, 2, 2)])
    with pytest.raises(ValueError, match=r"densities\[1\]"):
        Volumes([torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, 2)])
    with pytest.raises(ValueError, match="features"):
        Volumes([torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2)], [torch.zeros(1, 2, 2, 2)] * 2)
    with pytest.raises(TypeError, match="densities"):
        Volumes(torch.zeros(1, 1, 2, 2, 2, dtype=torch.long))
    v = Volumes(torch.zeros(3, 1, 2, 2, 2), voxel_size=torch.tensor([[2.0, 3.0, 4.0]]))  # (1, 3) broadcasts
    torch.testing.assert_close(v.get_voxel_size(), torch.tensor([[2.0, 3.0, 4.0]] * 3))
    v = Volumes(torch.zeros(2, 1, 2, 2, 2), voxel_size=torch.tensor([[2.0], [3.0]]))  # (N, 1)
    torch.testing.assert_close(v.get_voxel_size(), torch.tensor([[2.0] * 3, [3.0] * 3]))


def test_update_padded_to_clone():
    vol = Volumes([_rand(1, 2, 3, 4), _rand(1, 2, 2, 2, seed=1)], [_rand(3, 2, 3, 4), _rand(3, 2, 2, 2)])
    new = vol.update_padded(vol.densities() * 2)
    assert new.features() is None  # as PyTorch3D: no new features, none kept
    assert new.get_grid_sizes().tolist() == vol.get_grid_sizes().tolist()
    with pytest.raises(ValueError, match="new_densities"):
        vol.update_padded(torch.zeros(2, 1, 2, 2, 2, dtype=torch.float64))
    c = vol.clone()
    assert torch.equal(c.densities(), vol.densities()) and c.densities() is not vol.densities()
    assert vol.to("cpu") is vol and vol.to("cpu", copy=True).densities() is not vol.densities()
    assert vol.cpu() is vol
    assert vol.get_align_corners() == c.get_align_corners()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_heterogeneous_on_cuda():
    vol = Volumes([_rand(1, 2, 3, 4), _rand(1, 2, 2, 2, seed=1)]).to("cuda")
    pts = torch.zeros(2, 5, 3, dtype=torch.float64, device="cuda")
    d, _ = sample_volume(vol, pts)
    assert d.device.type == "cuda" and vol.get_grid_sizes().device.type == "cuda"


# ----------------------------------------------------------------------------------------------------
# Raysamplers: n_rays_total (PyTorch3D's HeterogeneousRayBundle)
# ----------------------------------------------------------------------------------------------------
def _cameras(n=3):
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform

    R, T = look_at_view_transform(2.7, 10.0, torch.linspace(0.0, 270.0, n))
    return FoVPerspectiveCameras(R=R, T=T)


def _expected_rays(cams, b, n_pts, lo=0.1, hi=3.0):
    """The rays of the same NDC points, computed camera by camera (the packed order: camera_ids repeated
    camera_counts times)."""
    from lib3d.render.raysampling import xy_to_ray_bundle

    ids = b.camera_ids.repeat_interleave(b.camera_counts)
    xy = b.xys.reshape(-1, 1, 2)
    return xy_to_ray_bundle(cams[ids], xy, lo, hi, n_pts)


def test_monte_carlo_n_rays_total():
    from lib3d.render import HeterogeneousRayBundle, MonteCarloRaysampler

    cams = _cameras()
    rs = MonteCarloRaysampler(-1.0, 1.0, -1.0, 1.0, None, 4, 0.1, 3.0, n_rays_total=17)
    b = rs(cams, generator=torch.Generator().manual_seed(0))
    assert isinstance(b, HeterogeneousRayBundle)
    assert b.origins.shape == (17, 1, 3) and b.directions.shape == (17, 1, 3)
    assert b.lengths.shape == (17, 1, 4) and b.xys.shape == (17, 1, 2)
    assert int(b.camera_counts.sum()) == 17 and b.camera_ids.tolist() == sorted(set(b.camera_ids.tolist()))
    ref = _expected_rays(cams, b, 4)
    torch.testing.assert_close(b.origins[:, 0], ref.origins[:, 0])
    torch.testing.assert_close(b.directions[:, 0], ref.directions[:, 0])
    torch.testing.assert_close(b.lengths[:, 0], ref.lengths[:, 0])
    # the generator makes the draw reproducible
    again = rs(cams, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.xys, b.xys) and torch.equal(again.camera_counts, b.camera_counts)
    other = rs(cams, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.xys, b.xys)


def test_n_rays_total_draws_cameras_uniformly():
    """Cameras are drawn uniformly with replacement: 3 cameras, 30,000 rays, each count within 3 % of 10,000
    (the standard deviation of a count is 82)."""
    from lib3d.render import MonteCarloRaysampler

    rs = MonteCarloRaysampler(-1.0, 1.0, -1.0, 1.0, None, 1, 0.1, 3.0, n_rays_total=30_000)
    b = rs(_cameras(), generator=torch.Generator().manual_seed(3))
    assert b.camera_ids.tolist() == [0, 1, 2]
    assert bool(((b.camera_counts - 10_000).abs() < 300).all()), b.camera_counts


def test_multinomial_n_rays_total_and_mask():
    from lib3d.render import HeterogeneousRayBundle, NDCMultinomialRaysampler

    cams = _cameras()
    rs = NDCMultinomialRaysampler(image_width=6, image_height=5, n_pts_per_ray=3, min_depth=0.1, max_depth=3.0,
                                  n_rays_total=20)
    full = NDCMultinomialRaysampler(image_width=6, image_height=5, n_pts_per_ray=3, min_depth=0.1,
                                    max_depth=3.0)(cams)
    g = torch.Generator().manual_seed(0)
    b = rs(cams, generator=g)
    assert isinstance(b, HeterogeneousRayBundle)
    assert b.origins.shape == (20, 1, 1, 3) and b.lengths.shape == (20, 1, 1, 3) and b.xys.shape == (20, 1, 1, 2)
    # every ray is a pixel ray of its camera; the rays of one camera are distinct pixels
    ids = b.camera_ids.repeat_interleave(b.camera_counts)
    grid = full.xys[0].reshape(-1, 2)
    pix = (b.xys.reshape(-1, 1, 2) - grid[None]).abs().sum(-1).argmin(-1)  # (20,) pixel index
    torch.testing.assert_close(b.xys.reshape(-1, 2), grid[pix])
    torch.testing.assert_close(b.directions.reshape(-1, 3), full.directions.reshape(3, -1, 3)[ids, pix])
    for c in b.camera_ids.tolist():
        sel = pix[ids == c]
        assert sel.unique().numel() == sel.numel()
    # with a mask, rays come only from its non-zero pixels
    mask = torch.zeros(3, 5, 6)
    mask[:, 1:3, 2:5] = 1.0
    bm = rs(cams, mask=mask, generator=g)
    pix = (bm.xys.reshape(-1, 1, 2) - grid[None]).abs().sum(-1).argmin(-1)
    assert bool((mask.reshape(3, -1)[0, pix] > 0).all())


def test_raysampler_count_arguments():
    from lib3d.render import MonteCarloRaysampler, NDCMultinomialRaysampler, RayBundle

    cams = _cameras(2)
    both = NDCMultinomialRaysampler(image_width=4, image_height=4, n_pts_per_ray=2, min_depth=1.0, max_depth=2.0,
                                    n_rays_per_image=3)
    with pytest.raises(ValueError, match="n_rays_total"):
        both(cams, n_rays_total=5)
    with pytest.raises(ValueError, match="exactly one"):
        MonteCarloRaysampler(-1, 1, -1, 1, 4, 2, 1.0, 2.0, n_rays_total=5)(cams)
    with pytest.raises(ValueError, match="exactly one"):
        MonteCarloRaysampler(-1, 1, -1, 1, None, 2, 1.0, 2.0)(cams)
    # the constructor's n_rays_per_image wins over the mask's count (PyTorch3D's order)
    b = both(cams, mask=torch.ones(2, 4, 4), generator=torch.Generator().manual_seed(0))
    assert isinstance(b, RayBundle) and b.origins.shape == (2, 3, 1, 3)
    # without a count, the smallest mask count is used
    nocount = NDCMultinomialRaysampler(image_width=4, image_height=4, n_pts_per_ray=2, min_depth=1.0,
                                       max_depth=2.0)
    mask = torch.zeros(2, 4, 4)
    mask[0, :2] = 1.0
    mask[1, 0, :3] = 1.0
    assert nocount(cams, mask=mask, generator=torch.Generator().manual_seed(0)).origins.shape == (2, 3, 1, 3)
    # stratified_sampling override: depths jittered within their strata
    js = nocount(cams, stratified_sampling=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(js.lengths, nocount(cams).lengths)
    assert bool((js.lengths >= 1.0).all() and (js.lengths <= 2.0).all())
