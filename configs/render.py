"""Config of ``jobs.render`` (the book's chapter 2): a textured mesh under the book's light and material
variations, written as a labelled image grid (and a turntable GIF)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.runtime import RunConfig


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Render one textured mesh under the chapter-2 variations of lights, materials and shaders."""

    mesh: str | None = None
    """Mesh to render: an .obj (with its texture) or .ply file. None: lib3d's embedded procedural toy."""
    normalize: bool = False
    """Centre the mesh and scale it into the unit cube first (the book renders the raw cow, which is
    already about unit size)."""
    image_size: int = 256
    """H = W of every image in pixels."""
    dist: float = 2.7
    """Camera distance from the origin (the book's 2.7)."""
    shader: Literal["hard_phong", "soft_phong"] = "hard_phong"
    """Shader of the Phong variations (the flat and directional-light panels use their own)."""
    turntable_frames: int = 24
    """Frames of the turntable GIF (azimuth 0..360 under the front light). 0: no GIF."""
    gif_fps: float = 12.0
    """Frames per second of the GIF."""
    rows: int = 2
    """Rows of the image grid."""
    device: str = "cpu"
    """Device to render on ("cpu", "cuda")."""
    run: RunConfig = RunConfig(checkpoint_every=0, log_every=1)
    """Run directory and seed (nothing is trained; no checkpoints)."""


PRESETS: dict[str, tuple[str, RenderConfig]] = {
    "default": ("the embedded procedural toy, 256 px", RenderConfig()),
    "cow": ("the book's cow (../shared/data/book/cow_mesh/cow.obj), 512 px as in chapter 2",
            RenderConfig(mesh="../shared/data/book/cow_mesh/cow.obj", image_size=512)),
    "smoke": ("the toy at 64 px, 4 turntable frames (tests, CI)",
              RenderConfig(image_size=64, turntable_frames=4, run=RunConfig(checkpoint_every=0, progress=False))),
}
