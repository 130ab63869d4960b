"""The training contract every lib3d system follows, and the one loop that runs it.

A system is a class (in ``lib3d/systems/``) with no state of its own; everything that trains and resumes
lives in a ``TrainState`` that its ``init`` builds::

    class MySystem:
        name = "my_job"                                   # results/my_job/<run-name>/
        def num_steps(self, config) -> int: ...
        def init(self, config, ctx: WorkerContext) -> TrainState: ...
        def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict: ...
        def evaluate(self, state: TrainState, step: int) -> Evaluation: ...

    runtime.train(MySystem(), config)                    # in-process, or N Ray Train workers

``train`` owns everything around the science, identically for every system:

- the worker context (rank, world size, device) and the run directory (config printed and saved);
- seeding: ``train_step`` gets a ``torch.Generator`` on the worker's device seeded from (run seed, rank,
  step), and torch's global RNG is reseeded from the same key before each step, so a resumed run draws
  exactly what an uninterrupted one draws without saving any stream;
- resume: modules, optimizers, schedulers, ``TrainState.generators`` and ``TrainState.extra`` are restored
  from the newest checkpoint; a run that already finished reports its metrics and returns;
- logging cadence (``run.log_every``: TensorBoard scalars, learning rates, progress bar), periodic and final
  checkpoints (``run.checkpoint_every``; safetensors + JSON, written atomically), evaluations
  (``run.eval_every`` and at the end: metrics to TensorBoard and ``metrics.json``, images and GIFs to
  TensorBoard and ``media/``);
- a time limit (``run.time_limit_s``): rank 0's clock decides, and the decision is shared with every worker
  by a collective on the worker's own device (NCCL needs CUDA tensors), so all ranks stop at the same step.

Data parallelism is the system's: shard batches with ``shard_indices`` and average gradients with
``all_reduce_gradients`` after ``backward`` (or wrap a module with ``prepare_model``); the loop unwraps
DDP modules when it saves them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from lib3d.runtime import checkpoint as _ckpt
from lib3d.runtime.config import RayConfig, find_field
from lib3d.runtime.distributed import (
    FitResult,
    WorkerContext,
    broadcast_module,
    derive_seed,
    fit,
    seed_everything,
    sync_buffers,
    unwrap_model,
    worker_context,
)
from lib3d.runtime.run import Run, _run_config, start_run

__all__ = ["Evaluation", "System", "TrainState", "load_train_state", "state_digest", "step_generator", "train",
           "train_state_tensors"]


@dataclasses.dataclass
class TrainState:
    """Everything a system trains, and what a checkpoint restores.

    Attributes:
        modules: named modules (models, EMA copies); saved as ``"<name>.<state_dict key>"`` in
            ``model.safetensors`` (DDP wrappers unwrapped).
        optimizers: named optimizers; saved in ``optimizer.safetensors`` under ``optimizers/<name>``.
        schedulers: named objects with ``state_dict()`` / ``load_state_dict()`` whose states are
            JSON-serialisable (torch's learning-rate schedulers); saved in ``state.json``.
        generators: named ``torch.Generator`` s a system keeps across steps (rank 0's states are saved: use
            them for rank-independent streams; per-rank randomness comes from ``train_step``'s generator).
        extra: JSON-serialisable values that must resume (counters, schedules); saved in ``state.json``.
        data: the system's data and anything else it needs between steps (not saved).
    """

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer] = dataclasses.field(default_factory=dict)
    schedulers: dict[str, Any] = dataclasses.field(default_factory=dict)
    generators: dict[str, torch.Generator] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: Any = None


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What ``System.evaluate`` returns.

    Attributes:
        metrics: JSON-serialisable values; numbers are also logged to TensorBoard under ``eval/<name>``.
        images: ``{name: (H, W, 3|4) float in [0, 1] or uint8}``: TensorBoard and ``media/<name>.png``.
        gifs: ``{name: (T, H, W, 3|4)}``: ``media/<name>.gif``.
        gif_fps: frames per second of the GIFs.
    """

    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    images: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    gifs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    gif_fps: float = 10.0


class System(Protocol):
    """The training contract (see the module docstring)."""

    name: str

    def num_steps(self, config: Any) -> int:
        """Total training steps of ``config``."""
        ...

    def init(self, config: Any, ctx: WorkerContext) -> TrainState:
        """Load the data (on ``ctx.device``) and build modules, optimizers and schedulers."""
        ...

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> Mapping[str, Any]:
        """Run step ``step`` (0-based); return scalars to log (tensors are read only at log steps)."""
        ...

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        """Evaluate on rank 0 after ``step`` steps."""
        ...

    # Optional: ``check_config(self, config) -> None`` runs in the driver before any worker starts and
    # raises ``runtime.UserError`` for a user's mistake (a missing data path, an impossible value).


# --------------------------------------------------------------------------------------------- state


def train_state_tensors(state: TrainState) -> dict[str, torch.Tensor]:
    """The flat ``{"<module>.<key>": tensor}`` of every module in ``state`` (detached)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in state.modules.items():
        if "." in name:
            raise ValueError(f"TrainState.modules: a module name must not contain '.', got {name!r}")
        for k, v in unwrap_model(module).state_dict().items():
            out[f"{name}.{k}"] = v.detach()
    return out


def _state_extra(state: TrainState) -> dict[str, Any]:
    extra = {"state": dict(state.extra),
             "schedulers": {k: s.state_dict() for k, s in state.schedulers.items()}}
    try:
        json.dumps(extra)
    except TypeError as e:
        raise TypeError(f"TrainState.extra and scheduler states must be JSON-serialisable: {e}") from e
    return extra


def load_train_state(state: TrainState, ck: _ckpt.Checkpoint) -> None:
    """Restore modules, optimizers, schedulers and ``extra`` of ``state`` from checkpoint ``ck``.

    Raises:
        CheckpointError: when the checkpoint lacks a module or optimizer of ``state``, or a module's
            tensors do not match (the missing, unexpected and mismatched keys are named).
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ck.tensors.items():
        name, _, rest = key.partition(".")
        groups.setdefault(name, {})[rest] = value
    for name, module in state.modules.items():
        if name not in groups:
            raise _ckpt.CheckpointError(f"{ck.path}: no tensors of module {name!r} (holds {sorted(groups)})")
        target = unwrap_model(module)
        own = target.state_dict()
        missing = sorted(set(own) - set(groups[name]))
        unexpected = sorted(set(groups[name]) - set(own))
        shapes = [f"{k}: {tuple(groups[name][k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in groups[name] and groups[name][k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise _ckpt.CheckpointError(
                f"{ck.path}: module {name!r} does not match the checkpoint (another architecture or preset?): "
                f"missing {missing[:8]}, unexpected {unexpected[:8]}, shapes (saved vs model) {shapes[:8]}")
        target.load_state_dict(groups[name])
    for name, opt in state.optimizers.items():
        if name not in ck.optimizer_states:
            raise _ckpt.CheckpointError(f"{ck.path}: no state of optimizer {name!r} "
                                        f"(holds {sorted(ck.optimizer_states)})")
        opt.load_state_dict(ck.optimizer_states[name])
    saved = ck.extra.get("schedulers", {})
    for name, sched in state.schedulers.items():
        if name not in saved:
            raise _ckpt.CheckpointError(f"{ck.path}: no state of scheduler {name!r}")
        sched.load_state_dict(saved[name])
    state.extra.update(ck.extra.get("state", {}))


def step_generator(seed: int, rank: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator ``train`` hands to ``train_step``: on ``device``, seeded with
    ``derive_seed(seed, "step", rank, step)``; the same (seed, rank, step) always gives the same stream."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, "step", rank, step))
    return g


# ---------------------------------------------------------------------------------------------- loop


def _reseed_global(seed: int, device: torch.device) -> None:
    """Reseed torch's global generators of the CPU and of ``device`` (what ``torch.manual_seed`` does for
    them, without its per-call cost of about 60 us, which is most of a millisecond-long step's overhead)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _shared_flag(flag: bool, ctx: WorkerContext) -> bool:
    """Rank 0's ``flag`` on every worker (a broadcast on the worker's own device)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item() > 0)


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.detach().item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _report(run: Run, evaluation: Evaluation, step: int, final: bool) -> dict[str, Any]:
    metrics = dict(evaluation.metrics)
    run.log_scalars(step, {f"eval/{k}": v for k, v in _scalars(metrics).items()})
    for name, img in evaluation.images.items():
        run.log_image(f"eval/{name}", img, step)
        if final:
            run.save_image(name, img)
    if final:
        for name, frames in evaluation.gifs.items():
            run.save_gif(name, frames, fps=evaluation.gif_fps)
    run.flush()
    return metrics


def _save(run: Run, state: TrainState, step: int, scalars: Mapping[str, float]) -> None:
    run.save_checkpoint(step, train_state_tensors(state), extra=_state_extra(state),
                        generators=state.generators, metrics=scalars, optimizers=state.optimizers)


def _finished_metrics(run: Run) -> dict[str, Any] | None:
    path = run.dir / "metrics.json"
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if metrics.get("finished") else None


def _process_start() -> float:
    """When this process was created (psutil, a Ray dependency); the module's import time without it."""
    try:
        import psutil

        return psutil.Process().create_time()
    except (ImportError, OSError):
        return _IMPORTED


_IMPORTED = time.time()


def state_digest(state: TrainState) -> str:
    """A SHA-256 hex digest of every module tensor in ``state`` (names, dtypes, shapes and bytes): equal on
    all ranks of a correct data-parallel run."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(train_state_tensors(state).items()):
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _train_loop(system: System, job_name: str, config: Any) -> dict[str, Any]:
    """What each worker (or this process) runs: see the module docstring. Returns ``{"metrics": rank 0's
    metrics ({} on other ranks), "state_digest": state_digest(state)}``."""
    rc = _run_config(config)[1]
    found = find_field(config, RayConfig)
    ctx = worker_context(found[1].use_gpu if found else False)
    run = start_run(job_name, config, rank=ctx.rank, world_size=ctx.world_size, quiet=not ctx.is_main)
    try:
        seed_everything(rc.seed, ctx.rank)
        total = int(system.num_steps(config))
        state = system.init(config, ctx)
        if ctx.world_size > 1:  # every rank starts from rank 0's networks, as DistributedDataParallel does
            for module in state.modules.values():
                broadcast_module(module)
        ck = run.load_checkpoint(generators=state.generators, restore_rng=False, map_location=ctx.device)
        start = 0
        if ck is not None:
            load_train_state(state, ck)
            start = ck.step
            if ctx.is_main:
                print(f"[{job_name}] resumed from {ck.path} at step {start}", flush=True)
        if start >= total:
            done = _finished_metrics(run) if ctx.is_main else {}
            if done is not None:
                if ctx.is_main:
                    print(f"[{job_name}] run {run.dir} already finished at step {start}; metrics: "
                          f"{json.dumps(_scalars(done))}", flush=True)
                return {"metrics": done, "state_digest": state_digest(state)}
        t_train = time.time()
        last: dict[str, Any] = {}
        step, stopped_early, saved_at, first_step_s = start, False, start, None
        bar = run.progress(total=total, initial=start, desc=system.name)
        every_log, every_ckpt, every_eval = max(rc.log_every, 1), rc.checkpoint_every, rc.eval_every
        while step < total:
            _reseed_global(derive_seed(rc.seed, "global", ctx.rank, step), ctx.device)
            last = system.train_step(state, step, step_generator(rc.seed, ctx.rank, step, ctx.device))
            if ctx.world_size > 1:
                for module in state.modules.values():
                    sync_buffers(module)
            step += 1
            if first_step_s is None:
                first_step_s = time.time() - _process_start()
            bar.update(1)
            if step % every_log == 0 or step == total:
                scalars = _scalars(last)
                for oname, opt in state.optimizers.items():
                    scalars[f"lr/{oname}"] = float(opt.param_groups[0]["lr"])
                run.log_scalars(step, scalars)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(scalars.items())[:3]}, refresh=False)
            if every_ckpt > 0 and step % every_ckpt == 0 and step < total:
                _save(run, state, step, _scalars(last))
                saved_at = step
            if every_eval > 0 and step % every_eval == 0 and step < total and ctx.is_main:
                _report(run, system.evaluate(state, step), step, final=False)
            if rc.time_limit_s > 0 and step < total and \
                    _shared_flag(time.time() - t_train > rc.time_limit_s, ctx):
                stopped_early = True
                break
        bar.close()
        train_seconds = time.time() - t_train
        if saved_at != step or ck is None:
            _save(run, state, step, _scalars(last))
        metrics: dict[str, Any] = {}
        if ctx.is_main:
            metrics = _report(run, system.evaluate(state, step), step, final=True)
            metrics.update({"steps": step, "finished": step >= total, "stopped_early": stopped_early,
                            "train_seconds_this_run": train_seconds,
                            **({"startup_to_first_step_s": first_step_s} if first_step_s is not None else {}),
                            **{f"final_{k}": v for k, v in _scalars(last).items()}})
            run.write_metrics(metrics)
            shown = {k: round(v, 4) for k, v in _scalars(evaluation_only(metrics)).items()}
            print(f"[{job_name}] step {step}/{total}{' (time limit)' if stopped_early else ''}: {shown}; "
                  f"outputs in {run.dir}", flush=True)
        return {"metrics": metrics, "state_digest": state_digest(state)}
    finally:
        run.close()


def evaluation_only(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the loop's own bookkeeping keys (steps, finished, timings, final losses)."""
    own = {"steps", "finished", "stopped_early", "train_seconds_this_run", "startup_to_first_step_s"}
    return {k: v for k, v in metrics.items() if k not in own and not k.startswith("final_")}


def train(system: System, config: Any, job_name: str | None = None) -> FitResult:
    """Train ``system`` with ``config``: in this process, or on ``config.ray.num_workers`` Ray Train workers.

    Args:
        system: a ``System`` (a picklable, module-level class instance).
        config: a frozen dataclass config with ``run: RunConfig`` and ``ray: RayConfig`` fields.
        job_name: the run directory's job folder (default ``system.name``).

    Returns:
        ``FitResult``; ``results[r]`` is ``{"metrics": ..., "state_digest": ...}`` of rank r: rank 0's
        metrics are what ``metrics.json`` holds (``{}`` on other ranks), the digest hashes the final state.
    """
    job_name = job_name or system.name
    check = getattr(system, "check_config", None)
    if check is not None:  # user mistakes surface here, in the driver, before any worker starts
        check(config)
    return fit(functools.partial(_train_loop, system, job_name), config, job_name=job_name)
