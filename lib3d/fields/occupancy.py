"""Occupancy grids from silhouettes (space carving): where posed silhouettes allow matter to be.

Dimension names (see ``lib3d.fields``): ``N`` views, ``H, W`` image size (in ``silhouettes``);
``D, H, W`` grid depth (z), height (y), width (x) in voxels (in ``res``).

A voxel centre belongs to the visual hull when it projects inside every (dilated) silhouette. Grids are
laid over a box ``aabb = ((x0, y0, z0), (x1, y1, z1))`` with voxel centres at ``linspace(x0, x1, W)`` (and
likewise along y and z), the layout of ``lib3d.render.render_rays_in_box``'s occupancy grids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape

__all__ = ["hull_box", "visual_hull", "voxel_resolution"]


@torch.no_grad()
def visual_hull(cameras, silhouettes: torch.Tensor, aabb: torch.Tensor, res, threshold: float = 0.05,
                dilate_pixels: int = 2) -> torch.Tensor:
    """Voxels (centres) that project inside every (dilated) silhouette: a conservative occupancy grid.

    Args:
        cameras: ``N`` cameras (indexable: ``cameras[n]``).
        silhouettes: ``(N, H, W)`` float.
        aabb: ``(2, 3)`` world box.
        res: ``(D, H, W)`` grid size.
        threshold: silhouette value above which a pixel is foreground.
        dilate_pixels: safety margin in pixels.

    Returns:
        ``(D, H, W)`` bool (x along W, y along H, z along D).
    """
    check_shape("silhouettes", silhouettes, ("N", None, None), dtype="float")
    check_shape("aabb", aabb, (2, 3))
    D, H, W = (int(r) for r in res)
    axes = [torch.linspace(float(aabb[0, i]), float(aabb[1, i]), r, device=silhouettes.device)
            for i, r in zip((2, 1, 0), (D, H, W))]
    Z, Y, X = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack((X, Y, Z), -1).reshape(-1, 3)
    sil = (silhouettes > threshold).float()[:, None]
    if dilate_pixels > 0:
        sil = F.max_pool2d(sil, 2 * dilate_pixels + 1, stride=1, padding=dilate_pixels)
    keep = torch.ones(pts.shape[0], dtype=torch.bool, device=pts.device)
    h, w = silhouettes.shape[1:]
    s = min(h, w)
    ndc_to_grid = torch.tensor([s / w, s / h], device=pts.device)  # NDC (short side [-1, 1]) -> grid_sample's
    for n in range(silhouettes.shape[0]):  # loop over views (a view at a time bounds the memory)
        ndc = cameras[n].transform_points(pts[None])[0]
        v = F.grid_sample(sil[n:n + 1], -(ndc[:, :2] * ndc_to_grid).view(1, -1, 1, 2), align_corners=False,
                          padding_mode="border")
        keep &= v.view(-1) > 0.5
    return keep.view(D, H, W)


def voxel_resolution(aabb: torch.Tensor, num_voxels: int) -> tuple[int, int, int]:
    """``(D, H, W)`` of cubic voxels filling ``aabb`` ``(2, 3)`` with about ``num_voxels`` voxels (>= 2 a side)."""
    if num_voxels < 1:
        raise ValueError(f"num_voxels must be positive, got {num_voxels}")
    ext = (aabb[1] - aabb[0]).tolist()
    vox = (ext[0] * ext[1] * ext[2] / num_voxels) ** (1.0 / 3.0)
    return tuple(max(2, round(e / vox)) for e in (ext[2], ext[1], ext[0]))


def hull_box(hull: torch.Tensor, aabb: torch.Tensor, margin_voxels: int = 2) -> torch.Tensor:
    """The box ``(2, 3)`` around the occupied voxels of ``hull`` ``(D, H, W)`` laid over ``aabb``, grown by
    ``margin_voxels`` voxels; ``aabb`` itself when nothing is occupied."""
    check_shape("hull", hull, (None, None, None))
    if not bool(hull.any()):
        return aabb.clone()
    nz = hull.nonzero()
    lo = torch.stack([nz[:, 2].min(), nz[:, 1].min(), nz[:, 0].min()]).to(aabb)
    hi = torch.stack([nz[:, 2].max(), nz[:, 1].max(), nz[:, 0].max()]).to(aabb)
    vox = (aabb[1] - aabb[0]) / (torch.tensor(hull.shape[::-1], dtype=aabb.dtype, device=aabb.device) - 1)
    return torch.stack([aabb[0] + (lo - margin_voxels) * vox, aabb[0] + (hi + margin_voxels) * vox])
