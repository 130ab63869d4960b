"""Packed <-> padded conversions with PyTorch3D's ``packed_to_padded`` / ``padded_to_packed`` signatures,
and ``gather_rows``, the row gather that packed mesh code uses.

Packed rows of batch element n occupy ``first_idxs[n] : first_idxs[n+1]`` (the last one runs to the end).
"""

from __future__ import annotations

import torch

from lib3d._checks import check_shape, check_tensor


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for an integer ``index`` of any shape, as one ``index_select`` along dim 0.

    Same values and gradient as advanced indexing, but the backward is an ``index_add`` of whole rows
    rather than the accumulating ``index_put`` behind ``x[index]``, which runs element by element on the CPU
    (it took a fifth of a Mesh R-CNN training step in vertex and face gathers).

    Args:
        x: ``(V, *D)`` rows (e.g. packed vertices or vertex features).
        index: ``(*I) int64`` row indices in ``[0, V)``.

    Returns:
        ``(*I, *D)``, differentiable w.r.t. ``x``.

    Raises:
        IndexError: an index outside ``[0, V)`` (torch's ``index_select`` check; negative indices are not
            counted from the end as ``x[index]`` would).
    """
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def _element_rows(first_idxs: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each packed row: (batch element, row within the element)."""
    rows = torch.arange(total, device=first_idxs.device)
    elem = torch.searchsorted(first_idxs, rows, right=True) - 1
    return elem, rows - first_idxs[elem.clamp(min=0)]


def packed_to_padded(inputs: torch.Tensor, first_idxs: torch.Tensor, max_size: int) -> torch.Tensor:
    """Scatter packed rows into a zero-padded batch (PyTorch3D's ``packed_to_padded``).

    Args:
        inputs: ``(F, *D)`` packed values (e.g. F packed faces) with any number of trailing dimensions.
        first_idxs: ``(N,) int64`` first packed row of each batch element (ascending).
        max_size: padded size M (``max_n F_n``); rows of an element past M are dropped.

    Returns:
        ``(N, M, *D)``, zero where ``row >= F_n``; differentiable w.r.t. ``inputs``.
    """
    check_tensor("inputs", inputs)
    check_shape("first_idxs", first_idxs, (None,), dtype="int")
    if inputs.dim() < 1:
        raise ValueError("inputs must have shape (F, *D), got a 0-d tensor")
    trailing = tuple(inputs.shape[1:])
    x = inputs.reshape(inputs.shape[0], -1)
    n = first_idxs.shape[0]
    elem, local = _element_rows(first_idxs, x.shape[0])
    keep = (elem >= 0) & (local < max_size)
    out = x.new_zeros((n * max_size, x.shape[1]))
    out = out.index_copy(0, (elem * max_size + local)[keep], x[keep])
    return out.view((n, max_size) + trailing)


def padded_to_packed(inputs: torch.Tensor, first_idxs: torch.Tensor, num_inputs: int,
                     max_size_dim: int = 1) -> torch.Tensor:
    """Gather the valid rows of a padded batch into packed form (PyTorch3D's ``padded_to_packed``).

    Args:
        inputs: ``(N, ..., M, ...)`` padded values, with the padded dimension M at ``max_size_dim`` and any
            number of other dimensions ``*D`` (``(N, M)``, ``(N, M, C)``, ``(N, C, M)`` with max_size_dim=2 ...).
        first_idxs: ``(N,) int64`` first packed row of each batch element.
        num_inputs: total packed rows F.
        max_size_dim: the dimension of ``inputs`` that holds M (>= 1; negative counts from the end).

    Returns:
        ``(F, *D)`` with ``*D`` the other dimensions in their order; differentiable w.r.t. ``inputs``.
    """
    check_tensor("inputs", inputs)
    if inputs.dim() < 2:
        raise ValueError(f"inputs must have shape (N, M, *D), got {tuple(inputs.shape)}")
    dim = max_size_dim % inputs.dim() if max_size_dim < 0 else max_size_dim
    if not 1 <= dim < inputs.dim():
        raise ValueError(f"max_size_dim must be in [1, {inputs.dim() - 1}] for inputs of shape "
                         f"{tuple(inputs.shape)}, got {max_size_dim}")
    check_shape("first_idxs", first_idxs, (inputs.shape[0],), dtype="int")
    x = inputs.movedim(dim, 1)
    n, m = x.shape[:2]
    trailing = tuple(x.shape[2:])
    elem, local = _element_rows(first_idxs, num_inputs)
    if num_inputs and (int(elem.min()) < 0 or int(local.max()) >= m):
        raise ValueError(f"first_idxs and num_inputs={num_inputs} do not fit inputs of shape {tuple(inputs.shape)}")
    out = x.reshape(n * m, -1).index_select(0, elem * m + local)
    return out.reshape((num_inputs,) + trailing)
