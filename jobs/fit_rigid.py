"""Recover a similarity transform between two procedural point clouds (the runtime's smoke job).

    python -m jobs.fit_rigid                      # default preset, in this process
    python -m jobs.fit_rigid smoke --run.name s1  # 30 steps
    python -m jobs.fit_rigid ddp                  # 2 Ray workers, DDP
    python -m jobs.fit_rigid --help
"""

from __future__ import annotations

import os
import signal
import time

import torch

from configs.fit_rigid import PRESETS, FitRigidConfig
from lib3d import runtime
from lib3d.runtime import distributed as dist
from lib3d.runtime import smoke

JOB = "fit_rigid"
_T0 = time.time()  # fallback start time when psutil is unavailable


def _process_start() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except (ImportError, OSError):  # no psutil: count from this module's import
        return _T0


def train_loop(config: FitRigidConfig) -> dict[str, torch.Tensor]:
    """One worker's training loop (in-process or a Ray worker); returns its final parameters."""
    ctx = dist.worker_context(config.ray.use_gpu)
    run = runtime.start_run(JOB, config, rank=ctx.rank, world_size=ctx.world_size, quiet=not ctx.is_main)
    dist.seed_everything(config.run.seed, ctx.rank)
    problem = smoke.make_rigid_problem(config.num_points, config.run.seed, config.noise, device=ctx.device)
    model = dist.prepare_model(smoke.RigidTransform(), ctx)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 0
    ckpt = run.load_checkpoint()
    if ckpt is not None:
        dist.unwrap_model(model).load_state_dict(ckpt.tensors)
        opt.load_state_dict(ckpt.optimizer_state)
        start = ckpt.step
        if ctx.is_main:
            print(f"[{JOB}] resumed from {ckpt.path} at step {start}", flush=True)
    shard = dist.shard_indices(config.batch_size, ctx.rank, ctx.world_size)
    every = config.run.checkpoint_every
    startup_s = None
    loss = torch.zeros((), device=ctx.device)
    for step in run.progress(range(start, config.steps), total=config.steps, initial=start, desc=JOB):
        if step == config.kill_worker_at_step and ctx.rank == ctx.world_size - 1:
            marker = run.dir / f".killed-at-{step}"
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        idx = smoke.batch_indices(config.num_points, config.batch_size, config.run.seed, step, ctx.device)
        idx = idx[shard.start: shard.stop]
        pred = model(problem.source[idx])
        loss = ((pred - problem.target[idx]) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if startup_s is None:
            startup_s = time.time() - _process_start()
        done = step + 1
        if done % max(config.run.log_every, 1) == 0 or done == config.steps:
            run.log_scalars(done, {"loss": dist.all_reduce_mean(loss)})
        if (every > 0 and done % every == 0) or done == config.steps:
            run.save_checkpoint(done, dist.unwrap_model(model).state_dict(), opt)
    params = {k: v.detach().cpu() for k, v in dist.unwrap_model(model).state_dict().items()}
    with torch.no_grad():
        m = dist.unwrap_model(model)
        from lib3d.geometry.rotations import so3_exp_map

        rot = so3_exp_map(m.log_rot.reshape(1, 3))[0]
        metrics = {
            "steps": config.steps,
            "world_size": ctx.world_size,
            "final_loss": float(dist.all_reduce_mean(loss.detach())),
            "rotation_error_deg": float(smoke.rotation_error_deg(rot, problem.rotation)),
            "translation_error": float((m.translation - problem.translation).norm()),
            "scale_error": float((m.log_scale.exp()[0] - problem.scale).abs()),
        }
    if startup_s is not None:
        metrics["startup_to_first_step_s"] = startup_s
    run.write_metrics(metrics)
    run.close()
    return params


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.fit(train_loop, config, job_name=JOB)


if __name__ == "__main__":
    main()
