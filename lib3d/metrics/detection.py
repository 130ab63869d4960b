"""COCO-style detection and instance-segmentation average precision (pycocotools' ``COCOeval``), vectorised.

Dimension names: I images; per image D detections and G ground-truth instances (``sum D`` / ``sum G`` over
all images when flattened); H/W the image size of that image's masks; K categories (the sorted union of the
labels that occur); T = 10 IoU thresholds ``0.50:0.05:0.95``; R = 101 recall thresholds ``0:0.01:1``;
A = 4 area ranges (all, small < 32^2, medium, large > 96^2, in pixels).

Conventions: boxes are ``XYXY`` in pixels (``x1, y1, x2, y2``; width ``x2 - x1``, no ``+1``); masks are dense
``(N, H, W) bool`` (no RLE); labels are integer category ids (any values; categories without ground truth
get no AP, as in pycocotools). There are no crowd annotations (every ground truth may match one detection).

The protocol is pycocotools' to the letter: per image and category the detections are ranked by score
(stable sort), the top ``max_detections`` kept, and greedily matched in that order to the unmatched ground
truth of highest IoU ``>= t`` (ground truth outside the area range is matched only when nothing inside it is
and makes the detection ignored; unmatched detections outside the range are ignored); per category the
matched / unmatched flags of all images are ranked by score, precision is made monotone, and read at the
101 recall thresholds (zero past the last recall reached). AP averages over T, R and the categories with
ground truth.

Vectorisation: IoUs of all (image, category) groups are computed at once into a padded
``(groups, D_max, G_max)`` tensor; the greedy matching advances one detection rank at a time for all groups,
thresholds and area ranges together (the only loop, at most ``max_detections`` steps, each restricted to the
groups that still have detections); accumulation is one stable sort, cumulative sums and a batched
``searchsorted`` over a padded ``(A, T, K, L)`` layout. Mask IoUs take one matrix product per image.

Speed: 5,000 detections over 500 images take ~20 ms on an H200 and 26-55 ms on a quiet 16-core CPU
(pycocotools: ~0.8 s); see ``results/benchmarks/metrics*.json``. The work is many medium-sized tensor ops,
so on a CPU shared with other busy processes, multi-threaded torch suffers OpenMP contention (measured 10x
slower with 2 threads than with 1 at load average 10-25 on 2 cores); ``torch.set_num_threads(1)`` avoids it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from lib3d._checks import check_choice, check_shape

__all__ = ["COCOResult", "Detections", "GroundTruths", "box_iou", "coco_evaluate", "mask_iou"]

IouType = Literal["bbox", "segm"]
AREA_RANGES = ((0.0, 1e5 ** 2), (0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e5 ** 2))
AREA_NAMES = ("all", "small", "medium", "large")


class Detections(NamedTuple):
    """Detections of one image.

    Attributes:
        boxes: ``(D, 4) float`` XYXY pixels (needed for ``iou_type="bbox"``).
        scores: ``(D,) float`` confidences.
        labels: ``(D,) int`` category ids.
        masks: ``(D, H, W) bool`` instance masks (needed for ``iou_type="segm"``), or None.
    """

    boxes: torch.Tensor | None
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None


class GroundTruths(NamedTuple):
    """Ground truth of one image (no crowd regions).

    Attributes:
        boxes: ``(G, 4) float`` XYXY pixels (needed for ``iou_type="bbox"``).
        labels: ``(G,) int`` category ids.
        masks: ``(G, H, W) bool`` instance masks (needed for ``iou_type="segm"``), or None.
        areas: ``(G,) float`` areas for the small/medium/large split (COCO's annotation ``area``); default
            the mask pixel count when masks are given, else the box area.
    """

    boxes: torch.Tensor | None
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    areas: torch.Tensor | None = None


@dataclass(frozen=True)
class COCOResult:
    """Result of :func:`coco_evaluate` (pycocotools' ``stats[0:6]``, ``stats[8]`` and ``eval`` arrays).

    Attributes:
        ap: AP at IoU 0.50:0.95, all areas (COCO's headline number), in [0, 1]; -1 when no category has
            ground truth (pycocotools' convention).
        ap50, ap75: AP at IoU 0.50 and 0.75.
        ap_small, ap_medium, ap_large: AP at 0.50:0.95 for the area ranges (-1 when a range has no ground
            truth).
        ar: average recall at 0.50:0.95, all areas, ``max_detections`` per image (AR@100).
        categories: ``(K,) int64`` the category ids, sorted.
        per_category_ap, per_category_ap50, per_category_ap75: ``(K,) float64``, NaN for categories
            without ground truth.
        precision: ``(T, R, K, A) float64`` interpolated precision (-1 where a category has no ground
            truth in that area range), pycocotools' ``eval["precision"][..., -1]``.
        recall: ``(T, K, A) float64`` final recall (-1 likewise).
        iou_thresholds: ``(T,) float64``; recall_thresholds: ``(R,) float64``.
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar: float
    categories: torch.Tensor
    per_category_ap: torch.Tensor
    per_category_ap50: torch.Tensor
    per_category_ap75: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor
    iou_thresholds: torch.Tensor
    recall_thresholds: torch.Tensor

    def per_category(self) -> dict[int, float]:
        """``{category id: AP}`` for the categories with ground truth."""
        return {int(c): float(a) for c, a in zip(self.categories, self.per_category_ap) if not torch.isnan(a)}


def _thresholds(device) -> tuple[torch.Tensor, torch.Tensor]:
    """pycocotools' ``np.linspace`` thresholds, bit for bit (``i * step + start``, last set to ``stop``)."""
    iou = torch.arange(10, dtype=torch.float64, device=device) * ((0.95 - 0.5) / 9) + 0.5
    iou[-1] = 0.95
    rec = torch.arange(101, dtype=torch.float64, device=device) * (1.0 / 100)
    rec[-1] = 1.0
    return iou, rec


def _xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes.to(torch.float64)
    return torch.cat([b[..., :2], b[..., 2:] - b[..., :2]], -1)


def _iou_xywh(d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """IoU of ``(..., 4)`` XYWH float64 boxes broadcast against each other (pycocotools' ``bbIou``)."""
    w = torch.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - torch.maximum(d[..., 0], g[..., 0])
    h = torch.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - torch.maximum(d[..., 1], g[..., 1])
    inter = w * h
    union = d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3] - inter
    ok = (w > 0) & (h > 0)
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(inter))


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of XYXY boxes, computed in float64 as pycocotools does (from x, y, width, height).

    Args:
        boxes1: ``(N, 4) float`` XYXY.
        boxes2: ``(M, 4) float`` XYXY.

    Returns:
        ``(N, M) float64`` IoU (0 for disjoint or degenerate boxes).
    """
    check_shape("boxes1", boxes1, (None, 4), dtype="float")
    check_shape("boxes2", boxes2, (None, 4), dtype="float")
    return _iou_xywh(_xyxy_to_xywh(boxes1)[:, None], _xyxy_to_xywh(boxes2)[None].to(boxes1.device))


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of dense boolean masks: ``|a & b| / |a | b|`` (0 when both are empty).

    One matrix product of the flattened masks (exact integer counts: float32 products for images under
    2^24 pixels, float64 above).

    Args:
        masks1: ``(N, H, W) bool``.
        masks2: ``(M, H, W) bool``.

    Returns:
        ``(N, M) float64`` IoU.
    """
    sizes = check_shape("masks1", masks1, (None, "H", "W"), dtype="bool")
    check_shape("masks2", masks2, (None, "H", "W"), sizes, dtype="bool")
    return _mask_iou_areas(masks1, masks2.to(masks1.device))[0]


def _mask_iou_areas(masks1: torch.Tensor, masks2: torch.Tensor):
    """(IoU (N, M) float64, areas1 (N,) float64, areas2 (M,) float64) of unchecked bool masks."""
    hw = masks1.shape[1] * masks1.shape[2]
    dt = torch.float32 if hw < (1 << 24) else torch.float64
    a = masks1.reshape(masks1.shape[0], hw).to(dt)
    b = masks2.reshape(masks2.shape[0], hw).to(dt)
    inter = (a @ b.T).to(torch.float64)
    area1, area2 = a.sum(1).to(torch.float64), b.sum(1).to(torch.float64)
    union = area1[:, None] + area2[None] - inter
    return inter / union.clamp_min(1), area1, area2  # union 0 -> intersection 0 -> IoU 0


def _field(x, name: str):
    if isinstance(x, Mapping):
        return x.get(name)
    return getattr(x, name, None)


def _collect(detections, ground_truths, iou_type: str):
    """Check the per-image inputs and flatten them (a loop over images; the per-element work is batched).

    Returns ``(det, gt, mask_blocks, device)``: dicts of flat tensors (``scores, labels, areas, img`` and
    ``boxes`` XYWH float64 for bbox), and for segm the per-image flattened ``(D_i, G_i)`` IoU blocks.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"detections and ground_truths must list the same images, got {len(detections)} "
                         f"and {len(ground_truths)}")
    if len(detections) == 0:
        raise ValueError("detections and ground_truths must hold at least one image")
    device = _field(detections[0], "scores").device if torch.is_tensor(_field(detections[0], "scores")) else None
    d_scores, d_labels, d_boxes, g_labels, g_boxes = [], [], [], [], []
    d_mask_area, g_mask_area, blocks, given_areas = [], [], [], {}
    n_d, n_g = [], []
    for i, (d, g) in enumerate(zip(detections, ground_truths)):
        ds, dl, gl = _field(d, "scores"), _field(d, "labels"), _field(g, "labels")
        sizes = check_shape(f"detections[{i}].scores", ds, ("D",), dtype="float")
        check_shape(f"detections[{i}].labels", dl, ("D",), sizes, dtype="int")
        gsizes = check_shape(f"ground_truths[{i}].labels", gl, ("G",), dtype="int")
        d_scores.append(ds)
        d_labels.append(dl)
        g_labels.append(gl)
        n_d.append(sizes["D"])
        n_g.append(gsizes["G"])
        gm = _field(g, "masks")
        if iou_type == "bbox":
            db, gb = _field(d, "boxes"), _field(g, "boxes")
            if db is None or gb is None:
                raise ValueError(f"iou_type='bbox' needs boxes in detections[{i}] and ground_truths[{i}]")
            check_shape(f"detections[{i}].boxes", db, ("D", 4), sizes, dtype="float")
            check_shape(f"ground_truths[{i}].boxes", gb, ("G", 4), gsizes, dtype="float")
            d_boxes.append(db)
            g_boxes.append(gb)
            if gm is not None:  # COCO's ground-truth area is the mask's, also for box AP
                check_shape(f"ground_truths[{i}].masks", gm, ("G", None, None), gsizes, dtype="bool")
                given_areas.setdefault(i, gm.flatten(1).sum(1))
        else:
            dm = _field(d, "masks")
            if dm is None or gm is None:
                raise ValueError(f"iou_type='segm' needs masks in detections[{i}] and ground_truths[{i}]")
            hw = check_shape(f"detections[{i}].masks", dm, ("D", "H", "W"), dict(sizes), dtype="bool")
            check_shape(f"ground_truths[{i}].masks", gm, ("G", "H", "W"), {**gsizes, "H": hw["H"], "W": hw["W"]},
                        dtype="bool")
            iou, a_d, a_g = _mask_iou_areas(dm.to(device), gm.to(device))  # one matrix product per image
            blocks.append(iou.flatten())
            d_mask_area.append(a_d)
            g_mask_area.append(a_g)
        ga = _field(g, "areas")
        if ga is not None:
            check_shape(f"ground_truths[{i}].areas", ga, ("G",), gsizes, dtype="float")
            given_areas[i] = ga
    n_d_t = torch.tensor(n_d, device=device)
    n_g_t = torch.tensor(n_g, device=device)
    img_ids = torch.arange(len(n_d), device=device)
    det = {"scores": torch.cat(d_scores).to(device, torch.float64),
           "labels": torch.cat(d_labels).to(device, torch.int64),
           "img": torch.repeat_interleave(img_ids, n_d_t), "count": n_d_t}
    gt = {"labels": torch.cat(g_labels).to(device, torch.int64),
          "img": torch.repeat_interleave(img_ids, n_g_t), "count": n_g_t}
    if iou_type == "bbox":
        det["boxes"] = _xyxy_to_xywh(torch.cat(d_boxes).to(device))
        gt["boxes"] = _xyxy_to_xywh(torch.cat(g_boxes).to(device))
        det["areas"] = det["boxes"][:, 2] * det["boxes"][:, 3]
        gt["areas"] = gt["boxes"][:, 2] * gt["boxes"][:, 3]
    else:
        det["areas"] = torch.cat(d_mask_area)
        gt["areas"] = torch.cat(g_mask_area)
    if given_areas:  # explicit areas (or, for boxes, mask areas) replace the defaults of those images
        per_img = list(torch.split(gt["areas"], n_g))
        for i, a in given_areas.items():
            per_img[i] = a.to(device, torch.float64)
        gt["areas"] = torch.cat(per_img)
    return det, gt, blocks, device


def _segment_positions(keys_sorted: torch.Tensor) -> torch.Tensor:
    """Position of each element within its run of equal keys (keys sorted)."""
    n = keys_sorted.shape[0]
    idx = torch.arange(n, device=keys_sorted.device)
    if n == 0:
        return idx
    start = torch.ones(n, dtype=torch.bool, device=keys_sorted.device)
    start[1:] = keys_sorted[1:] != keys_sorted[:-1]
    first = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0).values
    return idx - first


def coco_evaluate(detections: Sequence[Detections | Mapping], ground_truths: Sequence[GroundTruths | Mapping],
                  iou_type: IouType = "bbox", max_detections: int = 100) -> COCOResult:
    """COCO box or mask AP, the numbers of pycocotools' ``COCOeval.evaluate(); accumulate(); summarize()``.

    Args:
        detections: per image, a :class:`Detections` (or a mapping with the same keys): ``boxes (D, 4)``
            XYXY float, ``scores (D,)`` float, ``labels (D,)`` int, ``masks (D, H, W)`` bool for ``"segm"``.
        ground_truths: per image (same order and length), a :class:`GroundTruths` (or mapping):
            ``boxes (G, 4)``, ``labels (G,)``, ``masks (G, H, W)`` for ``"segm"``, optional ``areas (G,)``.
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU).
        max_detections: detections kept per image and category, highest scores first (COCO: 100).

    Returns:
        :class:`COCOResult` (AP, AP50, AP75, AP small/medium/large, AR, per-category AP and the
        precision/recall arrays).

    Raises:
        ValueError: mismatched list lengths, missing boxes/masks for the IoU type, bad shapes.
        TypeError: wrong dtypes (scores float, labels int, masks bool).

    Example:
        >>> res = coco_evaluate([Detections(boxes, scores, labels)], [GroundTruths(gt_boxes, gt_labels)])
        >>> res.ap, res.ap50, res.per_category()
    """
    check_choice("iou_type", iou_type, ("bbox", "segm"))
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    det, gt, mask_blocks, device = _collect(detections, ground_truths, iou_type)
    iou_thr, rec_thr = _thresholds(device)
    T, R, A = iou_thr.shape[0], rec_thr.shape[0], len(AREA_RANGES)
    categories = torch.unique(torch.cat([det["labels"], gt["labels"]]))  # sorted
    K = categories.shape[0]
    d_cat = torch.searchsorted(categories, det["labels"])
    g_cat = torch.searchsorted(categories, gt["labels"])
    area_lo = torch.tensor([a[0] for a in AREA_RANGES], dtype=torch.float64, device=device)
    area_hi = torch.tensor([a[1] for a in AREA_RANGES], dtype=torch.float64, device=device)
    g_ign = (gt["areas"][None] < area_lo[:, None]) | (gt["areas"][None] > area_hi[:, None])  # (A, sumG)
    d_out = (det["areas"][None] < area_lo[:, None]) | (det["areas"][None] > area_hi[:, None])  # (A, sumD)

    # 1. rank detections within each (image, category) group by score (stable) and keep the top ones
    n_det = det["scores"].shape[0]
    d_group = det["img"] * K + d_cat
    order = torch.sort(-det["scores"], stable=True).indices
    order = order[torch.sort(d_group[order], stable=True).indices]  # (group, -score, input order)
    rank_sorted = _segment_positions(d_group[order])
    keep = order[rank_sorted < max_detections]
    rank = torch.empty(n_det, dtype=torch.int64, device=device)
    rank[order] = rank_sorted
    # 2. padded (group, rank) layout of the kept detections; groups with ground truth first, each part ordered
    #    by detection count (descending), so that the matching of rank r touches a prefix of the groups
    groups, g_of_det, counts = torch.unique(d_group[keep], return_inverse=True, return_counts=True)
    n_groups = groups.shape[0]
    g_group = gt["img"] * K + g_cat
    has_gt = torch.isin(groups, g_group)
    by_size = torch.sort(-counts, stable=True).indices
    by_size = by_size[torch.sort((~has_gt[by_size]).to(torch.int8), stable=True).indices]
    slot_of_group = torch.empty_like(by_size)
    slot_of_group[by_size] = torch.arange(n_groups, device=device)
    counts_sorted = counts[by_size]
    counts_with_gt = torch.where(has_gt[by_size], counts_sorted, torch.zeros_like(counts_sorted))
    d_max = int(counts_sorted.max()) if n_groups else 0
    det_slot = torch.full((n_groups, d_max), -1, dtype=torch.int64, device=device)
    det_slot[slot_of_group[g_of_det], rank[keep]] = keep
    # ground truth of the groups that have detections, in input order within each group
    g_order = torch.sort(g_group, stable=True).indices
    g_pos = torch.empty_like(g_order)
    g_pos[g_order] = _segment_positions(g_group[g_order])
    hit = torch.searchsorted(groups, g_group).clamp(max=max(n_groups - 1, 0))
    in_group = (groups[hit] == g_group) if n_groups else torch.zeros_like(g_group, dtype=torch.bool)
    gt_max = int(g_pos[in_group].max()) + 1 if bool(in_group.any()) else 0
    gt_slot = torch.full((n_groups, gt_max), -1, dtype=torch.int64, device=device)
    sel = torch.nonzero(in_group).squeeze(1)
    gt_slot[slot_of_group[hit[sel]], g_pos[sel]] = sel

    # 3. IoU of every (detection slot, ground-truth slot) pair of each group: (groups, d_max, gt_max)
    dvalid, gvalid = det_slot >= 0, gt_slot >= 0
    pair_valid = dvalid[:, :, None] & gvalid[:, None, :]
    if iou_type == "bbox":
        db = det["boxes"][det_slot.clamp(min=0)]
        gb = gt["boxes"][gt_slot.clamp(min=0)]
        ious = _iou_xywh(db[:, :, None], gb[:, None, :])
    else:
        # per-image IoU blocks (one matrix product per image, in _collect), gathered into the group layout
        n_d_img, n_g_img = det["count"], gt["count"]
        block_off = torch.cumsum(n_d_img * n_g_img, 0) - n_d_img * n_g_img
        d_local = torch.arange(n_det, device=device) - (torch.cumsum(n_d_img, 0) - n_d_img)[det["img"]]
        n_gt = gt["labels"].shape[0]
        g_local = torch.arange(n_gt, device=device) - (torch.cumsum(n_g_img, 0) - n_g_img)[gt["img"]]
        flat = torch.cat(mask_blocks)
        ds, gs = det_slot.clamp(min=0), gt_slot.clamp(min=0)
        img = det["img"][ds]
        idx = (block_off[img] + d_local[ds] * n_g_img[img])[:, :, None] + g_local[gs][:, None, :]
        ious = flat[idx.clamp(max=max(flat.shape[0] - 1, 0))] if flat.numel() else torch.zeros(
            idx.shape, dtype=torch.float64, device=device)
    ious = torch.where(pair_valid, ious, torch.zeros_like(ious))

    # 4. greedy matching, one detection rank at a time, for all groups, thresholds and area ranges at once
    thr = torch.clamp(iou_thr, max=1 - 1e-10)[None, :, None, None]  # (1, T, 1, 1)
    gt_ign = g_ign[:, gt_slot.clamp(min=0)][:, None] & gvalid  # (A, 1, groups, gt_max)
    gt_taken = torch.zeros((A, T, n_groups, gt_max), dtype=torch.bool, device=device)
    dt_match = torch.zeros((A, T, n_groups, d_max), dtype=torch.bool, device=device)
    dt_ign = torch.zeros_like(dt_match)
    gt_index = torch.arange(gt_max, device=device)
    # groups (with ground truth) that still have a detection at rank r: a prefix of the slots
    active_per_rank = (counts_with_gt[None] > torch.arange(d_max, device=device)[:, None]).sum(1).tolist()
    for r in range(d_max):  # loop over detection ranks (<= max_detections), vectorised over groups
        n_act = active_per_rank[r]
        if n_act == 0 or gt_max == 0:
            break
        iou_r = ious[:n_act, r][None, None]  # (1, 1, n_act, gt_max)
        avail = ~gt_taken[:, :, :n_act] & gvalid[:n_act] & (iou_r >= thr)
        ign = gt_ign[:, :, :n_act]
        regular = avail & ~ign
        use = torch.where(regular.any(-1, keepdim=True), regular, avail & ign)
        best = torch.where(use, iou_r, torch.full_like(iou_r, -1.0)).amax(-1, keepdim=True)
        # the last ground truth with the best IoU (pycocotools' '<' comparison keeps later ties)
        m = torch.where(use & (iou_r == best), gt_index, -1).amax(-1)  # (A, T, n_act)
        matched = m >= 0
        onehot = gt_index == m[..., None]  # (A, T, n_act, gt_max); all False when unmatched
        dt_match[:, :, :n_act, r] = matched
        dt_ign[:, :, :n_act, r] = (onehot & ign).any(-1)
        gt_taken[:, :, :n_act] |= onehot
    # unmatched detections outside the area range are ignored
    d_out_slot = d_out[:, det_slot.clamp(min=0)][:, None]  # (A, 1, groups, d_max)
    dt_ign = dt_ign | (~dt_match & d_out_slot)

    # 5. accumulate per category: all kept detections ranked by (category, -score, image, rank)
    flat_valid = dvalid.flatten()
    det_flat = det_slot.flatten()[flat_valid]  # (L,) detection indices
    tp_flag = (dt_match & ~dt_ign).flatten(2)[:, :, flat_valid]  # (A, T, L)
    fp_flag = (~dt_match & ~dt_ign).flatten(2)[:, :, flat_valid]
    o = torch.sort(rank[det_flat], stable=True).indices
    o = o[torch.sort(det["img"][det_flat][o], stable=True).indices]
    o = o[torch.sort(-det["scores"][det_flat][o], stable=True).indices]
    o = o[torch.sort(d_cat[det_flat][o], stable=True).indices]
    cat_l = d_cat[det_flat][o]
    pos = _segment_positions(cat_l)
    n_per_cat = torch.bincount(cat_l, minlength=K)
    l_max = max(int(n_per_cat.max()) if cat_l.numel() else 0, 1)  # >= 1: padding keeps shapes non-empty
    tp_pad = torch.zeros((A, T, K, l_max), dtype=torch.float64, device=device)
    fp_pad = torch.zeros_like(tp_pad)
    tp_pad[:, :, cat_l, pos] = tp_flag[:, :, o].to(torch.float64)
    fp_pad[:, :, cat_l, pos] = fp_flag[:, :, o].to(torch.float64)
    tp_sum, fp_sum = tp_pad.cumsum(-1), fp_pad.cumsum(-1)
    npig = torch.zeros((A, K), dtype=torch.float64, device=device)
    npig.index_put_((torch.arange(A, device=device)[:, None].expand(A, g_cat.shape[0]), g_cat.expand(A, -1)),
                    (~g_ign).to(torch.float64), accumulate=True)
    npig_b = npig[:, None, :, None]  # (A, 1, K, 1)
    in_seq = torch.arange(l_max, device=device) < n_per_cat[:, None]  # (K, l_max)
    rc = torch.where(in_seq, tp_sum / npig_b.clamp_min(1), torch.full_like(tp_sum, 2.0))
    pr = tp_sum / (fp_sum + tp_sum + 2.220446049250313e-16)  # np.spacing(1)
    pr = torch.where(in_seq, pr, torch.zeros_like(pr))
    pr = torch.flip(torch.cummax(torch.flip(pr, (-1,)), -1).values, (-1,))  # monotone envelope
    ri = torch.searchsorted(rc.contiguous(), rec_thr.expand(A, T, K, R).contiguous(), side="left")
    q = torch.where(ri < n_per_cat[None, None, :, None], torch.gather(pr, 3, ri.clamp(max=l_max - 1)),
                    torch.zeros((), dtype=torch.float64, device=device))
    has_gt = (npig > 0)[:, None, :, None]  # (A, 1, K, 1)
    precision = torch.where(has_gt, q, torch.full_like(q, -1.0)).permute(1, 3, 2, 0)  # (T, R, K, A)
    last = (n_per_cat - 1).clamp(min=0)[None, None, :, None].expand(A, T, K, 1)
    final_rc = torch.where(n_per_cat > 0, torch.gather(rc, 3, last)[..., 0], torch.zeros((), dtype=torch.float64,
                                                                                        device=device))
    recall = torch.where((npig > 0)[:, None, :], final_rc, torch.full_like(final_rc, -1.0)).permute(1, 2, 0)

    def mean_valid(s: torch.Tensor) -> float:
        v = s[s > -1]
        return float(v.mean()) if v.numel() else -1.0

    p_all = precision[..., 0]  # (T, R, K)
    cat_has = npig[0] > 0
    nan = torch.full((K,), float("nan"), dtype=torch.float64, device=device)
    return COCOResult(
        ap=mean_valid(p_all), ap50=mean_valid(p_all[0]), ap75=mean_valid(p_all[5]),
        ap_small=mean_valid(precision[..., 1]), ap_medium=mean_valid(precision[..., 2]),
        ap_large=mean_valid(precision[..., 3]), ar=mean_valid(recall[:, :, 0]),
        categories=categories,
        per_category_ap=torch.where(cat_has, p_all.mean((0, 1)), nan),
        per_category_ap50=torch.where(cat_has, p_all[0].mean(0), nan),
        per_category_ap75=torch.where(cat_has, p_all[5].mean(0), nan),
        precision=precision, recall=recall, iou_thresholds=iou_thr, recall_thresholds=rec_thr)
