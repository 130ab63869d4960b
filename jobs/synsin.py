"""Train SynSin (view synthesis from a single image, the book's chapter 9) on the embedded indoor dataset.

    python -m jobs.synsin                        # quick CPU model, 64x64, 1500 steps, in this process
    python -m jobs.synsin --run.time-limit-s 600 # stop (checkpoint, evaluate) after 10 minutes of steps
    python -m jobs.synsin ddp                    # 2 Ray Train workers (DDP, gloo)
    python -m jobs.synsin paper --vgg-weights vgg19.pth   # the official architecture at 256x256 (GPU)
    python -m jobs.synsin --help

Writes results/synsin/<run>/: TensorBoard losses and source / prediction / target / depth grids,
safetensors checkpoints of every network and optimizer (resumed automatically), metrics.json with held-out
PSNR / SSIM of SynSin and the baselines (identity, true-depth splatting, no refinement) and the depth
agreement, media/*.png and a forward-walk GIF.
"""

from __future__ import annotations

from configs.synsin import PRESETS
from lib3d import runtime
from lib3d.systems.synsin import SynSinSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(SynSinSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
