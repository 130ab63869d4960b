"""Point-cloud rasterization in pure PyTorch with PyTorch3D's semantics (exact, differentiable).

Dimension names: N point clouds (batch), P points (packed over the batch), H/W image height/width,
K points kept per pixel ("points_per_pixel").

Conventions (PyTorch3D's): points are given with x/y in NDC (+X left, +Y up) and z the view-space depth;
pixel centres as in ``lib3d.render.mesh_rasterizer`` (shorter image side spans [-1, 1]). A point with
z >= 0 covers a pixel when the squared NDC distance ``dx^2 + dy^2`` from the pixel centre to the point is
strictly below ``radius^2``; the K nearest covering points by z (ties: lower index first) are kept,
sorted ascending. Empty slots hold ``idx = -1`` and ``zbuf = dists = -1``.

Algorithm: points are sorted by (z, index); as in the mesh rasterizer, each point's disk bounding box
gives its exact list of candidate pixels and (point, pixel) pairs are tested in chunks bounded by
``max_pairs_per_chunk`` without autograd. Since pairs arrive in depth order, a pixel's first K hits are
its K nearest points: each chunk only sorts its own hits by pixel (stable) and drops the hits of pixels
already full (early depth culling). ``zbuf = z`` and ``dists = dx^2 + dy^2`` are then recomputed with
autograd for the selected pairs only, so gradients reach the point positions as in PyTorch3D's kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from lib3d._checks import check_finite, check_shape
from lib3d.render.mesh_rasterizer import (
    _DEFAULT_PAIRS_PER_CHUNK,
    _pair_chunks,
    _pixel_range,
    parse_image_size,
    pixel_centers_ndc,
)

__all__ = [
    "PointFragments",
    "PointsRasterizationSettings",
    "PointsRasterizer",
    "rasterize_packed_points",
    "rasterize_points",
    "rasterize_points_reference",
    "transform_pointclouds_to_ndc",
]


class PointFragments(NamedTuple):
    """Per-pixel point rasterization output (PyTorch3D's ``PointFragments``).

    Attributes:
        idx: (N, H, W, K) int64 indices into the packed points, nearest first; -1 when empty.
        zbuf: (N, H, W, K) float view-space z of the point; -1 when empty.
        dists: (N, H, W, K) float squared NDC distance from the pixel centre to the point; -1 when empty.
    """

    idx: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor

    def detach(self) -> PointFragments:
        """The same fragments cut from the autograd graph."""
        return PointFragments(*(t.detach() for t in self))


@dataclass(frozen=True)
class PointsRasterizationSettings:
    """Settings of ``PointsRasterizer`` (PyTorch3D's field names and defaults)."""

    image_size: int | tuple[int, int] = 256
    """Output size: an int for square images or (H, W)."""
    radius: float | torch.Tensor = 0.01
    """Disk radius in NDC units: a float, or a tensor (P,) packed or (N, P) padded per point."""
    points_per_pixel: int = 8
    """K, the number of nearest points kept per pixel."""
    bin_size: int | None = None
    """Accepted for PyTorch3D compatibility; lib3d's binning is exact per pixel, so it is ignored."""
    max_points_per_bin: int | None = None
    """Accepted for PyTorch3D compatibility; lib3d has no per-bin capacity, so it is ignored."""
    max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK
    """lib3d extension: memory budget, the most (point, pixel) candidate pairs tested at once."""


def rasterize_packed_points(points: torch.Tensor, cloud_to_packed_first_idx: torch.Tensor,
                            num_points_per_cloud: torch.Tensor, image_size=256, radius=0.01,
                            points_per_pixel: int = 8,
                            max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK) -> PointFragments:
    """Rasterize packed points; see ``rasterize_points``.

    Args:
        points: (P, 3) float packed points, x/y in NDC and z the view depth.
        cloud_to_packed_first_idx: (N,) int64 first packed point of each cloud.
        num_points_per_cloud: (N,) int64 number of points of each cloud.
        image_size: int or (H, W).
        radius: float or (P,) float tensor (packed) of NDC radii.
        points_per_pixel: K.
        max_pairs_per_chunk: memory budget.

    Returns:
        ``PointFragments`` of (N, H, W, K) tensors.
    """
    check_shape("points", points, (None, 3), dtype="float")
    sizes = check_shape("cloud_to_packed_first_idx", cloud_to_packed_first_idx, ("N",), dtype="int")
    check_shape("num_points_per_cloud", num_points_per_cloud, ("N",), sizes, dtype="int")
    H, W = parse_image_size(image_size)
    K = int(points_per_pixel)
    if K < 1:
        raise ValueError(f"points_per_pixel must be >= 1, got {points_per_pixel}")
    if int(max_pairs_per_chunk) < 1:
        raise ValueError(f"max_pairs_per_chunk must be >= 1, got {max_pairs_per_chunk}")
    N, P = sizes["N"], points.shape[0]
    device, dtype = points.device, points.dtype
    rad = _packed_radius(radius, P, device, dtype)
    HW = H * W
    xs, ys = pixel_centers_ndc((H, W), device=device, dtype=dtype)

    with torch.no_grad():
        pts = points.detach()
        cloud = torch.full((P,), -1, dtype=torch.int64, device=device)
        if P > 0 and N > 0:
            counts = num_points_per_cloud.to(device=device, dtype=torch.int64)
            starts = cloud_to_packed_first_idx.to(device=device, dtype=torch.int64)
            ids = torch.repeat_interleave(torch.arange(N, device=device), counts)
            pidx = torch.repeat_interleave(starts, counts) + (
                torch.arange(ids.numel(), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                                 counts))
            cloud[pidx] = ids
        ok = (cloud >= 0) & (pts[:, 2] >= 0) & torch.isfinite(pts).all(1) & (rad > 0)
        sel_pts = torch.nonzero(ok).squeeze(1)
        # Depth order (ties: lower index first): a point's z is the same at all its pixels, so pairs
        # enumerated in this order reach every pixel nearest first and a pixel's first K hits are its
        # answer. No per-pixel sort of candidates is needed and saturated pixels are skipped early.
        sel_pts = sel_pts[torch.argsort(pts[sel_pts, 2], stable=True)]
        x, y, r = pts[sel_pts, 0], pts[sel_pts, 1], rad[sel_pts]
        ix0, ix1 = _pixel_range(x - r, x + r, W, H)
        iy0, iy1 = _pixel_range(y - r, y + r, H, W)
        table = torch.stack((x, y, r * r))  # (3, P_ok)
        pix_base = cloud[sel_pts] * HW
        hits_so_far = torch.zeros(N * HW, dtype=torch.int64, device=device)
        out_pix, out_p, out_rank = [], [], []
        for j, col, row in _pair_chunks(ix0, ix1, iy0, iy1, W, H, max_pairs_per_chunk):
            tj = table.index_select(1, j)
            dx = tj[0] - xs[col]
            dy = tj[1] - ys[row]
            hit = dx * dx + dy * dy < tj[2]
            pix = pix_base[j] + row * W + col
            hit = torch.nonzero(hit & (hits_so_far[pix] < K)).squeeze(1)
            pix, j = pix[hit], j[hit]
            # Stable sort by pixel keeps each pixel's pairs in depth order; rank = earlier hits + position.
            order = torch.sort(pix, stable=True).indices
            pix, j = pix[order], j[order]
            m = pix.numel()
            pos = torch.arange(m, device=device)
            start = torch.ones(m, dtype=torch.bool, device=device)
            if m > 1:
                start[1:] = pix[1:] != pix[:-1]
            rank = pos - torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=0).values
            rank = rank + hits_so_far[pix]
            keep = torch.nonzero(rank < K).squeeze(1)
            pix, j, rank = pix[keep], j[keep], rank[keep]
            hits_so_far.index_add_(0, pix, torch.ones_like(pix))
            out_pix.append(pix)
            out_p.append(sel_pts[j])
            out_rank.append(rank)
        e = torch.zeros(0, dtype=torch.int64, device=device)
        sel_pix, sel_p, sel_rank = (torch.cat(v) if v else e for v in (out_pix, out_p, out_rank))
        sel_row, sel_col = (sel_pix % HW) // W, sel_pix % W

    # Differentiable recompute on the selected pairs.
    sp = points[sel_p]
    dx = sp[:, 0] - xs[sel_col]
    dy = sp[:, 1] - ys[sel_row]
    flat = sel_pix * K + sel_rank
    total_slots = N * HW * K
    idx = torch.full((total_slots,), -1, dtype=torch.int64, device=device)
    idx[flat] = sel_p
    zbuf = points.new_full((total_slots,), -1.0).index_put_((flat,), sp[:, 2])
    dists = points.new_full((total_slots,), -1.0).index_put_((flat,), dx * dx + dy * dy)
    return PointFragments(idx.view(N, H, W, K), zbuf.view(N, H, W, K), dists.view(N, H, W, K))


def _packed_radius(radius, P: int, device, dtype) -> torch.Tensor:
    """(P,) radii from a float or a (P,) packed tensor."""
    if isinstance(radius, torch.Tensor):
        if radius.dim() == 0:
            return radius.detach().to(device=device, dtype=dtype).expand(P)
        check_shape("radius", radius, (P,), dtype="float")
        return radius.detach().to(device=device, dtype=dtype)
    if isinstance(radius, (list, tuple)):
        raise TypeError("radius must be a float or a tensor, got a " + type(radius).__name__)
    return torch.full((P,), float(radius), device=device, dtype=dtype)


def _pointclouds_packed(pointclouds):
    for name in ("points_packed", "cloud_to_packed_first_idx", "num_points_per_cloud"):
        if not hasattr(pointclouds, name):
            raise TypeError(f"pointclouds must be a lib3d.structures.Pointclouds (missing {name}()), "
                            f"got {type(pointclouds).__name__}")
    pts = pointclouds.points_packed()
    check_shape("pointclouds.points_packed()", pts, (None, 3), dtype="float")
    check_finite("pointclouds.points_packed()", pts)
    return pts, pointclouds.cloud_to_packed_first_idx(), pointclouds.num_points_per_cloud()


def _format_radius(radius, pointclouds, P: int):
    """PyTorch3D's radius formats: float, 0-dim, (P,) packed or (N, P_max) padded -> float or (P,)."""
    if isinstance(radius, torch.Tensor) and radius.dim() == 2:
        n = len(pointclouds)
        p_max = int(pointclouds.num_points_per_cloud().max()) if n else 0
        check_shape("radius", radius, (n, p_max), dtype="float")
        return radius.reshape(-1)[pointclouds.padded_to_packed_idx()]
    return radius


def rasterize_points(pointclouds, image_size=256, radius=0.01, points_per_pixel: int = 8,
                     bin_size: int | None = None, max_points_per_bin: int | None = None,
                     max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK) -> PointFragments:
    """Rasterize a batch of point clouds already in NDC (PyTorch3D's ``rasterize_points``).

    Each point is a disk of NDC radius r facing the camera; pixel centres with ``dx^2 + dy^2 < r^2``
    are covered. Points with z < 0 are skipped.

    Args:
        pointclouds: ``lib3d.structures.Pointclouds`` of N clouds, x/y in NDC, z the view depth.
        image_size: int or (H, W); the shorter side spans NDC [-1, 1].
        radius: float, or a tensor: (P,) per packed point or (N, P_max) padded per point. Not
            differentiated (as in PyTorch3D).
        points_per_pixel: K.
        bin_size, max_points_per_bin: accepted for PyTorch3D compatibility and ignored (exact
            per-pixel binning, no capacity to overflow).
        max_pairs_per_chunk: memory budget (candidate pairs per chunk).

    Returns:
        ``PointFragments(idx (N, H, W, K) int64 packed index or -1, zbuf (N, H, W, K), dists (N, H, W, K)
        squared NDC distances)``, differentiable w.r.t. the points through zbuf and dists.

    Raises:
        TypeError, ValueError: on a non-pointcloud input, bad shapes, non-finite points or K < 1.
    """
    del bin_size, max_points_per_bin
    pts, first, counts = _pointclouds_packed(pointclouds)
    radius = _format_radius(radius, pointclouds, pts.shape[0])
    return rasterize_packed_points(pts, first, counts, image_size, radius, points_per_pixel, max_pairs_per_chunk)


def rasterize_points_reference(pointclouds, image_size=256, radius=0.01,
                               points_per_pixel: int = 8) -> PointFragments:
    """Slow dense brute-force ``rasterize_points`` (tests only): every pixel against every point."""
    pts, first, counts = _pointclouds_packed(pointclouds)
    radius = _format_radius(radius, pointclouds, pts.shape[0])
    H, W = parse_image_size(image_size)
    K = int(points_per_pixel)
    N, P = int(first.numel()), pts.shape[0]
    device, dtype = pts.device, pts.dtype
    rad = _packed_radius(radius, P, device, dtype)
    xs, ys = pixel_centers_ndc((H, W), device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gx, gy = gx.reshape(-1, 1), gy.reshape(-1, 1)
    outs = []
    for n in range(N):  # reference only
        s, c = int(first[n]), int(counts[n])
        p = pts[s:s + c]
        dx, dy = p[None, :, 0] - gx, p[None, :, 1] - gy
        d2 = dx * dx + dy * dy
        valid = (d2.detach() < (rad[s:s + c] ** 2)[None]) & (p[None, :, 2].detach() >= 0)
        z = p[:, 2][None].expand_as(d2)
        zkey = torch.where(valid, z.detach(), torch.full_like(z, float("inf")))
        order = torch.argsort(zkey, dim=1, stable=True)[:, :K]
        if order.shape[1] < K:
            order = torch.cat((order, order.new_zeros(order.shape[0], K - order.shape[1])), 1)
        if c == 0:
            v = torch.zeros(H * W, K, dtype=torch.bool, device=device)
            order = torch.zeros(H * W, K, dtype=torch.int64, device=device)
            z = d2 = torch.zeros(H * W, 1, dtype=dtype, device=device)
        else:
            v = torch.gather(valid, 1, order)
            v[:, c:] = False  # padding slots when the cloud has fewer than K points
        m1 = torch.full((), -1.0, device=device, dtype=dtype)
        outs.append((torch.where(v, order + s, -1), torch.where(v, torch.gather(z, 1, order), m1),
                     torch.where(v, torch.gather(d2, 1, order), m1)))
    i, z, d = (torch.stack(t).view(N, H, W, K) for t in zip(*outs))
    return PointFragments(i, z, d)


def transform_pointclouds_to_ndc(pointclouds, cameras, eps: float | None = None):
    """World point clouds -> NDC x/y with view-space z (PyTorch3D's ``PointsRasterizer.transform``)."""
    n_cams = len(cameras)
    if n_cams != 1 and n_cams != len(pointclouds):
        raise ValueError(f"cameras must hold 1 or len(pointclouds)={len(pointclouds)} cameras, got {n_cams}")
    pts_world = pointclouds.points_padded()
    pts_view = cameras.get_world_to_view_transform().transform_points(pts_world, eps=eps)
    if hasattr(cameras, "transform_points_ndc"):
        pts_ndc = cameras.transform_points_ndc(pts_world, eps=eps)
    else:  # pragma: no cover
        pts_ndc = cameras.transform_points(pts_world, eps=eps)
    pts_ndc = torch.cat((pts_ndc[..., :2], pts_view[..., 2:3]), dim=-1)
    return pointclouds.update_padded(pts_ndc)


class PointsRasterizer(nn.Module):
    """World point clouds -> ``PointFragments`` for a camera batch (PyTorch3D's ``PointsRasterizer``).

    ``forward(point_clouds, **kwargs)`` accepts ``cameras=`` and ``raster_settings=`` overrides.
    """

    def __init__(self, cameras=None, raster_settings: PointsRasterizationSettings | None = None):
        super().__init__()
        self.cameras = cameras
        self.raster_settings = PointsRasterizationSettings() if raster_settings is None else raster_settings

    def to(self, device):
        if self.cameras is not None and hasattr(self.cameras, "to"):
            self.cameras = self.cameras.to(device)
        return super().to(device)

    def transform(self, point_clouds, **kwargs):
        """World clouds -> NDC-x/y, view-z clouds."""
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise ValueError("PointsRasterizer needs cameras (at construction or as forward(cameras=...))")
        return transform_pointclouds_to_ndc(point_clouds, cameras, eps=kwargs.get("eps"))

    def forward(self, point_clouds, **kwargs) -> PointFragments:
        s = kwargs.get("raster_settings", self.raster_settings)
        pts_ndc = self.transform(point_clouds, **kwargs)
        return rasterize_points(pts_ndc, image_size=s.image_size, radius=s.radius,
                                points_per_pixel=s.points_per_pixel, max_pairs_per_chunk=s.max_pairs_per_chunk)
