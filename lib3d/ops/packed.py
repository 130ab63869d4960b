"""Packed <-> padded conversions with PyTorch3D's ``packed_to_padded`` / ``padded_to_packed`` signatures.

Packed rows of batch element n occupy ``first_idxs[n] : first_idxs[n+1]`` (the last one runs to the end).
"""

from __future__ import annotations

import torch

from lib3d._checks import check_shape, check_tensor


def _element_rows(first_idxs: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each packed row: (batch element, row within the element)."""
    rows = torch.arange(total, device=first_idxs.device)
    elem = torch.searchsorted(first_idxs, rows, right=True) - 1
    return elem, rows - first_idxs[elem.clamp(min=0)]


def packed_to_padded(inputs: torch.Tensor, first_idxs: torch.Tensor, max_size: int) -> torch.Tensor:
    """Scatter packed rows into a zero-padded batch (PyTorch3D's ``packed_to_padded``).

    Args:
        inputs: ``(F,)`` or ``(F, D)`` float packed values (e.g. F packed faces).
        first_idxs: ``(N,) int64`` first packed row of each batch element (ascending).
        max_size: padded size M (``max_n F_n``).

    Returns:
        ``(N, M)`` or ``(N, M, D)``, zero where ``row >= F_n``; differentiable w.r.t. ``inputs``.
    """
    check_tensor("inputs", inputs)
    check_shape("first_idxs", first_idxs, (None,), dtype="int")
    if inputs.dim() not in (1, 2):
        raise ValueError(f"inputs must have shape (F,) or (F, D), got {tuple(inputs.shape)}")
    flat = inputs.dim() == 1
    x = inputs[:, None] if flat else inputs
    n = first_idxs.shape[0]
    elem, local = _element_rows(first_idxs, x.shape[0])
    keep = (elem >= 0) & (local < max_size)
    out = x.new_zeros((n * max_size, x.shape[1]))
    out = out.index_copy(0, (elem * max_size + local)[keep], x[keep])
    out = out.view(n, max_size, x.shape[1])
    return out[..., 0] if flat else out


def padded_to_packed(inputs: torch.Tensor, first_idxs: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """Gather the valid rows of a padded batch into packed form (PyTorch3D's ``padded_to_packed``).

    Args:
        inputs: ``(N, M)`` or ``(N, M, D)`` padded values.
        first_idxs: ``(N,) int64`` first packed row of each batch element.
        num_inputs: total packed rows F.

    Returns:
        ``(F,)`` or ``(F, D)``; differentiable w.r.t. ``inputs``.
    """
    check_tensor("inputs", inputs)
    if inputs.dim() not in (2, 3):
        raise ValueError(f"inputs must have shape (N, M) or (N, M, D), got {tuple(inputs.shape)}")
    check_shape("first_idxs", first_idxs, (inputs.shape[0],), dtype="int")
    flat = inputs.dim() == 2
    x = inputs[..., None] if flat else inputs
    n, m, d = x.shape
    elem, local = _element_rows(first_idxs, num_inputs)
    if num_inputs and (int(elem.min()) < 0 or int(local.max()) >= m):
        raise ValueError(f"first_idxs and num_inputs={num_inputs} do not fit inputs of shape {tuple(inputs.shape)}")
    out = x.reshape(n * m, d).index_select(0, elem * m + local)
    return out[:, 0] if flat else out
