"""Config of ``jobs.synsin``: train SynSin (view synthesis from a single image, the book's chapter 9) on the
embedded procedural indoor dataset and report held-out PSNR / SSIM against the baselines.

Presets: ``default`` (the quick CPU model at 64x64: slimmer networks, smaller splats), ``paper`` (the
official RealEstate10K architecture and optimiser at 256x256: a GPU job), ``smoke`` (a few tiny steps for
tests and CI) and ``ddp`` (the default on 2 Ray workers).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.data.indoor import IndoorConfig
from lib3d.runtime import RayConfig, RunConfig
from lib3d.synthesis.synsin import SynSinModelConfig


@dataclasses.dataclass(frozen=True)
class SynSinConfig:
    """Train SynSin's generator (and discriminator) on (source, target, K, RT) pairs."""

    model: SynSinModelConfig = SynSinModelConfig(
        image_size=64, ngf=32, feature_channels=32, depth_filters=16, depth_levels=6, encoder_blocks=4,
        norm="batch", noise=False, min_z=0.3, max_z=8.0, radius_px=1.5, points_per_pixel=8, align_corners=False,
        ndf=32)
    """The networks, the depth range and the splatter (the official ones in ``paper``). The quick default
    is slimmer: 32-d features, 4 feature blocks, a 6-level depth UNet with 16 filters, plain batch norm
    (no spectral norm, no noise), radius 1.5 px (6 px at 256) and K = 8."""
    data: IndoorConfig = IndoorConfig()
    """The procedural indoor dataset (image size must equal ``model.image_size``)."""
    steps: int = 1500
    """Training steps (measured: 1,466 steps of the quick default took 20 min on one vCPU with 1 thread, the
    other vCPU busy, and gave +4.8 dB over the identity baseline on held-out pairs)."""
    batch_size: int = 8
    """Global batch of pairs per step (split evenly over the workers)."""
    max_gap: int = 4
    """Training pairs are 1..max_gap frames apart."""
    eval_gap: int = 4
    """Held-out pairs are frame t and t + eval_gap of every test scene."""
    lr_g: float = 5e-4
    """Adam learning rate of the generator (official ``--lr_g`` default 5e-4: ``train.sh``'s ``--lr 1e-4``
    does not reach the optimizers, which read ``lr_g`` / ``lr_d``)."""
    lr_d: float = 2e-3
    """Adam learning rate of the discriminator (official ``--lr_d`` default 2e-3)."""
    betas: tuple[float, float] = (0.0, 0.9)
    """Adam betas (official: (0, 0.9))."""
    l1_weight: float = 1.0
    """Weight of the L1 photometric loss (official 1.0)."""
    vgg_weights: str | None = None
    """torchvision ``vgg19-*.pth`` for the perceptual loss (official weight 10); None: no perceptual loss
    (lib3d never downloads weights), L1 + GAN only."""
    vgg_weight: float = 10.0
    """Weight of the VGG19 perceptual loss when ``vgg_weights`` is given."""
    gan_weight: float = 0.0
    """Weight of the hinge GAN loss of the generator (official 1.0; 0: no discriminator is trained)."""
    feature_matching_weight: float = 10.0
    """Weight of the discriminator feature-matching loss (official ``lambda_feat`` 10), with the GAN."""
    eval_images: int = 6
    """Held-out pairs shown in the source / prediction / target / depth grid."""
    gif_frames: int = 12
    """Frames of the evaluation GIF (a forward walk from one held-out image); 0: none."""
    threads: int = 0
    """torch CPU threads per worker (0: torch's default)."""
    run: RunConfig = RunConfig(checkpoint_every=250, log_every=25)
    """Run directory, seed, checkpoints, time limit."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers (``--ray.num-workers 2``: DDP)."""


_PAPER_MODEL = SynSinModelConfig()  # official RealEstate10K: 256x256, ngf 64, radius 4, K 128, alpha compositing

PRESETS: dict[str, tuple[str, SynSinConfig]] = {
    "default": ("quick CPU model: 64x64, slim networks, L1 loss, 1500 steps", SynSinConfig()),
    "paper": (("official RealEstate10K architecture and optimiser at 256x256 (GPU; L1 + hinge GAN + feature "
               "matching, + VGG with --vgg-weights)"),
              SynSinConfig(model=_PAPER_MODEL, data=IndoorConfig(image_size=256, train_scenes=400, test_scenes=24),
                           steps=50000, batch_size=32, gan_weight=1.0,
                           run=RunConfig(checkpoint_every=1000, log_every=50), ray=RayConfig(use_gpu=True))),
    "smoke": ("a few tiny steps (tests, CI)",
              SynSinConfig(model=SynSinModelConfig(image_size=32, ngf=8, depth_filters=4, depth_levels=4,
                                                   encoder_blocks=2, min_z=0.3, max_z=8.0, radius_px=1.5,
                                                   points_per_pixel=8, align_corners=False, ndf=8),
                           data=IndoorConfig(image_size=32, frames=4, train_scenes=4, test_scenes=2),
                           steps=4, batch_size=2, eval_gap=2, max_gap=2, gan_weight=1.0, eval_images=2,
                           gif_frames=3, run=RunConfig(checkpoint_every=2, log_every=1, progress=False))),
    "ddp": ("the default on 2 Ray CPU workers (DDP, gloo)", SynSinConfig(ray=RayConfig(num_workers=2))),
}


@dataclasses.dataclass(frozen=True)
class SynSinEvalConfig:
    """Batched evaluation of a SynSin model on (image, pose) pairs (``jobs.synsin_eval``)."""

    model: str = ""
    """A ``jobs.synsin`` run directory (its latest checkpoint), one of its checkpoint directories, or an
    official ``synsin.pth``."""
    data: Literal["indoor", "realestate", "kitti"] = "indoor"
    """Pairs from the embedded held-out indoor scenes, RealEstate10K videos or a KITTI odometry sequence."""
    indoor: IndoorConfig = IndoorConfig()
    """The indoor dataset (its test split is used; image size is set to the model's)."""
    gap: int = 4
    """Pairs are frames t and t + gap."""
    realestate_cameras: str | None = None
    """A RealEstate10K camera file, or a folder of them (``<video id>.txt``)."""
    realestate_frames: str | None = None
    """The folder holding one ``<video id>/`` frame folder per video (``<timestamp>.png``)."""
    kitti_sequence: str | None = None
    """A KITTI odometry ``sequences/XX`` folder (``calib.txt``, ``image_2/``)."""
    kitti_poses: str | None = None
    """The sequence's ``poses/XX.txt``."""
    max_pairs: int = 0
    """Evaluate at most this many pairs (0: all)."""
    batch_size: int = 8
    """Pairs per predictor call."""
    num_actors: int = 0
    """Ray Data actors (0: in this process; -1: one per CPU, or per GPU with ``use_gpu``)."""
    use_gpu: bool = False
    """One GPU per actor (in-process: CUDA when available)."""
    vgg16_weights: str | None = None
    """torchvision ``vgg16-*.pth`` for SynSin's perceptual similarity (None: not reported)."""
    output: str = "results/synsin_eval"
    """Folder for the images (``NNNNN_input.png``, ``_target.png``, ``_pred.png``) and ``metrics.json``."""
    save_images: int = 32
    """Write the images of the first N pairs (0: none)."""
    seed: int = 0
    """Seed of the generator's noise."""
    ray: RayConfig = RayConfig()
    """The Ray cluster to join when ``num_actors`` is not 0."""


EVAL_PRESETS: dict[str, tuple[str, SynSinEvalConfig]] = {
    "default": ("held-out indoor pairs, in this process", SynSinEvalConfig()),
    "ray": ("held-out indoor pairs on 2 Ray Data actors", SynSinEvalConfig(num_actors=2)),
}
