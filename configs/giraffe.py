"""Config of ``jobs.giraffe`` (train GIRAFFE, the book's chapter 7) and of ``jobs.giraffe_render``.

Data: ``clevr`` (the embedded CLEVR-like scenes rendered by lib3d, with ground truth, the default) or
``images:DIR/*.jpg`` (a folder of real images: CompCars, CelebA-HQ, FFHQ, ...). The ``paper`` preset is the
official cars-64 configuration (``configs/64res/cars_64.yaml`` over ``configs/default.yaml``);
``OFFICIAL_MODELS`` holds the architectures and sampling ranges of every official config, so that
``jobs.giraffe_render --checkpoint model.pt --preset cars256`` renders an official pretrained model.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The generator's architecture and its camera / box distributions (official names in brackets)."""

    img_size: int = 64
    """Output image size (data.img_size); a power-of-two multiple of resolution_vol."""
    z_dim: int = 256
    """Object shape / appearance code size (model.z_dim)."""
    z_dim_bg: int = 128
    """Background code size (model.z_dim_bg)."""
    feature_dim: int = 128
    """Feature channels C of the fields and the neural renderer's input (decoder rgb_out_dim)."""
    hidden_size: int = 128
    """Object field width (decoder hidden_size)."""
    n_blocks: int = 8
    """Object field layers (decoder n_blocks)."""
    skips: tuple[int, ...] = (4,)
    """Object field skip layers (decoder skips)."""
    bg_hidden_size: int = 64
    """Background field width."""
    bg_n_blocks: int = 4
    """Background field layers."""
    bg_downscale: float = 12.0
    """Background points are divided by this before encoding (downscale_p_by)."""
    resolution_vol: int = 16
    """Feature-image size (generator resolution_vol)."""
    n_ray_samples: int = 64
    """Samples per ray."""
    fov: float = 49.13
    """Camera field of view in degrees."""
    range_u: tuple[float, float] = (0.0, 0.0)
    """Camera azimuth range (turns)."""
    range_v: tuple[float, float] = (0.25, 0.25)
    """Camera polar range: v = (1 - cos(polar angle)) / 2."""
    range_radius: tuple[float, float] = (2.732, 2.732)
    """Camera distance range."""
    depth_range: tuple[float, float] = (0.5, 6.0)
    """Near and far sample depths."""
    n_boxes: int = 1
    """Object boxes K."""
    scale_min: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Smallest box half-extents."""
    scale_max: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Largest box half-extents."""
    translation_min: tuple[float, float, float] = (-0.75, -0.75, 0.0)
    """Smallest box centre."""
    translation_max: tuple[float, float, float] = (0.75, 0.75, 0.0)
    """Largest box centre."""
    rotation_range: tuple[float, float] = (0.0, 1.0)
    """Box rotation range about z (turns)."""
    object_on_plane: bool = False
    """Pin the box centres' z to z_level_plane."""
    z_level_plane: float = 0.0
    """Height of the boxes when object_on_plane."""
    bg_rotation_range: tuple[float, float] = (0.0, 0.0)
    """Background rotation range (turns)."""
    object_count_probs: tuple[float, ...] | None = None
    """Probabilities of object_count_min, object_count_min + 1, ... objects (None: always n_boxes)."""
    object_count_min: int = 1
    """Fewest objects when object_count_probs is set."""


_CARS = {"scale_min": (0.2, 0.16, 0.16), "scale_max": (0.25, 0.2, 0.2), "translation_min": (-0.22, -0.12, 0.0),
             "translation_max": (0.22, 0.12, 0.0), "range_v": (0.41667, 0.5), "fov": 10.0}
_FACES = {"scale_min": (0.21, 0.21, 0.21), "scale_max": (0.21, 0.21, 0.21), "translation_min": (0.0, 0.0, 0.0),
              "translation_max": (0.0, 0.0, 0.0), "range_v": (0.4167, 0.5), "fov": 10.0}
_CHURCH = {"scale_min": (0.45, 0.45, 0.45), "scale_max": (0.55, 0.55, 0.55), "translation_min": (-0.15, -0.15, 0.0),
               "translation_max": (0.15, 0.15, 0.0), "range_v": (0.5, 0.5), "fov": 30.0, "bg_rotation_range": (0.0, 0.25)}
_CLEVR = {"scale_min": (0.17, 0.17, 0.17), "scale_max": (0.17, 0.17, 0.17), "rotation_range": (0.0, 0.0),
              "object_on_plane": True, "z_level_plane": 0.1665, "range_v": (0.33333, 0.33333)}
_HI = {"img_size": 256, "feature_dim": 256}

# The official configs (configs/64res/*.yaml, configs/256res/*.yaml). CLEVR's prior location files are not
# used: boxes are uniform in the translation ranges.
OFFICIAL_MODELS: dict[str, ModelConfig] = {
    "cars64": ModelConfig(**_CARS),
    "cars256": ModelConfig(**_CARS, **_HI),
    "celeba64": ModelConfig(**_FACES, rotation_range=(0.40278, 0.59722)),
    "cats64": ModelConfig(**{**_FACES, "range_v": (0.41667, 0.5)}, rotation_range=(0.40278, 0.59722)),
    "celebahq256": ModelConfig(**_FACES, **_HI, rotation_range=(0.375, 0.625)),
    "ffhq256": ModelConfig(**_FACES, **_HI, rotation_range=(0.40278, 0.59722)),
    "chairs64": ModelConfig(translation_min=(0.0, 0.0, 0.0), translation_max=(0.0, 0.0, 0.0), range_v=(0.05, 0.5)),
    "church64": ModelConfig(**_CHURCH),
    "church256": ModelConfig(**_CHURCH, **_HI),
    "clevr2_256": ModelConfig(**_CLEVR, **_HI, n_boxes=2, translation_min=(-0.713, -0.713, 0.0),
                              translation_max=(0.713, 0.713, 0.0)),
    "clevr2345_256": ModelConfig(**_CLEVR, img_size=256, z_dim=64, z_dim_bg=32, hidden_size=64, bg_hidden_size=32,
                                 n_boxes=5, translation_min=(-0.71, -0.71, 0.0), translation_max=(0.71, 0.71, 0.0),
                                 object_count_probs=(0.19456788355146545, 0.24355003312266127, 0.25269546846185523,
                                                     0.30918661486401805), object_count_min=2),
}
OFFICIAL_LEARNING_RATE_G = {name: (2.5e-4 if m.img_size == 256 else 5e-4) for name, m in OFFICIAL_MODELS.items()}

# The embedded CLEVR-like scenes seen by GIRAFFE's camera: lib3d's scene camera (distance 7.5, fov 38,
# elevation 25-45 degrees) scaled by 2.732 / 7.5; objects' half-extents 0.35-0.6 -> at most 0.22, on the
# floor (z up in GIRAFFE's world); samples only where the scene is (the camera is 2.732 from the centre and the
# objects within 1.1 of it; the floor beyond is the background's infinite last interval).
_EMBEDDED = {"fov": 38.0, "range_u": (0.0, 1.0), "range_v": (0.146, 0.289), "scale_min": (0.22, 0.22, 0.22),
                 "scale_max": (0.22, 0.22, 0.22), "translation_min": (-0.8, -0.8, 0.0), "translation_max": (0.8, 0.8, 0.0),
                 "object_on_plane": True, "z_level_plane": 0.22, "depth_range": (1.2, 4.4)}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation during and after training (G_ema)."""

    n_samples: int = 1000
    """Generated images for FID / KID (and as many held-out real images as there are, up to this)."""
    domain_feature_steps: int = 400
    """Training steps of the domain feature extractor (embedded data only; cached)."""
    inception_weights: str | None = None
    """pytorch-fid's pt_inception-2015-12-05-*.pth: also report the standard Inception FID / KID."""
    controllability_scenes: int = 16
    """Scenes per controllability measure."""
    temperature: float = 0.65
    """Latent scale of the sample grids and controllability renders (the official renders': 0.65)."""


@dataclasses.dataclass(frozen=True)
class GiraffeConfig:
    """Train GIRAFFE (a compositional generative neural feature field) and evaluate it."""

    data: str = "clevr"
    """"clevr": the embedded CLEVR-like scenes (rendered by lib3d, cached in ~/.cache/lib3d/clevr), or
    "images:DIR/*.jpg": a folder of real images."""
    n_scenes: int = 2048
    """Embedded scenes (the last holdout_fraction are held out for evaluation)."""
    max_objects: int = 2
    """Most objects per embedded scene (at least 1)."""
    holdout_fraction: float = 0.125
    """Share of the embedded scenes held out for FID."""
    data_seed: int = 0
    """Seed of the embedded scenes."""
    cache_dir: str | None = None
    """Cache of the embedded scenes and the domain feature extractor (default ~/.cache/lib3d/clevr)."""
    crop: Literal["random", "center", "resize", "none"] = "resize"
    """Image-folder transform: "random" (CompCars), "center" (CelebA), "resize", "none" (sizes must match)."""
    center_crop: int = 108
    """Centre-crop size for crop="center" (CelebA 108, CelebA-HQ 650)."""
    generator: Literal["giraffe", "gan2d"] = "giraffe"
    """"giraffe", or "gan2d": the paper's 2D GAN baseline (a convolutional generator with the same
    discriminator, losses and budget; model.z_dim and model.img_size apply)."""
    model: ModelConfig = ModelConfig()
    """Generator architecture and sampling ranges."""
    batch_size: int = 32
    """Global batch (split over the workers)."""
    steps: int = 1000
    """Training iterations (each a G step, an EMA update and a D step)."""
    lr_g: float = 5e-4
    """RMSprop learning rate of G."""
    lr_d: float = 1e-4
    """RMSprop learning rate of D."""
    r1_gamma: float = 10.0
    """R1 penalty weight on reals."""
    ema_decay: float = 0.999
    """Decay of the EMA generator (used for evaluation and rendering)."""
    disc_final_channels: int = 512
    """Channels of the discriminator's last hidden layer (the official 512)."""
    eval: EvalConfig = EvalConfig()
    """Evaluation."""
    evaluate_only: bool = False
    """Do not train: evaluate the newest checkpoint of the run named by run.name again (metrics to
    <run>/eval_step_<step>.json, images to <run>/media/eval_*)."""
    threads: int = 0
    """torch intra-op threads per worker (0: torch's default). Small models run faster on 1 thread of a busy
    2-core machine (two threads spin against each other)."""
    run: RunConfig = RunConfig(checkpoint_every=200, log_every=10)
    """Run directory, seed, checkpoints, time limit."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers."""


_QUICK_MODEL = ModelConfig(img_size=32, z_dim=64, z_dim_bg=32, feature_dim=32, hidden_size=64, n_blocks=4,
                           skips=(2,), bg_hidden_size=32, bg_n_blocks=2, resolution_vol=8, n_ray_samples=32,
                           n_boxes=2, object_count_probs=(0.5, 0.5), object_count_min=1, **_EMBEDDED)

PRESETS: dict[str, tuple[str, GiraffeConfig]] = {
    "default": ("quick CPU run on the embedded 32x32 scenes (<= 15 min on 2 cores)",
                GiraffeConfig(model=_QUICK_MODEL, batch_size=16, steps=1500, lr_g=1e-3, lr_d=2e-4, ema_decay=0.99,
                              disc_final_channels=128, threads=1,
                              eval=EvalConfig(n_samples=512, domain_feature_steps=300, controllability_scenes=12),
                              run=RunConfig(checkpoint_every=500, log_every=25, eval_every=750,
                                            time_limit_s=780.0))),
    "clevr64": ("the paper's architecture on the embedded 64x64 scenes (GPU, or a long CPU run)",
                GiraffeConfig(model=ModelConfig(n_boxes=2, object_count_probs=(0.5, 0.5), **_EMBEDDED),
                              n_scenes=8192, steps=20000,
                              run=RunConfig(checkpoint_every=1000, log_every=50, eval_every=5000))),
    "paper": ("the official cars-64 configuration on images:data/comprehensive_cars/images/*.jpg",
              GiraffeConfig(data="images:data/comprehensive_cars/images/*.jpg", crop="random",
                            model=OFFICIAL_MODELS["cars64"], steps=100000,
                            run=RunConfig(checkpoint_every=500, log_every=10, eval_every=10000))),
    "smoke": ("a few steps on 8 tiny scenes (tests, CI)",
              GiraffeConfig(n_scenes=16, model=dataclasses.replace(_QUICK_MODEL, img_size=16, n_ray_samples=8),
                            batch_size=4, steps=4, disc_final_channels=32, threads=1,
                            eval=EvalConfig(n_samples=8, domain_feature_steps=5, controllability_scenes=2),
                            run=RunConfig(checkpoint_every=2, log_every=1, progress=False))),
}


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Render the book's figures (official ``render.py`` programs) from a trained GIRAFFE generator."""

    checkpoint: str | None = None
    """An official ``model.pt`` (its ``generator_test``, the EMA generator, is rendered) or a lib3d run
    directory / its checkpoints folder (its ``generator_ema``)."""
    model: ModelConfig = _QUICK_MODEL
    """Architecture and ranges; the preset names one (official: cars64, cars256, celebahq256, ...)."""
    out_dir: str = "results/giraffe_render"
    """Output folder: one sub-folder per program with a PNG grid (scenes x 6 steps) and a GIF."""
    programs: tuple[str, ...] = ("interpolate_app", "interpolate_shape", "interpolate_bg_app",
                                 "translation_object_depth", "translation_object_horizontal", "rotation_object",
                                 "add_objects")
    """Programs to render."""
    n_scenes: int = 15
    """Scenes per program (the official 15)."""
    n_steps: int = 32
    """Steps per sweep (the official 32)."""
    temperature: float = 0.65
    """Latent-code scale (the official 0.65)."""
    seed: int = 0
    """Seed of the codes."""
    fps: float = 15.0
    """GIF frame rate."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render ("auto": CUDA when available)."""


RENDER_PRESETS: dict[str, tuple[str, RenderConfig]] = {
    "default": ("a lib3d run of the default preset (--checkpoint results/giraffe/<run>)", RenderConfig()),
    "clevr64": ("a lib3d run of the clevr64 preset", RenderConfig(model=PRESETS["clevr64"][1].model)),
    **{name: (f"the official {name} model (--checkpoint model.pt)", RenderConfig(model=m))
       for name, m in OFFICIAL_MODELS.items()},
}
