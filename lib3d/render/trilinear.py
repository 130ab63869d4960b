"""Trilinear sampling of dense grids (``grid_sample``'s semantics), with a compiled CPU path.

``grid_sample`` samples a 3-D grid with ``align_corners=True`` and zero padding: a local coordinate
``u`` in [-1, 1] maps to the voxel index ``((u + 1) / 2) (n - 1)``, the value is the trilinear blend of the
8 surrounding voxels, and voxels outside the grid read 0. Both functions here compute exactly that, with
gradients to the grid only (the points are constants):

- ``trilinear_sample(grid, points)``: at ``(P, 3)`` local points;
- ``sample_grid_along_rays(grid, origins, directions, lengths, offset, scale)``: at the points of rays,
  ``local = (origins + lengths * directions + offset) / scale``, without materialising the points.

On CPU, PyTorch's ``grid_sampler_3d`` is a scalar loop parallelised over the batch only, and its
backward writes 8 corners x C channels to scattered addresses per point. Called with ``compiled=True``,
inputs of at least ``COMPILED_MIN_POINTS`` points on CPU take a path built with ``torch.compile``:

1. forward: one fused kernel computes each point's 8 corners and weights and gathers them from a
   channels-last, zero-padded copy of the grid (the points of rays are formed inside the kernel; the
   values are written channel-first, one tensor per channel group, e.g. densities and features);
2. backward, in chunks of ``_BACKWARD_CHUNK`` points that read the grid: one kernel forms the points, one
   forms each point's ``8 x C`` weighted gradients as a contiguous row, and an eager ``scatter_add_``
   adds the rows onto the padded channels-last gradient (with an even channel count viewed as complex
   numbers: one add moves two channels). Nothing is atomic, and the result is deterministic.

The chapter-5 step (10 cameras x 128 x 128 rays x 150 points, 16 million of them inside the volume, 4
channels) took 1.0 s forward and 1.7 to 2.4 s backward in ``grid_sampler_3d`` on 2 cores; the whole
step went from 4.5-5.3 s to 1.8 s (``jobs/bench/nerf.py``). The first call compiles for about 20 to 40 s
(PyTorch caches the kernels on disk). The path is the caller's choice (``compiled``, default False: a
config field of the jobs that use it), never an environment variable: if compiling fails (no C++
compiler) the call raises a ``RuntimeError`` that names the failure and says to pass ``compiled=False``.
On CUDA ``grid_sample`` is used whatever ``compiled`` says: its kernel is already fast there.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, is_tracing

__all__ = ["sample_grid_along_rays", "trilinear_sample"]

#: Inputs with at least this many points take the compiled CPU path (below it, compiling does not pay).
COMPILED_MIN_POINTS = 1 << 21

_BACKWARD_CHUNK = 1 << 16  # points per backward chunk (its rows: 8 MB for 4 channels)


# ----------------------------------------------------------------------------------------------------
# Kernels (traced by torch.compile; plain PyTorch, also correct eagerly)
# ----------------------------------------------------------------------------------------------------
def _corners(local: torch.Tensor, D: int, H: int, W: int):
    """Lower corner (padded index, in [0, n]) and fractions per axis of ``(P, 3)`` local points.

    Points whose 8 corners all lie in the zero padding (or that are not finite) get ``ok = 0`` and a
    clamped, valid corner, so that every index stays in bounds.
    """
    out, fr, ok = [], [], None
    for k, n in enumerate((W, H, D)):
        i = ((local[:, k] + 1) / 2) * (n - 1)  # grid_sample's align_corners=True source index
        i0 = torch.floor(i)
        f = i - i0
        good = (i0 >= -1) & (i0 <= n - 1)
        ok = good if ok is None else ok & good
        out.append(torch.where(good, i0, torch.full_like(i0, -1.0)).to(torch.int64) + 1)
        fr.append(torch.where(good, f, torch.zeros_like(f)))
    return out, fr, ok.to(local.dtype)


def _gather(volp: torch.Tensor, local: torch.Tensor, D: int, H: int, W: int) -> torch.Tensor:
    """Trilinear values ``(P, C)`` from the padded channels-last grid ``volp ((D+2)(H+2)(W+2), C)``."""
    (x0, y0, z0), (fx, fy, fz), ok = _corners(local, D, H, W)
    sy, sz = W + 2, (H + 2) * (W + 2)
    base = (z0 * (H + 2) + y0) * (W + 2) + x0
    gx, fx = (1 - fx)[:, None], fx[:, None]
    gy, fy = (1 - fy)[:, None], fy[:, None]
    gz, fz = ((1 - fz) * ok)[:, None], (fz * ok)[:, None]

    def row(o: int) -> torch.Tensor:
        return volp[base + o]

    lo = (row(0) * gx + row(1) * fx) * gy + (row(sy) * gx + row(sy + 1) * fx) * fy
    hi = (row(sz) * gx + row(sz + 1) * fx) * gy + (row(sz + sy) * gx + row(sz + sy + 1) * fx) * fy
    return lo * gz + hi * fz


def _ray_points_local(origins, directions, lengths, offset, scale) -> torch.Tensor:
    """``(R * S, 3)`` local points, computed as the eager path does: ``(o + t d + offset) / scale``."""
    world = origins[:, None, :] + lengths[:, :, None] * directions[:, None, :]
    return ((world + offset) / scale).reshape(-1, 3)


def _rays_forward(volp, origins, directions, lengths, offset, scale, D: int, H: int, W: int,
                  channels: tuple[int, ...]):
    """Values at the ray points, one channel-first ``(c_i, R, S)`` tensor per channel group."""
    local = _ray_points_local(origins, directions, lengths, offset, scale)
    vals = _gather(volp, local, D, H, W).t()
    R, S = lengths.shape
    return tuple(v.reshape(-1, R, S).contiguous() for v in torch.split(vals, list(channels), dim=0))


def _rays_inside(origins, directions, lengths, offset, scale, D: int, H: int, W: int) -> torch.Tensor:
    """``(R * S,)`` bool: the points that read at least one voxel of the grid."""
    local = _ray_points_local(origins, directions, lengths, offset, scale)
    return _corners(local, D, H, W)[2] > 0


def _rows(local: torch.Tensor, grad: torch.Tensor, D: int, H: int, W: int):
    """Padded index ``(P,)`` of each point's corner (0, 0, 0) and its rows ``(P, 8 C)`` of ``w_k g_c``
    (corners ordered dz, dy, dx)."""
    (x0, y0, z0), (fx, fy, fz), ok = _corners(local, D, H, W)
    base = (z0 * (H + 2) + y0) * (W + 2) + x0
    wx = torch.stack([1 - fx, fx], -1)
    wy = torch.stack([1 - fy, fy], -1)
    wz = torch.stack([(1 - fz) * ok, fz * ok], -1)
    w8 = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
    return base, (w8[:, :, None] * grad[:, None, :]).reshape(grad.shape[0], -1)


def _rays_points_at(idx, origins, directions, lengths, offset, scale) -> torch.Tensor:
    """``(P, 3)`` local points at the flat sample indices ``idx`` of the rays (as ``_ray_points_local``)."""
    r = idx // lengths.shape[1]
    return (origins[r] + lengths.reshape(-1)[idx][:, None] * directions[r] + offset) / scale


def _rows_at(local, idx, D: int, H: int, W: int, *grads):
    """``_rows`` with the gradients ``grads`` (one ``(R, S, c_i)`` per channel group) at flat indices ``idx``.

    The points come from a separate kernel: fused into this one, inductor recomputes them for each of
    the 8 C outputs of a point (4x slower).
    """
    grad = torch.cat([g.reshape(-1, g.shape[-1])[idx] for g in grads], dim=1)
    return _rows(local, grad, D, H, W)


_KERNEL_FUNCTIONS = {"gather": _gather, "rays_forward": _rays_forward, "rays_inside": _rays_inside, "rows": _rows,
                     "rays_points_at": _rays_points_at, "rows_at": _rows_at}


@functools.cache
def _compiled_kernel(name: str):
    """``torch.compile`` of a kernel above, made once per process on first use (a memo: it changes no
    result; ``torch.compile`` itself is lazy and automatic-dynamic, so changing sizes become symbolic)."""
    return torch.compile(_KERNEL_FUNCTIONS[name])


def _kernel(name: str):
    """The compiled kernel ``name``; a failure to compile or run it raises a ``RuntimeError`` naming the cause
    and the way out (``compiled=False``)."""
    compiled = _compiled_kernel(name)

    def call(*args):
        try:
            return compiled(*args)
        except Exception as err:
            raise RuntimeError(f"lib3d.render.trilinear: torch.compile of the trilinear kernel {name!r} failed "
                               f"({type(err).__name__}: {str(err)[:300]}); pass compiled=False (jobs.fit_volume: "
                               "--no-compiled-sampler) to use grid_sample") from err

    return call


def _compiled_enabled(grid: torch.Tensor, n_points: int, compiled: bool) -> bool:
    """Whether a call takes the compiled path: asked for, on CPU, float32/64, large enough, not traced."""
    return (compiled and grid.device.type == "cpu" and grid.dtype in (torch.float32, torch.float64)
            and n_points >= COMPILED_MIN_POINTS and not is_tracing())


def _padded_channels_last(grid: torch.Tensor) -> torch.Tensor:
    C = grid.shape[0]
    return F.pad(grid.detach().permute(1, 2, 3, 0), (0, 0, 1, 1, 1, 1, 1, 1)).reshape(-1, C)


def _accumulate(rows_of_chunk, n: int, shape, dtype, device) -> torch.Tensor:
    """Scatter the rows of all chunks onto the padded channels-last grid: gradient ``(C, D, H, W)``.

    ``scatter_add_`` is serial; a second thread scattering half of each chunk into its own copy, or
    overlapping the scatter with the next chunk's rows, measured slower (the adds are memory-bound). With
    an even channel count the rows are viewed as complex numbers: one add moves two channels.
    """
    C, D, H, W = shape
    sy, sz = W + 2, (H + 2) * (W + 2)
    paired = C % 2 == 0
    acc_dtype = (torch.complex64 if dtype == torch.float32 else torch.complex128) if paired else dtype
    per = C // 2 if paired else C
    offsets = torch.tensor([(dz * sz + dy * sy + dx) * per + j for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)
                            for j in range(per)], device=device)
    acc = torch.zeros((D + 2) * (H + 2) * (W + 2) * per, dtype=acc_dtype, device=device)
    for s in range(0, n, _BACKWARD_CHUNK):
        base, rows = rows_of_chunk(s, min(s + _BACKWARD_CHUNK, n))
        acc.scatter_add_(0, (base[:, None] * per + offsets).view(-1), rows.view(acc_dtype).reshape(-1))
    grad = acc.view(dtype).view(D + 2, H + 2, W + 2, C)[1:-1, 1:-1, 1:-1]
    return grad.permute(3, 0, 1, 2)


class _TrilinearPoints(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, local):
        _, D, H, W = grid.shape
        ctx.save_for_backward(local)
        ctx.grid_shape = tuple(grid.shape)
        return _kernel("gather")(_padded_channels_last(grid), local, D, H, W)

    @staticmethod
    def backward(ctx, grad):
        (local,) = ctx.saved_tensors
        _, D, H, W = ctx.grid_shape
        grad = grad.contiguous()
        rows = _kernel("rows")
        g = _accumulate(lambda s, e: rows(local[s:e], grad[s:e], D, H, W), local.shape[0], ctx.grid_shape,
                        grad.dtype, grad.device)
        return g, None


class _TrilinearRays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, origins, directions, lengths, offset, scale, channels):
        _, D, H, W = grid.shape
        ctx.save_for_backward(origins, directions, lengths, offset, scale)
        ctx.grid_shape = tuple(grid.shape)
        outs = _kernel("rays_forward")(_padded_channels_last(grid), origins, directions, lengths, offset, scale,
                                       D, H, W, channels)
        # channel-first storage seen as (R, S, c): reductions over S and elementwise ops downstream
        # run over contiguous memory, and no group is a slice of another (no zero-filled slice gradients)
        return tuple(o.permute(1, 2, 0) for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        o, d, t, offset, scale = ctx.saved_tensors
        _, D, H, W = ctx.grid_shape
        # (an unused group's gradient arrives as zeros: autograd materialises it)
        # only the samples that read the grid contribute: skip the rest before forming rows
        idx = _kernel("rays_inside")(o, d, t, offset, scale, D, H, W).nonzero().squeeze(1)
        points_at, rows_at = _kernel("rays_points_at"), _kernel("rows_at")

        def rows_of_chunk(s: int, e: int):
            return rows_at(points_at(idx[s:e], o, d, t, offset, scale), idx[s:e], D, H, W, *grads)

        g = _accumulate(rows_of_chunk, idx.shape[0], ctx.grid_shape, t.dtype, t.device)
        return g, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------
# grid_sample paths
# ----------------------------------------------------------------------------------------------------
def _grid_sample_split(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of one ``(C, D, H, W)`` grid at ``(P, 3)`` points -> ``(P, C)``.

    On CPU, ``grid_sample`` parallelises over the batch only, so the points are split into one batch
    entry per thread with the grid expanded (no copy).
    """
    n = max(1, min(torch.get_num_threads(), points.shape[0] // 65536)) if grid.device.type == "cpu" else 1
    P = points.shape[0]
    if n > 1:
        per = -(-P // n)
        if per * n != P:
            points = torch.cat([points, points.new_zeros((per * n - P, 3))])
        out = F.grid_sample(grid[None].expand(n, *grid.shape), points.view(n, per, 1, 1, 3), mode="bilinear",
                            padding_mode="zeros", align_corners=True)
        return out.view(n, grid.shape[0], per).permute(0, 2, 1).reshape(n * per, grid.shape[0])[:P]
    out = F.grid_sample(grid[None], points.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out.view(grid.shape[0], -1).t()


def _sample_points(grid: torch.Tensor, points: torch.Tensor, compiled: bool) -> torch.Tensor:
    if _compiled_enabled(grid, points.shape[0], compiled):
        return _TrilinearPoints.apply(grid, points.contiguous())
    return _grid_sample_split(grid, points.contiguous())


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------
def trilinear_sample(grid: torch.Tensor, points: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Trilinear interpolation of a dense grid at local coordinates (``grid_sample`` semantics).

    ``align_corners=True``, zero padding outside [-1, 1]: ``points[p] = (x, y, z)`` with x along W,
    y along H, z along D. Points are treated as constants (no gradient); points that read only the zero
    padding are skipped, and the rest go to ``grid_sample`` or, with ``compiled``, to the compiled CPU path
    (module docstring).

    Args:
        grid: ``(C, D, H, W)`` float.
        points: ``(P, 3)`` float local coordinates.
        compiled: use the compiled CPU kernels for at least ``COMPILED_MIN_POINTS`` points on CPU.

    Returns:
        ``(P, C)`` float interpolated values.
    """
    check_shape("grid", grid, (None, None, None, None), dtype="float")
    check_shape("points", points, (None, 3), dtype="float")
    points = points.detach()
    if is_tracing():
        return _grid_sample_split(grid, points)
    # Points farther than one voxel outside [-1, 1] read only zero padding: skip them exactly.
    size = torch.tensor(grid.shape[1:][::-1], dtype=points.dtype, device=points.device)
    margin = 1.0 + 2.0 / (size - 1).clamp_min(1)
    inside = (points.abs() < margin).all(dim=-1)
    idx = inside.nonzero().squeeze(1)
    if idx.shape[0] > 0.8 * points.shape[0]:
        return _sample_points(grid, points, compiled)
    vals = _sample_points(grid, points.index_select(0, idx), compiled)
    return vals.new_zeros((points.shape[0], grid.shape[0])).index_copy(0, idx, vals)


def sample_grid_along_rays(grid: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                           lengths: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
                           channels: tuple[int, ...] | None = None, compiled: bool = False
                           ) -> tuple[torch.Tensor, ...]:
    """Trilinear samples of one grid at the points of rays (``grid_sample`` semantics, zero padding).

    The point ``s`` of ray ``r`` is ``world = origins[r] + lengths[r, s] * directions[r]`` (as
    ``ray_bundle_to_ray_points``) in local coordinates ``(world + offset) / scale``. The gradient reaches
    ``grid`` only.

    Args:
        grid: ``(C, D, H, W)`` float.
        origins: ``(R, 3)`` float.
        directions: ``(R, 3)`` float.
        lengths: ``(R, S)`` float.
        offset: ``(3,)`` float, added to world points.
        scale: ``(3,)`` float, divides the offset points.
        channels: sizes of the channel groups to return separately (summing to ``C``); default one group.
        compiled: use the compiled CPU kernels for at least ``COMPILED_MIN_POINTS`` points on CPU.

    Returns:
        one ``(R, S, c_i)`` float tensor per channel group (e.g. densities and features).
    """
    sizes = check_shapes(origins=(origins, ("R", 3)), directions=(directions, ("R", 3)),
                         lengths=(lengths, ("R", "S")), offset=(offset, (3,)), scale=(scale, (3,)), dtype="float")
    check_shape("grid", grid, (None, None, None, None), dtype="float")
    channels = (grid.shape[0],) if channels is None else tuple(int(c) for c in channels)
    if sum(channels) != grid.shape[0] or min(channels) < 1:
        raise ValueError(f"channels {channels} must be positive and sum to the grid's {grid.shape[0]} channels")
    args = [x.detach().to(grid.dtype).contiguous() for x in (origins, directions, lengths, offset, scale)]
    if _compiled_enabled(grid, sizes["R"] * sizes["S"], compiled):
        return _TrilinearRays.apply(grid, *args, channels)
    local = _ray_points_local(*args)
    vals = trilinear_sample(grid, local, compiled=compiled).view(sizes["R"], sizes["S"], grid.shape[0])
    # split, not slices: its backward concatenates the gradients instead of zero-filling one per slice
    return tuple(torch.split(vals, list(channels), dim=-1))
