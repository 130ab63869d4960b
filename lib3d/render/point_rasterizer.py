"""Point-cloud rasterization in pure PyTorch with PyTorch3D's semantics (exact, differentiable).

Dimension names: N point clouds (batch), P points (packed over the batch), H/W image height/width,
K points kept per pixel ("points_per_pixel").

Conventions (PyTorch3D's): points are given with x/y in NDC (+X left, +Y up) and z the view-space depth;
pixel centres as in ``lib3d.render.mesh_rasterizer`` (shorter image side spans [-1, 1]). A point with
z >= 0 covers a pixel when the squared NDC distance ``dx^2 + dy^2`` from the pixel centre to the point is
strictly below ``radius^2``; the K nearest covering points by z (ties: lower index first) are kept,
sorted ascending. Empty slots hold ``idx = -1`` and ``zbuf = dists = -1``.

Algorithm: points are sorted by (z, index) and tested against the pixels of their disk's bounding box
without autograd, in chunks of at most ``max_pairs_per_chunk`` candidate pairs. When all radii are equal
every box fits one window size and a chunk is a dense (points, rows, cols) block whose test
``dx^2 + dy^2 < r^2`` broadcasts per-column dx^2 and per-row dy^2 (the same float operations as a pair
test); otherwise boxes are enumerated row by row as in the mesh rasterizer. Since hits arrive in depth
order, pixels already holding K hits from earlier chunks drop later ones (early depth culling), and one
global stable sort by pixel (int32 keys) lists each pixel's hits nearest first: the first K are its answer.
``zbuf = z`` and ``dists = dx^2 + dy^2`` are then recomputed with autograd for the selected pairs only, so
gradients reach the point positions as in PyTorch3D's kernel. The selected pairs (pixel-major, plus a
point-major permutation) also feed SynSin's splatting directly, without padded fragments.
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
    with torch.no_grad():
        cloud = _cloud_of_points(cloud_to_packed_first_idx, num_points_per_cloud, P, device)
        hits = _select_hits(points.detach(), cloud, N, rad, H, W, K, max_pairs_per_chunk)
    # Differentiable recompute on the selected pairs: zbuf = z, dists = dx^2 + dy^2.
    sel_p = hits.order[hits.j]
    zbuf_p, dists_p = _pair_z_dists(points, sel_p, hits.pix, H, W)
    flat = hits.pix * K + hits.rank
    total_slots = N * HW * K
    idx = torch.full((total_slots,), -1, dtype=torch.int64, device=device)
    idx[flat] = sel_p
    zbuf = points.new_full((total_slots,), -1.0).index_put_((flat,), zbuf_p)
    dists = points.new_full((total_slots,), -1.0).index_put_((flat,), dists_p)
    return PointFragments(idx.view(N, H, W, K), zbuf.view(N, H, W, K), dists.view(N, H, W, K))


def _cloud_of_points(first: torch.Tensor, counts: torch.Tensor, P: int, device) -> torch.Tensor:
    """(P,) int64 cloud of each packed point; -1 for points of no cloud."""
    cloud = torch.full((P,), -1, dtype=torch.int64, device=device)
    N = first.numel()
    if P > 0 and N > 0:
        counts = counts.to(device=device, dtype=torch.int64)
        starts = first.to(device=device, dtype=torch.int64)
        ids = torch.repeat_interleave(torch.arange(N, device=device), counts)
        pidx = torch.repeat_interleave(starts, counts) + (
            torch.arange(ids.numel(), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                             counts))
        cloud[pidx] = ids
    return cloud


def _pair_z_dists(points: torch.Tensor, p: torch.Tensor, pix: torch.Tensor, H: int, W: int):
    """Differentiable ``(z, dx^2 + dy^2)`` of the (point ``p``, flat pixel ``pix``) pairs, each (M,)."""
    xs, ys = pixel_centers_ndc((H, W), device=points.device, dtype=points.dtype)
    sp = points.index_select(0, p)
    col = pix % W
    row = torch.div(pix, W, rounding_mode="floor") % H
    dx = sp[:, 0] - xs[col]
    dy = sp[:, 1] - ys[row]
    return sp[:, 2], dx * dx + dy * dy


class _PointHits(NamedTuple):
    """The selected (pixel, point) pairs of a rasterization, before any autograd (internal).

    ``order`` lists the kept points by (z, index); a pair refers to its point by ``j``, the position in
    that order. Pairs are pixel-major: pixel ascending, then nearest first (``j`` ascending).

    Attributes:
        order: (P_ok,) int64 packed indices of the rasterized points, by (z, index).
        pix: (M,) int64 flat pixel ``n * H * W + row * W + col``, ascending.
        j: (M,) int64 position of the pair's point in ``order``.
        rank: (M,) int64 slot of the pair in its pixel (0: nearest), below K.
        by_point: (M,) int64 permutation: the pairs grouped by ``j`` ascending, pixel ascending within
            each point (``pix[by_point]`` is sorted within each group).
    """

    order: torch.Tensor
    pix: torch.Tensor
    j: torch.Tensor
    rank: torch.Tensor
    by_point: torch.Tensor


def _window_chunks(x, y, r2, ix0, ix1, iy0, iy1, xs, ys, W: int, H: int, budget: int):
    """Hits of equal-sized pixel windows, ``budget`` candidate pairs at a time (equal radii).

    Point i's candidate pixels are its unflipped index box [ix0, ix1] x [iy0, iy1], tested as one dense
    (points, rows, cols) block: ``dx^2 + dy^2 < r^2`` with dx, dy taken per column and per row, the same
    float operations as the pair-by-pair test.

    Yields:
        (item (m,), row (m,), col (m,)) int64 hits, item ascending, then pixel (row, col) ascending.
    """
    device = x.device
    nc = (ix1 - ix0 + 1).clamp_min(0)
    nr = (iy1 - iy0 + 1).clamp_min(0)
    if nc.numel() == 0:
        return
    bx, by = int(nc.max()), int(nr.max())
    if bx == 0 or by == 0:
        return
    step = max(1, int(budget) // (bx * by))
    ax, ay = torch.arange(bx, device=device), torch.arange(by, device=device)
    for s in range(0, x.numel(), step):
        e = min(s + step, x.numel())
        # Image columns ascending: col = (W - 1) - ix, so the window starts at the box's last ix.
        col = (W - 1 - ix1[s:e, None]) + ax  # (m, bx)
        row = (H - 1 - iy1[s:e, None]) + ay  # (m, by)
        cok = ax < nc[s:e, None]
        rok = ay < nr[s:e, None]
        dx = x[s:e, None] - xs[col.clamp(0, W - 1)]
        dy = y[s:e, None] - ys[row.clamp(0, H - 1)]
        dx2 = torch.where(cok, dx * dx, torch.full_like(dx, float("inf")))
        dy2 = torch.where(rok, dy * dy, torch.full_like(dy, float("inf")))
        hit = (dx2[:, None, :] + dy2[:, :, None]) < r2[s:e, None, None]
        i, a, b = torch.nonzero(hit, as_tuple=True)
        yield i + s, row[i, a], col[i, b]


def _select_hits(points: torch.Tensor, cloud: torch.Tensor, N: int, rad: torch.Tensor, H: int, W: int, K: int,
                 budget: int) -> _PointHits:
    """Which points each pixel keeps (no autograd): PyTorch3D's per-pixel K nearest by (z, index).

    Args:
        points: (P, 3) float packed points (x/y NDC, z depth), detached.
        cloud: (P,) int64 cloud of each point, -1: none.
        N: number of clouds.
        rad: (P,) float NDC radii.
        H, W: image size; K: points per pixel; budget: most candidate pairs tested at once.
    """
    device, dtype = points.device, points.dtype
    HW = H * W
    xs, ys = pixel_centers_ndc((H, W), device=device, dtype=dtype)
    ok = (cloud >= 0) & (points[:, 2] >= 0) & torch.isfinite(points).all(1) & (rad > 0)
    order = torch.nonzero(ok).squeeze(1)
    # Depth order (ties: lower index first): a point's z is the same at all its pixels, so pairs
    # enumerated point by point in this order reach every pixel nearest first, and a stable sort by
    # pixel then lists each pixel's hits nearest first.
    order = order[torch.argsort(points[order, 2], stable=True)]
    x, y, r = points[order, 0], points[order, 1], rad[order]
    r2 = r * r
    ix0, ix1 = _pixel_range(x - r, x + r, W, H)
    iy0, iy1 = _pixel_range(y - r, y + r, H, W)
    on_screen = torch.nonzero((ix1 >= ix0) & (iy1 >= iy0)).squeeze(1)  # the others cover no pixel
    if on_screen.numel() < order.numel():
        order, x, y, r, r2 = order[on_screen], x[on_screen], y[on_screen], r[on_screen], r2[on_screen]
        ix0, ix1, iy0, iy1 = ix0[on_screen], ix1[on_screen], iy0[on_screen], iy1[on_screen]
    base = cloud[order] * HW
    equal_radii = r.numel() == 0 or bool((r == r[0]).all())
    if equal_radii:
        chunks = _window_chunks(x, y, r2, ix0, ix1, iy0, iy1, xs, ys, W, H, budget)
    else:
        chunks = ((j, row, col) for j, col, row in _pair_chunks(ix0, ix1, iy0, iy1, W, H, budget))
    hits_so_far = torch.zeros(N * HW, dtype=torch.int64, device=device)
    out_pix, out_j = [], []
    for j, row, col in chunks:
        if not equal_radii:
            dx = x[j] - xs[col]
            dy = y[j] - ys[row]
            keep = torch.nonzero(dx * dx + dy * dy < r2[j]).squeeze(1)
            j, row, col = j[keep], row[keep], col[keep]
        pix = base[j] + row * W + col
        if out_pix:  # early depth culling: pixels already holding K nearer hits
            keep = torch.nonzero(hits_so_far[pix] < K).squeeze(1)
            pix, j = pix[keep], j[keep]
        hits_so_far += torch.bincount(pix, minlength=N * HW)
        out_pix.append(pix)
        out_j.append(j)
    e = torch.zeros(0, dtype=torch.int64, device=device)
    pix = torch.cat(out_pix) if out_pix else e
    j = torch.cat(out_j) if out_j else e
    # Pixel-major order by a stable sort (int32 keys when they fit: half the memory traffic).
    key = pix.int() if N * HW < 2 ** 31 else pix
    pm = torch.sort(key, stable=True).indices
    pix, j = pix[pm], j[pm]
    counts = torch.bincount(pix, minlength=N * HW)
    pos = torch.arange(pix.numel(), device=device)
    rank = pos - (torch.cumsum(counts, 0) - counts)[pix]
    keep = rank < K
    # by_point: the hits were produced point by point, pixel ascending within a point on the window
    # path, so the inverse of ``pm`` lists them by point; the general path sorts.
    if equal_radii:
        inv = torch.empty_like(pm)
        inv[pm] = pos
        if bool(keep.all()):
            by_point = inv
        else:
            new = torch.cumsum(keep, 0) - 1
            kept_in = torch.zeros(pm.numel(), dtype=torch.bool, device=device)
            kept_in[pm[keep]] = True
            by_point = new[inv[kept_in]]
            pix, j, rank = pix[keep], j[keep], rank[keep]
    else:
        pix, j, rank = pix[keep], j[keep], rank[keep]
        jk = j.int() if order.numel() < 2 ** 31 else j
        by_point = torch.sort(jk, stable=True).indices
    return _PointHits(order, pix, j, rank, by_point)


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
