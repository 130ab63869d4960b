"""The embedded furniture dataset: determinism, instance-disjoint splits, annotations consistent with the
camera convention, the cache."""

import torch

from lib3d.data.furniture import CATEGORIES, furniture_instance, load_furniture, make_furniture

ARGS = dict(num_train=4, num_test=2, image_size=64, instances_per_category=2, test_instances_per_category=1, seed=3)


def test_deterministic_and_split_by_instance():
    a = make_furniture(**ARGS)
    b = make_furniture(**ARGS)
    assert len(a.train) == 4 and len(a.test) == 2
    for x, y in zip(a.train + a.test, b.train + b.test):
        assert torch.equal(x.image, y.image) and torch.equal(x.boxes, y.boxes)
    train_ids = {int(i) for x in a.train for i in x.instances}
    test_ids = {int(i) for x in a.test for i in x.instances}
    assert train_ids.isdisjoint(test_ids)
    per = 3  # 2 train + 1 held-out instance per category
    assert all(i % per < 2 for i in train_ids) and all(i % per == 2 for i in test_ids)


def test_annotations_follow_the_camera_convention():
    data = make_furniture(**ARGS)
    s = data.image_size
    n_obj = 0
    for x in data.train + data.test:
        assert x.image.shape == (3, s, s) and x.image.dtype == torch.uint8
        g = x.boxes.shape[0]
        assert x.masks.shape == (g, s, s) and x.classes.shape == (g,) and len(x.meshes) == g
        for k in range(g):
            n_obj += 1
            ys, xs = torch.nonzero(x.masks[k], as_tuple=True)
            assert x.boxes[k].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            v, f = x.meshes[k]
            assert bool((v[:, 2] > 0).all()) and int(f.max()) < v.shape[0]
            # Mesh R-CNN's projection with the stored K: u = (2 px - 1 - px) - f X / Z = S/2 - f X / Z
            fx, px, py = x.K.tolist()
            u = (px - 1) - fx * v[:, 0] / v[:, 2]
            w = (py - 1) - fx * v[:, 1] / v[:, 2]
            # the visible mask lies inside the projected mesh (clipped to the image)
            assert x.boxes[k, 0] >= u.min().clamp(0, s) - 1 and x.boxes[k, 2] <= u.max().clamp(0, s) + 1
            assert x.boxes[k, 1] >= w.min().clamp(0, s) - 1 and x.boxes[k, 3] <= w.max().clamp(0, s) + 1
            pts = x.voxel_points[k, : x.voxel_lengths[k]]
            lo, hi = v.min(0).values, v.max(0).values
            assert bool(((pts >= lo - 1e-4) & (pts <= hi + 1e-4)).all())
            z0, z1 = v[:, 2].min(), v[:, 2].max()
            assert torch.allclose(x.dz[k], (z1 - z0) / ((z1 + z0) / 2) * fx)
    assert n_obj > 0


def test_instances_and_categories():
    g = torch.Generator().manual_seed(0)
    for c in CATEGORIES:
        parts = furniture_instance(c, g)
        lo = torch.tensor([p.lo for p in parts])
        assert float(lo[:, 1].min()) >= -1e-6  # standing on the floor


def test_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = load_furniture(**ARGS)
    files = list((tmp_path / "lib3d" / "furniture").glob("*.pt"))
    assert len(files) == 1
    b = load_furniture(**ARGS)
    assert torch.equal(a.train[0].image, b.train[0].image)
    assert torch.equal(a.test[1].voxel_points, b.test[1].voxel_points)
