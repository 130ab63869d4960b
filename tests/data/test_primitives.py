"""Primitive meshes: closed, outward-oriented, the expected sizes."""

import pytest
import torch

from lib3d.data import primitives
from lib3d.structures import Meshes


@pytest.mark.parametrize("name,nv,nf", [("cube", 8, 12), ("octahedron", 6, 8), ("dodecahedron", 20, 36),
                                        ("tetrahedron", 4, 4)])
def test_closed_and_outward(name, nv, nf):
    verts, faces = getattr(primitives, name)()
    assert verts.shape == (nv, 3) and faces.shape == (nf, 3)
    m = Meshes([verts], [faces])
    # closed 2-manifold: every edge shared by exactly two faces -> E = 3F/2, Euler characteristic 2
    assert m.num_edges_per_mesh().item() * 2 == 3 * nf
    assert nv - m.num_edges_per_mesh().item() + nf == 2
    # outward: signed volume positive (divergence theorem)
    tri = verts[faces]
    vol = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=1)).sum() / 6
    assert vol > 0
    assert ((m.faces_normals_packed() * tri.mean(1)).sum(1) > 0).all()


def test_dodecahedron_is_regular():
    verts, faces = primitives.dodecahedron()
    assert torch.allclose(verts.norm(dim=1), torch.ones(20), atol=1e-6)
    m = Meshes([verts], [faces])
    # 12 pentagons of equal area -> three triangle areas repeat 12 times each
    areas = m.faces_areas_packed().view(3, 12).sum(0)
    assert torch.allclose(areas, areas[0].expand(12), atol=1e-5)
