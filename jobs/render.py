"""Render a textured mesh under the book's chapter-2 light and material variations.

    python -m jobs.render                         # the embedded procedural toy
    python -m jobs.render cow                     # the book's cow at 512 px
    python -m jobs.render --mesh any.obj          # any .obj (textured) or .ply
    python -m jobs.render --help

Writes ``results/render/<run>/media/variations.png`` (a labelled grid), one PNG per variation,
``turntable.gif`` and ``metrics.json`` (render times).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch

from configs.render import PRESETS, RenderConfig
from lib3d import runtime

JOB = "render"


class Variation(NamedTuple):
    """One panel: a view (dist scale, elev, azim), lights, materials and a shader."""

    name: str
    elev: float
    azim: float
    lights: Any
    materials: Any
    shader: str


def chapter2_variations(shader: str, device) -> list[Variation]:
    """The book's chapter-2 experiments (front/back light, dark ambient, green/red/no specular) + flat and
    directional-light panels; the values are those of ``../shared/golden/shading.safetensors``."""
    from lib3d.render.lighting import DirectionalLights, Materials, PointLights

    front = PointLights(location=[[0.0, 0.0, -3.0]], device=device)
    side = PointLights(location=[[2.0, 2.0, -2.0]], device=device)
    return [
        Variation("light in front", 0.0, 180.0, front, Materials(device=device), shader),
        Variation("light behind", 0.0, 180.0, front.replace(location=torch.tensor([[0.0, 0.0, 1.0]])),
                  Materials(device=device), shader),
        Variation("dark ambient, green specular", 0.0, 180.0,
                  front.replace(location=torch.tensor([[0.0, 0.0, 1.0]])),
                  Materials(specular_color=[[0.0, 1.0, 0.0]], shininess=10.0, ambient_color=((0.01, 0.01, 0.01),),
                            device=device), shader),
        Variation("green specular, shininess 10", 10.0, -150.0, side,
                  Materials(specular_color=[[0.0, 1.0, 0.0]], shininess=10.0, device=device), shader),
        Variation("red specular, shininess 20", 10.0, -150.0, side,
                  Materials(specular_color=[[1.0, 0.0, 0.0]], shininess=20.0, device=device), shader),
        Variation("no specular", 10.0, -150.0, side,
                  Materials(specular_color=[[0.0, 0.0, 0.0]], shininess=0.0, device=device), shader),
        Variation("directional light", 10.0, -150.0, DirectionalLights(direction=[[0.0, 1.0, -1.0]], device=device),
                  Materials(device=device), shader),
        Variation("flat shading", 10.0, -150.0, side, Materials(device=device), "hard_flat"),
    ]


def render_variations(config: RenderConfig) -> tuple[list[str], torch.Tensor, torch.Tensor, dict]:
    """(labels, images (P, H, W, 3), turntable frames (T, H, W, 3), timings) for ``config``."""
    from lib3d.data.renders import normalize_mesh, view_cameras
    from lib3d.data.scenes import load_mesh
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform
    from lib3d.render.mesh_rasterizer import RasterizationSettings
    from lib3d.render.shading import render_mesh

    device = torch.device(config.device)
    mesh = load_mesh(config.mesh, device=device)
    if config.normalize:
        mesh = normalize_mesh(mesh)[0]
    settings = RasterizationSettings(image_size=config.image_size, blur_radius=0.0, faces_per_pixel=1)
    labels, images, seconds = [], [], []
    with torch.no_grad():
        for v in chapter2_variations(config.shader, device):  # loop over the panels
            R, T = look_at_view_transform(config.dist, v.elev, v.azim, device=device)
            t0 = time.perf_counter()
            img = render_mesh(mesh, FoVPerspectiveCameras(R=R, T=T), v.lights, v.materials, settings, shader=v.shader)
            seconds.append(time.perf_counter() - t0)
            labels.append(v.name)
            images.append(img[0, ..., :3].clamp(0, 1).cpu())
        frames = torch.zeros(0, config.image_size, config.image_size, 3)
        if config.turntable_frames > 0:
            from lib3d.render.lighting import PointLights

            cams = view_cameras(config.turntable_frames, 180.0 * (1 - 1 / config.turntable_frames), 10.0,
                                config.dist, device=device)
            lights = PointLights(location=[[0.0, 2.0, -3.0]], device=device)
            frames = render_mesh(mesh.extend(config.turntable_frames), cams, lights, None, settings,
                                 shader="hard_phong")[..., :3].clamp(0, 1).cpu()
    return labels, torch.stack(images), frames, {"seconds_per_panel": seconds}


def main(args: list[str] | None = None) -> dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    run = runtime.start_run(JOB, config)
    labels, images, frames, timings = render_variations(config)
    from lib3d.io.images import image_grid

    for label, img in zip(labels, images):
        run.save_image(label.replace(",", "").replace(" ", "_"), img)
    run.save_image("variations", image_grid(list(images), rows=config.rows, labels=labels))
    run.log_image("variations", image_grid(list(images), rows=config.rows, labels=labels), 0)
    if len(frames):
        run.save_gif("turntable", frames, fps=config.gif_fps)
    metrics = {"panels": labels, "image_size": config.image_size,
               "median_seconds_per_panel": float(torch.tensor(timings["seconds_per_panel"]).median())}
    run.write_metrics(metrics)
    print(f"[{JOB}] wrote {run.dir / 'media' / 'variations.png'}", flush=True)
    run.close()
    return {"dir": run.dir, **metrics}


if __name__ == "__main__":
    main()
