"""Inputs of batch SMPLify: keypoint files (SMPLify's LSP ``est_joints.npz``, a JSON list), one image to
fit (:class:`FitItem`), and the body model and pose prior by path (None: the embedded ones).

The batch-fitting recipe built on these (the predictor ``lib3d.runtime.evaluate`` maps over Ray actors,
the writer of the results) is :mod:`lib3d.systems.smplify`. Dimension names: N images, K keypoints.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lib3d.bodies.model_io import load_smpl_model
from lib3d.bodies.priors import GMMPrior, default_gmm_prior, load_gmm_prior
from lib3d.bodies.smpl import SMPLModel
from lib3d.bodies.synthetic import synthetic_smpl_model

__all__ = [
    "FitItem",
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
    """SMPLify's LSP ``est_joints.npz`` -> (N, 14, 3) float32 (u, v, confidence).

    The file holds ``est_joints`` of shape (>=3, 14, N): rows 0-1 pixel x, y, row 2 confidence.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an npz archive, no ``est_joints`` array, a wrong shape, or non-finite values
            (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such keypoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(getattr(z, "files", []))
            if "est_joints" not in files:
                raise ValueError(f"{path}: expected an npz archive with an array 'est_joints', found {files}")
            a = np.asarray(z["est_joints"], dtype=np.float64)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable npz archive ({e})") from None
    if a.ndim != 3 or a.shape[0] < 3 or a.shape[1] != 14:
        raise ValueError(f"{path}: est_joints must have shape (>=3, 14, N), got {a.shape}")
    if a.shape[2] == 0 or not np.isfinite(a[:3]).all():
        raise ValueError(f"{path}: est_joints must hold N >= 1 people with finite values")
    return torch.from_numpy(a[:3].transpose(2, 1, 0).copy()).float()


def load_keypoints_json(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of ``{"image": path|null, "keypoints": [[u, v, c], ...], "image_size": [H, W]}`` (or an
    object whose ``"items"`` is that list).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not JSON, or not a non-empty list of objects with ``keypoints`` (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such keypoint file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if isinstance(data, dict) and "items" in data:
        data = data["items"]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) and "keypoints" in d for d in data):
        raise ValueError(f"{path}: expected a non-empty list of objects with 'keypoints'")
    return data


def load_body_model(path: str | None, dtype: torch.dtype = torch.float32) -> SMPLModel:
    """The SMPL-layout model at ``path``, or the embedded synthetic body when None."""
    return synthetic_smpl_model(dtype=dtype) if path is None else load_smpl_model(path, dtype=dtype)


def load_pose_prior(path: str | None, dtype: torch.dtype = torch.float32) -> GMMPrior:
    """SMPLify's GMM prior from ``path`` (gmm_08.pkl), or the embedded default when None."""
    return default_gmm_prior(dtype=dtype) if path is None else load_gmm_prior(path, dtype=dtype)
