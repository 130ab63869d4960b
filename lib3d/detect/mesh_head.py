"""Mesh R-CNN's shape heads (Gkioxari et al., "Mesh R-CNN", ICCV 2019): voxel branch, cubify, mesh refinement,
depth-extent (z) head, their losses, and the box-normalised coordinates they work in.

Dimension names: R RoIs; C channels; P pooled size; D voxel grid side (24); V vertices; F faces; S sampled
points; K foreground classes.

Box coordinates (the Pix3D convention of Mesh R-CNN). Camera space is PyTorch3D's (+X left, +Y up, +Z
forward); a camera ``K = (f, px, py)`` with image size ``(w, h) = (2 px, 2 py)`` sees the point
``(X, Y, Z)`` at pixel ``u = (w - 1 - px) - f X / Z``, ``v = (h - 1 - py) - f Y / Z``. Given a box
``(x0, y0, x1, y1)`` and a depth range ``(z0, z1)`` the box coordinates of the point are

    x' = 2 (u - x0) / (x1 - x0) - 1,  y' = 2 (v - y0) / (y1 - y0) - 1,
    z' = 2 (1 / z0 - 1 / Z) / (1 / z0 - 1 / z1) - 1,

so the RoI's frustum between ``z0`` and ``z1`` becomes the cube ``[-1, 1]^3`` with x' right and y' down in
the image (the RoI feature map's axes, as ``vert_align`` reads them). This is the projective map that
Mesh R-CNN estimates from four point pairs (``cuboid3D_to_unitbox3D``) written in closed form.
Voxel grids are ``(D, H, W)`` = (z', y', x'), voxel ``i`` along an axis covering
``[2 i / (D - 1) - 1, 2 (i + 1) / (D - 1) - 1]`` (``cubify``'s ``"topleft"`` alignment).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape, check_shapes
from lib3d.detect.rpn import smooth_l1_loss
from lib3d.ops import (
    GraphConv,
    chamfer_distance,
    cubify,
    ico_sphere,
    mesh_edge_loss,
    sample_points_from_meshes,
    vert_align,
)

__all__ = [
    "MeshHead",
    "MeshLosses",
    "MeshRefinementStage",
    "VoxelHead",
    "ZHead",
    "box_to_camera",
    "camera_to_box",
    "init_meshes",
    "mesh_losses",
    "voxel_loss",
    "voxelize_in_boxes",
    "z_loss",
    "z_ranges_from_dz",
]

Z_CLAMP = math.log(1000.0 / 16)


def _camera_params(boxes: torch.Tensor, zranges: torch.Tensor, Ks: torch.Tensor):
    check_shapes(dtype="float", boxes=(boxes, ("R", 4)), zranges=(zranges, ("R", 2)), Ks=(Ks, ("R", 3)))
    f, px, py = Ks[:, 0:1], Ks[:, 1:2], Ks[:, 2:3]
    cx = (2 * px - 1 - px)  # w - 1 - px with w = 2 px
    cy = (2 * py - 1 - py)
    return f, cx, cy, boxes[:, None], zranges[:, 0:1], zranges[:, 1:2]


def camera_to_box(points: torch.Tensor, boxes: torch.Tensor, zranges: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """Camera-space points to each RoI's box coordinates (see the module docstring).

    Args:
        points: ``(R, V, 3) float`` camera-space points (Z > 0), one set per RoI.
        boxes: ``(R, 4) float`` XYXY boxes in pixels.
        zranges: ``(R, 2) float`` depth range ``(z0, z1)``, ``0 < z0 < z1``.
        Ks: ``(R, 3) float`` cameras ``(f, px, py)``.

    Returns:
        ``(R, V, 3)`` box coordinates (``[-1, 1]^3`` inside the RoI's frustum slab).
    """
    check_shape("points", points, (boxes.shape[0], None, 3), dtype="float")
    f, cx, cy, b, z0, z1 = _camera_params(boxes, zranges, Ks)
    x, y, z = points.unbind(-1)
    u = cx - f * x / z
    v = cy - f * y / z
    xb = 2 * (u - b[..., 0]) / (b[..., 2] - b[..., 0]) - 1
    yb = 2 * (v - b[..., 1]) / (b[..., 3] - b[..., 1]) - 1
    zb = 2 * (1 / z0 - 1 / z) / (1 / z0 - 1 / z1) - 1
    return torch.stack([xb, yb, zb], -1)


def box_to_camera(points: torch.Tensor, boxes: torch.Tensor, zranges: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`camera_to_box` (Mesh R-CNN's ``transform_meshes_to_camera_coord_system``).

    Args:
        points: ``(R, V, 3) float`` box coordinates.
        boxes, zranges, Ks: as in :func:`camera_to_box`.

    Returns:
        ``(R, V, 3)`` camera-space points.
    """
    check_shape("points", points, (boxes.shape[0], None, 3), dtype="float")
    f, cx, cy, b, z0, z1 = _camera_params(boxes, zranges, Ks)
    xb, yb, zb = points.unbind(-1)
    inv_z = 1 / z0 - (zb + 1) / 2 * (1 / z0 - 1 / z1)
    z = 1 / inv_z
    u = b[..., 0] + (xb + 1) / 2 * (b[..., 2] - b[..., 0])
    v = b[..., 1] + (yb + 1) / 2 * (b[..., 3] - b[..., 1])
    return torch.stack([(cx - u) * z / f, (cy - v) * z / f, z], -1)


def voxelize_in_boxes(points: torch.Tensor, lengths: torch.Tensor, boxes: torch.Tensor, Ks: torch.Tensor,
                      size: int) -> torch.Tensor:
    """Ground-truth voxel grids of RoIs from occupied-voxel points (Mesh R-CNN's ``batch_crop_voxels_within_box``).

    Each RoI's points are mapped to its box coordinates (depth range: the points' own z extent) and mark
    the voxel they fall in, with Mesh R-CNN's indexing (``trunc``, x and y indexed from the flipped side).

    Args:
        points: ``(R, Q, 3) float`` camera-space points of the matched object of each RoI (padded).
        lengths: ``(R,) int64`` valid points per row.
        boxes: ``(R, 4) float`` RoIs.
        Ks: ``(R, 3) float`` cameras.
        size: D.

    Returns:
        ``(R, D, D, D) float`` occupancy in {0, 1}, axes (z', y', x').
    """
    check_shape("points", points, ("R", "Q", 3), dtype="float")
    r, q = points.shape[:2]
    if r == 0:
        return points.new_zeros((0, size, size, size))
    valid = torch.arange(q, device=points.device)[None] < lengths[:, None]
    z = points[..., 2]
    zmin = torch.where(valid, z, torch.full_like(z, math.inf)).min(1).values
    zmax = torch.where(valid, z, torch.full_like(z, -math.inf)).max(1).values
    zr = torch.stack([zmin, zmax], 1)
    zr = torch.where(torch.isfinite(zr), zr, torch.ones_like(zr))
    safe = torch.where(valid[..., None], points, torch.tensor([0.0, 0.0, 1.0], dtype=points.dtype,
                                                               device=points.device))
    pb = camera_to_box(safe, boxes, zr, Ks)
    d1 = size - 1
    # Mesh R-CNN voxelises the un-negated x, y and then flips those axes.
    ix = d1 - ((1 - pb[..., 0]) * d1 / 2).long()
    iy = d1 - ((1 - pb[..., 1]) * d1 / 2).long()
    iz = ((pb[..., 2] + 1) * d1 / 2).long()
    raw_x, raw_y = d1 - ix, d1 - iy
    ok = valid & (raw_x >= 0) & (raw_x < size) & (raw_y >= 0) & (raw_y < size) & (iz >= 0) & (iz < size)
    ok &= torch.isfinite(pb).all(-1)
    grid = points.new_zeros((r, size, size, size))
    ri = torch.arange(r, device=points.device)[:, None].expand(r, q)
    grid[ri[ok], iz[ok], iy[ok], ix[ok]] = 1.0
    return grid


class VoxelHead(nn.Module):
    """Mesh R-CNN's ``VoxelRCNNConvUpsampleHead``: ``voxel_fcn1..`` 3x3 convs + ReLU, a 2x2 stride-2 ``deconv``
    + ReLU and a 1x1 ``predictor`` of ``num_classes * D`` channels (class-agnostic: 1 class).

    Args:
        in_channels: C.
        num_depth: D (24); the pooled size must be D / 2.
        conv_dim: channels (256).
        num_conv: number of convs (4).
        num_classes: 1 for class-agnostic voxels.
    """

    def __init__(self, in_channels: int, num_depth: int = 24, conv_dim: int = 256, num_conv: int = 4,
                 num_classes: int = 1):
        super().__init__()
        self.num_conv = num_conv
        self.num_depth = num_depth
        self.num_classes = num_classes
        dim = in_channels
        for k in range(num_conv):
            conv = nn.Conv2d(dim, conv_dim, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.add_module(f"voxel_fcn{k + 1}", conv)
            dim = conv_dim
        self.deconv = nn.ConvTranspose2d(dim, conv_dim, 2, stride=2)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        self.predictor = nn.Conv2d(conv_dim, num_classes * num_depth, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, D/2, D/2)`` -> voxel logits ``(R, num_classes, D, D, D)`` (z', y', x')."""
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"voxel_fcn{k + 1}")(x))
        x = self.predictor(F.relu(self.deconv(x)))
        return x.view(x.shape[0], self.num_classes, self.num_depth, x.shape[2], x.shape[3])


def voxel_loss(logits: torch.Tensor, targets: torch.Tensor, loss_weight: float = 1.0) -> torch.Tensor:
    """Mean voxel binary cross-entropy (class-agnostic logits ``(R, 1, D, D, D)``, targets ``(R, D, D, D)``)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0
    check_shape("targets", targets, (logits.shape[0],) + tuple(logits.shape[2:]), dtype="float")
    return F.binary_cross_entropy_with_logits(logits[:, 0], targets, reduction="mean") * loss_weight


class MeshRefinementStage(nn.Module):
    """One refinement stage: ``vert_align`` of RoI features (``bottleneck`` to the hidden size), graph
    convolutions ``gconvs`` (each fed its input plus the vertex positions) and ``verts_offset`` giving
    ``tanh`` offsets. Keys follow Mesh R-CNN.

    Args:
        img_feat_dim: C of the RoI features.
        vert_feat_dim: hidden size carried over from the previous stage (0 for the first).
        hidden_dim: graph-conv width (128).
        stage_depth: graph convs (3).
    """

    def __init__(self, img_feat_dim: int, vert_feat_dim: int, hidden_dim: int, stage_depth: int):
        super().__init__()
        self.bottleneck = nn.Linear(img_feat_dim, hidden_dim)
        self.verts_offset = nn.Linear(hidden_dim + 3, 3)
        self.gconvs = nn.ModuleList(
            GraphConv((hidden_dim + vert_feat_dim + 3) if i == 0 else hidden_dim + 3, hidden_dim, init="normal")
            for i in range(stage_depth))
        nn.init.normal_(self.bottleneck.weight, std=0.01)
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.zeros_(self.verts_offset.weight)
        nn.init.zeros_(self.verts_offset.bias)

    def forward(self, x: torch.Tensor, meshes, vert_feats: torch.Tensor | None = None):
        """``x (R, C, P, P)`` RoI features, ``meshes`` R meshes in box coordinates; returns
        ``(refined meshes, vertex features (sum V, hidden))``."""
        img = F.relu(self.bottleneck(vert_align(x, meshes, return_packed=True, padding_mode="border")))
        pos = meshes.verts_packed()
        feats = torch.cat([img, pos], 1) if vert_feats is None else torch.cat([vert_feats, img, pos], 1)
        edges = meshes.edges_packed()
        nopos = feats
        for gconv in self.gconvs:
            nopos = F.relu(gconv(feats, edges))
            feats = torch.cat([nopos, pos], 1)
        return meshes.offset_verts(torch.tanh(self.verts_offset(feats))), nopos


class MeshHead(nn.Module):
    """Mesh R-CNN's ``MeshRCNNGraphConvHead``: ``stages`` of :class:`MeshRefinementStage`.

    Args:
        in_channels: C.
        num_stages: 3.
        num_graph_convs: per stage, 3.
        hidden_dim: 128.
    """

    def __init__(self, in_channels: int, num_stages: int = 3, num_graph_convs: int = 3, hidden_dim: int = 128):
        super().__init__()
        self.stages = nn.ModuleList(
            MeshRefinementStage(in_channels, 0 if i == 0 else hidden_dim, hidden_dim, num_graph_convs)
            for i in range(num_stages))

    def forward(self, x: torch.Tensor, meshes) -> list:
        """Refine R initial meshes with RoI features ``x (R, C, P, P)``; returns one ``Meshes`` per stage."""
        out = []
        feats = None
        for stage in self.stages:
            meshes, feats = stage(x, meshes, feats)
            out.append(meshes)
        return out


def init_meshes(voxel_logits: torch.Tensor | None, num: int, cubify_thresh: float = 0.2, ico_level: int = 4,
                device=None):
    """Initial meshes of the refinement: ``cubify`` of the voxel probabilities (Mesh R-CNN) or, with
    ``voxel_logits=None``, ``num`` copies of a level-``ico_level`` icosphere (the Sphere-init ablation)."""
    if voxel_logits is not None:
        with torch.no_grad():
            return cubify(voxel_logits.sigmoid()[:, 0], cubify_thresh)
    return ico_sphere(ico_level, device).extend(num)


class MeshLosses(NamedTuple):
    """Mesh losses summed over the refinement stages (already weighted)."""

    chamfer: torch.Tensor
    normals: torch.Tensor
    edge: torch.Tensor


def mesh_losses(pred_meshes: Sequence, gt_meshes, chamfer_weight: float = 1.0, normals_weight: float = 0.1,
                edge_weight: float = 1.0, gt_num_samples: int = 5000, pred_num_samples: int = 5000,
                gt_coord_thresh: float | None = 5.0, generator: torch.Generator | None = None) -> MeshLosses:
    """Mesh R-CNN's ``mesh_rcnn_loss``: per stage, Chamfer and normal distances between point samples of
    the predicted and ground-truth meshes (box coordinates) and the edge-length regulariser.

    Meshes without faces get zero weight; when any ground-truth sample exceeds ``gt_coord_thresh`` in
    absolute value (a bad RoI) the losses are zeroed.

    Args:
        pred_meshes: one ``Meshes`` of R meshes per stage.
        gt_meshes: ``Meshes`` of R ground-truth meshes in each RoI's box coordinates.
        chamfer_weight, normals_weight, edge_weight: Pix3D: 1.0, 0.1, 1.0.
        gt_num_samples, pred_num_samples: points sampled on each mesh (5000).
        gt_coord_thresh: see above (None: off).
        generator: random generator of the sampling.

    Returns:
        :class:`MeshLosses`.
    """
    gt_pts, gt_nrm = sample_points_from_meshes(gt_meshes, gt_num_samples, return_normals=True, generator=generator)
    gt_valid = gt_meshes.num_faces_per_mesh() > 0
    cham, norm, edge = [], [], []
    for m in pred_meshes:
        pts, nrm = sample_points_from_meshes(m, pred_num_samples, return_normals=True, generator=generator)
        w = (gt_valid & (m.num_faces_per_mesh() > 0)).to(pts.dtype)
        if float(w.sum()) == 0:
            c = pts.sum() * 0
            n = c
        else:
            c, n = chamfer_distance(pts, gt_pts, x_normals=nrm, y_normals=gt_nrm, weights=w)
        cham.append(c * chamfer_weight)
        norm.append(n * normals_weight)
        edge.append(mesh_edge_loss(m) * edge_weight)
    out = MeshLosses(sum(cham), sum(norm), sum(edge))
    if gt_coord_thresh and float(gt_pts.abs().max()) > gt_coord_thresh:
        out = MeshLosses(out.chamfer * 0, out.normals * 0, out.edge * 0)
    return out


class ZHead(nn.Module):
    """Mesh R-CNN's ``FastRCNNFCHead`` for the relative depth extent: ``z_fc1``, ``z_fc2`` (+ ReLU) and
    ``z_pred`` (one value per class).

    Args:
        in_channels: C.
        pooler_resolution: P (7).
        num_classes: K (1: class-agnostic).
        fc_dim: 1024.
        num_fc: 2.
    """

    def __init__(self, in_channels: int, pooler_resolution: int, num_classes: int, fc_dim: int = 1024,
                 num_fc: int = 2):
        super().__init__()
        dim = in_channels * pooler_resolution ** 2
        self.num_fc = num_fc
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            self.add_module(f"z_fc{k + 1}", fc)
            dim = fc_dim
        self.z_pred = nn.Linear(dim, num_classes)
        nn.init.normal_(self.z_pred.weight, std=0.001)
        nn.init.zeros_(self.z_pred.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, P, P)`` -> ``(R, K)`` predicted ``log(dz / box_height)``."""
        x = x.flatten(1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"z_fc{k + 1}")(x))
        return self.z_pred(x)


def z_loss(z_pred: torch.Tensor, classes: torch.Tensor, gt_dz: torch.Tensor, boxes: torch.Tensor,
           loss_weight: float = 1.0, smooth_l1_beta: float = 1.0) -> torch.Tensor:
    """Mesh R-CNN's ``z_rcnn_loss``: smooth-L1 between ``z_pred`` and ``log(gt_dz / box_height)``, mean over RoIs.

    ``gt_dz`` is the object's depth extent relative to its centre depth times the focal length
    (``(z_max - z_min) / z_centre * f``).
    """
    r = z_pred.shape[0]
    if r == 0:
        return z_pred.sum() * 0
    target = torch.log(gt_dz / (boxes[:, 3] - boxes[:, 1]))
    pred = z_pred[:, 0] if z_pred.shape[1] == 1 else z_pred[torch.arange(r, device=z_pred.device), classes]
    return loss_weight * smooth_l1_loss(pred, target, smooth_l1_beta, "sum") / r


def z_ranges_from_dz(z_pred: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor, focal: torch.Tensor,
                     z_centre: torch.Tensor | None = None) -> torch.Tensor:
    """Depth ranges ``(R, 2)`` of detections from the z head (Mesh R-CNN's demo and evaluation).

    ``dz = exp(min(z_pred, log(1000 / 16))) * box_height``; the range is ``tc (1 -+ dz / (2 f))`` around
    the centre depth ``tc`` (given, e.g. the ground truth's in the Pix3D protocol, or the demo's
    ``max |dz| + 1``).
    """
    r = z_pred.shape[0]
    pred = z_pred[:, 0] if z_pred.shape[1] == 1 else z_pred[torch.arange(r, device=z_pred.device), classes]
    dz = torch.exp(pred.clamp(max=Z_CLAMP)) * (boxes[:, 3] - boxes[:, 1])
    tc = (dz.abs().max() + 1.0).expand(r) if z_centre is None else z_centre
    focal = torch.as_tensor(focal, dtype=dz.dtype, device=dz.device).expand(r)
    return torch.stack([tc - tc * dz / 2.0 / focal, tc + tc * dz / 2.0 / focal], 1)
