"""Procedural textured meshes: lib3d's embedded default scenes (no downloads).

Dimension names (see ``lib3d.data``): V vertices, F faces, T UV vertices, H/W texture size.

``toy()`` builds a small four-legged toy animal ("a cow-like toy") out of deformed UV spheres: a body,
a head turned to one side with two ears of different sizes and a snout, four legs and a tail curled to the
side. The texture is painted procedurally by evaluating a 3D colour function (spots, a coloured stripe on
one flank only, eyes, hooves) at the surface point of every texel of a texture atlas, so the mesh carries a
real UV map (``TexturesUV``) or, on request, the same colours per vertex (``TexturesVertex``).

The parts interpenetrate (the legs, head and tail enter the body); hard and soft shading handle that (the
textured camera fit converges on it with the book's soft Phong colour term).

It is deterministic, about the size of the book's cow (its longest half-extent is ~1.3 units, origin near
the centre), and asymmetric left/right, front/back and up/down, so that every view determines its pose
(chapter 4's camera fitting) and a NeRF trained on it has texture detail to recover.

Conventions: faces counter-clockwise seen from outside (outward normals); +Y up; like the book's cow the
toy faces -Z (its head points along -Z, so ``look_at_view_transform(2.7, 0, 180)`` sees it from the front
and ``PointLights(location=[[0, 0, -3]])`` lights its face); the blue stripe is on its +X flank.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch

from lib3d._checks import check_choice

__all__ = ["ToyPart", "default_scene", "load_mesh", "toy", "toy_parts"]


class ToyPart(NamedTuple):
    """One ellipsoidal part: centre (3,), radii (3,), rotation about +Y then +Z in degrees, grid size."""

    name: str
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    yaw: float = 0.0
    roll: float = 0.0
    rings: int = 12
    segments: int = 16


def toy_parts() -> tuple[ToyPart, ...]:
    """The parts of ``toy()`` in its modelling frame (head along +X; ``toy()`` turns it to face -Z)."""
    return (
        ToyPart("body", (0.0, 0.1, 0.0), (0.85, 0.42, 0.40), 0.0, 4.0, 24, 40),
        ToyPart("head", (0.98, 0.42, 0.08), (0.30, 0.26, 0.24), 25.0, -15.0, 16, 24),
        ToyPart("snout", (1.22, 0.33, 0.19), (0.14, 0.12, 0.14), 25.0, 0.0, 10, 16),
        ToyPart("ear_l", (0.92, 0.68, 0.24), (0.07, 0.14, 0.05), 25.0, -30.0, 8, 12),
        ToyPart("ear_r", (0.88, 0.64, -0.14), (0.05, 0.09, 0.04), 25.0, 20.0, 8, 12),
        ToyPart("leg_fl", (0.52, -0.45, 0.22), (0.11, 0.36, 0.11), 0.0, 0.0, 10, 14),
        ToyPart("leg_fr", (0.55, -0.45, -0.22), (0.11, 0.36, 0.11), 0.0, 8.0, 10, 14),
        ToyPart("leg_bl", (-0.55, -0.45, 0.22), (0.12, 0.36, 0.12), 0.0, 0.0, 10, 14),
        ToyPart("leg_br", (-0.52, -0.45, -0.22), (0.12, 0.36, 0.12), 0.0, -6.0, 10, 14),
        ToyPart("tail", (-1.0, 0.36, 0.08), (0.30, 0.06, 0.06), -30.0, -37.0, 8, 14),
    )


def _rotation(yaw: float, roll: float, dtype) -> torch.Tensor:
    """Row-vector rotation (3, 3): roll about +Z, then yaw about +Y (``p @ R``)."""
    y, r = math.radians(yaw), math.radians(roll)
    rz = torch.tensor([[math.cos(r), math.sin(r), 0.0], [-math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]],
                      dtype=dtype)
    ry = torch.tensor([[math.cos(y), 0.0, -math.sin(y)], [0.0, 1.0, 0.0], [math.sin(y), 0.0, math.cos(y)]],
                      dtype=dtype)
    return rz @ ry


def _unit_sphere(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Point on the unit sphere for UV in [0, 1]^2: v = 1 at the +Y pole, u = 0.5 faces +X."""
    theta = (1.0 - v) * math.pi
    phi = u * 2.0 * math.pi
    return torch.stack([-torch.sin(theta) * torch.cos(phi), torch.cos(theta), -torch.sin(theta) * torch.sin(phi)], -1)


def _sphere_topology(rings: int, segs: int):
    """Geometry faces over (pole, rings-1 rings of segs, pole) and UV faces over a (rings+1, segs+1) grid.

    Returns (geometry uv params (V, 2), faces (F, 3), uv grid (T, 2), faces_uvs (F, 3)).
    """
    # Geometry vertices: index 0 north pole, then ring i (1..rings-1) segment j, then the south pole.
    i = torch.arange(1, rings)
    j = torch.arange(segs)
    ring_uv = torch.stack(torch.meshgrid(j / segs, 1.0 - i / rings, indexing="xy"), -1).reshape(-1, 2)
    geo_uv = torch.cat([torch.tensor([[0.0, 1.0]]), ring_uv, torch.tensor([[0.0, 0.0]])], 0)
    south = 1 + (rings - 1) * segs

    def gv(ii, jj):  # geometry index of ring ii (0..rings), segment jj
        jj = jj % segs
        return torch.where(ii == 0, torch.zeros_like(jj), torch.where(ii == rings, torch.full_like(jj, south),
                                                                       1 + (ii - 1) * segs + jj))

    def tv(ii, jj):  # uv-grid index
        return ii * (segs + 1) + jj

    ii, jj = torch.meshgrid(torch.arange(rings), torch.arange(segs), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    a, b, c, d = (ii, jj), (ii + 1, jj), (ii + 1, jj + 1), (ii, jj + 1)
    tri1 = [a, b, c]
    tri2 = [a, c, d]
    faces, fuv = [], []
    for tri, keep in ((tri1, ii < rings - 1), (tri2, ii > 0)):  # drop the degenerate triangles at the poles
        faces.append(torch.stack([gv(*p) for p in tri], -1)[keep])
        fuv.append(torch.stack([tv(*p) for p in tri], -1)[keep])
    gi, gj = torch.meshgrid(torch.arange(rings + 1), torch.arange(segs + 1), indexing="ij")
    uv_grid = torch.stack([gj / segs, 1.0 - gi / rings], -1).reshape(-1, 2).float()
    return geo_uv.float(), torch.cat(faces), uv_grid, torch.cat(fuv)


def _part_points(part: ToyPart, uv: torch.Tensor, dtype) -> torch.Tensor:
    p = _unit_sphere(uv[:, 0].to(dtype), uv[:, 1].to(dtype)) * torch.tensor(part.radii, dtype=dtype)
    return p @ _rotation(part.yaw, part.roll, dtype) + torch.tensor(part.center, dtype=dtype)


def _paint(name: str, p: torch.Tensor) -> torch.Tensor:
    """Colour (…, 3) in [0, 1] of part ``name`` at world points ``p`` (…, 3)."""
    x, y, z = p.unbind(-1)
    ones = torch.ones_like(x)
    if name == "body":
        base = torch.stack([0.93 * ones, 0.87 * ones, 0.74 * ones], -1)
        noise = (torch.sin(5.3 * x + 1.3) * torch.sin(4.1 * y + 0.7) * torch.sin(6.1 * z + 2.1)
                 + 0.5 * torch.sin(8.7 * x - 6.9 * z + 3.1 * y))
        spot = torch.sigmoid((noise - 0.35) * 25.0)[..., None]
        col = base * (1 - spot) + torch.tensor([0.42, 0.24, 0.12], dtype=p.dtype) * spot
        stripe = (torch.sigmoid((z - 0.2) * 30.0) * torch.exp(-((x - 0.1) / 0.12) ** 2))[..., None]
        return col * (1 - stripe) + torch.tensor([0.15, 0.35, 0.85], dtype=p.dtype) * stripe
    if name == "head":
        col = torch.stack([0.80 * ones, 0.62 * ones, 0.42 * ones], -1)
        for ez in (0.22, -0.08):  # eyes on the front of the turned head
            d = torch.sqrt((x - 1.16) ** 2 + (y - 0.52) ** 2 + (z - ez) ** 2)
            eye = torch.sigmoid((0.065 - d) * 120.0)[..., None]
            col = col * (1 - eye) + 0.05 * eye
        return col
    if name == "snout":
        return torch.stack([0.95 * ones, 0.60 * ones, 0.65 * ones], -1)
    if name.startswith("ear"):
        return torch.stack([0.90 * ones, 0.45 * ones, 0.50 * ones], -1) if name == "ear_l" else \
            torch.stack([0.55 * ones, 0.35 * ones, 0.25 * ones], -1)
    if name.startswith("leg"):
        leg = torch.stack([0.62 * ones, 0.50 * ones, 0.40 * ones], -1)
        hoof = torch.sigmoid((-0.68 - y) * 40.0)[..., None]
        return leg * (1 - hoof) + 0.08 * hoof
    if name == "tail":
        tip = torch.sigmoid((-1.1 - x) * 30.0)[..., None]
        return torch.tensor([0.42, 0.24, 0.12], dtype=p.dtype) * (1 - tip) + 0.05 * tip
    raise ValueError(f"unknown part {name!r}")


def toy(texture: Literal["uv", "vertex"] = "uv", texture_size: int = 512, device=None,
        dtype: torch.dtype = torch.float32):
    """The embedded default textured mesh: a procedural, asymmetric toy animal.

    Args:
        texture: ``"uv"`` for a painted UV texture atlas (``TexturesUV``, sampled bilinearly like the
            book's cow) or ``"vertex"`` for the same colours per vertex (``TexturesVertex``).
        texture_size: side of the square texture atlas in pixels (``"uv"`` only).
        device: device of the returned mesh.
        dtype: float dtype of vertices and texture.

    Returns:
        ``Meshes`` of batch 1 with ~5,000 faces and textures.

    Example:
        >>> mesh = toy()                                   # the default scene
        >>> mesh.verts_packed().shape, len(mesh)
    """
    from lib3d.structures.meshes import Meshes
    from lib3d.structures.textures import TexturesUV, TexturesVertex

    check_choice("texture", texture, ("uv", "vertex"))
    if not isinstance(texture_size, int) or texture_size < 16:
        raise ValueError(f"texture_size must be an int >= 16, got {texture_size!r}")
    verts, faces, vcols, uvs, fuvs = _toy_geometry(texture_size)
    if texture == "vertex":
        textures = TexturesVertex([vcols.to(dtype, copy=True)])
    else:  # copies: the cached tensors must not be shared with the caller
        textures = TexturesUV(maps=[_toy_atlas(texture_size).to(dtype, copy=True)], faces_uvs=[fuvs.clone()],
                              verts_uvs=[uvs.to(dtype, copy=True)])
    mesh = Meshes([verts.to(dtype, copy=True)], [faces.clone()], textures=textures)
    return mesh.to(device) if device is not None else mesh


def _atlas_layout(texture_size: int) -> tuple[int, float, float]:
    """(tiles per row, tile size in UV, margin in UV) of the texture atlas."""
    cols = math.ceil(math.sqrt(len(toy_parts())))  # the parts in a grid of tiles
    return cols, 1.0 / cols, 2.0 / texture_size  # the margin keeps bilinear samples inside each tile


@functools.lru_cache(maxsize=4)
def _toy_geometry(texture_size: int):
    """Cached (verts (V, 3) f64, faces (F, 3), vertex colours (V, 3) f64, uvs (T, 2), faces_uvs (F, 3))."""
    parts = toy_parts()
    cols, tile, margin = _atlas_layout(texture_size)
    verts, faces, vcols, uvs, fuvs = [], [], [], [], []
    nv = nt = 0
    for k, part in enumerate(parts):  # loop over the parts
        geo_uv, f, uv_grid, fuv = _sphere_topology(part.rings, part.segments)
        pts = _part_points(part, geo_uv, torch.float64)
        # Orient outward: the signed volume of the part must be positive.
        tri = pts[f]
        vol = (torch.linalg.cross(tri[:, 0], tri[:, 1], dim=-1) * tri[:, 2]).sum()
        if vol < 0:
            f, fuv = f[:, [0, 2, 1]], fuv[:, [0, 2, 1]]
        row, col = divmod(k, cols)
        u0, v0 = col * tile, 1.0 - (row + 1) * tile
        atlas_uv = torch.stack([u0 + margin + uv_grid[:, 0] * (tile - 2 * margin),
                                v0 + margin + uv_grid[:, 1] * (tile - 2 * margin)], -1)
        verts.append(pts)
        vcols.append(_paint(part.name, pts))
        faces.append(f + nv)
        uvs.append(atlas_uv)
        fuvs.append(fuv + nt)
        nv += pts.shape[0]
        nt += atlas_uv.shape[0]
    v = torch.cat(verts)
    v = torch.stack([v[:, 2], v[:, 1], -v[:, 0]], -1)  # +X -> -Z: the toy faces -Z like the book's cow
    return v, torch.cat(faces), torch.cat(vcols).clamp(0, 1), torch.cat(uvs), torch.cat(fuvs)


@functools.lru_cache(maxsize=2)
def _toy_atlas(texture_size: int) -> torch.Tensor:
    cols, _, margin = _atlas_layout(texture_size)
    return _paint_atlas(toy_parts(), cols, texture_size, margin)


def _paint_atlas(parts, cols: int, size: int, margin: float) -> torch.Tensor:
    """(H, W, 3) texture atlas: each texel's colour is the part's colour at the surface point it maps to."""
    tile = 1.0 / cols
    # Texel centres in UV; image row 0 is v = 1 (PyTorch3D's convention: v runs bottom to top).
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    u_all, v_all = c, 1.0 - c
    col_of = torch.floor(u_all * cols).long()  # tile column of each image column
    row_of = torch.floor((1.0 - v_all) * cols).long()  # tile row of each image row
    img = torch.zeros(size, size, 3, dtype=torch.float64)
    for k, part in enumerate(parts):  # loop over the parts (tiles)
        row, col = divmod(k, cols)
        rows_idx = torch.nonzero(row_of == row).squeeze(1)
        cols_idx = torch.nonzero(col_of == col).squeeze(1)
        u0, v0 = col * tile, 1.0 - (row + 1) * tile
        lu = ((u_all[cols_idx] - u0 - margin) / (tile - 2 * margin)).clamp(0, 1)
        lv = ((v_all[rows_idx] - v0 - margin) / (tile - 2 * margin)).clamp(0, 1)
        gu, gv = torch.meshgrid(lu, lv, indexing="xy")  # (rows, cols)
        pts = _part_points(part, torch.stack([gu.reshape(-1), gv.reshape(-1)], -1), torch.float64)
        block = _paint(part.name, pts).reshape(len(rows_idx), len(cols_idx), 3)
        img[rows_idx[0]:rows_idx[-1] + 1, cols_idx[0]:cols_idx[-1] + 1] = block
    return img.clamp(0, 1).float()


def default_scene(device=None):
    """The embedded default scene of the render, fit_camera and NeRF jobs: ``toy()`` with its UV texture."""
    return toy(device=device)


def load_mesh(path=None, device=None, color=(0.8, 0.8, 0.8)):
    """A mesh for the jobs: an ``.obj`` (with its texture) or ``.ply`` file, or the embedded toy.

    Args:
        path: ``.obj`` / ``.ply`` file, or None for ``default_scene()``.
        device: device of the mesh.
        color: (3,) vertex colour given to meshes without a texture (PLY, untextured OBJ).

    Returns:
        ``Meshes`` of batch 1 with textures.

    Raises:
        ValueError: for another file suffix.
    """
    from pathlib import Path

    from lib3d.structures.meshes import Meshes
    from lib3d.structures.textures import TexturesVertex

    if path is None:
        return default_scene(device=device)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        from lib3d.io import load_objs_as_meshes

        mesh = load_objs_as_meshes([path], device=device)
    elif suffix == ".ply":
        from lib3d.io import load_ply

        verts, faces = load_ply(path)
        mesh = Meshes([verts], [faces])
        mesh = mesh.to(device) if device is not None else mesh
    else:
        raise ValueError(f"path must be an .obj or .ply file, got {str(path)!r}")
    if mesh.textures is None:
        v = mesh.verts_packed()
        mesh = Meshes([v], [mesh.faces_packed()],
                      textures=TexturesVertex([torch.tensor(color, dtype=v.dtype, device=v.device).expand_as(v)]))
    return mesh
