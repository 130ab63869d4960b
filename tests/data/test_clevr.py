"""The embedded CLEVR-like dataset: determinism, cache, ground truth consistent with the images."""

import pytest
import torch

from lib3d.data.clevr import CLEVR_COLORS, cylinder, load_clevr, make_clevr_scenes


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one torch thread (two spin against each other on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cylinder_is_closed_and_outward():
    v, f = cylinder(12)
    assert v.shape == (26, 3) and f.shape == (48, 3)
    # closed: every edge is shared by exactly two faces
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values
    _, counts = torch.unique(e, dim=0, return_counts=True)
    assert torch.all(counts == 2)
    # outward: divergence theorem, the signed volume is positive and close to pi r^2 h = 2 pi
    tri = v[f]
    vol = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=1)).sum() / 6
    assert 0.9 * 2 * torch.pi < vol < 2 * torch.pi


def test_scenes_deterministic_and_ground_truth(tmp_path):
    a = make_clevr_scenes(6, image_size=16, max_objects=3, seed=3, supersample=1)
    b = make_clevr_scenes(6, image_size=16, max_objects=3, seed=3, supersample=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.images.shape == (6, 16, 16, 3) and a.images.dtype == torch.uint8
    assert a.masks.shape == (6, 3, 16, 16)
    present = torch.arange(3)[None] < a.counts[:, None]
    assert torch.equal(a.shapes >= 0, present) and torch.equal(a.colors >= 0, present)
    assert not a.masks[~present].any()  # unused slots have empty masks
    # masks of different objects never overlap
    assert int(a.masks.sum(1).max()) <= 1
    # where a mask is set, the pixel has the object's hue (dominant channel of its CLEVR colour)
    palette = torch.tensor(CLEVR_COLORS, dtype=torch.float32)
    for i in range(6):
        for j in range(int(a.counts[i])):
            m = a.masks[i, j]
            if int(m.sum()) < 4:
                continue
            mean = a.images[i][m].float().mean(0)
            col = palette[int(a.colors[i, j])]
            if col.max() - col.min() > 60:  # saturated colours only (gray is gray)
                assert int(mean.argmax()) == int(col.argmax()), (i, j, mean, col)
    c = make_clevr_scenes(6, image_size=16, max_objects=3, seed=4, supersample=1)
    assert not torch.equal(a.images, c.images)


def test_load_clevr_caches(tmp_path):
    a = load_clevr(4, image_size=16, max_objects=2, seed=1, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    b = load_clevr(4, image_size=16, max_objects=2, seed=1, cache_dir=tmp_path)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    files[0].write_bytes(b"garbage")  # a damaged cache is rebuilt
    c = load_clevr(4, image_size=16, max_objects=2, seed=1, cache_dir=tmp_path)
    assert torch.equal(a.images, c.images)
    assert a.image_tensor().shape == (4, 3, 16, 16)
