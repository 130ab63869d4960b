"""Fit a dense voxel volume to multi-view renders: the book's chapter 5 on lib3d.

    python -m jobs.fit_volume               # 128^3 volume, 40 views of the embedded scene, 300 iterations
    python -m jobs.fit_volume cow           # the book's cow renders
    python -m jobs.fit_volume tiny          # a quick smoke run
    python -m jobs.fit_volume --help

Each iteration renders ``batch_size`` random cameras with ``VolumeRenderer`` (grid ray sampler, 150 points per
ray, emission-absorption) and minimises the book's Huber loss on colour and silhouette with Adam (lr 0.1, /10
at 75%). Writes results/fit_volume/<run>/: TensorBoard, checkpoints, metrics.json (held-out PSNR on the views
with index % 8 == 0, which are not trained on), rotating.gif.
"""

from __future__ import annotations

import time

import torch

from configs.fit_volume import PRESETS, FitVolumeConfig
from lib3d import runtime
from lib3d.runtime import distributed as dist

JOB = "fit_volume"


def train_loop(config: FitVolumeConfig) -> dict:
    """The chapter-5 fit (in-process or one Ray worker of a DDP group): returns the metrics."""
    from lib3d.fields.losses import huber
    from lib3d.fields.training import (
        all_reduce_grads,
        camera_subset,
        load_posed_images,
        split_indices,
        turntable_cameras,
    )
    from lib3d.fields.voxel import VolumeModel
    from lib3d.metrics import psnr
    from lib3d.render.volumetric import EmissionAbsorptionRaymarcher, NDCMultinomialRaysampler, VolumeRenderer

    t0 = time.time()
    ctx = dist.worker_context(config.ray.use_gpu)
    run = runtime.start_run(JOB, config, rank=ctx.rank, world_size=ctx.world_size, quiet=not ctx.is_main)
    torch.manual_seed(dist.derive_seed(config.run.seed, "torch", 0))
    gen = dist.rank_generator(config.run.seed, ctx.rank, ctx.device)
    data = load_posed_images(config.data, config.image_size, config.num_views, device=ctx.device)
    train_idx, test_idx = split_indices(data.images.shape[0])
    H, W = data.images.shape[1:3]
    rs = NDCMultinomialRaysampler(image_width=W, image_height=H, n_pts_per_ray=config.n_pts_per_ray,
                                  min_depth=config.min_depth, max_depth=config.volume_extent_world)
    renderer = VolumeRenderer(rs, EmissionAbsorptionRaymarcher())
    model = VolumeModel(renderer, [config.volume_size] * 3, config.volume_extent_world / config.volume_size)
    model = model.to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 0
    ck = run.load_checkpoint()
    if ck is not None:
        model.load_state_dict(ck.tensors)
        opt.load_state_dict(ck.optimizer_state)
        start = ck.step
    per = max(1, config.batch_size // ctx.world_size)
    every = config.run.checkpoint_every
    for it in run.progress(range(start, config.iterations), total=config.iterations, initial=start, desc=JOB):
        if it == round(config.iterations * 0.75):  # the book: lr / 10 at 75%
            for g in opt.param_groups:
                g["lr"] = config.lr * 0.1
        sel = train_idx[torch.randperm(len(train_idx), generator=gen, device=ctx.device)[:per].cpu()]
        out = model(camera_subset(data.cameras, sel))
        sil_err = huber(out[..., 3], data.silhouettes[sel]).abs().mean()
        color_err = huber(out[..., :3], data.images[sel]).abs().mean()
        loss = color_err + sil_err
        opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_grads(list(model.parameters()))
        opt.step()
        done = it + 1
        if done % max(config.run.log_every, 1) == 0 or done == config.iterations:
            run.log_scalars(done, {"loss": loss.item(), "loss_color": color_err.item(), "loss_silhouette": sil_err.item()})
        if (every > 0 and done % every == 0) or done == config.iterations:
            run.save_checkpoint(done, {k: v.detach() for k, v in model.state_dict().items()}, opt)
    metrics = {}
    if ctx.is_main:
        with torch.no_grad():
            test_imgs = torch.cat([model(camera_subset(data.cameras, test_idx[i:i + 1]))[..., :3]
                                   for i in range(len(test_idx))]).clamp(0, 1)
            p = psnr(test_imgs, data.images[test_idx])
            run.log_image("test/render", torch.cat([test_imgs[0], data.images[test_idx][0]], 1).cpu(), config.iterations)
            if config.rotating_frames > 0:
                dist_cam = float(data.cameras.get_camera_center()[0].norm())
                cams = turntable_cameras(data.cameras, config.rotating_frames, dist=dist_cam, device=ctx.device)
                frames = torch.cat([model(cams[i:i + 1])[..., :3] for i in range(config.rotating_frames)])
                run.save_gif("rotating.gif", frames.clamp(0, 1).cpu(), fps=10)
        metrics = {"data": config.data, "iterations": config.iterations, "final_loss": loss.item(),
                   "test_psnr": float(p.mean()), "total_seconds": time.time() - t0}
        run.write_metrics(metrics)
        print(f"[{JOB}] held-out PSNR {metrics['test_psnr']:.2f} dB after {config.iterations} iterations "
              f"({metrics['total_seconds'] / 60:.1f} min); outputs in {run.dir}", flush=True)
    run.close()
    return metrics


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.fit(train_loop, config, job_name=JOB)


if __name__ == "__main__":
    main()
