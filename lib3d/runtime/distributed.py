"""Ray: joining or starting a cluster, data-parallel training over a worker group, batched evaluation.

Training (``fit``) follows Ray Train's ``TorchTrainer`` contract, built on Ray core because ``ray.train``
needs ``ray[train]`` (pandas, pyarrow), which lib3d does not depend on:

- a job writes one ``train_loop_per_worker(config)``; with ``config.ray.num_workers`` 0 (or 1 when no
  cluster address is set) it runs in this process (no Ray at all: fast start-up); otherwise each of N Ray
  actors (N = 1 on a cluster: one remote worker, e.g. on a GPU node) runs it after joining a
  ``torch.distributed`` process group (gloo on CPU, NCCL with ``use_gpu``), resources per worker from
  ``RayConfig`` (the analogue of ``ScalingConfig``);
- inside the loop ``worker_context()`` gives rank, world size and device, ``prepare_model`` wraps the model
  in DDP, ``shard_indices`` / ``rank_generator`` give each rank its own disjoint shard, and the ``Run`` from
  ``start_run`` makes rank 0 the only writer of logs and checkpoints;
- a lost worker (or a failed step) stops the group; it is restarted up to ``ray.max_failures`` times (the
  analogue of ``FailureConfig``) and every rank resumes from the run's last checkpoint through
  ``run.load_checkpoint()`` (the analogue of ``ray.train.get_checkpoint()``). On a multi-node cluster the
  run directory (``run.output_root``) must be on storage all nodes share.

Evaluation (``evaluate``) maps a predictor class over batches with a pool of Ray actors that each load the
model once (one per GPU with ``use_gpu``), retries failed tasks on restarted actors, shows progress and
returns results in input order.

Dimension names: N inputs, B batch.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from lib3d.runtime.run import resolve_run_config

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

    Reads the ``torch.distributed`` process group set up by ``fit`` (rank 0 of 1 without one).

    Args:
        use_gpu: compute on CUDA (each Ray GPU worker sees its own GPU as ``cuda:0``); raises if no GPU.

    Raises:
        RuntimeError: if ``use_gpu`` and CUDA is not available.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("worker_context: use_gpu=True but CUDA is not available on this worker")
        device = torch.device("cuda", 0 if "CUDA_VISIBLE_DEVICES" in os.environ and world > 1 else local)
    else:
        device = torch.device("cpu")
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
        ray_config: a ``configs.common.RayConfig`` (None: defaults).
        quiet: do not print.

    Returns:
        Ray's context object (``.dashboard_url``, ``.address_info``), or None if already initialised.
    """
    import ray

    from configs.common import RayConfig

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class _TrainWorker:
    """One training process of a worker group (a Ray actor)."""

    def info(self) -> tuple[str, int, int]:
        import ray

        return ray.util.get_node_ip_address(), os.getpid(), _free_port()

    def run(self, fn: Callable[[Any], Any], config: Any, rank: int, world: int, local_rank: int,
            master_addr: str, master_port: int, backend: str, timeout_s: float) -> Any:
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank),
                           "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray shows each GPU actor only its own GPU(s)
        torch.distributed.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                             rank=rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=timeout_s))
        try:
            return fn(config)
        finally:
            torch.distributed.destroy_process_group()


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns.

    Attributes:
        results: each rank's return value of ``train_loop_per_worker`` (rank order; one entry in-process).
        restarts: how many times the worker group was restarted after a failure.
        config: the config the workers ran (run name and output root resolved).
    """

    results: list[Any]
    restarts: int
    config: Any

    @property
    def result(self) -> Any:
        """Rank 0's return value."""
        return self.results[0]


def fit(train_loop_per_worker: Callable[[Any], T], config: Any, job_name: str,
        collective_timeout_s: float = 1800.0) -> FitResult:
    """Run ``train_loop_per_worker(config)`` in-process or on a Ray worker group with DDP.

    Args:
        train_loop_per_worker: a picklable (module-level) function of the config; it calls
            ``start_run(job_name, config)``, ``worker_context``, ``prepare_model``, ``run.load_checkpoint``
            and ``run.save_checkpoint`` so that it runs the same on 1 or N workers and after a restart.
        config: a frozen dataclass config with ``run: RunConfig`` and ``ray: RayConfig`` fields.
        job_name: the job's name (run directory ``<output_root>/<job_name>/<run.name>``).
        collective_timeout_s: ``torch.distributed`` timeout of a collective.

    Returns:
        ``FitResult`` with each rank's return value.

    Raises:
        RuntimeError: when the group failed more than ``ray.max_failures`` times (chained to the last error),
            or could not be scheduled within ``ray.schedule_timeout_s``.
    """
    from configs.common import RayConfig
    from lib3d.runtime.config import find_field

    config = resolve_run_config(job_name, config)
    found = find_field(config, RayConfig)
    rcfg = found[1] if found else RayConfig()
    on_cluster = bool(rcfg.address or os.environ.get("RAY_ADDRESS"))
    if rcfg.num_workers <= 0 or (rcfg.num_workers == 1 and not on_cluster):
        return FitResult(results=[train_loop_per_worker(config)], restarts=0, config=config)

    import ray
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    init_ray(rcfg)
    backend = "nccl" if rcfg.use_gpu else "gloo"
    remote = ray.remote(num_cpus=rcfg.cpus_per_worker,
                        num_gpus=rcfg.gpus_per_worker if rcfg.use_gpu else 0, max_restarts=0)(_TrainWorker)
    failures = 0
    while True:
        actors = [remote.remote() for _ in range(rcfg.num_workers)]
        try:
            pending_info = [a.info.remote() for a in actors]
            t0 = time.monotonic()
            while True:  # say so when the cluster cannot place the group yet (Ray/the autoscaler keeps trying)
                wait_s = 30.0 if rcfg.schedule_timeout_s is None else \
                    max(0.1, min(30.0, rcfg.schedule_timeout_s - (time.monotonic() - t0)))
                ready, _ = ray.wait(pending_info, num_returns=len(pending_info), timeout=wait_s)
                if len(ready) == len(pending_info):
                    break
                if rcfg.schedule_timeout_s is not None and time.monotonic() - t0 >= rcfg.schedule_timeout_s:
                    raise RuntimeError(
                        f"fit({job_name}): {len(pending_info) - len(ready)} of {len(actors)} workers "
                        f"({rcfg.cpus_per_worker} CPU, {rcfg.gpus_per_worker if rcfg.use_gpu else 0} GPU each) "
                        f"could not be scheduled within {rcfg.schedule_timeout_s} s; cluster resources: "
                        f"{ray.cluster_resources()}")
                print(f"[lib3d] waiting for {len(pending_info) - len(ready)} of {len(actors)} workers "
                      f"({rcfg.cpus_per_worker} CPU, {rcfg.gpus_per_worker if rcfg.use_gpu else 0} GPU each); "
                      f"available: {ray.available_resources()}", file=sys.stderr, flush=True)
            infos = ray.get(pending_info)
            master_addr, _, master_port = infos[0]
            per_node: dict[str, int] = {}
            local_ranks = []
            for ip, _, _ in infos:
                local_ranks.append(per_node.get(ip, 0))
                per_node[ip] = per_node.get(ip, 0) + 1
            refs = [a.run.remote(train_loop_per_worker, config, r, len(actors), local_ranks[r], master_addr,
                                 master_port, backend, collective_timeout_s) for r, a in enumerate(actors)]
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done[0])  # raises as soon as any worker fails
            return FitResult(results=ray.get(refs), restarts=failures, config=config)
        except (RayActorError, RayTaskError, WorkerCrashedError) as e:
            failures += 1
            if 0 <= rcfg.max_failures < failures:
                raise RuntimeError(f"fit({job_name}): the worker group failed {failures} times "
                                   f"(max_failures={rcfg.max_failures})") from e
            print(f"[lib3d] worker group failed ({type(e).__name__}); restart {failures}"
                  f"/{rcfg.max_failures} from the last checkpoint", file=sys.stderr, flush=True)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)


# ------------------------------------------------------------------------------------------ evaluation


class _EvalActor:
    def __init__(self, factory: Callable[..., Callable[[Any], Any]], args: tuple, kwargs: dict):
        self.predictor = factory(*args, **kwargs)

    def predict(self, batch: Any) -> Any:
        with torch.inference_mode():
            out = self.predictor(batch)
        return _to_cpu(out)


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def _batches(inputs: Any, batch_size: int) -> list[Any]:
    n = len(inputs)
    return [inputs[i: i + batch_size] for i in range(0, n, batch_size)]


def _gather(outputs: list[Any]) -> Any:
    if outputs and all(isinstance(o, torch.Tensor) for o in outputs):
        return torch.cat(outputs, dim=0)
    if outputs and all(isinstance(o, dict) for o in outputs):
        return {k: _gather([o[k] for o in outputs]) for k in outputs[0]}
    flat: list[Any] = []
    for o in outputs:
        flat.extend(o)
    return flat


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
) -> Any:
    """Map a predictor over ``inputs`` in batches and gather the outputs in input order.

    The predictor is a class (or factory) built once per actor as ``predictor(*predictor_args,
    **predictor_kwargs)`` (load the model there) and called on each batch under ``torch.inference_mode()``;
    a batch is ``inputs[i : i + batch_size]`` (a tensor slice or a list). It returns a ``(B, ...)`` tensor,
    a dict of them, or a list of B items.

    Args:
        predictor: callable class / factory (picklable, module-level).
        inputs: N items (a tensor, indexed along dim 0, or a sequence).
        batch_size: B, items per call.
        num_actors: 0: run in this process (no Ray); >= 1: that many Ray actors (call ``init_ray`` first to
            pick a cluster; an embedded Ray is started otherwise); -1: one actor per GPU of the cluster with
            ``use_gpu``, else one per ``cpus_per_actor`` CPUs. With ``use_gpu`` each actor holds one GPU.
        use_gpu: one GPU per actor.
        cpus_per_actor: CPUs per actor.
        max_retries: a batch whose actor died or raised is retried this many times (the actor restarted).
        predictor_args, predictor_kwargs: constructor arguments of the predictor.
        progress: show a tqdm bar.
        desc: progress-bar label.

    Returns:
        The per-batch outputs concatenated: a ``(N, ...)`` tensor, a dict of them, or a list of N items.

    Raises:
        ValueError: for batch_size < 1, num_actors < -1 or empty inputs.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or num_actors < -1:
        raise ValueError(f"evaluate: need batch_size >= 1 and num_actors >= -1, got {batch_size}, {num_actors}")
    if len(inputs) == 0:
        raise ValueError("evaluate: inputs is empty (N = 0)")
    batches = _batches(inputs, batch_size)
    kwargs = dict(predictor_kwargs or {})
    bar = tqdm(total=len(inputs), desc=desc, disable=not progress, dynamic_ncols=True, file=sys.stderr)
    outputs: list[Any] = []
    try:
        if num_actors == 0:
            local = _EvalActor(predictor, tuple(predictor_args), kwargs)
            for b in batches:
                outputs.append(local.predict(b))
                bar.update(len(b))
            return _gather(outputs)

        import ray
        from ray.util import ActorPool

        if not ray.is_initialized():
            init_ray()
        if num_actors == -1:
            res = ray.cluster_resources()
            num_actors = int(res.get("GPU", 0)) if use_gpu else int(res.get("CPU", 1) // cpus_per_actor)
            if num_actors < 1:
                raise ValueError(f"evaluate: num_actors=-1 found no {'GPU' if use_gpu else 'CPU'} in the cluster")
        remote = ray.remote(num_cpus=cpus_per_actor, num_gpus=1 if use_gpu else 0,
                            max_restarts=max_retries, max_task_retries=max_retries)(_EvalActor)
        actors = [remote.remote(predictor, tuple(predictor_args), kwargs)
                  for _ in range(min(num_actors, len(batches)))]
        try:
            pool = ActorPool(actors)
            for out, b in zip(pool.map(lambda a, b: a.predict.options(retry_exceptions=True).remote(b),
                                       batches), batches):
                outputs.append(out)
                bar.update(len(b))
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
        return _gather(outputs)
    finally:
        bar.close()
