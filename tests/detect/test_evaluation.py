"""Evaluation: perfect predictions (ground-truth meshes mapped into box coordinates and back) score 1, the
greedy matching, and the jobs' one-line user errors."""

import math

import numpy as np
import pytest
import torch

from lib3d import runtime
from lib3d.data.primitives import cube
from lib3d.detect import Prediction, camera_to_box
from lib3d.detect.evaluation import GroundTruth, evaluate_predictions, match_detections


def _scene():
    v, f = cube(1.0)
    K = torch.tensor([100.0, 33.0, 33.0])
    meshes = [(v * 0.8 + torch.tensor([0.4, 0.1, 4.0]), f), (v * 0.6 + torch.tensor([-0.6, -0.2, 5.0]), f)]
    boxes, masks = [], torch.zeros(2, 64, 64, dtype=torch.bool)
    for k, (vv, _) in enumerate(meshes):
        u = (K[1] - 1) - K[0] * vv[:, 0] / vv[:, 2]
        w = (K[2] - 1) - K[0] * vv[:, 1] / vv[:, 2]
        b = torch.stack([u.min(), w.min(), u.max(), w.max()])
        boxes.append(b)
        bi = b.round().long().clamp(0, 64)
        masks[k, bi[1]:bi[3], bi[0]:bi[2]] = True
    return GroundTruth(torch.stack(boxes), torch.tensor([0, 3]), masks, meshes, K)


def test_perfect_predictions_score_one():
    gt = _scene()
    pm, zs = [], []
    for k, (v, f) in enumerate(gt.meshes):
        z0, z1 = v[:, 2].min(), v[:, 2].max()
        boxed = camera_to_box(v[None], gt.boxes[k:k + 1], torch.stack([z0, z1])[None], gt.K[None])[0]
        pm.append((boxed, f))
        dz = (z1 - z0) / ((z1 + z0) / 2) * gt.K[0]
        zs.append(torch.log(dz / (gt.boxes[k, 3] - gt.boxes[k, 1])))
    masks = torch.ones(2, 28, 28)
    pred = Prediction(gt.boxes.clone(), torch.tensor([0.9, 0.8]), gt.classes.clone(), masks, None, pm, torch.stack(zs))
    m = evaluate_predictions([pred], [gt], (64, 64), 10000, torch.Generator().manual_seed(0))
    assert m["box_ap50"] == pytest.approx(1.0) and m["mesh_ap50"] == pytest.approx(1.0)
    # two independent 10k samplings of the same surface (scaled to a longest edge of 10): F1@0.3 ~0.95
    assert m["f1_0.3"] > 0.9 and m["chamfer"] < 0.05 and m["matched"] == 2
    # a wrong class is no match: box AP and mesh AP drop
    bad = pred._replace(classes=torch.tensor([1, 3]))
    m2 = evaluate_predictions([bad], [gt], (64, 64), 10000, torch.Generator().manual_seed(0))
    assert m2["mesh_ap50"] == pytest.approx(0.5) and m2["matched"] == 1


def test_match_detections_greedy():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    det = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 31]])
    m = match_detections(det, torch.tensor([0.5, 0.9, 0.7]), torch.tensor([0, 0, 1]), gt, torch.tensor([0, 1]))
    assert m.tolist() == [-1, 0, 1]  # the higher-scored duplicate takes gt 0


def test_jobs_report_user_errors(tmp_path):
    from PIL import Image

    from jobs import meshrcnn_demo, meshrcnn_eval

    with pytest.raises(runtime.UserError, match="--model is required"):
        meshrcnn_eval.main(["--images", "1"])
    with pytest.raises(runtime.UserError, match="no such run directory"):
        meshrcnn_eval.main(["--model", str(tmp_path / "nope")])
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(runtime.UserError, match="expected an RGB image, got mode L"):
        meshrcnn_demo.main(["--input", str(tmp_path / "gray.png"), "--model", str(tmp_path)])
    Image.fromarray(np.zeros((8, 40, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(runtime.UserError, match="too small"):
        meshrcnn_demo.main(["--input", str(tmp_path / "tiny.png"), "--model", str(tmp_path)])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(runtime.UserError, match="not a readable image"):
        meshrcnn_demo.main(["--input", str(tmp_path / "broken.jpg"), "--model", str(tmp_path)])
    assert math.isfinite(1.0)
