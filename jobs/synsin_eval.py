"""Evaluate a SynSin model on (image, pose) pairs in batches, in-process or on Ray Data actors.

    python -m jobs.synsin_eval --model results/synsin/<run>                 # held-out indoor pairs
    python -m jobs.synsin_eval ray --model results/synsin/<run>             # 2 Ray Data actors
    python -m jobs.synsin_eval --model synsin.pth --data realestate \\
        --realestate-cameras RealEstate10K/test --realestate-frames frames/test --vgg16-weights vgg16.pth
    python -m jobs.synsin_eval --model kitti.pth --data kitti --kitti-sequence sequences/08 --kitti-poses poses/08.txt

As the official ``eval_kitti.py`` + ``evaluate_perceptualsim.py``: writes the input, target and prediction
images of each pair and the mean PSNR, SSIM (and perceptual similarity with ``--vgg16-weights``) of the
predictions and of the identity baseline to ``<output>/metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from configs.synsin import EVAL_PRESETS, SynSinEvalConfig
from lib3d import runtime


def _pairs_from_sequence(images, K, poses, gap):
    from lib3d.data.indoor import relative_pose

    T = images.shape[0]
    Ks = K if K.ndim == 3 else K.expand(T, 3, 3)
    return [(images[t], images[t + gap], Ks[t], relative_pose(poses[t], poses[t + gap])) for t in range(T - gap)]


def build_pairs(config: SynSinEvalConfig, image_size: int) -> list:
    """The (source, target, K, RT) pairs of ``config.data`` at ``image_size``."""
    import dataclasses

    if config.data == "indoor":
        from lib3d.data.indoor import fixed_pairs, load_indoor

        data = load_indoor(dataclasses.replace(config.indoor, image_size=image_size), "test")
        if not 1 <= config.gap < data.images.shape[1]:
            raise runtime.UserError(f"--gap must be in [1, {data.images.shape[1] - 1}] for the indoor data")
        p = fixed_pairs(data, config.gap)
        return [(p.source[i], p.target[i], p.K[i], p.RT[i]) for i in range(p.source.shape[0])]
    if config.data == "realestate":
        from lib3d.data.realestate import load_realestate_sequence

        if not config.realestate_cameras or not config.realestate_frames:
            raise runtime.UserError("--data realestate needs --realestate-cameras and --realestate-frames")
        cams = Path(config.realestate_cameras)
        files = sorted(cams.glob("*.txt")) if cams.is_dir() else [cams]
        if not files or not files[0].is_file():
            raise runtime.UserError(f"--realestate-cameras {cams}: no camera file")
        pairs = []
        for f in files:
            seq = load_realestate_sequence(f, Path(config.realestate_frames) / f.stem, image_size)
            pairs += _pairs_from_sequence(seq.images, seq.track.K, seq.track.poses, config.gap)
        return pairs
    from lib3d.data.realestate import load_kitti_odometry

    if not config.kitti_sequence or not config.kitti_poses:
        raise runtime.UserError("--data kitti needs --kitti-sequence and --kitti-poses")
    seq = load_kitti_odometry(config.kitti_sequence, config.kitti_poses, image_size=image_size)
    return _pairs_from_sequence(seq.images, seq.K, seq.poses, config.gap)


def main(args: list[str] | None = None) -> dict:
    from lib3d.io.images import save_image
    from lib3d.systems.synsin import SynSinPredictor, load_generator

    config = runtime.cli(EVAL_PRESETS, description=__doc__, args=args)
    if not config.model:
        raise runtime.UserError("--model is required: a jobs.synsin run directory or an official synsin.pth")
    try:
        image_size = load_generator(config.model).generator.config.image_size
        pairs = build_pairs(config, image_size)
    except (FileNotFoundError, ValueError) as e:
        raise runtime.UserError(str(e)) from None
    if config.max_pairs > 0:
        pairs = pairs[: config.max_pairs]
    if not pairs:
        raise runtime.UserError("no (source, target) pairs to evaluate (sequences shorter than --gap?)")
    if config.num_actors != 0:
        runtime.init_ray(config.ray)
    device = "cuda" if config.use_gpu else "cpu"
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)

    def write(indices, res):
        for j, i in enumerate(indices):
            if i < config.save_images:
                src, tgt = pairs[i][0], pairs[i][1]
                save_image(out / f"{i:05d}_input.png", src.permute(1, 2, 0))
                save_image(out / f"{i:05d}_target.png", tgt.permute(1, 2, 0))
                save_image(out / f"{i:05d}_pred.png", torch.as_tensor(res["prediction"][j]).permute(1, 2, 0))

    res = runtime.evaluate(SynSinPredictor, pairs, batch_size=config.batch_size, num_actors=config.num_actors,
                           use_gpu=config.use_gpu, predictor_kwargs={"model": config.model, "device": device,
                                                                     "vgg16_weights": config.vgg16_weights,
                                                                     "seed": config.seed},
                           on_batch=write, desc="synsin_eval")
    metrics = {"model": config.model, "data": config.data, "pairs": len(pairs), "gap": config.gap}
    for k, v in res.items():
        if k not in ("prediction", "depth"):
            metrics[k] = float(torch.as_tensor(v).float().nanmean())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"[synsin_eval] {json.dumps(metrics)}; images in {out}", flush=True)
    return metrics


if __name__ == "__main__":
    runtime.run_main(main)
