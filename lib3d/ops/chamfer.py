"""Chamfer distance between batched point clouds (PyTorch3D's ``chamfer_distance``).

For clouds ``x`` (P1 points) and ``y`` (P2 points) the bidirectional Chamfer distance is

    d(x, y) = red_i |x_i - NN_y(x_i)|^p + red_j |y_j - NN_x(y_j)|^p

with ``p = 2`` (squared L2, ``norm=2``) or the L1 distance (``norm=1``), ``red`` the point reduction (mean,
sum, max or none); the optional normal term is ``1 - |cos(n_i, n_NN(i))|`` (``abs_cosine``) or
``1 - cos(...)``. Each direction is one chunked :func:`knn_points` search (K=1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_tensor, is_tracing
from lib3d.ops.knn import _lengths, knn_gather, knn_points

Reduction = Literal["mean", "sum", "max"] | None


def _handle_pointcloud_input(name: str, points, lengths, normals):
    """``Pointclouds`` or ``(N, P, D)`` tensor -> (points (N, P, D), lengths (N,), normals or None)."""
    if hasattr(points, "points_padded"):
        # PyTorch3D: a Pointclouds' own lengths and normals replace the arguments.
        normals = points.normals_padded()
        lengths = points.num_points_per_cloud()
        points = points.points_padded()
        return points, lengths, normals
    check_tensor(name, points, dtype="float")
    if points.dim() != 3:
        raise ValueError(f"{name} must have shape (N, P, D) or be a Pointclouds, got {tuple(points.shape)}")
    n, p, _ = points.shape
    lengths = _lengths(f"{name}_lengths", lengths, n, p, points.device)
    if normals is not None:
        check_shape(f"{name}_normals", normals, (n, p, 3), dtype="float")
    return points, lengths, normals


def _single_direction(x, y, x_lengths, y_lengths, x_normals, y_normals, weights, point_reduction, norm,
                      abs_cosine):
    """One direction of the Chamfer distance, PyTorch3D's ``_chamfer_distance_single_direction``."""
    return_normals = x_normals is not None and y_normals is not None
    n, p1, _ = x.shape
    x_mask = torch.arange(p1, device=x.device)[None] >= x_lengths[:, None]  # (N, P1)
    knn = knn_points(x, y, lengths1=x_lengths, lengths2=y_lengths, norm=norm, K=1)
    cham_x = knn.dists[..., 0]
    idx = knn.idx
    cham_x = cham_x.masked_fill(x_mask, 0.0)
    if weights is not None:
        cham_x = cham_x * weights.view(n, 1)
    cham_norm_x = x.new_zeros(())
    if return_normals:
        near = knn_gather(y_normals, idx, y_lengths)[..., 0, :]
        cos = F.cosine_similarity(x_normals, near, dim=2, eps=1e-6)
        cham_norm_x = 1 - (torch.abs(cos) if abs_cosine else cos)
        cham_norm_x = cham_norm_x.masked_fill(x_mask, 0.0)
        if weights is not None:
            cham_norm_x = cham_norm_x * weights.view(n, 1)
    if point_reduction == "max":
        cham_x = cham_x.max(1).values
    elif point_reduction is not None:
        cham_x = cham_x.sum(1)
        if return_normals:
            cham_norm_x = cham_norm_x.sum(1)
        if point_reduction == "mean":
            div = x_lengths.clamp(min=1).to(cham_x.dtype)
            cham_x = cham_x / div
            if return_normals:
                cham_norm_x = cham_norm_x / div
    return cham_x, (cham_norm_x if return_normals else None)


def _apply_batch_reduction(cham, cham_norm, weights, batch_reduction):
    if batch_reduction is None:
        return cham, cham_norm
    n = cham.shape[0]
    cham = cham.sum()
    if cham_norm is not None:
        cham_norm = cham_norm.sum()
    if batch_reduction == "mean":
        if weights is None:
            div = max(n, 1)
        elif float(weights.sum()) == 0.0:
            div = 1
        else:
            div = weights.sum()
        cham = cham / div
        if cham_norm is not None:
            cham_norm = cham_norm / div
    return cham, cham_norm


def chamfer_distance(x, y, x_lengths: torch.Tensor | None = None, y_lengths: torch.Tensor | None = None,
                     x_normals: torch.Tensor | None = None, y_normals: torch.Tensor | None = None,
                     weights: torch.Tensor | None = None,
                     batch_reduction: Literal["mean", "sum"] | None = "mean",
                     point_reduction: Reduction = "mean", norm: int = 2, single_directional: bool = False,
                     abs_cosine: bool = True):
    """Chamfer distance between two batches of point clouds (PyTorch3D semantics).

    ``loss = red_i d(x_i, NN_y(x_i)) + red_j d(y_j, NN_x(y_j))`` with ``d`` the squared L2 (``norm=2``)
    or L1 (``norm=1``) distance; ``loss_normals`` the same with ``1 - |cos(n_x, n_NN)|`` (or ``1 - cos`` when
    ``abs_cosine=False``). ``point_reduction="max"`` takes the larger of the two directional maxima.

    Args:
        x: ``(N, P1, D) float`` tensor or a ``Pointclouds``.
        y: ``(N, P2, D) float`` tensor or a ``Pointclouds``.
        x_lengths: ``(N,) int64`` valid points per cloud of ``x`` (tensor input; a ``Pointclouds``' own
            lengths and normals replace ``x_lengths``/``x_normals``, as in PyTorch3D).
        y_lengths: ``(N,) int64`` valid points per cloud of ``y``.
        x_normals: ``(N, P1, 3) float`` normals of ``x``.
        y_normals: ``(N, P2, 3) float`` normals of ``y``.
        weights: ``(N,) float`` non-negative per-cloud weights.
        batch_reduction: "mean" (weighted by ``weights`` if given), "sum" or None.
        point_reduction: "mean", "sum", "max" or None (then returns per-point tuples ``(cham_x, cham_y)``).
        norm: 2 or 1.
        single_directional: only the ``x -> y`` term.
        abs_cosine: ignore the orientation of the normals.

    Returns:
        ``(loss, loss_normals)``: scalars for a batch reduction, ``(N,)`` for ``batch_reduction=None``, or
        per-point ``(N, P1)`` (tuples of both directions unless ``single_directional``) when
        ``point_reduction=None``; ``loss_normals`` is None without normals.

    Raises:
        ValueError: bad reductions, ``norm``, shapes, weights, or normals with ``point_reduction="max"``.
    """
    if batch_reduction not in (None, "mean", "sum"):
        raise ValueError(f'batch_reduction must be one of ["mean", "sum"] or None, got {batch_reduction!r}')
    if point_reduction not in (None, "mean", "sum", "max"):
        raise ValueError(f'point_reduction must be one of ["mean", "sum", "max"] or None, got {point_reduction!r}')
    if point_reduction is None and batch_reduction is not None:
        raise ValueError("batch_reduction must be None if point_reduction is None")
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('Normals must be None if point_reduction is "max"')
    x, x_lengths, x_normals = _handle_pointcloud_input("x", x, x_lengths, x_normals)
    y, y_lengths, y_normals = _handle_pointcloud_input("y", y, y_lengths, y_normals)
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('Normals must be None if point_reduction is "max"')
    n, _, d = x.shape
    if y.shape[0] != n or y.shape[2] != d:
        raise ValueError(f"y must have shape ({n}, P2, {d}) to match x, got {tuple(y.shape)}")
    if weights is not None:
        check_shape("weights", weights, (n,), dtype="float")
        if not is_tracing() and not bool((weights >= 0).all()):
            raise ValueError("weights cannot be negative")
        if not is_tracing() and float(weights.sum()) == 0.0:
            zero = (x.sum((1, 2)) * weights) * 0.0
            if point_reduction is None:
                return zero, zero
            if batch_reduction is None:
                return zero, zero
            return zero.sum(), zero.sum()

    cham_x, cham_norm_x = _single_direction(x, y, x_lengths, y_lengths, x_normals, y_normals, weights,
                                            point_reduction, norm, abs_cosine)
    if single_directional:
        loss, loss_normals = cham_x, cham_norm_x
    else:
        cham_y, cham_norm_y = _single_direction(y, x, y_lengths, x_lengths, y_normals, x_normals, weights,
                                                point_reduction, norm, abs_cosine)
        if point_reduction == "max":
            loss, loss_normals = torch.maximum(cham_x, cham_y), None
        elif point_reduction is not None:
            loss = cham_x + cham_y
            loss_normals = cham_norm_x + cham_norm_y if cham_norm_x is not None else None
        else:
            loss = (cham_x, cham_y)
            loss_normals = (cham_norm_x, cham_norm_y) if cham_norm_x is not None else None
    if point_reduction is None:
        return loss, loss_normals
    return _apply_batch_reduction(loss, loss_normals, weights, batch_reduction)


def chamfer_distance_naive(x: torch.Tensor, y: torch.Tensor, x_lengths=None, y_lengths=None,
                           x_normals=None, y_normals=None, weights=None, batch_reduction="mean",
                           point_reduction="mean", norm: int = 2, single_directional: bool = False,
                           abs_cosine: bool = True):
    """Slow reference for :func:`chamfer_distance` on tensors: full distance matrices, no chunking.

    Same arguments and results (tensor inputs only). For tests.
    """
    n, p1, _ = x.shape
    p2 = y.shape[1]
    lx = _lengths("x_lengths", x_lengths, n, p1, x.device)
    ly = _lengths("y_lengths", y_lengths, n, p2, x.device)

    def one(a, b, la, lb, na, nb):
        diff = a[:, :, None] - b[:, None]
        dm = (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)
        dm = dm.masked_fill(torch.arange(b.shape[1], device=a.device)[None, None] >= lb[:, None, None],
                            float("inf"))
        val, arg = dm.min(2)
        valid = torch.arange(a.shape[1], device=a.device)[None] < la[:, None]
        val = torch.where(valid, val, torch.zeros_like(val))
        cn = None
        if na is not None and nb is not None:
            near = nb[torch.arange(n, device=a.device)[:, None], arg]
            cos = F.cosine_similarity(na, near, dim=2, eps=1e-6)
            cn = torch.where(valid, 1 - (cos.abs() if abs_cosine else cos), torch.zeros_like(cos))
        if weights is not None:
            val = val * weights[:, None]
            cn = cn * weights[:, None] if cn is not None else None
        if point_reduction == "max":
            return val.max(1).values, None
        if point_reduction is None:
            return val, cn
        val = val.sum(1)
        cn = cn.sum(1) if cn is not None else None
        if point_reduction == "mean":
            val = val / la.clamp(min=1)
            cn = cn / la.clamp(min=1) if cn is not None else None
        return val, cn

    cx, nx = one(x, y, lx, ly, x_normals, y_normals)
    if single_directional:
        loss, ln = cx, nx
    else:
        cy, ny = one(y, x, ly, lx, y_normals, x_normals)
        if point_reduction == "max":
            loss, ln = torch.maximum(cx, cy), None
        elif point_reduction is None:
            return (cx, cy), ((nx, ny) if nx is not None else None)
        else:
            loss, ln = cx + cy, (nx + ny if nx is not None else None)
    if point_reduction is None:
        return loss, ln
    return _apply_batch_reduction(loss, ln, weights, batch_reduction)
