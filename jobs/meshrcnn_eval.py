"""Evaluate a trained Mesh R-CNN on held-out images in batches (in-process or on Ray Data actors).

    python -m jobs.meshrcnn_eval --model results/meshrcnn/<run>          # held-out embedded images
    python -m jobs.meshrcnn_eval ray --model results/meshrcnn/<run>      # 2 Ray Data actors
    python -m jobs.meshrcnn_eval --model meshrcnn_R50.pth --preset paper --num-classes 9
    python -m jobs.meshrcnn_eval --model results/meshrcnn/<run> --data.source pix3d --data.pix3d-root /data/pix3d
    python -m jobs.meshrcnn_eval --model meshrcnn_R50.pth --preset paper --data.source pix3d \
        --data.pix3d-root /data/pix3d --data.image-size 1024 --images 2530   # the official model on S1 test

The data: a run directory's own data config, with the ``--data.*`` fields given on the command line (those
that differ from the defaults) taking precedence; an official checkpoint uses ``--data.*`` alone. With
``--data.source pix3d`` the held-out split is Mesh R-CNN's ``pix3d_<split>_test.json`` (read image by image)
and an official checkpoint gets Pix3D's 9 classes unless ``--num-classes`` says otherwise.

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


def data_config(cli_data: FurnitureConfig, run_data: dict | None) -> FurnitureConfig:
    """The evaluated data: the run's data config (None: none) updated with the command line's ``--data.*``
    fields that differ from the defaults."""
    if not run_data:
        return cli_data
    default = FurnitureConfig()
    given = {f.name: getattr(cli_data, f.name) for f in dataclasses.fields(FurnitureConfig)
             if getattr(cli_data, f.name) != getattr(default, f.name)}
    known = {f.name for f in dataclasses.fields(FurnitureConfig)}
    return FurnitureConfig(**{**{k: v for k, v in run_data.items() if k in known}, **given})


def main(args: list[str] | None = None) -> dict:
    config: MeshRCNNEvalConfig = runtime.cli(EVAL_PRESETS, description=__doc__, args=args)
    from lib3d.detect.evaluation import GroundTruth, evaluate_predictions
    from lib3d.systems.meshrcnn import MeshRCNNPredictor, data_num_classes, load_data, model_from_run

    if not config.model:
        raise runtime.UserError("--model is required (a jobs.meshrcnn run directory or a checkpoint file)")
    if config.preset not in PRESETS:
        raise runtime.UserError(f"--preset must be one of {sorted(PRESETS)}, got {config.preset!r}")
    preset_model = PRESETS[config.preset][1].model
    num_classes = config.num_classes or data_num_classes(config.data) or 0  # an official file on Pix3D: 9
    model, run_data = model_from_run(config.model, preset_model, num_classes)  # fails early on a bad model
    data_cfg = data_config(config.data, run_data)
    try:
        data = load_data(data_cfg, check_files=True)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise runtime.UserError(str(e)) from None
    if model.config.num_classes != len(data.categories):
        raise runtime.UserError(f"the model has {model.config.num_classes} classes but the {data_cfg.source} data has "
                                f"{len(data.categories)} ({', '.join(data.categories)})")
    del model
    split = data.test[: config.images]
    inputs = split.images() if hasattr(split, "images") else [x.image for x in split]  # lazy for Pix3D
    preds = runtime.evaluate(MeshRCNNPredictor, inputs, batch_size=config.batch_size,
                             num_actors=config.num_actors, use_gpu=config.use_gpu,
                             predictor_kwargs={"model": config.model, "preset_model": preset_model,
                                               "num_classes": num_classes, "use_gpu": config.use_gpu},
                             desc="meshrcnn_eval")
    from lib3d.detect import Prediction

    preds = [Prediction(**p) for p in preds]
    truths = [GroundTruth(x.boxes, x.classes, x.masks, x.meshes, x.K) for x in split]  # one item at a time
    metrics = evaluate_predictions(preds, truths, (data.image_size, data.image_size), config.mesh_samples,
                                   torch.Generator().manual_seed(0))
    out = {"model": config.model, "data": data_cfg.source, "images": len(split), "pix3d_protocol": {
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
