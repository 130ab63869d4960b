"""Procedural textured meshes: lib3d's embedded default scenes (no downloads).

Dimension names (see ``lib3d.data``): V vertices, F faces, T UV vertices, H/W texture size.

``toy()`` builds a small four-legged toy animal ("a cow-like toy") as ONE closed, smooth, star-shaped
surface: a UV sphere whose radius in each direction is an ellipsoidal body plus bumps (a head turned to
one side with a snout, two ears of different sizes, four stubby legs, a tail curled to the side),
``r(d) = r_body(d) + sum_i A_i exp(-(angle(d, d_i) / w_i)^p_i)``. One surface means no interpenetrating
parts, so soft rasterization sees no depth ties between differently coloured surfaces (which would make
``softmax_rgb_blend``'s depth weights, and the gradients of a textured loss, explode). The texture is
painted procedurally by evaluating a 3D colour function (spots, a blue stripe on one flank only, eyes, a
pink snout, dark hooves) at the surface point of every texel of a latitude-longitude UV map, so the mesh
carries a real UV map (``TexturesUV``) or, on request, the same colours per vertex (``TexturesVertex``).

It is deterministic, about the size of the book's cow, and asymmetric left/right, front/back and
up/down, so that every view determines its pose (chapter 4's camera fitting) and a NeRF trained on it
has texture detail to recover.

Conventions: faces counter-clockwise seen from outside (outward normals); +Y up; like the book's cow the
toy faces -Z (its head points along -Z, so ``look_at_view_transform(2.7, 0, 180)`` sees it from the front
and ``PointLights(location=[[0, 0, -3]])`` lights its face); the blue stripe is on its +X flank.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from lib3d._checks import check_choice

__all__ = ["ToyBump", "default_scene", "load_mesh", "toy", "toy_bumps"]

BODY_RADII = (0.82, 0.42, 0.40)
"""Semi-axes (x: length, y: height, z: width) of the ellipsoidal body in the modelling frame."""

RINGS, SEGMENTS = 56, 88
"""Latitude rings and longitude segments of the sphere grid (about 9,800 faces)."""


class ToyBump(NamedTuple):
    """One bump of the radius function, in the modelling frame (head along +X).

    ``A exp(-(angle(d, direction) / width)^power)`` is added to the radius in direction ``d``.
    """

    name: str
    direction: tuple[float, float, float]
    amplitude: float
    width: float
    power: float = 2.0


def toy_bumps() -> tuple[ToyBump, ...]:
    """The bumps of ``toy()``: head, snout, ears, legs, tail (modelling frame; ``toy()`` turns +X to -Z)."""
    return (
        ToyBump("head", (1.0, 0.55, 0.18), 0.50, 0.34, 4.0),
        ToyBump("snout", (1.0, 0.38, 0.30), 0.16, 0.14, 2.0),
        ToyBump("ear_l", (0.55, 0.80, 0.38), 0.30, 0.12, 2.0),
        ToyBump("ear_r", (0.60, 0.80, -0.12), 0.16, 0.10, 2.0),
        ToyBump("leg_fl", (0.50, -0.86, 0.30), 0.52, 0.20, 4.0),
        ToyBump("leg_fr", (0.56, -0.86, -0.30), 0.46, 0.20, 4.0),
        ToyBump("leg_bl", (-0.55, -0.86, 0.30), 0.50, 0.21, 4.0),
        ToyBump("leg_br", (-0.50, -0.86, -0.30), 0.52, 0.21, 4.0),
        ToyBump("tail", (-1.0, 0.55, 0.40), 0.45, 0.13, 2.0),
    )


def _unit_sphere(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Direction on the unit sphere for UV in [0, 1]^2: v = 1 at the +Y pole, u = 0.5 faces +X."""
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
    faces, fuv = [], []
    for tri, keep in (([a, b, c], ii < rings - 1), ([a, c, d], ii > 0)):  # drop degenerate pole triangles
        faces.append(torch.stack([gv(*p) for p in tri], -1)[keep])
        fuv.append(torch.stack([tv(*p) for p in tri], -1)[keep])
    gi, gj = torch.meshgrid(torch.arange(rings + 1), torch.arange(segs + 1), indexing="ij")
    uv_grid = torch.stack([gj / segs, 1.0 - gi / rings], -1).reshape(-1, 2).float()
    return geo_uv.float(), torch.cat(faces), uv_grid, torch.cat(fuv)


def _surface(uv: torch.Tensor) -> torch.Tensor:
    """(..., 3) float64 surface points of the toy (modelling frame) for UV parameters (..., 2)."""
    d = _unit_sphere(uv[..., 0].double(), uv[..., 1].double())
    a, b, c = BODY_RADII
    r = 1.0 / torch.sqrt((d[..., 0] / a) ** 2 + (d[..., 1] / b) ** 2 + (d[..., 2] / c) ** 2)
    for bump in toy_bumps():  # loop over the bumps
        axis = torch.tensor(bump.direction, dtype=torch.float64)
        cos = (d * (axis / axis.norm())).sum(-1).clamp(-1.0, 1.0)
        r = r + bump.amplitude * torch.exp(-(torch.acos(cos) / bump.width) ** bump.power)
    return d * r[..., None] + torch.tensor([0.0, 0.05, 0.0], dtype=torch.float64)


def _paint(p: torch.Tensor) -> torch.Tensor:
    """Colour (..., 3) in [0, 1] at surface points ``p`` (..., 3) of the modelling frame."""
    x, y, z = p.unbind(-1)

    def rgb(r, g, b):
        return torch.tensor([r, g, b], dtype=p.dtype)

    def mix(col, other, w):
        return col * (1 - w[..., None]) + other * w[..., None]

    # Body: cream with brown spots and a blue stripe on the +Z flank only.
    noise = (torch.sin(5.3 * x + 1.3) * torch.sin(4.1 * y + 0.7) * torch.sin(6.1 * z + 2.1)
             + 0.5 * torch.sin(8.7 * x - 6.9 * z + 3.1 * y))
    col = mix(rgb(0.93, 0.87, 0.74).expand(p.shape), rgb(0.42, 0.24, 0.12), torch.sigmoid((noise - 0.35) * 25.0))
    col = mix(col, rgb(0.15, 0.35, 0.85), torch.sigmoid((z - 0.2) * 30.0) * torch.exp(-((x - 0.05) / 0.12) ** 2))
    # Legs: grey-brown with dark hooves.
    col = mix(col, rgb(0.62, 0.50, 0.40), torch.sigmoid((-0.42 - y) * 30.0))
    col = mix(col, rgb(0.08, 0.08, 0.08), torch.sigmoid((-0.78 - y) * 40.0))
    # Head: tan, pink snout, two dark eyes.
    col = mix(col, rgb(0.80, 0.62, 0.42), torch.sigmoid((x - 0.78) * 25.0) * torch.sigmoid((y - 0.05) * 20.0))
    col = mix(col, rgb(0.95, 0.60, 0.65), torch.sigmoid((x + 0.25 * z - 1.22) * 30.0))
    for ez in (0.30, 0.0):
        d = torch.sqrt((x - 1.05) ** 2 + (y - 0.62) ** 2 + (z - ez) ** 2)
        col = mix(col, rgb(0.05, 0.05, 0.05), torch.sigmoid((0.07 - d) * 120.0))
    # Left ear pink; tail brown with a dark tip.
    col = mix(col, rgb(0.90, 0.45, 0.50), torch.sigmoid((y - 0.62) * 30.0) * torch.sigmoid((z - 0.15) * 30.0)
              * torch.sigmoid((0.95 - x) * 30.0))
    tail = torch.sigmoid((-0.85 - x) * 30.0) * torch.sigmoid((y - 0.2) * 20.0)
    col = mix(col, rgb(0.42, 0.24, 0.12), tail)
    col = mix(col, rgb(0.05, 0.05, 0.05), tail * torch.sigmoid((-1.05 - x) * 30.0))
    return col.clamp(0, 1)


def _to_world(p: torch.Tensor) -> torch.Tensor:
    """Modelling frame (head +X) -> the toy's frame (head -Z): (x, y, z) -> (z, y, -x), a proper rotation."""
    return torch.stack([p[..., 2], p[..., 1], -p[..., 0]], -1)


def toy(texture: Literal["uv", "vertex"] = "uv", texture_size: int = 512, device=None,
        dtype: torch.dtype = torch.float32):
    """The embedded default textured mesh: a procedural, asymmetric toy animal (one closed surface).

    Args:
        texture: ``"uv"`` for a painted latitude-longitude UV texture (``TexturesUV``, sampled bilinearly
            like the book's cow) or ``"vertex"`` for the same colours per vertex (``TexturesVertex``).
        texture_size: height of the texture (its width is twice that) in pixels (``"uv"`` only).
        device: device of the returned mesh.
        dtype: float dtype of vertices and texture.

    Returns:
        ``Meshes`` of batch 1 with about 9,800 faces and textures.

    Example:
        >>> mesh = toy()                                   # the default scene
        >>> mesh.verts_packed().shape, len(mesh)
    """
    from lib3d.structures.meshes import Meshes
    from lib3d.structures.textures import TexturesUV, TexturesVertex

    check_choice("texture", texture, ("uv", "vertex"))
    if not isinstance(texture_size, int) or texture_size < 16:
        raise ValueError(f"texture_size must be an int >= 16, got {texture_size!r}")
    verts, faces, vcols, uvs, fuvs = _toy_geometry()
    if texture == "vertex":
        textures = TexturesVertex([vcols.to(dtype, copy=True)])
    else:  # copies: the cached tensors must not be shared with the caller
        textures = TexturesUV(maps=[_toy_texture(texture_size).to(dtype, copy=True)], faces_uvs=[fuvs.clone()],
                              verts_uvs=[uvs.to(dtype, copy=True)])
    mesh = Meshes([verts.to(dtype, copy=True)], [faces.clone()], textures=textures)
    return mesh.to(device) if device is not None else mesh


@functools.lru_cache(maxsize=1)
def _toy_geometry():
    """Cached (verts (V, 3) f64, faces (F, 3), vertex colours (V, 3) f64, uvs (T, 2), faces_uvs (F, 3))."""
    geo_uv, faces, uv_grid, fuv = _sphere_topology(RINGS, SEGMENTS)
    pts = _surface(geo_uv)
    tri = pts[faces]
    vol = (torch.linalg.cross(tri[:, 0], tri[:, 1], dim=-1) * tri[:, 2]).sum()
    if vol < 0:  # orient outward: positive signed volume
        faces, fuv = faces[:, [0, 2, 1]], fuv[:, [0, 2, 1]]
    return _to_world(pts), faces, _paint(pts), uv_grid, fuv


@functools.lru_cache(maxsize=2)
def _toy_texture(size: int) -> torch.Tensor:
    """(size, 2 size, 3) texture: each texel's colour is the colour of the surface point it maps to."""
    # Texel centres in UV; image row 0 is v = 1 (PyTorch3D's convention: v runs bottom to top).
    u = (torch.arange(2 * size, dtype=torch.float64) + 0.5) / (2 * size)
    v = 1.0 - (torch.arange(size, dtype=torch.float64) + 0.5) / size
    gu, gv = torch.meshgrid(u, v, indexing="xy")  # (H, W)
    return _paint(_surface(torch.stack([gu, gv], -1))).float()


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
