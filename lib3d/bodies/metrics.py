"""Pose-estimation metrics: MPJPE (root-aligned), PA-MPJPE (Procrustes-aligned) and 2D keypoint error.

``PA``: the similarity transform (scale s, rotation R, translation t) minimising ``|s R X + t - Y|^2``
(Umeyama 1991), solved per example with one batched SVD.
"""

from __future__ import annotations

import torch

from lib3d._checks import check_shapes

__all__ = ["keypoint_error_2d", "mpjpe", "pa_mpjpe", "procrustes_align"]


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``pred`` aligned to ``gt`` by the best similarity transform (Umeyama).

    Args:
        pred, gt: (N, P, 3) float point sets in correspondence.

    Returns:
        (N, P, 3) aligned ``pred``.
    """
    check_shapes(dtype="float", pred=(pred, ("N", "P", 3)), gt=(gt, ("N", "P", 3)))
    mp, mg = pred.mean(1, keepdim=True), gt.mean(1, keepdim=True)
    X, Y = pred - mp, gt - mg
    C = X.transpose(1, 2) @ Y  # (N, 3, 3)
    U, Sv, Vh = torch.linalg.svd(C)
    d = torch.sign(torch.det(U @ Vh))
    D = torch.ones_like(Sv)
    D[:, -1] = d
    R = U @ (D[..., None] * Vh)  # rotation applied as X @ R
    scale = (Sv * D).sum(-1) / (X * X).sum((1, 2)).clamp_min(1e-12)
    return scale[:, None, None] * (X @ R) + mg


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root: int | None = 0) -> torch.Tensor:
    """Mean per-joint position error, (N, P, 3) x2 -> (N,), after subtracting joint ``root`` (None: raw)."""
    check_shapes(dtype="float", pred=(pred, ("N", "P", 3)), gt=(gt, ("N", "P", 3)))
    if root is not None:
        pred = pred - pred[:, root:root + 1]
        gt = gt - gt[:, root:root + 1]
    return (pred - gt).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """MPJPE after Procrustes alignment (scale, rotation, translation): (N, P, 3) x2 -> (N,)."""
    return (procrustes_align(pred, gt) - gt).norm(dim=-1).mean(-1)


def keypoint_error_2d(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean 2D distance (px) per example over keypoints where ``mask`` (N, K) is true: (N, K, 2) x2 -> (N,)."""
    check_shapes(dtype="float", pred=(pred, ("N", "K", 2)), gt=(gt, ("N", "K", 2)))
    d = (pred - gt).norm(dim=-1)
    if mask is None:
        mask = torch.isfinite(d)
    m = mask & torch.isfinite(d)
    return torch.where(m, d, torch.zeros_like(d)).sum(-1) / m.sum(-1).clamp_min(1)
