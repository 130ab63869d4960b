"""Mesh regularisers: edge length, normal consistency and Laplacian smoothing (PyTorch3D's losses).

Each loss has a pure tensor-level function over packed vertices and topology indices, and a
``Meshes``-level wrapper with PyTorch3D's name and signature. Per-mesh weighting is PyTorch3D's: every
term of mesh n is divided by that mesh's number of terms (edges, face pairs, vertices) and the sum is
divided by N, i.e. the loss is the mean over meshes of each mesh's mean.

Topology-derived indices (edges, face pairs across edges, vertex degrees) depend only on the faces; the
wrappers cache them in the ``Meshes`` topology cache, which meshes made by ``offset_verts`` /
``update_padded`` share, so an optimisation loop computes them once.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_choice, check_shape, check_shapes
from lib3d.ops.laplacian import cot_laplacian
from lib3d.ops.packed import gather_rows


def _topo_cached(meshes, key: str, fn):
    """Cache ``fn()`` with the faces of a lib3d ``Meshes`` (shared by same-topology meshes)."""
    cached = getattr(meshes, "topology_cached", None)
    return fn() if cached is None else cached("ops." + key, fn)


def _zero_loss(meshes) -> torch.Tensor:
    return torch.tensor([0.0], dtype=torch.float32, device=meshes.device, requires_grad=True)


# ----------------------------------------------------------------------------------------- topology
def faces_to_edges(faces: torch.Tensor, num_verts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique undirected edges of packed faces, PyTorch3D's construction and order.

    Args:
        faces: ``(F, 3) int64`` packed faces.
        num_verts: number of packed vertices V.

    Returns:
        ``(edges (E, 2) int64`` with ``a < b`` sorted by ``a * V + b``, ``face_to_edge (F, 3) int64``
        whose column k is the edge opposite vertex k).
    """
    check_shape("faces", faces, ("F", 3), dtype="int")
    v0, v1, v2 = faces.unbind(1)
    e = torch.cat([torch.stack([v1, v2], 1), torch.stack([v2, v0], 1), torch.stack([v0, v1], 1)], 0)
    e, _ = e.sort(dim=1)
    nv = max(int(num_verts), 1)
    h = nv * e[:, 0] + e[:, 1]
    u, inverse = torch.unique(h, return_inverse=True)
    edges = torch.stack([u // nv, u % nv], 1)
    return edges, inverse.view(3, faces.shape[0]).t().contiguous()


class FacePairs(NamedTuple):
    """Pairs of faces sharing an edge (for normal consistency). All ``(Q,) int64`` over packed indices.

    Attributes:
        v0, v1: the shared edge's end vertices.
        opp_a, opp_b: the vertex opposite the edge in the first and in the second face.
        mesh: mesh index of each pair.
    """

    v0: torch.Tensor
    v1: torch.Tensor
    opp_a: torch.Tensor
    opp_b: torch.Tensor
    mesh: torch.Tensor


def face_pairs(faces: torch.Tensor, edges: torch.Tensor, face_to_edge: torch.Tensor,
               faces_to_mesh_idx: torch.Tensor) -> FacePairs:
    """All pairs of faces around each edge (every unordered pair when more than two faces share it).

    Args:
        faces: ``(F, 3) int64`` packed faces.
        edges: ``(E, 2) int64`` packed edges.
        face_to_edge: ``(F, 3) int64``, column k the edge opposite vertex k.
        faces_to_mesh_idx: ``(F,) int64`` mesh of each face.

    Returns:
        :class:`FacePairs` (vectorised; no Python loop over edges).
    """
    f_n = faces.shape[0]
    edge_idx = face_to_edge.reshape(-1)  # (3F,) entry f*3+k: edge opposite vertex k of face f
    opp = faces.reshape(-1)  # the opposite vertex of that entry
    mesh = faces_to_mesh_idx.repeat_interleave(3)
    edge_sorted, order = edge_idx.sort(stable=True)
    counts = torch.bincount(edge_sorted, minlength=edges.shape[0])
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(3 * f_n, device=faces.device)
    rank = pos - start[edge_sorted]
    partners = counts[edge_sorted] - 1 - rank  # later entries of the same edge
    total = int(partners.sum())
    pi = torch.repeat_interleave(pos, partners, output_size=total)
    first = torch.cumsum(partners, 0) - partners
    pj = pi + 1 + (torch.arange(total, device=faces.device) - first[pi])
    e = edge_sorted[pi]
    return FacePairs(v0=edges[e, 0], v1=edges[e, 1], opp_a=opp[order[pi]], opp_b=opp[order[pj]],
                     mesh=mesh[order[pi]])


# ------------------------------------------------------------------------------------ edge loss
def edge_length_loss(verts: torch.Tensor, edges: torch.Tensor, edges_to_mesh_idx: torch.Tensor,
                     num_meshes: int, target_length: float = 0.0) -> torch.Tensor:
    """``1/N sum_n 1/E_n sum_{e in n} (|v_a - v_b| - target_length)^2``.

    Args:
        verts: ``(V, 3) float`` packed vertices.
        edges: ``(E, 2) int64`` packed edges.
        edges_to_mesh_idx: ``(E,) int64`` mesh of each edge.
        num_meshes: N.
        target_length: the preferred edge length.

    Returns:
        ``() float`` loss.
    """
    check_shapes(verts=(verts, ("V", 3)), edges=(edges, ("E", 2)), edges_to_mesh_idx=(edges_to_mesh_idx, ("E",)))
    counts = torch.bincount(edges_to_mesh_idx, minlength=num_meshes).to(verts.dtype)
    w = 1.0 / counts[edges_to_mesh_idx]
    ev = gather_rows(verts, edges)
    loss = ((ev[:, 0] - ev[:, 1]).norm(dim=1, p=2) - target_length) ** 2
    return (loss * w).sum() / num_meshes


def mesh_edge_loss(meshes, target_length: float = 0.0) -> torch.Tensor:
    """Edge length regulariser (PyTorch3D's ``mesh_edge_loss``).

    ``loss = 1/N sum_n mean_{e in mesh n} (|e| - target_length)^2``.

    Args:
        meshes: ``Meshes`` batch of N meshes.
        target_length: preferred edge length.

    Returns:
        ``() float`` loss (a ``(1,)`` zero for an empty batch, as PyTorch3D).
    """
    if meshes.isempty():
        return _zero_loss(meshes)
    return edge_length_loss(meshes.verts_packed(), meshes.edges_packed(), meshes.edges_packed_to_mesh_idx(),
                            len(meshes), target_length)


# ---------------------------------------------------------------------------- normal consistency
def normal_consistency_loss(verts: torch.Tensor, pairs: FacePairs, num_meshes: int) -> torch.Tensor:
    """``1/N sum_n mean_{pairs in n} (1 - cos(n_a, n_b))`` over faces a, b sharing an edge.

    With the shared edge ``(v0, v1)``: ``n_a = (v1 - v0) x (o_a - v0)``, ``n_b = -(v1 - v0) x (o_b - v0)``
    (the second face lies on the other side of the edge, hence the sign), as PyTorch3D.

    Args:
        verts: ``(V, 3) float`` packed vertices.
        pairs: :class:`FacePairs` from :func:`face_pairs`.
        num_meshes: N.

    Returns:
        ``() float`` loss.
    """
    check_shape("verts", verts, ("V", 3), dtype="float")
    if pairs.v0.shape[0] == 0:
        return torch.tensor([0.0], dtype=torch.float32, device=verts.device, requires_grad=True)
    p0 = gather_rows(verts, pairs.v0)
    d = gather_rows(verts, pairs.v1) - p0
    na = torch.linalg.cross(d, gather_rows(verts, pairs.opp_a) - p0, dim=1)
    nb = -torch.linalg.cross(d, gather_rows(verts, pairs.opp_b) - p0, dim=1)
    loss = 1 - F.cosine_similarity(na, nb, dim=1)
    counts = torch.bincount(pairs.mesh, minlength=num_meshes).to(verts.dtype)
    return (loss / counts[pairs.mesh]).sum() / num_meshes


def _mesh_face_pairs(meshes) -> FacePairs:
    return _topo_cached(meshes, "face_pairs", lambda: face_pairs(
        meshes.faces_packed(), meshes.edges_packed(), meshes.faces_packed_to_edges_packed(),
        meshes.faces_packed_to_mesh_idx()))


def mesh_normal_consistency(meshes) -> torch.Tensor:
    """Normal consistency regulariser (PyTorch3D's ``mesh_normal_consistency``).

    ``loss = 1/N sum_n mean_{(a, b) sharing an edge in mesh n} (1 - cos(n_a, n_b))``.

    Args:
        meshes: ``Meshes`` batch of N meshes.

    Returns:
        ``() float`` loss (a ``(1,)`` zero for an empty batch or when no two faces share an edge).
    """
    if meshes.isempty():
        return _zero_loss(meshes)
    return normal_consistency_loss(meshes.verts_packed(), _mesh_face_pairs(meshes), len(meshes))


# ----------------------------------------------------------------------------- Laplacian smoothing
class UniformLaplacianTopology(NamedTuple):
    """Precomputed indices of the uniform Laplacian: ``(L v)_i = inv_deg_i * sum_{j~i} v_j - v_i``.

    Attributes:
        src: ``(2E,) int64`` neighbour vertex of each directed edge.
        dst: ``(2E,) int64`` receiving vertex.
        inv_deg: ``(V,) float`` 1/degree (0 for isolated vertices).
    """

    src: torch.Tensor
    dst: torch.Tensor
    inv_deg: torch.Tensor


def uniform_laplacian_topology(edges: torch.Tensor, num_verts: int, dtype=torch.float32) -> UniformLaplacianTopology:
    """Directed edge lists and inverse degrees of the uniform Laplacian of ``edges (E, 2) int64``."""
    src = torch.cat([edges[:, 1], edges[:, 0]])
    dst = torch.cat([edges[:, 0], edges[:, 1]])
    deg = torch.bincount(dst, minlength=num_verts).to(dtype)
    inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1), torch.zeros_like(deg))
    return UniformLaplacianTopology(src, dst, inv)


def uniform_laplacian_apply(verts: torch.Tensor, topo: UniformLaplacianTopology) -> torch.Tensor:
    """``(V, 3)``: ``L v`` with ``L = D^-1 A - I`` (differentiable w.r.t. ``verts``)."""
    acc = torch.zeros_like(verts).index_add(0, topo.dst, gather_rows(verts, topo.src))
    return acc * topo.inv_deg.to(verts.dtype)[:, None] - verts


def laplacian_smoothing_loss(verts: torch.Tensor, faces: torch.Tensor, verts_to_mesh_idx: torch.Tensor,
                             num_meshes: int, method: Literal["uniform", "cot", "cotcurv"] = "uniform",
                             edges: torch.Tensor | None = None,
                             uniform_topology: UniformLaplacianTopology | None = None) -> torch.Tensor:
    """``1/N sum_n mean_{i in mesh n} |(L v)_i|`` (PyTorch3D's per-mesh weighting).

    - uniform: ``L v = D^-1 A v - v``;
    - cot: ``L v = (L_cot v) / rowsum(L_cot) - v``;
    - cotcurv: ``L v = (L_cot v - rowsum(L_cot) v) / (4 A_i)`` (mean-curvature normal, Desbrun et al. 1999).

    The Laplacian matrix is a constant (no gradient through the cotangent weights), as in PyTorch3D.

    Args:
        verts: ``(V, 3) float`` packed vertices.
        faces: ``(F, 3) int64`` packed faces.
        verts_to_mesh_idx: ``(V,) int64`` mesh of each vertex.
        num_meshes: N.
        method: "uniform", "cot" or "cotcurv".
        edges: ``(E, 2) int64`` unique edges (computed from ``faces`` when None; uniform only).
        uniform_topology: precomputed :func:`uniform_laplacian_topology` (uniform only).

    Returns:
        ``() float`` loss.
    """
    check_choice("method", method, ("uniform", "cot", "cotcurv"))
    check_shapes(verts=(verts, ("V", 3)), faces=(faces, ("F", 3)), verts_to_mesh_idx=(verts_to_mesh_idx, ("V",)))
    counts = torch.bincount(verts_to_mesh_idx, minlength=num_meshes).to(verts.dtype)
    w = 1.0 / counts[verts_to_mesh_idx]
    if method == "uniform":
        if uniform_topology is None:
            if edges is None:
                edges, _ = faces_to_edges(faces, verts.shape[0])
            uniform_topology = uniform_laplacian_topology(edges, verts.shape[0], verts.dtype)
        lv = uniform_laplacian_apply(verts, uniform_topology)
    else:
        with torch.no_grad():
            lap, inv_areas = cot_laplacian(verts.detach(), faces)
            row = torch.sparse.sum(lap, dim=1).to_dense().view(-1, 1)
        if method == "cot":
            norm_w = torch.where(row > 0, 1.0 / torch.where(row > 0, row, torch.ones_like(row)), row)
            lv = torch.sparse.mm(lap, verts) * norm_w - verts
        else:
            lv = (torch.sparse.mm(lap, verts) - row * verts) * (0.25 * inv_areas)
    return (lv.norm(dim=1) * w).sum() / num_meshes


def mesh_laplacian_smoothing(meshes, method: Literal["uniform", "cot", "cotcurv"] = "uniform") -> torch.Tensor:
    """Laplacian smoothing regulariser (PyTorch3D's ``mesh_laplacian_smoothing``).

    ``loss = 1/N sum_n mean_{i in mesh n} |(L v)_i|`` with the uniform, cotangent or cotangent-curvature
    Laplacian (see :func:`laplacian_smoothing_loss`; Nealen et al. 2006, Desbrun et al. 1999).

    Args:
        meshes: ``Meshes`` batch of N meshes.
        method: "uniform", "cot" or "cotcurv".

    Returns:
        ``() float`` loss (a ``(1,)`` zero for an empty batch).

    Raises:
        ValueError: unknown ``method``.
    """
    check_choice("method", method, ("uniform", "cot", "cotcurv"))
    if meshes.isempty():
        return _zero_loss(meshes)
    verts = meshes.verts_packed()
    topo = None
    if method == "uniform":
        topo = _topo_cached(meshes, "uniform_laplacian", lambda: uniform_laplacian_topology(
            meshes.edges_packed(), verts.shape[0], verts.dtype))
    return laplacian_smoothing_loss(verts, meshes.faces_packed(), meshes.verts_packed_to_mesh_idx(), len(meshes),
                                    method, uniform_topology=topo)
