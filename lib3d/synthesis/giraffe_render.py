"""The book's / official ``render.py`` programs for a trained GIRAFFE generator, as functions returning frames.

Each program fixes the latent codes, camera (the middle of the camera ranges) and background rotation of
``N`` scenes (codes scaled by ``temperature``, 0.65 as the official renderer) and varies one factor over ``T``
steps; it returns ``frames (T, N, 3, S, S)`` in [0, 1]:

- ``rotation_object``: box rotation over the rotation range (a full turn: 2 T steps);
- ``translation_object_horizontal`` / ``translation_object_depth``: the moving object's translation value
  along the second / first box axis from 0 to 1 (the official placements for 1 and 2 boxes);
- ``interpolate_app`` / ``interpolate_shape``: the objects' appearance / shape codes interpolated on the
  sphere through 6 random codes (T steps each);
- ``interpolate_bg_app``: the same for the background's appearance code;
- ``add_objects``: objects added one at a time on a grid of the translation range, then removed again.

Dimension names: T steps, N scenes, K objects, S image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lib3d.synthesis.giraffe import (
    GiraffeGenerator,
    Latents,
    boxes_from_values,
    interpolate_sphere,
    sample_camera_poses,
)

__all__ = ["PROGRAMS", "render_program"]


def _setup(g: GiraffeGenerator, n: int, rng: torch.Generator, temperature: float, n_boxes: int | None = None):
    lat = g.sample_latents(n, rng, temperature, n_boxes)
    cams = sample_camera_poses(n, g.camera, rng, g._device(), values=(0.5, 0.5, 0.5))
    bg = g.sample_bg_rotation(n, rng)
    return lat, cams, bg


def _values(g: GiraffeGenerator, n: int, k: int, t: list[list[float]], r: float = 0.5):
    dev = g._device()
    s = torch.zeros(n, k, 3, device=dev)
    tt = torch.tensor(t, dtype=torch.float32, device=dev).expand(n, k, 3)
    return boxes_from_values(g.boxes, s, tt, torch.full((n, k), r, device=dev))


@torch.no_grad()
def _rotation(g, n, steps, rng, temperature):
    lat, cams, bg = _setup(g, n, rng, temperature)
    k = g.n_boxes
    full = tuple(g.boxes.rotation_range) == (0.0, 1.0)
    steps, (r0, r1) = (2 * steps, (0.0, 1.0)) if full else (steps, (0.1, 0.9))
    t = [[0.5, 0.5, 0.5]] * k
    frames = []
    for v in torch.linspace(0, 1, steps).tolist():  # loop over the T steps
        b = _values(g, n, k, t, r0 + v * (r1 - r0))
        frames.append(g(lat, cams, b, bg))
    return torch.stack(frames)


def _translation(axis: int):
    @torch.no_grad()
    def run(g, n, steps, rng, temperature):
        lat, cams, bg = _setup(g, n, rng, temperature)
        k = g.n_boxes
        if axis == 1:  # horizontal: the official placements for 1 and 2 boxes
            others, fixed = [[0.5, 0.5, 0.0]] * (k - 1), (0.5 if k == 1 else 1.0)
        else:
            others, fixed = [[0.4, 0.8, 0.0]] * (k - 1), (0.5 if k == 1 else 0.2)
        frames = []
        for v in torch.linspace(0, 1, steps).tolist():  # loop over the T steps
            moving = [fixed, v, 0.0] if axis == 1 else [v, fixed, 0.0]
            frames.append(g(lat, cams, _values(g, n, k, others + [moving]), bg))
        return torch.stack(frames)
    return run


def _interpolation(field: str):
    @torch.no_grad()
    def run(g, n, steps, rng, temperature, n_codes: int = 6):
        lat, cams, bg = _setup(g, n, rng, temperature)
        k = g.n_boxes
        b = _values(g, n, k, [[0.5, 0.5, 0.5]] * k)
        shape = getattr(lat, field).shape
        codes = [torch.randn(shape, generator=rng, device=g._device()) * temperature for _ in range(n_codes)]
        frames = []
        for j in range(n_codes):  # loop over the 6 key codes, then over the T steps between two of them
            for v in torch.linspace(0, 1, steps).tolist():
                z = interpolate_sphere(codes[j], codes[(j + 1) % n_codes], v)
                frames.append(g(lat._replace(**{field: z}), cams, b, bg))
        return torch.stack(frames)
    return run


@torch.no_grad()
def _add_objects(g, n, steps, rng, temperature, n_objects: int = 6):
    lat, cams, bg = _setup(g, n, rng, temperature, n_boxes=n_objects)
    grid = [[0.2 + 0.6 * (i % 2), 0.5 * (i // 2), 0.0] for i in range(n_objects)]
    frames = []
    for count in list(range(1, n_objects + 1)) + list(range(n_objects - 1, 0, -1)):  # add, then remove
        sub = Latents(lat.shape_obj[:, :count], lat.app_obj[:, :count], lat.shape_bg, lat.app_bg)
        img = g(sub, cams, _values(g, n, count, grid[:count]), bg)
        frames += [img] * max(1, steps // 8)
    return torch.stack(frames)


PROGRAMS: dict[str, Callable] = {
    "interpolate_app": _interpolation("app_obj"),
    "interpolate_shape": _interpolation("shape_obj"),
    "interpolate_bg_app": _interpolation("app_bg"),
    "translation_object_depth": _translation(0),
    "translation_object_horizontal": _translation(1),
    "rotation_object": _rotation,
    "add_objects": _add_objects,
}


def render_program(generator: GiraffeGenerator, program: str, n_scenes: int = 15, n_steps: int = 32,
                   seed: int = 0, temperature: float = 0.65) -> torch.Tensor:
    """Frames ``(T, N, 3, S, S)`` in [0, 1] of one program (see the module docstring) on the CPU.

    Raises:
        ValueError: an unknown program.
    """
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {sorted(PROGRAMS)}, got {program!r}")
    rng = torch.Generator(device=generator._device()).manual_seed(seed)
    return PROGRAMS[program](generator.eval(), n_scenes, n_steps, rng, temperature).clamp(0, 1).cpu()
