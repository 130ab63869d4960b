"""Losses for fitting fields (dimension names in ``lib3d.fields``)."""

from __future__ import annotations

import torch

from lib3d._checks import check_tensor

__all__ = ["huber", "total_variation"]


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The book's pseudo-Huber loss: ``scaling * (sqrt(1 + (x - y)^2 / scaling^2) - 1)`` (elementwise).

    The square root's argument is clamped at 1e-4 as in the book.

    Args:
        x, y: broadcastable float tensors.
        scaling: the transition scale between the quadratic and linear regimes.

    Returns:
        Elementwise loss (same shape as ``x - y``).
    """
    check_tensor("x", x, dtype="float")
    check_tensor("y", y, dtype="float")
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / (scaling ** 2)).clamp(1e-4).sqrt() - 1) * float(scaling)


def total_variation(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring voxels along x, y and z.

    ``TV = mean((g[..., 1:, :, :] - g[..., :-1, :, :])^2) + (same along H) + (same along W)``.

    Args:
        grid: ``(..., D, H, W)`` float.

    Returns:
        Scalar tensor.
    """
    check_tensor("grid", grid, dtype="float")
    if grid.ndim < 3:
        raise ValueError(f"grid must have shape (..., D, H, W), got {tuple(grid.shape)}")
    tv = grid.new_zeros(())
    for dim in (-1, -2, -3):
        if grid.shape[dim] > 1:
            tv = tv + torch.diff(grid, dim=dim).pow(2).mean()
    return tv
