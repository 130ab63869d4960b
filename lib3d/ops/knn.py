"""K nearest neighbours between batched point clouds (PyTorch3D's ``knn_points`` / ``knn_gather``).

The search runs in chunks of query points so that memory stays bounded (``O(chunk * P2)`` per batch
element, never ``P1 * P2``): for L2 it expands ``|x - y|^2 = |x|^2 - 2 x.y + |y|^2`` with one batched
matrix product per chunk (``[x, 1] . [-2 y, |y|^2]``; ``|x|^2`` is constant per row and skipped for the
ranking), takes ``min`` (K=1) or ``topk`` (K>1), and then recomputes the exact distances of the selected
neighbours from the coordinates. The search itself runs without autograd; gradients reach ``p1`` and ``p2``
through that exact recomputation, so they are those of ``|p1_i - p2_idx|^2`` with the neighbours held
fixed (PyTorch3D's).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lib3d._checks import check_choice, check_shape, check_tensor, is_tracing

# Elements of one distance chunk per CPU thread (rows * P2 * batch): ~4 MB of float32 (measured fastest).
_CHUNK_ELEMENTS = 1 << 20
# Finite stand-in for "infinitely far" (masked padding); finite so that BLAS never meets 0 * inf.
_FAR = 1e30


class KNN(NamedTuple):
    """Result of :func:`knn_points`.

    Attributes:
        dists: ``(N, P1, K) float`` squared L2 (``norm=2``) or L1 (``norm=1``) distances, ascending.
        idx: ``(N, P1, K) int64`` indices into ``p2``'s second dimension.
        knn: ``(N, P1, K, D) float`` the neighbours ``p2[n, idx[n, i, k]]`` when ``return_nn``, else None.
    """

    dists: torch.Tensor
    idx: torch.Tensor
    knn: torch.Tensor | None


def _lengths(name: str, lengths: torch.Tensor | None, n: int, p: int, device) -> torch.Tensor:
    if lengths is None:
        return torch.full((n,), p, dtype=torch.int64, device=device)
    check_shape(name, lengths, (n,), dtype="int")
    if not is_tracing() and lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > p):
        raise ValueError(f"{name} must lie in [0, {p}], got values in [{int(lengths.min())}, {int(lengths.max())}]")
    return lengths.to(device=device, dtype=torch.int64)


def _chunk_rows(n: int, p1: int, p2: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    budget = _CHUNK_ELEMENTS * max(1, torch.get_num_threads())  # ~4 MB per CPU thread
    return max(16, min(max(p1, 1), budget // max(1, n * p2)))


@torch.no_grad()
def _knn_idx(p1: torch.Tensor, p2: torch.Tensor, lengths2: torch.Tensor, K: int, norm: int,
             chunk_size: int | None) -> torch.Tensor:
    """Indices ``(N, P1, min(K, P2))`` of the nearest valid points of ``p2`` (approximate ranking)."""
    n, p1_n, d = p1.shape
    p2_n = p2.shape[1]
    k_eff = min(K, p2_n)
    p1 = p1.detach()
    p2 = p2.detach()
    out = torch.zeros((n, p1_n, k_eff), dtype=torch.int64, device=p1.device)
    if p1_n == 0 or p2_n == 0 or k_eff == 0:
        return out
    invalid = torch.arange(p2_n, device=p1.device)[None] >= lengths2[:, None]  # (N, P2)
    any_invalid = bool(invalid.any()) if not is_tracing() else True
    rows = _chunk_rows(n, p1_n, p2_n, chunk_size)
    if norm == 2:
        # Centre both clouds on the mean of p2's valid points: the expansion loses less precision there.
        valid = (~invalid).to(p2.dtype)[..., None]
        centre = (p2 * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
        a = p1 - centre
        b = p2 - centre
        b_sq = (b * b).sum(-1, keepdim=True)  # (N, P2, 1)
        if any_invalid:
            b_sq = b_sq.masked_fill(invalid[..., None], _FAR)
        # One GEMM per chunk: [a, 1] . [-2 b, |b|^2] = |b|^2 - 2 a.b  (= |a - b|^2 - |a|^2)
        a_aug = torch.cat([a, torch.ones_like(a[..., :1])], -1)  # (N, P1, D + 1)
        b_aug = torch.cat([-2.0 * b, b_sq], -1).transpose(1, 2)  # (N, D + 1, P2)
        for s in range(0, p1_n, rows):
            score = torch.bmm(a_aug[:, s:s + rows], b_aug)
            if k_eff == 1:
                out[:, s:s + rows, 0] = score.min(dim=2).indices
            else:
                out[:, s:s + rows] = score.topk(k_eff, dim=2, largest=False, sorted=True).indices
    else:
        rows = max(1, rows // max(1, d))
        for s in range(0, p1_n, rows):
            score = (p1[:, s:s + rows, None, :] - p2[:, None, :, :]).abs().sum(-1)
            if any_invalid:
                score = score.masked_fill(invalid[:, None, :], _FAR)
            if k_eff == 1:
                out[:, s:s + rows, 0] = score.min(dim=2).indices
            else:
                out[:, s:s + rows] = score.topk(k_eff, dim=2, largest=False, sorted=True).indices
    return out


def _exact_dists(p1: torch.Tensor, nn: torch.Tensor, norm: int) -> torch.Tensor:
    diff = p1[:, :, None, :] - nn
    return (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)


def knn_gather(x: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Gather the neighbours ``x[n, idx[n, i, k]]`` (PyTorch3D's ``knn_gather``).

    Args:
        x: ``(N, M, U) float`` features or points of the second cloud.
        idx: ``(N, L, K) int64`` indices into ``x``'s second dimension (as returned by ``knn_points``).
        lengths: ``(N,) int64`` valid rows of each ``x[n]``; slots ``k >= lengths[n]`` are zero-filled.

    Returns:
        ``(N, L, K, U)`` gathered values (differentiable w.r.t. ``x``).

    Raises:
        ValueError: mismatched batch sizes or out-of-range indices.
    """
    check_shape("x", x, ("N", "M", "U"))
    check_shape("idx", idx, (x.shape[0], "L", "K"), dtype="int")
    n, m, u = x.shape
    _, l_n, k = idx.shape
    lengths = _lengths("lengths", lengths, n, m, x.device)
    if m == 0:
        return x.new_zeros((n, l_n, k, u))
    flat = idx.clamp(min=0).reshape(n, l_n * k, 1).expand(-1, -1, u)
    out = x.gather(1, flat).view(n, l_n, k, u)
    mask = lengths[:, None] <= torch.arange(k, device=x.device)[None]  # (N, K)
    if is_tracing() or bool(mask.any()) or bool((idx < 0).any()):
        full = mask[:, None, :] | (idx < 0)
        out = out.masked_fill(full[..., None], 0.0)
    return out


def knn_points(p1: torch.Tensor, p2: torch.Tensor, lengths1: torch.Tensor | None = None,
               lengths2: torch.Tensor | None = None, norm: int = 2, K: int = 1, version: int = -1,
               return_nn: bool = False, return_sorted: bool = True,
               chunk_size: int | None = None) -> KNN:
    """K nearest neighbours in ``p2`` of every point of ``p1`` (PyTorch3D's ``knn_points``).

    ``dists[n, i, k] = |p1[n, i] - p2[n, idx[n, i, k]]|^2`` (``norm=2``, squared) or the L1 distance
    (``norm=1``), sorted ascending. Points ``i >= lengths1[n]`` and slots ``k >= lengths2[n]`` hold
    ``dists = 0`` and ``idx = 0`` (PyTorch3D's CPU kernel).

    Args:
        p1: ``(N, P1, D) float`` query points.
        p2: ``(N, P2, D) float`` reference points.
        lengths1: ``(N,) int64`` valid points of each ``p1[n]`` (default all ``P1``).
        lengths2: ``(N,) int64`` valid points of each ``p2[n]`` (default all ``P2``).
        norm: 2 (squared Euclidean) or 1 (L1).
        K: number of neighbours.
        version: ignored (PyTorch3D's kernel selector); kept for call compatibility.
        return_nn: also return the gathered neighbours ``(N, P1, K, D)``.
        return_sorted: kept for compatibility; results are always sorted.
        chunk_size: query rows per distance chunk (default: ~4 MB of distances per CPU thread).

    Returns:
        :class:`KNN` ``(dists, idx, knn)``; ``dists`` is differentiable w.r.t. ``p1`` and ``p2``.

    Raises:
        ValueError: bad shapes, ``K < 1``, ``norm`` not in {1, 2}, lengths out of range.

    Example:
        >>> d, i, _ = knn_points(torch.rand(2, 100, 3), torch.rand(2, 80, 3), K=4)
    """
    sizes = check_shapes_pair(p1, p2)
    check_choice("norm", norm, (1, 2))
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive int, got {K!r}")
    n, p1_n, p2_n = sizes["N"], p1.shape[1], p2.shape[1]
    lengths1 = _lengths("lengths1", lengths1, n, p1_n, p1.device)
    lengths2 = _lengths("lengths2", lengths2, n, p2_n, p1.device)
    idx = _knn_idx(p1, p2, lengths2, K, norm, chunk_size)  # (N, P1, k_eff)
    nn = knn_gather(p2, idx)  # (N, P1, k_eff, D), lengths handled below
    dists = _exact_dists(p1, nn, norm)
    if idx.shape[2] > 1:
        if is_tracing() or bool((lengths2 < idx.shape[2]).any()):
            dists = dists.masked_fill(idx >= lengths2[:, None, None], float("inf"))
        # Re-rank the candidates by their exact distance (the expansion can swap near ties).
        dists, order = dists.sort(dim=2, stable=True)
        idx = idx.gather(2, order)
        nn = nn.gather(2, order[..., None].expand_as(nn))
    if idx.shape[2] < K:
        pad = K - idx.shape[2]
        idx = torch.cat([idx, idx.new_zeros((n, p1_n, pad))], 2)
        dists = torch.cat([dists, dists.new_zeros((n, p1_n, pad))], 2)
        nn = torch.cat([nn, nn.new_zeros((n, p1_n, pad, nn.shape[3]))], 2)
    valid = (torch.arange(p1_n, device=p1.device)[None, :, None] < lengths1[:, None, None]) & (
        torch.arange(K, device=p1.device)[None, None, :] < lengths2[:, None, None])  # (N, P1, K)
    if is_tracing() or not bool(valid.all()):
        dists = dists.masked_fill(~valid, 0.0)
        idx = idx.masked_fill(~valid, 0)
    if return_nn:
        # PyTorch3D: knn_gather(p2, idx, lengths2), so rows past lengths1 hold p2[n, 0].
        nn = knn_gather(p2, idx, lengths2)
    return KNN(dists=dists, idx=idx, knn=nn if return_nn else None)


def check_shapes_pair(p1: torch.Tensor, p2: torch.Tensor) -> dict:
    """Check ``p1 (N, P1, D)`` and ``p2 (N, P2, D)`` float point batches; returns the named sizes."""
    check_tensor("p1", p1, dtype="float")
    check_tensor("p2", p2, dtype="float")
    sizes = check_shape("p1", p1, ("N", None, "D"))
    check_shape("p2", p2, ("N", None, "D"), sizes)
    if p1.dtype != p2.dtype:
        raise TypeError(f"p2 must have the dtype of p1 ({p1.dtype}), got {p2.dtype}")
    if p1.device != p2.device:
        raise ValueError(f"p2 must be on the device of p1 ({p1.device}), got {p2.device}")
    return sizes


def knn_points_naive(p1: torch.Tensor, p2: torch.Tensor, lengths1: torch.Tensor | None = None,
                     lengths2: torch.Tensor | None = None, norm: int = 2, K: int = 1) -> KNN:
    """Slow reference for :func:`knn_points`: the full ``(N, P1, P2)`` distance matrix and a sort.

    Same arguments and padding semantics as :func:`knn_points` (``return_nn`` always on). For tests.
    """
    n, p1_n, _ = p1.shape
    p2_n = p2.shape[1]
    lengths1 = _lengths("lengths1", lengths1, n, p1_n, p1.device)
    lengths2 = _lengths("lengths2", lengths2, n, p2_n, p1.device)
    diff = p1[:, :, None, :] - p2[:, None, :, :]
    d = (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)
    invalid = torch.arange(p2_n, device=p1.device)[None, None, :] >= lengths2[:, None, None]
    d = d.masked_fill(invalid, float("inf"))
    k_eff = min(K, p2_n)
    dists, idx = d.sort(dim=2, stable=True)
    dists, idx = dists[..., :k_eff], idx[..., :k_eff]
    if k_eff < K:
        idx = torch.cat([idx, idx.new_zeros((n, p1_n, K - k_eff))], 2)
        dists = torch.cat([dists, dists.new_zeros((n, p1_n, K - k_eff))], 2)
    valid = (torch.arange(p1_n, device=p1.device)[None, :, None] < lengths1[:, None, None]) & (
        torch.arange(K, device=p1.device)[None, None, :] < lengths2[:, None, None])
    dists = torch.where(valid, dists, torch.zeros_like(dists))
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    nn = p2[torch.arange(n, device=p1.device)[:, None, None], idx] * valid[..., None]
    return KNN(dists=dists, idx=idx, knn=nn)
