"""The Pix3D feed of Mesh R-CNN (lib3d.data.pix3d_items) on a tiny Pix3D written here: three rendered images
(landscape, portrait, square PNGs), their masks, two cuboid OBJ models with ``voxel.mat`` files, Pix3D's own
``pix3d.json`` and Mesh R-CNN's ``pix3d_s1_train.json`` / ``pix3d_s1_test.json`` with the official fields.
Checks the items (box scaling, mask, K, the camera-space mesh projecting onto the mask, classes, dz, voxels),
laziness, the errors, and a 2-step ``jobs.meshrcnn smoke`` run on it evaluated by ``jobs.meshrcnn_eval``."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lib3d import runtime
from lib3d.data.furniture import render_scene
from lib3d.data.pix3d import PIX3D_CATEGORIES, read_voxel_mat
from lib3d.data.pix3d_items import Pix3DModels, load_pix3d_data
from lib3d.io.errors import FormatError

S = 48  # item side

# Two cuboid models; half extents (8, 12, 6) / (2 |(8, 12, 6)|) so that their voxel points (Mesh R-CNN's
# normalisation: unit-diameter bounding sphere of the voxel centres) span exactly the model.
_GRID = {"m1": (8, 12, 6), "m2": (12, 6, 8)}
_MODELS = {"m1": ("chair", _GRID["m1"]), "m2": ("table", _GRID["m2"])}


def _half(model):
    g = np.array(_GRID[model], dtype=np.float64)
    return g / (2 * np.linalg.norm(g))


def _cuboid(model):
    a = _half(model)
    verts = np.array([[sx * a[0], sy * a[1], sz * a[2]] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return verts, quads


def _rot(yaw, pitch):
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rx @ ry


# image: (name, category, model, (W, H), yaw, pitch, t, focal_length mm)
_IMAGES = [
    ("img/chair/0001.png", "m1", (96, 64), 0.5, 0.2, (0.1, -0.05, 2.2), 35.0),
    ("img/table/0002.png", "m2", (64, 96), -0.7, 0.3, (-0.05, 0.1, 2.0), 30.0),
    ("img/chair/0003.png", "m1", (80, 80), 2.0, -0.2, (0.0, 0.05, 2.4), 40.0),
]


def _write_pix3d(root):
    """Write the tiny dataset; returns {image name: (mask (H, W) bool, bbox XYXY)}."""
    info = {}
    for m, (cat, grid) in _MODELS.items():
        d = root / "model" / cat / m
        d.mkdir(parents=True)
        verts, quads = _cuboid(m)
        lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in verts] + ["f " + " ".join(str(i + 1) for i in q)
                                                                     for q in quads]
        (d / "model.obj").write_text("# cuboid\n" + "\n".join(lines) + "\n")
        n = [2 * k + 1 for k in grid]  # (n - 1) / 2 = grid: the occupied centres span +-grid
        occ = np.zeros((32, 32, 32), dtype=np.uint8)
        occ[: n[0], : n[1], : n[2]] = 1
        scipy.io.savemat(d / "voxel.mat", {"voxel": np.rot90(occ, 1, axes=(1, 2))})  # read: rot90 by 3
    entries, coco_images, anns = [], [], []
    for k, (name, m, (w, h), yaw, pitch, t, fmm) in enumerate(_IMAGES):
        cat = _MODELS[m][0]
        r = _rot(yaw, pitch)
        verts, quads = _cuboid(m)
        cam = verts @ r.T + np.array(t)
        tris = torch.tensor([[q[0], q[i], q[i + 1]] for q in quads for i in (1, 2)])
        f = fmm * w / 32
        side = max(w, h)  # render square, centred, then crop to (W, H) around the centre
        rgb, face = render_scene([torch.tensor(cam, dtype=torch.float32)], [tris], [torch.full((12, 3), 0.7)], side,
                                 f, torch.tensor([[0.3, 1.0, -0.6]]) / math.sqrt(1.45))
        y0, x0 = (side - h) // 2, (side - w) // 2
        mask = (face[0] >= 0)[y0:y0 + h, x0:x0 + w]
        img = torch.where(mask[..., None], rgb[0, y0:y0 + h, x0:x0 + w], torch.tensor([0.2, 0.3, 0.4]))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img.numpy() * 255).astype(np.uint8)).save(root / name)
        mname = name.replace("img/", "mask/")
        (root / mname).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask.numpy() * 255).astype(np.uint8)).save(root / mname)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        info[name] = (mask, box)
        common = {"model": f"model/{cat}/{m}/model.obj", "voxel": f"model/{cat}/{m}/voxel.mat",
                  "rot_mat": r.tolist(), "trans_mat": list(t)}
        entries.append({"img": name, "category": cat, "img_size": [w, h], "mask": mname, "bbox": box,
                        "focal_length": fmm, "truncated": False, "occluded": False, "slightly_occluded": False,
                        "img_source": "self", "model_raw": common["model"], "model_source": "self",
                        "cam_position": [0, 0, 0], "inplane_rotation": 0.0, "2d_keypoints": [], "3d_keypoints": "",
                        **common})
        coco_images.append({"id": k + 1, "file_name": name, "width": w, "height": h})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": PIX3D_CATEGORIES.index(cat) + 1,
                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": float(mask.sum()),
                     "iscrowd": 0, "segmentation": mname, "K": [f, w / 2, h / 2], **common})
    (root / "pix3d.json").write_text(json.dumps(entries, indent=1))
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(PIX3D_CATEGORIES)]
    for split, keep in (("train", (0, 1)), ("test", (1, 2))):
        (root / f"pix3d_s1_{split}.json").write_text(json.dumps(
            {"images": [coco_images[i] for i in keep], "annotations": [anns[i] for i in keep], "categories": cats},
            indent=1))
    return info


@pytest.fixture
def pix3d(tmp_path):
    root = tmp_path / "pix3d"
    root.mkdir()
    return root, _write_pix3d(root)


def _project(verts, K):
    """lib3d's convention: u = (px - 1) - f X / Z, v = (py - 1) - f Y / Z."""
    return torch.stack([K[1] - 1 - K[0] * verts[:, 0] / verts[:, 2], K[2] - 1 - K[0] * verts[:, 1] / verts[:, 2]], 1)


def test_items_scale_boxes_masks_camera_and_mesh(pix3d):
    root, info = pix3d
    data = load_pix3d_data(root, S)
    assert data.categories == PIX3D_CATEGORIES and data.image_size == S and data.focal is None
    assert len(data.train) == 2 and len(data.test) == 2
    items = [data.train[0], data.train[1], data.test[1]]
    for it, (name, m, (w0, h0), yaw, pitch, t, fmm) in zip(items, _IMAGES):
        mask0, box0 = info[name]
        s = S / max(w0, h0)
        w, h = round(w0 * s), round(h0 * s)
        assert it.image.shape == (3, S, S) and it.image.dtype == torch.uint8
        assert int(it.image[:, h:, :].sum()) == 0 and int(it.image[:, :, w:].sum()) == 0  # padded right / bottom
        assert it.classes.tolist() == [PIX3D_CATEGORIES.index(_MODELS[m][0])]
        torch.testing.assert_close(it.boxes[0], torch.tensor(box0, dtype=torch.float32)
                                   * torch.tensor([w / w0, h / h0, w / w0, h / h0]))
        torch.testing.assert_close(it.K, torch.tensor([fmm * w0 / 32 * s, w / 2 + 1, h / 2 + 1]))
        mk = it.masks[0]
        assert mk.shape == (S, S) and not bool(mk[h:].any()) and not bool(mk[:, w:].any())
        assert abs(int(mk.sum()) - float(mask0.sum()) * s * s) < 0.15 * float(mask0.sum()) * s * s
        # the camera-space mesh is the model moved by rot_mat / trans_mat ...
        verts, faces = it.meshes[0]
        ref = torch.tensor(_cuboid(m)[0] @ _rot(yaw, pitch).T + np.array(t), dtype=torch.float32)
        torch.testing.assert_close(verts, ref)
        assert faces.shape == (12, 3)
        # ... and projects through K onto the mask: its extent is the box, its points fall in the mask
        uv = _project(verts, it.K)
        torch.testing.assert_close(torch.cat([uv.min(0).values, uv.max(0).values]), it.boxes[0], atol=1.5, rtol=0)
        g = torch.Generator().manual_seed(0)
        bary = -torch.rand(400, 3, generator=g).log()
        bary = bary / bary.sum(1, keepdim=True)
        tri = verts[faces[torch.randint(0, 12, (400,), generator=g)]]
        px = _project((bary[:, :, None] * tri).sum(1), it.K).floor().long()
        near = torch.nn.functional.max_pool2d(mk[None, None].float(), 3, 1, 1)[0, 0] > 0  # within a pixel
        assert bool(near[px[:, 1].clamp(0, S - 1), px[:, 0].clamp(0, S - 1)].all())
        # dz and voxel points
        z = verts[:, 2]
        torch.testing.assert_close(it.dz[0], (z.max() - z.min()) / ((z.max() + z.min()) / 2) * it.K[0])
        q = int(it.voxel_lengths[0])
        vp = it.voxel_points[0, :q]
        torch.testing.assert_close(torch.cat([vp.min(0).values, vp.max(0).values]),
                                   torch.cat([verts.min(0).values, verts.max(0).values]), atol=1e-5, rtol=0)


def test_unscaled_items_keep_the_mask_and_the_exact_projection(pix3d):
    """At S = 96 the two 96-pixel images are not resampled: the mask is the file's, and the silhouette of the
    projected mesh (convex hull of the cuboid's corners) has the mask's centroid to a fraction of a pixel."""
    from scipy.spatial import ConvexHull

    root, info = pix3d
    data = load_pix3d_data(root, 96)
    for it, name in ((data.train[0], _IMAGES[0][0]), (data.train[1], _IMAGES[1][0])):
        mask0 = info[name][0]
        h, w = mask0.shape
        assert torch.equal(it.masks[0][:h, :w], mask0)
        uv = _project(it.meshes[0][0], it.K).double().numpy()
        poly = uv[ConvexHull(uv).vertices]
        x, y = poly[:, 0], poly[:, 1]
        cross = x * np.roll(y, -1) - np.roll(x, -1) * y
        area = cross.sum() / 2
        centroid = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)
        ys, xs = torch.nonzero(mask0, as_tuple=True)
        pixels = np.array([xs.double().mean() + 0.5, ys.double().mean() + 0.5])  # pixel j spans [j, j + 1]
        assert np.abs(centroid - pixels).max() < 0.25, (centroid, pixels)
        assert abs(abs(area) - float(mask0.sum())) < 0.05 * float(mask0.sum())


def test_pix3d_json_and_split_json_give_the_same_items(pix3d):
    root, _ = pix3d
    a = load_pix3d_data(root, S)
    b = load_pix3d_data(root, S, train_json="pix3d.json", test_json=root / "pix3d.json")
    assert len(b.train) == 3
    for x, y in ((a.train[0], b.train[0]), (a.train[1], b.train[1]), (a.test[1], b.train[2])):
        for f in ("image", "K", "boxes", "classes", "masks", "voxel_points", "dz"):
            torch.testing.assert_close(getattr(x, f), getattr(y, f), msg=f)
    assert a.train[0].instances.tolist() == [0] and a.train[1].instances.tolist() == [1]


def test_lazy_reading_and_model_cache(pix3d):
    root, _ = pix3d
    data = load_pix3d_data(root, S, model_cache=1)
    assert len(data.train.models) == 0  # nothing parsed up front
    (root / "img/table/0002.png").unlink()  # an image read only when indexed
    data.train[0]
    assert len(data.train.models) == 1  # mesh and voxels of one model, capacity 1: the voxels kept
    with pytest.raises(FileNotFoundError, match="0002.png"):
        data.train[1]
    sub = data.test[:1]
    assert len(sub) == 1 and sub.models is data.train.models
    images = pickle.loads(pickle.dumps(data.test.images()))  # what Ray Data actors receive
    assert len(images) == 2 and torch.equal(images[1], data.test[1].image)
    cache = Pix3DModels(2)
    v1 = cache.mesh(root / "model/chair/m1/model.obj")[0]
    assert cache.mesh(root / "model/chair/m1/model.obj")[0] is v1 and len(cache) == 1


def test_read_voxel_mat_matches_meshrcnn_read_voxel(tmp_path):
    g = np.random.default_rng(0)
    vox = (g.random((6, 7, 5)) > 0.6).astype(np.uint8)
    scipy.io.savemat(tmp_path / "v.mat", {"voxel": vox})
    # Mesh R-CNN's read_voxel, in numpy: rotate, occupied indices, centre on the bounding box, unit diameter
    v = np.argwhere(np.rot90(vox, k=3, axes=(1, 2)) > 0).astype(np.float32)
    v -= (v.max(0) + v.min(0)) / 2
    v /= np.sqrt((v ** 2).sum(1).max()) * 2
    torch.testing.assert_close(read_voxel_mat(tmp_path / "v.mat"), torch.from_numpy(v))
    scipy.io.savemat(tmp_path / "bad.mat", {"grid": vox})
    with pytest.raises(FormatError, match="bad.mat.*'voxel'"):
        read_voxel_mat(tmp_path / "bad.mat")


def test_errors_are_one_clear_line(pix3d, tmp_path):
    from configs.meshrcnn import PRESETS
    from lib3d.systems.meshrcnn import MeshRCNNSystem

    root, _ = pix3d
    base = PRESETS["smoke"][1]

    def check(**data):
        MeshRCNNSystem().check_config(dataclasses.replace(base, data=dataclasses.replace(base.data, **data)))

    with pytest.raises(runtime.UserError, match="needs --data.pix3d-root"):
        check(source="pix3d")
    with pytest.raises(runtime.UserError, match="nowhere: no such Pix3D folder"):
        check(source="pix3d", pix3d_root=str(tmp_path / "nowhere"))
    with pytest.raises(runtime.UserError, match="pix3d_s2_train.json: no such Pix3D split json"):
        check(source="pix3d", pix3d_root=str(root), pix3d_split="s2")
    (root / "model/table/m2/model.obj").rename(root / "model/table/m2/gone.obj")
    with pytest.raises(runtime.UserError, match=r"pix3d_s1_train.json, image 2: .*m2/model.obj does not exist"):
        check(source="pix3d", pix3d_root=str(root))
    (root / "model/table/m2/gone.obj").rename(root / "model/table/m2/model.obj")
    check(source="pix3d", pix3d_root=str(root))  # all there
    # a malformed annotation: file and line
    split = json.loads((root / "pix3d_s1_test.json").read_text())
    split["annotations"][1]["rot_mat"] = [[1, 0], [0, 1]]
    (root / "bad.json").write_text(json.dumps(split, indent=1))
    lines = (root / "bad.json").read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if i > lines.index(' "annotations": [') and '"id": 3,' in t)
    with pytest.raises(FormatError, match=rf"bad.json, line {line}: .*'rot_mat' as finite numbers of shape \(3, 3\)"):
        load_pix3d_data(root, S, test_json="bad.json")
    # an image of another size than its annotation
    Image.new("RGB", (10, 10)).save(root / "img/chair/0003.png")
    with pytest.raises(FormatError, match=r"0003.png: the file is 10x10 but its annotation says 80x80"):
        load_pix3d_data(root, S).test[1]


def test_furniture_source_reaches_the_generator_unchanged(monkeypatch):
    """The default data path: exactly the generator's arguments (the disk cache key is unchanged)."""
    from lib3d.data import furniture
    from configs.meshrcnn import PRESETS
    from lib3d.systems.meshrcnn import data_num_classes, load_data

    seen = {}
    monkeypatch.setattr(furniture, "load_furniture", lambda **kw: seen.update(kw) or "data")
    cfg = PRESETS["default"][1].data
    assert load_data(cfg) == "data"
    assert seen == {"num_train": 800, "num_test": 100, "image_size": 128, "max_objects": 3,
                    "instances_per_category": 16, "test_instances_per_category": 4, "seed": 0}
    assert data_num_classes(cfg) is None and data_num_classes({"source": "pix3d"}) == 9


def test_smoke_training_and_evaluation_on_pix3d(pix3d, tmp_path):
    """``jobs.meshrcnn smoke`` for 2 steps on the tiny Pix3D, then ``jobs.meshrcnn_eval`` on the run."""
    import jobs.meshrcnn
    import jobs.meshrcnn_eval

    root, _ = pix3d
    fit = jobs.meshrcnn.main(["smoke", "--data.source", "pix3d", "--data.pix3d-root", str(root), "--steps", "2",
                              "--run.output-root", str(tmp_path / "runs"), "--run.name", "p"])
    m = fit.result["metrics"]
    assert m["eval_images"] == 2 and "box_ap" in m and "mesh_ap50" in m
    run_dir = tmp_path / "runs" / "meshrcnn" / "p"
    ck = runtime.load_checkpoint(run_dir / "checkpoints")
    assert ck.step == 2 and ck.tensors["model.box_predictor.cls_score.weight"].shape[0] == 10  # 9 + background
    out = jobs.meshrcnn_eval.main(["--model", str(run_dir), "--data.source", "pix3d", "--data.pix3d-root",
                                   str(root), "--images", "2", "--batch-size", "2", "--mesh-samples", "200",
                                   "--output", str(tmp_path / "ev")])
    assert out["data"] == "pix3d" and out["images"] == 2
    assert set(out["pix3d_protocol"]) >= {"box_ap", "box_ap50", "mask_ap", "mesh_ap50"}
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == out
