"""Icospheres: the regular icosahedron subdivided ``level`` times, vertices projected onto the unit sphere.

Level L has ``10 * 4^L + 2`` vertices and ``20 * 4^L`` faces (PyTorch3D's ``ico_sphere``; level 0 uses
PyTorch3D's rounded icosahedron coordinates, unnormalised).
"""

from __future__ import annotations

import torch

from lib3d.ops.mesh_losses import faces_to_edges
from lib3d.ops.subdivide import subdivide_faces, subdivide_verts

_ICO_VERTS0 = [
    [-0.5257, 0.8507, 0.0000], [0.5257, 0.8507, 0.0000], [-0.5257, -0.8507, 0.0000],
    [0.5257, -0.8507, 0.0000], [0.0000, -0.5257, 0.8507], [0.0000, 0.5257, 0.8507],
    [0.0000, -0.5257, -0.8507], [0.0000, 0.5257, -0.8507], [0.8507, 0.0000, -0.5257],
    [0.8507, 0.0000, 0.5257], [-0.8507, 0.0000, -0.5257], [-0.8507, 0.0000, 0.5257],
]
_ICO_FACES0 = [
    [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
    [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11],
    [6, 2, 10], [8, 6, 7], [9, 8, 1],
]


def ico_sphere_verts_faces(level: int = 0, device=None, dtype: torch.dtype = torch.float32):
    """``(verts (V, 3) float, faces (F, 3) int64)`` of the level-``level`` icosphere (outward faces)."""
    if not isinstance(level, int) or level < 0:
        raise ValueError(f"level must be a non-negative int, got {level!r}")
    verts = torch.tensor(_ICO_VERTS0, dtype=dtype, device=device)
    faces = torch.tensor(_ICO_FACES0, dtype=torch.int64, device=device)
    for _ in range(level):
        edges, f2e = faces_to_edges(faces, verts.shape[0])
        faces = subdivide_faces(faces, f2e, verts.shape[0])
        verts = subdivide_verts(verts, edges)
        verts = verts / verts.norm(dim=1, keepdim=True)
    return verts, faces


def ico_sphere(level: int = 0, device=None):
    """A unit icosphere as a one-mesh ``Meshes`` (PyTorch3D's ``ico_sphere``).

    Args:
        level: subdivision level (0: the icosahedron, 12 vertices and 20 faces; each level x4 faces).
        device: device of the mesh.

    Returns:
        ``Meshes`` with one mesh of ``10 * 4^level + 2`` vertices and ``20 * 4^level`` faces.

    Raises:
        ValueError: negative level.
    """
    from lib3d.structures import Meshes

    verts, faces = ico_sphere_verts_faces(level, device=device)
    return Meshes(verts=[verts], faces=[faces])
