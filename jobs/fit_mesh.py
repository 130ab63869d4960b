"""Chapter 3: deform ico_sphere(4) into a point cloud (Chamfer + edge + normal + Laplacian regularisers).

    python -m jobs.fit_mesh                        # procedural person-shaped cloud (~250 noisy points)
    python -m jobs.fit_mesh --points cloud.ply     # a PLY point cloud (the book's pedestrian.ply)
    python -m jobs.fit_mesh no_regularizers        # ablation: Chamfer only
    python -m jobs.fit_mesh edge_only              # ablation: Chamfer + edge length
    python -m jobs.fit_mesh smoke                  # a quick bounded run

Writes ``results/fit_mesh/<run>/``: config, TensorBoard scalars per loss term, checkpoints of the vertex
offsets (resumable), ``fitted.ply`` (in the cloud's own units: it overlays the input), ``media/before.png``,
``media/after.png``, ``media/target.png``, ``media/turntable.gif`` and ``metrics.json`` (final Chamfer
distance to the normalised target with 10,000 surface samples, normal consistency, final loss terms).
"""

from __future__ import annotations

from configs.fit_mesh import PRESETS
from lib3d import runtime
from lib3d.systems.mesh_fitting import MeshFitSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(MeshFitSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
