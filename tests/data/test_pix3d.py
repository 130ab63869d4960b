"""Loaders of the real formats on small files written here: pix3d.json, COCO json, .binvox, R2N2 renders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lib3d.data.pix3d import load_coco_json, load_pix3d, load_r2n2_views, read_binvox, read_mask
from lib3d.io.errors import FormatError


def _pix3d_entry(i, cat):
    return {"img": f"img/{cat}/{i:04d}.png", "category": cat, "img_size": [640, 480], "bbox": [10, 20, 300, 400],
            "mask": f"mask/{cat}/{i:04d}.png", "model": f"model/{cat}/m{i}/model.obj",
            "voxel": f"model/{cat}/m{i}/voxel.mat", "rot_mat": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "trans_mat": [0, 0, 2.5], "focal_length": 35.0, "truncated": False, "occluded": True}


def test_pix3d_json(tmp_path):
    p = tmp_path / "pix3d.json"
    p.write_text(json.dumps([_pix3d_entry(1, "table"), _pix3d_entry(2, "bed")], indent=1))
    recs = load_pix3d(p)
    assert [r.category for r in recs] == ["table", "bed"] and [r.class_id for r in recs] == [1, 0]
    r = recs[0]
    assert r.image == tmp_path / "img/table/0001.png" and r.image_size == (640, 480)
    assert torch.allclose(r.K, torch.tensor([35 * 640 / 32, 320, 240]))
    assert torch.equal(r.box, torch.tensor([10.0, 20, 300, 400])) and r.occluded
    with pytest.raises(FileNotFoundError, match="img/table/0001.png"):
        load_pix3d(p, check_files=True)


def test_pix3d_errors_name_file_and_line(tmp_path):
    p = tmp_path / "pix3d.json"
    p.write_text('[\n {"img": "a.png",\n  "bbox": [1, 2, 3]\n')
    with pytest.raises(FormatError, match=r"pix3d.json, line \d+: malformed json"):
        load_pix3d(p)
    e = _pix3d_entry(1, "chair")
    e["rot_mat"] = [[1, 0], [0, 1]]
    p.write_text(json.dumps([e], indent=1))
    with pytest.raises(FormatError, match=r"line 3: entry 0: 'rot_mat' must be"):
        load_pix3d(p)
    del e["rot_mat"]
    p.write_text(json.dumps([e], indent=1))
    with pytest.raises(FormatError, match="has no 'rot_mat'"):
        load_pix3d(p)
    with pytest.raises(FileNotFoundError):
        load_pix3d(tmp_path / "missing.json")


def test_coco_json_with_meshrcnn_fields(tmp_path):
    data = {"images": [{"id": 7, "file_name": "img/a.jpg", "height": 100, "width": 120},
                       {"id": 3, "file_name": "img/b.jpg", "height": 50, "width": 60}],
            "categories": [{"id": 5, "name": "sofa"}, {"id": 2, "name": "bed"}],
            "annotations": [{"id": 1, "image_id": 7, "bbox": [10, 20, 30, 40], "category_id": 5, "iscrowd": 0,
                             "K": [100.0, 60, 50], "rot_mat": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                             "trans_mat": [0, 0, 3], "model": "model/x.obj", "segmentation": "mask/a.png"},
                            {"id": 2, "image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 2}]}
    p = tmp_path / "pix3d_s1_train.json"
    p.write_text(json.dumps(data, indent=1))
    images, names = load_coco_json(p)
    assert names == ["bed", "sofa"] and [im.image_id for im in images] == [3, 7]
    im = images[1]
    assert torch.equal(im.boxes, torch.tensor([[10.0, 20, 40, 60], [0, 0, 5, 5]]))
    assert im.classes.tolist() == [1, 0] and im.extra[0]["model"] == tmp_path / "model/x.obj"
    assert im.extra[0]["K"] == [100.0, 60, 50] and images[0].boxes.shape == (0, 4)
    data["annotations"][1]["category_id"] = 9
    p.write_text(json.dumps(data, indent=1))
    with pytest.raises(FormatError, match=r"line \d+: annotations\[1\] has unknown category 9"):
        load_coco_json(p)
    data["annotations"][1]["category_id"] = 2
    data["annotations"][1]["bbox"] = [0, 0, -5, 5]
    p.write_text(json.dumps(data, indent=1))
    with pytest.raises(FormatError, match="bbox must be finite"):
        load_coco_json(p)


def _write_binvox(path, vox_xyz, translate=(0.1, 0.2, 0.3), scale=1.5):
    """Writer following the format description (independent of the reader's reshape)."""
    d, h, w = vox_xyz.shape
    order = [vox_xyz[x, y, z] for x in range(d) for z in range(w) for y in range(h)]  # y fastest, then z, x
    runs = []
    for v in order:
        if runs and runs[-1][0] == v and runs[-1][1] < 255:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    body = bytes(b for v, c in runs for b in (int(v), c))
    header = f"#binvox 1\ndim {d} {h} {w}\ntranslate {translate[0]} {translate[1]} {translate[2]}\nscale {scale}\ndata\n"
    path.write_bytes(header.encode() + body)


def test_binvox_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    vox = rng.random((5, 5, 5)) > 0.6
    p = tmp_path / "model.binvox"
    _write_binvox(p, vox)
    occ, t, s = read_binvox(p)
    assert np.array_equal(occ.numpy(), vox) and torch.allclose(t, torch.tensor([0.1, 0.2, 0.3])) and s == 1.5
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(FormatError, match="odd number of bytes|covers"):
        read_binvox(p)
    p.write_bytes(b"#binvox 1\ndims 3 3 3\ndata\n")
    with pytest.raises(FormatError, match="line 2"):
        read_binvox(p)


def test_r2n2_views(tmp_path):
    d = tmp_path / "02691156" / "abc" / "rendering"
    d.mkdir(parents=True)
    (d / "renderings.txt").write_text("00.png\n01.png\n")
    (d / "rendering_metadata.txt").write_text("30.0 25.0 0 0.8 25\n120.5 20.0 0 0.9 25\n")
    for n in ("00.png", "01.png"):
        Image.fromarray(np.zeros((137, 137, 4), dtype=np.uint8)).save(d / n)
    v = load_r2n2_views(tmp_path / "02691156" / "abc")
    assert v.images.shape == (2, 137, 137, 4) and torch.allclose(v.azimuth, torch.tensor([30.0, 120.5]))
    (d / "rendering_metadata.txt").write_text("30.0 25.0 0 0.8 25\n120.5 x 0 0.9\n")
    with pytest.raises(FormatError, match="rendering_metadata.txt, line 2"):
        load_r2n2_views(tmp_path / "02691156" / "abc")
    (d / "rendering_metadata.txt").write_text("30.0 25.0 0 0.8 25\n120.5 20.0 0 0.9 25\n")
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(d / "01.png")
    with pytest.raises(FormatError, match="RGB"):
        load_r2n2_views(tmp_path / "02691156" / "abc")


def test_read_mask(tmp_path):
    a = np.zeros((4, 6), dtype=np.uint8)
    a[1:3, 2:5] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    assert torch.equal(read_mask(tmp_path / "m.png"), torch.from_numpy(a > 0))
