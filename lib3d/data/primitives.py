"""Closed triangle meshes made by lib3d itself (the embedded defaults for the book's small OBJ files).

Each function returns ``(verts (V, 3) float32, faces (F, 3) int64)``: faces wound counter-clockwise seen
from outside (outward normals by the right-hand rule), centred at the origin.

- ``cube``: the book's ``cube.obj`` (unit cube, 8 vertices, 12 faces);
- ``octahedron``: the book's ``diamond.obj`` shape (square equator, taller apexes), 6 vertices, 8 faces;
- ``dodecahedron``: the book's ``dodecahedron.obj`` (20 vertices, 36 faces);
- ``tetrahedron``: 4 vertices, 4 faces.
"""

from __future__ import annotations

import math

import torch


def _orient_outward(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Flip faces whose normal points towards the centroid (convex, origin-centred shapes)."""
    tri = verts[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    inward = (n * tri.mean(1)).sum(1) < 0
    return torch.where(inward[:, None], faces[:, [0, 2, 1]], faces)


def cube(size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned cube of side ``size`` centred at the origin: 8 vertices, 12 faces."""
    h = size / 2
    verts = torch.tensor([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], dtype=torch.float32)
    # index = 4 * (x > 0) + 2 * (y > 0) + (z > 0); two triangles per side
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    faces = torch.tensor([t for a, b, c, d in quads for t in ([a, b, c], [a, c, d])], dtype=torch.int64)
    return verts, _orient_outward(verts, faces)


def octahedron(half_width: float = 0.45, half_height: float = 0.78) -> tuple[torch.Tensor, torch.Tensor]:
    """A "diamond": square equator of half-width ``half_width`` and apexes at ``+-half_height`` on z."""
    w, h = half_width, half_height
    verts = torch.tensor([[0, 0, h], [w, w, 0], [w, -w, 0], [-w, -w, 0], [-w, w, 0], [0, 0, -h]],
                         dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1],
                          [5, 2, 1], [5, 3, 2], [5, 4, 3], [5, 1, 4]], dtype=torch.int64)
    return verts, _orient_outward(verts, faces)


def tetrahedron(radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular tetrahedron inscribed in a sphere of ``radius``: 4 vertices, 4 faces."""
    verts = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float32)
    verts = verts * (radius / math.sqrt(3))
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], dtype=torch.int64)
    return verts, _orient_outward(verts, faces)


def dodecahedron(radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular dodecahedron inscribed in a sphere of ``radius``: 20 vertices, 12 pentagons as 36 triangles.

    Each pentagon is the 5 vertices nearest one of the 12 face directions (the icosahedron's vertices),
    ordered by angle around that direction and fan-triangulated.
    """
    phi = (1 + math.sqrt(5)) / 2
    ip = 1 / phi
    pts = [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    for a in (-1, 1):
        for b in (-1, 1):
            pts += [[0, a * ip, b * phi], [a * ip, b * phi, 0], [a * phi, 0, b * ip]]
    verts = torch.tensor(pts, dtype=torch.float64)
    dirs = []
    for a in (-1, 1):
        for b in (-1, 1):
            dirs += [[0, a * phi, b], [b, 0, a * phi], [a * phi, b, 0]]
    dirs = torch.nn.functional.normalize(torch.tensor(dirs, dtype=torch.float64), dim=1)  # (12, 3)
    ring = (dirs @ verts.T).topk(5, dim=1).indices  # (12, 5) the pentagon of each face direction
    p = verts[ring]  # (12, 5, 3)
    c = p.mean(1, keepdim=True)
    e1 = torch.nn.functional.normalize(p[:, 0] - c[:, 0], dim=1)
    e2 = torch.linalg.cross(dirs, e1, dim=1)
    ang = torch.atan2(((p - c) * e2[:, None]).sum(-1), ((p - c) * e1[:, None]).sum(-1))
    ring = ring.gather(1, ang.argsort(dim=1))  # counter-clockwise around the outward direction
    faces = torch.cat([ring[:, [0, i, i + 1]] for i in range(1, 4)], 0)
    verts = (verts / math.sqrt(3) * radius).float()
    return verts, _orient_outward(verts, faces)
