"""SMPLify over many images (the book's chapter 8): batched fits on Ray Data actors that load the model once.

    python -m jobs.smplify                      # 8 synthetic people (with ground truth), in this process
    python -m jobs.smplify ray                  # 64 synthetic people over 2 Ray actors
    python -m jobs.smplify book --keypoints est_joints.npz --images lsp/images --model SMPL_NEUTRAL.pkl
    python -m jobs.smplify --help

Per image, under ``results/smplify/<run>/``: ``params/<name>.safetensors`` (betas, body_pose, global_orient,
camera_translation, projected keypoints, energy, reprojection error), ``meshes/<name>.obj`` (the posed body,
camera frame), ``media/<name>.png`` (the body over the image, detected keypoints green, projected model
keypoints red), written as the batches finish. ``fits.csv`` (per-image reprojection error on confident
keypoints) and ``metrics.json`` (energies, reprojection error, images per second, and for synthetic inputs
the 2D error, MPJPE, PA-MPJPE and vertex error). Re-running a run name fits only what is not written yet.
"""

from __future__ import annotations

import time

from configs.smplify import PRESETS
from lib3d import runtime
from lib3d.systems.smplify import FitWriter, SMPLifyPredictor, build_items, check_config, predictor_kwargs

JOB = "smplify"


def main(args: list[str] | None = None) -> dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    check_config(config)
    t0 = time.perf_counter()
    items, truth = build_items(config)
    run = runtime.start_run(JOB, config)
    writer = FitWriter(run, config, items)
    todo = writer.pending()
    if todo:
        if config.num_workers > 0:
            runtime.init_ray(config.ray)
        runtime.evaluate(SMPLifyPredictor, todo, batch_size=config.batch_size, num_actors=config.num_workers,
                         use_gpu=config.ray.use_gpu, predictor_kwargs=predictor_kwargs(config), on_batch=writer,
                         progress=config.run.progress, desc=JOB, keep_outputs=False)
    wall = time.perf_counter() - t0
    metrics = {**writer.finish(truth), "fitted_now": len(todo)}
    if todo:  # a finished run re-run keeps the throughput of the run that fitted
        metrics.update(wall_seconds=wall, images_per_second=len(todo) / wall, workers=config.num_workers,
                       batch_size=config.batch_size)
    run.write_metrics(metrics)
    run.close()
    print(f"[{JOB}] {len(todo)} of {len(items)} images fitted in {wall:.1f} s -> {run.dir}", flush=True)
    return {"dir": run.dir, **metrics}


if __name__ == "__main__":
    runtime.run_main(main)
