"""RoIAlign (He et al., "Mask R-CNN", 2017) and the multi-level FPN pooler, vectorised in pure PyTorch.

Dimension names: N images; C channels; H/W feature-map size; R regions of interest; PH/PW pooled size;
SY/SX samples per bin along y/x; L pyramid levels.

Semantics (torchvision's ``roi_align`` / detectron2's ``ROIAlign``): a RoI ``(b, x0, y0, x1, y1)`` in image
pixels is scaled by ``spatial_scale`` and, when ``aligned`` (detectron2's default for Mask R-CNN), shifted by
-0.5 so that a feature ``f[i]`` sits at continuous coordinate ``i`` (pixel centres). Each of the
``PH x PW`` bins averages ``SY x SX`` regularly spaced bilinear samples, ``SY = sampling_ratio`` or, when
``sampling_ratio <= 0``, ``ceil(roi_height / PH)`` per RoI. A sample outside ``[-1, H] x [-1, W]``
contributes 0; one inside is clamped to ``[0, H - 1] x [0, W - 1]``. Without ``aligned`` the RoI size is
at least 1.

The fast path builds every sample's coordinates at once and reads them with one ``grid_sample`` call
(``padding_mode="border"`` is exactly the clamping above; the out-of-range samples are masked), so forward
and backward (into the features; RoIs get no gradient) have no loop over RoIs, bins or samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape, check_tensor, is_tracing

__all__ = [
    "ROIPooler",
    "assign_boxes_to_levels",
    "boxes_to_rois",
    "multilevel_roi_align",
    "roi_align",
    "roi_align_reference",
]


def boxes_to_rois(boxes: Sequence[torch.Tensor] | torch.Tensor, name: str = "rois") -> torch.Tensor:
    """Turn per-image boxes into RoIs ``(R, 5)`` ``(b, x0, y0, x1, y1)``.

    Args:
        boxes: a list of N ``(R_n, 4) float`` box tensors, or an ``(R, 5)`` RoI tensor (returned as is).
        name: argument name used in error messages.

    Returns:
        ``(R, 5) float`` RoIs (image index first).
    """
    if torch.is_tensor(boxes):
        check_shape(name, boxes, ("R", 5), dtype="float")
        return boxes
    boxes = list(boxes)
    if not boxes:
        raise ValueError(f"{name} must hold at least one image's boxes")
    for i, b in enumerate(boxes):
        check_shape(f"{name}[{i}]", b, ("R", 4), dtype="float")
    idx = torch.cat([torch.full((b.shape[0], 1), float(i), dtype=b.dtype, device=b.device)
                     for i, b in enumerate(boxes)])
    return torch.cat([idx, torch.cat(boxes)], 1)


def _pair(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    ph, pw = (int(s) for s in output_size)
    return ph, pw


def _check(input: torch.Tensor, rois: torch.Tensor, output_size) -> tuple[int, int]:
    check_shape("input", input, ("N", "C", "H", "W"), dtype="float")
    check_shape("rois", rois, ("R", 5), dtype="float")
    ph, pw = _pair(output_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    if not is_tracing() and rois.numel():
        b = rois[:, 0]
        if bool((b < 0).any()) or bool((b >= input.shape[0]).any()) or bool((b != b.round()).any()):
            raise ValueError(f"rois[:, 0] must be image indices in [0, {input.shape[0]}), got values in "
                             f"[{float(b.min())}, {float(b.max())}]")
    return ph, pw


def _sample_axis(start: torch.Tensor, size: torch.Tensor, pooled: int, grid: torch.Tensor, max_grid: int,
                 extent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample coordinates ``(R, P, S)`` along one axis and their weights (validity / grid count)."""
    dtype = start.dtype
    bin_size = size / pooled
    p = torch.arange(pooled, device=start.device, dtype=dtype)
    s = torch.arange(max_grid, device=start.device, dtype=dtype)
    g = grid.to(dtype).clamp(min=1)
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
             + (s[None, None, :] + 0.5) * (bin_size / g)[:, None, None])
    valid = (s[None, None, :] < grid[:, None, None]) & (coord >= -1.0) & (coord <= extent)
    return coord, valid.to(dtype)


def roi_align(input: torch.Tensor, rois: torch.Tensor | Sequence[torch.Tensor], output_size,
              spatial_scale: float = 1.0, sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """RoIAlign: average of bilinear samples in each bin of each RoI (detectron2 ``aligned=True``).

    Args:
        input: ``(N, C, H, W) float`` feature maps.
        rois: ``(R, 5) float`` RoIs ``(b, x0, y0, x1, y1)`` in image pixels, or a list of N ``(R_n, 4)``
            boxes. They receive no gradient.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: feature-map size over image size (``1 / stride``).
        sampling_ratio: samples per bin along each axis; ``<= 0``: ``ceil(roi_size / pooled_size)`` per RoI.
        aligned: shift the scaled RoI by -0.5 (pixel-centre model); otherwise torchvision's legacy
            ``aligned=False`` (RoI size at least 1).

    Returns:
        ``(R, C, PH, PW)`` pooled features, differentiable w.r.t. ``input``.

    Raises:
        ValueError: bad shapes, image indices out of range, non-positive output size.

    Example:
        >>> out = roi_align(torch.rand(2, 8, 32, 32), torch.tensor([[0., 4, 4, 20, 12]]), 7, 0.5, 2)
    """
    rois = boxes_to_rois(rois)
    ph, pw = _check(input, rois, output_size)
    n, c, h, w = input.shape
    r = rois.shape[0]
    if r == 0:
        return input.new_zeros((0, c, ph, pw))
    rois = rois.detach().to(input.dtype)
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    rw = rois[:, 3] * spatial_scale - offset - x0
    rh = rois[:, 4] * spatial_scale - offset - y0
    if not aligned:
        rw = rw.clamp(min=1.0)
        rh = rh.clamp(min=1.0)
    if sampling_ratio > 0:
        gy = torch.full((r,), sampling_ratio, dtype=torch.int64, device=input.device)
        gx = gy
        sy = sx = int(sampling_ratio)
    else:
        gy = torch.ceil(rh / ph).to(torch.int64).clamp(min=0)
        gx = torch.ceil(rw / pw).to(torch.int64).clamp(min=0)
        sy = max(1, int(gy.max()))
        sx = max(1, int(gx.max()))
    ys, vy = _sample_axis(y0, rh, ph, gy, sy, h)  # (R, PH, SY)
    xs, vx = _sample_axis(x0, rw, pw, gx, sx, w)  # (R, PW, SX)
    count = (gy * gx).clamp(min=1).to(input.dtype)
    # Normalised grid_sample coordinates (align_corners=True: -1 is f[0], +1 is f[size - 1]).
    yn = ys * (2.0 / max(h - 1, 1)) - 1.0
    xn = xs * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([xn.reshape(r, 1, pw * sx).expand(r, ph * sy, pw * sx),
                        yn.reshape(r, ph * sy, 1).expand(r, ph * sy, pw * sx)], dim=-1)
    # Pad the RoIs of each image into one (N, R_max * PH * SY, PW * SX) sampling grid: one grid_sample call.
    b = rois[:, 0].to(torch.int64)
    order = torch.sort(b, stable=True).indices
    per_image = torch.bincount(b, minlength=n)
    first = torch.cumsum(per_image, 0) - per_image
    pos = torch.empty_like(b)
    pos[order] = torch.arange(r, device=b.device) - first[b[order]]
    r_max = int(per_image.max())
    padded = grid.new_zeros((n, r_max, ph * sy, pw * sx, 2))
    padded[b, pos] = grid
    samples = F.grid_sample(input, padded.view(n, r_max * ph * sy, pw * sx, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)  # (N, C, R_max*PH*SY, PW*SX)
    # Gather each RoI's rows with index_select (its backward is an index_add, far faster on CPU than the
    # accumulating index_put behind advanced indexing).
    samples = samples.view(n, c, r_max, ph * sy * pw * sx).transpose(1, 2).reshape(n * r_max, c, -1)
    samples = samples.index_select(0, b * r_max + pos).view(r, c, ph, sy, pw, sx)
    # Sum of valid samples / count: out = sum_{s, t} vy[s] vx[t] f(y_s, x_t) / (gy gx).
    return torch.einsum("rcysxt,rys,rxt->rcyx", samples, vy, vx) / count[:, None, None, None]


def _bilinear_reference(f: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's ``bilinear_interpolate`` for one point of ``f (C, H, W)`` (autograd through indexing)."""
    h, w = f.shape[1:]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return f.new_zeros(f.shape[0])
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * f[:, y_low, x_low] + hy * lx * f[:, y_low, x_high] + ly * hx * f[:, y_high, x_low]
            + ly * lx * f[:, y_high, x_high])


def roi_align_reference(input: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
                        sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """Slow reference of :func:`roi_align`: torchvision's CPU kernel as Python loops (differentiable)."""
    rois = boxes_to_rois(rois)
    ph, pw = _check(input, rois, output_size)
    out = []
    offset = 0.5 if aligned else 0.0
    for roi in rois.detach().tolist():
        b = int(roi[0])
        x0, y0 = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        rw, rh = roi[3] * spatial_scale - offset - x0, roi[4] * spatial_scale - offset - y0
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / ph))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / pw))
        count = max(gh * gw, 1)
        bins = []
        for i in range(ph):
            row = []
            for j in range(pw):
                acc = input.new_zeros(input.shape[1])
                for iy in range(gh):
                    y = y0 + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = x0 + j * bw + (ix + 0.5) * bw / gw
                        acc = acc + _bilinear_reference(input[b], y, x)
                row.append(acc / count)
            bins.append(torch.stack(row, -1))
        out.append(torch.stack(bins, -2))
    if not out:
        return input.new_zeros((0, input.shape[1], ph, pw))
    return torch.stack(out)


def assign_boxes_to_levels(boxes: torch.Tensor, min_level: int, max_level: int, canonical_box_size: float = 224.0,
                           canonical_level: int = 4) -> torch.Tensor:
    """FPN level of each box (Lin et al., "Feature Pyramid Networks", 2017, eq. 1), relative to ``min_level``.

    ``level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to
    ``[min_level, max_level]``.

    Args:
        boxes: ``(R, 4) float`` XYXY boxes (or ``(R, 5)`` RoIs).
        min_level, max_level: the pyramid's first and last level (2 and 5 for P2-P5).

    Returns:
        ``(R,) int64`` in ``[0, max_level - min_level]``.
    """
    check_tensor("boxes", boxes, dtype="float")
    if boxes.dim() != 2 or boxes.shape[1] not in (4, 5):
        raise ValueError(f"boxes must have shape (R, 4) or (R, 5), got {tuple(boxes.shape)}")
    b = boxes[:, -4:]
    size = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=0).sqrt()
    lvl = torch.floor(canonical_level + torch.log2(size / canonical_box_size + 1e-8))
    return (lvl.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)


def multilevel_roi_align(features: Sequence[torch.Tensor], rois: torch.Tensor | Sequence[torch.Tensor],
                         output_size, scales: Sequence[float], sampling_ratio: int = 0,
                         canonical_box_size: float = 224.0, canonical_level: int = 4) -> torch.Tensor:
    """Pool each RoI from its FPN level (detectron2's ``ROIPooler`` with ``ROIAlignV2``).

    Args:
        features: L ``(N, C, H_l, W_l) float`` maps, finest first (P2, P3, ...).
        rois: ``(R, 5)`` RoIs or a list of N ``(R_n, 4)`` boxes.
        output_size: ``PH`` or ``(PH, PW)``.
        scales: L scales ``1 / stride`` (powers of two, level ``-log2(scale)``).
        sampling_ratio: see :func:`roi_align`.
        canonical_box_size, canonical_level: see :func:`assign_boxes_to_levels`.

    Returns:
        ``(R, C, PH, PW)`` pooled features (rows in RoI order).
    """
    rois = boxes_to_rois(rois)
    features = list(features)
    if len(features) != len(scales) or not features:
        raise ValueError(f"features and scales must have the same positive length, got {len(features)} "
                         f"and {len(scales)}")
    ph, pw = _pair(output_size)
    if len(features) == 1:
        return roi_align(features[0], rois, (ph, pw), scales[0], sampling_ratio, True)
    min_level = int(round(-math.log2(scales[0])))
    max_level = int(round(-math.log2(scales[-1])))
    if max_level - min_level + 1 != len(features):
        raise ValueError(f"scales must be consecutive powers of 1/2, got {list(scales)}")
    levels = assign_boxes_to_levels(rois, min_level, max_level, canonical_box_size, canonical_level)
    c = features[0].shape[1]
    out = features[0].new_zeros((rois.shape[0], c, ph, pw))
    for lvl, (f, s) in enumerate(zip(features, scales)):  # loop over pyramid levels
        idx = torch.nonzero(levels == lvl, as_tuple=True)[0]
        if idx.numel():
            out = out.index_put((idx,), roi_align(f, rois[idx], (ph, pw), s, sampling_ratio, True))
    return out


class ROIPooler(nn.Module):
    """Multi-level RoIAlign (``aligned=True``) module; ``forward(features, rois)`` calls
    :func:`multilevel_roi_align`.

    Args:
        output_size: ``PH`` or ``(PH, PW)``.
        scales: ``1 / stride`` of each level, finest first.
        sampling_ratio: samples per bin (``<= 0``: adaptive).
        canonical_box_size, canonical_level: FPN level assignment.
    """

    def __init__(self, output_size, scales: Sequence[float], sampling_ratio: int = 0,
                 canonical_box_size: float = 224.0, canonical_level: int = 4):
        super().__init__()
        self.output_size = _pair(output_size)
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: Sequence[torch.Tensor], rois) -> torch.Tensor:
        return multilevel_roi_align(features, rois, self.output_size, self.scales, self.sampling_ratio,
                                    self.canonical_box_size, self.canonical_level)
