"""List / padded / packed conversions shared by ``Meshes``, ``Pointclouds`` and the textures.

Dimension names: N batch elements; M_i the rows of element i (vertices, faces, points); M the padded size
(``max_i M_i``); D the trailing feature shape.

- list:   ``[x_0 (M_0, *D), ..., x_{N-1} (M_{N-1}, *D)]``
- padded: ``(N, M, *D)``; rows past ``M_i`` hold ``pad_value``
- packed: ``(sum_i M_i, *D)``; element i occupies rows ``first_idx[i] : first_idx[i] + M_i``
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lib3d._checks import TypeIndexError


def counts_to_first_idx(counts: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum: ``counts (N,) long -> first_idx (N,) long`` (first packed row of each element)."""
    return torch.cumsum(counts, 0) - counts


def packed_to_element_idx(counts: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``counts (N,) long -> (sum M_i,) long``: the element each packed row belongs to."""
    idx = torch.arange(counts.shape[0], device=counts.device)
    return torch.repeat_interleave(idx, counts, output_size=total)


def padded_to_packed_index(counts: torch.Tensor, max_size: int, total: int | None = None) -> torch.Tensor:
    """``(sum M_i,) long``: for each packed row, its row in the padded tensor flattened to ``(N * M, ...)``."""
    elem = packed_to_element_idx(counts, total)
    first = counts_to_first_idx(counts)
    local = torch.arange(elem.shape[0], device=counts.device) - first[elem]
    return elem * max_size + local


def list_to_packed(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate a list of ``(M_i, *D)`` tensors into ``(sum M_i, *D)``."""
    return torch.cat(list(xs), dim=0)


def packed_to_padded(packed: torch.Tensor, counts: torch.Tensor, sizes: Sequence[int],
                     pad_value: float = 0.0) -> torch.Tensor:
    """Scatter ``packed (sum M_i, *D)`` into ``padded (N, M, *D)`` (differentiable)."""
    n = len(sizes)
    max_size = max(sizes) if n else 0
    out = packed.new_full((n * max_size,) + tuple(packed.shape[1:]), pad_value)
    if packed.shape[0]:
        idx = padded_to_packed_index(counts, max_size, packed.shape[0])
        out = out.index_copy(0, idx, packed)
    return out.view((n, max_size) + tuple(packed.shape[1:]))


def padded_to_packed(padded: torch.Tensor, counts: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Gather the valid rows of ``padded (N, M, *D)`` into ``(sum M_i, *D)`` (differentiable)."""
    n, m = padded.shape[:2]
    flat = padded.reshape((n * m,) + tuple(padded.shape[2:]))
    return flat.index_select(0, padded_to_packed_index(counts, m, total))


def list_to_padded(xs: Sequence[torch.Tensor], pad_value: float = 0.0,
                   pad_size: int | None = None) -> torch.Tensor:
    """Stack a list of ``(M_i, *D)`` tensors into ``(N, M, *D)`` padded with ``pad_value``."""
    sizes = [int(x.shape[0]) for x in xs]
    m = max(sizes + [0]) if pad_size is None else pad_size
    if not xs:
        raise ValueError("list_to_padded needs at least one tensor")
    trailing = tuple(xs[0].shape[1:])
    out = xs[0].new_full((len(xs), m) + trailing, pad_value)
    for i, x in enumerate(xs):  # loop over batch elements, not rows
        out[i, : x.shape[0]] = x
    return out


def padded_to_list(padded: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Split ``padded (N, M, *D)`` into ``[(M_i, *D)]`` using ``sizes``."""
    return [padded[i, :s] for i, s in enumerate(sizes)]


def split_batch(batch, split_sizes: Sequence[int]) -> list:
    """``batch`` (a ``Meshes`` or ``Pointclouds``) cut into consecutive groups of ``split_sizes[k]`` elements.

    Raises:
        ValueError: if the sizes are not non-negative ints summing to ``len(batch)``.
    """
    sizes = list(split_sizes)
    if not all(isinstance(k, int) and k >= 0 for k in sizes) or sum(sizes) != len(batch):
        raise ValueError(f"split: split_sizes must be non-negative ints summing to {len(batch)}, got {sizes}")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [batch[list(range(a, a + k))] for a, k in zip(starts, sizes)]


def batch_index_ids(index, n: int, what: str) -> list[int]:
    """PyTorch3D's batch indexing of Meshes / Pointclouds: int, slice, list of ints, or a 1-D long or bool
    tensor -> the selected ids; any other index raises ``IndexError`` (a ``TypeIndexError``)."""
    if isinstance(index, int) and not isinstance(index, bool):
        if not -n <= index < n:
            raise IndexError(f"{what} index {index} out of range for a batch of {n}")
        return [index % n]
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, (list, tuple)):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
            raise TypeIndexError(f"a list index must hold ints, got {[type(i).__name__ for i in index]}")
        ids = list(index)
    elif isinstance(index, torch.Tensor):
        if index.dim() != 1 or index.dtype.is_floating_point or index.is_complex():
            raise TypeIndexError(f"a tensor index must be 1-D long or bool, got {index.dtype} of shape "
                                 f"{tuple(index.shape)}")
        if index.dtype == torch.bool:
            if index.shape != (n,):
                raise ValueError(f"boolean index must have shape ({n},), got {tuple(index.shape)}")
            index = index.nonzero().flatten()
        ids = [int(i) for i in index.tolist()]
    else:
        raise TypeIndexError(f"index must be int, slice, list or tensor, got {type(index).__name__}")
    for i in ids:
        if not -n <= i < n:
            raise IndexError(f"{what} index {i} out of range for a batch of {n}")
    return [i % n for i in ids]
