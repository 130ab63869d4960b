"""The platform's smoke system (``jobs.fit_rigid``): recover the similarity transform (rotation, translation,
scale) that maps a procedural source point cloud onto its target by gradient descent on minibatches of
corresponding points. Small enough to run in a second, real enough to exercise everything ``runtime.train``
owns (DDP over Ray Train, checkpoints, resume, restarts after a killed worker).

Model (row vectors, PyTorch3D's convention)::

    target = s * source @ R + T,   R = so3_exp_map(log_rot),  s = exp(log_scale)

Dimension names: P points, B batch of point indices.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lib3d import runtime
from lib3d._checks import check_shape
from lib3d.runtime import Evaluation, TrainState, WorkerContext, derive_seed


class RigidProblem(NamedTuple):
    """A source cloud, its transformed target and the ground-truth transform.

    Attributes:
        source: (P, 3) float.
        target: (P, 3) float, ``scale * source @ rotation + translation`` (+ noise).
        rotation: (3, 3) float.
        translation: (3,) float.
        scale: () float.
    """

    source: torch.Tensor
    target: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor


def apply_similarity(points: torch.Tensor, log_rot: torch.Tensor, translation: torch.Tensor,
                     log_scale: torch.Tensor) -> torch.Tensor:
    """``exp(log_scale) * points @ so3_exp_map(log_rot) + translation``.

    Args:
        points: (P, 3) float.
        log_rot: (3,) axis-angle.
        translation: (3,).
        log_scale: () or (1,).

    Returns:
        (P, 3) transformed points.
    """
    from lib3d.geometry.rotations import so3_exp_map

    check_shape("points", points, ("P", 3), dtype="float")
    rot = so3_exp_map(log_rot.reshape(1, 3))[0]
    return log_scale.reshape(()).exp() * (points @ rot) + translation.reshape(3)


class RigidTransform(torch.nn.Module):
    """Parameters ``log_rot (3,)``, ``translation (3,)``, ``log_scale (1,)`` (identity at start);
    ``forward(points (P, 3)) -> (P, 3)`` is ``apply_similarity``."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.log_rot = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
        self.log_scale = torch.nn.Parameter(torch.zeros(1, dtype=dtype))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return apply_similarity(points, self.log_rot, self.translation, self.log_scale)


def make_rigid_problem(num_points: int, seed: int, noise: float = 0.0, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> RigidProblem:
    """A reproducible problem: P points in a unit-ish blob, a random rotation (angle in [0.3, 1.2] rad),
    translation in [-1, 1]^3 and scale in [0.5, 2]; Gaussian noise of std ``noise`` on the target."""
    from lib3d.geometry.rotations import so3_exp_map

    if num_points < 1:
        raise ValueError(f"make_rigid_problem: num_points must be >= 1, got {num_points}")
    g = torch.Generator().manual_seed(derive_seed(seed, "rigid-problem"))
    source = torch.randn(num_points, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.3],
                                                                                          dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
    angle = 0.3 + 0.9 * torch.rand((), generator=g, dtype=torch.float64)
    rotation = so3_exp_map((axis * angle)[None])[0]
    translation = torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1
    scale = torch.exp(torch.rand((), generator=g, dtype=torch.float64) * math.log(4.0) - math.log(2.0))
    target = scale * source @ rotation + translation
    if noise > 0:
        target = target + noise * torch.randn(target.shape, generator=g, dtype=torch.float64)
    cast = {"device": device, "dtype": dtype}
    return RigidProblem(source.to(**cast), target.to(**cast), rotation.to(**cast), translation.to(**cast),
                        scale.to(**cast))


def batch_indices(num_points: int, batch_size: int, seed: int, step: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The (B,) long point indices of minibatch ``step``: a function of (seed, step) only, so every rank,
    every restart and a one-worker run draw the same global batch (each rank then takes its shard)."""
    g = torch.Generator().manual_seed(derive_seed(seed, "batch", step))
    return torch.randint(num_points, (batch_size,), generator=g).to(device)


def rotation_error_deg(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between two (3, 3) rotations in degrees."""
    cos = ((r1.transpose(-1, -2) @ r2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


class RigidSystem:
    """``runtime.train``'s contract for the rigid fit (config: ``configs.fit_rigid.FitRigidConfig``).

    Each step draws the global minibatch from (seed, step) (``batch_indices``), takes this rank's shard
    and averages gradients over the workers (DDP), so 1 worker and N workers follow the same trajectory.
    ``kill_worker_at_step`` makes the last rank SIGKILL itself once at that step (fault-injection tests).
    """

    name = "fit_rigid"

    def num_steps(self, config) -> int:
        return config.steps

    def init(self, config, ctx: WorkerContext) -> TrainState:
        problem = make_rigid_problem(config.num_points, config.run.seed, config.noise, device=ctx.device)
        model = runtime.prepare_model(RigidTransform(), ctx)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        shard = runtime.shard_indices(config.batch_size, ctx.rank, ctx.world_size)
        data = {"problem": problem, "config": config, "ctx": ctx, "shard": shard,
                "run_dir": runtime.run_directory(self.name, config)}
        return TrainState(modules={"model": model}, optimizers={"model": opt}, data=data)

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        config, ctx = d["config"], d["ctx"]
        if step == config.kill_worker_at_step and ctx.rank == ctx.world_size - 1:
            import os
            import signal

            marker = d["run_dir"] / f".killed-at-{step}"
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        idx = batch_indices(config.num_points, config.batch_size, config.run.seed, step, ctx.device)
        idx = idx[d["shard"].start: d["shard"].stop]
        model, opt = state.modules["model"], state.optimizers["model"]
        loss = ((model(d["problem"].source[idx]) - d["problem"].target[idx]) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        from lib3d.geometry.rotations import so3_exp_map

        m = runtime.unwrap_model(state.modules["model"])
        problem = state.data["problem"]
        with torch.no_grad():
            rot = so3_exp_map(m.log_rot.reshape(1, 3))[0]
            loss = ((m(problem.source) - problem.target) ** 2).sum(-1).mean()
            return Evaluation(metrics={
                "world_size": state.data["ctx"].world_size,
                "loss": float(loss),
                "rotation_error_deg": float(rotation_error_deg(rot, problem.rotation)),
                "translation_error": float((m.translation - problem.translation).norm()),
                "scale_error": float((m.log_scale.exp()[0] - problem.scale).abs()),
            })
