"""Config of ``jobs.fit_volume``: the book's chapter 5 — fit a dense voxel volume (density + colour logits)
to multi-view renders with ``VolumeRenderer`` and the book's Huber loss, then render it rotating."""

from __future__ import annotations

import dataclasses

from lib3d.runtime import RayConfig, RunConfig

BOOK_COW = "cow:data/cow_mesh/cow.obj"
"""Where the book's notebooks keep the cow mesh (``data/cow_mesh/cow.obj``, with cow.mtl and cow_texture.png)."""


@dataclasses.dataclass(frozen=True)
class FitVolumeConfig:
    """Fit the book's ``VolumeModel`` to posed renders (chapter 5's hyperparameters by default)."""

    data: str = "embedded"
    """Dataset: "embedded" (the procedural scene rendered by lib3d), "cow:PATH/cow.obj" (the book's cow
    renders, made by lib3d from the book's mesh) or "blender:DIR" (a NeRF Blender-format dataset)."""
    image_size: int = 128
    """Image size of the renders (embedded, cow; downscale target of Blender data)."""
    num_views: int = 40
    """Views rendered (embedded, cow)."""
    volume_size: int = 128
    """Voxels per side of the cubic volume."""
    volume_extent_world: float = 3.0
    """World size of the volume (voxel size = extent / volume_size) and the farthest ray depth."""
    n_pts_per_ray: int = 150
    """Samples per ray of the grid ray sampler."""
    min_depth: float = 0.1
    """Nearest sample depth."""
    batch_size: int = 10
    """Cameras per iteration (split over the workers)."""
    iterations: int = 300
    """Optimisation iterations."""
    lr: float = 0.1
    """Adam learning rate (divided by 10 at 75% of the iterations)."""
    rotating_frames: int = 40
    """Frames of the rotating render (GIF)."""
    compiled_sampler: bool = True
    """Sample the volume with lib3d's compiled CPU trilinear kernels (``lib3d.render.trilinear``; about 2x
    faster steps on CPU, ~30 s of compiling first). False: ``grid_sample``. Ignored on GPU."""
    run: RunConfig = RunConfig(checkpoint_every=50, log_every=10, keep_freed_memory=True)
    """Run directory, seed, checkpoints, time limit."""
    ray: RayConfig = RayConfig()
    """Ray cluster (the fit runs in this process; ``num_workers`` >= 2 runs DDP over cameras)."""


PRESETS: dict[str, tuple[str, FitVolumeConfig]] = {
    "default": ("the book's chapter 5 on the embedded scene: 128^3, 300 iterations (slow on CPU)", FitVolumeConfig()),
    "cow": ("the book's chapter 5 on the book's cow renders (made from data/cow_mesh/cow.obj; --data cow:PATH)",
            FitVolumeConfig(data=BOOK_COW)),
    "tiny": ("smoke run: 32^3 volume, 32x32 images, 30 iterations (tests)",
             FitVolumeConfig(image_size=32, num_views=12, volume_size=32, n_pts_per_ray=48, batch_size=4,
                             iterations=30, rotating_frames=4, compiled_sampler=False,
                             run=RunConfig(checkpoint_every=10, log_every=5, progress=False, keep_freed_memory=True))),
}
