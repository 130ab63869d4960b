"""Pictures of fitted bodies: the posed mesh over an image and the keypoints (the book's Figure 8.6).

The body is rendered with :mod:`lib3d.render` (Phong shading through a screen-space
``PerspectiveCameras`` equal to SMPLify's pinhole); when the renderer is unavailable or fails, a
projected-vertex silhouette is drawn instead. Detected keypoints are green, projected model keypoints red.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib3d.bodies.smpl import SMPLModel, smpl_forward
from lib3d.bodies.smplify import perspective_project
from lib3d.geometry import PerspectiveCameras
from lib3d.render.lighting import PointLights
from lib3d.render.mesh_rasterizer import RasterizationSettings
from lib3d.render.shading import render_mesh
from lib3d.structures import Meshes, TexturesVertex

__all__ = ["draw_keypoints", "front_views", "overlay", "render_body"]


def render_body(verts: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int], focal_length: float,
                center: torch.Tensor, color=(0.65, 0.74, 0.86)) -> tuple[np.ndarray, str]:
    """Render one posed body (camera frame, OpenCV axes) -> (RGBA float (H, W, 4) in [0, 1], method).

    Args:
        verts: (V, 3) float camera-frame vertices (metres).
        faces: (F, 3) long.
        image_size: (H, W).
        focal_length: pixels.
        center: (2,) principal point in pixels.

    Returns:
        the image and ``"render"`` or ``"silhouette"`` (the fallback).
    """
    H, W = image_size
    try:
        v = verts.detach().float().cpu()[None]
        tex = TexturesVertex(torch.tensor(color, dtype=torch.float32).expand_as(v).contiguous())
        mesh = Meshes(verts=v, faces=faces.cpu()[None], textures=tex)
        R = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))[None]  # OpenCV -> PyTorch3D view axes
        cams = PerspectiveCameras(focal_length=((focal_length, focal_length),),
                                  principal_point=((float(center[0]), float(center[1])),), in_ndc=False,
                                  image_size=((H, W),), R=R, T=torch.zeros(1, 3))
        lights = PointLights(location=[[0.0, 0.0, 0.0]])
        settings = RasterizationSettings(image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, cull_backfaces=True)
        with torch.no_grad():
            img = render_mesh(mesh, cams, lights, None, settings, shader="hard_phong")[0]
        rgba = img.clamp(0, 1).numpy()
        if rgba[..., 3].max() > 0:
            return rgba, "render"
    except Exception:  # noqa: BLE001 - fall back to the silhouette below
        pass
    uv = perspective_project(verts[None].detach().float().cpu(), focal_length, center.float().cpu()[None])[0]
    out = np.zeros((H, W, 4), dtype=np.float32)
    ij = uv.round().long().numpy()
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < W) & (ij[:, 1] >= 0) & (ij[:, 1] < H)
    for dy in (-1, 0, 1):  # 3x3 splats: a dense silhouette for 6,890 vertices
        for dx in (-1, 0, 1):
            x = np.clip(ij[ok, 0] + dx, 0, W - 1)
            y = np.clip(ij[ok, 1] + dy, 0, H - 1)
            out[y, x, :3] = color
            out[y, x, 3] = 1.0
    return out, "silhouette"


def draw_keypoints(img: np.ndarray, points: np.ndarray, color, radius: int = 3) -> np.ndarray:
    """Draw filled squares of ``color`` (RGB in [0, 1]) at ``points`` (K, 2) (NaN skipped) on (H, W, 3)."""
    out = img.copy()
    H, W = out.shape[:2]
    for u, v in points:
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        x0, x1 = int(max(0, round(u) - radius)), int(min(W, round(u) + radius + 1))
        y0, y1 = int(max(0, round(v) - radius)), int(min(H, round(v) + radius + 1))
        if x1 > x0 and y1 > y0:  # points outside the image draw nothing (no negative-index wrap)
            out[y0:y1, x0:x1] = color
    return out


def overlay(image: np.ndarray | None, verts: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int],
            focal_length: float, center: torch.Tensor, detected: np.ndarray, projected: np.ndarray,
            alpha: float = 0.7) -> tuple[np.ndarray, str]:
    """The body over the image with detected (green) and projected model (red) keypoints.

    Args:
        image: (H, W, 3) float in [0, 1] or None (a grey canvas).
        verts, faces, image_size, focal_length, center: see :func:`render_body`.
        detected: (K, 3) keypoints (u, v, confidence); confidence 0 are not drawn.
        projected: (K, 2) projected model keypoints.

    Returns:
        ((H, W, 3) float image, render method).
    """
    H, W = image_size
    base = np.full((H, W, 3), 0.5, dtype=np.float32) if image is None else image.astype(np.float32)
    body, method = render_body(verts, faces, image_size, focal_length, center)
    a = alpha * body[..., 3:4]
    out = base * (1 - a) + body[..., :3] * a
    det = detected[detected[:, 2] > 0, :2]
    out = draw_keypoints(out, det, (0.0, 1.0, 0.0))
    out = draw_keypoints(out, projected, (1.0, 0.0, 0.0), radius=2)
    return out.clip(0, 1), method


def front_views(model: SMPLModel, betas: torch.Tensor, body_pose: torch.Tensor, image_size: int
                ) -> tuple[torch.Tensor, list[np.ndarray], str]:
    """Posed bodies and a front view of each on white (the book's ``render_smpl.py``).

    Each body stands upright (``R_x(pi)`` in OpenCV camera axes) 3 m in front of a camera of focal length
    ``1.1 * image_size`` (a 1.9 m body fills ~70% of the image), centred vertically on its mean height.

    Args:
        model: the body model.
        betas: (N, S) float shapes.
        body_pose: (N, 69) float axis-angle poses.
        image_size: H = W of the views.

    Returns:
        ``(vertices (N, V, 3) camera frame, N images (H, W, 3) float in [0, 1], render method)``.
    """
    n = betas.shape[0]
    orient = torch.tensor([[math.pi, 0.0, 0.0]], dtype=model.dtype, device=model.device).expand(n, 3)
    transl = torch.tensor([[0.0, 0.0, 3.0]], dtype=model.dtype, device=model.device).expand(n, 3)
    with torch.no_grad():
        verts = smpl_forward(model, betas, body_pose, orient, transl).vertices
    S = image_size
    images, method = [], "render"
    for v in verts:
        v = v - torch.tensor([0.0, float(v[:, 1].mean()), 0.0], dtype=v.dtype, device=v.device)
        rgba, method = render_body(v, model.faces, (S, S), 1.1 * S, torch.tensor([S / 2, S / 2]))
        images.append(rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]))  # white background
    return verts, images, method
