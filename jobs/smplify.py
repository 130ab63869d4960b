"""SMPLify over many images (the book's chapter 8), batched and sharded over Ray actors.

    python -m jobs.smplify                      # 8 synthetic people (with ground truth), in this process
    python -m jobs.smplify ray                  # 64 synthetic people over 2 Ray workers
    python -m jobs.smplify book --keypoints est_joints.npz --images lsp/images --model SMPL_NEUTRAL.pkl
    python -m jobs.smplify --help

Per image, under ``results/smplify/<run>/``: ``params/<name>.safetensors`` (betas, body_pose,
global_orient, camera_translation), ``meshes/<name>.obj`` (the posed body, camera frame), ``media/<name>.png``
(the body over the image, detected keypoints green, projected model keypoints red); ``metrics.json``
(energies, seconds per image, and for synthetic inputs the 2D error, MPJPE, PA-MPJPE and vertex error);
TensorBoard energies per stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from configs.smplify import PRESETS, SMPLifyJobConfig
from lib3d import runtime

JOB = "smplify"


def build_items(config: SMPLifyJobConfig, generator: torch.Generator):
    """(items, ground truth or None) for the configured input."""
    from lib3d.bodies.pipeline import (
        FitItem,
        load_body_model,
        load_keypoints_json,
        load_lsp_est_joints,
        load_pose_prior,
    )
    from lib3d.bodies.smplify import synthetic_people

    if config.keypoints is None:
        model = load_body_model(config.model)
        gt = synthetic_people(model, config.num_synthetic, config.skeleton, prior=load_pose_prior(config.gmm),
                              image_size=config.image_size, focal_length=config.fit.focal_length,
                              noise_px=config.noise_px, drop_prob=config.drop_prob, generator=generator)
        items = [FitItem(f"person{i:04d}", gt.keypoints[i], tuple(config.image_size)) for i in range(len(gt.keypoints))]
        return items, gt
    path = Path(config.keypoints)
    images = sorted(Path(config.images).iterdir()) if config.images else []
    if path.suffix == ".npz":
        kps = load_lsp_est_joints(path)
        items = []
        for i in range(len(kps)):
            img = None
            if config.images:
                cand = Path(config.images) / f"im{i + 1:04d}.jpg"
                img = str(cand) if cand.exists() else (str(images[i]) if i < len(images) else None)
            items.append(FitItem(Path(img).stem if img else f"im{i + 1:04d}", kps[i], _size(img, config), img))
        return items, None
    items = []
    for i, d in enumerate(load_keypoints_json(path)):
        img = d.get("image")
        if img and config.images and not Path(img).is_absolute():
            img = str(Path(config.images) / img)
        size = tuple(d["image_size"]) if "image_size" in d else _size(img, config)
        items.append(FitItem(Path(img).stem if img else f"item{i:04d}", torch.tensor(d["keypoints"], dtype=torch.float32),
                             size, img))
    return items, None


def _size(img: str | None, config: SMPLifyJobConfig) -> tuple[int, int]:
    if img and Path(img).exists():
        from PIL import Image

        with Image.open(img) as im:
            return (im.height, im.width)
    return tuple(config.image_size)


def main(args: list[str] | None = None) -> dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    run = runtime.start_run(JOB, config)
    torch.set_num_threads(max(1, config.threads_per_worker))
    gen = torch.Generator().manual_seed(config.run.seed)
    items, gt = build_items(config, gen)
    from lib3d.bodies.pipeline import SMPLifyPredictor, load_body_model

    if config.num_workers > 0:
        runtime.init_ray(config.ray)
    t0 = time.perf_counter()
    fits = runtime.evaluate(SMPLifyPredictor, items, batch_size=config.batch_size, num_actors=config.num_workers,
                            predictor_kwargs=dict(model_path=config.model, gmm_path=config.gmm,
                                                  skeleton=config.skeleton, config=config.fit,
                                                  threads=config.threads_per_worker),
                            progress=config.run.progress, desc="smplify")
    wall = time.perf_counter() - t0
    model = load_body_model(config.model)
    metrics = _write_outputs(run, config, model, items, fits, gt)
    metrics.update({"images": len(items), "wall_seconds": wall, "images_per_second": len(items) / wall,
                    "workers": config.num_workers, "batch_size": config.batch_size,
                    "model": model.description or config.model})
    run.write_metrics(metrics)
    print(f"[{JOB}] {len(items)} images in {wall:.1f} s -> {run.dir}", flush=True)
    run.close()
    return {"dir": run.dir, **metrics}


def _write_outputs(run, config, model, items, fits, gt) -> dict:
    from lib3d.bodies.metrics import keypoint_error_2d, mpjpe, pa_mpjpe
    from lib3d.bodies.smpl import smpl_forward
    from lib3d.bodies.visualize import overlay
    from lib3d.io import save_obj
    from lib3d.runtime import save_safetensors

    P = {k: torch.stack([f[k] for f in fits]) for k in ("betas", "body_pose", "global_orient", "camera_translation")}
    with torch.no_grad():
        out = smpl_forward(model.with_betas(P["betas"].shape[1]), P["betas"], P["body_pose"], P["global_orient"],
                           P["camera_translation"])
    # TensorBoard: batch-mean energy terms after each stage (averaged over batches)
    per_stage: dict[int, dict[str, list[float]]] = {}
    seen = set()
    for f in fits:
        key = id(f["stage_terms"])
        if key in seen:
            continue
        seen.add(key)
        for s, (_, terms) in enumerate(f["stage_terms"]):
            for k, v in terms.items():
                per_stage.setdefault(s, {}).setdefault(k, []).append(v)
    for s, terms in sorted(per_stage.items()):
        run.log_scalars(s, {f"energy/{k}": float(np.mean(v)) for k, v in terms.items()})
    (run.dir / "params").mkdir(parents=True, exist_ok=True)
    for i, (it, f) in enumerate(run.progress(list(zip(items, fits)), desc="write")):
        save_safetensors(run.dir / "params" / f"{it.name}.safetensors",
                         {k: P[k][i].contiguous() for k in P})
        if config.write_meshes:
            (run.dir / "meshes").mkdir(parents=True, exist_ok=True)
            save_obj(run.dir / "meshes" / f"{it.name}.obj", out.vertices[i], model.faces)
            img = None
            if it.image:
                from PIL import Image

                img = np.asarray(Image.open(it.image).convert("RGB"), dtype=np.float32) / 255.0
            center = torch.tensor([it.image_size[1] / 2, it.image_size[0] / 2])
            pic, method = overlay(img, out.vertices[i], model.faces, it.image_size, config.fit.focal_length, center,
                                  it.keypoints.numpy(), f["keypoints_2d"].numpy())
            run.save_image(it.name, pic)
    energies = torch.tensor([f["energy"] for f in fits])
    metrics = {"energy_mean": float(energies.mean()), "seconds_per_image_in_fit": float(np.mean([f["seconds"] for f in fits])),
               "flipped": int(sum(f["flipped"] for f in fits))}
    if gt is not None:
        vis = gt.keypoints[..., 2] > 0
        kp2d = torch.stack([f["keypoints_2d"] for f in fits])
        J = out.joints[:, :model.num_joints]
        gt_out = smpl_forward(model, gt.betas, gt.body_pose, gt.global_orient, gt.camera_translation)
        metrics.update({
            "error_2d_px_observed": float(keypoint_error_2d(kp2d, gt.keypoints_clean, vis).mean()),
            "error_2d_px_all": float(keypoint_error_2d(kp2d, gt.keypoints_clean).mean()),
            "mpjpe_mm": float(1000 * mpjpe(J, gt.joints).mean()),
            "pa_mpjpe_mm": float(1000 * pa_mpjpe(J, gt.joints).mean()),
            "pa_vertex_error_mm": float(1000 * pa_mpjpe(out.vertices, gt_out.vertices).mean()),
        })
    return metrics


if __name__ == "__main__":
    main()
