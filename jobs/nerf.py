"""Train a neural radiance field on posed images: lib3d's main job (the book's chapter 6).

    python -m jobs.nerf                     # fast grid field on the embedded scene, in this process
    python -m jobs.nerf cow                 # the book's cow renders (35 train / 5 held-out views)
    python -m jobs.nerf book --time-limit-s 600   # the book's NeRF MLP and hyperparameters
    python -m jobs.nerf --data blender:/data/lego --image-size 200
    python -m jobs.nerf ddp                 # 2 Ray workers (DDP), each its own rays
    python -m jobs.nerf --help

Views with index % 8 == 0 are held out. Writes to results/nerf/<run>/: TensorBoard logs (losses, PSNR,
renders), safetensors checkpoints (resumed automatically), metrics.json (held-out PSNR/SSIM, timings),
heldout.png (renders above targets) and turntable.gif.
"""

from __future__ import annotations

import time

import torch

from configs.nerf import PRESETS, NerfConfig
from lib3d import runtime
from lib3d.runtime import distributed as dist

JOB = "nerf"


def _evaluate(render_fn, data, test_idx, run, step):
    from lib3d.fields.training import camera_subset
    from lib3d.metrics import psnr, ssim

    cams = camera_subset(data.cameras, test_idx)
    H, W = data.images.shape[1:3]
    imgs = render_fn(cams, H, W)
    target = data.images[test_idx]
    p = psnr(imgs, target)
    s = ssim(imgs, target)
    run.log_scalars(step, {"test/psnr": float(p.mean()), "test/ssim": float(s.mean())})
    run.log_image("test/render", torch.cat([imgs[0], target[0]], dim=1).cpu(), step)
    return imgs, p, s


def train_loop(config: NerfConfig) -> dict:
    """One worker's training loop (in-process or a Ray worker): returns the held-out metrics."""
    from lib3d.fields.training import (
        GridTrainer,
        book_nerf_step,
        camera_subset,
        load_posed_images,
        render_book_images,
        render_grid_images,
        split_indices,
        turntable_cameras,
    )

    t_start = time.time()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ctx = dist.worker_context(config.ray.use_gpu)
    run = runtime.start_run(JOB, config, rank=ctx.rank, world_size=ctx.world_size, quiet=not ctx.is_main)
    torch.manual_seed(dist.derive_seed(config.run.seed, "torch", 0))  # same init on every rank
    gen = dist.rank_generator(config.run.seed, ctx.rank, ctx.device)   # each rank its own rays
    data = load_posed_images(config.data, config.image_size, config.num_views, device=ctx.device)
    train_idx, test_idx = split_indices(data.images.shape[0])
    if ctx.is_main:
        print(f"[{JOB}] data {config.data}: {len(train_idx)} train / {len(test_idx)} test views of "
              f"{tuple(data.images.shape[1:3])} ({time.time() - t_start:.1f}s)", flush=True)
    if config.method == "grid":
        cfg = config.grid
        if ctx.world_size > 1:
            import dataclasses

            cfg = dataclasses.replace(cfg, batch_rays=max(1, cfg.batch_rays // ctx.world_size))
        trainer = GridTrainer(data, train_idx, cfg, config.steps)

        def state():
            return trainer.state_tensors()

        def load(ck):
            trainer.load_state(ck.tensors, ck.step)
            trainer.optimizer.load_state_dict(ck.optimizer_state)

        def one_step(i):
            return trainer.step(i, gen)

        def optimizer():
            return trainer.optimizer

        def render(cams, H, W):
            return render_grid_images(trainer.field, cams, H, W, trainer.step_size, data.background)[0]
    else:
        from lib3d.fields.nerf import BookNeuralRadianceField
        from lib3d.render.volumetric import (
            EmissionAbsorptionRaymarcher,
            ImplicitRenderer,
            MonteCarloRaysampler,
        )

        b = config.book
        nerf = BookNeuralRadianceField(b.n_harmonic_functions, b.n_hidden_neurons).to(ctx.device)
        mc = MonteCarloRaysampler(-1.0, 1.0, -1.0, 1.0, n_rays_per_image=b.n_rays_per_image,
                                  n_pts_per_ray=b.n_pts_per_ray, min_depth=b.min_depth, max_depth=b.max_depth)
        renderer_mc = ImplicitRenderer(mc, EmissionAbsorptionRaymarcher())
        opt = torch.optim.Adam(nerf.parameters(), lr=b.lr)
        train_cams = camera_subset(data.cameras, train_idx)
        train_imgs, train_sil = data.images[train_idx], data.silhouettes[train_idx]

        def state():
            return {k: v.detach() for k, v in nerf.state_dict().items()}

        def load(ck):
            nerf.load_state_dict(ck.tensors)
            opt.load_state_dict(ck.optimizer_state)

        def one_step(i):
            if i == round(config.steps * 0.75):  # the book: lr / 10 at 75% of the steps
                for g in opt.param_groups:
                    g["lr"] = b.lr * 0.1
            per = max(1, b.batch_cameras // ctx.world_size)
            sel = torch.randperm(len(train_idx), generator=gen, device=ctx.device)[:per]
            return book_nerf_step(nerf, renderer_mc, opt, camera_subset(train_cams, sel), train_imgs[sel],
                                  train_sil[sel], generator=gen)

        def optimizer():
            return opt

        def render(cams, H, W):
            return render_book_images(nerf, cams, H, W, b.n_pts_per_ray, b.min_depth, b.max_depth)[0]

    start = 0
    ck = run.load_checkpoint()
    if ck is not None:
        load(ck)
        start = ck.step
        if ctx.is_main:
            print(f"[{JOB}] resumed from {ck.path} at step {start}", flush=True)
    rays_per_step = (config.grid.batch_rays if config.method == "grid"
                     else config.book.batch_cameras * config.book.n_rays_per_image)
    t_train = time.time()
    step = start
    history = []
    every = config.run.checkpoint_every
    stopped_early = False
    for step in run.progress(range(start, config.steps), total=config.steps, initial=start, desc=JOB):
        m = one_step(step)
        done = step + 1
        if done % max(config.run.log_every, 1) == 0 or done == config.steps:
            m["rays_per_s"] = rays_per_step * (done - start) / max(time.time() - t_train, 1e-9)
            run.log_scalars(done, m)
        if config.eval_every > 0 and done % config.eval_every == 0 and done != config.steps and ctx.is_main:
            _, p, s = _evaluate(render, data, test_idx, run, done)
            history.append({"step": done, "minutes": (time.time() - t_train) / 60, "psnr": float(p.mean()),
                            "ssim": float(s.mean())})
            print(f"[{JOB}] step {done}: held-out PSNR {float(p.mean()):.2f} dB, SSIM {float(s.mean()):.3f}",
                  flush=True)
        over = config.time_limit_s > 0 and time.time() - t_train > config.time_limit_s
        if ctx.world_size > 1:
            flag = torch.tensor([1.0 if over else 0.0])
            torch.distributed.all_reduce(flag)
            over = bool(flag.item() > 0)
        if (every > 0 and done % every == 0) or done == config.steps or over:
            run.save_checkpoint(done, state(), optimizer())
        if over:
            stopped_early = True
            step = done
            break
    else:
        step = config.steps
    train_s = time.time() - t_train
    metrics = {}
    if ctx.is_main:
        imgs, p, s = _evaluate(render, data, test_idx, run, step)
        history.append({"step": step, "minutes": train_s / 60, "psnr": float(p.mean()), "ssim": float(s.mean())})
        from lib3d.io.images import image_grid

        target = data.images[test_idx]
        grid = image_grid(torch.cat([imgs, target]).cpu(), rows=2)
        run.save_image("heldout.png", grid)
        if config.turntable_frames > 0:
            H, W = data.images.shape[1:3]
            dist_cam = float(data.cameras.get_camera_center()[0].norm())
            cams = turntable_cameras(data.cameras, config.turntable_frames, dist=dist_cam, device=ctx.device)
            frames = torch.cat([render(cams[i:i + 8], H, W) for i in range(0, config.turntable_frames, 8)])
            run.save_gif("turntable.gif", frames.cpu(), fps=12)
        metrics = {
            "data": config.data, "method": config.method, "steps": step, "stopped_early": stopped_early,
            "world_size": ctx.world_size, "test_psnr": float(p.mean()), "test_ssim": float(s.mean()),
            "test_psnr_per_view": [float(x) for x in p], "train_seconds": train_s,
            "total_seconds": time.time() - t_start, "rays_per_second": rays_per_step * (step - start) / max(train_s, 1e-9),
            "history": history,
        }
        run.write_metrics(metrics)
        print(f"[{JOB}] held-out PSNR {metrics['test_psnr']:.2f} dB, SSIM {metrics['test_ssim']:.3f} after "
              f"{step} steps ({train_s / 60:.1f} min training, {metrics['total_seconds'] / 60:.1f} min total); "
              f"outputs in {run.dir}", flush=True)
    run.close()
    return metrics


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.fit(train_loop, config, job_name=JOB)


if __name__ == "__main__":
    main()
