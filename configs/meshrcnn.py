"""Config of ``jobs.meshrcnn`` (train Mesh R-CNN, the book's chapter 10) and ``jobs.meshrcnn_eval``.

Presets:

- ``default``: the quick CPU model (ResNet-18-FPN, 64 channels, trainable batch norm, 128x128 images of the
  embedded furniture data, AdamW) trained from random initialisation;
- ``sphere`` / ``voxel``: the same with the paper's ablations (Sphere-init: no voxel branch, the refinement
  starts from an icosphere; voxel-only: cubified voxels, no refinement);
- ``paper``: the Pix3D R50-FPN Mesh R-CNN (``meshrcnn_R50_FPN.yaml``: SGD lr 0.02, batch 16, 11k steps,
  warm-up 1000, steps at 8k/10k) on 256 px embedded images (a GPU job); ``paper_sphere`` / ``paper_voxel``
  its ablations;
- ``smoke``: a few tiny steps (tests, CI).

Every preset trains on the embedded data by default; ``--data.source pix3d --data.pix3d-root DIR`` trains it on
the real Pix3D with Mesh R-CNN's S1 split instead (``--data.pix3d-split s2``; ``--data.image-size`` sets the
longest image side), with Pix3D's 9 classes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.detect.meshrcnn import MeshRCNNConfig
from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class FurnitureConfig:
    """The data: the embedded procedural furniture dataset (``lib3d.data.furniture``), or Pix3D with
    ``source="pix3d"`` (``lib3d.data.pix3d_items``)."""

    num_train: int = 800
    """Training images."""
    num_test: int = 100
    """Held-out images (instances never seen in training)."""
    image_size: int = 128
    """Square image side in pixels."""
    max_objects: int = 3
    """Objects per image: 1 .. max_objects."""
    instances_per_category: int = 16
    """Training instances per category."""
    test_instances_per_category: int = 4
    """Held-out instances per category."""
    seed: int = 0
    """Seed of the generator (the data is cached per argument set under ~/.cache/lib3d/furniture)."""
    source: Literal["furniture", "pix3d"] = "furniture"
    """``furniture``: the embedded procedural data (the fields above); ``pix3d``: the real Pix3D dataset under
    ``pix3d_root`` with Mesh R-CNN's split (``lib3d.data.pix3d_items``): images scaled to a longest side of
    ``image_size`` and padded square, read lazily; the model then gets Pix3D's 9 classes whatever
    ``model.num_classes`` says, and the furniture fields other than ``image_size`` are unused."""
    pix3d_root: str = ""
    """Pix3D's folder (``img/``, ``mask/``, ``model/``, ``pix3d.json`` and Mesh R-CNN's ``pix3d_s1_train.json``
    / ``pix3d_s1_test.json`` from its ``datasets/pix3d/download_pix3d.sh``), for ``source=pix3d``."""
    pix3d_split: Literal["s1", "s2"] = "s1"
    """Mesh R-CNN's split: ``<pix3d_root>/pix3d_<split>_train.json`` trains, ``..._test.json`` evaluates (s1: the
    paper's main split; s2: test models unseen in training)."""
    train_json: str = ""
    """Another training split file instead (relative to ``pix3d_root`` or absolute): Mesh R-CNN's COCO layout
    or Pix3D's own ``pix3d.json`` layout."""
    test_json: str = ""
    """Another held-out split file instead (as ``train_json``)."""
    model_cache: int = 128
    """Pix3D models (mesh and voxels) each worker keeps parsed, most recently used first (0: none)."""


QUICK_MODEL = MeshRCNNConfig(
    num_classes=5, depth=18, norm="bn", freeze_at=0, stride_in_1x1=False, fpn_channels=64, input_format="RGB1",
    pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225),
    anchor_sizes=((16,), (32,), (64,), (128,), (256,)),
    rpn_pre_nms_topk_train=600, rpn_post_nms_topk_train=300, rpn_pre_nms_topk_test=600, rpn_post_nms_topk_test=150,
    roi_batch_size_per_image=64, box_fc_dim=256, head_conv_dim=64, mesh_hidden_dim=64, mesh_num_samples=1000,
    voxel_size=16, shape_rois_per_image=4, detections_per_image=20)
"""The quick CPU model: ResNet-18-FPN (64 channels), slim heads, a 16^3 voxel grid, the paper's 3-stage
refinement (64 wide), 4 foreground RoIs per image for the 3D heads."""


@dataclasses.dataclass(frozen=True)
class MeshRCNNJobConfig:
    """Train Mesh R-CNN and evaluate box / mask / mesh AP on held-out images."""

    model: MeshRCNNConfig = QUICK_MODEL
    """Architecture and loss recipe (``lib3d.detect.MeshRCNNConfig``)."""
    data: FurnitureConfig = FurnitureConfig()
    """The embedded dataset, or Pix3D (``--data.source pix3d``)."""
    steps: int = 1600
    """Training steps (measured on the 2-vCPU machine: the quick default's 1,600 steps take 17.5 min with 2
    threads on the quiet machine and reach held-out box AP50 0.89; 1,492 steps fit in 30 min on one thread with
    the other vCPU busy, box AP50 0.88)."""
    batch_size: int = 4
    """Global images per step (split evenly over the workers)."""
    optimizer: Literal["sgd", "adamw"] = "adamw"
    """SGD with momentum (detectron2's) or AdamW (faster from random initialisation)."""
    lr: float = 1e-3
    """Base learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """Weight decay."""
    warmup_steps: int = 100
    """Linear warm-up from ``warmup_factor * lr``."""
    warmup_factor: float = 0.1
    """Learning-rate factor at step 0."""
    lr_decay_steps: tuple[int, ...] = (1250, 1450)
    """Steps at which the learning rate is divided by 10."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (0: off)."""
    backbone_weights: str | None = None
    """torchvision ``resnet*.pth`` to initialise the backbone (None: random initialisation)."""
    weights: str | None = None
    """An official Mesh R-CNN checkpoint (detectron2 layout, e.g. meshrcnn_R50.pth) to start from."""
    eval_images: int = 100
    """Held-out images evaluated at the end (at most ``data.num_test``)."""
    eval_mesh_samples: int = 10000
    """Points per mesh for the mesh metrics (Mesh R-CNN's 10,000; fewer points bias F1@0.3 down: two 2,000-point
    samplings of one surface scaled to a longest edge of 10 give F1@0.3 of only ~0.6)."""
    vis_images: int = 4
    """Held-out images drawn with their detections and meshes."""
    threads: int = 0
    """torch CPU threads per worker (0: torch's default)."""
    run: RunConfig = RunConfig(checkpoint_every=250, log_every=20)
    """Run directory, seed, checkpoints, time limit."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers (``--ray.num-workers 2``: data-parallel)."""


_PAPER_MODEL = MeshRCNNConfig(num_classes=5)
_PAPER = MeshRCNNJobConfig(
    model=_PAPER_MODEL, data=FurnitureConfig(num_train=4000, num_test=400, image_size=256), steps=11000, batch_size=16,
    optimizer="sgd", lr=0.02, warmup_steps=1000, warmup_factor=0.1, lr_decay_steps=(8000, 10000), grad_clip=0.0,
    eval_images=400, eval_mesh_samples=10000, run=RunConfig(checkpoint_every=1000, log_every=50),
    ray=RayConfig(use_gpu=True))

PRESETS: dict[str, tuple[str, MeshRCNNJobConfig]] = {
    "default": ("quick CPU Mesh R-CNN: ResNet-18-FPN, 128 px embedded furniture, AdamW, from scratch",
                MeshRCNNJobConfig()),
    "sphere": ("quick CPU Sphere-init ablation (no voxel branch, icosphere level 4)",
               MeshRCNNJobConfig(model=dataclasses.replace(QUICK_MODEL, voxel_on=False))),
    "voxel": ("quick CPU voxel-only ablation (cubify, no refinement)",
              MeshRCNNJobConfig(model=dataclasses.replace(QUICK_MODEL, mesh_on=False))),
    "paper": ("the Pix3D R50-FPN Mesh R-CNN recipe (meshrcnn_R50_FPN.yaml) on 256 px embedded data (GPU)", _PAPER),
    "paper_sphere": ("the paper's Sphere-init ablation (GPU)",
                     dataclasses.replace(_PAPER, model=dataclasses.replace(_PAPER_MODEL, voxel_on=False))),
    "paper_voxel": ("the paper's voxel-only ablation (GPU)",
                    dataclasses.replace(_PAPER, model=dataclasses.replace(_PAPER_MODEL, mesh_on=False))),
    "smoke": ("a few tiny steps (tests, CI)",
              MeshRCNNJobConfig(
                  model=dataclasses.replace(QUICK_MODEL, fpn_channels=16, box_fc_dim=32, head_conv_dim=16,
                                            head_num_conv=2, mesh_hidden_dim=16, mesh_num_stages=2, voxel_size=8,
                                            mesh_num_samples=200, rpn_pre_nms_topk_train=100,
                                            rpn_post_nms_topk_train=50, rpn_pre_nms_topk_test=100,
                                            rpn_post_nms_topk_test=50, detections_per_image=5, ico_sphere_level=1),
                  data=FurnitureConfig(num_train=6, num_test=2, image_size=64, instances_per_category=2,
                                       test_instances_per_category=1),
                  steps=4, batch_size=2, warmup_steps=2, lr_decay_steps=(3,), eval_images=2, eval_mesh_samples=200,
                  vis_images=1, run=RunConfig(checkpoint_every=2, log_every=1, progress=False))),
}


@dataclasses.dataclass(frozen=True)
class MeshRCNNEvalConfig:
    """Evaluate a trained Mesh R-CNN on held-out embedded images, in batches (in-process or Ray Data actors)."""

    model: str = ""
    """A run directory of ``jobs.meshrcnn`` (its config and latest checkpoint), or an official checkpoint file
    (detectron2 layout, e.g. meshrcnn_R50.pth; then ``preset`` names the architecture)."""
    preset: str = "paper"
    """For an official checkpoint file: the ``jobs.meshrcnn`` preset whose model to build."""
    num_classes: int = 0
    """For an official checkpoint file: override the class count (Pix3D: 9); 0 keeps the preset's."""
    data: FurnitureConfig = FurnitureConfig()
    """The data whose held-out split is evaluated: a run directory's own data config, updated with the fields
    given here that differ from the defaults (e.g. ``--data.source pix3d --data.pix3d-root DIR``)."""
    images: int = 100
    """Held-out images evaluated."""
    batch_size: int = 8
    """Images per predictor call."""
    num_actors: int = 0
    """0: in this process; N >= 1: N Ray Data actors; -1: one per GPU (with ``use_gpu``)."""
    use_gpu: bool = False
    """Predict on a GPU (one per actor)."""
    mesh_samples: int = 10000
    """Points per mesh (the ShapeNet / Pix3D protocols: 10,000)."""
    output: str = "results/meshrcnn_eval"
    """Folder of metrics.json and the per-image predictions."""


EVAL_PRESETS: dict[str, tuple[str, MeshRCNNEvalConfig]] = {
    "default": ("in this process", MeshRCNNEvalConfig()),
    "ray": ("2 Ray Data actors", MeshRCNNEvalConfig(num_actors=2)),
}


@dataclasses.dataclass(frozen=True)
class MeshRCNNDemoConfig:
    """The book's ``demo.py`` + ``viz_demo_results.py``: detect, save mask PNGs and OBJ meshes, render them."""

    input: str = ""
    """The input image (an RGB PNG or JPEG)."""
    output: str = "results/meshrcnn_demo"
    """Output folder; files go to ``<output>/<image stem>/``."""
    model: str = ""
    """A ``jobs.meshrcnn`` run directory, or an official checkpoint (meshrcnn_R50.pth; then ``preset``)."""
    preset: str = "paper"
    """Architecture of an official checkpoint file."""
    num_classes: int = 9
    """Classes of an official checkpoint file (Pix3D: 9)."""
    class_names: tuple[str, ...] = ()
    """Names of the classes (default: the embedded data's for 5 classes, Pix3D's for 9)."""
    onlyhighest: bool = False
    """Only the highest-scoring detection (the book's ``--onlyhighest``)."""
    score_thresh: float = 0.5
    """Other detections need at least this score."""
    focal_length: float = 20.0
    """Focal length in the demo's units (mm on a 32 mm sensor: f = focal_length * W / 32 pixels)."""
    dist: float = 1.0
    """Render: camera distance from the mesh centre (in units of the mesh's largest extent)."""
    elev: float = 0.0
    """Render: camera elevation in degrees."""
    azim: float = 0.0
    """Render: camera azimuth in degrees (0: the input view's side)."""
    render_size: int = 256
    """Render: image side."""
    use_gpu: bool = False
    """Run on a GPU."""


DEMO_PRESETS: dict[str, tuple[str, MeshRCNNDemoConfig]] = {"default": ("the book's demo", MeshRCNNDemoConfig())}
