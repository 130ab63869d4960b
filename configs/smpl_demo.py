"""Config of ``jobs.smpl_demo`` (the book's ``render_smpl.py``): random SMPL shapes and poses, saved as OBJ
meshes and rendered."""

from __future__ import annotations

import dataclasses

from lib3d.runtime import RunConfig


@dataclasses.dataclass(frozen=True)
class SMPLDemoConfig:
    """Random bodies: shape from N(0, beta_std^2), pose from the GMM prior scaled by pose_scale."""

    model: str | None = None
    """Body model file (.pkl, .npz, .safetensors). None: the embedded SYNTHETIC body."""
    gmm: str | None = None
    """Pose prior to sample from (SMPLify's gmm_08.pkl). None: lib3d's embedded prior."""
    num_bodies: int = 4
    """Bodies to generate."""
    beta_std: float = 1.0
    """Standard deviation of the shape coefficients."""
    pose_scale: float = 1.0
    """Multiplies the sampled poses (0: the rest T-pose)."""
    image_size: int = 512
    """H = W of the renders."""
    run: RunConfig = RunConfig(checkpoint_every=0, log_every=1)
    """Run directory and seed."""


PRESETS: dict[str, tuple[str, SMPLDemoConfig]] = {
    "default": ("4 random synthetic bodies, 512 px renders", SMPLDemoConfig()),
    "tpose": ("the mean shape in the rest pose", SMPLDemoConfig(num_bodies=1, beta_std=0.0, pose_scale=0.0)),
    "smoke": ("1 body at 96 px (tests, CI)",
              SMPLDemoConfig(num_bodies=1, image_size=96, run=RunConfig(checkpoint_every=0, progress=False))),
}
