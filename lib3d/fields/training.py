"""Training science for ``jobs.nerf`` and ``jobs.fit_volume``: posed-image datasets, rays, the fast grid
NeRF and the book's NeRF step, rendering of full images (dimension names in ``lib3d.fields``; images are
``(N, H, W, 3)``).

The job scripts stay thin: they build a config, call these functions, and log through ``lib3d.runtime``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape
from lib3d.fields.losses import huber, total_variation
from lib3d.fields.voxel import GridRadianceField, render_grid_field, update_occupancy, upsample_grid_field
from lib3d.render.volumetric import NDCMultinomialRaysampler, sample_images_at_mc_locs

__all__ = [
    "GridTrainer",
    "all_reduce_grads",
    "PosedImages",
    "book_nerf_step",
    "camera_subset",
    "grid_optimizer",
    "image_rays",
    "load_posed_images",
    "make_grid_field",
    "render_book_images",
    "render_grid_images",
    "split_indices",
    "turntable_cameras",
    "visual_hull",
    "voxel_resolution",
]


class PosedImages(NamedTuple):
    """Images with their cameras.

    Attributes:
        cameras: ``N`` cameras (``FoVPerspectiveCameras`` or ``PerspectiveCameras``).
        images: ``(N, H, W, 3)`` float RGB in [0, 1] (composited on ``background``).
        silhouettes: ``(N, H, W)`` float in [0, 1], or None.
        background: the background colour the images were composited on (0 black, 1 white).
    """

    cameras: Any
    images: torch.Tensor
    silhouettes: torch.Tensor | None
    background: float


def load_posed_images(source: str, image_size: int = 128, num_views: int = 40, device=None) -> PosedImages:
    """Load a dataset by name.

    Args:
        source: ``"embedded"`` (the procedural default scene rendered with ``generate_renders``: 40 views
            around it), ``"cow"`` (the golden cow dataset of PyTorch3D renders), or ``"blender:<dir>"``
            (a NeRF Blender-format dataset, all splits concatenated: train, val, test).
        image_size: rendered size for ``"embedded"``; target size (downscale) for ``"blender:"``.
        num_views: views for ``"embedded"``.
        device: device of the tensors.

    Raises:
        ValueError: unknown source, or the cow dataset is missing.
    """
    if source == "embedded":
        from lib3d.data.renders import generate_renders

        v = generate_renders(num_views=num_views, image_size=image_size, device=device)
        return PosedImages(v.cameras, v.images, v.silhouettes, 0.0)
    if source == "cow":
        from lib3d.data.renders import load_cow_renders_golden

        v = load_cow_renders_golden(device=device)
        if v is None:
            raise ValueError("data 'cow' needs ../shared/golden/cow_renders.safetensors beside the project")
        return PosedImages(v.cameras, v.images, v.silhouettes, 0.0)
    if source.startswith("blender:"):
        from lib3d.data.blender import load_blender

        parts = [load_blender(source[len("blender:"):], split, image_size=image_size, device=device)
                 for split in ("train", "val", "test")]
        parts = [p for p in parts if p is not None]
        from lib3d.geometry import FoVPerspectiveCameras

        R = torch.cat([p.cameras.R for p in parts])
        T = torch.cat([p.cameras.T for p in parts])
        fov = torch.cat([p.cameras.fov.reshape(-1) for p in parts])
        cams = FoVPerspectiveCameras(R=R, T=T, fov=fov, znear=0.1, zfar=100.0)
        sil = torch.cat([p.alpha for p in parts])
        return PosedImages(cams, torch.cat([p.images for p in parts]), sil, parts[0].background)
    raise ValueError(f"source must be 'embedded', 'cow' or 'blender:<dir>', got {source!r}")


def split_indices(n: int, every: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` view indices: test are the views with ``index % every == 0``."""
    idx = torch.arange(n)
    return idx[idx % every != 0], idx[idx % every == 0]


def camera_subset(cameras, idx: torch.Tensor):
    """The cameras at ``idx`` (works for any lib3d camera class via ``__getitem__``)."""
    return cameras[idx.tolist()] if hasattr(cameras, "__getitem__") else cameras


def image_rays(cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre of every camera (``NDCMultinomialRaysampler`` conventions).

    Returns:
        ``(origins (N, H, W, 3), directions (N, H, W, 3))`` with ``images[n, i, j]`` seen along
        ``directions[n, i, j]`` (view-space z of the directions is 1 for perspective cameras).
    """
    rs = NDCMultinomialRaysampler(image_width=width, image_height=height, n_pts_per_ray=0, min_depth=0.1,
                                  max_depth=1.0)
    b = rs(cameras)
    return b.origins, b.directions


@torch.no_grad()
def visual_hull(cameras, silhouettes: torch.Tensor, aabb: torch.Tensor, res, threshold: float = 0.05,
                dilate_pixels: int = 2) -> torch.Tensor:
    """Voxels (centres) that project inside every (dilated) silhouette: a conservative occupancy grid.

    Args:
        cameras: ``N`` cameras.
        silhouettes: ``(N, H, W)`` float.
        aabb: ``(2, 3)`` world box.
        res: ``(D, H, W)`` grid size.
        threshold: silhouette value above which a pixel is foreground.
        dilate_pixels: safety margin in pixels.

    Returns:
        ``(D, H, W)`` bool (x along W, y along H, z along D).
    """
    check_shape("silhouettes", silhouettes, ("N", None, None), dtype="float")
    D, H, W = res
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
    for n in range(silhouettes.shape[0]):  # loop over views
        ndc = cameras[n].transform_points(pts[None])[0]
        xy = ndc[:, :2] * torch.tensor([s / w, s / h], device=pts.device)  # to grid_sample's [-1, 1] range
        v = F.grid_sample(sil[n:n + 1], -xy.view(1, -1, 1, 2), align_corners=False, padding_mode="border")
        keep &= v.view(-1) > 0.5
    return keep.view(D, H, W)


def voxel_resolution(aabb: torch.Tensor, num_voxels: int) -> tuple[int, int, int]:
    """``(D, H, W)`` of cubic voxels filling ``aabb`` with about ``num_voxels`` voxels."""
    ext = (aabb[1] - aabb[0]).tolist()
    vox = (ext[0] * ext[1] * ext[2] / num_voxels) ** (1.0 / 3.0)
    return tuple(max(2, int(round(e / vox))) for e in (ext[2], ext[1], ext[0]))


def make_grid_field(data: PosedImages, train_idx: torch.Tensor, cfg) -> tuple[GridRadianceField, float]:
    """Build the fast field from a dataset: box and occupancy from the visual hull of the silhouettes.

    Args:
        data: the dataset.
        train_idx: training views (only these are carved).
        cfg: a ``configs.nerf.GridConfig``.

    Returns:
        ``(field, step)`` with the marching step for the initial resolution.
    """
    aabb = torch.tensor(cfg.aabb, dtype=torch.float32).reshape(2, 3)
    dev = data.images.device
    cams = camera_subset(data.cameras, train_idx)
    if data.silhouettes is not None and cfg.carve:
        sil = data.silhouettes[train_idx]
        res = voxel_resolution(aabb, 96 ** 3)
        hull = visual_hull(cams, sil, aabb.to(dev), res)
        if bool(hull.any()):
            nz = hull.nonzero()
            lo = torch.stack([nz[:, 2].min(), nz[:, 1].min(), nz[:, 0].min()]).float()
            hi = torch.stack([nz[:, 2].max(), nz[:, 1].max(), nz[:, 0].max()]).float()
            sz = torch.tensor([res[2], res[1], res[0]], dtype=torch.float32) - 1
            vox = (aabb[1] - aabb[0]) / sz
            aabb = torch.stack([aabb[0] + (lo.cpu() - 2) * vox, aabb[0] + (hi.cpu() + 2) * vox])
    d_res = voxel_resolution(aabb, cfg.density_voxels_start)
    c_res = voxel_resolution(aabb, cfg.color_voxels_start)
    step = float((aabb[1] - aabb[0]).max()) / max(d_res) * cfg.step_ratio
    occ = None
    if data.silhouettes is not None and cfg.carve:
        occ = visual_hull(cams, data.silhouettes[train_idx], aabb.to(dev), d_res)
    field = GridRadianceField(aabb, d_res, c_res, cfg.n_features, cfg.hidden, cfg.n_dir_freqs, cfg.alpha_init,
                              step, occupancy=occ.cpu() if occ is not None else None).to(dev)
    return field, step


def grid_optimizer(field: GridRadianceField, cfg, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """Adam with DVGO's learning rates: ``lr_grid`` for the grids, ``lr_mlp`` for the MLP."""
    groups = [{"params": [field.density, field.features], "lr": cfg.lr_grid * lr_scale}]
    if field.mlp is not None:
        groups.append({"params": list(field.mlp.parameters()), "lr": cfg.lr_mlp * lr_scale})
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def all_reduce_grads(params) -> None:
    """Average the gradients of ``params`` over a ``torch.distributed`` group (no-op without one).

    One flattened ``all_reduce`` per call: the data-parallel step of DDP for code that does not run its
    forward through a ``DistributedDataParallel`` wrapper (the fields are called through render functions).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p)
        off += n


class GridTrainer:
    """Mutable training state of the fast grid NeRF: the field, its optimizer and the schedule.

    ``step(i, generator)`` draws ``cfg.batch_rays`` random training rays (pixels of random training views),
    renders them with ``render_grid_field`` and takes one Adam step on ``MSE(rgb) + w_sil MSE(opacity,
    silhouette) + w_tv TV(density)``; at the steps of ``cfg.upsample_at`` the grids are upsampled
    (coarse-to-fine, fresh optimizer) and every ``cfg.prune_every`` steps the occupancy grid is pruned.
    Learning rates decay exponentially to ``cfg.lr_final_ratio`` over ``total_steps``.
    """

    def __init__(self, data: PosedImages, train_idx: torch.Tensor, cfg, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.data = data
        cams = camera_subset(data.cameras, train_idx)
        H, W = data.images.shape[1:3]
        o, d = image_rays(cams, H, W)
        self.origins = o.reshape(-1, 3)
        self.directions = d.reshape(-1, 3)
        self.colors = data.images[train_idx].reshape(-1, 3)
        self.sil = data.silhouettes[train_idx].reshape(-1) if data.silhouettes is not None else None
        self.field, self.step_size = make_grid_field(data, train_idx, cfg)
        self.optimizer = grid_optimizer(self.field, cfg)
        self.level = 0

    def _target_level(self, i: int) -> int:
        return sum(1 for s in self.cfg.upsample_at if i >= s)

    def _apply_level(self, level: int) -> None:
        """Grow the grids to ``level`` (geometric interpolation between the start and final sizes)."""
        cfg = self.cfg
        n = len(cfg.upsample_at)
        frac = level / n if n else 1.0
        dv = cfg.density_voxels_start * (cfg.density_voxels / cfg.density_voxels_start) ** frac
        cv = cfg.color_voxels_start * (cfg.color_voxels / cfg.color_voxels_start) ** frac
        aabb = self.field.aabb.cpu()
        d_res, c_res = voxel_resolution(aabb, int(dv)), voxel_resolution(aabb, int(cv))
        self.field = upsample_grid_field(self.field, d_res, c_res)
        self.step_size = float((aabb[1] - aabb[0]).max()) / max(d_res) * cfg.step_ratio
        self.optimizer = grid_optimizer(self.field, cfg, self.lr_scale(self._step))
        self.level = level

    def lr_scale(self, i: int) -> float:
        return self.cfg.lr_final_ratio ** (i / max(self.total_steps, 1))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.field.state_dict().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        """Restore the field (grids of the checkpoint's sizes) at ``step``."""
        self._step = step
        lvl = self._target_level(step - 1) if step > 0 else 0  # the grids of the last trained step
        if lvl != self.level:
            self._apply_level(lvl)
        self.field.load_state_dict(tensors)

    _step = 0

    def step(self, i: int, generator: torch.Generator | None = None) -> dict[str, float]:
        cfg = self.cfg
        self._step = i
        lvl = self._target_level(i)
        if lvl != self.level:
            self._apply_level(lvl)
        if cfg.prune_every > 0 and i > 0 and i % cfg.prune_every == 0:
            update_occupancy(self.field, self.step_size, cfg.prune_alpha)
        for g in self.optimizer.param_groups:
            base = cfg.lr_grid if g["params"][0] is self.field.density else cfg.lr_mlp
            g["lr"] = base * self.lr_scale(i)
        dev = self.origins.device
        idx = torch.randint(0, self.origins.shape[0], (cfg.batch_rays,), generator=generator, device=dev)
        thr = cfg.color_threshold if i >= cfg.color_threshold_start else 0.0
        out = render_grid_field(self.field, self.origins[idx], self.directions[idx], self.step_size,
                                stratified=True, generator=generator, background=self.data.background,
                                color_threshold=thr)
        target = self.colors[idx]
        loss_rgb = F.mse_loss(out.rgb, target)
        loss = loss_rgb
        if self.sil is not None and cfg.silhouette_weight > 0:
            loss = loss + cfg.silhouette_weight * F.mse_loss(out.opacity[:, 0], self.sil[idx])
        if cfg.tv_weight > 0 and i < cfg.tv_until:
            loss = loss + cfg.tv_weight * total_variation(self.field.density[0])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_grads([p for g in self.optimizer.param_groups for p in g["params"]])
        self.optimizer.step()
        return {"loss": loss.item(), "loss_rgb": loss_rgb.item(),
                "psnr_batch": -10 * math.log10(max(loss_rgb.item(), 1e-10)),
                "samples_per_ray": out.num_samples / cfg.batch_rays}


@torch.no_grad()
def render_grid_images(field: GridRadianceField, cameras, height: int, width: int, step: float,
                       background: float = 0.0, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Full images ``(N, H, W, 3)`` and opacities ``(N, H, W)`` of the fast field (chunks of rays)."""
    o, d = image_rays(cameras, height, width)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb, op = [], []
    for s in range(0, o.shape[0], chunk):  # loop over chunks of rays
        out = render_grid_field(field, o[s:s + chunk], d[s:s + chunk], step, background=background)
        rgb.append(out.rgb)
        op.append(out.opacity)
    n = o.shape[0] // (height * width)
    return (torch.cat(rgb).view(n, height, width, 3).clamp(0, 1), torch.cat(op).view(n, height, width))


def book_nerf_step(nerf, renderer_mc, optimizer, cameras, images: torch.Tensor, silhouettes: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, float]:
    """One step of the book's chapter-6 NeRF training (its loss, exactly).

    ``loss = mean |huber(rendered_rgb, rgb_at_rays)| + mean |huber(rendered_silhouette, silhouette_at_rays)|``
    on Monte-Carlo rays (the target images are sampled at the rays' NDC locations).

    Args:
        nerf: ``BookNeuralRadianceField``.
        renderer_mc: ``ImplicitRenderer(MonteCarloRaysampler(...), EmissionAbsorptionRaymarcher())``.
        optimizer: its optimizer.
        cameras: the batch of cameras.
        images: ``(B, H, W, 3)`` targets; silhouettes ``(B, H, W)``.
        generator: random generator of the rays.
    """
    rendered, rays = renderer_mc(cameras=cameras, volumetric_function=nerf, generator=generator)
    rgb, sil = rendered[..., :3], rendered[..., 3:]
    sil_at = sample_images_at_mc_locs(silhouettes[..., None], rays.xys)
    rgb_at = sample_images_at_mc_locs(images, rays.xys)
    sil_err = huber(sil, sil_at).abs().mean()
    color_err = huber(rgb, rgb_at).abs().mean()
    loss = color_err + sil_err
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    all_reduce_grads([p for g in optimizer.param_groups for p in g["params"]])
    optimizer.step()
    mse = float(((rgb - rgb_at) ** 2).mean())
    return {"loss": float(loss), "loss_rgb": color_err.item(), "loss_silhouette": sil_err.item(),
            "psnr_batch": -10 * math.log10(max(mse, 1e-10))}


@torch.no_grad()
def render_book_images(nerf, cameras, height: int, width: int, n_pts_per_ray: int, min_depth: float,
                       max_depth: float, n_batches: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Full images ``(N, H, W, 3)`` and silhouettes ``(N, H, W)`` of the book's NeRF (one camera at a time)."""
    from lib3d.render.volumetric import emission_absorption

    rs = NDCMultinomialRaysampler(image_width=width, image_height=height, n_pts_per_ray=n_pts_per_ray,
                                  min_depth=min_depth, max_depth=max_depth)
    imgs, sils = [], []
    for n in range(cameras.R.shape[0]):  # loop over cameras
        cam = cameras[n]
        b = rs(cam)
        dens, cols = nerf.batched_forward(b, n_batches=n_batches)
        out = emission_absorption(dens, cols)
        imgs.append(out[..., :3])
        sils.append(out[..., 3])
    return torch.cat(imgs).clamp(0, 1), torch.cat(sils)


def turntable_cameras(cameras_like, n_frames: int, dist: float = 2.7, elev: float = 0.0, device=None):
    """``n_frames`` ``FoVPerspectiveCameras`` on a circle around the origin (for the turntable GIF)."""
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform

    azim = torch.linspace(-180.0, 180.0, n_frames + 1)[:-1]
    R, T = look_at_view_transform(dist=dist, elev=elev, azim=azim)
    kw = {}
    if hasattr(cameras_like, "fov"):
        kw["fov"] = cameras_like.fov.reshape(-1)[:1].expand(n_frames)
    return FoVPerspectiveCameras(R=R.to(device), T=T.to(device), **kw)
