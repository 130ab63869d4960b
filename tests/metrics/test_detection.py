"""COCO AP: pycocotools' COCOeval on randomised detections and ground truths (boxes and masks, several
categories, images without ground truth or without detections, crowd-free), hand-computed cases, errors."""

import contextlib
import io

import numpy as np
import pytest
import torch

from lib3d.metrics import COCOResult, Detections, GroundTruths, box_iou, coco_evaluate, mask_iou

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _rect_mask(box, h, w, g, noise=0.1):
    """A filled rectangle with a fraction ``noise`` of its pixels dropped (bool (H, W))."""
    ys = torch.arange(h)[:, None] + 0.5
    xs = torch.arange(w)[None, :] + 0.5
    m = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
    flip = torch.rand(h, w, generator=g) < noise
    return m & ~flip


def _random_scene(seed, n_images=24, cats=(1, 3, 7, 12), with_masks=False, big=False):
    g = torch.Generator().manual_seed(seed)
    dets, gts, sizes = [], [], []
    for i in range(n_images):
        h, w = (int(torch.randint(40, 260 if big else 90, (1,), generator=g)) for _ in range(2))
        sizes.append((h, w))
        n_gt = int(torch.randint(0, 7, (1,), generator=g)) if i % 5 else 0  # every 5th image: no GT
        xy = torch.rand(n_gt, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n_gt, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 2
        gb = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], 1)
        gl = torch.tensor(cats)[torch.randint(0, len(cats) - 1, (n_gt,), generator=g)]  # last cat: no GT
        # detections: jittered copies of the GT (duplicates included) plus random boxes
        n_copy = int(torch.randint(0, 2 * n_gt + 1, (1,), generator=g)) if i % 7 != 3 else 0  # some: no dets
        src = torch.randint(0, max(n_gt, 1), (n_copy,), generator=g)
        if n_gt:  # jitter proportional to the box size, from tiny to large
            size = (gb[src, 2:] - gb[src, :2]).repeat(1, 2)
            db = gb[src] + torch.randn(n_copy, 4, generator=g) * size * torch.rand(n_copy, 1, generator=g) * 0.25
        else:
            db = torch.zeros(0, 4)
        dl = gl[src] if n_gt else torch.zeros(0, dtype=torch.int64)
        wrong = torch.rand(dl.shape[0], generator=g) < 0.15
        dl = torch.where(wrong, torch.tensor(cats)[torch.randint(0, len(cats), dl.shape, generator=g)], dl)
        n_rand = int(torch.randint(0, 4, (1,), generator=g)) if i % 7 != 3 else 0
        rxy = torch.rand(n_rand, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        rb = torch.cat([rxy, rxy + torch.rand(n_rand, 2, generator=g) * 30 + 1], 1)
        rl = torch.tensor(cats)[torch.randint(0, len(cats), (n_rand,), generator=g)]
        db = torch.cat([db, rb]).float()
        db = torch.cat([db[:, :2], torch.maximum(db[:, 2:], db[:, :2] + 0.5)], 1)
        dl = torch.cat([dl, rl])
        ds = torch.rand(db.shape[0], generator=g)
        if db.shape[0] > 2:
            ds[1] = ds[0]  # a score tie
        dm = gm = None
        if with_masks:
            dm = torch.stack([_rect_mask(b, h, w, g) for b in db]) if db.shape[0] else torch.zeros(0, h, w, dtype=torch.bool)
            gm = torch.stack([_rect_mask(b, h, w, g, 0.03) for b in gb]) if n_gt else torch.zeros(0, h, w, dtype=torch.bool)
        dets.append(Detections(db, ds, dl, dm))
        gts.append(GroundTruths(gb.float(), gl, gm))
    return dets, gts, sizes


def _xywh(b):
    b = b.double()
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def _rle(m):
    return mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))


def _pycocotools(dets, gts, sizes, iou_type):
    cats = sorted({int(c) for d in dets for c in d.labels} | {int(c) for g in gts for c in g.labels})
    images = [{"id": i + 1, "height": h, "width": w} for i, (h, w) in enumerate(sizes)]
    anns, res = [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        for j in range(g.labels.shape[0]):
            a = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(g.labels[j]), "iscrowd": 0,
                 "bbox": _xywh(g.boxes[j])}
            if iou_type == "segm":
                a["segmentation"] = _rle(g.masks[j])
                a["area"] = float(g.masks[j].sum())
            else:
                a["area"] = a["bbox"][2] * a["bbox"][3]
            anns.append(a)
        for j in range(d.labels.shape[0]):
            r = {"image_id": i + 1, "category_id": int(d.labels[j]), "score": float(d.scores[j])}
            if iou_type == "segm":
                r["segmentation"] = _rle(d.masks[j])
            else:
                r["bbox"] = _xywh(d.boxes[j])
            res.append(r)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        coco_dt = coco.loadRes(res)
        ev = COCOeval(coco, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, cats


@pytest.mark.parametrize("iou_type,seed,big,n_images", [("bbox", 0, False, 24), ("bbox", 1, True, 24),
                                                        ("bbox", 2, True, 24), ("segm", 3, False, 24),
                                                        ("segm", 4, True, 12)])
def test_matches_pycocotools(iou_type, seed, big, n_images):
    dets, gts, sizes = _random_scene(seed, n_images=n_images, with_masks=iou_type == "segm", big=big)
    ev, cats = _pycocotools(dets, gts, sizes, iou_type)
    res = coco_evaluate(dets, gts, iou_type=iou_type)
    assert isinstance(res, COCOResult)
    ours = [res.ap, res.ap50, res.ap75, res.ap_small, res.ap_medium, res.ap_large]
    np.testing.assert_allclose(ours, ev.stats[:6], atol=1e-4, rtol=0)
    assert res.ar == pytest.approx(ev.stats[8], abs=1e-4)
    assert res.categories.tolist() == cats
    ref_p = ev.eval["precision"][..., -1]  # (T, R, K, A) at maxDets=100
    np.testing.assert_allclose(res.precision.numpy(), ref_p, atol=1e-10, rtol=0)
    np.testing.assert_allclose(res.recall.numpy(), ev.eval["recall"][..., -1], atol=1e-10, rtol=0)
    for k, c in enumerate(cats):
        p = ref_p[:, :, k, 0]
        if (p > -1).any():
            assert res.per_category()[c] == pytest.approx(p.mean(), abs=1e-4)
            assert float(res.per_category_ap50[k]) == pytest.approx(p[0].mean(), abs=1e-4)
        else:
            assert c not in res.per_category() and torch.isnan(res.per_category_ap[k])
    assert 0.02 < res.ap < 0.98  # the scene is neither trivial nor hopeless


def test_max_detections_matches_pycocotools():
    dets, gts, sizes = _random_scene(5, n_images=6)
    ev, _ = _pycocotools(dets, gts, sizes, "bbox")
    res = coco_evaluate(dets, gts, max_detections=100)
    assert res.ap == pytest.approx(ev.stats[0], abs=1e-4)
    few = coco_evaluate(dets, gts, max_detections=1)  # pycocotools' AR@1 uses the same truncation
    assert few.ar == pytest.approx(ev.stats[6], abs=1e-4)


def test_hand_computed():
    gt = GroundTruths(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([1, 1]))
    # a perfect hit, a duplicate (false positive, lower score) and a miss of the second box
    det = Detections(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), torch.tensor([0.9, 0.8]), torch.tensor([1, 1]))
    res = coco_evaluate([det], [gt])
    # recall reaches 0.5 with precision 1: 51 of 101 recall thresholds -> AP 51/101 at every IoU
    assert res.ap == pytest.approx(51 / 101)
    assert res.ap50 == pytest.approx(51 / 101)
    # perfect detections: AP 1
    perfect = Detections(gt.boxes, torch.tensor([0.5, 0.4]), gt.labels)
    assert coco_evaluate([perfect], [gt]).ap == pytest.approx(1.0)
    # no detections at all: AP 0; no ground truth at all: -1 (pycocotools)
    empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert coco_evaluate([empty], [gt]).ap == 0.0
    no_gt = GroundTruths(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert coco_evaluate([det], [no_gt]).ap == -1.0
    # mappings work too
    assert coco_evaluate([det._asdict()], [gt._asdict()]).ap == pytest.approx(51 / 101)


def test_box_and_mask_iou():
    a = torch.tensor([[0.0, 0, 2, 2], [5, 5, 6, 6]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [10, 10, 12, 12]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    ma = torch.zeros(2, 4, 4, dtype=torch.bool)
    ma[0, :2, :2] = True
    mb = torch.zeros(2, 4, 4, dtype=torch.bool)
    mb[0, 1:3, 1:3] = True
    torch.testing.assert_close(mask_iou(ma, mb), torch.tensor([[1 / 7, 0.0], [0.0, 0.0]], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 7, 6, generator=g) > 0.5
    y = torch.rand(3, 7, 6, generator=g) > 0.6
    ref = mask_utils.iou([_rle(m) for m in x], [_rle(m) for m in y], [0, 0, 0])
    np.testing.assert_allclose(mask_iou(x, y).numpy(), ref, atol=1e-12)


def test_errors():
    gt = GroundTruths(torch.zeros(1, 4), torch.ones(1, dtype=torch.int64))
    det = Detections(torch.zeros(1, 4), torch.ones(1), torch.ones(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="same images"):
        coco_evaluate([det, det], [gt])
    with pytest.raises(ValueError, match="iou_type"):
        coco_evaluate([det], [gt], iou_type="keypoints")
    with pytest.raises(ValueError, match="masks"):
        coco_evaluate([det], [gt], iou_type="segm")
    with pytest.raises(TypeError, match=r"detections\[0\].labels"):
        coco_evaluate([Detections(torch.zeros(1, 4), torch.ones(1), torch.ones(1))], [gt])
    with pytest.raises(ValueError, match=r"detections\[0\].boxes"):
        coco_evaluate([Detections(torch.zeros(2, 4), torch.ones(1), torch.ones(1, dtype=torch.int64))], [gt])
    with pytest.raises(ValueError, match="masks2"):
        mask_iou(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1, 3, 4, dtype=torch.bool))
