"""An embedded Pix3D-like dataset: procedural furniture in simple rooms, rendered by lib3d (Mesh R-CNN, ch. 10).

Dimension names: N images; S image side (square images); G objects of an image; V/F mesh vertices/faces;
Q voxel points of an object.

Objects of five categories (``CATEGORIES``: chair, table, sofa, bed, shelf) are assembled from axis-aligned
cuboids with random proportions and per-part colours; an *instance* is one such draw. Instances are split
by instance into train and held-out pools (no held-out instance appears in a training image). An image puts
1 to ``max_objects`` instances on the floor of a room (floor and back wall of random colours) at random
positions and headings and renders them with flat Lambertian shading through :func:`lib3d.render.
rasterize_meshes`.

Camera (PyTorch3D's view space, the Pix3D convention of Mesh R-CNN): the camera sits at the origin looking
down +Z with +X left and +Y up; focal length ``f`` pixels; the continuous pixel coordinate of a point is
``u = S / 2 - f X / Z``, ``v = S / 2 - f Y / Z`` (pixel ``j`` spans ``[j, j + 1]``). The per-object camera
``K = (f, px, py)`` is stored as ``px = py = S / 2 + 1`` so that Mesh R-CNN's box transform
(``u = (2 px - 1 - px) - f X / Z``, :mod:`lib3d.detect.mesh_head`) is exactly this projection.

Annotations per object: class, visible mask, box (the mask's extent, XYXY pixels), mesh in camera space,
occupied-voxel points in camera space (a lattice filling its parts), and ``dz = (z_max - z_min) / z_centre
* f`` (Mesh R-CNN's z target). Objects with fewer than ``min_visible_pixels`` visible pixels are left out
of the annotations (they stay in the image).

Generation is deterministic from the seed and cached under ``~/.cache/lib3d/furniture/`` (one ``.pt`` file
per set of arguments, written to a temporary name and renamed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = [
    "CATEGORIES",
    "FurnitureData",
    "FurnitureImage",
    "furniture_instance",
    "load_furniture",
    "make_furniture",
    "render_scene",
]

CATEGORIES = ("chair", "table", "sofa", "bed", "shelf")
"""Category names; the class index is the position in this tuple."""

_VERSION = 1  # bump when the generator changes (part of the cache key)

# Unit cube corners (x, y, z in {0, 1}) and its 12 outward triangles.
_CUBE_V = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=torch.float32)
_CUBE_F = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], dtype=torch.int64)


class Part(NamedTuple):
    """An axis-aligned cuboid of an object: ``lo``/``hi`` corners (object frame, metres), RGB colour."""

    lo: tuple
    hi: tuple
    color: tuple


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _color(g: torch.Generator, base=None, spread: float = 0.15) -> tuple:
    if base is None:
        return tuple(float(c) for c in torch.rand(3, generator=g) * 0.8 + 0.1)
    return tuple(min(1.0, max(0.0, b + _u(g, -spread, spread))) for b in base)


def _box(cx, y0, cz, sx, sy, sz, color) -> Part:
    return Part((cx - sx / 2, y0, cz - sz / 2), (cx + sx / 2, y0 + sy, cz + sz / 2), color)


def furniture_instance(category: str, generator: torch.Generator) -> list[Part]:
    """Parts of one random instance of ``category`` (object frame: +Y up, standing on y = 0, centred in x/z,
    front towards -Z)."""
    g = generator
    main = _color(g)
    second = _color(g)
    parts: list[Part] = []
    if category == "chair":
        w, d, hs, t = _u(g, 0.4, 0.6), _u(g, 0.4, 0.6), _u(g, 0.4, 0.55), _u(g, 0.04, 0.08)
        leg = _u(g, 0.03, 0.06)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(_box(sx * (w - leg) / 2, 0.0, sz * (d - leg) / 2, leg, hs, leg, _color(g, second, 0.05)))
        parts.append(_box(0.0, hs, 0.0, w, t, d, main))
        hb = _u(g, 0.35, 0.6)
        parts.append(_box(0.0, hs + t, (d - t) / 2, w, hb, t, _color(g, main, 0.05)))
    elif category == "table":
        w, d, h, t = _u(g, 0.8, 1.5), _u(g, 0.5, 0.9), _u(g, 0.6, 0.8), _u(g, 0.03, 0.08)
        leg = _u(g, 0.04, 0.09)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(_box(sx * (w - leg) / 2 * 0.95, 0.0, sz * (d - leg) / 2 * 0.95, leg, h - t, leg,
                                  _color(g, second, 0.05)))
        parts.append(_box(0.0, h - t, 0.0, w, t, d, main))
    elif category == "sofa":
        w, d, hb = _u(g, 1.4, 2.1), _u(g, 0.7, 0.95), _u(g, 0.35, 0.45)
        parts.append(_box(0.0, 0.0, 0.0, w, hb, d, main))
        back_t, back_h = _u(g, 0.15, 0.25), _u(g, 0.35, 0.5)
        parts.append(_box(0.0, hb, (d - back_t) / 2, w, back_h, back_t, _color(g, main, 0.05)))
        arm_w, arm_h = _u(g, 0.12, 0.22), _u(g, 0.15, 0.28)
        for sx in (-1, 1):
            parts.append(_box(sx * (w - arm_w) / 2, hb, 0.0, arm_w, arm_h, d, _color(g, main, 0.05)))
    elif category == "bed":
        w, length, hf = _u(g, 1.0, 1.7), _u(g, 1.9, 2.2), _u(g, 0.25, 0.35)
        parts.append(_box(0.0, 0.0, 0.0, w, hf, length, second))
        hm = _u(g, 0.15, 0.25)
        parts.append(_box(0.0, hf, -0.03, w * 0.96, hm, length * 0.94, main))
        hh = _u(g, 0.5, 0.9)
        parts.append(_box(0.0, 0.0, (length - 0.08) / 2, w, hh + hf, 0.08, _color(g, second, 0.05)))
    elif category == "shelf":
        w, d, h = _u(g, 0.6, 1.1), _u(g, 0.25, 0.4), _u(g, 1.2, 1.9)
        t = _u(g, 0.025, 0.05)
        for sx in (-1, 1):
            parts.append(_box(sx * (w - t) / 2, 0.0, 0.0, t, h, d, main))
        parts.append(_box(0.0, 0.0, (d - t) / 2, w - 2 * t, h, t, _color(g, main, 0.1)))
        n = int(torch.randint(3, 6, (), generator=g))
        for i in range(n):
            parts.append(_box(0.0, i * (h - t) / (n - 1), 0.0, w - 2 * t, t, d, _color(g, main, 0.05)))
    else:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    return parts


def _parts_mesh(parts: list[Part]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(verts (8 P, 3), faces (12 P, 3), face colours (12 P, 3)) of the cuboids."""
    lo = torch.tensor([p.lo for p in parts])
    hi = torch.tensor([p.hi for p in parts])
    verts = (lo[:, None] + _CUBE_V[None] * (hi - lo)[:, None]).reshape(-1, 3)
    faces = (_CUBE_F[None] + 8 * torch.arange(len(parts))[:, None, None]).reshape(-1, 3)
    colors = torch.tensor([p.color for p in parts]).repeat_interleave(12, 0)
    return verts, faces, colors


def _parts_points(parts: list[Part], spacing: float) -> torch.Tensor:
    """Lattice points filling the cuboids (at least one per axis), object frame."""
    pts = []
    for p in parts:
        axes = []
        for a in range(3):
            n = max(1, int(round((p.hi[a] - p.lo[a]) / spacing)))
            axes.append(p.lo[a] + (torch.arange(n, dtype=torch.float32) + 0.5) * (p.hi[a] - p.lo[a]) / n)
        pts.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3))
    return torch.cat(pts)


class FurnitureImage(NamedTuple):
    """One rendered image and its annotations.

    Attributes:
        image: ``(3, S, S) uint8`` RGB.
        K: ``(3,) float`` camera ``(f, px, py)`` (see the module docstring).
        boxes: ``(G, 4) float`` XYXY pixels.
        classes: ``(G,) int64`` indices into ``CATEGORIES``.
        masks: ``(G, S, S) bool`` visible masks.
        meshes: G ``(verts (V, 3) float, faces (F, 3) int64)`` in camera space.
        voxel_points: ``(G, Q, 3) float`` occupied-voxel points in camera space (padded).
        voxel_lengths: ``(G,) int64``.
        dz: ``(G,) float`` Mesh R-CNN's relative depth extent times f.
        instances: ``(G,) int64`` instance ids (``category * instances_per_category + i``).
    """

    image: torch.Tensor
    K: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    meshes: list
    voxel_points: torch.Tensor
    voxel_lengths: torch.Tensor
    dz: torch.Tensor
    instances: torch.Tensor


@dataclasses.dataclass(frozen=True)
class FurnitureData:
    """The generated dataset: ``train`` and ``test`` lists of :class:`FurnitureImage` (instances disjoint)."""

    train: list
    test: list
    image_size: int
    focal: float
    categories: tuple = CATEGORIES


def _rot_y(yaw: float) -> torch.Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def render_scene(verts: list, faces: list, face_colors: list, image_size: int, focal: float,
                 light_dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-shaded renders of N camera-space triangle soups in one rasterizer call.

    Args:
        verts: N ``(V_n, 3) float`` camera-space vertices (Z > 0).
        faces: N ``(F_n, 3) int64``.
        face_colors: N ``(F_n, 3) float`` albedos.
        image_size: S.
        focal: f in pixels.
        light_dirs: ``(N, 3) float`` unit directions towards the light (camera space).

    Returns:
        ``(rgb (N, S, S, 3) float, face (N, S, S) int64)``: colour (0 where no face is hit) and the index
        of the visible face within its own soup (-1: none).
    """
    from lib3d.render import rasterize_meshes
    from lib3d.structures import Meshes

    s = image_size
    ndc = [torch.stack([v[:, 0] / v[:, 2] * focal / (s / 2), v[:, 1] / v[:, 2] * focal / (s / 2), v[:, 2]], 1)
           for v in verts]
    frags = rasterize_meshes(Meshes(verts=ndc, faces=faces), image_size=s, faces_per_pixel=1)
    p2f = frags.pix_to_face[..., 0]
    counts = torch.tensor([f.shape[0] for f in faces])
    first = torch.cumsum(counts, 0) - counts
    vp = torch.cat([v for v in verts])
    offsets = torch.cumsum(torch.tensor([v.shape[0] for v in verts]), 0) - torch.tensor([v.shape[0] for v in verts])
    fp = torch.cat([f + o for f, o in zip(faces, offsets.tolist())])
    tri = vp[fp]
    normals = torch.nn.functional.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=1)
    normals = torch.where(((normals * tri.mean(1)).sum(1, keepdim=True) > 0), -normals, normals)  # double-sided
    mesh_of_face = torch.repeat_interleave(torch.arange(len(faces)), counts)
    shade = 0.35 + 0.65 * (normals * light_dirs[mesh_of_face]).sum(1).clamp(min=0)
    col = torch.cat(list(face_colors)) * shade[:, None]
    hit = p2f >= 0
    rgb = torch.where(hit[..., None], col[p2f.clamp(min=0)], torch.zeros(3))
    local = torch.where(hit, p2f - first[:, None, None], p2f)
    return rgb, local


def _make_scene(pool: list, generator: torch.Generator, image_size: int, focal: float, max_objects: int,
                spacing: float) -> dict:
    """Draw one scene: the objects' camera-space geometry, their faces for rendering, the room's colours."""
    g = generator
    n_obj = int(torch.randint(1, max_objects + 1, (), generator=g))
    cam_h = _u(g, 1.0, 1.5)
    pitch = math.radians(_u(g, 8.0, 18.0))  # camera tilted down: points are rotated up about X
    cp, sp = math.cos(pitch), math.sin(pitch)
    tilt = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    verts_all, faces_all, colors_all, owner = [], [], [], []
    objects = []
    nv = 0
    placed: list[tuple[float, float, float]] = []
    for k in range(n_obj):
        inst_id, cls, parts = pool[int(torch.randint(0, len(pool), (), generator=g))]
        v, f, c = _parts_mesh(parts)
        pts = _parts_points(parts, spacing)
        radius = float(torch.cat([v[:, [0, 2]].abs()]).max())
        for _ in range(20):  # a few tries to avoid heavy overlaps
            x = _u(g, -1.6, 1.6)
            z = _u(g, 3.2, 6.5)
            if all(math.hypot(x - px, z - pz) > 0.7 * (radius + pr) for px, pz, pr in placed):
                break
        placed.append((x, z, radius))
        rot = _rot_y(_u(g, -math.pi, math.pi) if cls != 4 else _u(g, -0.6, 0.6))  # shelves face the camera
        world = lambda p: (p @ rot.T + torch.tensor([x, -cam_h, z])) @ tilt.T
        vc, pc = world(v), world(pts)
        verts_all.append(vc)
        faces_all.append(f + nv)
        colors_all.append(c)
        owner.append(torch.full((f.shape[0],), k))
        nv += v.shape[0]
        objects.append((inst_id, cls, vc, f, pc))
    # Room: floor (y = -cam_h) and a back wall at z = wall_z (room frame), coloured analytically per pixel.
    floor_c, wall_c = torch.tensor(_color(g)), torch.tensor(_color(g))
    wall_z = _u(g, 8.0, 12.0)
    verts = torch.cat(verts_all)
    faces = torch.cat(faces_all)
    colors = torch.cat(colors_all)
    owner = torch.cat(owner)
    light = torch.nn.functional.normalize(torch.tensor([_u(g, -0.6, 0.6), 1.0, -_u(g, 0.3, 1.0)]), dim=0)
    return {"objects": objects, "verts": verts, "faces": faces, "colors": colors, "owner": owner, "light": light,
            "tilt": tilt, "cam_h": cam_h, "wall_z": wall_z, "floor_c": floor_c, "wall_c": wall_c}


def _room_colors(scene: dict, image_size: int, focal: float) -> torch.Tensor:
    """``(S, S, 3)`` colour of the floor / back wall seen through each pixel (analytic ray casting)."""
    c = (torch.arange(image_size, dtype=torch.float32) + 0.5 - image_size / 2) / focal
    rays = torch.stack([-c[None, :].expand(image_size, -1), -c[:, None].expand(-1, image_size),
                        torch.ones(image_size, image_size)], -1) @ scene["tilt"]  # room frame (tilt^T d)
    t_floor = torch.where(rays[..., 1] < 0, -scene["cam_h"] / rays[..., 1].clamp(max=-1e-6),
                          torch.full_like(rays[..., 1], 1e9))
    on_floor = (t_floor * rays[..., 2]) < scene["wall_z"]
    return torch.where(on_floor[..., None], scene["floor_c"] * (0.35 + 0.65 * float(scene["light"][1])),
                       scene["wall_c"] * 0.7)


def _annotate(scene: dict, rgb: torch.Tensor, p2f: torch.Tensor, image_size: int, focal: float,
              min_visible: int) -> FurnitureImage:
    objects, owner = scene["objects"], scene["owner"]
    rgb = torch.where((p2f >= 0)[..., None], rgb, _room_colors(scene, image_size, focal))
    obj_map = torch.where(p2f >= 0, owner[p2f.clamp(min=0)], torch.full_like(p2f, -1))
    px = image_size / 2 + 1.0
    ann = {k: [] for k in ("boxes", "classes", "masks", "meshes", "points", "dz", "inst")}
    for k, (inst_id, cls, vc, f, pc) in enumerate(objects):
        m = obj_map == k
        if int(m.sum()) < min_visible:
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        ann["boxes"].append(torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32))
        ann["classes"].append(cls)
        ann["masks"].append(m)
        ann["meshes"].append((vc, f))
        ann["points"].append(pc)
        z0, z1 = float(vc[:, 2].min()), float(vc[:, 2].max())
        ann["dz"].append((z1 - z0) / ((z1 + z0) / 2) * focal)
        ann["inst"].append(inst_id)
    g_n = len(ann["boxes"])
    q = max([p.shape[0] for p in ann["points"]] + [1])
    pts = torch.zeros(g_n, q, 3)
    for i, p in enumerate(ann["points"]):
        pts[i, : p.shape[0]] = p
    image = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 1).contiguous()
    return FurnitureImage(
        image=image, K=torch.tensor([focal, px, px]),
        boxes=torch.stack(ann["boxes"]) if g_n else torch.zeros(0, 4),
        classes=torch.tensor(ann["classes"], dtype=torch.int64),
        masks=torch.stack(ann["masks"]) if g_n else torch.zeros(0, image_size, image_size, dtype=torch.bool),
        meshes=ann["meshes"], voxel_points=pts,
        voxel_lengths=torch.tensor([p.shape[0] for p in ann["points"]], dtype=torch.int64),
        dz=torch.tensor(ann["dz"], dtype=torch.float32), instances=torch.tensor(ann["inst"], dtype=torch.int64))


def _render_split(pool, g, num, image_size, focal, max_objects, min_visible, spacing, batch: int = 16) -> list:
    scenes = [_make_scene(pool, g, image_size, focal, max_objects, spacing) for _ in range(num)]
    out = []
    for s in range(0, num, batch):  # rasterize a batch of scenes per call
        chunk = scenes[s:s + batch]
        rgb, p2f = render_scene([c["verts"] for c in chunk], [c["faces"] for c in chunk],
                                [c["colors"] for c in chunk], image_size, focal,
                                torch.stack([c["light"] for c in chunk]))
        out += [_annotate(c, rgb[i], p2f[i], image_size, focal, min_visible) for i, c in enumerate(chunk)]
    return out


def make_furniture(num_train: int = 800, num_test: int = 100, image_size: int = 128, max_objects: int = 3,
                   instances_per_category: int = 16, test_instances_per_category: int = 4, focal: float | None = None,
                   min_visible_pixels: int = 60, voxel_spacing: float = 0.05, seed: int = 0) -> FurnitureData:
    """Generate the dataset (no cache; see :func:`load_furniture`).

    Args:
        num_train, num_test: images per split.
        image_size: S.
        max_objects: objects per image are drawn uniformly from ``1..max_objects``.
        instances_per_category: instances drawn per category (train pool).
        test_instances_per_category: further instances per category, only in held-out images.
        focal: f in pixels (default ``1.1 S``, a 49 degree field of view).
        min_visible_pixels: objects with fewer visible pixels are not annotated.
        voxel_spacing: lattice spacing of the voxel points (metres).
        seed: everything is drawn from ``torch.Generator().manual_seed(seed)``.

    Returns:
        :class:`FurnitureData`.
    """
    for name, v in (("num_train", num_train), ("num_test", num_test), ("image_size", image_size),
                    ("max_objects", max_objects), ("instances_per_category", instances_per_category),
                    ("test_instances_per_category", test_instances_per_category)):
        if not isinstance(v, int) or v < (0 if name.startswith("num") else 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    focal = 1.1 * image_size if focal is None else float(focal)
    g = torch.Generator().manual_seed(int(seed))
    per = instances_per_category + test_instances_per_category
    train_pool, test_pool = [], []
    for c, cat in enumerate(CATEGORIES):
        for i in range(per):
            inst = (c * per + i, c, furniture_instance(cat, g))
            (train_pool if i < instances_per_category else test_pool).append(inst)
    train = _render_split(train_pool, g, num_train, image_size, focal, max_objects, min_visible_pixels,
                          voxel_spacing)
    test = _render_split(test_pool, g, num_test, image_size, focal, max_objects, min_visible_pixels, voxel_spacing)
    return FurnitureData(train=train, test=test, image_size=image_size, focal=focal)


def cache_dir() -> Path:
    """``~/.cache/lib3d/furniture`` (``$XDG_CACHE_HOME`` respected)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lib3d" / "furniture"


def load_furniture(cache: bool = True, **kwargs) -> FurnitureData:
    """:func:`make_furniture` with an on-disk cache keyed by the arguments (and the generator version).

    Args:
        cache: read/write ``~/.cache/lib3d/furniture/<key>.pt``.
        **kwargs: arguments of :func:`make_furniture`.
    """
    import inspect

    params = {k: v.default for k, v in inspect.signature(make_furniture).parameters.items()}
    unknown = set(kwargs) - set(params)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    params.update(kwargs)
    key = hashlib.sha1(json.dumps({"v": _VERSION, **params}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{key}.pt"
    if cache and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return FurnitureData(train=[FurnitureImage(*x) for x in blob["train"]],
                                 test=[FurnitureImage(*x) for x in blob["test"]], image_size=blob["image_size"],
                                 focal=blob["focal"])
        except Exception:  # noqa: BLE001 - a damaged cache is regenerated
            pass
    data = make_furniture(**params)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"train": [list(x) for x in data.train], "test": [list(x) for x in data.test],
                    "image_size": data.image_size, "focal": data.focal}, tmp)
        os.replace(tmp, path)
    return data
