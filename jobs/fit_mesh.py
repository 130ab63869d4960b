"""Chapter 3: deform ico_sphere(4) into a point cloud (Chamfer + edge + normal + Laplacian regularisers).

    python -m jobs.fit_mesh                        # procedural person-shaped cloud (~250 noisy points)
    python -m jobs.fit_mesh --points cloud.ply     # a PLY point cloud (the book's pedestrian.ply)
    python -m jobs.fit_mesh no_regularizers        # ablation: Chamfer only
    python -m jobs.fit_mesh edge_only              # ablation: Chamfer + edge length
    python -m jobs.fit_mesh smoke                  # a quick bounded run

Writes ``results/fit_mesh/<run>/``: config, TensorBoard scalars per loss term, checkpoints of the vertex
offsets (resumable), ``fitted.ply``, ``media/before.png``, ``media/after.png``, ``media/target.png``,
``media/turntable.gif`` and ``metrics.json`` (final loss terms, final Chamfer distance to the target
measured with 10,000 surface samples, wall time).
"""

from __future__ import annotations

import time

import torch

from configs.fit_mesh import PRESETS, FitMeshConfig
from lib3d import runtime
from lib3d.ops import chamfer_distance, ico_sphere, mesh_normal_consistency, sample_points_from_meshes
from lib3d.ops.fitting import mesh_fitting_loss

JOB = "fit_mesh"


def load_target(config: FitMeshConfig, device) -> torch.Tensor:
    """``(P, 3)`` target cloud: a PLY file's vertices or the procedural person cloud."""
    if config.points is not None:
        from lib3d.io import load_ply

        pts, _ = load_ply(config.points)
        pts = pts.to(device=device, dtype=torch.float32)
    else:
        from lib3d.data.person_cloud import person_cloud

        gen = torch.Generator().manual_seed(config.run.seed)
        pts = person_cloud(config.num_points, config.noise, generator=gen, device=device)
    if config.normalize:
        centre = pts.mean(0)
        pts = pts - centre
        pts = pts / pts.norm(dim=1).max()
    return pts


def _cameras(num: int, device, elev: float = 10.0, dist: float = 2.7):
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform

    azim = torch.linspace(0.0, 360.0, num + 1)[:num] if num > 1 else torch.tensor([0.0])
    R, T = look_at_view_transform(dist=dist, elev=elev, azim=azim, device=device)
    return FoVPerspectiveCameras(R=R, T=T, device=device)


def render_views(meshes, num_views: int, image_size: int, chunk: int = 4) -> torch.Tensor:
    """``(num_views, H, W, 3)`` Phong renders of a one-mesh ``Meshes`` turning around the Y axis."""
    from lib3d.render.lighting import PointLights
    from lib3d.render.mesh_rasterizer import RasterizationSettings
    from lib3d.render.shading import render_mesh
    from lib3d.structures import Meshes, TexturesVertex

    device = meshes.device
    verts, faces = meshes.verts_packed().detach(), meshes.faces_packed()
    colour = torch.tensor([0.7, 0.75, 0.9], device=device).expand(verts.shape[0], 3)
    cams = _cameras(num_views, device)
    settings = RasterizationSettings(image_size=image_size, faces_per_pixel=1)
    frames = []
    for s in range(0, num_views, chunk):  # chunks of views bound the rasterizer's memory
        n = min(chunk, num_views - s)
        m = Meshes([verts] * n, [faces] * n, textures=TexturesVertex([colour] * n))
        lights = PointLights(location=[[0.0, 2.0, 3.0]], device=device)  # camera side (cameras sit at +Z for azim 0)
        img = render_mesh(m, cams[list(range(s, s + n))], lights, raster_settings=settings)
        frames.append(img[..., :3].clamp(0, 1))
    return torch.cat(frames, 0).cpu()


def render_points(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(H, W, 3)`` dots of a ``(P, 3)`` cloud seen by the first turntable camera (front view)."""
    from PIL import Image, ImageDraw

    cams = _cameras(1, points.device)
    xy = cams.transform_points_screen(points[None], image_size=(image_size, image_size))[0, :, :2].cpu()
    img = Image.new("RGB", (image_size, image_size), "white")
    draw = ImageDraw.Draw(img)
    r = max(1.0, image_size / 128)
    for x, y in xy.tolist():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(30, 60, 160))
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(image_size, image_size, 3).float() / 255


def final_chamfer(meshes, target: torch.Tensor, num_samples: int = 10000, seed: int = 0) -> float:
    """Chamfer distance between ``num_samples`` surface samples of the fitted mesh and the target."""
    gen = torch.Generator(device=meshes.device).manual_seed(seed)
    with torch.no_grad():
        samples = sample_points_from_meshes(meshes, num_samples, generator=gen)
        return float(chamfer_distance(samples, target[None])[0])


def main(config: FitMeshConfig | None = None) -> dict:
    config = config or runtime.cli(PRESETS, description=__doc__)
    run = runtime.start_run(JOB, config)
    device = torch.device(config.device)
    torch.manual_seed(config.run.seed)
    gen = torch.Generator(device=device).manual_seed(config.run.seed)
    target = load_target(config, device)
    src = ico_sphere(config.ico_level, device)
    num_samples = config.num_samples or target.shape[0]
    deform = torch.zeros_like(src.verts_packed(), requires_grad=True)
    optimizer = torch.optim.SGD([deform], lr=config.lr, momentum=config.momentum)
    start = 0
    ckpt = run.load_checkpoint(generators={"sampling": gen})
    if ckpt is not None:
        with torch.no_grad():
            deform.copy_(ckpt.tensors["deform_verts"].to(device))
        optimizer.load_state_dict(ckpt.optimizer_state)
        start = ckpt.step
        print(f"[{JOB}] resumed at step {start}")
    has_media = config.image_size > 0
    if has_media and start == 0:
        run.save_image("before", render_views(src, 1, config.image_size)[0])
        run.save_image("target", render_points(target, config.image_size))
    target_b = target[None]
    t0 = time.perf_counter()
    losses = None
    every = config.run.checkpoint_every
    for step in run.progress(range(start, config.iterations), total=config.iterations, desc=JOB):
        optimizer.zero_grad(set_to_none=True)
        new = src.offset_verts(deform)
        losses = mesh_fitting_loss(new, target_b, num_samples, config.w_chamfer, config.w_edge, config.w_normal,
                                   config.w_laplacian, config.laplacian_method, generator=gen)
        losses.total.backward()
        optimizer.step()
        done = step + 1
        if done % max(config.run.log_every, 1) == 0 or done == config.iterations:
            run.log_scalars(done, {f"loss/{k}": v.detach() for k, v in losses._asdict().items()})
        if every > 0 and done % every == 0 and done < config.iterations:
            run.save_checkpoint(done, {"deform_verts": deform.detach()}, optimizer, generators={"sampling": gen})
    wall = time.perf_counter() - t0
    fitted = src.offset_verts(deform.detach())
    run.save_checkpoint(config.iterations, {"deform_verts": deform.detach()}, optimizer, generators={"sampling": gen})
    from lib3d.io import save_ply

    save_ply(run.dir / "fitted.ply", fitted.verts_packed().cpu(), fitted.faces_packed().cpu())
    if has_media:
        run.save_image("after", render_views(fitted, 1, config.image_size)[0])
        if config.turntable_frames > 0:
            run.save_gif("turntable", render_views(fitted, config.turntable_frames, config.image_size), fps=8)
    metrics = {
        "final_chamfer_10k_samples": final_chamfer(fitted, target),
        "final_normal_consistency": float(mesh_normal_consistency(fitted).detach()),
        "iterations": config.iterations,
        "wall_time_s": wall,
        "steps_timed": config.iterations - start,
        "target_points": int(target.shape[0]),
    }
    if losses is not None:
        metrics.update({f"final_{k}": float(v.detach()) for k, v in losses._asdict().items()})
    run.write_metrics(metrics)
    print(f"[{JOB}] {config.iterations - start} steps in {wall:.1f} s; final chamfer (10k samples) "
          f"{metrics['final_chamfer_10k_samples']:.5f}, normal consistency {metrics['final_normal_consistency']:.4f}")
    run.close()
    return metrics


if __name__ == "__main__":
    main()
