"""The machinery shared by jobs: command line, run directories, checkpoints, the one training loop, Ray Train
and Ray Data evaluation.

A job is ``python -m jobs.<name> [PRESET] [--field value ...]`` and has one shape::

    from lib3d import runtime                             # (PRESETS: the job's named configs, frozen
                                                          #  dataclasses with run/ray fields, kept in the
                                                          #  application's configs/ package)
    from lib3d.systems.my_system import MySystem

    def main(args=None):
        config = runtime.cli(PRESETS, description=__doc__, args=args)
        return runtime.train(MySystem(), config)           # in-process, or --ray.num-workers N Ray Train workers

    if __name__ == "__main__":
        runtime.run_main(main)                             # a user's mistake: one line, exit status 2

A system (``lib3d/systems/``) follows the contract of ``lib3d.runtime.system``: ``init(config, ctx) ->
TrainState`` (named modules, optimizers, schedulers, generators, JSON extras, data), ``train_step(state, step,
generator) -> scalars``, ``evaluate(state, step) -> Evaluation`` (metrics, images, GIFs) and
``num_steps(config)``. ``train`` owns the worker context, run directory, seeding, resume, logging cadence,
time limit, checkpoints, TensorBoard and ``metrics.json``.

Batch inference: ``runtime.evaluate(PredictorClass, inputs, batch_size, num_actors=K)`` (Ray Data
``map_batches`` with K actors that load the model once; in this process with K = 0).

Lower-level pieces stay public for code outside the contract: ``start_run`` / ``Run`` (run directory,
TensorBoard, checkpoints), ``fit`` (any per-worker loop on Ray Train), ``worker_context``,
``shard_indices``, ``all_reduce_gradients``, ``broadcast_module``, ``sync_buffers``, ``prepare_model``.

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
from lib3d.runtime.config import RayConfig, RunConfig, UserError, cli, config_to_dict, run_main
from lib3d.runtime.distributed import (
    FitResult,
    WorkerContext,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_module,
    derive_seed,
    evaluate,
    fit,
    init_ray,
    prepare_model,
    rank_generator,
    seed_everything,
    shard_indices,
    sync_buffers,
    unwrap_model,
    worker_context,
)
from lib3d.runtime.run import Run, resolve_run_config, run_directory, start_run
from lib3d.runtime.system import (
    Evaluation,
    System,
    TrainState,
    load_train_state,
    state_digest,
    step_generator,
    train,
    train_state_tensors,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Evaluation",
    "FitResult",
    "RayConfig",
    "Run",
    "RunConfig",
    "System",
    "TrainState",
    "UserError",
    "WorkerContext",
    "all_reduce_gradients",
    "all_reduce_mean",
    "broadcast_module",
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
    "load_train_state",
    "prepare_model",
    "rank_generator",
    "resolve_run_config",
    "restore_rng_state",
    "run_directory",
    "run_main",
    "save_checkpoint",
    "save_safetensors",
    "seed_everything",
    "shard_indices",
    "start_run",
    "state_digest",
    "step_generator",
    "sync_buffers",
    "train",
    "train_state_tensors",
    "unflatten_optimizer_state",
    "unwrap_model",
    "worker_context",
]
