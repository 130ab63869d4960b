"""Train GIRAFFE (compositional generative neural feature fields, the book's chapter 7).

    python -m jobs.giraffe                          # quick CPU run on the embedded 32x32 scenes
    python -m jobs.giraffe clevr64 --ray.num-workers 4 --ray.use-gpu
    python -m jobs.giraffe paper --data "images:data/comprehensive_cars/images/*.jpg"
    python -m jobs.giraffe --run.name quick1 --evaluate-only       # evaluate a run's newest checkpoint again
    python -m jobs.giraffe --help

Outputs in results/giraffe/<run>/: config.json, TensorBoard losses and evaluations, checkpoints (G, D,
G_ema, both optimizers), media/ (sample grid, translation GIF) and metrics.json (domain FID / KID of G_ema,
the untrained generator and the real-vs-real floor, Inception FID when eval.inception_weights is given,
controllability figures).
"""

from __future__ import annotations

from configs.giraffe import PRESETS
from lib3d import runtime
from lib3d.systems.giraffe import GiraffeSystem, evaluate_run


def main(args: list[str] | None = None) -> runtime.FitResult | dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    if config.evaluate_only:
        return evaluate_run(config)
    return runtime.train(GiraffeSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
