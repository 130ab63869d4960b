"""An embedded RealEstate10K-like dataset: procedural indoor rooms rendered by lib3d along short camera paths.

Each scene is a room (a box seen from inside: floor, ceiling, four walls) furnished with box-shaped
"furniture" (tables, cabinets, beds, shelves) and a few polyhedra from ``lib3d.data.primitives``, with
solid procedural textures (stripes, checkers, smooth colour waves evaluated at the world position), an
ambient term and a coloured point light whose position and colour vary per scene. A camera walks a short
trajectory like RealEstate10K's real-estate videos: small forward moves, sideways drift and slow turns.
Frames are rasterized with ``lib3d.render.rasterize_face_verts`` (z-buffer, one face per pixel); the depth
of every pixel is kept for evaluation.

Dimension names: S scenes, T frames per scene, H/W image height/width, N pairs.

Conventions: cameras are OpenCV's (+x right, +y down, +z forward) with world-to-camera poses
``(S, T, 4, 4)`` and normalised intrinsics ``K (3, 3)`` (``u = fx X / Z + cx`` in [0, 1] across the
width), as ``lib3d.synthesis.synsin`` expects. World y points down like the cameras' (the floor lies at
``y = 0``, the ceiling at ``y = -room_height``). Images are uint8 ``(3, H, W)``; depth is the camera-space z.

Everything is made deterministically from a seed (``torch.Generator``); ``load_indoor`` caches the
rendered split under ``~/.cache/lib3d/indoor/`` (safetensors, written atomically). Train and test splits
use different seeds, so the test scenes are never seen in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from lib3d._checks import check_choice, check_shape
from lib3d.data.primitives import dodecahedron, octahedron
from lib3d.render import rasterize_face_verts

__all__ = [
    "IndoorConfig",
    "IndoorScenes",
    "ViewPairs",
    "fixed_pairs",
    "indoor_cache_path",
    "load_indoor",
    "relative_pose",
    "render_indoor_scenes",
    "sample_pairs",
]

_VERSION = 1  # bump when the generator changes (cache key)


@dataclasses.dataclass(frozen=True)
class IndoorConfig:
    """Size and difficulty of the procedural indoor dataset."""

    image_size: int = 64
    """Square image side."""
    frames: int = 8
    """Frames per trajectory."""
    train_scenes: int = 200
    """Scenes of the training split."""
    test_scenes: int = 24
    """Held-out scenes (another seed)."""
    seed: int = 0
    """Base seed; the splits use derived seeds."""
    fov_degrees: float = 60.0
    """Horizontal (= vertical) field of view."""
    step_m: float = 0.15
    """Mean forward move per frame (metres)."""
    turn_degrees: float = 3.0
    """Mean absolute yaw change per frame."""


class IndoorScenes(NamedTuple):
    """Rendered trajectories.

    Attributes:
        images: (S, T, 3, H, W) uint8 RGB.
        depths: (S, T, 1, H, W) float32 camera-space z (``inf`` where nothing is seen; never in a room).
        poses: (S, T, 4, 4) float32 world-to-camera (OpenCV axes).
        K: (3, 3) float32 normalised intrinsics.
    """

    images: torch.Tensor
    depths: torch.Tensor
    poses: torch.Tensor
    K: torch.Tensor


class ViewPairs(NamedTuple):
    """(source, target) view pairs for view synthesis.

    Attributes:
        source: (N, 3, H, W) float in [0, 1].
        target: (N, 3, H, W) float in [0, 1].
        K: (N, 3, 3) float normalised intrinsics.
        RT: (N, 4, 4) float relative pose, source camera -> target camera.
        source_depth: (N, 1, H, W) float.
        target_depth: (N, 1, H, W) float.
    """

    source: torch.Tensor
    target: torch.Tensor
    K: torch.Tensor
    RT: torch.Tensor
    source_depth: torch.Tensor
    target_depth: torch.Tensor


# ---------------------------------------------------------------------------------------------- geometry


def _grid_box(size: torch.Tensor, center: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A box's six sides, each split into n x n quads (2 triangles each): (V, 3) verts, (F, 3) faces."""
    t = torch.linspace(-0.5, 0.5, n + 1)
    a, b = torch.meshgrid(t, t, indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    i = torch.arange(n)
    q = (i[:, None] * (n + 1) + i[None, :]).reshape(-1)
    quad = torch.stack((q, q + n + 1, q + n + 2, q + 1), 1)
    tris = torch.cat((quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]), 0)
    verts, faces = [], []
    half = torch.full_like(a, 0.5)
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = torch.zeros(a.shape[0], 3)
            others = [k for k in range(3) if k != axis]
            p[:, axis] = sign * half
            p[:, others[0]], p[:, others[1]] = a, b
            faces.append(tris + sum(v.shape[0] for v in verts))
            verts.append(p)
    v = torch.cat(verts) * size + center
    return v, torch.cat(faces)


def _rand(g: torch.Generator, lo: float, hi: float, *shape) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape or (1,), generator=g)


def _yaw_pitch_matrix(yaw: float, pitch: float) -> torch.Tensor:
    """Camera-to-world rotation of a camera yawed about world y and pitched about its x (OpenCV axes)."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return ry @ rx


class _Scene(NamedTuple):
    face_verts: torch.Tensor  # (F, 3, 3) world
    face_object: torch.Tensor  # (F,) int64
    normals: torch.Tensor  # (F, 3)
    colors_a: torch.Tensor  # (O, 3)
    colors_b: torch.Tensor  # (O, 3)
    freqs: torch.Tensor  # (O, 3)
    pattern: torch.Tensor  # (O,) int64: 0 stripes, 1 checker, 2 waves
    light_pos: torch.Tensor  # (3,)
    light_color: torch.Tensor  # (3,)
    ambient: float
    room: torch.Tensor  # (3,) width, height, depth
    furniture: list  # (center, size) xz footprints for camera placement


def _make_scene(g: torch.Generator) -> _Scene:
    W, Hh, D = float(_rand(g, 4.0, 6.5)), float(_rand(g, 2.5, 3.2)), float(_rand(g, 5.0, 8.0))
    objs_v, objs_f, objs_id = [], [], []

    def add(v, f):
        objs_id.append(torch.full((f.shape[0],), len(objs_v), dtype=torch.int64))
        objs_v.append(v)
        objs_f.append(f)

    # Room: floor (y = 0), ceiling (y = -H), walls; one "object" per side so each gets its own texture.
    room_v, room_f = _grid_box(torch.tensor([W, Hh, D]), torch.tensor([0.0, -Hh / 2, 0.0]), 10)
    per_side = room_f.shape[0] // 6
    for s in range(6):
        add(room_v, room_f[s * per_side:(s + 1) * per_side])
    furniture = []
    n_furn = int(torch.randint(3, 7, (1,), generator=g))
    for _ in range(n_furn):
        sx, sz = float(_rand(g, 0.4, 1.6)), float(_rand(g, 0.4, 1.6))
        sy = float(_rand(g, 0.4, 1.9))
        # Against a wall half of the time, anywhere otherwise.
        if float(_rand(g, 0, 1)) < 0.5:
            side = int(torch.randint(0, 4, (1,), generator=g))
            along = float(_rand(g, -0.4, 0.4))
            cx = [-(W / 2 - sx / 2 - 0.02), W / 2 - sx / 2 - 0.02, along * W, along * W][side]
            cz = [along * D, along * D, -(D / 2 - sz / 2 - 0.02), D / 2 - sz / 2 - 0.02][side]
        else:
            cx, cz = float(_rand(g, -0.35, 0.35)) * W, float(_rand(g, -0.35, 0.35)) * D
        v, f = _grid_box(torch.tensor([sx, sy, sz]), torch.tensor([cx, -sy / 2, cz]), 2)
        add(v, f)
        furniture.append((cx, cz, sx, sz))
    # One or two polyhedra standing on the furniture or the floor ("lamps", "vases").
    for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
        kind = int(torch.randint(0, 2, (1,), generator=g))
        v, f = (dodecahedron(0.25) if kind == 0 else octahedron(0.2, 0.35))
        if furniture:
            k = int(torch.randint(0, len(furniture), (1,), generator=g))
            cx, cz, _, _ = furniture[k]
            top = float(objs_v[6 + k][:, 1].min())  # furniture k's top (world y points down)
        else:  # pragma: no cover - there is always furniture
            cx, cz, top = 0.0, 0.0, 0.0
        lift = float(v[:, 1].max())
        add(v + torch.tensor([cx, top - lift, cz]), f)
    verts = [v for v in objs_v]
    face_verts = torch.cat([v[f] for v, f in zip(verts, objs_f)])
    face_object = torch.cat(objs_id)
    O = len(objs_v)
    n = torch.linalg.cross(face_verts[:, 1] - face_verts[:, 0], face_verts[:, 2] - face_verts[:, 0], dim=1)
    normals = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # Textures: a base colour, a second colour, a pattern and its spatial frequency per object.
    base = torch.rand(O, 3, generator=g) * 0.7 + 0.2
    second = (base * (0.35 + 0.5 * torch.rand(O, 1, generator=g)) + 0.15 * torch.rand(O, 3, generator=g)).clamp(0, 1)
    pattern = torch.randint(0, 3, (O,), generator=g)
    freqs = (torch.rand(O, 3, generator=g) * 2 - 1) * (2.0 + 6.0 * torch.rand(O, 1, generator=g))
    ceiling = 2  # side order of _grid_box: -x, +x, -y (ceiling), +y (floor), -z, +z
    base[ceiling] = 0.85 + 0.1 * torch.rand(3, generator=g)
    pattern[ceiling] = 2
    freqs[ceiling] *= 0.3
    light_pos = torch.tensor([float(_rand(g, -0.3, 0.3)) * W, -Hh + 0.3, float(_rand(g, -0.3, 0.3)) * D])
    light_color = 0.75 + 0.25 * torch.rand(3, generator=g)
    ambient = float(_rand(g, 0.25, 0.45))
    return _Scene(face_verts, face_object, normals, base, second, freqs, pattern, light_pos, light_color,
                  ambient, torch.tensor([W, Hh, D]), furniture)


def _trajectory(g: torch.Generator, scene: _Scene, frames: int, step: float, turn_deg: float) -> torch.Tensor:
    """(T, 4, 4) world-to-camera poses of a short walk inside the room, away from walls and furniture."""
    W, _, D = (float(x) for x in scene.room)
    for _attempt in range(50):
        x, z = float(_rand(g, -0.3, 0.3)) * W, float(_rand(g, -0.3, 0.3)) * D
        if all(abs(x - cx) > sx / 2 + 0.7 or abs(z - cz) > sz / 2 + 0.7 for cx, cz, sx, sz in scene.furniture):
            break
    y = -float(_rand(g, 1.2, 1.7))
    # Look into the room: towards the far side of the centre, give or take 35 degrees.
    yaw = math.atan2(-x, -z) if abs(x) + abs(z) > 0.3 else float(_rand(g, -math.pi, math.pi))
    yaw += float(_rand(g, -0.6, 0.6))
    pitch = float(_rand(g, -0.15, 0.1))
    dyaw = math.radians(turn_deg) * float(_rand(g, -1.0, 1.0))
    fwd = step * float(_rand(g, 0.3, 1.5))
    side = step * float(_rand(g, -0.5, 0.5))
    poses = []
    for _ in range(frames):
        R = _yaw_pitch_matrix(yaw, pitch)  # camera -> world
        c = torch.tensor([x, y, z])
        w2c = torch.eye(4)
        w2c[:3, :3] = R.t()
        w2c[:3, 3] = -(R.t() @ c)
        poses.append(w2c)
        # Move along the current heading (and a little sideways), clamped inside the room.
        x += fwd * math.sin(yaw) + side * math.cos(yaw)
        z += fwd * math.cos(yaw) - side * math.sin(yaw)
        x, z = max(-W / 2 + 0.5, min(W / 2 - 0.5, x)), max(-D / 2 + 0.5, min(D / 2 - 0.5, z))
        yaw += dyaw
    return torch.stack(poses)


def _shade(scene: _Scene, world: torch.Tensor, face: torch.Tensor, cam_center: torch.Tensor) -> torch.Tensor:
    """(M, 3) colours of M visible points (world positions, face ids) under the scene's light."""
    obj = scene.face_object[face]
    f = scene.freqs[obj]
    phase = (world * f).sum(-1) * math.pi
    stripes = 0.5 + 0.5 * torch.sin(phase)
    q = torch.sin(world[:, 0] * f[:, 0].abs() * 2 + 0.3) * torch.sin(world[:, 1] * f[:, 1].abs() * 2 + 0.7) \
        * torch.sin(world[:, 2] * f[:, 2].abs() * 2 + 1.1)
    checker = (q > 0).to(world.dtype)
    waves = 0.5 + 0.25 * torch.sin(world[:, 0] * f[:, 0]) + 0.25 * torch.sin(world[:, 2] * f[:, 2] + world[:, 1])
    t = torch.stack((stripes, checker, waves), 1).gather(1, scene.pattern[obj][:, None])
    albedo = scene.colors_a[obj] * (1 - t) + scene.colors_b[obj] * t
    n = scene.normals[face]
    to_cam = cam_center - world
    n = torch.where(((n * to_cam).sum(-1, keepdim=True) < 0), -n, n)  # face the viewer
    to_light = scene.light_pos - world
    dist2 = (to_light * to_light).sum(-1, keepdim=True)
    lam = ((n * to_light).sum(-1, keepdim=True) / dist2.sqrt()).clamp_min(0)
    light = scene.ambient + lam * scene.light_color * (6.0 / (2.0 + dist2))
    return (albedo * light).clamp(0, 1)


def _render(scene: _Scene, poses: torch.Tensor, K: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize the scene from T poses: (T, 3, H, W) uint8 images and (T, 1, H, W) float32 depths."""
    T = poses.shape[0]
    F_ = scene.face_verts.shape[0]
    fv = scene.face_verts.reshape(1, -1, 3)
    cam = fv @ poses[:, :3, :3].transpose(1, 2) + poses[:, None, :3, 3]  # (T, 3F, 3)
    z = cam[..., 2]
    zs = torch.where(z > 1e-6, z, torch.ones_like(z))
    u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
    v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
    ndc = torch.stack((-(2 * u - 1), -(2 * v - 1), torch.where(z > 1e-6, z, torch.full_like(z, -1.0))), -1)
    first = torch.arange(T, dtype=torch.int64) * F_
    counts = torch.full((T,), F_, dtype=torch.int64)
    frags = rasterize_face_verts(ndc.reshape(T * F_, 3, 3), first, counts, size, faces_per_pixel=1,
                                 perspective_correct=True)
    p2f = frags.pix_to_face[..., 0]  # (T, H, W)
    depth = frags.zbuf[..., 0]
    hit = p2f >= 0
    img = torch.zeros(T, size, size, 3)
    # World position of each hit pixel: unproject its ray at the rasterized depth.
    uv = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    vv, uu = torch.meshgrid(uv, uv, indexing="ij")
    Xc = torch.stack(((uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], torch.ones_like(uu)), -1)
    Xc = Xc[None] * depth[..., None]  # (T, H, W, 3)
    c2w = torch.linalg.inv(poses)
    world = Xc @ c2w[:, None, :3, :3].transpose(-1, -2) + c2w[:, None, None, :3, 3]
    t_idx = torch.arange(T)[:, None, None].expand_as(p2f)
    face = p2f % F_
    img[hit] = _shade(scene, world[hit], face[hit], c2w[t_idx[hit], :3, 3])
    depth = torch.where(hit, depth, torch.full_like(depth, float("inf")))
    images = (img.permute(0, 3, 1, 2) * 255).round().to(torch.uint8)
    return images, depth[:, None].float()


def render_indoor_scenes(num_scenes: int, frames: int = 8, image_size: int = 64, seed: int = 0,
                         fov_degrees: float = 60.0, step_m: float = 0.15, turn_degrees: float = 3.0
                         ) -> IndoorScenes:
    """Make and render ``num_scenes`` procedural rooms along short trajectories (deterministic in ``seed``).

    Args:
        num_scenes: S.
        frames: T, frames per trajectory.
        image_size: square side H = W.
        seed: the scenes, textures, lights and trajectories all derive from it.
        fov_degrees: field of view (fx = 0.5 / tan(fov / 2) in normalised units).
        step_m: mean forward move per frame.
        turn_degrees: mean absolute yaw change per frame.

    Returns:
        ``IndoorScenes``.
    """
    if num_scenes < 1 or frames < 2 or image_size < 4:
        raise ValueError(f"need num_scenes >= 1, frames >= 2 and image_size >= 4, got {num_scenes}, {frames}, "
                         f"{image_size}")
    g = torch.Generator().manual_seed(int(seed))
    f = 0.5 / math.tan(math.radians(fov_degrees) / 2)
    K = torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]])
    images, depths, poses = [], [], []
    for _ in range(num_scenes):
        scene = _make_scene(g)
        P = _trajectory(g, scene, frames, step_m, turn_degrees)
        im, d = _render(scene, P, K, image_size)
        images.append(im)
        depths.append(d)
        poses.append(P)
    return IndoorScenes(torch.stack(images), torch.stack(depths), torch.stack(poses), K)


def _split_seed(seed: int, split: str) -> int:
    h = hashlib.sha256(f"indoor:{seed}:{split}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def indoor_cache_path(config: IndoorConfig, split: Literal["train", "test"],
                      cache_dir: str | Path | None = None) -> Path:
    """Where ``load_indoor`` caches a split: ``<cache_dir or ~/.cache/lib3d/indoor>/<key>.safetensors``."""
    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "lib3d" / "indoor"
    c = config
    key = (f"v{_VERSION}_{split}_s{c.seed}_n{c.train_scenes if split == 'train' else c.test_scenes}"
           f"_t{c.frames}_r{c.image_size}_f{c.fov_degrees:g}_m{c.step_m:g}_y{c.turn_degrees:g}")
    return root / f"{key}.safetensors"


def load_indoor(config: IndoorConfig = IndoorConfig(), split: Literal["train", "test"] = "train",
                cache_dir: str | Path | None = None) -> IndoorScenes:
    """The ``split`` of the procedural dataset, rendered once and cached (safetensors, atomic write).

    Args:
        config: dataset size and difficulty.
        split: "train" or "test" (held-out scenes from another seed).
        cache_dir: cache folder (default ``~/.cache/lib3d/indoor``).

    Returns:
        ``IndoorScenes``.
    """
    from safetensors.torch import load_file, save_file

    check_choice("split", split, ("train", "test"))
    path = indoor_cache_path(config, split, cache_dir)
    if path.is_file():
        try:
            t = load_file(str(path))
            return IndoorScenes(t["images"], t["depths"], t["poses"], t["K"])
        except Exception:  # noqa: BLE001 - a damaged cache file is re-rendered below
            path.unlink(missing_ok=True)
    n = config.train_scenes if split == "train" else config.test_scenes
    data = render_indoor_scenes(n, config.frames, config.image_size, _split_seed(config.seed, split),
                                config.fov_degrees, config.step_m, config.turn_degrees)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({"images": data.images.contiguous(), "depths": data.depths.contiguous(),
               "poses": data.poses.contiguous(), "K": data.K.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return data


# ------------------------------------------------------------------------------------------------- pairs


def relative_pose(pose_source: torch.Tensor, pose_target: torch.Tensor) -> torch.Tensor:
    """Relative pose moving source-camera points into the target camera: ``P_tgt P_src^-1``.

    Args:
        pose_source: (..., 4, 4) float world-to-camera.
        pose_target: (..., 4, 4) float world-to-camera.

    Returns:
        (..., 4, 4) float.
    """
    check_shape("pose_source", pose_source, (..., 4, 4), dtype="float")
    check_shape("pose_target", pose_target, (..., 4, 4), dtype="float")
    return pose_target @ torch.linalg.inv(pose_source)


def _pairs(data: IndoorScenes, s: torch.Tensor, i: torch.Tensor, j: torch.Tensor, device=None) -> ViewPairs:
    img = data.images[s, i].float() / 255
    tgt = data.images[s, j].float() / 255
    RT = relative_pose(data.poses[s, i], data.poses[s, j])
    K = data.K.expand(s.shape[0], 3, 3)
    out = ViewPairs(img, tgt, K, RT, data.depths[s, i], data.depths[s, j])
    return ViewPairs(*(t.to(device).contiguous() for t in out)) if device is not None else \
        ViewPairs(*(t.contiguous() for t in out))


def sample_pairs(data: IndoorScenes, n: int, max_gap: int, generator: torch.Generator | None = None,
                 device=None) -> ViewPairs:
    """Draw n random (source, target) pairs: a scene, a source frame and a target 1..max_gap frames away
    (either direction).

    Args:
        data: the scenes.
        n: N pairs.
        max_gap: largest frame distance (clamped to T - 1).
        generator: CPU generator for the draws.
        device: where the returned tensors go.

    Returns:
        ``ViewPairs``.
    """
    S, T = data.images.shape[:2]
    gap_max = max(1, min(int(max_gap), T - 1))
    s = torch.randint(0, S, (n,), generator=generator)
    gap = torch.randint(1, gap_max + 1, (n,), generator=generator)
    sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    i = torch.randint(0, T, (n,), generator=generator)
    j = i + sign * gap
    j = torch.where((j < 0) | (j >= T), i - sign * gap, j).clamp(0, T - 1)
    return _pairs(data, s, i, j, device)


def fixed_pairs(data: IndoorScenes, gap: int) -> ViewPairs:
    """The evaluation pairs: in every scene, frame t as source and t + gap as target for every valid t.

    Returns:
        ``ViewPairs`` with N = S * (T - gap).
    """
    S, T = data.images.shape[:2]
    if not 1 <= gap < T:
        raise ValueError(f"gap must be in [1, {T - 1}], got {gap}")
    s, i = torch.meshgrid(torch.arange(S), torch.arange(T - gap), indexing="ij")
    s, i = s.reshape(-1), i.reshape(-1)
    return _pairs(data, s, i, i + gap)
