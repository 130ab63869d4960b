"""Mesh Laplacian matrices (PyTorch3D's ``laplacian``, ``cot_laplacian``, ``norm_laplacian``).

All return ``torch.sparse_coo_tensor`` matrices of shape ``(V, V)`` over packed vertices.
"""

from __future__ import annotations

import torch

from lib3d._checks import check_shapes
from lib3d.ops.packed import gather_rows


def laplacian(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Uniform graph Laplacian ``L = D^-1 A - I``.

    ``(L v)_i = (1 / deg_i) sum_{j in N(i)} v_j - v_i`` (rows of isolated vertices are ``-v_i``).

    Args:
        verts: ``(V, 3) float`` packed vertices (only the size, device and dtype are used).
        edges: ``(E, 2) int64`` unique undirected edges.

    Returns:
        ``(V, V)`` sparse COO float tensor.
    """
    check_shapes(verts=(verts, ("V", 3)), edges=(edges, ("E", 2)))
    v = verts.shape[0]
    e0, e1 = edges.unbind(1)
    idx = torch.cat([torch.stack([e0, e1], 0), torch.stack([e1, e0], 0)], 1)  # (2, 2E)
    deg = torch.zeros(v, dtype=verts.dtype, device=verts.device)
    deg = deg.index_add(0, idx[0], torch.ones(idx.shape[1], dtype=verts.dtype, device=verts.device))
    inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1), deg)
    val = inv[idx[0]]
    diag = torch.arange(v, device=verts.device)
    idx = torch.cat([idx, torch.stack([diag, diag], 0)], 1)
    val = torch.cat([val, -torch.ones(v, dtype=verts.dtype, device=verts.device)])
    return torch.sparse_coo_tensor(idx, val, (v, v), check_invariants=True).coalesce()


def cot_laplacian(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Cotangent Laplacian and inverse vertex areas (PyTorch3D's ``cot_laplacian``; Meyer et al. 2003).

    ``L[i, j] = cot a_ij + cot b_ij``, the cotangents of the angles opposite edge ij in its (one or two)
    faces, computed from side lengths and Heron's area as ``cot A = (b^2 + c^2 - a^2) / (4 area)``;
    symmetric, zero diagonal. ``inv_areas[i] = 1 / sum`` of the areas of the faces around vertex i (0 for
    isolated vertices).

    Args:
        verts: ``(V, 3) float`` packed vertices.
        faces: ``(F, 3) int64`` packed faces.
        eps: floor of the squared Heron area (degenerate triangles).

    Returns:
        ``(L (V, V) sparse COO float, inv_areas (V, 1) float)``.
    """
    check_shapes(verts=(verts, ("V", 3)), faces=(faces, ("F", 3)))
    v_n, f_n = verts.shape[0], faces.shape[0]
    fv = gather_rows(verts, faces)
    v0, v1, v2 = fv[:, 0], fv[:, 1], fv[:, 2]
    a = (v1 - v2).norm(dim=1)
    b = (v0 - v2).norm(dim=1)
    c = (v0 - v1).norm(dim=1)
    s = 0.5 * (a + b + c)
    area = (s * (s - a) * (s - b) * (s - c)).clamp(min=eps).sqrt()
    a2, b2, c2 = a * a, b * b, c * c
    cot = torch.stack([(b2 + c2 - a2) / area, (a2 + c2 - b2) / area, (a2 + b2 - c2) / area], 1) / 4.0
    ii = faces[:, [1, 2, 0]]
    jj = faces[:, [2, 0, 1]]
    idx = torch.stack([ii, jj], 0).view(2, f_n * 3)
    idx = torch.cat([idx, idx.flip(0)], 1)
    val = cot.reshape(-1).repeat(2)
    lap = torch.sparse_coo_tensor(idx, val, (v_n, v_n), check_invariants=True).coalesce()
    areas = torch.zeros(v_n, dtype=verts.dtype, device=verts.device)
    areas = areas.index_add(0, faces.reshape(-1), area[:, None].expand(-1, 3).reshape(-1))
    inv_areas = torch.where(areas > 0, 1.0 / torch.where(areas > 0, areas, torch.ones_like(areas)), areas)
    return lap, inv_areas.view(-1, 1)


def norm_laplacian(verts: torch.Tensor, edges: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Inverse-edge-length weighted adjacency ``L[i, j] = L[j, i] = 1 / (|v_i - v_j| + eps)``.

    Args:
        verts: ``(V, 3) float`` packed vertices.
        edges: ``(E, 2) int64`` unique undirected edges.
        eps: added to the edge lengths.

    Returns:
        ``(V, V)`` sparse COO float tensor.
    """
    check_shapes(verts=(verts, ("V", 3)), edges=(edges, ("E", 2)))
    ev = gather_rows(verts, edges)
    w01 = 1.0 / ((ev[:, 0] - ev[:, 1]).norm(dim=1) + eps)
    e01 = edges.t()
    v = verts.shape[0]
    idx = torch.cat([e01, e01.flip(0)], 1)
    return torch.sparse_coo_tensor(idx, w01.repeat(2), (v, v), check_invariants=True).coalesce()
