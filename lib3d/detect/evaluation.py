"""Evaluation of Mesh R-CNN predictions on images with several objects: COCO box / mask AP (``lib3d.metrics``)
and a mesh AP in the spirit of the Pix3D protocol.

Dimension names: I images; R detections of an image; G ground-truth objects of an image; H/W image size.

Mesh AP (Mesh R-CNN's Pix3D protocol, generalised to several objects per image): in each image, detections
are taken in order of decreasing score and matched greedily to the unmatched ground-truth object of the same
class with the highest box IoU ``> 0.5`` (COCO's matching at IoU 0.5). A matched detection's mesh is placed in
camera space with its predicted depth extent around the ground truth's centre depth (the protocol's
assumption: absolute depth is ambiguous from one image) and compared with the ground-truth mesh by
:func:`lib3d.metrics.compare_meshes` (both scaled so that the ground truth's longest box edge is 10); it is a
true positive when F1@0.3 ``> 0.5``. Per class the all-point VOC AP (:func:`lib3d.metrics.voc_ap`) over all
detections, with the number of ground-truth objects as positives; the mesh AP is the mean over classes with
ground truth. Chamfer, normal consistency and F1@0.1/0.3/0.5 are averaged over the matched detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lib3d.detect.boxes import box_iou
from lib3d.detect.mesh_head import z_ranges_from_dz
from lib3d.detect.meshrcnn import Prediction, meshes_to_camera
from lib3d.detect.roi_heads import paste_masks

__all__ = ["GroundTruth", "evaluate_predictions", "match_detections"]


class GroundTruth(NamedTuple):
    """Ground truth of one image for :func:`evaluate_predictions`.

    Attributes:
        boxes: ``(G, 4) float``; classes: ``(G,) int64``; masks: ``(G, H, W) bool``;
        meshes: G ``(verts, faces)`` in camera space (or None: no mesh metrics); K: ``(3,) float`` camera.
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor | None = None
    meshes: list | None = None
    K: torch.Tensor | None = None


def match_detections(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, gt_boxes: torch.Tensor,
                     gt_classes: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy score-ordered matching of one image's detections to ground truth of the same class.

    Returns:
        ``(R,) int64`` index of the matched ground-truth object, -1 when unmatched.
    """
    r = boxes.shape[0]
    out = torch.full((r,), -1, dtype=torch.int64, device=boxes.device)
    if r == 0 or gt_boxes.shape[0] == 0:
        return out
    iou = box_iou(boxes, gt_boxes.to(boxes.dtype))
    iou = torch.where(classes[:, None] == gt_classes[None], iou, torch.zeros_like(iou))
    taken = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for i in torch.argsort(scores, descending=True, stable=True).tolist():  # greedy: sequential by nature
        cand = torch.where(taken, torch.full_like(iou[i], -1.0), iou[i])
        j = int(cand.argmax())
        if float(cand[j]) > iou_threshold:
            out[i] = j
            taken[j] = True
    return out


def evaluate_predictions(predictions: Sequence[Prediction], truths: Sequence[GroundTruth],
                         image_size: tuple[int, int], mesh_samples: int = 10000,
                         generator: torch.Generator | None = None) -> dict[str, float]:
    """Box / mask AP (COCO, pycocotools' numbers through ``lib3d.metrics.coco_evaluate``) and the mesh AP and
    mesh metrics of the module docstring.

    Args:
        predictions: I :class:`lib3d.detect.Prediction` (masks in box coordinates, meshes in box
            coordinates, ``z`` for the mesh placement).
        truths: I :class:`GroundTruth`.
        image_size: ``(H, W)`` of the images (masks are pasted at this size).
        mesh_samples: points sampled per mesh for the mesh metrics (Mesh R-CNN: 10,000).
        generator: random generator of the mesh sampling.

    Returns:
        ``box_ap``, ``box_ap50``, ``box_ap75``, ``mask_ap``, ``mask_ap50`` (when masks exist), and with meshes
        ``mesh_ap50`` (F1@0.3 > 0.5), ``chamfer``, ``normal_consistency``, ``f1_0.1``, ``f1_0.3``, ``f1_0.5``,
        ``matched`` (detections with a mesh compared).
    """
    from lib3d.metrics import coco_evaluate, compare_meshes, voc_ap
    from lib3d.metrics.detection import Detections as CocoDet
    from lib3d.metrics.detection import GroundTruths as CocoGT
    from lib3d.structures import Meshes

    if len(predictions) != len(truths):
        raise ValueError(f"predictions and truths must have the same length, got {len(predictions)} and {len(truths)}")
    dets = [CocoDet(p.boxes.float(), p.scores.float(), p.classes,
                    paste_masks(p.masks.float(), p.boxes, image_size) if p.masks is not None else None)
            for p in predictions]
    has_masks = all(p.masks is not None for p in predictions) and all(t.masks is not None for t in truths)
    gts = [CocoGT(t.boxes.float(), t.classes, t.masks if has_masks else None) for t in truths]
    out: dict[str, float] = {}
    box = coco_evaluate(dets, gts, "bbox")
    out.update(box_ap=box.ap, box_ap50=box.ap50, box_ap75=box.ap75)
    if has_masks:
        segm = coco_evaluate(dets, gts, "segm")
        out.update(mask_ap=segm.ap, mask_ap50=segm.ap50)
    if not all(p.meshes is not None and p.z is not None for p in predictions) or \
            not all(t.meshes is not None and t.K is not None for t in truths):
        return out
    all_scores, all_classes = [], []
    pred_m, gt_m, owners = [], [], []
    for i, (p, t) in enumerate(zip(predictions, truths)):  # loop over images
        m = match_detections(p.boxes, p.scores, p.classes, t.boxes, t.classes)
        all_scores.append(p.scores.double())
        all_classes.append(p.classes)
        idx = torch.nonzero(m >= 0, as_tuple=True)[0]
        if idx.numel():
            gt_idx = m[idx]
            zc = torch.stack([(t.meshes[g][0][:, 2].min() + t.meshes[g][0][:, 2].max()) / 2 for g in gt_idx.tolist()])
            ks = t.K.to(p.boxes.dtype).view(1, 3).expand(idx.numel(), 3)
            zr = z_ranges_from_dz(p.z[idx, None], p.classes[idx], p.boxes[idx], ks[:, 0], zc.to(p.boxes.dtype))
            cam = meshes_to_camera([p.meshes[k] for k in idx.tolist()], p.boxes[idx], zr, ks)
            pred_m += cam
            gt_m += [t.meshes[g] for g in gt_idx.tolist()]
            owners.append((i, idx))
    scores = torch.cat(all_scores) if all_scores else torch.zeros(0, dtype=torch.float64)
    classes = torch.cat(all_classes) if all_classes else torch.zeros(0, dtype=torch.int64)
    tp = torch.zeros(scores.shape[0], dtype=torch.bool)
    if pred_m:
        metrics = compare_meshes(Meshes([v.float() for v, _ in pred_m], [f for _, f in pred_m]),
                                 Meshes([v.float() for v, _ in gt_m], [f for _, f in gt_m]), mesh_samples,
                                 thresholds=(0.1, 0.3, 0.5), generator=generator)
        offsets = torch.cumsum(torch.tensor([0] + [p.boxes.shape[0] for p in predictions]), 0)
        flat = torch.cat([offsets[i] + idx.cpu() for i, idx in owners])
        tp[flat] = metrics.f1[:, 1].cpu() > 0.5
        out.update(chamfer=float(metrics.chamfer_l2.mean()), normal_consistency=float(metrics.normal_consistency.mean()),
                   **{f"f1_{t:.1f}": float(metrics.f1[:, k].mean()) for k, t in enumerate((0.1, 0.3, 0.5))})
    out["matched"] = float(len(pred_m))
    gt_classes = torch.cat([t.classes for t in truths]) if truths else torch.zeros(0, dtype=torch.int64)
    aps = []
    for c in torch.unique(gt_classes).tolist():  # loop over classes
        sel = classes.cpu() == c
        aps.append(float(voc_ap(scores.cpu()[sel], tp[sel], int((gt_classes == c).sum()))))
    out["mesh_ap50"] = sum(aps) / len(aps) if aps else float("nan")
    return out
