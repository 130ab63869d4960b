"""NeRF's Blender synthetic-data format (``transforms_{train,val,test}.json`` + RGBA PNGs), e.g. lego.

Dimension names (see ``lib3d.data``): N views, H/W image size.

Format: ``{"camera_angle_x": fov_x (radians), "frames": [{"file_path": "./train/r_0",
"transform_matrix": 4x4 camera-to-world}]}``; the PNG is ``file_path + ".png"`` (or ``file_path`` when it
already has an extension), relative to the dataset folder.

Camera conversion: the matrix is OpenGL's camera-to-world ``[R_c2w | t]`` (camera looks down -Z, +Y up,
+X right). PyTorch3D's view space has +X left, +Y up, +Z forward, i.e. ``p_view = S R_c2w^T (p - t)`` with
``S = diag(-1, 1, -1)``. In lib3d's row-vector convention ``p_view = p @ R + T``, so
``R = R_c2w S`` and ``T = -t @ R``. For square images the cameras are ``FoVPerspectiveCameras`` with
``fov = camera_angle_x``; otherwise ``PerspectiveCameras`` in NDC with focal length
``(W / min(H, W)) / tan(fov_x / 2)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BlenderViews", "load_blender", "opengl_c2w_to_pytorch3d"]

_S = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))


class BlenderViews(NamedTuple):
    """One split of a Blender-format dataset.

    Attributes:
        cameras: N cameras (``FoVPerspectiveCameras`` for square images, else ``PerspectiveCameras``).
        images: ``(N, H, W, 3)`` float RGB composited on ``background``.
        alpha: ``(N, H, W)`` float alpha (silhouettes).
        background: the background value used (0 black, 1 white).
        fov_x: horizontal field of view in radians.
    """

    cameras: Any
    images: torch.Tensor
    alpha: torch.Tensor
    background: float
    fov_x: float


def opengl_c2w_to_pytorch3d(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenGL camera-to-world ``(N, 4, 4)`` (or ``(N, 3, 4)``) -> PyTorch3D ``R (N, 3, 3)``, ``T (N, 3)``.

    ``R = R_c2w diag(-1, 1, -1)``, ``T = -t @ R`` (see the module docstring).
    """
    if c2w.ndim != 3 or c2w.shape[1] not in (3, 4) or c2w.shape[2] != 4:
        raise ValueError(f"c2w must have shape (N, 4, 4) or (N, 3, 4), got {tuple(c2w.shape)}")
    rot, t = c2w[:, :3, :3], c2w[:, :3, 3]
    R = rot @ _S.to(c2w)
    T = -(t[:, None, :] @ R)[:, 0]
    return R, T


def _read_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())


def load_blender(root: str | Path, split: str = "train", image_size: int | None = None, background: float = 1.0,
                 device=None) -> BlenderViews | None:
    """Load one split of a Blender-format dataset.

    Args:
        root: dataset folder holding ``transforms_<split>.json``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: downscale (area averaging) so that the height is ``image_size`` (None: keep).
        background: composite RGBA on this grey level (1: white, NeRF's convention; 0: black).
        device: device of the tensors and cameras.

    Returns:
        ``BlenderViews`` or None when the split's json is absent.

    Raises:
        ValueError: malformed json (no ``camera_angle_x`` / ``frames``).
    """
    from lib3d.geometry import FoVPerspectiveCameras, PerspectiveCameras

    root = Path(root)
    meta_path = root / f"transforms_{split}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if "camera_angle_x" not in meta or "frames" not in meta:
        raise ValueError(f"{meta_path}: expected keys 'camera_angle_x' and 'frames'")
    fov_x = float(meta["camera_angle_x"])
    imgs, mats = [], []
    for fr in meta["frames"]:  # loop over files
        p = root / fr["file_path"]
        if p.suffix.lower() != ".png":
            p = p.with_name(p.name + ".png")
        imgs.append(_read_png(p))
        mats.append(torch.tensor(fr["transform_matrix"], dtype=torch.float32))
    rgba = torch.stack(imgs)
    if image_size is not None and rgba.shape[1] != image_size:
        w = round(rgba.shape[2] * image_size / rgba.shape[1])
        rgba = F.interpolate(rgba.permute(0, 3, 1, 2), size=(image_size, w), mode="area").permute(0, 2, 3, 1)
    alpha = rgba[..., 3]
    rgb = rgba[..., :3] * alpha[..., None] + background * (1.0 - alpha[..., None])
    R, T = opengl_c2w_to_pytorch3d(torch.stack(mats))
    H, W = rgb.shape[1:3]
    dev = torch.device("cpu") if device is None else torch.device(device)
    if H == W:
        cams = FoVPerspectiveCameras(R=R.to(dev), T=T.to(dev), fov=math.degrees(fov_x), znear=0.1, zfar=100.0)
    else:
        f = (W / min(H, W)) / math.tan(fov_x / 2)
        cams = PerspectiveCameras(focal_length=((f, f),), R=R.to(dev), T=T.to(dev))
    return BlenderViews(cams, rgb.to(dev), alpha.to(dev), float(background), fov_x)
