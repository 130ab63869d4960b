"""Box and mask heads of (Mask) R-CNN, their losses and post-processing (detectron2's ``StandardROIHeads``).

Dimension names: N images; R proposals or detections (all images together unless said otherwise); G
ground-truth objects of an image; K foreground classes (class K is background); C channels; P pooled size;
M mask size (28); H/W image size.

Conventions (detectron2's): class-specific box deltas with weights ``(10, 10, 5, 5)``; the box loss is
smooth-L1 (``beta = 0``: L1) summed over foreground proposals and divided by the number of sampled
proposals; the classification loss is the mean cross-entropy; mask targets are the ground-truth masks
cropped and resized by RoIAlign (``aligned=True``, adaptive sampling) and thresholded at 0.5, the mask loss
is the mean binary cross-entropy of the ground-truth class's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape
from lib3d.detect.boxes import (
    DEFAULT_BOX_WEIGHTS,
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    match_boxes,
    subsample_labels,
)
from lib3d.detect.roi_align import roi_align
from lib3d.detect.rpn import smooth_l1_loss

__all__ = [
    "BoxHead",
    "BoxPredictor",
    "Detections",
    "MaskHead",
    "SampledProposals",
    "box_head_inference",
    "box_head_losses",
    "crop_masks",
    "mask_loss",
    "paste_masks",
    "sample_proposals",
]


class SampledProposals(NamedTuple):
    """Proposals of one image sampled for the RoI heads.

    Attributes:
        boxes: ``(R, 4) float`` proposal boxes (foreground first).
        gt_classes: ``(R,) int64`` class of the matched ground truth, K for background.
        matched: ``(R,) int64`` index of the matched ground-truth object (meaningless for background).
        num_fg: number of foreground proposals (the first ``num_fg`` rows).
    """

    boxes: torch.Tensor
    gt_classes: torch.Tensor
    matched: torch.Tensor
    num_fg: int


def sample_proposals(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor, num_classes: int,
                     batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                     iou_thresholds: Sequence[float] = (0.5,), iou_labels: Sequence[int] = (0, 1),
                     append_gt: bool = True, generator: torch.Generator | None = None) -> SampledProposals:
    """Label one image's proposals by IoU with the ground truth and draw a minibatch
    (detectron2's ``label_and_sample_proposals``).

    Args:
        proposals: ``(R, 4) float`` proposals (no gradient).
        gt_boxes: ``(G, 4) float`` ground-truth boxes.
        gt_classes: ``(G,) int64`` classes in ``[0, K)``.
        num_classes: K.
        batch_size_per_image: proposals sampled.
        positive_fraction: largest fraction of foreground.
        iou_thresholds, iou_labels: the proposal matcher (no low-quality matches).
        append_gt: add the ground-truth boxes to the proposals first.
        generator: random generator of the sampling.

    Returns:
        :class:`SampledProposals` with foreground rows first.
    """
    check_shape("proposals", proposals, ("R", 4), dtype="float")
    check_shape("gt_boxes", gt_boxes, ("G", 4), dtype="float")
    check_shape("gt_classes", gt_classes, (gt_boxes.shape[0],), dtype="int")
    proposals = proposals.detach()
    if append_gt:
        proposals = torch.cat([proposals, gt_boxes.to(proposals.dtype)])
    iou = box_iou(gt_boxes.to(proposals.dtype), proposals)
    matched, labels = match_boxes(iou, iou_thresholds, iou_labels, allow_low_quality_matches=False)
    if gt_boxes.shape[0]:
        classes = gt_classes[matched].clone()
        classes[labels == 0] = num_classes
        classes[labels == -1] = -1
    else:
        classes = torch.full_like(matched, num_classes)
    pos, neg = subsample_labels(classes, batch_size_per_image, positive_fraction, num_classes, generator)
    keep = torch.cat([pos, neg])
    return SampledProposals(proposals[keep], classes[keep], matched[keep], int(pos.numel()))


class BoxHead(nn.Module):
    """detectron2's ``FastRCNNConvFCHead`` with fully connected layers only (keys ``fc1``, ``fc2``, ...).

    Args:
        in_channels: C of the pooled features.
        pooler_resolution: P.
        num_fc: number of FC + ReLU layers (2).
        fc_dim: their width (1024).
    """

    def __init__(self, in_channels: int, pooler_resolution: int, num_fc: int = 2, fc_dim: int = 1024):
        super().__init__()
        dim = in_channels * pooler_resolution ** 2
        self.num_fc = num_fc
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.zeros_(fc.bias)
            self.add_module(f"fc{k + 1}", fc)
            dim = fc_dim
        self.output_size = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, P, P)`` pooled features -> ``(R, fc_dim)``."""
        x = x.flatten(1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{k + 1}")(x))
        return x


class BoxPredictor(nn.Module):
    """detectron2's ``FastRCNNOutputLayers``: ``cls_score`` (K + 1 logits) and class-specific ``bbox_pred``
    (4 K deltas).

    Args:
        in_dim: input feature size.
        num_classes: K.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, in_dim)`` -> ``(scores (R, K + 1), deltas (R, 4 K))``."""
        return self.cls_score(x), self.bbox_pred(x)


def box_head_losses(scores: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor, gt_classes: torch.Tensor,
                    gt_boxes: torch.Tensor, smooth_l1_beta: float = 0.0,
                    box_weights: tuple[float, float, float, float] = DEFAULT_BOX_WEIGHTS) -> dict[str, torch.Tensor]:
    """Fast R-CNN losses over the sampled proposals of all images.

    Args:
        scores: ``(R, K + 1) float`` class logits.
        deltas: ``(R, 4 K) float`` class-specific deltas.
        proposals: ``(R, 4) float`` the sampled proposals.
        gt_classes: ``(R,) int64`` targets (K: background).
        gt_boxes: ``(R, 4) float`` matched ground-truth box of each proposal (ignored for background).
        smooth_l1_beta: 0 for L1.
        box_weights: delta weights.

    Returns:
        ``{"loss_cls": scalar, "loss_box_reg": scalar}``.
    """
    r, k1 = scores.shape
    k = k1 - 1
    check_shape("deltas", deltas, (r, 4 * k), dtype="float")
    loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean") if r else scores.sum() * 0
    fg = torch.nonzero((gt_classes >= 0) & (gt_classes < k), as_tuple=True)[0]
    if fg.numel() == 0:
        return {"loss_cls": loss_cls, "loss_box_reg": deltas.sum() * 0}
    target = encode_boxes(proposals[fg], gt_boxes[fg], box_weights)
    pred = deltas.view(r, k, 4)[fg, gt_classes[fg]]
    loss_box = smooth_l1_loss(pred, target, smooth_l1_beta, "sum") / max(r, 1)
    return {"loss_cls": loss_cls, "loss_box_reg": loss_box}


class Detections(NamedTuple):
    """Detections of one image.

    Attributes:
        boxes: ``(R, 4) float`` XYXY boxes in pixels.
        scores: ``(R,) float`` class probabilities.
        classes: ``(R,) int64`` in ``[0, K)``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


@torch.no_grad()
def box_head_inference(scores: torch.Tensor, deltas: torch.Tensor, proposals: Sequence[torch.Tensor],
                       image_sizes: Sequence[tuple[int, int]], score_thresh: float = 0.05, nms_thresh: float = 0.5,
                       topk_per_image: int = 100,
                       box_weights: tuple[float, float, float, float] = DEFAULT_BOX_WEIGHTS) -> list[Detections]:
    """Per-class boxes and scores, thresholded and NMS-ed per class (detectron2's ``fast_rcnn_inference``).

    Args:
        scores: ``(R, K + 1) float`` logits of the proposals of all images (in image order).
        deltas: ``(R, 4 K) float``.
        proposals: N ``(R_n, 4)`` proposal boxes.
        image_sizes: N ``(H, W)``.
        score_thresh: keep class scores above this.
        nms_thresh: per-class NMS threshold.
        topk_per_image: detections kept per image (highest scores).
        box_weights: delta weights.

    Returns:
        N :class:`Detections`.
    """
    counts = [p.shape[0] for p in proposals]
    probs = F.softmax(scores, dim=-1)
    boxes = decode_boxes(deltas, torch.cat(list(proposals)), box_weights)
    out = []
    for p, b, size in zip(probs.split(counts), boxes.split(counts), image_sizes):  # loop over images
        k = p.shape[1] - 1
        b = clip_boxes(b.view(-1, k, 4), size)
        s = p[:, :k]
        ok = torch.isfinite(b).all(dim=2) & torch.isfinite(s) & (s > score_thresh)
        r_idx, c_idx = torch.nonzero(ok, as_tuple=True)
        bb, ss = b[r_idx, c_idx], s[r_idx, c_idx]
        keep = batched_nms(bb, ss, c_idx, nms_thresh)[: int(topk_per_image)]
        out.append(Detections(bb[keep], ss[keep], c_idx[keep]))
    return out


class MaskHead(nn.Module):
    """detectron2's ``MaskRCNNConvUpsampleHead``: ``num_conv`` 3x3 conv + ReLU (``mask_fcn1..``), a 2x2
    stride-2 ``deconv`` + ReLU and a 1x1 ``predictor`` of K class masks (P -> 2 P = M).

    Args:
        in_channels: C.
        num_classes: K (1 for class-agnostic masks).
        conv_dim: channels of the convs (256).
        num_conv: number of convs (4).
    """

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4):
        super().__init__()
        self.num_conv = num_conv
        dim = in_channels
        for k in range(num_conv):
            conv = nn.Conv2d(dim, conv_dim, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill
            nn.init.zeros_(conv.bias)
            self.add_module(f"mask_fcn{k + 1}", conv)
            dim = conv_dim
        self.deconv = nn.ConvTranspose2d(dim, conv_dim, 2, stride=2)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, P, P)`` -> mask logits ``(R, K, 2 P, 2 P)``."""
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"mask_fcn{k + 1}")(x))
        return self.predictor(F.relu(self.deconv(x)))


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Crop and resize ground-truth masks to RoIs (detectron2's ``BitMasks.crop_and_resize``).

    Args:
        masks: ``(G, H, W)`` bool or float masks of one image.
        boxes: ``(R, 4) float`` RoIs.
        index: ``(R,) int64`` mask of each RoI.
        size: M.

    Returns:
        ``(R, M, M) float`` in {0, 1} (RoIAlign with ``aligned=True`` then ``>= 0.5``).
    """
    check_shape("masks", masks, ("G", "H", "W"))
    check_shape("boxes", boxes, ("R", 4), dtype="float")
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([index.to(boxes.dtype)[:, None], boxes], 1)
    src = masks.to(boxes.dtype)[:, None]
    return (roi_align(src, rois, size, 1.0, 0, True)[:, 0] >= 0.5).to(boxes.dtype)


def mask_loss(logits: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the class's mask (class-agnostic when ``logits`` has one channel).

    Args:
        logits: ``(R, K, M, M) float`` mask logits of foreground RoIs.
        classes: ``(R,) int64`` their ground-truth classes.
        targets: ``(R, M, M) float`` targets in {0, 1}.

    Returns:
        scalar loss (0 with a gradient path when R = 0).
    """
    r = logits.shape[0]
    if r == 0:
        return logits.sum() * 0
    sel = logits[:, 0] if logits.shape[1] == 1 else logits[torch.arange(r, device=logits.device), classes]
    return F.binary_cross_entropy_with_logits(sel, targets, reduction="mean")


@torch.no_grad()
def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Paste ``M x M`` mask probabilities into the image (detectron2's ``paste_masks_in_image``).

    Pixel ``(y, x)`` (centre ``y + 0.5, x + 0.5``) reads the mask bilinearly at its position relative to
    the box (``grid_sample``, ``align_corners=False``, zeros outside).

    Args:
        masks: ``(R, M, M) float`` probabilities.
        boxes: ``(R, 4) float`` boxes in pixels.
        image_size: ``(H, W)``.
        threshold: binarisation threshold (a negative value returns the soft masks).

    Returns:
        ``(R, H, W)`` bool masks (float when ``threshold < 0``).
    """
    check_shape("masks", masks, ("R", None, None), dtype="float")
    check_shape("boxes", boxes, (masks.shape[0], 4), dtype="float")
    h, w = int(image_size[0]), int(image_size[1])
    r = masks.shape[0]
    dtype = masks.dtype
    ys = torch.arange(h, device=masks.device, dtype=dtype) + 0.5
    xs = torch.arange(w, device=masks.device, dtype=dtype) + 0.5
    outs = []
    chunk = max(1, (1 << 24) // max(h * w, 1))
    for s in range(0, r, chunk):  # chunks bound memory (R H W)
        b = boxes[s:s + chunk].to(dtype)
        gy = (ys[None] - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1  # (r, H)
        gx = (xs[None] - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) * 2 - 1  # (r, W)
        grid = torch.stack([gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)], -1)
        outs.append(F.grid_sample(masks[s:s + chunk, None], grid, align_corners=False)[:, 0])
    soft = torch.cat(outs) if outs else masks.new_zeros((0, h, w))
    return soft if threshold < 0 else soft >= threshold
