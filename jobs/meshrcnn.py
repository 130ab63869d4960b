"""Train Mesh R-CNN (detection, masks and a 3D mesh per object from one image; the book's chapter 10).

    python -m jobs.meshrcnn                       # quick CPU model on the embedded furniture data
    python -m jobs.meshrcnn --run.time-limit-s 1800   # stop (checkpoint, evaluate) after 30 min of steps
    python -m jobs.meshrcnn sphere                # the Sphere-init ablation; `voxel`: voxel-only
    python -m jobs.meshrcnn --ray.num-workers 2   # 2 Ray Train workers (data-parallel)
    python -m jobs.meshrcnn paper                 # the Pix3D R50-FPN recipe at 256 px (GPU)
    python -m jobs.meshrcnn --data.source pix3d --data.pix3d-root DIR   # real Pix3D (Mesh R-CNN's S1 split, 9 classes)
    python -m jobs.meshrcnn --help

Writes results/meshrcnn/<run>/: TensorBoard losses, held-out detections (boxes, masks) and rendered meshes,
safetensors checkpoints (resumed automatically), metrics.json with held-out box / mask AP (COCO), mesh AP
(F1@0.3 > 0.5), Chamfer, normal consistency and F1@0.1/0.3/0.5, and media/*.png.
"""

from __future__ import annotations

import dataclasses

from configs.meshrcnn import PRESETS
from lib3d import runtime
from lib3d.systems.meshrcnn import MeshRCNNSystem, data_num_classes


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    fixed = data_num_classes(config.data)  # Pix3D fixes 9 classes: the saved config.json says so too
    if fixed is not None and config.model.num_classes != fixed:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=fixed))
    return runtime.train(MeshRCNNSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
