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

The fast path uses that the sampling is separable: with torchvision's clamped bilinear read, a bin is
``sum_{y, x} Ay[i, y] Ax[j, x] f[y, x]`` for one small interpolation matrix per axis and RoI. Each RoI gathers
the window of feature rows and columns its samples touch (channels-last, from its pyramid level) and the two
matrices are applied as batched matrix products; the backward (into the features; RoIs get no gradient) is
the transposed products and an ``index_add`` of channel rows. The cost does not grow with the number of
samples per bin, and there is no loop over RoIs, bins or samples, only over pyramid levels and
memory-bounded chunks of RoIs with similar windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lib3d._checks import check_finite, check_shape, check_tensor, is_tracing

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
        check_finite("rois", rois)
        b = rois[:, 0]
        if bool((b < 0).any()) or bool((b >= input.shape[0]).any()) or bool((b != b.round()).any()):
            raise ValueError(f"rois[:, 0] must be image indices in [0, {input.shape[0]}), got values in "
                             f"[{float(b.min())}, {float(b.max())}]")
    return ph, pw


_CROP_BUDGET = 1 << 24
"""Most feature values (crops x channels) gathered at once; RoIs beyond it are pooled in chunks."""


def _sample_axis(start: torch.Tensor, size: torch.Tensor, pooled: int, grid: torch.Tensor, max_grid: int,
                 extent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample coordinates ``(R, P, S)`` along one axis and their validity (0/1) for maps of ``extent (R,)``."""
    dtype = start.dtype
    bin_size = size / pooled
    p = torch.arange(pooled, device=start.device, dtype=dtype)
    s = torch.arange(max_grid, device=start.device, dtype=dtype)
    g = grid.to(dtype).clamp(min=1)
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
             + (s[None, None, :] + 0.5) * (bin_size / g)[:, None, None])
    valid = ((s[None, None, :] < grid[:, None, None]) & (coord >= -1.0)
             & (coord <= extent.to(dtype)[:, None, None]))
    return coord, valid.to(dtype)


def _axis_weights(start: torch.Tensor, size: torch.Tensor, pooled: int, sampling_ratio: int,
                  extent: torch.Tensor):
    """One axis of RoIAlign's separable sampling operator.

    A bin's value is ``sum_{s, t} vy_s vx_t f(y_s, x_t) / (gy gx)`` and torchvision's bilinear read
    (clamp to the map, then interpolate between ``floor`` and ``floor + 1``) is a product of a y and an x
    factor, so the whole pooling is ``out[i, j] = sum_{y, x} Ay[i, y] Ax[j, x] f[y, x]`` with one sparse
    ``(P, extent)`` matrix per axis. This returns that matrix as pairs: for each sample ``(R, P, S)`` its
    ``low`` / ``high`` feature index (int64) and weights (validity and ``1 / g`` folded in), and the window
    ``[first, first + span)`` holding every index a RoI reads (``span >= 1``).
    """
    r = start.shape[0]
    if sampling_ratio > 0:
        grid = torch.full((r,), sampling_ratio, dtype=torch.int64, device=start.device)
        max_grid = int(sampling_ratio)
    else:
        grid = torch.ceil(size / pooled).to(torch.int64).clamp(min=0)
        max_grid = max(1, int(grid.max()))
    coord, valid = _sample_axis(start, size, pooled, grid, max_grid, extent)
    top = (extent - 1).to(start.dtype)[:, None, None]
    c = torch.minimum(coord.clamp(min=0.0), top)  # out-of-range samples are invalid: their weight is 0
    low = c.floor()
    frac = c - low
    scale = valid / grid.clamp(min=1).to(start.dtype)[:, None, None]
    w_high = frac * scale
    w_low = scale - w_high
    low = low.to(torch.int64)
    high = torch.minimum(low + 1, (extent - 1)[:, None, None])
    ok = valid > 0
    big = torch.iinfo(torch.int64).max
    first = torch.where(ok, low, big).flatten(1).amin(1)
    last = torch.where(ok, high, -1).flatten(1).amax(1)
    first = torch.where(last >= 0, first, 0)
    span = (last - first + 1).clamp(min=1)
    return low, high, w_low, w_high, first, span


def _window_matrix(low, high, w_low, w_high, first, size: int) -> torch.Tensor:
    """Dense ``(R, P, size)`` interpolation matrix over each RoI's window ``[first, first + size)``."""
    r, p, _ = low.shape
    a = w_low.new_zeros((r, p, size))
    rel = first[:, None, None]
    a.scatter_add_(2, (low - rel).clamp(0, size - 1), w_low)
    a.scatter_add_(2, (high - rel).clamp(0, size - 1), w_high)
    return a


def _chunks(span_y: torch.Tensor, span_x: torch.Tensor, channels: int) -> list[torch.Tensor] | None:
    """Chunks of RoIs (index tensors) whose windows are padded to one size. None (one chunk, no reordering)
    when padding every window to the largest at most doubles the work and fits ``_CROP_BUDGET``; otherwise
    one bucket per (``ceil(log2)`` window height, width) pair, split to fit the budget. Loops over buckets."""
    r = span_y.shape[0]
    padded = r * int(span_y.max()) * int(span_x.max())
    if padded <= 2 * int((span_y * span_x).sum()) and padded * channels <= _CROP_BUDGET:
        return None
    ky = torch.ceil(torch.log2(span_y.double())).to(torch.int64)
    kx = torch.ceil(torch.log2(span_x.double())).to(torch.int64)
    key = ky * 64 + kx
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    out, at = [], 0
    for k, n in zip(keys.tolist(), counts.tolist()):
        per_chunk = max(1, _CROP_BUDGET // ((2 ** (k // 64)) * (2 ** (k % 64)) * channels))
        out.extend(order[at:at + n].split(per_chunk))
        at += n
    return out


class _WindowPool(torch.autograd.Function):
    """The separable RoIAlign operator, chunk by chunk, reading the feature maps in place.

    For each chunk ``(level, sel, b, rows, cols, ay, ax)`` of RoIs ``sel`` on map ``features[level]``:
    ``out[sel] = ay @ window @ ax^T`` with ``window[r] = f[b_r, :, rows_r, cols_r]`` gathered channels-last
    ``(Rc, Hc, Wc, C)``, ``ay (Rc, PH, Hc)`` and ``ax (Rc, PW, Wc)``. The operator is linear in the
    features, so the backward applies the transposed products and adds whole channel rows (``index_add``)
    into one channels-last gradient per level, returned as a permuted view. No window is kept for the
    backward, and the forward copies no whole feature map.
    """

    @staticmethod
    def forward(ctx, plan, num_rois: int, ph: int, pw: int, *features):
        c = features[0].shape[1]
        ctx.plan, ctx.shapes = plan, [f.shape for f in features]
        out = features[0].new_empty((num_rois, ph, pw, c)) if len(plan) != 1 or plan[0][1] is not None else None
        for level, sel, b, rows, cols, ay, ax in plan:
            hc, wc = ay.shape[2], ax.shape[2]
            window = features[level][b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (Rc, Hc, Wc, C)
            v = torch.bmm(ay, window.view(-1, hc, wc * c)).view(-1, ph, wc, c)  # rows first: (Rc, PH, Wc, C)
            part = torch.matmul(ax[:, None], v)  # then columns: (Rc, PH, PW, C)
            if out is None:
                return part
            out.index_copy_(0, sel, part)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grads: list[torch.Tensor | None] = [None] * len(ctx.shapes)
        c = grad_out.shape[-1]
        for level, sel, b, rows, cols, ay, ax in ctx.plan:
            if not ctx.needs_input_grad[4 + level]:
                continue
            n, _, h, w = ctx.shapes[level]
            if grads[level] is None:
                grads[level] = grad_out.new_zeros((n * h * w, c))
            g = grad_out if sel is None else grad_out.index_select(0, sel)
            gv = torch.matmul(ax.transpose(1, 2)[:, None], g)  # (Rc, PH, Wc, C)
            gw = torch.bmm(ay.transpose(1, 2), gv.reshape(gv.shape[0], gv.shape[1], -1))  # (Rc, Hc, Wc*C)
            index = (b[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
            grads[level].index_add_(0, index.reshape(-1), gw.view(-1, c))
        for level, gl in enumerate(grads):
            if gl is not None:
                n, _, h, w = ctx.shapes[level]
                grads[level] = gl.view(n, h, w, c).permute(0, 3, 1, 2)
        return (None, None, None, None, *grads)


def _pool(features: Sequence[torch.Tensor], scales: Sequence[float], level: torch.Tensor | None,
          rois: torch.Tensor, ph: int, pw: int, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """RoIAlign of each RoI from ``features[level[r]]``: ``(R, C, PH, PW)``.

    Each RoI reads the window of rows and columns its samples touch (padded to the largest window of its
    chunk) and the separable operator is applied as two batched matrix products (:class:`_WindowPool`).
    """
    c = features[0].shape[1]
    r = rois.shape[0]
    dev = rois.device
    # sample coordinates and weights in float64 / float32 even for half-precision maps (800 px in float16 is
    # half a pixel coarse); the interpolation matrices are cast to the maps' dtype for the products
    dtype = torch.float64 if features[0].dtype == torch.float64 else torch.float32
    hs = torch.tensor([f.shape[2] for f in features], device=dev)
    ws = torch.tensor([f.shape[3] for f in features], device=dev)
    rois = rois.detach().to(dtype)
    if level is None:
        scale = torch.full((r,), float(scales[0]), dtype=dtype, device=dev)
        h, w = hs[0].expand(r), ws[0].expand(r)
    else:
        scale = torch.tensor(list(scales), dtype=dtype, device=dev)[level]
        h, w = hs[level], ws[level]
    shift = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * scale - shift
    y0 = rois[:, 2] * scale - shift
    rw = rois[:, 3] * scale - shift - x0
    rh = rois[:, 4] * scale - shift - y0
    if not aligned:
        rw = rw.clamp(min=1.0)
        rh = rh.clamp(min=1.0)
    y_axis = _axis_weights(y0, rh, ph, sampling_ratio, h)
    x_axis = _axis_weights(x0, rw, pw, sampling_ratio, w)
    b_all = rois[:, 0].to(torch.int64)
    plan = []
    for lvl in range(len(features)):  # loop over pyramid levels, then over chunks of RoIs
        on_level = None if level is None else torch.nonzero(level == lvl, as_tuple=True)[0]
        if on_level is not None and on_level.numel() == 0:
            continue
        sub = (lambda t: t) if on_level is None else (lambda t, i=on_level: t.index_select(0, i))
        chunks = _chunks(sub(y_axis[-1]), sub(x_axis[-1]), c)
        for part in chunks if chunks is not None else [None]:
            sel = on_level if part is None else (part if on_level is None else on_level[part])
            def take(t, sel=sel):
                return t if sel is None else t.index_select(0, sel)
            ylow, yhigh, ywl, ywh, yf, ys = (take(t) for t in y_axis)
            xlow, xhigh, xwl, xwh, xf, xs = (take(t) for t in x_axis)
            hc, wc = int(ys.max()), int(xs.max())
            ay = _window_matrix(ylow, yhigh, ywl, ywh, yf, hc).to(features[0].dtype)  # (Rc, PH, Hc)
            ax = _window_matrix(xlow, xhigh, xwl, xwh, xf, wc).to(features[0].dtype)  # (Rc, PW, Wc)
            # window rows / columns, clamped to the map (clamped duplicates carry zero weight)
            rows = torch.minimum(yf[:, None] + torch.arange(hc, device=dev), hs[lvl] - 1)
            cols = torch.minimum(xf[:, None] + torch.arange(wc, device=dev), ws[lvl] - 1)
            plan.append((lvl, sel, take(b_all), rows, cols, ay, ax))
    return _WindowPool.apply(plan, r, ph, pw, *features).permute(0, 3, 1, 2).contiguous()


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
        ValueError: bad shapes, non-finite RoIs, image indices out of range, non-positive output size.

    Example:
        >>> out = roi_align(torch.rand(2, 8, 32, 32), torch.tensor([[0., 4, 4, 20, 12]]), 7, 0.5, 2)
    """
    rois = boxes_to_rois(rois)
    ph, pw = _check(input, rois, output_size)
    if rois.shape[0] == 0:
        return input.new_zeros((0, input.shape[1], ph, pw))
    return _pool([input], [spatial_scale], None, rois, ph, pw, sampling_ratio, aligned)


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
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
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
    min_level = round(-math.log2(scales[0]))
    max_level = round(-math.log2(scales[-1]))
    if max_level - min_level + 1 != len(features):
        raise ValueError(f"scales must be consecutive powers of 1/2, got {list(scales)}")
    for i, f in enumerate(features[1:], 1):
        check_shape(f"features[{i}]", f, (features[0].shape[0], features[0].shape[1], "H", "W"), dtype="float")
    ph, pw = _check(features[0], rois, (ph, pw))
    if rois.shape[0] == 0:
        return features[0].new_zeros((0, features[0].shape[1], ph, pw))
    levels = assign_boxes_to_levels(rois, min_level, max_level, canonical_box_size, canonical_level)
    return _pool(features, scales, levels, rois, ph, pw, sampling_ratio, True)


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
