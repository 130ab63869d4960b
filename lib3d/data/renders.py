"""Rendered multi-view datasets: the book's ``generate_cow_renders`` on lib3d's renderer.

Dimension names (see ``lib3d.data``): N views, H/W image size.

Recipe (the book's chapters 4-6, pinned by ``../shared/golden/cow_renders.safetensors``):

1. normalise the mesh: ``verts = (verts - mean) / max|verts - mean|`` (one scalar scale);
2. N cameras ``FoVPerspectiveCameras`` (defaults: fov 60, znear 1, zfar 100) with
   ``look_at_view_transform(dist, elev, azim)``, ``azim = linspace(-azimuth_range, azimuth_range, N) + 180``;
3. colour images: ``SoftPhongShader`` with ``PointLights(location=[[0, 0, -3]])`` (world space),
   ``BlendParams(sigma=1e-4, gamma=1e-4, background_color=(0, 0, 0))``, 1 face per pixel, no blur;
4. silhouettes: ``SoftSilhouetteShader`` (default ``BlendParams``), 50 faces per pixel,
   ``blur_radius = log(1 / 1e-4 - 1) * 1e-4``; the alpha channel (the book thresholds it at 1e-4 into a
   binary mask; the golden file keeps it soft: ``binary_silhouettes`` picks).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lib3d._checks import check_shape

__all__ = [
    "GOLDEN_COW_RENDERS",
    "RenderedViews",
    "generate_renders",
    "load_cow_renders_golden",
    "normalize_mesh",
    "view_cameras",
]

GOLDEN_COW_RENDERS = Path(__file__).resolve().parents[3] / "shared" / "golden" / "cow_renders.safetensors"
"""Default location of the golden cow dataset (``../shared`` beside the project): PyTorch3D's renders, the
tests' oracle for ``generate_renders``. Jobs render the book's cow themselves (``--data cow:PATH/cow.obj``,
``lib3d.data.posed_images``)."""

SILHOUETTE_SIGMA = 1e-4
SILHOUETTE_BLUR = math.log(1.0 / 1e-4 - 1.0) * SILHOUETTE_SIGMA


class RenderedViews(NamedTuple):
    """A multi-view dataset.

    Attributes:
        cameras: ``FoVPerspectiveCameras`` of N views.
        images: (N, H, W, 3) float RGB in [0, 1].
        silhouettes: (N, H, W) float silhouettes in [0, 1].
    """

    cameras: Any
    images: torch.Tensor
    silhouettes: torch.Tensor


def normalize_mesh(meshes):
    """Centre and scale a mesh as the book does: ``(verts - mean) / max|verts - mean|``.

    Args:
        meshes: ``Meshes`` (the mean and scale are taken over all packed vertices, as the book does for one).

    Returns:
        ``(normalised Meshes, center (3,), scale float)``.
    """
    verts = meshes.verts_packed()
    center = verts.mean(0)
    scale = (verts - center).abs().max()
    return meshes.offset_verts(-center).scale_verts(1.0 / float(scale)), center, float(scale)


def view_cameras(num_views: int = 40, azimuth_range: float = 180.0, elev: float | torch.Tensor = 0.0,
                 dist: float = 2.7, device=None, endpoint: bool = True, **camera_kwargs):
    """lib3d's one turntable camera builder (the book's): ``look_at_view_transform(dist, elev, azim)`` with
    ``azim = linspace(-azimuth_range, azimuth_range, N) + 180`` degrees.

    Args:
        num_views: N.
        azimuth_range: half-range of the azimuths in degrees.
        elev: elevation in degrees (float or (N,)).
        dist: distance of the cameras from the origin.
        device: device of the cameras.
        endpoint: include ``+azimuth_range`` (the book's renders, whose first and last views coincide for a
            full turn); False: N views evenly spaced over ``[-azimuth_range, azimuth_range)`` (a turntable
            GIF that loops without a repeated frame).
        camera_kwargs: passed to ``FoVPerspectiveCameras`` (fov, znear, ...).

    Returns:
        ``FoVPerspectiveCameras`` of N views.
    """
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform

    if not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"num_views must be a positive int, got {num_views!r}")
    if endpoint:
        azim = torch.linspace(-azimuth_range, azimuth_range, num_views) + 180.0
    else:
        azim = torch.linspace(-azimuth_range, azimuth_range, num_views + 1)[:-1] + 180.0
    elev = torch.as_tensor(elev, dtype=torch.float32).expand(num_views)
    R, T = look_at_view_transform(dist=dist, elev=elev, azim=azim)
    return FoVPerspectiveCameras(R=R.to(device), T=T.to(device), **camera_kwargs) if device is not None else \
        FoVPerspectiveCameras(R=R, T=T, **camera_kwargs)


def generate_renders(meshes=None, num_views: int = 40, azimuth_range: float = 180.0,
                     elev: float | torch.Tensor = 0.0, dist: float = 2.7, image_size: int | tuple[int, int] = 128,
                     lights=None, normalize: bool = True, binary_silhouettes: bool = False,
                     silhouette_faces_per_pixel: int = 50, views_per_batch: int = 8,
                     view_indices=None, device=None) -> RenderedViews:
    """Render a textured mesh from a ring of cameras: the book's ``generate_cow_renders`` on lib3d.

    Args:
        meshes: a ``Meshes`` of batch 1 with textures; default: the embedded procedural scene
            (``lib3d.data.scenes.toy()``).
        num_views: N views.
        azimuth_range: azimuths ``linspace(-azimuth_range, azimuth_range, N) + 180`` degrees.
        elev: elevation in degrees (float or (N,)).
        dist: camera distance.
        image_size: H = W (int) or (H, W).
        lights: default ``PointLights(location=[[0, 0, -3]])`` (world space, as the book).
        normalize: centre and scale the mesh first (the book does).
        binary_silhouettes: threshold the soft silhouettes at 1e-4 as the book's notebook does.
        silhouette_faces_per_pixel: K of the silhouette pass (the book: 50).
        views_per_batch: views rendered per rasterizer call (bounds memory).
        view_indices: render only these of the N views (e.g. a held-out subset); default all.
        device: where to render (default: the mesh's device).

    Returns:
        ``RenderedViews(cameras, images (N, H, W, 3), silhouettes (N, H, W))``.
    """
    from lib3d.render.blending import BlendParams
    from lib3d.render.lighting import PointLights
    from lib3d.render.mesh_rasterizer import RasterizationSettings, rasterize_world_meshes
    from lib3d.render.shading import shade

    if meshes is None:
        from lib3d.data.scenes import toy

        meshes = toy()
    if len(meshes) != 1:
        raise ValueError(f"meshes must hold one mesh, got {len(meshes)}")
    if not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"num_views must be a positive int, got {num_views!r}")
    device = meshes.device if device is None else torch.device(device)
    meshes = meshes.to(device)
    if normalize:
        meshes = normalize_mesh(meshes)[0]
    lights = PointLights(location=[[0.0, 0.0, -3.0]], device=device) if lights is None else lights
    cameras = view_cameras(num_views, azimuth_range, elev, dist, device=device)
    if view_indices is not None:
        idx = torch.as_tensor(view_indices, dtype=torch.long, device=cameras.R.device).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= num_views:
            raise ValueError(f"view_indices must index into [0, {num_views}), got {idx.tolist()}")
        cameras = type(cameras)(R=cameras.R[idx], T=cameras.T[idx])
        num_views = idx.numel()
    rgb_settings = RasterizationSettings(image_size=image_size, blur_radius=0.0, faces_per_pixel=1)
    sil_settings = RasterizationSettings(image_size=image_size, blur_radius=SILHOUETTE_BLUR,
                                         faces_per_pixel=silhouette_faces_per_pixel)
    rgb_blend = BlendParams(sigma=1e-4, gamma=1e-4, background_color=(0.0, 0.0, 0.0))
    images, silhouettes = [], []
    with torch.no_grad():
        for start in range(0, num_views, views_per_batch):  # loop over chunks of views
            stop = min(start + views_per_batch, num_views)
            cams = type(cameras)(R=cameras.R[start:stop], T=cameras.T[start:stop])
            batch = meshes.extend(stop - start)
            frags = rasterize_world_meshes(batch, cams, rgb_settings)
            images.append(shade(frags, batch, "soft_phong", cameras=cams, lights=lights, blend_params=rgb_blend)
                          [..., :3])
            frags = rasterize_world_meshes(batch, cams, sil_settings)
            silhouettes.append(shade(frags, batch, "soft_silhouette")[..., 3])
    sil = torch.cat(silhouettes)
    if binary_silhouettes:
        sil = (sil > 1e-4).to(sil.dtype)
    return RenderedViews(cameras, torch.cat(images), sil)


def load_cow_renders_golden(path: str | Path | None = None, device=None) -> RenderedViews | None:
    """The golden cow dataset (PyTorch3D's renders of the book's cow) as ``RenderedViews``; None if absent.

    A test oracle: jobs use ``generate_renders`` on the book's mesh instead (``lib3d.data.posed_images``).

    Args:
        path: the ``cow_renders.safetensors`` file; default ``../shared/golden/cow_renders.safetensors``.
        device: device of the returned tensors and cameras.

    Returns:
        ``RenderedViews`` with 40 views of 128 x 128 (cameras rebuilt from the stored R, T), or None.
    """
    from safetensors import safe_open

    from lib3d.geometry import FoVPerspectiveCameras

    path = GOLDEN_COW_RENDERS if path is None else Path(path)
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        json.loads(f.metadata()["cases"])
        names = [k for k in f.keys() if k.startswith("cow_40.")]  # noqa: SIM118 - safe_open is not iterable
        t = {k: f.get_tensor(k) for k in names}
    dev = torch.device("cpu") if device is None else torch.device(device)
    R, T = t["cow_40.R"].to(dev), t["cow_40.T"].to(dev)
    check_shape("R", R, ("N", 3, 3))
    return RenderedViews(FoVPerspectiveCameras(R=R, T=T), t["cow_40.images"].to(dev),
                         t["cow_40.silhouettes"].to(dev))
