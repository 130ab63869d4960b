"""Anchors and the region proposal network (Ren et al., "Faster R-CNN", 2015; detectron2's ``StandardRPN``).

Dimension names: N images; L pyramid levels; C channels; H_l/W_l level size; A anchors per location;
R_l = H_l W_l A anchors of a level; G ground-truth boxes of an image; R proposals.

Conventions (detectron2's): anchors of one level are ordered (y, x, a) -- location-major, the A cell
anchors innermost, cell anchors ordered size-major then aspect ratio; a cell anchor of size ``s`` and aspect
ratio ``r = h / w`` has ``w = sqrt(s^2 / r)``, ``h = r w`` and is centred on ``(x, y) * stride`` (offset 0).
RPN box deltas use weights ``(1, 1, 1, 1)``. Losses are sums over the sampled anchors divided by
``batch_size_per_image * N`` (detectron2's normaliser): binary cross-entropy on objectness and smooth-L1
(``beta = 0``: L1) on the deltas of positive anchors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape
from lib3d.detect.boxes import (
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    match_boxes,
    nonempty_boxes,
    subsample_labels,
)

__all__ = [
    "AnchorGenerator",
    "RPNHead",
    "RPNOutputs",
    "cell_anchors",
    "find_top_rpn_proposals",
    "grid_anchors",
    "rpn_losses",
    "smooth_l1_loss",
]

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, beta: float, reduction: str = "sum") -> torch.Tensor:
    """detectron2's smooth-L1: ``0.5 x^2 / beta`` for ``|x| < beta``, else ``|x| - 0.5 beta``; L1 if ``beta < 1e-5``."""
    d = (input - target).abs()
    loss = d if beta < 1e-5 else torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], dtype=torch.float32,
                 device=None) -> torch.Tensor:
    """The ``A = len(sizes) * len(aspect_ratios)`` anchors centred at the origin, ``(A, 4)`` XYXY."""
    out = []
    for s in sizes:
        for r in aspect_ratios:
            w = math.sqrt(s * s / r)
            h = r * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=dtype, device=device)


def grid_anchors(cell: torch.Tensor, size: tuple[int, int], stride: int, offset: float = 0.0) -> torch.Tensor:
    """Shift ``cell (A, 4)`` anchors to every location of an ``(H, W)`` map: ``(H W A, 4)``, (y, x, a) order."""
    check_shape("cell", cell, ("A", 4), dtype="float")
    h, w = int(size[0]), int(size[1])
    sx = (torch.arange(w, device=cell.device, dtype=cell.dtype) + offset) * stride
    sy = (torch.arange(h, device=cell.device, dtype=cell.dtype) + offset) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)
    return (shifts + cell[None]).reshape(-1, 4)


class AnchorGenerator(nn.Module):
    """Anchors of every pyramid level (detectron2's ``DefaultAnchorGenerator``; no state dict entries).

    Args:
        sizes: per level, the anchor sizes (e.g. ``((32,), (64,), (128,), (256,), (512,))``).
        aspect_ratios: ``h / w`` ratios shared by all levels.
        strides: per level, the stride in pixels.
        offset: anchor centre offset in strides (detectron2: 0.0).
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float],
                 strides: Sequence[int], offset: float = 0.0):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"sizes and strides must have one entry per level, got {len(sizes)} and {len(strides)}")
        self.sizes = tuple(tuple(float(x) for x in s) for s in sizes)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)

    @property
    def num_anchors(self) -> int:
        """A: anchors per location (the same at every level)."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Anchors ``(H_l W_l A, 4)`` for each level's ``(N, C, H_l, W_l)`` feature map."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(features)}")
        return [grid_anchors(cell_anchors(s, self.aspect_ratios, f.dtype, f.device), f.shape[-2:], st, self.offset)
                for f, s, st in zip(features, self.sizes, self.strides)]


class RPNOutputs(NamedTuple):
    """Raw RPN predictions, per level.

    Attributes:
        objectness: L tensors ``(N, R_l)`` objectness logits.
        deltas: L tensors ``(N, R_l, 4)`` anchor deltas.
    """

    objectness: list
    deltas: list


class RPNHead(nn.Module):
    """detectron2's ``StandardRPNHead``: a shared 3x3 conv + ReLU, then 1x1 convs for A objectness logits and
    4 A deltas per location. Keys: ``conv``, ``objectness_logits``, ``anchor_deltas``.

    Args:
        in_channels: C of every level.
        num_anchors: A.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> RPNOutputs:
        """Predictions for L ``(N, C, H_l, W_l)`` maps, flattened in the anchors' (y, x, a) order."""
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            n, _, h, w = f.shape
            logits.append(self.objectness_logits(t).permute(0, 2, 3, 1).reshape(n, -1))
            d = self.anchor_deltas(t)
            deltas.append(d.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return RPNOutputs(logits, deltas)


def rpn_losses(anchors: Sequence[torch.Tensor], outputs: RPNOutputs, gt_boxes: Sequence[torch.Tensor],
               batch_size_per_image: int = 256, positive_fraction: float = 0.5,
               iou_thresholds: Sequence[float] = (0.3, 0.7), iou_labels: Sequence[int] = (0, -1, 1),
               smooth_l1_beta: float = 0.0, loss_weight: float = 1.0,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """RPN objectness and box losses (detectron2's ``StandardRPNHead.losses``).

    Args:
        anchors: L ``(R_l, 4)`` anchors.
        outputs: the :class:`RPNHead` predictions.
        gt_boxes: N ``(G_n, 4)`` ground-truth boxes.
        batch_size_per_image: anchors sampled per image.
        positive_fraction: largest fraction of positives among them.
        iou_thresholds, iou_labels: the anchor matcher (see :func:`lib3d.detect.boxes.match_boxes`;
            low-quality matches allowed).
        smooth_l1_beta: smooth-L1 beta of the delta loss (0: L1).
        loss_weight: multiplies both losses.
        generator: random generator of the sampling.

    Returns:
        ``{"loss_rpn_cls": scalar, "loss_rpn_loc": scalar}``.
    """
    all_anchors = torch.cat(list(anchors))
    logits = torch.cat(list(outputs.objectness), 1)  # (N, R)
    deltas = torch.cat(list(outputs.deltas), 1)  # (N, R, 4)
    n = logits.shape[0]
    if len(gt_boxes) != n:
        raise ValueError(f"gt_boxes must have one entry per image ({n}), got {len(gt_boxes)}")
    labels_all, targets_all = [], []
    for gt in gt_boxes:  # loop over images
        iou = box_iou(gt.to(all_anchors.dtype), all_anchors)
        matches, labels = match_boxes(iou, iou_thresholds, iou_labels, allow_low_quality_matches=True)
        labels = labels.to(torch.int64)
        pos, neg = subsample_labels(labels, batch_size_per_image, positive_fraction, 0, generator)
        sampled = torch.full_like(labels, -1)
        sampled[pos] = 1
        sampled[neg] = 0
        labels_all.append(sampled)
        if gt.shape[0]:
            targets_all.append(encode_boxes(all_anchors, gt[matches].to(all_anchors.dtype), RPN_BOX_WEIGHTS))
        else:
            targets_all.append(torch.zeros_like(all_anchors))
    labels = torch.stack(labels_all)  # (N, R)
    targets = torch.stack(targets_all)  # (N, R, 4)
    pos_mask = labels == 1
    valid = labels >= 0
    normalizer = float(batch_size_per_image * n)
    loc = smooth_l1_loss(deltas[pos_mask], targets[pos_mask], smooth_l1_beta, "sum") / normalizer
    cls = F.binary_cross_entropy_with_logits(logits[valid], labels[valid].to(logits.dtype),
                                             reduction="sum") / normalizer
    return {"loss_rpn_cls": cls * loss_weight, "loss_rpn_loc": loc * loss_weight}


@torch.no_grad()
def find_top_rpn_proposals(anchors: Sequence[torch.Tensor], outputs: RPNOutputs,
                           image_sizes: Sequence[tuple[int, int]], nms_thresh: float = 0.7,
                           pre_nms_topk: int = 1000, post_nms_topk: int = 1000,
                           min_box_size: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Proposals from RPN predictions (detectron2's ``find_top_rpn_proposals``).

    Per image and level keep the ``pre_nms_topk`` highest logits, decode their boxes, clip them to the
    image, drop empty or non-finite ones, run NMS per level and keep the ``post_nms_topk`` best overall.

    Args:
        anchors: L ``(R_l, 4)`` anchors.
        outputs: :class:`RPNOutputs`.
        image_sizes: N ``(H, W)`` sizes (of the unpadded images).
        nms_thresh: NMS IoU threshold.
        pre_nms_topk: proposals kept per level before NMS.
        post_nms_topk: proposals kept per image after NMS.
        min_box_size: boxes with a side not above this are dropped.

    Returns:
        N pairs ``(boxes (R, 4), objectness_logits (R,))``, by decreasing logit (no gradient).
    """
    n = outputs.objectness[0].shape[0]
    boxes_lv, logits_lv, level_lv = [], [], []
    for lvl, (a, logit, delta) in enumerate(zip(anchors, outputs.objectness, outputs.deltas)):
        k = min(int(pre_nms_topk), logit.shape[1])
        top, idx = logit.topk(k, dim=1)  # (N, k)
        d = torch.gather(delta, 1, idx[..., None].expand(-1, -1, 4))  # (N, k, 4)
        b = decode_boxes(d.reshape(-1, 4), a[idx.reshape(-1)], RPN_BOX_WEIGHTS).view(n, k, 4)
        boxes_lv.append(b)
        logits_lv.append(top)
        level_lv.append(torch.full((k,), lvl, dtype=torch.int64, device=logit.device))
    boxes = torch.cat(boxes_lv, 1)
    logits = torch.cat(logits_lv, 1)
    levels = torch.cat(level_lv)
    results = []
    for i in range(n):  # loop over images
        b, s, lv = boxes[i], logits[i], levels
        ok = torch.isfinite(b).all(1) & torch.isfinite(s)
        b, s, lv = b[ok], s[ok], lv[ok]
        b = clip_boxes(b, image_sizes[i])
        keep = nonempty_boxes(b, min_box_size)
        b, s, lv = b[keep], s[keep], lv[keep]
        keep = batched_nms(b, s, lv, nms_thresh)[: int(post_nms_topk)]
        results.append((b[keep], s[keep]))
    return results
