"""Configuration shared by every job: where and how a run writes (``RunConfig``) and how it uses Ray
(``RayConfig``). Jobs embed them as fields named ``run`` and ``ray``:

    @dataclasses.dataclass(frozen=True)
    class MyJobConfig:
        steps: int = 100
        \"\"\"Optimisation steps.\"\"\"
        run: RunConfig = RunConfig()
        \"\"\"Run directory, seed, checkpoints.\"\"\"
        ray: RayConfig = RayConfig()
        \"\"\"Ray cluster and workers.\"\"\"

On the command line they become ``--run.name``, ``--run.seed``, ``--ray.num-workers``, ``--ray.address`` ...
"""

from __future__ import annotations

import dataclasses


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
    """Show tqdm progress bars (rank 0 only)."""


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
