"""Recover a camera position from a silhouette (and texture) by differentiable rendering (book ch. 4).

    python -m jobs.fit_camera                    # silhouette loss on the embedded toy
    python -m jobs.fit_camera textured           # silhouette + texture loss
    python -m jobs.fit_camera --mesh ../shared/data/book/cow_mesh/cow.obj
    python -m jobs.fit_camera textured --ray.use-gpu
    python -m jobs.fit_camera --help

The book's model: the camera centre ``p`` is the only parameter; ``R = look_at_rotation(p)``,
``T = -R^T p``; Adam (lr 0.05) from (3.0, 6.9, 2.5) towards the target view (dist 3, elev 50, azim 0).
Writes TensorBoard scalars (loss, position error), checkpoints (resumable), ``media/fit.gif`` (render |
target per frame), ``media/final.png`` and ``metrics.json`` (final position and its error, absolute and
relative to the camera distance).
"""

from __future__ import annotations

from configs.fit_camera import PRESETS
from lib3d import runtime
from lib3d.systems.camera_fit import CameraFitSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(CameraFitSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
