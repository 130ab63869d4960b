"""Evaluate a trained Mesh R-CNN on held-out images in batches (in-process or on Ray Data actors).

    python -m jobs.meshrcnn_eval --model results/meshrcnn/<run>          # held-out embedded images
    python -m jobs.meshrcnn_eval ray --model results/meshrcnn/<run>      # 2 Ray Data actors
    python -m jobs.meshrcnn_eval --model meshrcnn_R50.pth --preset paper --num-classes 9

Pix3D protocol: COCO box and mask AP (AP50 is Mesh R-CNN's headline), mesh AP50 (a detection matched at box
IoU 0.5 is a true positive when F1@0.3 of its mesh, placed with the predicted depth extent around the ground
truth's centre depth, exceeds 0.5). ShapeNet protocol: Chamfer-L2, normal consistency and F1@0.1/0.3/0.5
on 10,000 points with the ground truth scaled to a longest box edge of 10, averaged over matched objects.
Writes ``<output>/metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from configs.meshrcnn import EVAL_PRESETS, PRESETS, FurnitureConfig, MeshRCNNEvalConfig
from lib3d import runtime


def main(args: list[str] | None = None) -> dict:
    config: MeshRCNNEvalConfig = runtime.cli(EVAL_PRESETS, description=__doc__, args=args)
    from lib3d.data.furniture import load_furniture
    from lib3d.detect.evaluation import GroundTruth, evaluate_predictions
    from lib3d.systems.meshrcnn import MeshRCNNPredictor, model_from_run

    if not config.model:
        raise runtime.UserError("--model is required (a jobs.meshrcnn run directory or a checkpoint file)")
    if config.preset not in PRESETS:
        raise runtime.UserError(f"--preset must be one of {sorted(PRESETS)}, got {config.preset!r}")
    preset_model = PRESETS[config.preset][1].model
    _, run_data = model_from_run(config.model, preset_model, config.num_classes)  # fails early on a bad model
    data_cfg = FurnitureConfig(**run_data) if run_data else config.data
    data = load_furniture(**dataclasses.asdict(data_cfg))
    items = data.test[: config.images]
    preds = runtime.evaluate(MeshRCNNPredictor, [x.image for x in items], batch_size=config.batch_size,
                             num_actors=config.num_actors, use_gpu=config.use_gpu,
                             predictor_kwargs={"model": config.model, "preset_model": preset_model,
                                               "num_classes": config.num_classes, "use_gpu": config.use_gpu},
                             desc="meshrcnn_eval")
    from lib3d.detect import Prediction

    preds = [Prediction(**p) for p in preds]
    truths = [GroundTruth(x.boxes, x.classes, x.masks, x.meshes, x.K) for x in items]
    metrics = evaluate_predictions(preds, truths, (data.image_size, data.image_size), config.mesh_samples,
                                   torch.Generator().manual_seed(0))
    out = {"model": config.model, "images": len(items), "pix3d_protocol": {
        k: metrics[k] for k in ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mesh_ap50") if k in metrics},
        "shapenet_protocol": {k: metrics[k] for k in ("chamfer", "normal_consistency", "f1_0.1", "f1_0.3", "f1_0.5",
                                                      "matched") if k in metrics}}
    folder = Path(config.output)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    runtime.run_main(main)
