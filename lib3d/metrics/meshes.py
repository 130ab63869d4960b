"""Mesh reconstruction metrics (Mesh R-CNN's ``compare_meshes``) and the Pix3D mesh AP.

Dimension names: N mesh (or point-cloud) pairs; P1 / P2 points of the predicted / ground-truth clouds
(padded; S = ``num_samples`` when sampled); T distance thresholds; P predictions and I images in
:func:`pix3d_ap`; K categories.

``compare_meshes`` follows meshrcnn's ``meshrcnn/utils/metrics.py``: both meshes of a pair are scaled so that
the ground truth's bounding box has longest edge ``scale_to`` (10: Mesh R-CNN's ``"gt-10"``), S points with
normals are sampled uniformly on each surface (predicted first, then ground truth, from one generator),
and with ``d(x, Y) = min_y |x - y|`` (Euclidean):

- Chamfer-L2 ``= mean_i d(p_i, G)^2 + mean_j d(g_j, P)^2``;
- normal consistency ``= (mean_i cos(n_i, n_NN(i)) + mean_j cos(n_j, n_NN(j))) / 2`` and its absolute
  version with ``|cos|`` (normals of the nearest neighbour in the other cloud);
- precision@t ``= mean_i [d(p_i, G) < t]``, recall@t ``= mean_j [d(g_j, P) < t]``,
  F1@t ``= 2 precision recall / (precision + recall + eps)``.

Precision, recall and F1 are fractions in [0, 1] here; meshrcnn reports them in percent
(:meth:`MeshMetrics.to_meshrcnn` gives its dict, keys and units included).

The Pix3D AP (meshrcnn's ``evaluation/pix3d_evaluation.py``): Pix3D has one ground-truth object per image.
Predictions whose box IoU with it is at most ``filter_iou`` (0.3) are dropped; in each image, in order of
decreasing score, the first prediction with the right label and a quality above the threshold (mesh AP: F1@0.3
``> 0.5``; box / mask AP: box / mask IoU ``> 0.5``) is a true positive, every other kept prediction a false
positive. Per category, AP is the all-point interpolated VOC AP (``VOCap.compute_ap``) with the number of
ground-truth objects of that category as positives; the AP is the mean over categories that have any.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, check_tensor, is_tracing
from lib3d.ops.knn import knn_gather, knn_points
from lib3d.ops.sample_points import sample_points_from_meshes

__all__ = ["MeshMetrics", "Pix3DAPResult", "compare_meshes", "compare_point_clouds", "mesh_ap", "pix3d_ap",
           "voc_ap"]


class MeshMetrics(NamedTuple):
    """Per-pair metrics of :func:`compare_meshes` / :func:`compare_point_clouds`.

    Attributes:
        chamfer_l2: ``(N,) float`` Chamfer-L2 (squared distances, both directions, means summed).
        normal_consistency: ``(N,) float`` (NaN without normals).
        abs_normal_consistency: ``(N,) float`` (NaN without normals).
        precision, recall, f1: ``(N, T) float`` fractions in [0, 1] at each threshold.
        thresholds: ``(T,) float`` the distance thresholds.
    """

    chamfer_l2: torch.Tensor
    normal_consistency: torch.Tensor
    abs_normal_consistency: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    thresholds: torch.Tensor

    def to_meshrcnn(self, reduce: bool = True) -> dict:
        """meshrcnn's ``compare_meshes`` dict: ``"Chamfer-L2"``, ``"NormalConsistency"``,
        ``"AbsNormalConsistency"``, ``"Precision@%f"``, ``"Recall@%f"``, ``"F1@%f"`` (percent), averaged
        over the batch to floats when ``reduce`` else ``(N,)`` tensors."""
        out = {"Chamfer-L2": self.chamfer_l2}
        if not bool(torch.isnan(self.normal_consistency).all()):
            out["NormalConsistency"] = self.normal_consistency
            out["AbsNormalConsistency"] = self.abs_normal_consistency
        for k, t in enumerate(self.thresholds.tolist()):
            out[f"Precision@{t:f}"] = 100.0 * self.precision[:, k]
            out[f"Recall@{t:f}"] = 100.0 * self.recall[:, k]
            out[f"F1@{t:f}"] = 100.0 * self.f1[:, k]
        if reduce:
            return {k: float(v.mean()) for k, v in out.items()}
        return out


def _thresholds_tensor(thresholds: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(list(thresholds), dtype=like.dtype, device=like.device)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty sequence of floats, got {thresholds!r}")
    return t


@torch.no_grad()
def compare_point_clouds(pred_points: torch.Tensor, gt_points: torch.Tensor,
                         pred_normals: torch.Tensor | None = None, gt_normals: torch.Tensor | None = None,
                         pred_lengths: torch.Tensor | None = None, gt_lengths: torch.Tensor | None = None,
                         thresholds: Sequence[float] = (0.1, 0.3, 0.5), eps: float = 1e-8) -> MeshMetrics:
    """The sampled-point metrics of :func:`compare_meshes` on given clouds (meshrcnn's
    ``_compute_sampling_metrics``).

    Args:
        pred_points: ``(N, P1, 3) float`` predicted points (padded).
        gt_points: ``(N, P2, 3) float`` ground-truth points (padded).
        pred_normals: ``(N, P1, 3) float`` or None; gt_normals: ``(N, P2, 3) float`` or None (both or
            neither give the normal consistencies).
        pred_lengths, gt_lengths: ``(N,) int64`` valid points per cloud (default all).
        thresholds: T distance thresholds (same units as the points).
        eps: F1 denominator offset.

    Returns:
        :class:`MeshMetrics` (``(N,)`` / ``(N, T)`` tensors).
    """
    sizes = check_shapes(pred_points=(pred_points, ("N", None, 3)), gt_points=(gt_points, ("N", None, 3)),
                         dtype="float")
    n, p1, p2 = sizes["N"], pred_points.shape[1], gt_points.shape[1]
    check_shapes(pred_normals=(pred_normals, (n, p1, 3)), gt_normals=(gt_normals, (n, p2, 3)), dtype="float")
    device = pred_points.device
    if pred_lengths is None:
        pred_lengths = torch.full((n,), p1, dtype=torch.int64, device=device)
    if gt_lengths is None:
        gt_lengths = torch.full((n,), p2, dtype=torch.int64, device=device)
    check_shapes(pred_lengths=(pred_lengths, (n,)), gt_lengths=(gt_lengths, (n,)), dtype="int")
    thr = _thresholds_tensor(thresholds, pred_points)
    knn_p = knn_points(pred_points, gt_points, lengths1=pred_lengths, lengths2=gt_lengths, K=1)
    knn_g = knn_points(gt_points, pred_points, lengths1=gt_lengths, lengths2=pred_lengths, K=1)
    d2_p, d2_g = knn_p.dists[..., 0], knn_g.dists[..., 0]  # (N, P1), (N, P2) squared distances
    mask_p = torch.arange(p1, device=device)[None] < pred_lengths[:, None]
    mask_g = torch.arange(p2, device=device)[None] < gt_lengths[:, None]
    cnt_p = pred_lengths.clamp(min=1).to(pred_points.dtype)
    cnt_g = gt_lengths.clamp(min=1).to(pred_points.dtype)

    def mean_p(x):
        return (x * mask_p).sum(-1) / cnt_p

    def mean_g(x):
        return (x * mask_g).sum(-1) / cnt_g

    chamfer = mean_p(d2_p) + mean_g(d2_g)
    if pred_normals is not None and gt_normals is not None:
        near_p = knn_gather(gt_normals, knn_p.idx, gt_lengths)[..., 0, :]
        near_g = knn_gather(pred_normals, knn_g.idx, pred_lengths)[..., 0, :]
        cos_p = F.cosine_similarity(pred_normals, near_p, dim=2)
        cos_g = F.cosine_similarity(gt_normals, near_g, dim=2)
        normal = 0.5 * (mean_p(cos_p) + mean_g(cos_g))
        abs_normal = 0.5 * (mean_p(cos_p.abs()) + mean_g(cos_g.abs()))
    else:
        normal = abs_normal = torch.full((n,), float("nan"), dtype=pred_points.dtype, device=device)
    d_p, d_g = d2_p.sqrt(), d2_g.sqrt()
    # [d < t] for every threshold at once: (N, P, T) -> (N, T)
    precision = ((d_p[..., None] < thr) & mask_p[..., None]).sum(1).to(thr.dtype) / cnt_p[:, None]
    recall = ((d_g[..., None] < thr) & mask_g[..., None]).sum(1).to(thr.dtype) / cnt_g[:, None]
    f1 = 2.0 * precision * recall / (precision + recall + eps)
    return MeshMetrics(chamfer, normal, abs_normal, precision, recall, f1, thr)


@torch.no_grad()
def compare_meshes(pred_meshes, gt_meshes, num_samples: int | Literal["verts"] = 10000,
                   thresholds: Sequence[float] = (0.1, 0.3, 0.5), scale_to: float | None = 10.0,
                   eps: float = 1e-8, generator: torch.Generator | None = None) -> MeshMetrics:
    """Chamfer-L2, (absolute) normal consistency and precision/recall/F1@t between mesh pairs (Mesh R-CNN).

    Args:
        pred_meshes: ``Meshes`` with N predicted meshes.
        gt_meshes: ``Meshes`` with N ground-truth meshes, or 1 (compared with every prediction).
        num_samples: surface samples S per mesh, or ``"verts"`` to use the vertices as the points (no
            normals; heterogeneous vertex counts are fine).
        thresholds: T distance thresholds, in units of the scaled meshes (Mesh R-CNN: 0.1, 0.3, 0.5 with
            ``scale_to = 10``; its code's default list is 0.1:0.1:0.5).
        scale_to: scale each pair (both meshes, by the same factor) so that the ground truth's bounding box
            has this longest edge (Mesh R-CNN's ``"gt-10"``); None leaves the meshes as they are.
        eps: F1 denominator offset.
        generator: random generator for the surface samples (on the meshes' device).

    Returns:
        :class:`MeshMetrics` with ``(N,)`` / ``(N, T)`` tensors (``.to_meshrcnn()`` for meshrcnn's dict).

    Raises:
        ValueError: batch sizes that are neither equal nor 1 for the ground truth, empty meshes,
            a degenerate ground truth (zero-size bounding box) with ``scale_to``.
    """
    for name, m in (("pred_meshes", pred_meshes), ("gt_meshes", gt_meshes)):
        if not hasattr(m, "verts_packed") or not hasattr(m, "get_bounding_boxes"):
            raise TypeError(f"{name} must be a lib3d.structures.Meshes, got {type(m).__name__}")
    n, n_gt = len(pred_meshes), len(gt_meshes)
    if n_gt not in (1, n):
        raise ValueError(f"gt_meshes must hold 1 or len(pred_meshes) = {n} meshes, got {n_gt}")
    if scale_to is not None:
        bbox = gt_meshes.get_bounding_boxes()  # (N_gt, 3, 2)
        long_edge = (bbox[:, :, 1] - bbox[:, :, 0]).amax(1)
        if not bool((long_edge > 0).all()):
            raise ValueError("gt_meshes must have bounding boxes of non-zero size to be scaled to scale_to")
        scale = float(scale_to) / long_edge
        gt_meshes = gt_meshes.scale_verts(scale)
        pred_meshes = pred_meshes.scale_verts(scale.expand(n) if n_gt == 1 else scale)
    if num_samples == "verts":
        pred_pts, gt_pts = pred_meshes.verts_padded(), gt_meshes.verts_padded()
        pred_len, gt_len = pred_meshes.num_verts_per_mesh(), gt_meshes.num_verts_per_mesh()
        pred_nrm = gt_nrm = None
    else:
        if isinstance(num_samples, str) or int(num_samples) < 1:
            raise ValueError(f"num_samples must be a positive int or 'verts', got {num_samples!r}")
        pred_pts, pred_nrm = sample_points_from_meshes(pred_meshes, int(num_samples), return_normals=True,
                                                       generator=generator)
        gt_pts, gt_nrm = sample_points_from_meshes(gt_meshes, int(num_samples), return_normals=True,
                                                   generator=generator)
        pred_len = gt_len = None
    if n_gt == 1 and n > 1:
        gt_pts = gt_pts.expand(n, -1, -1)
        gt_nrm = None if gt_nrm is None else gt_nrm.expand(n, -1, -1)
        gt_len = None if gt_len is None else gt_len.expand(n)
    return compare_point_clouds(pred_pts, gt_pts, pred_nrm, gt_nrm, pred_len, gt_len, thresholds, eps)


def voc_ap(scores: torch.Tensor, is_tp: torch.Tensor, num_positives: float) -> torch.Tensor:
    """All-point interpolated average precision (PASCAL VOC 2010+; meshrcnn's ``VOCap.compute_ap``).

    Predictions are ranked by decreasing score (stable), precision is made monotone from the right and
    integrated over the recall steps: ``AP = sum_i (r_i - r_{i-1}) max_{j >= i} p_j``.

    Args:
        scores: ``(P,) float`` confidences.
        is_tp: ``(P,) bool`` true positive flags.
        num_positives: number of ground-truth objects (> 0).

    Returns:
        Scalar float64 tensor (0 when there are no predictions).
    """
    sizes = check_shape("scores", scores, ("P",), dtype="float")
    check_shape("is_tp", is_tp, ("P",), sizes, dtype="bool")
    if float(num_positives) <= 0:
        raise ValueError(f"num_positives must be > 0, got {num_positives}")
    if scores.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=scores.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    tp = is_tp[order].to(torch.float64).cumsum(0)
    fp = (~is_tp[order]).to(torch.float64).cumsum(0)
    rec = tp / float(num_positives)
    prec = tp / (tp + fp)
    zero, one = rec.new_zeros(1), rec.new_ones(1)
    mrec = torch.cat([zero, rec, one])
    mpre = torch.cat([zero, prec, zero])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, (0,)), 0).values, (0,))
    return ((mrec[1:] - mrec[:-1]) * mpre[1:]).sum()


class Pix3DAPResult(NamedTuple):
    """Result of :func:`pix3d_ap` / :func:`mesh_ap`.

    Attributes:
        ap: mean AP over the categories with ground truth (a float in [0, 1]; NaN if none).
        categories: ``(K,) int64`` the sorted categories with ground truth.
        per_category_ap: ``(K,) float64``.
    """

    ap: float
    categories: torch.Tensor
    per_category_ap: torch.Tensor

    def per_category(self) -> dict[int, float]:
        """``{category: AP}``."""
        return {int(c): float(a) for c, a in zip(self.categories, self.per_category_ap)}


def pix3d_ap(image_ids: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, gt_labels: torch.Tensor,
             quality: torch.Tensor, box_iou: torch.Tensor, threshold: float = 0.5, filter_iou: float = 0.3
             ) -> Pix3DAPResult:
    """Pix3D-protocol AP with one ground-truth object per image (module docstring).

    Args:
        image_ids: ``(P,) int64`` image of each prediction, indexing ``gt_labels``.
        scores: ``(P,) float`` confidences.
        labels: ``(P,) int`` predicted categories.
        gt_labels: ``(I,) int`` the category of each image's ground-truth object.
        quality: ``(P,) float`` the matching quality against the image's object (mesh AP: F1@0.3 as a
            fraction; box AP: box IoU; mask AP: mask IoU).
        box_iou: ``(P,) float`` box IoU with the image's object (predictions at or below ``filter_iou``
            are not evaluated).
        threshold: a true positive needs ``quality > threshold``.
        filter_iou: the box-IoU filter.

    Returns:
        :class:`Pix3DAPResult`.
    """
    sizes = check_shapes(scores=(scores, ("P",)), quality=(quality, ("P",)), box_iou=(box_iou, ("P",)),
                         dtype="float")
    check_shapes(image_ids=(image_ids, (sizes["P"],)), labels=(labels, (sizes["P"],)), dtype="int")
    check_shape("gt_labels", gt_labels, ("I",), dtype="int")
    n_img = gt_labels.shape[0]
    if image_ids.numel() and (int(image_ids.min()) < 0 or int(image_ids.max()) >= n_img):
        raise ValueError(f"image_ids must index into gt_labels [0, {n_img}), got values in "
                         f"[{int(image_ids.min())}, {int(image_ids.max())}]")
    device = scores.device
    keep = box_iou > filter_iou
    img, sc, lab, qual = image_ids[keep], scores[keep], labels[keep].to(torch.int64), quality[keep]
    gt_lab = gt_labels.to(device, torch.int64)
    # in each image, the highest-scoring (first in input order on ties) qualifying prediction is the TP
    cand = (lab == gt_lab[img]) & (qual > threshold)
    order = torch.sort(-sc.to(torch.float64), stable=True).indices
    order = order[torch.sort(img[order], stable=True).indices]  # (image, -score, input order)
    pos = torch.empty_like(order)
    pos[order] = torch.arange(order.numel(), device=device)
    big = order.numel() + 1
    first = torch.full((n_img,), big, dtype=torch.int64, device=device)
    first.scatter_reduce_(0, img[cand], pos[cand], reduce="amin")
    is_tp = cand & (pos == first[img])
    categories, npos = torch.unique(gt_lab, return_counts=True)
    aps = []
    for c, n_c in zip(categories.tolist(), npos.tolist()):  # loop over categories
        sel = lab == c
        aps.append(voc_ap(sc[sel].to(torch.float64), is_tp[sel], n_c))
    per_cat = torch.stack(aps) if aps else torch.zeros(0, dtype=torch.float64, device=device)
    ap = float(per_cat.mean()) if aps else float("nan")
    return Pix3DAPResult(ap, categories, per_cat)


def mesh_ap(image_ids: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, gt_labels: torch.Tensor,
            f1: torch.Tensor, box_iou: torch.Tensor, f1_threshold: float = 0.5, filter_iou: float = 0.3
            ) -> Pix3DAPResult:
    """Mesh R-CNN's Pix3D mesh AP: :func:`pix3d_ap` with F1@0.3 (a fraction, from :func:`compare_meshes`
    on the meshes in camera coordinates) as the quality and ``F1 > 0.5`` for a true positive."""
    check_tensor("f1", f1, dtype="float")
    if not is_tracing() and f1.numel() and float(f1.max()) > 1.0:
        raise ValueError(f"f1 must be a fraction in [0, 1] (MeshMetrics.f1), got values up to {float(f1.max()):.3g}; "
                         "meshrcnn's dict reports percent: divide by 100")
    return pix3d_ap(image_ids, scores, labels, gt_labels, f1, box_iou, f1_threshold, filter_iou)
