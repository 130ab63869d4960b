"""An embedded CLEVR-like dataset, built and rendered by lib3d itself (GIRAFFE's default data, book ch. 7).

Each scene is a grey floor with 1 to ``max_objects`` primitives (cube, sphere, cylinder) in CLEVR's eight
colours and two sizes, at random non-overlapping floor positions and rotations about the vertical axis,
lit by a point light and an ambient term, seen from a camera at a random elevation and azimuth looking at
the floor's centre. Scenes are rendered in batches with lib3d's mesh rasterizer and Phong shading
(supersampled 2x and averaged), and the ground truth is kept: the visible mask of every object (from the
rasterizer's face indices), its position, shape, colour and size.

The first call with a given set of parameters renders and caches the result under
``~/.cache/lib3d/clevr/`` (one safetensors file named by the parameters); later calls read the file.
Everything is made from ``seed`` by ``torch.Generator`` s: the same parameters give the same scenes.

Dimension names: N scenes; K object slots (``max_objects``; unused slots have shape -1); H = W image size.

World convention: PyTorch3D's (y up, the floor is the plane y = 0, cameras by
``look_at_view_transform(dist, elev, azim)``); object positions are the centres of their bases.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["CLEVR_COLORS", "CLEVR_SHAPES", "ClevrScenes", "cylinder", "load_clevr", "make_clevr_scenes"]

# CLEVR's palette (gray, red, blue, green, brown, purple, cyan, yellow), in [0, 1].
CLEVR_COLORS = ((87, 87, 87), (173, 35, 35), (42, 75, 215), (29, 105, 20), (129, 74, 25), (129, 38, 192),
                (41, 208, 208), (255, 238, 51))
CLEVR_SHAPES = ("cube", "sphere", "cylinder")
_SIZES = (0.35, 0.6)  # half-extents of the small and large objects (world units)
_VERSION = 1  # bump when the scene recipe changes (cached files carry it in their name)


class ClevrScenes(NamedTuple):
    """Rendered scenes and their ground truth.

    Attributes:
        images: ``(N, H, W, 3)`` uint8.
        masks: ``(N, K, H, W)`` bool, visible pixels of each object (all False for unused slots).
        shapes: ``(N, K)`` int64 index into ``CLEVR_SHAPES`` (-1: no object).
        colors: ``(N, K)`` int64 index into ``CLEVR_COLORS`` (-1: no object).
        sizes: ``(N, K)`` float32 half-extent (0: no object).
        positions: ``(N, K, 3)`` float32 base centres on the floor (y = 0).
        rotations: ``(N, K)`` float32 rotation about the vertical axis (radians).
        counts: ``(N,)`` int64 number of objects.
        elevation: ``(N,)`` float32 camera elevation (degrees); azimuth: ``(N,)`` float32 (degrees).
    """

    images: torch.Tensor
    masks: torch.Tensor
    shapes: torch.Tensor
    colors: torch.Tensor
    sizes: torch.Tensor
    positions: torch.Tensor
    rotations: torch.Tensor
    counts: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor

    def image_tensor(self) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 images in [0, 1] (the GAN side's layout)."""
        return self.images.permute(0, 3, 1, 2).float() / 255.0


def cylinder(segments: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed cylinder of radius 1 from y = -1 to y = 1 (outward faces).

    Returns:
        ``(verts (2 segments + 2, 3) float32, faces (4 segments, 3) int64)``.
    """
    if segments < 3:
        raise ValueError(f"segments must be >= 3, got {segments}")
    a = torch.arange(segments, dtype=torch.float32) * (2 * math.pi / segments)
    ring = torch.stack((a.cos(), torch.zeros_like(a), -a.sin()), dim=-1)
    bottom, top = ring + torch.tensor([0.0, -1.0, 0.0]), ring + torch.tensor([0.0, 1.0, 0.0])
    verts = torch.cat((bottom, top, torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])))
    i = torch.arange(segments)
    j = (i + 1) % segments
    cb, ct = 2 * segments, 2 * segments + 1
    side1 = torch.stack((i, j, i + segments), dim=-1)
    side2 = torch.stack((j, j + segments, i + segments), dim=-1)
    caps_b = torch.stack((torch.full_like(i, cb), j, i), dim=-1)
    caps_t = torch.stack((torch.full_like(i, ct), i + segments, j + segments), dim=-1)
    faces = torch.cat((side1, side2, caps_b, caps_t))
    # orient every face outwards (convex shape centred at the origin)
    tri = verts[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    inward = (n * tri.mean(1)).sum(1) < 0
    return verts, torch.where(inward[:, None], faces[:, [0, 2, 1]], faces)


def _unit_shapes() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Unit-half-extent meshes of the three shapes, base at y = -1 (cube side 2, sphere radius 1, cylinder)."""
    from lib3d.data.primitives import cube
    from lib3d.ops import ico_sphere

    sphere = ico_sphere(2)
    return [cube(2.0), (sphere.verts_list()[0], sphere.faces_list()[0]), cylinder(24)]


def _place_objects(n: int, k: int, sizes: torch.Tensor, extent: float, gap: float,
                   generator: torch.Generator, tries: int = 64) -> torch.Tensor:
    """Floor positions ``(n, k, 2)`` (x, z): slot by slot, each redrawn until it clears the earlier ones."""
    pos = torch.zeros(n, k, 2)
    for slot in range(k):  # loop over object slots (k <= a handful); scenes are vectorised
        cand = (torch.rand(n, 2, generator=generator) * 2 - 1) * extent
        for _ in range(tries):
            if slot == 0:
                break
            d = (cand[:, None] - pos[:, :slot]).norm(dim=-1)
            clash = (d < sizes[:, :slot] + sizes[:, slot, None] + gap).any(-1)
            if not bool(clash.any()):
                break
            redraw = (torch.rand(n, 2, generator=generator) * 2 - 1) * extent
            cand = torch.where(clash[:, None], redraw, cand)
        pos[:, slot] = cand
    return pos


def make_clevr_scenes(n_scenes: int, image_size: int = 64, max_objects: int = 3, min_objects: int = 1,
                      seed: int = 0, batch_size: int = 32, supersample: int = 2, device=None) -> ClevrScenes:
    """Build and render ``n_scenes`` CLEVR-like scenes (no caching; see :func:`load_clevr`).

    Args:
        n_scenes: N.
        image_size: H = W.
        max_objects: K, most objects per scene.
        min_objects: fewest objects per scene.
        seed: seed of everything random.
        batch_size: scenes per rasterizer call.
        supersample: render at this multiple of ``image_size`` and average down (anti-aliasing).
        device: where to render.

    Returns:
        ``ClevrScenes`` (on the CPU).
    """
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform
    from lib3d.render import (
        BlendParams,
        Materials,
        PointLights,
        RasterizationSettings,
        rasterize_world_meshes,
        shade,
    )
    from lib3d.structures import Meshes, TexturesVertex

    if n_scenes < 1 or image_size < 8 or not 1 <= min_objects <= max_objects:
        raise ValueError(f"need n_scenes >= 1, image_size >= 8 and 1 <= min_objects <= max_objects, got "
                         f"{n_scenes}, {image_size}, {min_objects}, {max_objects}")
    g = torch.Generator().manual_seed(seed)
    n, k = n_scenes, max_objects
    # 1. scene content
    counts = torch.randint(min_objects, max_objects + 1, (n,), generator=g)
    present = torch.arange(k)[None] < counts[:, None]
    shapes = torch.randint(0, 3, (n, k), generator=g)
    colors = torch.randint(0, len(CLEVR_COLORS), (n, k), generator=g)
    sizes = torch.tensor(_SIZES)[torch.randint(0, 2, (n, k), generator=g)]
    rot = torch.rand(n, k, generator=g) * (2 * math.pi)
    xz = _place_objects(n, k, sizes, 2.2, 0.15, g)
    elev = 25.0 + 20.0 * torch.rand(n, generator=g)
    azim = 360.0 * torch.rand(n, generator=g)
    shapes, colors = torch.where(present, shapes, -1), torch.where(present, colors, -1)
    sizes = torch.where(present, sizes, torch.zeros_like(sizes))
    positions = torch.stack((xz[..., 0], torch.zeros_like(xz[..., 0]), xz[..., 1]), dim=-1) * present[..., None]

    # 2. meshes: floor + objects of each scene, one mesh per scene with per-vertex colours and face owners
    unit = _unit_shapes()
    palette = torch.tensor(CLEVR_COLORS, dtype=torch.float32) / 255.0
    floor_v = torch.tensor([[-8.0, 0.0, -8.0], [8.0, 0.0, -8.0], [8.0, 0.0, 8.0], [-8.0, 0.0, 8.0]])
    floor_f = torch.tensor([[0, 2, 1], [0, 3, 2]])
    floor_c = torch.full((4, 3), 0.55)
    dev = torch.device("cpu") if device is None else torch.device(device)
    size_hi = image_size * supersample
    settings = RasterizationSettings(image_size=size_hi, blur_radius=0.0, faces_per_pixel=1)
    lights = PointLights(location=[[3.0, 8.0, 4.0]], ambient_color=[[0.45, 0.45, 0.45]],
                         diffuse_color=[[0.6, 0.6, 0.6]], specular_color=[[0.25, 0.25, 0.25]], device=dev)
    materials = Materials(shininess=32.0, device=dev)
    blend = BlendParams(background_color=(0.75, 0.75, 0.78))
    images, masks = [], []
    for start in range(0, n, batch_size):  # loop over render batches of scenes
        idx = range(start, min(start + batch_size, n))
        verts, faces, cols, owners = [], [], [], []
        for i in idx:  # loop over the scenes of one batch (building each scene's mesh)
            v_list, f_list, c_list, o_list, offset = [floor_v], [floor_f], [floor_c], [torch.full((2,), -1)], 4
            for j in range(int(counts[i])):  # loop over the handful of objects of one scene
                uv, uf = unit[int(shapes[i, j])]
                s, a = float(sizes[i, j]), float(rot[i, j])
                ry = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
                v = (uv * s + torch.tensor([0.0, s, 0.0])) @ ry.T + positions[i, j]
                v_list.append(v)
                f_list.append(uf + offset)
                c_list.append(palette[int(colors[i, j])].expand(len(uv), 3))
                o_list.append(torch.full((len(uf),), j))
                offset += len(uv)
            verts.append(torch.cat(v_list).to(dev))
            faces.append(torch.cat(f_list).to(dev))
            cols.append(torch.cat(c_list).to(dev))
            owners.append(torch.cat(o_list))
        meshes = Meshes(verts=verts, faces=faces, textures=TexturesVertex(verts_features=cols))
        sel = torch.tensor(list(idx))
        R, T = look_at_view_transform(dist=7.5, elev=elev[sel], azim=azim[sel])
        cams = FoVPerspectiveCameras(R=R.to(dev), T=T.to(dev), fov=38.0, device=dev)
        with torch.no_grad():
            frags = rasterize_world_meshes(meshes, cams, settings)
            rgb = shade(frags, meshes, "hard_phong", cameras=cams, lights=lights, materials=materials,
                        blend_params=blend)[..., :3].clamp(0, 1)
        owner = torch.cat(owners).to(dev)
        p2f = frags.pix_to_face[..., 0]
        obj = torch.where(p2f >= 0, owner[p2f.clamp_min(0)], torch.full_like(p2f, -1))  # (B, Hs, Ws)
        onehot = (obj[:, None] == torch.arange(k, device=dev)[None, :, None, None]).float()
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample)
        cover = F.avg_pool2d(onehot, supersample)
        images.append((rgb.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu())
        masks.append((cover > 0.5).cpu())
    return ClevrScenes(torch.cat(images), torch.cat(masks), shapes, colors, sizes.float(), positions.float(),
                       torch.where(present, rot, torch.zeros_like(rot)).float(), counts, elev.float(), azim.float())


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.path.expanduser("~")) / ".cache" / "lib3d" / "clevr"


def load_clevr(n_scenes: int = 4096, image_size: int = 64, max_objects: int = 3, min_objects: int = 1,
               seed: int = 0, cache_dir: str | os.PathLike | None = None, device=None) -> ClevrScenes:
    """The CLEVR-like scenes of :func:`make_clevr_scenes`, rendered once and cached.

    Args:
        n_scenes, image_size, max_objects, min_objects, seed: see :func:`make_clevr_scenes`.
        cache_dir: where the cache lives (default ``~/.cache/lib3d/clevr``).
        device: where to render on a cache miss.

    Returns:
        ``ClevrScenes`` (CPU tensors).
    """
    from safetensors.torch import load_file, save_file

    params = {"n": n_scenes, "size": image_size, "kmax": max_objects, "kmin": min_objects, "seed": seed, "v": _VERSION}
    tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = _cache_dir(cache_dir) / f"clevr_{n_scenes}x{image_size}_k{min_objects}-{max_objects}_s{seed}_{tag}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))
            return ClevrScenes(**{name: t[name] for name in ClevrScenes._fields})
        except Exception:  # noqa: BLE001, S110 - a damaged cache file is rebuilt
            pass
    scenes = make_clevr_scenes(n_scenes, image_size, max_objects, min_objects, seed, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({name: getattr(scenes, name).contiguous() for name in ClevrScenes._fields}, str(tmp),
              metadata={k: str(v) for k, v in params.items()})
    os.replace(tmp, path)
    return scenes
