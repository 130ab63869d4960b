"""Ray: joining or starting a cluster, data-parallel training with Ray Train, batched evaluation.

Training (``fit``) is Ray Train's ``TorchTrainer`` (Train V2) with lib3d's run directories around it:

- a job writes one ``train_loop_per_worker(config)``; with ``config.ray.num_workers`` 0 (or 1 when no
  cluster address is set) it runs in this process (no Ray at all: fast start-up); otherwise a
  ``TorchTrainer`` runs it on N workers (N = 1 on a cluster: one remote worker, e.g. on a GPU node) with
  DDP over ``torch.distributed`` (``TorchConfig``: gloo on CPU, NCCL with ``use_gpu``) and a
  ``ScalingConfig`` built from ``RayConfig`` (workers, GPUs, CPUs/GPUs per worker);
- inside the loop ``worker_context()`` gives rank, world size and device (from ``ray.train.get_context()``
  and ``ray.train.torch.get_device()``), ``prepare_model`` wraps the model in DDP, ``shard_indices`` /
  ``rank_generator`` give each rank its own disjoint shard, and the ``Run`` from ``start_run`` makes rank 0
  the only writer of logs and checkpoints;
- ``run.save_checkpoint`` (called by every rank) has rank 0 write lib3d's safetensors checkpoint and every
  rank call ``ray.train.report(metrics, checkpoint=...)`` with rank 0 passing that checkpoint directory;
  a lost worker (or a failed step) makes Ray Train restart the group up to ``ray.max_failures`` times
  (``FailureConfig``), and ``run.load_checkpoint()`` resumes every rank from ``ray.train.get_checkpoint()``.
  Ray Train's state and its copies of the checkpoints live in ``<run dir>/ray_train/``; on a multi-node
  cluster the run directory (``run.output_root``) must be on storage all nodes share.
- Ray Train does not return the workers' return values: each rank sends its own to the driver through a
  small Ray actor, and ``FitResult.results`` holds them in rank order.

Evaluation (``evaluate``) maps a predictor class over batches with Ray Data (``map_batches`` with an actor
class that loads the model once, ``concurrency`` actors, one GPU each with ``use_gpu``), retries failed
batches on restarted actors, streams results in input order as they finish and shows progress.

Dimension names: N inputs, B batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from lib3d.runtime.run import _ray_train_context, resolve_run_config

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ rank helpers


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """Where this training worker stands.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: number of workers.
        local_rank: rank among the workers of this node.
        device: the device this worker computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only writer)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one worker is active."""
        return self.world_size > 1


def worker_context(use_gpu: bool = False) -> WorkerContext:
    """The calling worker's rank, world size and device.

    Inside a Ray Train worker (``fit`` with Ray) it reads ``ray.train.get_context()`` (world rank, local
    rank, world size) and ``ray.train.torch.get_device()``; elsewhere the ``torch.distributed`` process
    group (rank 0 of 1 without one).

    Args:
        use_gpu: compute on CUDA (a Ray GPU worker gets the GPU Ray assigned to it); raises if no GPU.

    Raises:
        RuntimeError: if ``use_gpu`` and CUDA is not available.
    """
    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError("worker_context: use_gpu=True but CUDA is not available on this worker")
    train_ctx = _ray_train_context()
    if train_ctx is not None:
        rank, world, local = train_ctx.get_world_rank(), train_ctx.get_world_size(), train_ctx.get_local_rank()
        if use_gpu:
            import ray.train.torch

            device = ray.train.torch.get_device()
        else:
            device = torch.device("cpu")
        return WorkerContext(rank=rank, world_size=world, local_rank=local, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = torch.device("cuda", local) if use_gpu else torch.device("cpu")
    return WorkerContext(rank=rank, world_size=world, local_rank=local, device=device)


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """The contiguous, disjoint share of ``range(n)`` owned by ``rank`` (sizes differ by at most one).

    Concatenating the shards of ranks 0..world_size-1 gives ``range(n)`` in order, so N workers with a
    per-rank mean loss see exactly the batch one worker sees (with n divisible by world_size, DDP's gradient
    average equals the one-worker gradient).

    Raises:
        ValueError: for n < 0, world_size < 1 or rank outside [0, world_size).
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_indices: need n >= 0, world_size >= 1 and 0 <= rank < world_size; got "
                         f"n={n}, rank={rank}, world_size={world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (e.g. rank, step) by hashing: distinct keys give
    independent streams, the same keys the same stream on every machine."""
    h = hashlib.blake2b(repr((int(seed),) + tuple(keys)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def rank_generator(seed: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, "rank", rank)``: each rank its
    own reproducible stream."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, "rank", rank))
    return g


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed torch (CPU and CUDA), numpy and python's ``random`` with ``derive_seed(seed, "global", rank)``.

    Jobs call it once at start (per worker); code that needs reproducible randomness should still take
    explicit generators (``rank_generator``). Returns the derived seed.
    """
    import random

    import numpy as np

    s = derive_seed(seed, "global", rank)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)
    return s


def prepare_model(model: torch.nn.Module, ctx: WorkerContext | None = None) -> torch.nn.Module:
    """Move ``model`` to the worker's device and wrap it in ``DistributedDataParallel`` when distributed.

    DDP broadcasts rank 0's parameters on wrapping and averages gradients in ``backward``.
    """
    ctx = ctx or worker_context()
    model = model.to(ctx.device)
    if ctx.distributed and any(p.requires_grad for p in model.parameters()):
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    return model


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise); use it for ``state_dict()``."""
    return getattr(model, "module", model)


def all_reduce_gradients(params: torch.nn.Module | Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` (a module's parameters, or an iterable of them) over the workers
    (no-op without a ``torch.distributed`` group of 2+).

    One flattened ``all_reduce`` per call on the parameters' device: the data-parallel step of DDP for code
    that does not run its forward through a ``DistributedDataParallel`` wrapper (fields called through render
    functions, GANs whose discriminator also runs inside the generator's step). Parameters without a
    gradient on some rank count as zero there; parameters with ``requires_grad=False`` are skipped.
    """
    if not _distributed():
        return
    params = params.parameters() if isinstance(params, torch.nn.Module) else params
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    _collective_in_place([p.grad for p in params], "mean")


def _collective_in_place(tensors: list, op: str) -> None:
    """Broadcast from rank 0 (``op="broadcast"``) or average (``op="mean"``) ``tensors`` over the workers, in
    place: one flattened collective per (dtype, device) group."""
    groups: dict = {}
    for t in tensors:
        if t.numel():
            groups.setdefault((t.dtype, t.device), []).append(t)
    with torch.no_grad():
        for ts in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in ts])
            if op == "mean":
                torch.distributed.all_reduce(flat)
                flat /= torch.distributed.get_world_size()
            else:
                torch.distributed.broadcast(flat, src=0)
            off = 0
            for t in ts:
                t.copy_(flat[off:off + t.numel()].view_as(t))
                off += t.numel()


def _distributed() -> bool:
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every worker, in place (no-op without a ``torch.distributed``
    group of 2+): what ``DistributedDataParallel`` does when it wraps a module, so that networks initialised
    from rank-dependent random streams start equal. ``runtime.train`` calls it for every module of the
    ``TrainState`` right after ``System.init``."""
    if _distributed():
        _collective_in_place(list(module.parameters()) + list(module.buffers()), "broadcast")


def sync_buffers(module: torch.nn.Module) -> None:
    """Make ``module``'s buffers equal on every worker (no-op without a ``torch.distributed`` group of 2+).

    Floating-point buffers (batch norm's running mean and variance, EMA statistics) are averaged over the
    workers; other buffers (``num_batches_tracked``, which every rank counts alike) are broadcast from rank 0.
    Gradient averaging alone keeps the parameters in step, but each rank's batch norm tracks the statistics
    of its own shard, so without this the ranks drift apart (DDP broadcasts rank 0's buffers instead; the
    average is the running statistic of the whole global batch's shards). ``runtime.train`` calls this for
    every module of the ``TrainState`` after each step.
    """
    if _distributed():
        buffers = list(module.buffers())
        _collective_in_place([b for b in buffers if b.is_floating_point()], "mean")
        _collective_in_place([b for b in buffers if not b.is_floating_point()], "broadcast")


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all workers (``value`` itself when not distributed); for logging."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value


# ------------------------------------------------------------------------------------------------- Ray


def init_ray(ray_config: Any = None, quiet: bool = False) -> Any:
    """Connect to Ray: ``ray_config.address``, else ``RAY_ADDRESS``, else start an embedded local Ray.

    Prints the dashboard URL. Does nothing (but return the context) if Ray is already initialised.

    Args:
        ray_config: a ``lib3d.runtime.RayConfig`` (None: defaults).
        quiet: do not print.

    Returns:
        Ray's context object (``.dashboard_url``, ``.address_info``), or None if already initialised.
    """
    import ray

    from lib3d.runtime.config import RayConfig

    cfg = ray_config or RayConfig()
    if ray.is_initialized():
        return None
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    if address:
        ctx = ray.init(address=address, **kwargs)
    else:
        ctx = ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.include_dashboard,
                       dashboard_host="127.0.0.1", **kwargs)
    if not quiet:
        url = getattr(ctx, "dashboard_url", None)
        where = address or "embedded local Ray"
        print(f"[lib3d] Ray: {where}; dashboard: {'http://' + url if url else 'not running'}", flush=True)
    return ctx


class _ResultSink:
    """A CPU-free Ray actor that collects each rank's return value of ``train_loop_per_worker`` (Ray Train
    V2 does not hand them back) and counts how often rank 0 started the loop (restarts = starts - 1)."""

    def __init__(self):
        self.results: dict[int, Any] = {}
        self.starts = 0

    def start(self, rank: int) -> None:
        if rank == 0:
            self.starts += 1
        self.results.pop(rank, None)  # a restarted rank's old result is stale

    def put(self, rank: int, value: Any) -> None:
        self.results[rank] = value

    def get(self) -> tuple[dict[int, Any], int]:
        return self.results, self.starts


def _train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: the job's loop, its return value sent to the driver's sink."""
    import ray

    rank = ray.train.get_context().get_world_rank()
    sink = loop_config["sink"]
    ray.get(sink.start.remote(rank))
    out = loop_config["fn"](loop_config["config"])
    ray.get(sink.put.remote(rank, _to_cpu(out)))


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns.

    Attributes:
        results: each rank's return value of ``train_loop_per_worker`` from the run that finished (rank
            order; one entry in-process). With Ray each worker sends it to the driver through a small Ray
            actor (tensors moved to the CPU), since Ray Train does not return them.
        restarts: how many times the worker group was restarted after a failure (0 in-process).
        config: the config the workers ran (run name and output root resolved).
        checkpoint: the last checkpoint reported to Ray Train (``ray.train.Checkpoint``; None in-process or
            when none was reported).
        metrics: the metrics rank 0 last reported to Ray Train (empty in-process).
    """

    results: list[Any]
    restarts: int
    config: Any
    checkpoint: Any = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def result(self) -> Any:
        """Rank 0's return value."""
        return self.results[0]


def _worker_resources(rcfg: Any) -> dict[str, float]:
    """Ray resources of one training worker: ``{"CPU": cpus_per_worker[, "GPU": gpus_per_worker]}``."""
    resources = {"CPU": float(rcfg.cpus_per_worker)}
    if rcfg.use_gpu:
        resources["GPU"] = float(rcfg.gpus_per_worker)
    return resources


def _check_schedulable(rcfg: Any, job_name: str) -> None:
    """Raise if the worker group's bundles cannot be placed within ``rcfg.schedule_timeout_s`` (a placement
    group of the same shape is reserved, then released before Ray Train places the group)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = _worker_resources(rcfg)
    pg = placement_group([dict(bundle) for _ in range(rcfg.num_workers)], strategy="PACK")
    try:
        ready, _ = ray.wait([pg.ready()], timeout=rcfg.schedule_timeout_s)
        if not ready:
            raise RuntimeError(
                f"fit({job_name}): {rcfg.num_workers} workers ({bundle} each) could not be scheduled within "
                f"{rcfg.schedule_timeout_s} s; cluster resources: {ray.cluster_resources()}")
    finally:
        remove_placement_group(pg)


def fit(train_loop_per_worker: Callable[[Any], T], config: Any, job_name: str,
        collective_timeout_s: float = 1800.0) -> FitResult:
    """Run ``train_loop_per_worker(config)`` in-process, or on N workers with Ray Train's ``TorchTrainer``.

    In-process when ``ray.num_workers`` is 0, or 1 without a cluster address (no Ray is imported). Otherwise
    a ``TorchTrainer`` with ``ScalingConfig(num_workers, use_gpu, resources_per_worker={"CPU":
    cpus_per_worker, "GPU": gpus_per_worker})``, ``TorchConfig`` (gloo on CPU, NCCL with ``use_gpu``) and
    ``RunConfig(storage_path=<run dir>, name="ray_train", failure_config=FailureConfig(max_failures))``:
    Ray Train keeps its state and its copies of the reported checkpoints in ``<run dir>/ray_train/``.

    Args:
        train_loop_per_worker: a picklable (module-level) function of the config; it calls
            ``start_run(job_name, config)``, ``worker_context``, ``prepare_model``, ``run.load_checkpoint``
            and ``run.save_checkpoint`` (on every rank) so that it runs the same on 1 or N workers and after
            a restart (``run.save_checkpoint`` reports the checkpoint to Ray Train; ``run.load_checkpoint``
            resumes from ``ray.train.get_checkpoint()``).
        config: a frozen dataclass config with ``run: RunConfig`` and ``ray: RayConfig`` fields.
        job_name: the job's name (run directory ``<output_root>/<job_name>/<run.name>``).
        collective_timeout_s: ``torch.distributed`` timeout of a collective (``TorchConfig.timeout_s``).

    Returns:
        ``FitResult`` with each rank's return value.

    Raises:
        RuntimeError: when the group failed more than ``ray.max_failures`` times (chained to Ray Train's
            ``TrainingFailedError``), or could not be scheduled within ``ray.schedule_timeout_s``.
    """
    from lib3d.runtime.config import RayConfig, find_field

    config = resolve_run_config(job_name, config)
    found = find_field(config, RayConfig)
    rcfg = found[1] if found else RayConfig()
    on_cluster = bool(rcfg.address or os.environ.get("RAY_ADDRESS"))
    if rcfg.num_workers <= 0 or (rcfg.num_workers == 1 and not on_cluster):
        return FitResult(results=[train_loop_per_worker(config)], restarts=0, config=config)

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from lib3d.runtime.run import _run_config, run_directory

    init_ray(rcfg)
    if rcfg.schedule_timeout_s is not None:
        _check_schedulable(rcfg, job_name)
    run_cfg = _run_config(config)[1]
    run_dir = run_directory(job_name, config)
    resources = _worker_resources(rcfg)
    sink = ray.remote(num_cpus=0)(_ResultSink).remote()
    trainer = TorchTrainer(
        _train_fn_per_worker,
        train_loop_config={"fn": train_loop_per_worker, "config": config, "sink": sink},
        torch_config=TorchConfig(backend="nccl" if rcfg.use_gpu else "gloo", timeout_s=int(collective_timeout_s)),
        scaling_config=ray.train.ScalingConfig(num_workers=rcfg.num_workers, use_gpu=rcfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name="ray_train", storage_path=str(run_dir),
            failure_config=ray.train.FailureConfig(max_failures=rcfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=max(1, run_cfg.keep_checkpoints))),
    )
    try:
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as e:
            _, starts = ray.get(sink.get.remote())
            raise RuntimeError(f"fit({job_name}): the worker group failed {max(starts, 1)} times "
                               f"(max_failures={rcfg.max_failures})") from e
        results, starts = ray.get(sink.get.remote())
    finally:
        ray.kill(sink, no_restart=True)
    if sorted(results) != list(range(rcfg.num_workers)):
        raise RuntimeError(f"fit({job_name}): Ray Train finished but ranks {sorted(results)} of "
                           f"{rcfg.num_workers} returned a result")
    return FitResult(results=[results[r] for r in range(rcfg.num_workers)], restarts=max(starts - 1, 0),
                     config=config, checkpoint=result.checkpoint, metrics=dict(result.metrics or {}))


# ------------------------------------------------------------------------------------------ evaluation


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a NamedTuple: rebuilt field by field
        return type(x)(*(_to_cpu(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def _take(inputs: Any, index: Any) -> Any:
    """The items ``index`` (an int array) of ``inputs``: a tensor slice, or a list of items."""
    if isinstance(inputs, torch.Tensor):
        return inputs[torch.tensor(index, dtype=torch.long)]
    return [inputs[int(i)] for i in index]


def _columns(out: Any, n: int) -> dict[str, Any]:
    """A predictor's output for a batch of ``n`` as named columns of ``n`` rows (numpy for Ray Data)."""
    import numpy as np

    def column(name: str, v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            if v.ndim == 0 or v.shape[0] != n:
                raise ValueError(f"evaluate: output {name!r} must have the batch ({n}) as its first dimension, "
                                 f"got shape {tuple(v.shape)}")
            return v.detach().cpu().numpy()
        if isinstance(v, (list, tuple)):
            if len(v) != n:
                raise ValueError(f"evaluate: output {name!r} must hold one item per input ({n}), got {len(v)}")
            arr = np.empty(n, dtype=object)
            arr[:] = [_to_cpu(x) for x in v]
            return arr
        raise TypeError(f"evaluate: output {name!r} must be a (B, ...) tensor or a list of B items, "
                        f"got {type(v).__name__}")

    if isinstance(out, dict):
        if "__index__" in out:
            raise ValueError("evaluate: '__index__' is reserved")
        return {str(k): column(str(k), v) for k, v in out.items()}
    return {"__out__": column("output", out)}


class _BatchPredictor:
    """The callable class Ray Data maps over batches of indices: builds the user's predictor once (loading
    its model), looks the batch's items up in ``inputs`` and runs it under ``torch.inference_mode()``."""

    def __init__(self, factory: Callable[..., Callable[[Any], Any]], args: tuple, kwargs: dict, inputs: Any):
        self.predictor = factory(*args, **kwargs)
        self.inputs = inputs

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        index = batch["__index__"]
        with torch.inference_mode():
            out = self.predictor(_take(self.inputs, index))
        cols = _columns(out, len(index))
        cols["__index__"] = index
        return cols


def _from_columns(chunks: list[dict[str, Any]]) -> Any:
    """Concatenate per-batch columns into the predictor's output type (tensor, dict of tensors, list)."""
    import numpy as np

    def join(parts: list[Any]) -> Any:
        if parts[0].dtype == object:
            return [x for p in parts for x in p]
        return torch.from_numpy(np.concatenate(parts, axis=0))

    keys = [k for k in chunks[0] if k != "__index__"]
    if keys == ["__out__"]:
        return join([c["__out__"] for c in chunks])
    return {k: join([c[k] for c in chunks]) for k in keys}


def evaluate(
    predictor: Callable[..., Callable[[Any], Any]],
    inputs: Sequence[Any] | torch.Tensor,
    batch_size: int = 16,
    num_actors: int = 0,
    use_gpu: bool = False,
    cpus_per_actor: float = 1.0,
    max_retries: int = 3,
    predictor_args: tuple = (),
    predictor_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    on_batch: Callable[[list[int], Any], None] | None = None,
    keep_outputs: bool = True,
) -> Any:
    """Map a predictor over ``inputs`` in batches (Ray Data ``map_batches``) and gather outputs in input order.

    The predictor is a class (or factory) built once per actor as ``predictor(*predictor_args,
    **predictor_kwargs)`` (load the model there) and called on each batch under ``torch.inference_mode()``;
    a batch is ``inputs[i : i + batch_size]`` (a tensor slice, or a list of items, e.g. file paths that the
    predictor reads itself). It returns a ``(B, ...)`` tensor, a dict of ``(B, ...)`` tensors / lists of B
    items, or a list of B items.

    With ``num_actors >= 1`` the inputs become a Ray Dataset of indices streamed through
    ``map_batches(<predictor class>, concurrency=num_actors, num_gpus=1 if use_gpu, num_cpus=cpus_per_actor)``
    with order preserved; an actor that dies or raises is restarted and its batch retried up to
    ``max_retries`` times. Results arrive as batches finish: ``on_batch(indices, outputs)`` sees each one
    (write results as they come), a progress bar counts them.

    Args:
        predictor: callable class / factory (picklable, module-level).
        inputs: N items (a tensor, indexed along dim 0, or a sequence).
        batch_size: B, items per call.
        num_actors: 0: run in this process (no Ray); >= 1: that many Ray Data actors (call ``init_ray`` first
            to pick a cluster; an embedded Ray is started otherwise); -1: one actor per GPU of the cluster
            with ``use_gpu``, else one per ``cpus_per_actor`` CPUs.
        use_gpu: one GPU per actor.
        cpus_per_actor: CPUs per actor.
        max_retries: restarts of a dead actor and retries of a failed batch.
        predictor_args, predictor_kwargs: constructor arguments of the predictor.
        progress: show a tqdm bar.
        desc: progress-bar label.
        on_batch: called with (the batch's input indices, its outputs) as each batch arrives, in order.
        keep_outputs: gather and return every output; False keeps none (for large outputs that ``on_batch``
            writes away as they come) and returns None.

    Returns:
        The per-batch outputs concatenated: a ``(N, ...)`` tensor, a dict of them, or a list of N items
        (None with ``keep_outputs=False``).

    Raises:
        ValueError: for batch_size < 1, num_actors < -1 or empty inputs.
    """
    import numpy as np
    from tqdm.auto import tqdm

    if batch_size < 1 or num_actors < -1:
        raise ValueError(f"evaluate: need batch_size >= 1 and num_actors >= -1, got {batch_size}, {num_actors}")
    n = len(inputs)
    if n == 0:
        raise ValueError("evaluate: inputs is empty (N = 0)")
    kwargs = dict(predictor_kwargs or {})
    bar = tqdm(total=n, desc=desc, disable=not progress, dynamic_ncols=True, file=sys.stderr,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)
    chunks: list[dict[str, Any]] = []

    def take(cols: dict[str, Any]) -> None:
        index = [int(i) for i in cols["__index__"]]
        if keep_outputs:
            chunks.append(cols)
        if on_batch is not None:
            on_batch(index, _from_columns([cols]))
        bar.update(len(index))

    try:
        if num_actors == 0:
            local = _BatchPredictor(predictor, tuple(predictor_args), kwargs, inputs)
            for start in range(0, n, batch_size):
                take(local({"__index__": np.arange(start, min(start + batch_size, n))}))
            return _from_columns(chunks) if keep_outputs else None

        import ray
        import ray.data

        if not ray.is_initialized():
            init_ray()
        if num_actors == -1:
            res = ray.cluster_resources()
            num_actors = int(res.get("GPU", 0)) if use_gpu else int(res.get("CPU", 1) // cpus_per_actor)
            if num_actors < 1:
                raise ValueError(f"evaluate: num_actors=-1 found no {'GPU' if use_gpu else 'CPU'} in the cluster")
        num_actors = min(num_actors, -(-n // batch_size))
        context = ray.data.DataContext.get_current()
        saved = (context.execution_options.preserve_order, context.actor_task_retry_on_errors,
                 context.enable_progress_bars)
        context.execution_options.preserve_order = True
        context.actor_task_retry_on_errors = True
        context.enable_progress_bars = False
        try:
            ds = ray.data.from_items([{"__index__": i} for i in range(n)],
                                     override_num_blocks=-(-n // batch_size))
            with warnings.catch_warnings():
                # Ray 2.60 has no named parameter for the actors' retry limits yet and warns that the
                # generic ones go in 2.64; without them a batch that always fails would be retried forever
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
                ds = ds.map_batches(
                    _BatchPredictor, batch_size=batch_size, batch_format="numpy",
                    fn_constructor_args=(predictor, tuple(predictor_args), kwargs, inputs),
                    compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=cpus_per_actor,
                    num_gpus=1 if use_gpu else 0, max_restarts=max_retries, max_task_retries=max_retries)
            for cols in ds.iter_batches(batch_size=None, batch_format="numpy"):
                take(cols)
        finally:
            (context.execution_options.preserve_order, context.actor_task_retry_on_errors,
             context.enable_progress_bars) = saved
        if not keep_outputs:
            return None
        order = np.argsort(np.concatenate([c["__index__"] for c in chunks]), kind="stable")
        merged = {k: np.concatenate([c[k] for c in chunks])[order] for k in chunks[0]}
        return _from_columns([merged])
    finally:
        bar.close()
