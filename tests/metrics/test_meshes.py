"""Mesh metrics: hand-built cases, a brute-force scipy cKDTree reference, the Pix3D AP against a restatement
of meshrcnn's per-prediction loop."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from lib3d.metrics import compare_meshes, compare_point_clouds, mesh_ap, pix3d_ap, voc_ap
from lib3d.ops import ico_sphere
from lib3d.structures import Meshes


def _cube(side=2.0, offset=(0.0, 0.0, 0.0)):
    v = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=torch.float32)
    v = v * side + torch.tensor(offset)
    f = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return Meshes([v], [f])


def test_identical_clouds_and_meshes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 300, 3, generator=g)
    n = torch.nn.functional.normalize(torch.randn(2, 300, 3, generator=g), dim=-1)
    r = compare_point_clouds(x, x, n, n)
    assert torch.equal(r.chamfer_l2, torch.zeros(2))
    torch.testing.assert_close(r.f1, torch.ones(2, 3))
    torch.testing.assert_close(r.normal_consistency, torch.ones(2))
    # identical meshes with vertices as the points: chamfer 0, F1 1
    m = ico_sphere(2)
    rv = compare_meshes(m, m, num_samples="verts")
    assert float(rv.chamfer_l2) == 0.0 and torch.equal(rv.f1, torch.ones(1, 3))
    assert torch.isnan(rv.normal_consistency).all()  # no normals from vertices (as meshrcnn)
    # identical meshes, independent surface samples: near zero, F1@0.5 = 1, normals agree
    rs = compare_meshes(m, m, num_samples=4000, generator=g)
    assert float(rs.chamfer_l2) < 0.1 and float(rs.f1[0, 2]) == 1.0 and float(rs.normal_consistency) > 0.98


def test_translated_cube_known_chamfer():
    # vertices of a side-2 cube; the ground truth's longest edge 2 is scaled to 10 (factor 5), so a shift of
    # 0.1 becomes 0.5 and every vertex's nearest neighbour is its own copy: chamfer = 2 * 0.5^2
    gt = _cube(2.0)
    pred = _cube(2.0, (0.1, 0.0, 0.0))
    r = compare_meshes(pred, gt, num_samples="verts")
    torch.testing.assert_close(r.chamfer_l2, torch.tensor([0.5]))
    # d = 0.5 for all points: below 0.1 and 0.3 none, below 0.5 none (strict <), F1 0
    torch.testing.assert_close(r.f1, torch.zeros(1, 3))
    r2 = compare_meshes(pred, gt, num_samples="verts", thresholds=(0.6,))
    torch.testing.assert_close(r2.f1, torch.ones(1, 1), atol=1e-7, rtol=0)
    # without scaling: shift 0.1 -> chamfer 2 * 0.01
    r3 = compare_meshes(pred, gt, num_samples="verts", scale_to=None)
    torch.testing.assert_close(r3.chamfer_l2, torch.tensor([0.02]))
    # surface samples of a shifted cube: the chamfer grows with the shift
    g = torch.Generator().manual_seed(1)
    near = compare_meshes(_cube(2.0, (0.02, 0, 0)), gt, num_samples=3000, generator=g).chamfer_l2
    far = compare_meshes(_cube(2.0, (0.4, 0, 0)), gt, num_samples=3000, generator=g).chamfer_l2
    assert float(far) > 3 * float(near)


def test_matches_ckdtree_reference():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(3, 400, 3, generator=g, dtype=torch.float64) * 2
    q = torch.rand(3, 500, 3, generator=g, dtype=torch.float64) * 2
    pn = torch.nn.functional.normalize(torch.randn(3, 400, 3, generator=g, dtype=torch.float64), dim=-1)
    qn = torch.nn.functional.normalize(torch.randn(3, 500, 3, generator=g, dtype=torch.float64), dim=-1)
    lp = torch.tensor([400, 250, 1])
    lq = torch.tensor([500, 500, 37])
    thr = (0.05, 0.1, 0.2)
    r = compare_point_clouds(p, q, pn, qn, lp, lq, thresholds=thr)
    for i in range(3):
        a, b = p[i, :lp[i]].numpy(), q[i, :lq[i]].numpy()
        an, bn = pn[i, :lp[i]].numpy(), qn[i, :lq[i]].numpy()
        da, ia = cKDTree(b).query(a)
        db, ib = cKDTree(a).query(b)
        assert float(r.chamfer_l2[i]) == pytest.approx((da ** 2).mean() + (db ** 2).mean(), rel=1e-10)
        ca = (an * bn[ia]).sum(1)
        cb = (bn * an[ib]).sum(1)
        assert float(r.normal_consistency[i]) == pytest.approx(0.5 * (ca.mean() + cb.mean()), rel=1e-8, abs=1e-10)
        assert float(r.abs_normal_consistency[i]) == pytest.approx(0.5 * (abs(ca).mean() + abs(cb).mean()), rel=1e-8)
        for k, t in enumerate(thr):
            prec, rec = (da < t).mean(), (db < t).mean()
            assert float(r.precision[i, k]) == pytest.approx(prec)
            assert float(r.recall[i, k]) == pytest.approx(rec)
            assert float(r.f1[i, k]) == pytest.approx(2 * prec * rec / (prec + rec + 1e-8))


def test_compare_meshes_batch_and_single_gt():
    g = torch.Generator().manual_seed(3)
    gt = ico_sphere(2)
    preds = Meshes([gt.verts_packed() * 1.0, gt.verts_packed() * 1.1], [gt.faces_packed()] * 2)
    r = compare_meshes(preds, gt, num_samples=2000, generator=g)  # one GT for both predictions
    assert r.chamfer_l2.shape == (2,) and r.f1.shape == (2, 3)
    assert float(r.chamfer_l2[1]) > float(r.chamfer_l2[0])
    d = r.to_meshrcnn()
    assert set(d) >= {"Chamfer-L2", "NormalConsistency", "AbsNormalConsistency", "F1@0.300000", "Precision@0.100000"}
    assert d["F1@0.300000"] == pytest.approx(100 * float(r.f1[:, 1].mean()))
    with pytest.raises(ValueError, match="gt_meshes"):
        compare_meshes(preds, Meshes([gt.verts_packed()] * 3, [gt.faces_packed()] * 3))
    with pytest.raises(ValueError, match="num_samples"):
        compare_meshes(preds, gt, num_samples=0)
    with pytest.raises(TypeError, match="pred_meshes"):
        compare_meshes(torch.zeros(1, 10, 3), gt)


def _voc_ap_reference(scores, tp, npos):
    """meshrcnn's VOCap.compute_ap, restated with Python loops."""
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(tp, dtype=float)[order]
    tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
    rec, prec = tps / npos, tps / (tps + fps)
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[0], prec, [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _pix3d_reference(image_ids, scores, labels, gt_labels, quality, box_iou, thr=0.5, filt=0.3):
    """meshrcnn's evaluate_for_pix3d loop (per image, predictions by decreasing score)."""
    cats = sorted(set(gt_labels.tolist()))
    per = {c: ([], []) for c in cats}
    covered = set()
    for im in range(len(gt_labels)):
        idx = [i for i in range(len(scores)) if image_ids[i] == im]
        idx.sort(key=lambda i: -scores[i])
        for i in idx:
            if box_iou[i] <= filt:
                continue
            tp = labels[i] == gt_labels[im] and quality[i] > thr and im not in covered
            if tp:
                covered.add(im)
            if int(labels[i]) in per:
                per[int(labels[i])][0].append(float(scores[i]))
                per[int(labels[i])][1].append(bool(tp))
    npos = {c: int((gt_labels == c).sum()) for c in cats}
    aps = {c: _voc_ap_reference(per[c][0], per[c][1], npos[c]) for c in cats}
    return float(np.mean(list(aps.values()))), aps


def test_voc_ap_and_pix3d_ap_match_meshrcnn_loop():
    g = torch.Generator().manual_seed(4)
    s = torch.rand(40, generator=g)
    t = torch.rand(40, generator=g) > 0.5
    assert float(voc_ap(s, t, 30)) == pytest.approx(_voc_ap_reference(s.numpy(), t.numpy(), 30))
    assert float(voc_ap(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3)) == 0.0
    n_img, n_pred = 30, 120
    gt_labels = torch.randint(0, 4, (n_img,), generator=g)
    image_ids = torch.randint(0, n_img, (n_pred,), generator=g)
    scores = torch.rand(n_pred, generator=g)
    labels = torch.where(torch.rand(n_pred, generator=g) < 0.7, gt_labels[image_ids],
                         torch.randint(0, 5, (n_pred,), generator=g))  # label 4: no ground truth
    f1 = torch.rand(n_pred, generator=g)
    biou = torch.rand(n_pred, generator=g)
    res = mesh_ap(image_ids, scores, labels, gt_labels, f1, biou)
    ref_ap, ref_per = _pix3d_reference(image_ids.numpy(), scores.numpy(), labels.numpy(), gt_labels.numpy(),
                                       f1.numpy(), biou.numpy())
    assert res.ap == pytest.approx(ref_ap, abs=1e-12)
    assert res.per_category() == pytest.approx(ref_per, abs=1e-12)
    # hand case: two images of category 1; image 0 has a good mesh (TP) and a worse duplicate (FP)
    r = pix3d_ap(torch.tensor([0, 0]), torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), torch.tensor([1, 1]),
                 torch.tensor([0.9, 0.9]), torch.tensor([0.8, 0.8]))
    assert r.ap == pytest.approx(0.5)  # recall 0.5 at precision 1
    with pytest.raises(ValueError, match="percent"):
        mesh_ap(torch.tensor([0]), torch.ones(1), torch.ones(1, dtype=torch.int64), torch.ones(1, dtype=torch.int64),
                torch.tensor([60.0]), torch.ones(1))
    with pytest.raises(ValueError, match="image_ids"):
        pix3d_ap(torch.tensor([2]), torch.ones(1), torch.ones(1, dtype=torch.int64), torch.ones(1, dtype=torch.int64),
                 torch.ones(1), torch.ones(1))
