"""Axis-aligned box operations: areas, IoU, box-delta coding, clipping and (per-class) non-maximum suppression.

Conventions (detectron2's): boxes are ``(x0, y0, x1, y1)`` in pixels (``XYXY_ABS``), ``x1 >= x0``; a box's
width is ``x1 - x0`` (no ``+ 1``). Dimension names: R, R1, R2 boxes; K classes.

Box deltas (``Box2BoxTransform``, Girshick et al., "Rich feature hierarchies", 2014, appendix C): with a
source box of centre ``(cx, cy)`` and size ``(w, h)`` and a target box ``(cx', cy', w', h')``,
``dx = wx (cx' - cx) / w``, ``dy = wy (cy' - cy) / h``, ``dw = ww log(w' / w)``, ``dh = wh log(h' / h)``;
decoding clamps ``dw, dh`` at ``log(1000 / 16)`` before the exponential.

NMS is greedy (a box is kept unless a kept box of higher score overlaps it with IoU above the threshold)
and computed exactly without a loop over boxes: the overlapping pairs ``(i, j)`` (j of higher score) are
found by a sweep along x (only boxes whose x-extents can overlap enough are compared), and ``keep[i] = not any(keep[j] for the pairs of i)`` is iterated to its fixed point,
which is unique because ``keep[i]`` only depends on higher-scored boxes (so it is the greedy answer); the
number of rounds is the longest suppression chain, a few in practice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from lib3d._checks import check_shape, check_shapes, check_tensor

__all__ = [
    "DEFAULT_BOX_WEIGHTS",
    "SCALE_CLAMP",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "match_boxes",
    "nms",
    "nms_reference",
    "nonempty_boxes",
    "subsample_labels",
]

DEFAULT_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""detectron2's ``ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` (the RPN uses ``(1, 1, 1, 1)``)."""
SCALE_CLAMP = math.log(1000.0 / 16)
"""Clamp of ``dw, dh`` before ``exp`` when decoding (detectron2's ``_DEFAULT_SCALE_CLAMP``)."""

# Rows of the IoU matrix computed at once when looking for overlapping pairs (bounds memory to ~chunk * R).
_PAIR_CHUNK_ELEMENTS = 1 << 22


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``(x1 - x0) * (y1 - y0)`` of ``boxes (..., 4)``; returns ``(...)``."""
    check_shape("boxes", boxes, (..., 4), dtype="float")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1: ``(R1, 4) float`` XYXY boxes.
        boxes2: ``(R2, 4) float`` XYXY boxes.

    Returns:
        ``(R1, R2)`` IoU; 0 where the union is empty (detectron2's ``pairwise_iou``).
    """
    check_shapes(dtype="float", boxes1=(boxes1, ("R1", 4)), boxes2=(boxes2, ("R2", 4)))
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None] - inter
    return torch.where(inter > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros((), dtype=inter.dtype, device=inter.device))


def nonempty_boxes(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``(R,) bool``: boxes whose width and height both exceed ``threshold``."""
    check_shape("boxes", boxes, ("R", 4), dtype="float")
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Clip ``boxes (..., 4)`` to an image of ``image_size = (H, W)``: x into ``[0, W]``, y into ``[0, H]``."""
    check_shape("boxes", boxes, (..., 4), dtype="float")
    h, w = int(image_size[0]), int(image_size[1])
    x0 = boxes[..., 0].clamp(0, w)
    y0 = boxes[..., 1].clamp(0, h)
    x1 = boxes[..., 2].clamp(0, w)
    y1 = boxes[..., 3].clamp(0, h)
    return torch.stack([x0, y0, x1, y1], -1)


def _centre_size(boxes: torch.Tensor):
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(src: torch.Tensor, target: torch.Tensor,
                 weights: tuple[float, float, float, float] = DEFAULT_BOX_WEIGHTS) -> torch.Tensor:
    """Deltas ``(dx, dy, dw, dh)`` that turn ``src`` into ``target`` (detectron2's ``get_deltas``).

    Args:
        src: ``(R, 4) float`` source boxes (anchors or proposals), positive widths and heights.
        target: ``(R, 4) float`` target boxes.
        weights: ``(wx, wy, ww, wh)``.

    Returns:
        ``(R, 4)`` deltas.
    """
    check_shapes(dtype="float", src=(src, ("R", 4)), target=(target, ("R", 4)))
    sx, sy, sw, sh = _centre_size(src)
    tx, ty, tw, th = _centre_size(target)
    wx, wy, ww, wh = weights
    return torch.stack([wx * (tx - sx) / sw, wy * (ty - sy) / sh, ww * torch.log(tw / sw),
                        wh * torch.log(th / sh)], dim=1)


def decode_boxes(deltas: torch.Tensor, src: torch.Tensor,
                 weights: tuple[float, float, float, float] = DEFAULT_BOX_WEIGHTS,
                 scale_clamp: float = SCALE_CLAMP) -> torch.Tensor:
    """Apply deltas to boxes (detectron2's ``apply_deltas``); the inverse of :func:`encode_boxes`.

    Args:
        deltas: ``(R, 4 K) float`` deltas (K boxes per source box, e.g. one per class).
        src: ``(R, 4) float`` source boxes.
        weights: ``(wx, wy, ww, wh)``.
        scale_clamp: ``dw, dh`` are clamped to at most this before ``exp``.

    Returns:
        ``(R, 4 K)`` decoded XYXY boxes.
    """
    check_shape("deltas", deltas, ("R", None), dtype="float")
    check_shape("src", src, (deltas.shape[0], 4), dtype="float")
    if deltas.shape[1] % 4:
        raise ValueError(f"deltas must have shape (R, 4 K), got {tuple(deltas.shape)}")
    src = src.to(deltas.dtype)
    sx, sy, sw, sh = _centre_size(src)
    wx, wy, ww, wh = weights
    d = deltas.view(deltas.shape[0], -1, 4)
    dx, dy = d[..., 0] / wx, d[..., 1] / wy
    dw = (d[..., 2] / ww).clamp(max=scale_clamp)
    dh = (d[..., 3] / wh).clamp(max=scale_clamp)
    cx = dx * sw[:, None] + sx[:, None]
    cy = dy * sh[:, None] + sy[:, None]
    w = torch.exp(dw) * sw[:, None]
    h = torch.exp(dh) * sh[:, None]
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
    return out.reshape(deltas.shape)


def _check_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float):
    check_shapes(dtype="float", boxes=(boxes, ("R", 4)), scores=(scores, ("R",)))
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")


def _pair_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """IoU of row-aligned box pairs ``(C, 4), (C, 4) -> (C,)`` (the same arithmetic as :func:`box_iou`)."""
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    wh = (torch.minimum(b1[:, 2:], b2[:, 2:]) - torch.maximum(b1[:, :2], b2[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area1 + area2 - inter
    return torch.where(inter > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros((), dtype=inter.dtype, device=inter.device))


def _overlap_pairs(boxes: torch.Tensor, iou_threshold: float,
                   idxs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(i, j)``, ``j < i``, of score-sorted boxes (of the same ``idxs``) whose IoU exceeds the
    threshold.

    Candidates come from a sweep along x: ``IoU > t`` needs an x-overlap above ``t max(w_i, w_j)``, so with
    boxes sorted by ``x0`` the earlier partners of box i have ``x0_j`` in ``[x0_i - (1 - t) W_max, x0_i]``
    (``W_max`` the widest box of its category). One ``searchsorted`` gives each box's window of earlier
    boxes, so every unordered pair is a candidate once; the windows are expanded into candidate pairs in
    chunks, and the exact IoU decides.
    """
    r = boxes.shape[0]
    dev = boxes.device
    x0 = boxes[:, 0].double()
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0).double()
    slack = 1e-6 * (float(boxes.abs().max()) + 1.0)
    t = min(max(iou_threshold, 0.0), 1.0)
    if idxs is None or r == 0:
        wmax = w.max().expand(r) if r else w
    else:
        # Categories are swept apart (each shifted past the previous one's extent, in float64 so the shift
        # costs no precision), and each window uses its own category's widest box: boxes of different
        # categories never become candidates.
        ids = torch.unique(idxs, return_inverse=True)[1]
        span = float(boxes[:, 2].double().max() - x0.min()) + 1.0
        x0 = x0 + ids.double() * (2.0 * span + 2.0 * slack + 1.0)
        wmax = torch.zeros(int(ids.max()) + 1, dtype=w.dtype, device=dev).scatter_reduce(
            0, ids, w, reduce="amax", include_self=True)[ids]
    order = torch.sort(x0, stable=True).indices
    xs = x0[order]
    lo = torch.searchsorted(xs, xs - (1 - t) * wmax[order] - slack, side="left")
    counts = (torch.arange(r, device=dev) - lo).clamp(min=0)  # earlier boxes in sorted positions [lo, pos)
    cum = torch.cumsum(counts, 0)
    idx_i, idx_j = [], []
    budget = max(_PAIR_CHUNK_ELEMENTS, 1)
    start = 0
    while start < r:  # chunks of rows whose candidate windows hold ~budget pairs (a loop over chunks)
        done = int(cum[start - 1]) if start else 0
        end = int(torch.searchsorted(cum, torch.tensor(done + budget, device=dev), side="right"))
        end = min(max(end, start + 1), r)
        c = counts[start:end]
        a = torch.repeat_interleave(torch.arange(start, end, device=dev), c)
        first = torch.repeat_interleave(lo[start:end] - torch.cumsum(c, 0) + c, c)
        b = first + torch.arange(a.numel(), device=dev)
        ii, jj = order.index_select(0, a), order.index_select(0, b)  # score-sorted indices
        hit = _pair_iou(boxes.index_select(0, ii), boxes.index_select(0, jj)) > iou_threshold
        ii, jj = ii[hit], jj[hit]
        idx_i.append(torch.maximum(ii, jj))
        idx_j.append(torch.minimum(ii, jj))
        start = end
    if not idx_i:
        return torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.int64, device=dev)
    return torch.cat(idx_i), torch.cat(idx_j)


@torch.no_grad()
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision's ``nms``), exact and without a loop over boxes.

    Args:
        boxes: ``(R, 4) float`` XYXY boxes.
        scores: ``(R,) float`` scores.
        iou_threshold: boxes overlapping a kept higher-scored box with IoU ``>`` this are dropped.

    Returns:
        ``(R',) int64`` indices of the kept boxes, by decreasing score (ties: lower index first).

    Raises:
        ValueError: bad shapes or threshold.

    Example:
        >>> keep = nms(torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11]]), torch.tensor([0.9, 0.8]), 0.5)
    """
    _check_nms(boxes, scores, iou_threshold)
    return _greedy_nms(boxes, scores, float(iou_threshold), None)


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                idxs: torch.Tensor | None) -> torch.Tensor:
    r = boxes.shape[0]
    if r == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    pi, pj = _overlap_pairs(boxes[order], iou_threshold, None if idxs is None else idxs[order])
    keep = torch.ones(r, dtype=torch.bool, device=boxes.device)
    if pi.numel():
        # Fixed point of keep[i] = not any(keep[j] over pairs (i, j)): round t settles the boxes whose
        # longest chain of higher-scored suppressors has length t (the loop is over rounds, not boxes).
        for _ in range(r):
            hits = torch.zeros(r, dtype=torch.int32, device=boxes.device)
            hits.index_add_(0, pi, keep[pj].to(torch.int32))
            new_keep = hits == 0
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
    return order[keep]


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Slow reference for :func:`nms`: the textbook greedy loop over score-sorted boxes."""
    _check_nms(boxes, scores, iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    b = boxes.detach().double().cpu()
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            x0 = max(b[i, 0].item(), b[j, 0].item())
            y0 = max(b[i, 1].item(), b[j, 1].item())
            x1 = min(b[i, 2].item(), b[j, 2].item())
            y1 = min(b[i, 3].item(), b[j, 3].item())
            inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
            a_i = (b[i, 2] - b[i, 0]).item() * (b[i, 3] - b[i, 1]).item()
            a_j = (b[j, 2] - b[j, 0]).item() * (b[j, 3] - b[j, 1]).item()
            union = a_i + a_j - inter
            if inter > 0 and inter / union > iou_threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64, device=boxes.device)


@torch.no_grad()
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS run independently per category (torchvision's ``batched_nms``).

    Boxes of different ``idxs`` never suppress each other: each category is shifted by an offset larger
    than every coordinate before one :func:`nms` call.

    Args:
        boxes: ``(R, 4) float`` XYXY boxes.
        scores: ``(R,) float`` scores.
        idxs: ``(R,) int64`` category (or image) of each box.
        iou_threshold: see :func:`nms`.

    Returns:
        ``(R',) int64`` kept indices by decreasing score.
    """
    _check_nms(boxes, scores, iou_threshold)
    check_tensor("idxs", idxs, dtype="int")
    check_shape("idxs", idxs, (boxes.shape[0],))
    return _greedy_nms(boxes, scores, float(iou_threshold), idxs)


def match_boxes(iou: torch.Tensor, thresholds: Sequence[float], labels: Sequence[int],
                allow_low_quality_matches: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Match each prediction to its best ground-truth box and label it (detectron2's ``Matcher``).

    With ``thresholds = [t_1, ..., t_m]`` and ``labels = [l_0, ..., l_m]``, a prediction whose best IoU
    lies in ``[t_i, t_{i+1})`` (``t_0 = -inf``, ``t_{m+1} = +inf``) gets ``l_i``. With
    ``allow_low_quality_matches`` every prediction that ties for the highest IoU of some ground truth is
    labelled 1 as well (Faster R-CNN's RPN rule).

    Args:
        iou: ``(G, R) float`` IoU of G ground-truth boxes with R predictions (anchors or proposals).
        thresholds: increasing IoU thresholds.
        labels: ``len(thresholds) + 1`` labels in {-1 (ignore), 0 (negative), 1 (positive)}.
        allow_low_quality_matches: see above.

    Returns:
        ``(matches (R,) int64, match_labels (R,) int8)``: index of the best ground truth and the label;
        without ground truth every label is ``labels[0]`` and every match 0.
    """
    check_shape("iou", iou, ("G", "R"), dtype="float")
    thresholds = [float(t) for t in thresholds]
    if len(labels) != len(thresholds) + 1 or any(b < a for a, b in itertools.pairwise(thresholds)):
        raise ValueError(f"labels must have len(thresholds) + 1 entries and thresholds must increase, got "
                         f"{list(thresholds)} and {list(labels)}")
    g, r = iou.shape
    if g == 0:
        return (torch.zeros(r, dtype=torch.int64, device=iou.device),
                torch.full((r,), int(labels[0]), dtype=torch.int8, device=iou.device))
    vals, matches = iou.max(dim=0)
    match_labels = torch.ones(r, dtype=torch.int8, device=iou.device)
    bounds = [-math.inf] + thresholds + [math.inf]
    for lab, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
        match_labels[(vals >= lo) & (vals < hi)] = int(lab)
    if allow_low_quality_matches:
        best = iou.max(dim=1, keepdim=True).values
        _, cols = torch.nonzero(iou == best, as_tuple=True)
        match_labels[cols] = 1
    return matches, match_labels


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a class-balanced minibatch (detectron2's ``subsample_labels``).

    At most ``num_samples * positive_fraction`` positives (labels not -1 and not ``bg_label``) and the
    rest negatives (``labels == bg_label``), drawn uniformly without replacement.

    Args:
        labels: ``(R,) int`` labels; -1 is ignored.
        num_samples: total size of the minibatch.
        positive_fraction: the largest fraction of positives.
        bg_label: the negative label.
        generator: random generator on ``labels.device``.

    Returns:
        ``(pos_idx, neg_idx)``, ``int64`` indices into ``labels``.
    """
    check_shape("labels", labels, ("R",), dtype="int")
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm1 = torch.randperm(positive.numel(), device=labels.device, generator=generator)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=labels.device, generator=generator)[:num_neg]
    return positive[perm1], negative[perm2]
