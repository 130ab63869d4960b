"""The procedural indoor dataset: determinism, geometry consistent with SynSin's reprojection, pairs, cache."""

from __future__ import annotations

import torch

from lib3d.data.indoor import (
    IndoorConfig,
    fixed_pairs,
    indoor_cache_path,
    load_indoor,
    relative_pose,
    render_indoor_scenes,
    sample_pairs,
)
from lib3d.synthesis.synsin import reproject_points


def test_deterministic_and_well_formed():
    a = render_indoor_scenes(2, 4, 32, seed=3)
    b = render_indoor_scenes(2, 4, 32, seed=3)
    c = render_indoor_scenes(2, 4, 32, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.poses, b.poses)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (2, 4, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.depths.shape == (2, 4, 1, 32, 32)
    assert torch.isfinite(a.depths).all() and a.depths.min() > 0.1  # inside a closed room
    R = a.poses[..., :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)
    assert a.images.float().std() > 10  # textured, not flat


def test_depth_reprojects_into_the_other_view():
    # Source pixels lifted with the true depth and moved by the relative pose land where the target's
    # depth map sees the same surface (away from occlusions and image borders).
    data = render_indoor_scenes(3, 4, 48, seed=5)
    p = fixed_pairs(data, 2)
    pts = reproject_points(p.source_depth, p.K, p.RT)  # target NDC (+X left, +Y up), z
    H = W = 48
    col = ((1 - pts[..., 0]) / 2 * W - 0.5).round().long()
    row = ((1 - pts[..., 1]) / 2 * H - 0.5).round().long()
    inside = (col >= 1) & (col < W - 1) & (row >= 1) & (row < H - 1)
    n = torch.arange(pts.shape[0])[:, None].expand_as(col)
    zt = p.target_depth[n.clamp(min=0), 0, row.clamp(0, H - 1), col.clamp(0, W - 1)]
    rel = ((zt - pts[..., 2]).abs() / zt)[inside]
    assert inside.float().mean() > 0.5
    assert (rel < 0.05).float().mean() > 0.85
    # ... and colours agree there too (same lighting: Lambertian, no view dependence).
    ct = p.target[n, :, row.clamp(0, H - 1), col.clamp(0, W - 1)]  # (N, P, 3)
    cs = p.source.flatten(2).transpose(1, 2)
    good = inside & ((zt - pts[..., 2]).abs() / zt < 0.02)
    assert (ct - cs).abs()[good].mean() < 0.06


def test_relative_pose_composition():
    data = render_indoor_scenes(1, 3, 16, seed=1)
    P = data.poses[0]
    assert torch.allclose(relative_pose(P[0], P[0]), torch.eye(4), atol=1e-5)
    assert torch.allclose(relative_pose(P[1], P[2]) @ relative_pose(P[0], P[1]), relative_pose(P[0], P[2]),
                          atol=1e-4)


def test_pairs_and_identity_baseline_is_imperfect():
    data = render_indoor_scenes(2, 5, 32, seed=2)
    g = torch.Generator().manual_seed(0)
    p = sample_pairs(data, 6, max_gap=3, generator=g)
    assert p.source.shape == (6, 3, 32, 32) and p.RT.shape == (6, 4, 4) and p.K.shape == (6, 3, 3)
    assert 0 <= p.source.min() and p.source.max() <= 1
    q = sample_pairs(data, 6, max_gap=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(p.RT, q.RT)
    f = fixed_pairs(data, 2)
    assert f.source.shape[0] == 2 * 3
    assert (f.source - f.target).abs().mean() > 0.01  # the camera moved


def test_load_indoor_caches(tmp_path):
    cfg = IndoorConfig(image_size=16, frames=3, train_scenes=2, test_scenes=1)
    tr = load_indoor(cfg, "train", cache_dir=tmp_path)
    te = load_indoor(cfg, "test", cache_dir=tmp_path)
    assert indoor_cache_path(cfg, "train", tmp_path).is_file()
    assert tr.images.shape[0] == 2 and te.images.shape[0] == 1
    again = load_indoor(cfg, "train", cache_dir=tmp_path)
    assert torch.equal(again.images, tr.images) and torch.equal(again.K, tr.K)
    assert not torch.equal(tr.images[:1], te.images)  # held-out scenes differ
