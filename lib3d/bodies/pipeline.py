"""Batch SMPLify over many images: keypoint files and a predictor that loads the body model once.

:class:`SMPLifyPredictor` is the callable class that ``lib3d.runtime.evaluate`` builds once per Ray actor
(model and prior loaded in ``__init__``) and calls on batches of :class:`FitItem`; it re-enables autograd
inside (the evaluation helper runs predictors under ``torch.inference_mode``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lib3d.bodies.skeletons import get_skeleton
from lib3d.bodies.smplify import SMPLifyConfig, smplify

__all__ = [
    "FitItem",
    "SMPLifyPredictor",
    "load_body_model",
    "load_keypoints_json",
    "load_lsp_est_joints",
    "load_pose_prior",
]


class FitItem(NamedTuple):
    """One image to fit: ``keypoints (K, 3)`` (u, v, confidence), its (H, W), name and image path."""

    name: str
    keypoints: torch.Tensor
    image_size: tuple[int, int]
    image: str | None = None


def load_lsp_est_joints(path: str | Path) -> torch.Tensor:
    """SMPLify's LSP ``est_joints.npz`` -> (N, 14, 3) float (u, v, confidence).

    The file holds ``est_joints`` of shape (>=3, 14, N): rows 0-1 pixel x, y, row 2 confidence.
    """
    with np.load(path, allow_pickle=False) as z:
        if "est_joints" not in z.files:
            raise ValueError(f"{path}: expected an array 'est_joints', found {z.files}")
        a = np.asarray(z["est_joints"], dtype=np.float64)
    if a.ndim != 3 or a.shape[0] < 3 or a.shape[1] != 14:
        raise ValueError(f"{path}: est_joints must have shape (>=3, 14, N), got {a.shape}")
    return torch.from_numpy(a[:3].transpose(2, 1, 0).copy()).float()


def load_keypoints_json(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of ``{"image": path|null, "keypoints": [[u, v, c], ...], "image_size": [H, W]}``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "items" in data:
        data = data["items"]
    if not isinstance(data, list) or not all(isinstance(d, dict) and "keypoints" in d for d in data):
        raise ValueError(f"{path}: expected a list of objects with 'keypoints'")
    return data


def load_body_model(path: str | None, dtype=torch.float32):
    """The SMPL-layout model at ``path``, or the embedded synthetic body when None."""
    if path is None:
        from lib3d.bodies.synthetic import synthetic_smpl_model

        return synthetic_smpl_model(dtype=dtype)
    from lib3d.bodies.model_io import load_smpl_model

    return load_smpl_model(path, dtype=dtype)


def load_pose_prior(path: str | None):
    """SMPLify's GMM prior from ``path`` (gmm_08.pkl), or the embedded default when None."""
    from lib3d.bodies.priors import default_gmm_prior, load_gmm_prior

    return default_gmm_prior() if path is None else load_gmm_prior(path)


class SMPLifyPredictor:
    """Fits batches of :class:`FitItem` with :func:`lib3d.bodies.smplify.smplify`.

    Args:
        model_path: body model file (None: synthetic body).
        gmm_path: pose prior file (None: embedded prior).
        skeleton: keypoint order.
        config: SMPLify settings.
        threads: torch threads of this process (None: leave as is).

    Calling it on a list of items returns a list of dicts (per item): ``betas``, ``body_pose``,
    ``global_orient``, ``camera_translation``, ``energy``, ``keypoints_2d``, ``flipped``, ``stage_energies``,
    ``stage_terms`` (the batch-mean energy terms after each stage) and ``seconds`` (this batch's fit time
    divided by its size).
    """

    def __init__(self, model_path: str | None = None, gmm_path: str | None = None, skeleton: str = "lsp",
                 config: SMPLifyConfig = SMPLifyConfig(), threads: int | None = 1):
        if threads:
            torch.set_num_threads(int(threads))  # this process (a Ray actor) only
        self.model = load_body_model(model_path)
        self.prior = load_pose_prior(gmm_path)
        self.skeleton = get_skeleton(skeleton)
        self.config = config

    def __call__(self, items: list[FitItem]) -> list[dict[str, Any]]:
        import time

        with torch.inference_mode(False), torch.enable_grad():
            kps = torch.stack([it.keypoints.clone() for it in items]).to(self.model.dtype)
            center = torch.tensor([[it.image_size[1] / 2, it.image_size[0] / 2] for it in items],
                                  dtype=self.model.dtype)
            stage_terms: list[tuple[str, dict]] = []
            t0 = time.perf_counter()
            res = smplify(self.model, kps, self.skeleton, center=center, prior=self.prior, config=self.config,
                          callback=lambda s, name, terms: stage_terms.append((name, terms)))
            seconds = (time.perf_counter() - t0) / len(items)
        out = []
        for i in range(len(items)):
            out.append({"betas": res.betas[i], "body_pose": res.body_pose[i], "global_orient": res.global_orient[i],
                        "camera_translation": res.camera_translation[i], "energy": float(res.energy[i]),
                        "keypoints_2d": res.keypoints_2d[i], "flipped": bool(res.flipped[i]),
                        "stage_energies": res.stage_energies[:, i], "stage_terms": stage_terms,
                        "seconds": seconds})
        return out
