"""GIRAFFE's scene sampling: cameras on a sphere, object boxes, latent codes (see ``lib3d.synthesis.giraffe``).

Dimension names and conventions are ``lib3d.synthesis.giraffe``'s: N scenes, K objects, R rays, Z code size;
world z-up; ``cam2world (N, 4, 4)`` with the camera looking along its -z; a box maps world points to its
frame as ``p_box = R (p - t) / s`` with R a rotation by ``2 pi r`` about z.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, check_tensor

__all__ = [
    "BoxRanges",
    "Boxes",
    "CameraRanges",
    "Latents",
    "boxes_from_values",
    "camera_poses",
    "camera_rays",
    "interpolate_sphere",
    "sample_boxes",
    "sample_camera_poses",
    "sample_latents",
    "sample_object_existence",
    "world_to_box",
    "z_rotation",
]

def z_rotation(value: torch.Tensor) -> torch.Tensor:
    """Rotations by ``2 pi value`` about the z axis (scipy's ``from_euler('z', 2 pi value).as_matrix()``).

    Args:
        value: ``(...)`` float, in turns.

    Returns:
        ``(..., 3, 3)`` float.
    """
    check_tensor("value", value, dtype="float")
    a = 2 * math.pi * value
    c, s = torch.cos(a), torch.sin(a)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((c, -s, zero, s, c, zero, zero, zero, one), dim=-1).reshape(*value.shape, 3, 3)


def interpolate_sphere(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical linear interpolation of latent codes along their last dimension (the render script's).

    Args:
        z1, z2: ``(..., Z)`` float.
        t: interpolation weight in [0, 1].

    Returns:
        ``(..., Z)``: ``sin((1-t) w)/sin(w) z1 + sin(t w)/sin(w) z2`` with ``cos(w)`` the codes' cosine.
    """
    check_shapes(z1=(z1, (..., "Z")), z2=(z2, (..., "Z")), dtype="float")
    cos = (F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(cos)
    return (torch.sin((1 - t) * omega) * z1 + torch.sin(t * omega) * z2) / torch.sin(omega)


# ----------------------------------------------------------------------------------------------------
# Cameras and boxes
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CameraRanges:
    """Camera distribution: position on a sphere around the origin (official ``generator_kwargs``).

    ``u`` and ``v`` are the official sphere parameters in [0, 1] (azimuth ``2 pi u``, polar angle
    ``arccos(1 - 2 v)``: ``v = 0.25`` is 30 degrees above the ground plane, ``v = 0.5`` on it).
    """

    range_u: tuple[float, float] = (0.0, 0.0)
    range_v: tuple[float, float] = (0.25, 0.25)
    range_radius: tuple[float, float] = (2.732, 2.732)
    fov: float = 49.13
    depth_range: tuple[float, float] = (0.5, 6.0)


@dataclasses.dataclass(frozen=True)
class BoxRanges:
    """Object box distribution (official ``bounding_box_generator_kwargs``).

    Scales and translations are ``min + value * (max - min)`` per axis with ``value`` in [0, 1] (one value
    for the three scale axes when ``fix_scale_ratio``); rotations are ``2 pi (r0 + value (r1 - r0))``
    about z; ``object_on_plane`` pins the translation's z to ``z_level_plane``.
    """

    n_boxes: int = 1
    scale_min: tuple[float, float, float] = (0.5, 0.5, 0.5)
    scale_max: tuple[float, float, float] = (0.5, 0.5, 0.5)
    translation_min: tuple[float, float, float] = (-0.75, -0.75, 0.0)
    translation_max: tuple[float, float, float] = (0.75, 0.75, 0.0)
    rotation_range: tuple[float, float] = (0.0, 1.0)
    fix_scale_ratio: bool = True
    object_on_plane: bool = False
    z_level_plane: float = 0.0


class Boxes(NamedTuple):
    """Object boxes of a batch of scenes.

    Attributes:
        scale: ``(N, K, 3)`` float, half-extents of each box along its local axes.
        translation: ``(N, K, 3)`` float, box centres in world coordinates.
        rotation: ``(N, K, 3, 3)`` float, rotation ``R`` of ``p_box = R (p - t) / s``.
    """

    scale: torch.Tensor
    translation: torch.Tensor
    rotation: torch.Tensor


class Latents(NamedTuple):
    """Latent codes of a batch of scenes.

    Attributes:
        shape_obj: ``(N, K, Z)`` float; app_obj: ``(N, K, Z)`` float;
        shape_bg: ``(N, Zb)`` float; app_bg: ``(N, Zb)`` float.
    """

    shape_obj: torch.Tensor
    app_obj: torch.Tensor
    shape_bg: torch.Tensor
    app_bg: torch.Tensor


def camera_poses(u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices of cameras on a sphere looking at the origin, z up (official ``look_at``).

    Args:
        u: ``(N,)`` float azimuth parameter (``theta = 2 pi u``).
        v: ``(N,)`` float polar parameter (``phi = arccos(1 - 2 v)``).
        radius: ``(N,)`` float distance to the origin.

    Returns:
        ``(N, 4, 4)`` float: columns ``x = up x z``, ``y = z x x``, ``z = position / |position|``, position.
    """
    check_shapes(u=(u, ("N",)), v=(v, ("N",)), radius=(radius, ("N",)), dtype="float")
    theta, phi = 2 * math.pi * u, torch.acos(1 - 2 * v)
    loc = torch.stack((phi.sin() * theta.cos(), phi.sin() * theta.sin(), phi.cos()), dim=-1) * radius[:, None]
    z_axis = loc / torch.linalg.norm(loc, dim=-1, keepdim=True).clamp_min(1e-5)
    up = torch.zeros_like(loc)
    up[:, 2] = 1.0
    x_axis = torch.linalg.cross(up, z_axis, dim=-1)
    x_axis = x_axis / torch.linalg.norm(x_axis, dim=-1, keepdim=True).clamp_min(1e-5)
    y_axis = torch.linalg.cross(z_axis, x_axis, dim=-1)
    y_axis = y_axis / torch.linalg.norm(y_axis, dim=-1, keepdim=True).clamp_min(1e-5)
    pose = torch.eye(4, dtype=loc.dtype, device=loc.device).repeat(loc.shape[0], 1, 1)
    pose[:, :3, :3] = torch.stack((x_axis, y_axis, z_axis), dim=-1)
    pose[:, :3, 3] = loc
    return pose


def _lerp_range(rng: Sequence[float], value: torch.Tensor) -> torch.Tensor:
    return rng[0] + value * (rng[1] - rng[0])


def sample_camera_poses(n: int, ranges: CameraRanges, generator: torch.Generator | None = None,
                        device=None, values: tuple[float, float, float] | None = None) -> torch.Tensor:
    """Random camera poses (``u, v, radius`` uniform in their ranges), or fixed ones at ``values``.

    Args:
        n: number of cameras.
        ranges: the camera distribution.
        generator: random generator.
        device: device of the result.
        values: ``(val_u, val_v, val_r)`` in [0, 1] for the official ``get_camera`` (no randomness).

    Returns:
        ``(n, 4, 4)`` float32 camera-to-world matrices.
    """
    if values is None:
        uvr = torch.rand(3, n, generator=generator, device=device)
    else:
        uvr = torch.tensor(values, dtype=torch.float32, device=device)[:, None].expand(3, n)
    return camera_poses(_lerp_range(ranges.range_u, uvr[0]), _lerp_range(ranges.range_v, uvr[1]),
                        _lerp_range(ranges.range_radius, uvr[2]))


def camera_rays(cam2world: torch.Tensor, fov: float, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixels of a ``resolution`` x ``resolution`` image (official pixel grid).

    Args:
        cam2world: ``(N, 4, 4)`` float.
        fov: field of view in degrees.
        resolution: ``res``.

    Returns:
        ``(origins (N, R, 3), directions (N, R, 3))`` in world coordinates, rays in row-major pixel order;
        directions have view-space depth 1 (not normalised).
    """
    check_shape("cam2world", cam2world, (None, 4, 4), dtype="float")
    inv_focal = math.tan(0.5 * math.radians(fov))
    lin = torch.linspace(-1.0, 1.0, resolution, dtype=cam2world.dtype, device=cam2world.device)
    y, x = torch.meshgrid(-lin, lin, indexing="ij")
    cam = torch.stack((x * inv_focal, y * inv_focal, -torch.ones_like(x)), dim=-1).reshape(-1, 3)
    directions = cam @ cam2world[:, :3, :3].transpose(1, 2)
    origins = cam2world[:, None, :3, 3].expand_as(directions)
    return origins, directions


def boxes_from_values(ranges: BoxRanges, scale: torch.Tensor, translation: torch.Tensor,
                      rotation: torch.Tensor) -> Boxes:
    """Boxes at given positions in the box ranges (the official ``get_transformations``).

    Args:
        ranges: the box distribution.
        scale: ``(N, K, 3)`` float values in [0, 1] (only ``[..., 0]`` is used when ``fix_scale_ratio``).
        translation: ``(N, K, 3)`` float values in [0, 1].
        rotation: ``(N, K)`` float values in [0, 1].

    Returns:
        ``Boxes`` with scale ``(N, K, 3)``, translation ``(N, K, 3)``, rotation ``(N, K, 3, 3)``.
    """
    check_shapes(scale=(scale, ("N", "K", 3)), translation=(translation, ("N", "K", 3)),
                 rotation=(rotation, ("N", "K")), dtype="float")
    dev, dt = scale.device, scale.dtype
    s_min = torch.tensor(ranges.scale_min, device=dev, dtype=dt)
    s_rng = torch.tensor(ranges.scale_max, device=dev, dtype=dt) - s_min
    t_min = torch.tensor(ranges.translation_min, device=dev, dtype=dt)
    t_rng = torch.tensor(ranges.translation_max, device=dev, dtype=dt) - t_min
    s = s_min + (scale[..., :1] if ranges.fix_scale_ratio else scale) * s_rng
    t = t_min + translation * t_rng
    if ranges.object_on_plane:
        t = torch.cat((t[..., :2], torch.full_like(t[..., 2:], ranges.z_level_plane)), dim=-1)
    return Boxes(s, t, z_rotation(_lerp_range(ranges.rotation_range, rotation)))


def sample_boxes(n: int, ranges: BoxRanges, generator: torch.Generator | None = None, device=None) -> Boxes:
    """Random boxes: scale, translation and rotation values uniform in [0, 1] (official ``forward``).

    Returns:
        ``Boxes`` of ``n`` scenes with ``ranges.n_boxes`` boxes each.
    """
    k = ranges.n_boxes
    u = torch.rand(n, k, 7, generator=generator, device=device)
    return boxes_from_values(ranges, u[..., 0:3], u[..., 3:6], u[..., 6])


def world_to_box(points: torch.Tensor, boxes: Boxes, k: int) -> torch.Tensor:
    """Points in the local coordinates of box ``k``: ``p_box = R_k (p - t_k) / s_k``.

    Args:
        points: ``(N, ..., 3)`` float world points.
        boxes: boxes of ``N`` scenes.
        k: box index.

    Returns:
        ``(N, ..., 3)`` float.
    """
    check_shape("points", points, (..., 3), dtype="float")
    n = points.shape[0]
    if points.dim() < 2 or boxes.scale.shape[0] != n:
        raise ValueError(f"points must have shape (N, ..., 3) with N={boxes.scale.shape[0]} (the boxes' batch), "
                         f"got {tuple(points.shape)}")
    view = (n,) + (1,) * (points.dim() - 2)
    rot = boxes.rotation[:, k].reshape(*view, 3, 3)
    local = (rot @ (points - boxes.translation[:, k].reshape(*view, 3))[..., None])[..., 0]
    return local / boxes.scale[:, k].reshape(*view, 3)


def sample_latents(n: int, n_boxes: int, z_dim: int, z_dim_bg: int, generator: torch.Generator | None = None,
                   device=None, temperature: float = 1.0) -> Latents:
    """Latent codes ``N(0, temperature^2)`` for ``n`` scenes of ``n_boxes`` objects."""
    def z(*shape):
        return torch.randn(*shape, generator=generator, device=device) * temperature
    return Latents(z(n, n_boxes, z_dim), z(n, n_boxes, z_dim), z(n, z_dim_bg), z(n, z_dim_bg))


def sample_object_existence(n: int, n_boxes: int, count_probs: Sequence[float], min_count: int = 1,
                            generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Which objects exist: ``min_count + i`` objects with probability ``count_probs[i]``, chosen at random.

    The official CLEVR2345 setting is ``min_count = 2``, ``count_probs = (0.195, 0.244, 0.253, 0.309)``.

    Returns:
        ``(n, n_boxes)`` bool.
    """
    probs = torch.tensor(count_probs, dtype=torch.float32, device=device)
    if probs.numel() + min_count - 1 > n_boxes or bool((probs < 0).any()):
        raise ValueError(f"count_probs must give counts in [{min_count}, {n_boxes}] with non-negative "
                         f"probabilities, got {list(count_probs)}")
    counts = torch.multinomial(probs, n, replacement=True, generator=generator) + min_count
    ranks = torch.rand(n, n_boxes, generator=generator, device=device).argsort(-1).argsort(-1)
    return ranks < counts[:, None]
