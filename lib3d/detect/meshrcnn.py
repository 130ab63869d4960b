"""Mesh R-CNN (Gkioxari, Malik, Johnson, ICCV 2019): Mask R-CNN with a voxel branch, cubify and graph-conv
mesh refinement, as one module built from :class:`MeshRCNNConfig`.

Dimension names: N images; H/W (padded) image size; G ground-truth objects of an image; R RoIs; K classes;
M mask size; D voxel size; V/F vertices/faces.

Images are ``(N, 3, H, W)`` RGB floats in ``[0, 1]``; the model turns them into its input format (BGR 0-255
minus detectron2's pixel means for the official MSRA weights, ``input_format="BGR255"``) and pads them to a
multiple of 32. Boxes are XYXY pixels. Meshes are predicted in each detection's box coordinates
(:mod:`lib3d.detect.mesh_head`) and :func:`meshes_to_camera` puts them in camera space.

The module's attribute names map onto the official detectron2 / Mesh R-CNN checkpoint keys
(:func:`official_rules`): ``backbone.*`` (ResNet-FPN of ``lib3d.nn``), ``rpn_head`` (``proposal_generator
.rpn_head``), ``box_head``, ``box_predictor``, ``mask_head``, ``voxel_head``, ``mesh_head``, ``z_head``
(``roi_heads.*``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape
from lib3d.detect.boxes import DEFAULT_BOX_WEIGHTS
from lib3d.detect.mesh_head import (
    MeshHead,
    VoxelHead,
    ZHead,
    box_to_camera,
    camera_to_box,
    init_meshes,
    mesh_losses,
    voxel_loss,
    voxelize_in_boxes,
    z_loss,
    z_ranges_from_dz,
)
from lib3d.detect.roi_align import ROIPooler
from lib3d.detect.roi_heads import (
    BoxHead,
    BoxPredictor,
    MaskHead,
    box_head_inference,
    box_head_losses,
    crop_masks,
    mask_loss,
    sample_proposals,
)
from lib3d.detect.rpn import AnchorGenerator, RPNHead, find_top_rpn_proposals, rpn_losses

__all__ = [
    "InstanceTargets",
    "MeshRCNN",
    "MeshRCNNConfig",
    "Prediction",
    "load_official_meshrcnn",
    "meshes_to_camera",
    "official_rules",
    "official_state_dict_to_lib3d",
    "predictions_to_camera",
]

MSRA_PIXEL_MEAN = (103.530, 116.280, 123.675)
"""detectron2's ``PIXEL_MEAN`` (BGR, 0-255) of the MSRA ImageNet weights; ``PIXEL_STD`` is 1."""


@dataclasses.dataclass(frozen=True)
class MeshRCNNConfig:
    """Architecture and training recipe of Mesh R-CNN; the defaults are the Pix3D R50-FPN model
    (``configs/pix3d/meshrcnn_R50_FPN.yaml``)."""

    num_classes: int = 9
    """K foreground classes (Pix3D: 9)."""
    depth: Literal[18, 34, 50, 101] = 50
    """ResNet depth of the backbone."""
    norm: Literal["bn", "frozen_bn"] = "frozen_bn"
    """Backbone norm: detectron2's frozen batch norm, or trainable batch norm (training from scratch)."""
    freeze_at: int = 2
    """detectron2 ``FREEZE_AT``: stem and res2 frozen."""
    stride_in_1x1: bool = True
    """MSRA bottlenecks (the official weights) put the stride in the first 1x1 conv."""
    fpn_channels: int = 256
    """FPN channels (every head's input channels)."""
    input_format: Literal["BGR255", "RGB1"] = "BGR255"
    """"BGR255": BGR in [0, 255] minus ``pixel_mean`` (official weights); "RGB1": RGB in [0, 1]."""
    pixel_mean: tuple[float, float, float] = MSRA_PIXEL_MEAN
    """Subtracted per channel (in the input format's channel order and range)."""
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Divides per channel after the mean."""
    anchor_sizes: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    """Anchor sizes per level P2..P6."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Anchor aspect ratios h / w."""
    rpn_batch_size_per_image: int = 256
    """Anchors sampled per image for the RPN losses."""
    rpn_positive_fraction: float = 0.5
    """Largest fraction of positive anchors."""
    rpn_iou_thresholds: tuple[float, ...] = (0.2, 0.5, 0.7)
    """Anchor matcher thresholds (Mesh R-CNN Pix3D; detectron2 default (0.3, 0.7))."""
    rpn_iou_labels: tuple[int, ...] = (-1, 0, -1, 1)
    """Anchor matcher labels."""
    rpn_smooth_l1_beta: float = 0.111
    """Smooth-L1 beta of the RPN deltas."""
    rpn_nms_thresh: float = 0.7
    """NMS threshold of the proposals."""
    rpn_pre_nms_topk_train: int = 2000
    """Proposals per level before NMS in training."""
    rpn_post_nms_topk_train: int = 1000
    """Proposals per image after NMS in training."""
    rpn_pre_nms_topk_test: int = 1000
    """Proposals per level before NMS at test time."""
    rpn_post_nms_topk_test: int = 1000
    """Proposals per image after NMS at test time."""
    roi_batch_size_per_image: int = 64
    """Proposals sampled per image for the RoI heads."""
    roi_positive_fraction: float = 0.25
    """Largest fraction of foreground proposals."""
    roi_iou_thresholds: tuple[float, ...] = (0.2, 0.5)
    """Proposal matcher thresholds."""
    roi_iou_labels: tuple[int, ...] = (-1, 0, 1)
    """Proposal matcher labels."""
    box_pooler_resolution: int = 7
    """RoIAlign output of the box and z heads."""
    pooler_sampling_ratio: int = 2
    """RoIAlign samples per bin of every head."""
    box_fc_dim: int = 1024
    """Width of the box head's FC layers (and the z head's)."""
    box_smooth_l1_beta: float = 1.0
    """Smooth-L1 beta of the box deltas."""
    mask_on: bool = True
    """Predict masks."""
    mask_pooler_resolution: int = 14
    """RoIAlign output of the mask head (masks are twice as large)."""
    head_conv_dim: int = 256
    """Channels of the mask and voxel heads' convs."""
    head_num_conv: int = 4
    """Convs of the mask and voxel heads."""
    zpred_on: bool = True
    """Predict the relative depth extent (z head)."""
    voxel_on: bool = True
    """Voxel branch (False with ``mesh_on``: the Sphere-init ablation)."""
    voxel_size: int = 24
    """D: voxel grid side (pooled at D / 2)."""
    voxel_loss_weight: float = 3.0
    """Weight of the voxel loss."""
    cubify_thresh: float = 0.2
    """Occupancy threshold of cubify."""
    mesh_on: bool = True
    """Mesh refinement (False with ``voxel_on``: the voxel-only ablation)."""
    mesh_pooler_resolution: int = 14
    """RoIAlign output of the mesh head."""
    mesh_num_stages: int = 3
    """Refinement stages."""
    mesh_num_graph_convs: int = 3
    """Graph convs per stage."""
    mesh_hidden_dim: int = 128
    """Graph-conv width."""
    ico_sphere_level: int = 4
    """Icosphere level of the Sphere-init ablation."""
    chamfer_loss_weight: float = 1.0
    """Weight of the Chamfer loss."""
    normals_loss_weight: float = 0.1
    """Weight of the normal loss."""
    edge_loss_weight: float = 1.0
    """Weight of the edge loss."""
    mesh_num_samples: int = 5000
    """Points sampled on predicted and ground-truth meshes for the losses."""
    gt_coord_thresh: float = 5.0
    """Mesh losses are zeroed when a ground-truth sample exceeds this in box coordinates."""
    z_loss_weight: float = 1.0
    """Weight of the z loss."""
    z_smooth_l1_beta: float = 1.0
    """Smooth-L1 beta of the z loss."""
    shape_rois_per_image: int = 0
    """Foreground RoIs per image (a random subset) that train the z, voxel and mesh heads; 0: all (the paper).
    Bounds the cost of the mesh refinement on a CPU."""
    score_thresh_test: float = 0.05
    """Detections below this class score are dropped."""
    nms_thresh_test: float = 0.5
    """Per-class NMS of the detections."""
    detections_per_image: int = 100
    """Detections kept per image."""
    size_divisibility: int = 32
    """Images are zero-padded (after normalisation) to a multiple of this."""


class InstanceTargets(NamedTuple):
    """Ground truth of one image (``G`` objects). Optional parts are needed by the heads that use them.

    Attributes:
        boxes: ``(G, 4) float`` XYXY pixels.
        classes: ``(G,) int64`` in ``[0, K)``.
        masks: ``(G, H, W) bool`` instance masks (mask head).
        Ks: ``(G, 3) float`` cameras ``(f, px, py)`` (voxel, mesh and z heads).
        meshes: G ``(verts (V, 3) float, faces (F, 3) int64)`` in camera space (mesh head, z head).
        voxel_points: ``(G, Q, 3) float`` occupied-voxel centres in camera space, padded (voxel head).
        voxel_lengths: ``(G,) int64`` valid rows of ``voxel_points``.
        dz: ``(G,) float`` relative depth extent ``(z_max - z_min) / z_centre * f`` (z head).
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor | None = None
    Ks: torch.Tensor | None = None
    meshes: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    voxel_points: torch.Tensor | None = None
    voxel_lengths: torch.Tensor | None = None
    dz: torch.Tensor | None = None


class Prediction(NamedTuple):
    """Detections of one image.

    Attributes:
        boxes: ``(R, 4) float`` XYXY pixels.
        scores: ``(R,) float``.
        classes: ``(R,) int64``.
        masks: ``(R, M, M) float`` mask probabilities in box coordinates (paste with
            :func:`lib3d.detect.roi_heads.paste_masks`), or None.
        voxels: ``(R, D, D, D) float`` occupancy probabilities (z', y', x'), or None.
        meshes: R ``(verts (V, 3), faces (F, 3))`` in box coordinates, or None.
        z: ``(R,) float`` predicted ``log(dz / box_height)`` of the class, or None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor | None = None
    voxels: torch.Tensor | None = None
    meshes: list | None = None
    z: torch.Tensor | None = None


def _zero(module: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A zero loss connected to every parameter of ``module`` (keeps DDP's gradients complete)."""
    return sum((p.sum() * 0 for p in module.parameters()), like.sum() * 0)


class MeshRCNN(nn.Module):
    """The whole detector; ``forward`` returns losses (with targets) or per-image :class:`Prediction`.

    Args:
        config: :class:`MeshRCNNConfig`.
    """

    def __init__(self, config: MeshRCNNConfig = MeshRCNNConfig()):
        super().__init__()
        from lib3d.nn.fpn import ResNetFPN

        c = config
        self.config = c
        self.backbone = ResNetFPN(c.depth, c.norm, freeze_at=c.freeze_at, stride_in_1x1=c.stride_in_1x1,
                                  out_channels=c.fpn_channels)
        strides = [self.backbone.strides[k] for k in ("p2", "p3", "p4", "p5", "p6")]
        self.anchor_generator = AnchorGenerator(c.anchor_sizes, c.aspect_ratios, strides)
        self.rpn_head = RPNHead(c.fpn_channels, self.anchor_generator.num_anchors)
        scales = [1.0 / s for s in strides[:4]]
        ch = c.fpn_channels
        self.box_pooler = ROIPooler(c.box_pooler_resolution, scales, c.pooler_sampling_ratio)
        self.box_head = BoxHead(ch, c.box_pooler_resolution, 2, c.box_fc_dim)
        self.box_predictor = BoxPredictor(c.box_fc_dim, c.num_classes)
        if c.mask_on:
            self.mask_pooler = ROIPooler(c.mask_pooler_resolution, scales, c.pooler_sampling_ratio)
            self.mask_head = MaskHead(ch, c.num_classes, c.head_conv_dim, c.head_num_conv)
        if c.zpred_on:
            self.z_pooler = ROIPooler(c.box_pooler_resolution, scales, c.pooler_sampling_ratio)
            self.z_head = ZHead(ch, c.box_pooler_resolution, c.num_classes, c.box_fc_dim)
        if c.voxel_on:
            if c.voxel_size % 2:
                raise ValueError(f"voxel_size must be even, got {c.voxel_size}")
            self.voxel_pooler = ROIPooler(c.voxel_size // 2, scales, c.pooler_sampling_ratio)
            self.voxel_head = VoxelHead(ch, c.voxel_size, c.head_conv_dim, c.head_num_conv, 1)
        if c.mesh_on:
            self.mesh_pooler = ROIPooler(c.mesh_pooler_resolution, scales, c.pooler_sampling_ratio)
            self.mesh_head = MeshHead(ch, c.mesh_num_stages, c.mesh_num_graph_convs, c.mesh_hidden_dim)

    # ------------------------------------------------------------------------------------------ input
    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list]:
        """Normalise and pad images; returns ``((N, 3, H', W') input, [(H_n, W_n)] original sizes)``.

        Args:
            images: ``(N, 3, H, W)`` or a list of ``(3, H_n, W_n)`` RGB floats in [0, 1].
        """
        if torch.is_tensor(images):
            check_shape("images", images, ("N", 3, "H", "W"), dtype="float")
            images = list(images.unbind(0))
        if not images:
            raise ValueError("images must hold at least one image")
        for i, im in enumerate(images):
            check_shape(f"images[{i}]", im, (3, None, None), dtype="float")
        c = self.config
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        div = max(1, c.size_divisibility)
        hp = -(-max(s[0] for s in sizes) // div) * div
        wp = -(-max(s[1] for s in sizes) // div) * div
        mean = torch.tensor(c.pixel_mean, dtype=images[0].dtype, device=images[0].device)[:, None, None]
        std = torch.tensor(c.pixel_std, dtype=images[0].dtype, device=images[0].device)[:, None, None]
        batch = images[0].new_zeros((len(images), 3, hp, wp))
        for i, im in enumerate(images):  # loop over images
            x = im.flip(0) * 255.0 if c.input_format == "BGR255" else im
            batch[i, :, : im.shape[1], : im.shape[2]] = (x - mean) / std
        return batch, sizes

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Backbone pyramid ``[P2, P3, P4, P5, P6]`` of a preprocessed batch."""
        f = self.backbone(batch)
        return [f[k] for k in ("p2", "p3", "p4", "p5", "p6")]

    # --------------------------------------------------------------------------------------- forward
    def forward(self, images, targets: Sequence[InstanceTargets] | None = None,
                generator: torch.Generator | None = None):
        """Training losses (``targets`` given) or predictions.

        Args:
            images: ``(N, 3, H, W)`` or a list of ``(3, H_n, W_n)`` RGB in [0, 1].
            targets: N :class:`InstanceTargets` for training.
            generator: random generator of the samplings (anchors, proposals, mesh points).

        Returns:
            With targets, a dict of scalar losses (``loss_rpn_cls``, ``loss_rpn_loc``, ``loss_cls``,
            ``loss_box_reg``, ``loss_mask``, ``loss_z_reg``, ``loss_voxel``, ``loss_chamfer``,
            ``loss_normals``, ``loss_edge`` for the heads that are on); otherwise N :class:`Prediction`.
        """
        batch, sizes = self.preprocess(images)
        feats = self.features(batch)
        anchors = self.anchor_generator(feats)
        rpn_out = self.rpn_head(feats)
        c = self.config
        if targets is not None:
            if len(targets) != len(sizes):
                raise ValueError(f"targets must have one entry per image ({len(sizes)}), got {len(targets)}")
            losses = rpn_losses(anchors, rpn_out, [t.boxes for t in targets], c.rpn_batch_size_per_image,
                                c.rpn_positive_fraction, c.rpn_iou_thresholds, c.rpn_iou_labels,
                                c.rpn_smooth_l1_beta, generator=generator)
            proposals = find_top_rpn_proposals(anchors, rpn_out, sizes, c.rpn_nms_thresh, c.rpn_pre_nms_topk_train,
                                               c.rpn_post_nms_topk_train)
            losses.update(self._roi_losses(feats[:4], [p[0] for p in proposals], targets, generator))
            return losses
        proposals = find_top_rpn_proposals(anchors, rpn_out, sizes, c.rpn_nms_thresh, c.rpn_pre_nms_topk_test,
                                           c.rpn_post_nms_topk_test)
        return self._inference(feats[:4], [p[0] for p in proposals], sizes)

    def _roi_losses(self, feats, proposals, targets, generator) -> dict[str, torch.Tensor]:
        c = self.config
        sampled = [sample_proposals(p, t.boxes, t.classes, c.num_classes, c.roi_batch_size_per_image,
                                    c.roi_positive_fraction, c.roi_iou_thresholds, c.roi_iou_labels, True, generator)
                   for p, t in zip(proposals, targets)]  # loop over images
        rois = torch.cat([torch.cat([torch.full_like(s.boxes[:, :1], i), s.boxes], 1) for i, s in enumerate(sampled)])
        gt_classes = torch.cat([s.gt_classes for s in sampled])
        gt_boxes = torch.cat([t.boxes[s.matched] if t.boxes.shape[0] else torch.zeros_like(s.boxes)
                              for s, t in zip(sampled, targets)])
        x = self.box_head(self.box_pooler(feats, rois))
        scores, deltas = self.box_predictor(x)
        losses = box_head_losses(scores, deltas, rois[:, 1:], gt_classes, gt_boxes, c.box_smooth_l1_beta,
                                 DEFAULT_BOX_WEIGHTS)
        # Foreground RoIs (the first num_fg of each image) feed the other heads.
        fg = [(i, s.boxes[: s.num_fg], s.gt_classes[: s.num_fg], s.matched[: s.num_fg]) for i, s in enumerate(sampled)]
        fg_rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b, _, _ in fg])
        fg_classes = torch.cat([cl for _, _, cl, _ in fg])
        r = fg_rois.shape[0]
        if c.mask_on:
            if r:
                logits = self.mask_head(self.mask_pooler(feats, fg_rois))
                tgt = torch.cat([crop_masks(targets[i].masks, b, m, logits.shape[-1]) for i, b, _, m in fg])
                losses["loss_mask"] = mask_loss(logits, fg_classes, tgt)
            else:
                losses["loss_mask"] = _zero(self.mask_head, scores)
        if c.shape_rois_per_image > 0:  # a random subset of each image's foreground for the 3D heads
            sub = []
            for i, b, cl, m in fg:
                if b.shape[0] > c.shape_rois_per_image:
                    pick = torch.randperm(b.shape[0], device=b.device, generator=generator)[: c.shape_rois_per_image]
                    b, cl, m = b[pick], cl[pick], m[pick]
                sub.append((i, b, cl, m))
            fg = sub
            fg_rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b, _, _ in fg])
            fg_classes = torch.cat([cl for _, _, cl, _ in fg])
            r = fg_rois.shape[0]
        if c.zpred_on:
            if r:
                zp = self.z_head(self.z_pooler(feats, fg_rois))
                dz = torch.cat([targets[i].dz[m] for i, _, _, m in fg])
                losses["loss_z_reg"] = z_loss(zp, fg_classes, dz.to(zp.dtype), fg_rois[:, 1:], c.z_loss_weight,
                                              c.z_smooth_l1_beta)
            else:
                losses["loss_z_reg"] = _zero(self.z_head, scores)
        voxel_logits = None
        if c.voxel_on:
            if r:
                voxel_logits = self.voxel_head(self.voxel_pooler(feats, fg_rois))
                parts = [targets[i].voxel_points[m] for i, _, _, m in fg]
                q = max(x.shape[1] for x in parts)
                pts = torch.cat([F.pad(x, (0, 0, 0, q - x.shape[1])) for x in parts])
                lens = torch.cat([targets[i].voxel_lengths[m] for i, _, _, m in fg])
                ks = torch.cat([targets[i].Ks[m] for i, _, _, m in fg])
                vt = voxelize_in_boxes(pts.to(voxel_logits.dtype), lens, fg_rois[:, 1:], ks.to(voxel_logits.dtype),
                                       c.voxel_size)
                losses["loss_voxel"] = voxel_loss(voxel_logits, vt, c.voxel_loss_weight)
            else:
                losses["loss_voxel"] = _zero(self.voxel_head, scores)
        if c.mesh_on:
            if r:
                mf = self.mesh_pooler(feats, fg_rois)
                init = init_meshes(voxel_logits, r, c.cubify_thresh, c.ico_sphere_level, mf.device)
                pred = self.mesh_head(mf, init)
                gt = _gt_meshes_in_boxes(targets, fg, mf.dtype)
                ml = mesh_losses(pred, gt, c.chamfer_loss_weight, c.normals_loss_weight, c.edge_loss_weight,
                                 c.mesh_num_samples, c.mesh_num_samples, c.gt_coord_thresh, generator)
                zero = _zero(self.mesh_head, scores)
                losses.update(loss_chamfer=ml.chamfer + zero, loss_normals=ml.normals + zero, loss_edge=ml.edge + zero)
            else:
                zero = _zero(self.mesh_head, scores)
                losses.update(loss_chamfer=zero, loss_normals=zero, loss_edge=zero)
        return losses

    @torch.no_grad()
    def _inference(self, feats, proposals, sizes) -> list[Prediction]:
        c = self.config
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], 1) for i, p in enumerate(proposals)])
        scores, deltas = self.box_predictor(self.box_head(self.box_pooler(feats, rois)))
        dets = box_head_inference(scores, deltas, proposals, sizes, c.score_thresh_test, c.nms_thresh_test,
                                  c.detections_per_image)
        counts = [d.boxes.shape[0] for d in dets]
        det_rois = torch.cat([torch.cat([torch.full_like(d.boxes[:, :1], i), d.boxes], 1) for i, d in enumerate(dets)])
        classes = torch.cat([d.classes for d in dets])
        r = det_rois.shape[0]
        ar = torch.arange(r, device=det_rois.device)
        masks = voxels = z = None
        meshes = None
        if c.mask_on:
            logits = self.mask_head(self.mask_pooler(feats, det_rois)) if r else None
            masks = (logits[:, 0] if logits.shape[1] == 1 else logits[ar, classes]).sigmoid() if r else \
                det_rois.new_zeros((0, 2 * c.mask_pooler_resolution, 2 * c.mask_pooler_resolution))
        if c.zpred_on:
            zp = self.z_head(self.z_pooler(feats, det_rois)) if r else det_rois.new_zeros((0, c.num_classes))
            z = zp[:, 0] if zp.shape[1] == 1 else zp[ar, classes]
        voxel_logits = None
        if c.voxel_on:
            if r:
                voxel_logits = self.voxel_head(self.voxel_pooler(feats, det_rois))
                voxels = voxel_logits[:, 0].sigmoid()
            else:
                voxels = det_rois.new_zeros((0, c.voxel_size, c.voxel_size, c.voxel_size))
        if r and (c.mesh_on or c.voxel_on):
            if c.mesh_on:
                mf = self.mesh_pooler(feats, det_rois)
                init = init_meshes(voxel_logits, r, c.cubify_thresh, c.ico_sphere_level, mf.device)
                final = self.mesh_head(mf, init)[-1]
            else:
                final = init_meshes(voxel_logits, r, c.cubify_thresh)
            meshes = list(zip(final.verts_list(), final.faces_list()))
        elif c.mesh_on or c.voxel_on:
            meshes = []
        out = []
        s = 0
        for d, n in zip(dets, counts):  # split per image
            sl = slice(s, s + n)
            out.append(Prediction(d.boxes, d.scores, d.classes, None if masks is None else masks[sl],
                                  None if voxels is None else voxels[sl], None if meshes is None else meshes[sl],
                                  None if z is None else z[sl]))
            s += n
        return out


def _gt_meshes_in_boxes(targets, fg, dtype):
    """Ground-truth meshes of the foreground RoIs mapped into each RoI's box coordinates (depth range: the
    mesh's own z extent, as Mesh R-CNN's ``batch_crop_meshes_within_box``)."""
    from lib3d.structures import Meshes

    verts, faces, boxes, ks = [], [], [], []
    for i, b, _, m in fg:  # lists of meshes (variable sizes); the transform itself is batched below
        t = targets[i]
        for j, g in enumerate(m.tolist()):
            v, f = t.meshes[g]
            verts.append(v.to(dtype))
            faces.append(f)
        boxes.append(b)
        ks.append(t.Ks[m])
    boxes = torch.cat(boxes)
    ks = torch.cat(ks).to(dtype)
    lengths = [v.shape[0] for v in verts]
    vmax = max(lengths)
    padded = verts[0].new_ones((len(verts), vmax, 3))
    for k, v in enumerate(verts):
        padded[k, : v.shape[0]] = v
    valid = torch.arange(vmax, device=padded.device)[None] < torch.tensor(lengths, device=padded.device)[:, None]
    z = padded[..., 2]
    zr = torch.stack([torch.where(valid, z, torch.full_like(z, float("inf"))).min(1).values,
                      torch.where(valid, z, torch.full_like(z, -float("inf"))).max(1).values], 1)
    boxed = camera_to_box(padded, boxes, zr, ks)
    return Meshes(verts=[boxed[k, :n] for k, n in enumerate(lengths)], faces=faces)


def meshes_to_camera(meshes: Sequence[tuple[torch.Tensor, torch.Tensor]], boxes: torch.Tensor,
                     zranges: torch.Tensor, Ks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Predicted meshes from box coordinates to camera space (Mesh R-CNN's
    ``transform_meshes_to_camera_coord_system``; an empty mesh becomes a level-3 icosphere first).

    Args:
        meshes: R ``(verts (V, 3), faces (F, 3))`` in box coordinates.
        boxes: ``(R, 4) float`` detections.
        zranges: ``(R, 2) float`` depth ranges (e.g. :func:`lib3d.detect.mesh_head.z_ranges_from_dz`).
        Ks: ``(R, 3) float`` cameras ``(f, px, py)``.

    Returns:
        R ``(verts, faces)`` in camera space.
    """
    from lib3d.ops.ico_sphere import ico_sphere_verts_faces

    out = []
    for k, (v, f) in enumerate(meshes):  # meshes differ in size
        if v.shape[0] == 0:
            v, f = ico_sphere_verts_faces(3, device=boxes.device, dtype=boxes.dtype)
        cam = box_to_camera(v[None].to(boxes.dtype), boxes[k:k + 1], zranges[k:k + 1], Ks[k:k + 1])[0]
        out.append((cam, f))
    return out


# ------------------------------------------------------------------------------------ official weights
def official_rules() -> tuple[tuple[str, str | None], ...]:
    """:func:`lib3d.nn.remap_keys` rules from detectron2 / Mesh R-CNN checkpoint keys to :class:`MeshRCNN`'s.

    ``backbone.bottom_up.res2.0.conv1.norm.weight`` -> ``backbone.bottom_up.layer1.0.bn1.weight``,
    ``backbone.fpn_lateral2.weight`` -> ``backbone.fpn.fpn_lateral2.weight``,
    ``proposal_generator.rpn_head.*`` -> ``rpn_head.*``, ``roi_heads.<head>.*`` -> ``<head>.*``; the
    non-learned buffers some detectron2 versions saved (``pixel_mean``, ``pixel_std``, the anchor
    generator's ``cell_anchors``) are dropped.
    """
    from lib3d.nn.fpn import detectron2_resnet_fpn_rules

    rules: list[tuple[str, str | None]] = [
        (r"pixel_mean$", None), (r"pixel_std$", None),
        (r"proposal_generator\.anchor_generator\.", None),
        (r"proposal_generator\.rpn_head\.", "rpn_head."),
        (r"roi_heads\.(box_head|box_predictor|mask_head|voxel_head|mesh_head|z_head)\.", r"\1."),
    ]
    for pat, rep in detectron2_resnet_fpn_rules("backbone."):
        rules.append((pat, "backbone." + rep))
    return tuple(rules)


def official_state_dict_to_lib3d(state_dict: Mapping[str, Any]) -> dict:
    """Rename an official checkpoint's tensors (the ``"model"`` entry of a detectron2 checkpoint, or the
    state dict itself) to :class:`MeshRCNN` keys (numpy arrays become tensors)."""
    from lib3d.nn import remap_keys

    sd = state_dict.get("model", state_dict) if isinstance(state_dict, Mapping) else state_dict
    if not isinstance(sd, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(sd).__name__}")
    sd = {k: (torch.as_tensor(v) if not torch.is_tensor(v) and hasattr(v, "shape") else v) for k, v in sd.items()}
    return remap_keys(sd, official_rules())


def load_official_meshrcnn(path_or_state_dict, model: MeshRCNN) -> None:
    """Load ``meshrcnn_R50.pth`` (or any detectron2-layout Mesh R-CNN checkpoint) into ``model`` strictly.

    The file is read with ``weights_only`` (:func:`lib3d.nn.read_weight_file`); every missing or unexpected
    key and shape mismatch is listed in one :class:`lib3d.nn.WeightFileError` and nothing is loaded then.
    """
    from lib3d.nn import read_weight_file, strict_load

    sd = read_weight_file(path_or_state_dict) if not isinstance(path_or_state_dict, Mapping) else path_or_state_dict
    c = model.config
    what = (f"Mesh R-CNN R{c.depth}-FPN ({c.num_classes} classes, voxel={c.voxel_on}, mesh={c.mesh_on}, "
            f"z={c.zpred_on})")
    strict_load(model, official_state_dict_to_lib3d(sd), what)


def predictions_to_camera(pred: Prediction, K: torch.Tensor, z_centre: torch.Tensor | None = None,
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The meshes of one image's :class:`Prediction` in camera space, depth ranges from the z head.

    Args:
        pred: predictions with ``meshes`` and ``z``.
        K: ``(3,) float`` camera ``(f, px, py)`` of the image.
        z_centre: ``(R,)`` centre depths (None: the demo's ``max |dz| + 1``).
    """
    r = pred.boxes.shape[0]
    if r == 0 or pred.meshes is None:
        return []
    if pred.z is None:
        raise ValueError("pred.z is needed (a model with zpred_on)")
    ks = K.to(pred.boxes.dtype).view(1, 3).expand(r, 3)
    zr = z_ranges_from_dz(pred.z[:, None], pred.classes, pred.boxes, ks[:, 0], z_centre)
    return meshes_to_camera(pred.meshes, pred.boxes, zr, ks)

