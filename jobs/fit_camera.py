"""Recover a camera position from a silhouette (and texture) by differentiable rendering (book ch. 4).

    python -m jobs.fit_camera                    # silhouette loss on the embedded toy
    python -m jobs.fit_camera textured           # silhouette + texture loss
    python -m jobs.fit_camera --mesh ../shared/data/book/cow_mesh/cow.obj
    python -m jobs.fit_camera --help

The book's model: the camera centre ``p`` is the only parameter; ``R = look_at_rotation(p)``,
``T = -R^T p``; Adam (lr 0.05) from (3.0, 6.9, 2.5) towards the target view (dist 3, elev 50, azim 0).
Writes TensorBoard scalars (loss, position error), ``media/fit.gif`` (render | target per frame),
``media/final.png`` and ``metrics.json`` (final position and its error, absolute and relative to the
camera distance).
"""

from __future__ import annotations

import time

import torch

from configs.fit_camera import PRESETS, FitCameraConfig
from lib3d import runtime

JOB = "fit_camera"


def main(args: list[str] | None = None) -> dict:
    from lib3d.data.renders import normalize_mesh
    from lib3d.data.scenes import load_mesh
    from lib3d.render.camera_fitting import fit_camera_steps, render_target

    config: FitCameraConfig = runtime.cli(PRESETS, description=__doc__, args=args)
    run = runtime.start_run(JOB, config)
    torch.manual_seed(config.run.seed)
    device = torch.device(config.device)
    mesh = load_mesh(config.mesh, device=device)
    if config.normalize:
        mesh = normalize_mesh(mesh)[0]
    target = render_target(mesh, config.target_dist, config.target_elev, config.target_azim, config.image_size,
                           faces_per_pixel=config.faces_per_pixel, faces_per_pixel_rgb=config.faces_per_pixel_rgb)
    side = target.rgb if config.loss == "textured" else target.silhouette[..., None].expand(-1, -1, 3)
    side = side.cpu()
    frames, last = [], None
    t0 = time.perf_counter()
    steps = fit_camera_steps(mesh, target, loss=config.loss, start=config.start, lr=config.lr,
                             iterations=config.iterations, faces_per_pixel=config.faces_per_pixel,
                             faces_per_pixel_rgb=config.faces_per_pixel_rgb)
    for s in run.progress(steps, total=config.iterations, desc=f"{JOB} ({config.loss})"):
        run.log_scalars(s.step, {"loss": s.loss, "position_error": s.error})
        if s.step % config.frame_every == 0 or s.step == 1:
            frame = torch.cat([s.image[..., :3].cpu().clamp(0, 1), side], dim=1)  # render | target
            frames.append(frame)
            if s.step % (10 * config.frame_every) == 0:
                run.log_image("render_vs_target", frame, s.step)
        last = s
    seconds = time.perf_counter() - t0
    run.save_gif("fit", torch.stack(frames), fps=config.gif_fps)
    run.save_image("final", frames[-1])
    metrics = {
        "loss": config.loss,
        "iterations": config.iterations,
        "final_loss": last.loss,
        "final_position": last.position.tolist(),
        "target_position": target.position.tolist(),
        "position_error": last.error,
        "relative_position_error": last.error / config.target_dist,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(config.iterations, 1),
    }
    run.write_metrics(metrics)
    print(f"[{JOB}] final position {[round(x, 4) for x in metrics['final_position']]}, error "
          f"{metrics['position_error']:.4f} ({100 * metrics['relative_position_error']:.2f}% of the distance)",
          flush=True)
    run.close()
    return {"dir": run.dir, **metrics}


if __name__ == "__main__":
    main()
