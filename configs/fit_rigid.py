"""Config of ``jobs.fit_rigid``: recover a similarity transform between two procedural point clouds by
gradient descent (the runtime's smoke job: in-process, or DDP over Ray workers)."""

from __future__ import annotations

import dataclasses

from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class FitRigidConfig:
    """Fit scale, rotation and translation mapping a source point cloud onto its target."""

    num_points: int = 4096
    """P: points in the procedural source cloud."""
    batch_size: int = 256
    """Global minibatch of corresponding points per step (split evenly over the workers)."""
    steps: int = 300
    """Optimisation steps."""
    lr: float = 0.05
    """Adam learning rate."""
    noise: float = 0.0
    """Std of Gaussian noise added to the target points."""
    kill_worker_at_step: int = -1
    """Fault-injection for tests: the last rank SIGKILLs its own process once when it reaches this step
    (a marker file in the run directory stops it from happening again after the restart). -1: never."""
    run: RunConfig = RunConfig(checkpoint_every=50, log_every=10)
    """Run directory, seed, checkpoints."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers."""


PRESETS: dict[str, tuple[str, FitRigidConfig]] = {
    "default": ("300 steps in this process", FitRigidConfig()),
    "smoke": ("30 quick steps, a checkpoint every 10 (tests, CI)",
              FitRigidConfig(num_points=512, batch_size=64, steps=30,
                             run=RunConfig(checkpoint_every=10, log_every=5, progress=False))),
    "ddp": ("300 steps on 2 Ray CPU workers (DDP, gloo)", FitRigidConfig(ray=RayConfig(num_workers=2))),
}
