"""Run directories: ``results/<job>/<run-name>/`` with the resolved config, TensorBoard events, checkpoints,
media and ``metrics.json``. Only the main rank (0) writes; the other ranks get the same ``Run`` API with
writing turned into no-ops, so a training loop runs unchanged on 1 or N workers.

Layout::

    results/<job>/<run-name>/
        config.json          the resolved config (also printed at start)
        tensorboard/         TensorBoard event files (log_scalars, log_image)
        checkpoints/         step_<step>/ {model,optimizer}.safetensors + state.json (last N kept)
        media/               save_image / save_gif outputs
        metrics.json         write_metrics (merged across calls)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from lib3d.runtime import checkpoint as _ckpt
from lib3d.runtime.allocator import keep_freed_memory
from lib3d.runtime.config import RunConfig, config_to_dict, find_field

T = TypeVar("T")


def _run_config(config: Any):
    found = find_field(config, RunConfig)
    return found if found is not None else (None, RunConfig())


def _worker_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_run_config(job_name: str, config: T) -> T:
    """Fix the run directory of ``config`` once, before workers start, so every rank and every restart
    agrees on it: a None ``run.name`` becomes a timestamp, ``run.output_root`` becomes absolute, and with
    ``run.resume=False`` an existing directory gets a fresh ``-1``, ``-2`` ... suffix (``resume`` is then set
    to True so that a restarted worker group continues in that directory).

    Args:
        job_name: the job's name (the folder under ``output_root``).
        config: a frozen dataclass config with a ``RunConfig`` field (usually ``run``).

    Returns:
        The config with its ``RunConfig`` field replaced (unchanged if it has none).
    """
    field, rc = _run_config(config)
    if field is None:
        return config
    root = Path(rc.output_root).expanduser().absolute()
    name = rc.name or time.strftime("%Y%m%d-%H%M%S")
    if not rc.resume:
        base, i = name, 0
        while (root / job_name / name).exists():
            i += 1
            name = f"{base}-{i}"
    rc = dataclasses.replace(rc, name=name, output_root=str(root), resume=True)
    return dataclasses.replace(config, **{field: rc})


def run_directory(job_name: str, config: Any) -> Path:
    """``<run.output_root>/<job_name>/<run.name>`` (absolute) of a config with resolved run settings."""
    rc = _run_config(config)[1]
    return Path(rc.output_root).expanduser().absolute() / job_name / (rc.name or "unnamed")


def _ray_train_context() -> Any:
    """Ray Train's ``TrainContext`` when called inside a Ray Train worker, else None.

    Never imports Ray: a process that has not imported ``ray.train`` cannot be a Ray Train worker.
    """
    if "ray.train" not in sys.modules:
        return None
    import ray.train

    try:
        return ray.train.get_context()
    except RuntimeError:  # "Ray Train function utilities not initialized": not a Ray Train worker
        return None



class Run:
    """A run directory and its writers. Create it with ``start_run``.

    Attributes:
        dir: the run directory ``<output_root>/<job>/<run-name>``.
        job_name: the job's name.
        config: the resolved config.
        rank, world_size: this process's rank and the number of workers.
        is_main: rank == 0; only the main rank writes files.
    """

    def __init__(self, job_name: str, config: Any, directory: Path, rank: int = 0, world_size: int = 1):
        self.job_name = job_name
        self.config = config
        self.dir = Path(directory)
        self.rank = rank
        self.world_size = world_size
        self.is_main = rank == 0
        self.run_config = _run_config(config)[1]
        self.checkpoint_dir = self.dir / "checkpoints"
        self.media_dir = self.dir / "media"
        self._writer = None
        self._closed = False

    # ------------------------------------------------------------------------------------------ logging
    @property
    def writer(self):
        """The TensorBoard ``SummaryWriter`` (main rank; None on others), created on first use."""
        if not self.is_main:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.dir / "tensorboard"))
        return self._writer

    def log_scalars(self, step: int, scalars: Mapping[str, float | torch.Tensor]) -> None:
        """Log scalars to TensorBoard under their names (``"loss"``, ``"train/psnr"``) at ``step``."""
        if not self.is_main:
            return
        for k, v in scalars.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"log_scalars: {k!r} must be a scalar, got shape {tuple(v.shape)}")
                v = v.item()
            self.writer.add_scalar(k, float(v), global_step=step)

    def log_image(self, tag: str, img: Any, step: int) -> None:
        """Log one ``(H, W, 3|4)`` image (float [0, 1] or uint8) to TensorBoard."""
        if not self.is_main:
            return
        from lib3d.io.images import to_uint8

        self.writer.add_image(tag, to_uint8(img, "img"), global_step=step, dataformats="HWC")

    def flush(self) -> None:
        """Flush TensorBoard events to disk."""
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------------------------------- media
    def save_image(self, name: str, img: Any) -> Path:
        """Save ``img`` as ``<run>/media/<name>`` (add ``.png`` if ``name`` has no suffix); main rank only."""
        from lib3d.io.images import save_image

        path = self.media_dir / (name if Path(name).suffix else f"{name}.png")
        return save_image(path, img) if self.is_main else path

    def save_gif(self, name: str, frames: Any, fps: float = 10.0) -> Path:
        """Save ``frames (T, H, W, 3|4)`` as ``<run>/media/<name>.gif``; main rank only."""
        from lib3d.io.images import save_gif

        path = self.media_dir / (name if name.endswith(".gif") else f"{name}.gif")
        return save_gif(path, frames, fps) if self.is_main else path

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Merge ``metrics`` (JSON-serialisable; tensors become numbers/lists) into ``<run>/metrics.json``."""
        path = self.dir / "metrics.json"
        if not self.is_main:
            return path
        current = json.loads(path.read_text()) if path.exists() else {}
        for k, v in metrics.items():
            if isinstance(v, torch.Tensor):
                v = v.item() if v.numel() == 1 else v.tolist()
            current[k] = v
        tmp = path.with_name(".metrics.json.tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, tensors: Mapping[str, torch.Tensor],
                        optimizer: torch.optim.Optimizer | None = None, extra: Mapping[str, Any] | None = None,
                        generators: Mapping[str, torch.Generator] | None = None,
                        metrics: Mapping[str, float | torch.Tensor] | None = None,
                        optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> Path | None:
        """Write checkpoint ``step`` (main rank; keeps ``run.keep_checkpoints``); see ``checkpoint.save_checkpoint``.

        Every rank must call it (others return None). Inside a Ray Train worker every rank then calls
        ``ray.train.report({"step": step, **metrics}, checkpoint=...)``, rank 0 passing a
        ``ray.train.Checkpoint`` of the directory it just wrote (Ray Train copies it into its storage and
        hands it back through ``ray.train.get_checkpoint()`` after a restart); ``report`` is a barrier.
        In other multi-worker runs the ranks meet at a ``torch.distributed`` barrier, so that no rank runs
        ahead of a checkpoint being written.

        Args:
            metrics: scalars reported to Ray Train with the checkpoint (ignored outside Ray Train).
        """
        path = None
        if self.is_main:
            path = _ckpt.save_checkpoint(self.checkpoint_dir, step, tensors, optimizer, extra,
                                         config_to_dict(self.config), generators,
                                         keep=self.run_config.keep_checkpoints, optimizers=optimizers)
        if _ray_train_context() is not None:
            import ray.train

            report = {"step": int(step)}
            for k, v in (metrics or {}).items():
                report[k] = float(v.item() if isinstance(v, torch.Tensor) else v)
            ckpt = ray.train.Checkpoint.from_directory(str(path)) if path is not None else None
            ray.train.report(report, checkpoint=ckpt, checkpoint_dir_name=_ckpt.checkpoint_dir_name(step),
                             delete_local_checkpoint_after_upload=False)
        elif self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return path

    def load_checkpoint(self, generators: Mapping[str, torch.Generator] | None = None,
                        restore_rng: bool = True, map_location: str | torch.device = "cpu"
                        ) -> _ckpt.Checkpoint | None:
        """The newest checkpoint of this run, or None (also None when ``run.resume`` is False).

        Inside a Ray Train worker it is the last checkpoint reported to Ray Train
        (``ray.train.get_checkpoint()``) unless ``<run>/checkpoints/`` holds a newer step (Ray Train
        registers a report asynchronously: a worker lost right after a checkpoint can leave it unregistered);
        elsewhere the newest in ``<run>/checkpoints/``.

        Args:
            generators: named generators whose saved states are restored.
            restore_rng: restore the global torch/numpy/python (and CUDA) RNG states saved with it.
            map_location: device of the returned tensors.
        """
        if not self.run_config.resume:
            return None
        latest = _ckpt.latest_checkpoint(self.checkpoint_dir)
        ck = self._ray_train_checkpoint(map_location, newer_than=_ckpt.checkpoint_step(latest))
        if ck is None:
            if latest is None:
                return None
            ck = _ckpt.load_checkpoint(latest, map_location)
        if restore_rng:
            _ckpt.restore_rng_state(ck.rng, generators)
        elif generators:
            _ckpt.restore_rng_state({"generators": ck.rng.get("generators", {})}, generators)
        return ck

    @staticmethod
    def _ray_train_checkpoint(map_location: str | torch.device, newer_than: int = -1) -> _ckpt.Checkpoint | None:
        """The checkpoint ``ray.train.get_checkpoint()`` gives a Ray Train worker if its step is at least
        ``newer_than`` (None elsewhere, or when there is none)."""
        if _ray_train_context() is None:
            return None
        import ray.train

        reported = ray.train.get_checkpoint()
        if reported is None:
            return None
        with reported.as_directory() as d:  # local storage: the directory itself; remote: a download
            step = json.loads((Path(d) / "state.json").read_text()).get("step", -1)
            return _ckpt.load_checkpoint(d, map_location) if step >= newer_than else None

    # ---------------------------------------------------------------------------------------- progress
    def progress(self, iterable: Iterable[T] | None = None, total: int | None = None, desc: str | None = None,
                 initial: int = 0) -> Any:
        """A tqdm progress bar over ``iterable`` (or a manual one: ``update(n)``), shown on the main rank when
        ``run.progress``; disabled elsewhere. When stderr is not a terminal (a log file, ``ray job submit``)
        it prints at most one line every ``run.progress_interval_s`` seconds."""
        from tqdm.auto import tqdm

        disable = not (self.is_main and self.run_config.progress)
        interactive = sys.stderr.isatty()
        interval = 0.1 if interactive else max(self.run_config.progress_interval_s, 0.1)
        return tqdm(iterable, total=total, desc=desc or self.job_name, initial=initial, disable=disable,
                    dynamic_ncols=interactive, file=sys.stderr, mininterval=interval,
                    maxinterval=max(interval, 10.0), ascii=None if interactive else True)

    # ------------------------------------------------------------------------------------------- close
    def close(self) -> None:
        """Flush and close the TensorBoard writer (idempotent)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        self._closed = True

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run(job={self.job_name!r}, dir='{self.dir}', rank={self.rank}/{self.world_size})"


def start_run(job_name: str, config: Any, rank: int | None = None, world_size: int | None = None,
              quiet: bool = False) -> Run:
    """Create (or reopen, to resume) ``<run.output_root>/<job_name>/<run.name>/`` and write ``config.json``.

    Args:
        job_name: the job's name, e.g. ``"nerf"``.
        config: the job's frozen dataclass config; its ``RunConfig`` field (usually ``run``) places the run
            (a config without one gets ``RunConfig()``'s defaults).
        rank, world_size: this worker's rank and the worker count (default: from ``torch.distributed``
            when initialised, else 0 and 1). Only rank 0 creates files.
        quiet: do not print the resolved config.

    Returns:
        The ``Run``.
    """
    if _run_config(config)[1].keep_freed_memory:
        keep_freed_memory()  # large CPU tensors: reuse freed memory instead of re-faulting pages every step
    if rank is None or world_size is None:
        r, w = _worker_rank()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    config = resolve_run_config(job_name, config) if _run_config(config)[1].name is None or rank == 0 \
        else config
    directory = run_directory(job_name, config)
    run = Run(job_name, config, directory, rank=rank, world_size=world_size)
    if run.is_main:
        for sub in ("", "checkpoints", "media", "tensorboard"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        text = json.dumps({"job": job_name, "config": config_to_dict(config)}, indent=2)
        (directory / "config.json").write_text(text)
        if not quiet:
            print(f"[lib3d] run {job_name} -> {directory}\n{json.dumps(config_to_dict(config), indent=2)}",
                  flush=True)
    return run
