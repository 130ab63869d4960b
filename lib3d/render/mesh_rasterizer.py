"""Mesh rasterization in pure PyTorch with PyTorch3D's semantics (coarse-to-fine, exact, differentiable).

Dimension names: N meshes (batch), V vertices, F faces (packed over the batch), H/W image height/width,
K faces kept per pixel ("faces_per_pixel").

Conventions (PyTorch3D's):

- Input meshes are already in NDC for x and y (+X left, +Y up) and keep the *view-space* depth as z.
- Pixel ``(row y, column x)`` has its centre at NDC ``(PixToNdc(W - 1 - x, W, H), PixToNdc(H - 1 - y, H, W))``
  with ``PixToNdc(i, S1, S2) = -r/2 + (r * i + r/2) / S1`` and ``r = 2 * max(S1 / S2, 1)``: the shorter
  image side spans [-1, 1], column 0 is at +X (left), row 0 at +Y (top).
- The K faces kept at a pixel are the nearest by interpolated depth ``z`` (ties: lower face index first),
  sorted ascending; empty slots hold ``pix_to_face = -1`` and ``zbuf = dists = bary_coords = -1``.
- ``dists`` are *squared* Euclidean distances in NDC from the pixel centre to the triangle's edges,
  negative inside the triangle; a face is kept at a pixel outside it only when that squared distance is
  below ``blur_radius`` (so ``blur_radius`` is compared with a squared distance, as in PyTorch3D).
- Faces with (near) zero screen area, faces with a vertex at z < 1e-8 (behind the camera) and, with
  ``cull_backfaces``, faces with a negative signed screen area are skipped.

Algorithm (exact whatever the scene: no per-bin capacity that can overflow):

1. Coarse: each face's screen bounding box, grown by ``sqrt(blur_radius)``, is converted into a range of
   pixels; its (face, pixel) candidate pairs are enumerated with ``searchsorted`` over the cumulative pair
   counts, in chunks of at most ``max_pairs_per_chunk`` pairs (the memory budget). The "bins" are thus
   exactly the pixels each face's box covers, never a fixed-capacity list.
2. Fine: each chunk's pairs are tested densely and vectorised (barycentrics, depth, distance), without
   autograd.
3. Top-K: the surviving pairs are ranked per pixel by (depth, face) with a sort on packed integer keys
   (K = 1: a ``scatter_reduce(amin)``), merged with the running top-K of the previous chunks.
4. Differentiable recompute: for the selected (pixel, face) pairs only, depth, barycentrics and distance
   are recomputed with autograd from the face vertices, so gradients flow to the vertices through ``zbuf``,
   ``bary_coords`` and ``dists`` exactly as PyTorch3D's backward kernel computes them.

With ``z_clip_value`` (``MeshRasterizer`` uses znear / 2 for perspective cameras), faces crossing that depth
are first clipped to the part beyond it (``clip_faces``, PyTorch3D's cases 3 and 4); the fragments are
mapped back to the original faces.

``rasterize_meshes_reference`` is the slow dense brute-force version used by the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from lib3d._checks import check_finite, check_shape, check_tensor

__all__ = [
    "ClippedFaces",
    "barycentric_coordinates",
    "Fragments",
    "MeshRasterizer",
    "RasterizationSettings",
    "clip_faces",
    "parse_image_size",
    "pixel_centers_ndc",
    "rasterize_face_verts",
    "rasterize_meshes",
    "rasterize_meshes_reference",
    "rasterize_world_meshes",
    "transform_meshes_to_ndc",
]

_EPS = 1e-8  # PyTorch3D's kEpsilon (zero-area faces, faces behind the camera, barycentric denominators)
_DEFAULT_PAIRS_PER_CHUNK = 1 << 20


class Fragments(NamedTuple):
    """Per-pixel rasterization output (PyTorch3D's ``Fragments``).

    Attributes:
        pix_to_face: (N, H, W, K) int64 indices into the packed faces, nearest first; -1 when empty.
        zbuf: (N, H, W, K) float view-space depth of the face at the pixel; -1 when empty.
        bary_coords: (N, H, W, K, 3) float barycentric coordinates of the pixel centre in the face
            (perspective-corrected and/or clipped as requested); -1 when empty.
        dists: (N, H, W, K) float signed squared NDC distance from the pixel centre to the face
            (negative inside); -1 when empty.
    """

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor
    dists: torch.Tensor

    def detach(self) -> Fragments:
        """The same fragments cut from the autograd graph (PyTorch3D's ``Fragments.detach``)."""
        return Fragments(*(t.detach() for t in self))


@dataclass(frozen=True)
class RasterizationSettings:
    """Settings of ``MeshRasterizer`` (PyTorch3D's field names and defaults)."""

    image_size: int | tuple[int, int] = 256
    """Output size: an int for square images or (H, W)."""
    blur_radius: float = 0.0
    """Squared NDC distance within which a face outside a pixel still covers it (soft rasterization)."""
    faces_per_pixel: int = 1
    """K, the number of nearest faces kept per pixel."""
    bin_size: int | None = None
    """Accepted for PyTorch3D compatibility; lib3d's binning is per pixel and exact, so it is ignored."""
    max_faces_per_bin: int | None = None
    """Accepted for PyTorch3D compatibility; lib3d has no per-bin capacity, so it is ignored."""
    perspective_correct: bool | None = None
    """Perspective-correct barycentrics; None: True exactly when the camera is perspective."""
    clip_barycentric_coords: bool | None = None
    """Clip barycentrics to [0, 1] and renormalise; None: True exactly when blur_radius > 0."""
    cull_backfaces: bool = False
    """Skip faces whose vertices appear clockwise (facing away from the camera)."""
    z_clip_value: float | None = None
    """Faces are clipped to view depth >= this value (``clip_faces``); None: the cameras' znear / 2 when
    perspective correction is on (PyTorch3D's rule)."""
    cull_to_frustum: bool = False
    """Skip faces lying entirely outside the image's NDC extent in x or y."""
    max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK
    """lib3d extension: memory budget, the most (face, pixel) candidate pairs tested at once."""


def parse_image_size(image_size) -> tuple[int, int]:
    """``image_size`` as (H, W) ints; accepts an int or a pair; raises ``ValueError`` when not positive."""
    if isinstance(image_size, (list, tuple)):
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or a pair (H, W), got {image_size!r}")
        h, w = (int(s) for s in image_size)
    elif isinstance(image_size, torch.Tensor):
        return parse_image_size(image_size.tolist())
    else:
        try:
            h = w = int(image_size)
        except (TypeError, ValueError):
            raise TypeError(f"image_size must be an int or a pair (H, W), got {image_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {(h, w)}")
    return h, w


def _ndc_range(s1: int, s2: int) -> float:
    """NDC extent along a side of s1 pixels when the other side has s2 (shorter side spans 2)."""
    return 2.0 * s1 / s2 if s1 > s2 else 2.0


def pixel_centers_ndc(image_size, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC coordinates of the pixel centres, as PyTorch3D's kernels compute them.

    Args:
        image_size: int or (H, W).
        device, dtype: of the result.

    Returns:
        xs: (W,) NDC x of each image column (column 0 is the leftmost, at +X).
        ys: (H,) NDC y of each image row (row 0 is the top, at +Y).
    """
    h, w = parse_image_size(image_size)

    def centres(s1, s2):
        r = _ndc_range(s1, s2)
        off = r / 2.0
        i = torch.arange(s1 - 1, -1, -1, device=device, dtype=dtype)  # flipped: index s1-1-col
        return (r * i + off) / s1 - off

    return centres(w, h), centres(h, w)


# ---------------------------------------------------------------------------------------------------
# Per (face, pixel) pair math: one function used by the selection pass (no grad), the differentiable
# recompute and the brute-force reference, so that all three produce identical numbers.
# ---------------------------------------------------------------------------------------------------


def _edge(px, py, ax, ay, bx, by):
    """PyTorch3D's EdgeFunctionForward(p, a, b) = (p - a) x (b - a)."""
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def barycentric_coordinates(p: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Barycentric coordinates of 2D points in 2D triangles (PyTorch3D's ``barycentric_coordinates``).

    ``w0 = e(p, v1, v2) / A``, ``w1 = e(p, v2, v0) / A``, ``w2 = e(p, v0, v1) / A`` with the edge function
    ``e(p, a, b) = (p - a) x (b - a)`` and ``A = e(v2, v0, v1) + 1e-8`` (PyTorch3D's epsilon), so
    ``w0 + w1 + w2 = 1`` up to that epsilon and ``p = w0 v0 + w1 v1 + w2 v2`` inside or outside.

    Args:
        p, v0, v1, v2: ``(..., 2)`` float tensors that broadcast together (x, y in any 2D frame).

    Returns:
        ``(w0, w1, w2)``, each ``(...)`` float (negative outside the triangle).
    """
    for name, t in (("p", p), ("v0", v0), ("v1", v1), ("v2", v2)):
        check_tensor(name, t, dtype="float")
        if t.shape[-1:] != (2,):
            raise ValueError(f"{name} must have shape (..., 2), got {tuple(t.shape)}")
    area = _edge(v2[..., 0], v2[..., 1], v0[..., 0], v0[..., 1], v1[..., 0], v1[..., 1]) + _EPS
    w0 = _edge(p[..., 0], p[..., 1], v1[..., 0], v1[..., 1], v2[..., 0], v2[..., 1]) / area
    w1 = _edge(p[..., 0], p[..., 1], v2[..., 0], v2[..., 1], v0[..., 0], v0[..., 1]) / area
    w2 = _edge(p[..., 0], p[..., 1], v0[..., 0], v0[..., 1], v1[..., 0], v1[..., 1]) / area
    return w0, w1, w2


# Rows of the per-face table (structure of arrays, (19, F)) gathered once per chunk of pairs.
X0, Y0, Z0, X1, Y1, Z1, X2, Y2, Z2, DX10, DY10, DX21, DY21, DX02, DY02, AREA, L01, L12, L02 = range(19)


def _face_table(fv: torch.Tensor) -> torch.Tensor:
    """(19, F) per-face quantities: vertices, edge vectors, PyTorch3D's barycentric area, squared edge lengths."""
    return torch.stack(_face_rows(fv))


def _face_rows(fv: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The 19 rows of ``_face_table`` as separate (F,) tensors (cheap autograd: no select backward)."""
    x0, y0, z0 = fv[:, 0, 0], fv[:, 0, 1], fv[:, 0, 2]
    x1, y1, z1 = fv[:, 1, 0], fv[:, 1, 1], fv[:, 1, 2]
    x2, y2, z2 = fv[:, 2, 0], fv[:, 2, 1], fv[:, 2, 2]
    dx10, dy10, dx21, dy21, dx02, dy02 = x1 - x0, y1 - y0, x2 - x1, y2 - y1, x0 - x2, y0 - y2
    area = (-dx02) * dy10 - (-dy02) * dx10  # EdgeFunctionForward(v2, v0, v1)
    # PyTorch3D adds its double kEpsilon and rounds back to float: emulate that for float32 parity.
    area = (area.double() + _EPS).to(area.dtype) if area.dtype == torch.float32 else area + _EPS
    return (x0, y0, z0, x1, y1, z1, x2, y2, z2, dx10, dy10, dx21, dy21, dx02, dy02, area,
            dx10 * dx10 + dy10 * dy10, dx21 * dx21 + dy21 * dy21, dx02 * dx02 + dy02 * dy02)


def _segment_dist2(dot, length2, cross, qa2, qb2):
    """Squared distance from p to segment ab (PyTorch3D's PointLineDistanceForward, exact arithmetic).

    With ``q = p - a``, ``d = b - a``: ``dot = q.d``, ``cross = q x d``, ``qa2 = |p - a|^2``,
    ``qb2 = |p - b|^2``. The projection parameter ``t = dot / |d|^2`` is clamped to [0, 1]: ``t <= 0``
    gives ``|p - a|^2``, ``t >= 1`` gives ``|p - b|^2``, otherwise the distance to the line is
    ``cross^2 / |d|^2``. Its gradient equals PyTorch3D's backward (which holds t constant): at the optimum
    d(dist)/dt = 0. Degenerate edges (``|d|^2 <= 1e-8``) give ``|p - b|^2`` as PyTorch3D does.
    """
    safe = torch.where(length2 > _EPS, length2, torch.ones_like(length2))
    line = cross * cross / safe
    d = torch.where(dot <= 0, qa2, torch.where(dot >= length2, qb2, line))
    return torch.where(length2 <= _EPS, qb2, d)


def _pair_terms(t: torch.Tensor, px: torch.Tensor, py: torch.Tensor, perspective_correct: bool,
                clip_barycentric_coords: bool, need_dist: bool = True):
    """Depth, barycentrics, inside flag and squared distance for M (face, pixel) pairs.

    Args:
        t: (19, M) rows of ``_face_table`` for the face of each pair (a tensor or a sequence of rows).
        px, py: (M,) pixel centres in NDC.
        perspective_correct, clip_barycentric_coords: as ``rasterize_meshes``.
        need_dist: compute the (unsigned, squared) distance to the triangle.

    Returns:
        pz (M,), bary (M, 3) (as output: corrected and clipped as requested), inside (M,) bool,
        dist (M,) unsigned squared distance (None unless need_dist).
    """
    z0, z1, z2 = t[Z0], t[Z1], t[Z2]
    q0x, q0y = px - t[X0], py - t[Y0]
    q1x, q1y = px - t[X1], py - t[Y1]
    q2x, q2y = px - t[X2], py - t[Y2]
    # Edge functions, bit-identical to PyTorch3D's EdgeFunctionForward(p, v1, v2) etc.
    e0 = q1x * t[DY21] - q1y * t[DX21]
    e1 = q2x * t[DY02] - q2y * t[DX02]
    e2 = q0x * t[DY10] - q0y * t[DX10]
    area = t[AREA]
    w0, w1, w2 = e0 / area, e1 / area, e2 / area  # BarycentricCoordinatesForward
    if perspective_correct:
        # w_i' = (w_i / z_i) / sum_j (w_j / z_j), written as PyTorch3D does (no division by z).
        t0 = w0 * z1 * z2
        t1 = w1 * z0 * z2
        t2 = w2 * z0 * z1
        denom = t0 + t1 + t2
        # PyTorch3D clamps the denominator at kEpsilon (fmaxf) in the forward pass and differentiates
        # it as if unclamped in its backward kernel: value clamped, gradient straight through.
        denom = denom.detach().clamp_min(_EPS) + (denom - denom.detach())
    if perspective_correct and clip_barycentric_coords:
        # Clipping cancels the 1/denom scale exactly: relu(t_i) / max(sum_j relu(t_j), 1e-5 denom) is the
        # same number without dividing by a near-zero denom first (outside blurred faces), whose float32
        # gradient terms would not cancel (1e8 instead of 1e3 on thin triangles).
        inside = (t0 > 0) & (t1 > 0) & (t2 > 0)  # denom > 0: t_i and w_i have the same sign
        c0, c1, c2 = t0.clamp_min(0.0), t1.clamp_min(0.0), t2.clamp_min(0.0)
        s = torch.maximum(c0 + c1 + c2, 1e-5 * denom)
        w0, w1, w2 = c0 / s, c1 / s, c2 / s
    else:
        if perspective_correct:
            w0, w1, w2 = t0 / denom, t1 / denom, t2 / denom
        inside = (w0 > 0) & (w1 > 0) & (w2 > 0)
        if clip_barycentric_coords:
            c0, c1, c2 = w0.clamp_min(0.0), w1.clamp_min(0.0), w2.clamp_min(0.0)
            s = (c0 + c1 + c2).clamp_min(1e-5)
            w0, w1, w2 = c0 / s, c1 / s, c2 / s
    pz = w0 * z0 + w1 * z1 + w2 * z2
    bary = torch.stack((w0, w1, w2), dim=-1)
    dist = None
    if need_dist and torch.is_grad_enabled() and any(isinstance(r, torch.Tensor) and r.requires_grad for r in t):
        dist = _nearest_edge_dist2(t, px, py)
    elif need_dist:
        n0, n1, n2 = q0x * q0x + q0y * q0y, q1x * q1x + q1y * q1y, q2x * q2x + q2y * q2y
        e01 = _segment_dist2(q0x * t[DX10] + q0y * t[DY10], t[L01], e2, n0, n1)
        e02 = _segment_dist2(-(q0x * t[DX02] + q0y * t[DY02]), t[L02], e1, n0, n2)
        e12 = _segment_dist2(q1x * t[DX21] + q1y * t[DY21], t[L12], e0, n1, n2)
        # min with PyTorch3D's tie order (e01, then e02, then e12) so the gradient picks the same edge.
        dist = torch.where((e01 <= e02) & (e01 <= e12), e01, torch.where(e02 <= e12, e02, e12))
    return pz, bary, inside, dist


def _nearest_edge_dist2(t, px, py) -> torch.Tensor:
    """Differentiable squared distance to the triangle, computed on its nearest edge only.

    The nearest edge (PyTorch3D's tie order) and the clamping case of the projection are found without
    autograd; only that edge's distance is then built with autograd (a third of the graph of the full
    three-edge minimum, with the same value and gradient).
    """
    with torch.no_grad():
        td = [r.detach() for r in t]
        q0x, q0y, q1x, q1y = px - td[X0], py - td[Y0], px - td[X1], py - td[Y1]
        q2x, q2y = px - td[X2], py - td[Y2]
        n0, n1, n2 = q0x * q0x + q0y * q0y, q1x * q1x + q1y * q1y, q2x * q2x + q2y * q2y
        e0 = q1x * td[DY21] - q1y * td[DX21]
        e1 = q2x * td[DY02] - q2y * td[DX02]
        e2 = q0x * td[DY10] - q0y * td[DX10]
        dot01 = q0x * td[DX10] + q0y * td[DY10]
        dot02 = -(q0x * td[DX02] + q0y * td[DY02])
        dot12 = q1x * td[DX21] + q1y * td[DY21]
        e01 = _segment_dist2(dot01, td[L01], e2, n0, n1)
        e02 = _segment_dist2(dot02, td[L02], e1, n0, n2)
        e12 = _segment_dist2(dot12, td[L12], e0, n1, n2)
        k01 = (e01 <= e02) & (e01 <= e12)
        k12 = ~k01 & (e12 < e02)
        dot = torch.where(k01, dot01, torch.where(k12, dot12, dot02))
        length2 = torch.where(k01, td[L01], torch.where(k12, td[L12], td[L02]))
        at_a = (dot <= 0) & (length2 > _EPS)
        at_b = ~at_a & ((dot >= length2) | (length2 <= _EPS))
    # Endpoints a, b of the nearest edge: (v0, v1), (v0, v2) or (v1, v2).
    ax = torch.where(k12, t[X1], t[X0])
    ay = torch.where(k12, t[Y1], t[Y0])
    bx = torch.where(k01, t[X1], t[X2])
    by = torch.where(k01, t[Y1], t[Y2])
    qx, qy = px - ax, py - ay
    dx, dy = bx - ax, by - ay
    cross = qx * dy - qy * dx
    line = cross * cross / torch.where(at_a | at_b, torch.ones_like(dx), dx * dx + dy * dy)
    rx, ry = px - bx, py - by
    return torch.where(at_a, qx * qx + qy * qy, torch.where(at_b, rx * rx + ry * ry, line))


def _face_filter(fv: torch.Tensor, cull_backfaces: bool, z_clip_value: float | None,
                 cull_to_frustum: bool, x_extent: float, y_extent: float) -> torch.Tensor:
    """(F,) bool: faces that can be rasterized at all (area, depth, backface, frustum)."""
    x, y, z = fv[..., 0], fv[..., 1], fv[..., 2]
    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    ok = (area.abs() > _EPS) & (z.amin(dim=1) >= _EPS) & torch.isfinite(fv).all(dim=(1, 2))
    if cull_backfaces:
        ok &= area >= 0
    if z_clip_value is not None:
        ok &= z.amax(dim=1) >= z_clip_value
    if cull_to_frustum:
        outside = ((x > x_extent).all(1) | (x < -x_extent).all(1) | (y > y_extent).all(1)
                   | (y < -y_extent).all(1))
        ok &= ~outside
    return ok


def _float_key(z: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 key of non-negative float32 z (its bit pattern, < 2^31)."""
    return (z.float() + 0.0).view(torch.int32).to(torch.int64)


def _pair_chunks(ix0, ix1, iy0, iy1, W: int, H: int, budget: int):
    """Enumerate the (item, pixel) pairs of pixel boxes in chunks of about ``budget`` pairs.

    Item i covers unflipped pixel indices [ix0[i], ix1[i]] x [iy0[i], iy1[i]]. Pairs come in item order
    (then row, then column), so a chunk never reorders items. Enumeration is by box rows: a row of an
    item expands to its columns with ``repeat_interleave`` (no integer division per pair).

    Yields:
        (item (M,), col (M,), row (M,)) int64: item index and image column/row (flipped: col 0 is +X).
    """
    device = ix0.device
    nx = (ix1 - ix0 + 1).clamp_min(0)
    ny = (iy1 - iy0 + 1).clamp_min(0)
    ny = torch.where(nx > 0, ny, torch.zeros_like(ny))
    n_rows = int(ny.sum()) if ny.numel() else 0
    if n_rows == 0:
        return
    item = torch.repeat_interleave(torch.arange(ix0.numel(), device=device), ny)  # one entry per box row
    first = torch.cumsum(ny, 0) - ny
    row_img = (H - 1) - (iy0[item] + torch.arange(n_rows, device=device) - first[item])
    row_cnt = nx[item]
    row_cum = torch.cumsum(row_cnt, 0)
    col0 = (W - 1) - ix0[item]
    budget = max(int(budget), W)
    # Row ranges whose pair counts fit the budget (a row has at most W pairs).
    bounds = torch.searchsorted(row_cum, torch.arange(budget, int(row_cum[-1]) + budget, budget,
                                                      device=device), right=True).tolist()
    a = 0
    for b in bounds:
        b = min(max(b, a + 1), n_rows)
        if b <= a:
            continue
        cnt = row_cnt[a:b]
        m = int(row_cum[b - 1] - (row_cum[a - 1] if a > 0 else 0))
        start = torch.cumsum(cnt, 0) - cnt  # local start of each row in the chunk
        # col = col0 - (k - start) for the k-th pair of the chunk
        col = torch.repeat_interleave(col0[a:b] + start, cnt, output_size=m) - torch.arange(m, device=device)
        yield (torch.repeat_interleave(item[a:b], cnt, output_size=m), col,
               torch.repeat_interleave(row_img[a:b], cnt, output_size=m))
        a = b
        if a >= n_rows:
            break


def _pixel_range(lo: torch.Tensor, hi: torch.Tensor, s1: int, s2: int):
    """Unflipped pixel-index range [i0, i1] whose centres may lie in [lo, hi] (1 pixel of slack)."""
    r = _ndc_range(s1, s2)
    off = r / 2.0
    a, b = r / s1, off / s1 - off  # centre(i) = a * i + b
    i0 = torch.floor((lo - b) / a).clamp(-1, s1) - 1
    i1 = torch.ceil((hi - b) / a).clamp(-1, s1) + 1
    return i0.clamp_min(0).long(), i1.clamp_max(s1 - 1).long()


def _drop_split_duplicates(pix, z, face, dist, neighbor):
    """Drop the farther (by distance; ties: the second) of two halves of a split face at the same pixel."""
    nb = neighbor[face]
    idx = torch.nonzero(nb >= 0).squeeze(1)
    if idx.numel() < 2:
        return pix, z, face, dist
    f, n = face[idx], nb[idx]
    group = pix[idx] * neighbor.numel() + torch.minimum(f, n)
    key = (_float_key(dist[idx]) << 1) | (f > n).long()
    uniq, inv = torch.unique(group, return_inverse=True)
    best = torch.full((uniq.numel(),), torch.iinfo(torch.int64).max, dtype=torch.int64, device=pix.device)
    best.scatter_reduce_(0, inv, key, reduce="amin")
    keep = torch.ones(pix.numel(), dtype=torch.bool, device=pix.device)
    keep[idx[key != best[inv]]] = False
    k = torch.nonzero(keep).squeeze(1)
    return pix[k], z[k], face[k], dist[k]


def _topk_by_sort(pix, z, item, K, n_pix: int, extra=None):
    """Keep, per pixel, the K pairs with the smallest (z, item); returns (pix, z, item, rank[, extra]).

    Precondition (exact ties): among pairs of equal (pixel, z), the input order is item-ascending; it holds
    for ``cat(previous survivors, new chunk)`` since chunks come in item order. z must be >= 0.
    """
    if z.dtype == torch.float32 and n_pix < (1 << 32):
        order = torch.sort((pix << 31) | _float_key(z), stable=True).indices
    else:  # exact lexicographic order for float64: item, then z, then pixel (stable sorts)
        order = torch.argsort(item, stable=True)
        order = order[torch.argsort(z[order], stable=True)]
        order = order[torch.argsort(pix[order], stable=True)]
    pix, z, item = pix[order], z[order], item[order]
    m = pix.numel()
    pos = torch.arange(m, device=pix.device)
    start = torch.ones(m, dtype=torch.bool, device=pix.device)
    if m > 1:
        start[1:] = pix[1:] != pix[:-1]
    seg_start = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=0).values
    rank = pos - seg_start
    keep = torch.nonzero(rank < K).squeeze(1)
    if extra is not None:
        return pix[keep], z[keep], item[keep], rank[keep], extra[order][keep]
    return pix[keep], z[keep], item[keep], rank[keep]


def rasterize_face_verts(face_verts: torch.Tensor, mesh_to_face_first_idx: torch.Tensor,
                         num_faces_per_mesh: torch.Tensor, image_size=256, blur_radius: float = 0.0,
                         faces_per_pixel: int = 1, perspective_correct: bool = False,
                         clip_barycentric_coords: bool = False, cull_backfaces: bool = False,
                         z_clip_value: float | None = None, cull_to_frustum: bool = False,
                         max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK,
                         _neighbor: torch.Tensor | None = None) -> Fragments:
    """Rasterize packed faces (PyTorch3D's ``_RasterizeFaceVerts``); see ``rasterize_meshes``.

    Args:
        face_verts: (F, 3, 3) float packed face vertices, x/y in NDC and z the view depth.
        mesh_to_face_first_idx: (N,) int64 first packed face of each mesh.
        num_faces_per_mesh: (N,) int64 number of faces of each mesh.
        image_size .. cull_to_frustum: as ``rasterize_meshes``.
        max_pairs_per_chunk: most (face, pixel) candidate pairs tested at once (memory budget).

    Returns:
        ``Fragments`` with (N, H, W, K) tensors; ``pix_to_face`` indexes the rows of ``face_verts``.
    """
    check_shape("face_verts", face_verts, (None, 3, 3), dtype="float")
    sizes = check_shape("mesh_to_face_first_idx", mesh_to_face_first_idx, ("N",), dtype="int")
    check_shape("num_faces_per_mesh", num_faces_per_mesh, ("N",), sizes, dtype="int")
    H, W = parse_image_size(image_size)
    K = int(faces_per_pixel)
    if K < 1:
        raise ValueError(f"faces_per_pixel must be >= 1, got {faces_per_pixel}")
    blur_radius = float(blur_radius)
    if not (blur_radius >= 0.0) or math.isinf(blur_radius):
        raise ValueError(f"blur_radius must be finite and >= 0, got {blur_radius}")
    if int(max_pairs_per_chunk) < 1:
        raise ValueError(f"max_pairs_per_chunk must be >= 1, got {max_pairs_per_chunk}")
    N = sizes["N"]
    device, dtype = face_verts.device, face_verts.dtype
    F = face_verts.shape[0]
    HW = H * W

    xs, ys = pixel_centers_ndc((H, W), device=device, dtype=dtype)  # indexed by image column / row
    xr, yr = _ndc_range(W, H) / 2.0, _ndc_range(H, W) / 2.0

    with torch.no_grad():
        fv = face_verts.detach()
        # face -> mesh, from the first-index/count description of the batch.
        face_mesh = torch.full((F,), -1, dtype=torch.int64, device=device)
        if F > 0 and N > 0:
            counts = num_faces_per_mesh.to(device=device, dtype=torch.int64)
            starts = mesh_to_face_first_idx.to(device=device, dtype=torch.int64)
            mesh_ids = torch.repeat_interleave(torch.arange(N, device=device), counts)
            face_ids = torch.repeat_interleave(starts, counts) + (
                torch.arange(mesh_ids.numel(), device=device)
                - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts))
            face_mesh[face_ids] = mesh_ids
        ok = _face_filter(fv, cull_backfaces, z_clip_value, cull_to_frustum, xr, yr) & (face_mesh >= 0)
        faces = torch.nonzero(ok).squeeze(1)
        r = math.sqrt(blur_radius)
        fvx, fvy = fv[faces, :, 0], fv[faces, :, 1]
        # Unflipped pixel-index ranges of each face's box grown by sqrt(blur_radius).
        ix0, ix1 = _pixel_range(fvx.amin(1) - r, fvx.amax(1) + r, W, H)
        iy0, iy1 = _pixel_range(fvy.amin(1) - r, fvy.amax(1) + r, H, W)
        # Per-face rows the selection pass reads (edge lengths only for the blur test).
        table = [row.contiguous() for row in _face_rows(fv[faces])[: 19 if blur_radius > 0 else 16]]
        pix_base = face_mesh[faces] * HW  # first pixel of each face's image

        use_scatter = K == 1 and dtype == torch.float32
        if use_scatter:
            best = torch.full((N * HW,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
        kept = None  # (pix, z, face, rank[, dist]) of the running top-K
        # Halves of a face split by z-clipping may both lie within the blur radius of a pixel: keep the
        # nearer one only (PyTorch3D's neighbour rule).
        dedup = _neighbor is not None and blur_radius > 0 and bool((_neighbor >= 0).any())
        for j, col, row in _pair_chunks(ix0, ix1, iy0, iy1, W, H, max_pairs_per_chunk):
            px, py = xs[col], ys[row]
            # (PyTorch3D's bounding-box test is implied: inside, or within sqrt(blur) of the triangle.)
            pz, _, inside, dist = _pair_terms([row.index_select(0, j) for row in table], px, py, perspective_correct,
                                              clip_barycentric_coords, need_dist=blur_radius > 0)
            valid = pz >= 0
            valid &= (inside | (dist < blur_radius)) if blur_radius > 0 else inside
            sel = torch.nonzero(valid).squeeze(1)
            j = j[sel]
            pix = pix_base[j] + row[sel] * W + col[sel]
            f, pz = faces[j], pz[sel]
            d = dist[sel] if dedup else None
            if use_scatter:
                if dedup:
                    pix, pz, f, d = _drop_split_duplicates(pix, pz, f, d, _neighbor)
                best.scatter_reduce_(0, pix, (_float_key(pz) << 32) | f, reduce="amin")
            else:
                if kept is not None:
                    pix = torch.cat((kept[0], pix))
                    pz = torch.cat((kept[1], pz))
                    f = torch.cat((kept[2], f))
                    d = torch.cat((kept[4], d)) if dedup else None
                if dedup:
                    pix, pz, f, d = _drop_split_duplicates(pix, pz, f, d, _neighbor)
                kept = _topk_by_sort(pix, pz, f, K, N * HW, extra=d)

        if use_scatter:
            hit = torch.nonzero(best != torch.iinfo(torch.int64).max).squeeze(1)
            sel_pix, sel_face = hit, best[hit] & 0xFFFFFFFF
            sel_rank = torch.zeros_like(hit)
        elif kept is not None:
            sel_pix, _, sel_face, sel_rank = kept[:4]
        else:
            sel_pix = sel_face = sel_rank = torch.zeros(0, dtype=torch.int64, device=device)
        sel_row = (sel_pix % HW) // W
        sel_col = sel_pix % W

    # Differentiable recompute on the selected pairs only.
    table = [row.index_select(0, sel_face) for row in _face_rows(face_verts)]
    pz, bary, inside, dist = _pair_terms(table, xs[sel_col], ys[sel_row], perspective_correct,
                                         clip_barycentric_coords, need_dist=True)
    signed = torch.where(inside, -dist, dist)
    flat = sel_pix * K + sel_rank
    total_slots = N * HW * K
    pix_to_face = torch.full((total_slots,), -1, dtype=torch.int64, device=device)
    pix_to_face[flat] = sel_face
    # In-place scatter into fresh -1 buffers (autograd records index_put_; no copy of the buffers).
    zbuf = face_verts.new_full((total_slots,), -1.0).index_put_((flat,), pz)
    dists = face_verts.new_full((total_slots,), -1.0).index_put_((flat,), signed)
    bary_coords = face_verts.new_full((total_slots, 3), -1.0).index_put_((flat,), bary)
    return Fragments(pix_to_face.view(N, H, W, K), zbuf.view(N, H, W, K),
                     bary_coords.view(N, H, W, K, 3), dists.view(N, H, W, K))


def _meshes_face_verts(meshes):
    """(face_verts (F,3,3), mesh_to_face_first_idx (N,), num_faces_per_mesh (N,)) of a Meshes-like object."""
    for name in ("verts_packed", "faces_packed", "mesh_to_faces_packed_first_idx", "num_faces_per_mesh"):
        if not hasattr(meshes, name):
            raise TypeError(f"meshes must be a lib3d.structures.Meshes (missing {name}()), "
                            f"got {type(meshes).__name__}")
    verts = meshes.verts_packed()
    faces = meshes.faces_packed()
    check_shape("meshes.verts_packed()", verts, (None, 3), dtype="float")
    check_finite("meshes.verts_packed()", verts)
    face_verts = verts[faces] if faces.numel() else verts.new_zeros((0, 3, 3))
    return face_verts, meshes.mesh_to_faces_packed_first_idx(), meshes.num_faces_per_mesh()


class ClippedFaces(NamedTuple):
    """Faces clipped at a depth plane (PyTorch3D's ``ClippedFaces``), F_c clipped faces.

    Attributes:
        face_verts: (F_c, 3, 3) clipped faces (differentiable w.r.t. the original vertices).
        mesh_to_face_first_idx, num_faces_per_mesh: (N,) int64 batch layout of the clipped faces.
        clipped_to_unclipped: (F_c,) int64 original face of each clipped face.
        conversion: (F_c, 3, 3) barycentric conversion: ``bary_original = conversion @ bary_clipped``
            (identity for faces that were not clipped).
        neighbor: (F_c,) int64 the other half of a face split in two (-1 otherwise).
    """

    face_verts: torch.Tensor
    mesh_to_face_first_idx: torch.Tensor
    num_faces_per_mesh: torch.Tensor
    clipped_to_unclipped: torch.Tensor
    conversion: torch.Tensor
    neighbor: torch.Tensor


def clip_faces(face_verts: torch.Tensor, mesh_to_face_first_idx: torch.Tensor, num_faces_per_mesh: torch.Tensor,
               z_clip_value: float, perspective_correct: bool) -> ClippedFaces | None:
    """Clip faces to ``z >= z_clip_value`` (PyTorch3D's ``clip_faces`` without frustum culling).

    A face with one vertex nearer than the plane becomes the quadrilateral behind it, split into two
    triangles (p4, p2, p5) and (p5, p2, p3); a face with two such vertices becomes the triangle
    (p4, p5, p1); faces entirely in front are kept (entirely behind: kept too, the rasterizer culls
    them). The new vertices interpolate the edges at the plane, in view space when
    ``perspective_correct`` (x, y are NDC times 1/z for a perspective camera), as PyTorch3D does.

    Args:
        face_verts: (F, 3, 3) NDC x/y, view z.
        mesh_to_face_first_idx, num_faces_per_mesh: (N,) batch layout.
        z_clip_value: the clipping depth.
        perspective_correct: interpolate in view space.

    Returns:
        ``ClippedFaces``, or None when no face crosses the plane.
    """
    device, dtype = face_verts.device, face_verts.dtype
    F = face_verts.shape[0]
    behind = face_verts[:, :, 2].detach() < z_clip_value
    n_behind = behind.sum(1)
    case3 = n_behind == 2
    case4 = n_behind == 1
    if not bool((case3 | case4).any()):
        return None
    delta = 1 + case4.long()
    start = torch.cumsum(delta, 0) - delta  # first clipped index of each original face
    F_c = int(delta.sum())
    eye = torch.eye(3, dtype=dtype, device=device)

    def split(idx, lone_behind: bool):
        fv = face_verts[idx]
        p1i = torch.argmax((behind[idx] if lone_behind else ~behind[idx]).long(), dim=1)
        p2i, p3i = (p1i + 1) % 3, (p1i + 2) % 3
        ar = torch.arange(idx.numel(), device=device)
        p1, p2, p3 = fv[ar, p1i], fv[ar, p2i], fv[ar, p3i]
        w2 = (p1[:, 2] - z_clip_value) / (p1[:, 2] - p2[:, 2])
        w3 = ((p1[:, 2] - z_clip_value) / (p1[:, 2] - p3[:, 2])).detach()  # detached as in PyTorch3D
        p4 = p1 * (1 - w2[:, None]) + p2 * w2[:, None]
        p5 = p1 * (1 - w3[:, None]) + p3 * w3[:, None]
        if perspective_correct:
            p4 = torch.cat(((p1[:, :2] * p1[:, 2:3] * (1 - w2[:, None]) + p2[:, :2] * p2[:, 2:3] * w2[:, None])
                            / z_clip_value, p4[:, 2:]), 1)
            p5 = torch.cat(((p1[:, :2] * p1[:, 2:3] * (1 - w3[:, None]) + p3[:, :2] * p3[:, 2:3] * w3[:, None])
                            / z_clip_value, p5[:, 2:]), 1)
        e1, e2, e3 = eye[p1i], eye[p2i], eye[p3i]
        b4 = e1 * (1 - w2[:, None]) + e2 * w2[:, None]
        b5 = e1 * (1 - w3[:, None]) + e3 * w3[:, None]
        return (p1, p2, p3, p4, p5), (e1, e2, e3, b4, b5)

    keep = torch.nonzero(~(case3 | case4)).squeeze(1)
    idx3 = torch.nonzero(case3).squeeze(1)
    idx4 = torch.nonzero(case4).squeeze(1)
    verts_parts, conv_parts, dst_parts, src_parts = [face_verts[keep]], [eye.expand(keep.numel(), 3, 3)], \
        [start[keep]], [keep]
    if idx3.numel():
        (p1, _, _, p4, p5), (b1, _, _, b4, b5) = split(idx3, lone_behind=False)
        verts_parts.append(torch.stack((p4, p5, p1), 1))
        conv_parts.append(torch.stack((b4, b5, b1), 2))
        dst_parts.append(start[idx3])
        src_parts.append(idx3)
    if idx4.numel():
        (_, p2, p3, p4, p5), (_, b2, b3, b4, b5) = split(idx4, lone_behind=True)
        verts_parts += [torch.stack((p4, p2, p5), 1), torch.stack((p5, p2, p3), 1)]
        conv_parts += [torch.stack((b4, b2, b5), 2), torch.stack((b5, b2, b3), 2)]
        dst_parts += [start[idx4], start[idx4] + 1]
        src_parts += [idx4, idx4]
    order = torch.argsort(torch.cat(dst_parts))
    clipped_verts = torch.cat(verts_parts)[order]
    conversion = torch.cat(conv_parts)[order]
    to_unclipped = torch.cat(src_parts)[order]
    neighbor = torch.full((F_c,), -1, dtype=torch.int64, device=device)
    if idx4.numel():
        neighbor[start[idx4]] = start[idx4] + 1
        neighbor[start[idx4] + 1] = start[idx4]
    start_ext = torch.cat((start, torch.tensor([F_c], device=device)))
    first = mesh_to_face_first_idx.to(device=device, dtype=torch.int64)
    counts = num_faces_per_mesh.to(device=device, dtype=torch.int64)
    first_c = start_ext[first.clamp_max(F)]
    counts_c = start_ext[(first + counts).clamp_max(F)] - first_c
    return ClippedFaces(clipped_verts, first_c, counts_c, to_unclipped, conversion, neighbor)


def rasterize_meshes(meshes, image_size=256, blur_radius: float = 0.0, faces_per_pixel: int = 8,
                     bin_size: int | None = None, max_faces_per_bin: int | None = None,
                     perspective_correct: bool = False, clip_barycentric_coords: bool = False,
                     cull_backfaces: bool = False, z_clip_value: float | None = None,
                     cull_to_frustum: bool = False,
                     max_pairs_per_chunk: int = _DEFAULT_PAIRS_PER_CHUNK) -> Fragments:
    """Rasterize a batch of meshes already in NDC (PyTorch3D's ``rasterize_meshes``).

    Each mesh is rasterized onto its own image. A face covers a pixel when the pixel centre lies inside
    it, or (``blur_radius > 0``) when the squared NDC distance from the centre to the face is below
    ``blur_radius``; the K nearest covering faces by interpolated depth are kept, nearest first.

    Depth at a pixel: ``z = sum_i w_i z_i`` with the output barycentrics ``w``; perspective-correct
    barycentrics are ``w_i = (b_i / z_i) / sum_j (b_j / z_j)`` for screen-space ``b``; clipped ones are
    ``max(w, 0) / max(sum max(w, 0), 1e-5)``.

    Args:
        meshes: ``lib3d.structures.Meshes`` of N meshes whose verts are (x, y) in NDC (+X left, +Y up)
            and z the view-space depth.
        image_size: int or (H, W); for non-square images the shorter side spans NDC [-1, 1].
        blur_radius: squared NDC distance for soft coverage (0: hard edges).
        faces_per_pixel: K.
        bin_size, max_faces_per_bin: accepted for PyTorch3D compatibility and ignored: lib3d bins
            faces per pixel exactly (no capacity, no "bin size too small" overflow).
        perspective_correct: perspective-correct barycentrics.
        clip_barycentric_coords: clip barycentrics to the triangle (matters when blur_radius > 0).
        cull_backfaces: skip faces whose screen-space signed area is negative (clockwise on screen).
        z_clip_value: faces are clipped to ``z >= z_clip_value`` (``clip_faces``: a face crossing the
            plane is cut to its part beyond it, split in two triangles when that part is a quad);
            outputs refer to the original faces (barycentrics converted, dists to the clipped part).
        cull_to_frustum: skip faces lying entirely outside the image's NDC extent.
        max_pairs_per_chunk: memory budget (candidate (face, pixel) pairs per chunk).

    Returns:
        ``Fragments(pix_to_face (N, H, W, K) int64 packed face index or -1, zbuf (N, H, W, K),
        bary_coords (N, H, W, K, 3), dists (N, H, W, K))``; differentiable w.r.t. the vertices through
        zbuf, bary_coords and dists.

    Raises:
        TypeError, ValueError: on a non-mesh input, bad shapes, non-finite verts, K < 1 or blur < 0.

    Example:
        >>> frags = rasterize_meshes(meshes_ndc, image_size=(96, 128), faces_per_pixel=3,
        ...                          perspective_correct=True)
    """
    del bin_size, max_faces_per_bin  # exact per-pixel binning: nothing to size
    face_verts, first, counts = _meshes_face_verts(meshes)
    clipped = None
    if z_clip_value is not None and face_verts.numel():
        clipped = clip_faces(face_verts, first, counts, float(z_clip_value), perspective_correct)
    if clipped is None:
        return rasterize_face_verts(face_verts, first, counts, image_size, blur_radius, faces_per_pixel,
                                    perspective_correct, clip_barycentric_coords, cull_backfaces,
                                    z_clip_value, cull_to_frustum, max_pairs_per_chunk)
    frags = rasterize_face_verts(clipped.face_verts, clipped.mesh_to_face_first_idx, clipped.num_faces_per_mesh,
                                 image_size, blur_radius, faces_per_pixel, perspective_correct,
                                 clip_barycentric_coords, cull_backfaces, z_clip_value, cull_to_frustum,
                                 max_pairs_per_chunk, _neighbor=clipped.neighbor)
    # Back to the original faces: indices, and barycentrics through the conversion matrices.
    hit = frags.pix_to_face >= 0
    p2f_c = frags.pix_to_face.clamp_min(0)
    pix_to_face = torch.where(hit, clipped.clipped_to_unclipped[p2f_c], frags.pix_to_face)
    bary = torch.einsum("...ij,...j->...i", clipped.conversion[p2f_c], frags.bary_coords)
    bary = torch.where(hit[..., None], bary, frags.bary_coords)
    return Fragments(pix_to_face, frags.zbuf, bary, frags.dists)


def rasterize_meshes_reference(meshes, image_size=256, blur_radius: float = 0.0, faces_per_pixel: int = 8,
                               perspective_correct: bool = False, clip_barycentric_coords: bool = False,
                               cull_backfaces: bool = False) -> Fragments:
    """Slow dense brute-force version of ``rasterize_meshes`` (tests only; small scenes).

    Tests every pixel against every face of its mesh at once ((H*W, F) tensors), so memory is
    O(N * H * W * F). Same arguments and outputs as ``rasterize_meshes``.
    """
    face_verts, first, counts = _meshes_face_verts(meshes)
    H, W = parse_image_size(image_size)
    K = int(faces_per_pixel)
    N, F = int(first.numel()), face_verts.shape[0]
    device, dtype = face_verts.device, face_verts.dtype
    xs, ys = pixel_centers_ndc((H, W), device=device, dtype=dtype)
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    face_idx = torch.arange(F, device=device)
    ok = _face_filter(face_verts.detach(), cull_backfaces, None, False, 0.0, 0.0)
    outs = []
    for n in range(N):  # reference only: a loop over the batch keeps it readable
        s, c = int(first[n]), int(counts[n])
        fv = face_verts[s:s + c]
        P = px.numel()
        fvr = fv[None].expand(P, c, 3, 3).reshape(-1, 3, 3)
        pxr = px[:, None].expand(P, c).reshape(-1)
        pyr = py[:, None].expand(P, c).reshape(-1)
        pz, bary, inside, dist = _pair_terms(_face_rows(fvr), pxr, pyr, perspective_correct,
                                             clip_barycentric_coords)
        pz, bary, inside, dist = pz.view(P, c), bary.view(P, c, 3), inside.view(P, c), dist.view(P, c)
        valid = ok[s:s + c][None] & (pz.detach() >= 0) & (inside | (dist.detach() < blur_radius))
        zkey = torch.where(valid, pz.detach(), torch.full_like(pz, float("inf")))
        order = torch.argsort(zkey, dim=1, stable=True)[:, :K]  # columns are face-ascending: ties by face
        if order.shape[1] < K:
            order = torch.cat((order, order.new_zeros(P, K - order.shape[1])), 1)
        v = torch.gather(valid, 1, order) if c else torch.zeros(P, K, dtype=torch.bool, device=device)
        v[:, c:] = False  # padding slots when the mesh has fewer than K faces
        if c == 0:
            outs.append((torch.full((P, K), -1, device=device), torch.full((P, K), -1.0, device=device,
                         dtype=dtype), torch.full((P, K, 3), -1.0, device=device, dtype=dtype),
                         torch.full((P, K), -1.0, device=device, dtype=dtype)))
            continue
        m1 = torch.full((), -1.0, device=device, dtype=dtype)
        signed = torch.where(inside, -dist, dist)
        outs.append((torch.where(v, (face_idx[s:s + c])[order], -1),
                     torch.where(v, torch.gather(pz, 1, order), m1),
                     torch.where(v[..., None], torch.gather(bary, 1, order[..., None].expand(P, K, 3)), m1),
                     torch.where(v, torch.gather(signed, 1, order), m1)))
    p2f, z, b, d = (torch.stack(t) for t in zip(*outs))
    return Fragments(p2f.view(N, H, W, K), z.view(N, H, W, K), b.view(N, H, W, K, 3), d.view(N, H, W, K))


# ---------------------------------------------------------------------------------------------------
# World meshes + cameras.
# ---------------------------------------------------------------------------------------------------


def transform_meshes_to_ndc(meshes, cameras, eps: float | None = None):
    """World meshes -> meshes with NDC x/y and view-space z (PyTorch3D's ``MeshRasterizer.transform``).

    Args:
        meshes: ``Meshes`` of N meshes in world coordinates.
        cameras: a lib3d camera batch of 1 or N cameras.
        eps: passed to the cameras' ``transform_points``.

    Returns:
        ``Meshes`` with verts ``(x_ndc, y_ndc, z_view)``.
    """
    n_cams = len(cameras)
    if n_cams != 1 and n_cams != len(meshes):
        raise ValueError(f"cameras must hold 1 or len(meshes)={len(meshes)} cameras, got {n_cams}")
    verts_world = meshes.verts_padded()
    verts_view = cameras.get_world_to_view_transform().transform_points(verts_world, eps=eps)
    if hasattr(cameras, "transform_points_ndc"):
        verts_ndc = cameras.transform_points_ndc(verts_world, eps=eps)
    else:  # pragma: no cover - cameras without the NDC helper
        verts_ndc = cameras.transform_points(verts_world, eps=eps)
    verts_ndc = torch.cat((verts_ndc[..., :2], verts_view[..., 2:3]), dim=-1)
    return meshes.update_padded(verts_ndc)


def _resolve_settings(cameras, settings: RasterizationSettings) -> tuple[bool, bool, float | None]:
    """(perspective_correct, clip_barycentric_coords, z_clip_value) as PyTorch3D's MeshRasterizer."""
    is_persp = bool(cameras.is_perspective()) if hasattr(cameras, "is_perspective") else True
    persp = is_persp if settings.perspective_correct is None else bool(settings.perspective_correct)
    clip = settings.blur_radius > 0.0 if settings.clip_barycentric_coords is None else bool(
        settings.clip_barycentric_coords)
    z_clip = settings.z_clip_value
    if z_clip is None and persp and hasattr(cameras, "get_znear"):
        znear = cameras.get_znear()
        if isinstance(znear, torch.Tensor):
            znear = float(znear.min())
        z_clip = None if znear is None else znear / 2.0
    return persp, clip, z_clip


def rasterize_world_meshes(meshes, cameras, settings: RasterizationSettings | None = None,
                           eps: float | None = None) -> Fragments:
    """Rasterize world-space meshes seen by ``cameras`` (PyTorch3D's ``MeshRasterizer.forward``).

    Verts go to view space (z kept) and to NDC with ``cameras.transform_points_ndc``; then
    ``rasterize_meshes`` runs with the settings, where ``perspective_correct=None`` means "the camera
    is perspective", ``clip_barycentric_coords=None`` means "blur_radius > 0" and ``z_clip_value=None``
    means ``znear / 2`` when perspective correction is on and the cameras have a znear (as PyTorch3D).

    Args:
        meshes: ``Meshes`` of N meshes in world coordinates.
        cameras: lib3d cameras (1 or N).
        settings: ``RasterizationSettings`` (defaults if None).
        eps: passed to the camera transforms.

    Returns:
        ``Fragments`` as ``rasterize_meshes``.
    """
    settings = RasterizationSettings() if settings is None else settings
    meshes_ndc = transform_meshes_to_ndc(meshes, cameras, eps=eps)
    persp, clip, z_clip = _resolve_settings(cameras, settings)
    return rasterize_meshes(meshes_ndc, image_size=settings.image_size, blur_radius=settings.blur_radius,
                            faces_per_pixel=settings.faces_per_pixel, perspective_correct=persp,
                            clip_barycentric_coords=clip, cull_backfaces=settings.cull_backfaces,
                            z_clip_value=z_clip, cull_to_frustum=settings.cull_to_frustum,
                            max_pairs_per_chunk=settings.max_pairs_per_chunk)


class MeshRasterizer(nn.Module):
    """World meshes -> ``Fragments`` for a camera batch (PyTorch3D's ``MeshRasterizer``).

    ``forward(meshes_world, **kwargs)`` accepts ``cameras=`` and ``raster_settings=`` overrides, like
    PyTorch3D.
    """

    def __init__(self, cameras=None, raster_settings: RasterizationSettings | None = None):
        super().__init__()
        self.cameras = cameras
        self.raster_settings = RasterizationSettings() if raster_settings is None else raster_settings

    def to(self, device):  # cameras are not nn.Modules: move them too
        if self.cameras is not None and hasattr(self.cameras, "to"):
            self.cameras = self.cameras.to(device)
        return super().to(device)

    def transform(self, meshes_world, **kwargs):
        """World meshes -> NDC-x/y, view-z meshes (PyTorch3D's ``MeshRasterizer.transform``)."""
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise ValueError("MeshRasterizer needs cameras (at construction or as forward(cameras=...))")
        return transform_meshes_to_ndc(meshes_world, cameras, eps=kwargs.get("eps"))

    def forward(self, meshes_world, **kwargs) -> Fragments:
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise ValueError("MeshRasterizer needs cameras (at construction or as forward(cameras=...))")
        return rasterize_world_meshes(meshes_world, cameras, kwargs.get("raster_settings", self.raster_settings),
                                      eps=kwargs.get("eps"))
