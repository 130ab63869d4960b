"""Config of ``jobs.fit_mesh``: the book's chapter-3 example. ``ico_sphere(4)`` is deformed into a point
cloud by SGD on per-vertex offsets with Chamfer distance plus edge-length, normal-consistency and Laplacian
regularisers; presets reproduce the book's ablations (``lib3d.systems.mesh_fitting.MeshFitSystem``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class FitMeshConfig:
    """Deform a sphere mesh into a point cloud."""

    points: str | None = None
    """PLY file of the target cloud (the book's ``pedestrian.ply``); None: lib3d's procedural person-shaped
    cloud (``lib3d.data.person_cloud``)."""
    num_points: int = 250
    """Points of the procedural target cloud (ignored with ``points``)."""
    noise: float = 0.01
    """Gaussian noise of the procedural target cloud (ignored with ``points``)."""
    normalize: bool = True
    """Fit in the book's normalised units: centre the cloud at its mean and divide by its largest absolute
    coordinate (``deform1.py``); ``fitted.ply`` is mapped back (``verts * scale + center``) either way."""
    ico_level: int = 4
    """Subdivision level of the initial icosphere (4: 2,562 vertices, 5,120 faces)."""
    num_samples: int | None = None
    """Surface samples per step; None: as many as target points (the book)."""
    iterations: int = 2000
    """SGD steps."""
    lr: float = 1.0
    """SGD learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    w_chamfer: float = 1.0
    """Weight of the Chamfer distance."""
    w_edge: float = 1.0
    """Weight of the edge-length regulariser."""
    w_normal: float = 0.01
    """Weight of the normal-consistency regulariser."""
    w_laplacian: float = 0.1
    """Weight of the Laplacian smoothing regulariser."""
    laplacian_method: Literal["uniform", "cot", "cotcurv"] = "uniform"
    """Laplacian of the smoothing term."""
    image_size: int = 256
    """Side of the before/after renders and of the turntable frames."""
    turntable_frames: int = 24
    """Frames of the turntable GIF (0: none)."""
    run: RunConfig = RunConfig(checkpoint_every=500, log_every=10)
    """Run directory, seed, checkpoints."""
    ray: RayConfig = RayConfig()
    """Ray cluster and the training worker (one: ``--ray.use-gpu`` runs on CUDA, ``--ray.num-workers 1``
    with a cluster address on a remote worker)."""


PRESETS: dict[str, tuple[str, FitMeshConfig]] = {
    "default": ("the book's objective: chamfer 1, edge 1, normal 0.01, Laplacian 0.1; 2,000 SGD steps",
                FitMeshConfig()),
    "no_regularizers": ("ablation: Chamfer distance only", FitMeshConfig(w_edge=0.0, w_normal=0.0, w_laplacian=0.0)),
    "edge_only": ("ablation: Chamfer distance and the edge-length regulariser only",
                  FitMeshConfig(w_normal=0.0, w_laplacian=0.0)),
    "smoke": ("a quick bounded run for CI: ico_sphere(3), 200 steps, small renders",
              FitMeshConfig(ico_level=3, iterations=200, image_size=64, turntable_frames=4,
                            run=RunConfig(checkpoint_every=0, log_every=10, progress=False))),
}
