"""Config of ``jobs.smplify`` (the book's chapter 8): fit SMPL to 2D keypoints of many images with SMPLify,
in batches on Ray Data actors that each load the body model once (``lib3d.systems.smplify``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lib3d.bodies.smplify import SMPLifyConfig
from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class SMPLifyJobConfig:
    """Inputs, body model, fitting settings and workers of a SMPLify run."""

    keypoints: str | None = None
    """Keypoints file: LSP ``est_joints.npz`` (array ``est_joints`` (>=3, 14, N): rows x, y, confidence) or a
    JSON list of ``{"image": path, "keypoints": [[u, v, c], ...], "image_size": [H, W]}``. None: synthetic
    people made from the body model (with ground truth, so errors are reported)."""
    images: str | None = None
    """Folder of the images (LSP: ``im0001.jpg`` ... in keypoint order, else sorted file names). None: grey
    canvases of ``image_size``."""
    skeleton: Literal["lsp", "coco", "body25"] = "lsp"
    """Keypoint order of the input."""
    model: str | None = None
    """Body model file (.pkl official SMPL, .npz, .safetensors). None: the embedded SYNTHETIC body."""
    gmm: str | None = None
    """SMPLify's ``gmm_08.pkl`` pose prior. None: lib3d's embedded prior."""
    num_synthetic: int = 8
    """Synthetic people when ``keypoints`` is None."""
    image_size: tuple[int, int] = (512, 512)
    """(H, W) when no image is given (synthetic or missing files)."""
    noise_px: float = 2.0
    """Synthetic keypoint noise (pixels per axis)."""
    drop_prob: float = 0.1
    """Synthetic probability of a dropped keypoint (confidence 0)."""
    batch_size: int = 32
    """People fitted together in one batched SMPLify call (a Ray Data batch; results are written per batch)."""
    num_workers: int = 0
    """Ray Data actors (each loads the model once, ``ray.use_gpu``: one GPU each). 0: fit in this process."""
    threads_per_worker: int = 1
    """torch threads per actor/process (small tensors: 1 is usually fastest)."""
    write_meshes: bool = True
    """Write the posed mesh (OBJ) and the overlay PNG per image."""
    min_confidence: float = 0.5
    """Keypoints with at least this confidence count in the reported 2D reprojection error (the fit quality
    a user can judge without ground truth)."""
    fit: SMPLifyConfig = SMPLifyConfig()
    """SMPLify weights, stages, iterations."""
    run: RunConfig = RunConfig(checkpoint_every=0, log_every=1)
    """Run directory and seed."""
    ray: RayConfig = RayConfig()
    """Ray cluster and ``use_gpu`` (``num_workers`` above sets the actors; ``ray.num_workers`` is unused)."""


PRESETS: dict[str, tuple[str, SMPLifyJobConfig]] = {
    "default": ("8 synthetic people (synthetic body + embedded prior), fitted in this process",
                SMPLifyJobConfig()),
    "book": ("the book's setup: LSP est_joints.npz + images, SMPL .pkl and gmm_08.pkl given on the command line "
             "(--keypoints --images --model); 2 Ray workers",
             SMPLifyJobConfig(gmm="../shared/data/book/smplify/gmm_08.pkl", num_workers=2, batch_size=16)),
    "ray": ("64 synthetic people over 2 Ray workers", SMPLifyJobConfig(num_synthetic=64, num_workers=2)),
    "smoke": ("2 synthetic people, few iterations (tests, CI)",
              SMPLifyJobConfig(num_synthetic=2, batch_size=2, image_size=(128, 128),
                               fit=SMPLifyConfig(camera_iters=3, stage_iters=2),
                               run=RunConfig(checkpoint_every=0, progress=False))),
}
