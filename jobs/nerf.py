"""Train a neural radiance field on posed images: lib3d's main job (the book's chapter 6).

    python -m jobs.nerf                     # fast grid field on the embedded scene, in this process
    python -m jobs.nerf cow                 # the book's cow renders, made from data/cow_mesh/cow.obj
    python -m jobs.nerf cow --data cow:PATH/cow.obj          # ... from the book's mesh elsewhere
    python -m jobs.nerf book --run.time-limit-s 600          # the book's NeRF MLP and hyperparameters
    python -m jobs.nerf --data blender:/data/lego --image-size 200
    python -m jobs.nerf ddp                 # 2 Ray workers (DDP), each its own rays
    python -m jobs.nerf --help

Views with index % 8 == 0 are held out. Writes to results/nerf/<run>/: TensorBoard logs (losses, PSNR,
renders), safetensors checkpoints (resumed automatically), metrics.json (held-out PSNR/SSIM, timings),
media/heldout.png (renders above targets) and media/turntable.gif. The science is in lib3d.systems.nerf.
"""

from __future__ import annotations

from configs.nerf import PRESETS
from lib3d import runtime
from lib3d.systems.nerf import nerf_system


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(nerf_system(config), config)


if __name__ == "__main__":
    runtime.run_main(main)
