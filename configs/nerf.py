"""Config of ``jobs.nerf``: train a radiance field on posed images (the book's chapter 6) and report
held-out PSNR / SSIM, a turntable GIF and a grid of held-out renders.

Methods: ``grid`` (the fast default: DVGO-style density + feature grids, a tiny MLP, empty-space skipping
from the silhouettes' visual hull, coarse-to-fine grids) and ``book`` (the book's simplified NeRF MLP with
its exact hyperparameters). Views with ``index % 8 == 0`` are held out for testing.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.runtime import RayConfig, RunConfig

BOOK_COW = "cow:data/cow_mesh/cow.obj"
"""Where the book's notebooks keep the cow mesh (``data/cow_mesh/cow.obj``, with cow.mtl and cow_texture.png)."""


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The fast grid field (``lib3d.fields.voxel.GridRadianceField``) and its optimisation."""

    aabb: tuple[float, float, float, float, float, float] = (-1.2, -1.2, -1.2, 1.2, 1.2, 1.2)
    """World box (x0, y0, z0, x1, y1, z1) searched for the object; shrunk to the visual hull when carving."""
    carve: bool = True
    """Start the occupancy grid (and the box) from the visual hull of the training silhouettes."""
    density_voxels: int = 120 ** 3
    """Final number of density voxels (cubic voxels filling the box)."""
    density_voxels_start: int = 60 ** 3
    """Density voxels before the first upsampling (coarse-to-fine)."""
    color_voxels: int = 80 ** 3
    """Final number of feature voxels."""
    color_voxels_start: int = 40 ** 3
    """Feature voxels before the first upsampling."""
    upsample_at: tuple[int, ...] = (250, 500, 800)
    """Steps at which both grids grow (geometrically from the start to the final sizes)."""
    n_features: int = 12
    """Feature channels of the colour grid."""
    hidden: int = 64
    """Width of the colour MLP (0: no MLP, the grid holds RGB logits; n_features must then be 3)."""
    n_dir_freqs: int = 4
    """Harmonic frequencies of the view direction fed to the MLP."""
    alpha_init: float = 1e-2
    """Initial opacity of one marching step."""
    step_ratio: float = 0.5
    """Marching step in voxels."""
    batch_rays: int = 4096
    """Rays per step (split over the workers)."""
    lr_grid: float = 0.1
    """Adam learning rate of the grids."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the MLP."""
    lr_final_ratio: float = 0.1
    """Learning rates decay exponentially to this fraction at the last step."""
    silhouette_weight: float = 0.1
    """Weight of MSE(opacity, silhouette) when the dataset has silhouettes."""
    tv_weight: float = 0.0
    """Weight of the total variation of the density grid."""
    tv_until: int = 1000
    """Apply TV only before this step."""
    prune_every: int = 500
    """Steps between occupancy-grid prunings (0: never)."""
    prune_alpha: float = 1e-3
    """Voxels whose per-step opacity stays below this are pruned."""
    color_threshold: float = 1e-4
    """Colours are only evaluated at samples whose weight exceeds this (early termination)."""
    color_threshold_start: int = 200
    """Before this step every sample's colour is evaluated."""


@dataclasses.dataclass(frozen=True)
class BookConfig:
    """The book's chapter-6 NeRF, with its hyperparameters."""

    n_harmonic_functions: int = 60
    """Harmonic functions of the embedding (omega_0 = 0.1)."""
    n_hidden_neurons: int = 256
    """MLP width."""
    batch_cameras: int = 6
    """Cameras per step."""
    n_rays_per_image: int = 750
    """Monte-Carlo rays per camera."""
    n_pts_per_ray: int = 128
    """Samples per ray."""
    min_depth: float = 0.1
    """Nearest sample depth."""
    max_depth: float = 3.0
    """Farthest sample depth (the book's volume_extent_world)."""
    lr: float = 1e-3
    """Adam learning rate (divided by 10 at 75% of the steps)."""


@dataclasses.dataclass(frozen=True)
class NerfConfig:
    """Train a radiance field on posed images and evaluate it on held-out views."""

    data: str = "embedded"
    """Dataset: "embedded" (the procedural default scene rendered by lib3d), "cow:PATH/cow.obj" (the book's
    40 cow renders, made by lib3d from the book's mesh) or "blender:DIR" (a NeRF Blender-format dataset)."""
    image_size: int = 128
    """Image size of the renders (embedded, cow; downscale target of Blender data)."""
    num_views: int = 40
    """Views rendered (embedded, cow)."""
    method: Literal["grid", "book"] = "grid"
    """"grid": the fast grid field; "book": the book's NeRF MLP."""
    steps: int = 2000
    """Optimisation steps."""
    turntable_frames: int = 36
    """Frames of the turntable GIF (0: none)."""
    threads: int = 1
    """torch intra-op threads per worker (0: torch's default, all cores). The grid field runs many small ops,
    for which one thread is about as fast as two on an idle 2-core CPU and several times faster on a busy
    one (spinning OpenMP threads); the book's large MLP prefers 0."""
    grid: GridConfig = GridConfig()
    """Fast grid field settings (method "grid")."""
    book: BookConfig = BookConfig()
    """The book's NeRF settings (method "book")."""
    run: RunConfig = RunConfig(checkpoint_every=500, log_every=50, eval_every=1000, time_limit_s=450.0,
                               keep_freed_memory=True)
    """Run directory, seed, checkpoints; held-out evaluations every ``eval_every`` steps; a time limit of
    450 s of training keeps the default run under 10 minutes end to end on a slow 2-core machine (it then
    evaluates what it has; a later run of the same name continues)."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers (0/1: in this process)."""


PRESETS: dict[str, tuple[str, NerfConfig]] = {
    "default": ("fast grid field on the embedded scene (minutes on a laptop CPU)", NerfConfig()),
    "cow": (("fast grid field on the book's cow renders (made from data/cow_mesh/cow.obj; --data cow:PATH; "
             "35 train / 5 test views)"), NerfConfig(data=BOOK_COW)),
    "book": ("the book's NeRF and hyperparameters on the cow (very slow on CPU: use --run.time-limit-s)",
             NerfConfig(data=BOOK_COW, method="book", steps=3000, turntable_frames=0, threads=0,
                        run=RunConfig(checkpoint_every=50, log_every=5, keep_freed_memory=True))),
    "tiny": ("smoke run: 64x64 embedded renders, small grids, 300 steps (tests, CI)",
             NerfConfig(image_size=64, num_views=16, steps=300, turntable_frames=4,
                        grid=GridConfig(density_voxels=40 ** 3, density_voxels_start=30 ** 3,
                                        color_voxels=24 ** 3, color_voxels_start=20 ** 3, upsample_at=(150,),
                                        batch_rays=2048, prune_every=0, color_threshold_start=50),
                        run=RunConfig(checkpoint_every=50, log_every=10, progress=False, keep_freed_memory=True))),
    "ddp": ("the default on 2 Ray CPU workers (DDP; each worker its own rays)",
            NerfConfig(ray=RayConfig(num_workers=2))),
}
