"""Loop-free midpoint subdivision of triangle meshes (PyTorch3D's ``SubdivideMeshes``).

Every face ``(v0, v1, v2)`` becomes four: ``(v0, m01, m20)``, ``(v1, m12, m01)``, ``(v2, m20, m12)`` and
``(m12, m20, m01)`` where ``m_ab`` is the midpoint vertex of edge ab (appended after the original vertices
in packed-edge order); the new faces keep the orientation of the old one. Optional vertex features are
averaged the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from lib3d._checks import check_shapes
from lib3d.ops.packed import gather_rows


def subdivide_faces(faces: torch.Tensor, face_to_edge: torch.Tensor, num_verts: int) -> torch.Tensor:
    """``(4F, 3) int64`` faces of the subdivided mesh; midpoint of edge e is vertex ``num_verts + e``."""
    check_shapes(faces=(faces, ("F", 3)), face_to_edge=(face_to_edge, ("F", 3)))
    f0, f1, f2 = faces.unbind(1)
    e = face_to_edge + num_verts
    e0, e1, e2 = e.unbind(1)  # e_k is the edge opposite vertex k
    return torch.cat([torch.stack([f0, e2, e1], 1), torch.stack([f1, e0, e2], 1),
                      torch.stack([f2, e1, e0], 1), torch.stack([e0, e1, e2], 1)], 0)


def subdivide_verts(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``(V + E, D)``: the vertices (or per-vertex features) followed by the edge midpoints."""
    return torch.cat([verts, 0.5 * gather_rows(verts, edges).sum(1)], 0)


def subdivide_meshes(meshes, feats: torch.Tensor | None = None):
    """Subdivide every face into four (PyTorch3D's ``SubdivideMeshes()(meshes, feats)``).

    Args:
        meshes: ``Meshes`` batch of N meshes.
        feats: optional ``(sum V, D) float`` packed per-vertex features, averaged onto the midpoints.

    Returns:
        The subdivided ``Meshes`` (differentiable w.r.t. the vertices), and the new packed features
        ``(sum V', D)`` when ``feats`` is given.
    """
    from lib3d.structures import Meshes

    verts = meshes.verts_packed()
    edges = meshes.edges_packed()
    f2e = meshes.faces_packed_to_edges_packed()
    faces = meshes.faces_packed()
    nv, nf, ne = meshes.num_verts_per_mesh(), meshes.num_faces_per_mesh(), meshes.num_edges_per_mesh()
    # Renumber per mesh: mesh n keeps its V_n vertices, then its E_n midpoints.
    v_first = meshes.mesh_to_verts_packed_first_idx()
    e_first = meshes.mesh_to_edges_packed_first_idx()
    new_first = v_first + e_first  # first new packed vertex of each mesh
    v2m = meshes.verts_packed_to_mesh_idx()
    e2m = meshes.edges_packed_to_mesh_idx()
    vert_new = torch.arange(verts.shape[0], device=verts.device) - v_first[v2m] + new_first[v2m]
    edge_new = torch.arange(edges.shape[0], device=verts.device) - e_first[e2m] + new_first[e2m] + nv[e2m]
    lookup = torch.cat([vert_new, edge_new])
    new_faces = lookup[subdivide_faces(faces, f2e, verts.shape[0])]
    total = verts.shape[0] + edges.shape[0]
    order = torch.empty(total, dtype=torch.int64, device=verts.device)
    order[lookup] = torch.arange(total, device=verts.device)
    new_verts = subdivide_verts(verts, edges)[order]
    # Regroup faces by mesh: the four children of mesh n's faces.
    f2m = meshes.faces_packed_to_mesh_idx().repeat(4)
    fo = torch.argsort(f2m, stable=True)
    new_faces = new_faces[fo]
    counts_v = (nv + ne).tolist()
    counts_f = (4 * nf).tolist()
    firsts = torch.tensor([0] + counts_v[:-1], device=verts.device).cumsum(0)
    f_local = new_faces - torch.repeat_interleave(firsts, 4 * nf, output_size=new_faces.shape[0])[:, None]
    out = Meshes(verts=list(torch.split(new_verts, counts_v)), faces=list(torch.split(f_local, counts_f)))
    if feats is None:
        return out
    check_shapes(feats=(feats, (verts.shape[0], None)))
    return out, subdivide_verts(feats, edges)[order]


class SubdivideMeshes(nn.Module):
    """Module form of :func:`subdivide_meshes` (PyTorch3D's ``SubdivideMeshes``).

    Args:
        meshes: optional fixed topology (kept for signature compatibility; the topology is always taken
            from the meshes passed to ``forward``).
    """

    def __init__(self, meshes=None):
        super().__init__()
        self.meshes = meshes

    def forward(self, meshes, feats: torch.Tensor | None = None):
        """Subdivide ``meshes`` (and ``feats``); see :func:`subdivide_meshes`."""
        return subdivide_meshes(meshes, feats)
