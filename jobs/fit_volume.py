"""Fit a dense voxel volume to multi-view renders: the book's chapter 5 on lib3d.

    python -m jobs.fit_volume               # 128^3 volume, 40 views of the embedded scene, 300 iterations
    python -m jobs.fit_volume cow           # the book's cow renders, made from data/cow_mesh/cow.obj
    python -m jobs.fit_volume tiny          # a quick smoke run
    python -m jobs.fit_volume --help

Each iteration renders ``batch_size`` random cameras with ``VolumeRenderer`` (grid ray sampler, 150 points per
ray, emission-absorption) and minimises the book's Huber loss on colour and silhouette with Adam (lr 0.1, /10
at 75%). Writes results/fit_volume/<run>/: TensorBoard, checkpoints, metrics.json (held-out PSNR on the views
with index % 8 == 0, which are not trained on), media/heldout.png, media/rotating.gif. The science is in
lib3d.systems.volume.
"""

from __future__ import annotations

from configs.fit_volume import PRESETS
from lib3d import runtime
from lib3d.systems.volume import VolumeSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(VolumeSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
