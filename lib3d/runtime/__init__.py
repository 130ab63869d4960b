"""The machinery shared by jobs: command line, run directories, checkpoints, Ray training and evaluation.

A job is ``python -m jobs.<name> [PRESET] [--field value ...]``::

    from configs.my_job import PRESETS
    from lib3d import runtime

    def main():
        config = runtime.cli(PRESETS, description="...")
        run = runtime.start_run("my_job", config)          # results/my_job/<run-name>/
        ckpt = run.load_checkpoint()                       # resume if the run dir has one
        for step in run.progress(range(start, steps)):
            ...
            run.log_scalars(step, {"loss": loss})
            run.save_checkpoint(step, model.state_dict(), optimizer)
        run.write_metrics({"final_loss": loss})
        run.close()

The same loop in-process or on N Ray Train workers (``TorchTrainer``, ``--ray.num-workers N``; see
``jobs/fit_rigid.py``)::

    def train_loop(config):                                # runs in-process, or on each Ray worker
        ctx = runtime.worker_context(config.ray.use_gpu)   # rank, world_size, device
        run = runtime.start_run("my_job", config, rank=ctx.rank, world_size=ctx.world_size)
        runtime.seed_everything(config.run.seed, ctx.rank)
        model = runtime.prepare_model(Model(), ctx)        # DDP when world_size > 1
        ...
        shard = runtime.shard_indices(batch_size, ctx.rank, ctx.world_size)   # this rank's part
        ...
        run.save_checkpoint(step, runtime.unwrap_model(model).state_dict(), opt)  # EVERY rank calls it
        # (rank 0 writes it; with Ray Train every rank reports it: ray.train.report)

    runtime.fit(train_loop, config, job_name="my_job")     # Ray Train restarts from the last checkpoint

Batch inference: ``runtime.evaluate(PredictorClass, inputs, batch_size, num_actors=K)``.

Dimension names used in docstrings: N batch / samples, B batch of an evaluation call, T frames,
H/W image height/width, C channels.

Importing this package does not import Ray; the Ray helpers import it when called.
"""

from lib3d.runtime.allocator import keep_freed_memory
from lib3d.runtime.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng_state,
    flatten_optimizer_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_safetensors,
    restore_rng_state,
    save_checkpoint,
    save_safetensors,
    unflatten_optimizer_state,
)
from lib3d.runtime.config import cli, config_to_dict
from lib3d.runtime.distributed import (
    FitResult,
    WorkerContext,
    all_reduce_mean,
    derive_seed,
    evaluate,
    fit,
    init_ray,
    prepare_model,
    rank_generator,
    seed_everything,
    shard_indices,
    unwrap_model,
    worker_context,
)
from lib3d.runtime.run import Run, resolve_run_config, start_run

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "FitResult",
    "Run",
    "WorkerContext",
    "all_reduce_mean",
    "capture_rng_state",
    "cli",
    "config_to_dict",
    "derive_seed",
    "evaluate",
    "fit",
    "flatten_optimizer_state",
    "init_ray",
    "keep_freed_memory",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_safetensors",
    "prepare_model",
    "rank_generator",
    "resolve_run_config",
    "restore_rng_state",
    "save_checkpoint",
    "save_safetensors",
    "seed_everything",
    "shard_indices",
    "start_run",
    "unflatten_optimizer_state",
    "unwrap_model",
    "worker_context",
]
