"""Config of ``jobs.fit_camera`` (the book's chapter 4): recover a camera position from a silhouette alone,
or from silhouette plus texture, by differentiable (soft) rendering
(``lib3d.systems.camera_fit.CameraFitSystem``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class FitCameraConfig:
    """Fit the camera centre (the book's model: position -> look_at_rotation -> R, T = -R^T p) with Adam."""

    mesh: str | None = None
    """Mesh to look at: an .obj (textured) or .ply file. None: lib3d's embedded procedural toy."""
    loss: Literal["silhouette", "textured"] = "silhouette"
    """silhouette: sum of squared soft-silhouette differences; textured: plus the squared RGB differences of
    a soft Phong render."""
    normalize: bool = True
    """Centre the mesh and scale it into the unit cube (the book normalises the cow)."""
    image_size: int = 128
    """H = W of the rendered and target images (the book: 256)."""
    faces_per_pixel: int = 100
    """K of the soft silhouette (the book: 100)."""
    faces_per_pixel_rgb: int = 50
    """K of the soft Phong image of the textured loss (the book: 50)."""
    iterations: int = 200
    """Adam steps."""
    lr: float = 0.05
    """Adam learning rate (the book's 0.05)."""
    start: tuple[float, float, float] = (3.0, 6.9, 2.5)
    """Initial camera centre in world space (the book's)."""
    target_dist: float = 3.0
    """Target view: distance from the origin."""
    target_elev: float = 50.0
    """Target view: elevation in degrees."""
    target_azim: float = 0.0
    """Target view: azimuth in degrees."""
    frame_every: int = 2
    """Keep every n-th iteration's render (and the first) as a frame of ``media/fit.gif``."""
    run: RunConfig = RunConfig(checkpoint_every=50, log_every=1)
    """Run directory, seed (the fit is deterministic), checkpoints (resumable; ``--run.eval-every`` logs
    the render beside the target to TensorBoard during the fit)."""
    ray: RayConfig = RayConfig()
    """Ray cluster and the training worker (one: ``--ray.use-gpu`` runs on CUDA)."""


PRESETS: dict[str, tuple[str, FitCameraConfig]] = {
    "silhouette": ("fit to the target silhouette alone (book ch. 4, first model)", FitCameraConfig()),
    "textured": ("fit to silhouette plus soft-Phong colours (book ch. 4, second model)",
                 FitCameraConfig(loss="textured")),
    "smoke": ("3 iterations at 32 px, 20 faces per pixel (tests, CI)",
              FitCameraConfig(image_size=32, iterations=3, faces_per_pixel=20, faces_per_pixel_rgb=10,
                              frame_every=1,
                              run=RunConfig(checkpoint_every=0, log_every=1, progress=False))),
}
