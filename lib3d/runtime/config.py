"""Command-line parsing of job configs (tyro), their JSON form, and the two configs every job embeds:
``RunConfig`` (where and how a run writes) and ``RayConfig`` (how it uses Ray), as fields named ``run``
and ``ray``::

    @dataclasses.dataclass(frozen=True)
    class MyJobConfig:
        steps: int = 100
        \"\"\"Optimisation steps.\"\"\"
        run: RunConfig = RunConfig()
        \"\"\"Run directory, seed, checkpoints.\"\"\"
        ray: RayConfig = RayConfig()
        \"\"\"Ray cluster and workers.\"\"\"

On the command line they become ``--run.name``, ``--run.seed``, ``--ray.num-workers``, ``--ray.address`` ...
A user's mistake found after parsing (a missing file, a bad value) is raised as ``UserError``; ``cli_main``
prints it as one line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_HELP = ("-h", "--help")


class UserError(Exception):
    """A mistake on the command line (a missing file, a bad value): printed as one line, exit status 2."""


def _user_facing_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ``run_main`` reports as one line: ``UserError``, a missing or unreadable file, and
    lib3d's own file-format and checkpoint errors (their messages name the file and the problem)."""
    from lib3d.io import FormatError
    from lib3d.runtime.checkpoint import CheckpointError

    return (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FormatError,
            CheckpointError)


def run_main(entry: Callable[[], Any]) -> None:
    """Run a job's ``main()``; a user's mistake (see ``_user_facing_errors``) becomes one line on stderr and
    exit status 2, not a traceback. Jobs end with ``if __name__ == "__main__": runtime.run_main(main)``."""
    try:
        entry()
    except _user_facing_errors() as e:
        prog = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None) or "lib3d"
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run writes and how it checkpoints."""

    name: str | None = None
    """Run name: the directory ``<output_root>/<job>/<name>/``. None: a timestamped name (YYYYmmdd-HHMMSS)."""
    output_root: str = "results"
    """Root folder of all run directories (relative to the working directory, or absolute). On a multi-node
    cluster point it at storage every node shares (NFS, a mounted bucket)."""
    seed: int = 0
    """Seed of every random generator of the run (torch, numpy, python; each rank derives its own)."""
    resume: bool = True
    """If the run directory already exists: True continues from its latest checkpoint; False starts a fresh
    run in a new directory ``<name>-1``, ``<name>-2``, ..."""
    keep_checkpoints: int = 3
    """How many of the most recent checkpoints are kept on disk (older ones are deleted)."""
    checkpoint_every: int = 100
    """Steps between checkpoints (0: only the final one)."""
    log_every: int = 10
    """Steps between scalar logs (TensorBoard) and progress-bar updates."""
    progress: bool = True
    """Show tqdm progress bars (rank 0 only). When stderr is not a terminal (a log file, ``ray job
    submit``) the bar prints at most one line every ``progress_interval_s`` seconds."""
    progress_interval_s: float = 10.0
    """Seconds between progress lines when stderr is not a terminal."""
    eval_every: int = 0
    """Steps between evaluations during training (``System.evaluate`` on rank 0; 0: only at the end)."""
    time_limit_s: float = 0.0
    """Stop training after this many seconds of steps (measured on rank 0 and shared with every worker on
    its own device), then checkpoint and evaluate as at the end; 0: no limit. A later run with the same
    name resumes from there."""
    keep_freed_memory: bool = False
    """Opt-in: tell glibc's allocator to keep freed memory instead of returning it to the system (large CPU tensors
    then reuse pages instead of re-faulting them every step; see ``lib3d.runtime.keep_freed_memory``)."""


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """How a job uses Ray: the cluster it joins and the training / evaluation workers it starts."""

    address: str | None = None
    """Ray cluster to join ("auto", "ray://host:10001", "host:6379"). None: the ``RAY_ADDRESS`` environment
    variable if set (``ray job submit`` sets it), else an embedded one-machine Ray started by the job."""
    num_workers: int = 0
    """Training workers (Ray Train ``ScalingConfig.num_workers``: one process each, DDP over
    ``torch.distributed``). 0: run the training loop in this process without Ray (fast start-up); 1: the
    same, unless a cluster is set (``address`` or ``RAY_ADDRESS``), where it is one remote Ray Train worker
    (e.g. on a GPU node); 2+: a Ray Train ``TorchTrainer`` worker group."""
    use_gpu: bool = False
    """Give each worker one GPU (NCCL backend); False: CPU workers with the gloo backend."""
    cpus_per_worker: float = 1.0
    """CPUs reserved for each worker."""
    gpus_per_worker: float = 1.0
    """GPUs reserved for each worker when ``use_gpu`` (fractions share a GPU)."""
    max_failures: int = 2
    """How many times Ray Train restarts the worker group after a lost worker or a failed step
    (``FailureConfig.max_failures``), each restart resuming from the last checkpoint reported to Ray Train
    (-1: forever)."""
    schedule_timeout_s: float | None = None
    """Give up (RuntimeError) when the worker group cannot be placed on the cluster within this many seconds
    (checked with a placement group of the same shape before Ray Train starts). None: let Ray Train wait
    for the resources (an autoscaler may be adding nodes)."""
    num_cpus: int | None = None
    """CPUs the embedded local Ray may use (None: all). Ignored when joining a cluster."""
    include_dashboard: bool = True
    """Start the Ray dashboard with an embedded Ray (its URL is printed)."""



def cli(
    presets: Mapping[str, tuple[str, T]],
    description: str | None = None,
    args: Sequence[str] | None = None,
    prog: str | None = None,
) -> T:
    """Parse ``python -m jobs.<name> [PRESET] [--field value ...]`` into a frozen config dataclass.

    The first positional word picks a preset of ``presets`` (a dict ``name -> (description, config)``);
    without one the first preset (conventionally ``"default"``) is used, so ``python -m jobs.x`` with no
    arguments runs. ``--field value`` overrides any field of the preset, nested fields with dots
    (``--run.name exp1 --ray.num-workers 2``). ``--help`` lists the presets; ``PRESET --help`` documents
    every field with its docstring and the preset's value.

    Args:
        presets: ``{name: (description, config)}``; the configs are frozen dataclass instances.
        description: text shown at the top of ``--help``.
        args: the arguments to parse (default ``sys.argv[1:]``).
        prog: program name shown in the help (default: ``python -m <module>``).

    Returns:
        The resolved config (same type as the preset).

    Raises:
        ValueError: if ``presets`` is empty.
        SystemExit: on ``--help`` or a command-line error (tyro prints the reason).
    """
    import tyro

    if not presets:
        raise ValueError("cli: presets must hold at least one (description, config) entry, got none")
    args = list(sys.argv[1:] if args is None else args)
    names = list(presets)
    if prog is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        prog = f"python -m {spec.name}" if spec is not None and spec.name else None
    if not args or (args[0] not in names and args[0] not in _HELP):
        args = [names[0], *args]
    return tyro.extras.overridable_config_cli(
        {k: presets[k] for k in names}, prog=prog, description=description, args=args
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready nested dict of a (frozen dataclass) config; unknown leaf types become their repr."""
    out = _jsonable(config)
    if not isinstance(out, dict):
        raise TypeError(f"config_to_dict: config must be a dataclass instance or a mapping, got {type(config)}")
    return out


def find_field(config: Any, field_type: type) -> tuple[str, Any] | None:
    """The first top-level field of ``config`` whose value is an instance of ``field_type``.

    Returns:
        ``(field_name, value)`` or None when the config has no such field.
    """
    if not dataclasses.is_dataclass(config):
        return None
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, field_type):
            return f.name, value
    return None
