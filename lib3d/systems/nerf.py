"""The book's chapter 6 (``jobs.nerf``): a radiance field trained on posed images, two ways.

- ``GridNerfSystem`` (method ``grid``, the fast default): DVGO-style density + feature grids with a tiny
  MLP (``lib3d.fields.GridRadianceField``) rendered with empty-space skipping (``render_grid_field``). The
  box and the first occupancy grid come from the visual hull of the training silhouettes
  (``lib3d.fields.occupancy``); each step renders ``batch_rays`` random training pixels and takes one Adam
  step on ``MSE(rgb) + w_sil MSE(opacity, silhouette) + w_tv TV(density)``; at the steps of ``upsample_at``
  the grids grow (coarse-to-fine, fresh optimizer), every ``prune_every`` steps the occupancy is pruned,
  and the learning rates decay exponentially to ``lr_final_ratio`` (``grid_lr_scale``: a function of the
  step, so nothing to resume).
- ``BookNerfSystem`` (method ``book``): the book's ``NeuralRadianceField`` MLP rendered by
  ``ImplicitRenderer(MonteCarloRaysampler, EmissionAbsorptionRaymarcher)`` on ``batch_cameras`` random
  cameras, the book's Huber loss against the images sampled at the rays, Adam with the book's schedule
  (``lib3d.systems.volume.book_lr_schedule``).

Both hold out the views with ``index % 8 == 0`` and evaluate held-out PSNR / SSIM, a grid of held-out
renders above their targets and a turntable GIF. With several workers each draws its own rays (the step
generator is per rank) and the gradients are averaged (``runtime.all_reduce_gradients``).

Dimension names: N views, H/W image size, R rays, B cameras of a step, T turntable frames.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F

from lib3d import runtime
from lib3d.data.posed_images import PosedImages, camera_subset, split_indices
from lib3d.fields.losses import total_variation
from lib3d.fields.nerf import BookNeuralRadianceField
from lib3d.fields.occupancy import hull_box, visual_hull, voxel_resolution
from lib3d.fields.voxel import GridRadianceField, render_grid_field, update_occupancy, upsample_grid_field
from lib3d.render import (
    EmissionAbsorptionRaymarcher,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    emission_absorption,
    image_rays,
    sample_images_at_mc_locs,
)
from lib3d.runtime import Evaluation, TrainState, WorkerContext
from lib3d.systems.volume import (
    PosedImageSystem,
    book_huber_loss,
    book_lr_schedule,
    heldout_grid,
    load_system_data,
    turntable,
)

__all__ = [
    "BookNerfSystem",
    "GridNerfSystem",
    "grid_level",
    "grid_lr_scale",
    "grid_optimizer",
    "make_grid_field",
    "nerf_system",
    "render_book_images",
    "render_grid_images",
]


# ------------------------------------------------------------------------------------------- the grid field
def make_grid_field(data: PosedImages, train_idx: torch.Tensor, cfg) -> tuple[GridRadianceField, float]:
    """The fast field of a dataset at its starting size: box and occupancy from the visual hull.

    Args:
        data: the dataset.
        train_idx: training views (only these are carved).
        cfg: a ``configs.nerf.GridConfig``.

    Returns:
        ``(field, step)`` with the marching step of the starting resolution.
    """
    aabb = torch.tensor(cfg.aabb, dtype=torch.float32).reshape(2, 3)
    dev = data.images.device
    cams = camera_subset(data.cameras, train_idx)
    carve = data.silhouettes is not None and cfg.carve
    if carve:
        sil = data.silhouettes[train_idx]
        res = voxel_resolution(aabb, 96 ** 3)
        aabb = hull_box(visual_hull(cams, sil, aabb.to(dev), res).cpu(), aabb)
    d_res = voxel_resolution(aabb, cfg.density_voxels_start)
    c_res = voxel_resolution(aabb, cfg.color_voxels_start)
    step = float((aabb[1] - aabb[0]).max()) / max(d_res) * cfg.step_ratio
    occ = visual_hull(cams, data.silhouettes[train_idx], aabb.to(dev), d_res).cpu() if carve else None
    field = GridRadianceField(aabb, d_res, c_res, cfg.n_features, cfg.hidden, cfg.n_dir_freqs, cfg.alpha_init,
                              step, occupancy=occ).to(dev)
    return field, step


def grid_optimizer(field: GridRadianceField, cfg, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """Adam with DVGO's learning rates: ``lr_grid`` for the grids (group 0), ``lr_mlp`` for the MLP (group 1)."""
    groups = [{"params": [field.density, field.features], "lr": cfg.lr_grid * lr_scale}]
    if field.mlp is not None:
        groups.append({"params": list(field.mlp.parameters()), "lr": cfg.lr_mlp * lr_scale})
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def grid_level(cfg, step: int) -> int:
    """The coarse-to-fine level of step ``step``: how many of ``cfg.upsample_at`` it has reached."""
    return sum(1 for s in cfg.upsample_at if step >= s)


def grid_lr_scale(cfg, step: int, total_steps: int) -> float:
    """``lr_final_ratio ** (step / total_steps)``: the exponential decay of both learning rates."""
    return cfg.lr_final_ratio ** (step / max(total_steps, 1))


def _grow(field: GridRadianceField, cfg, level: int) -> tuple[GridRadianceField, float]:
    """The field resampled to the grid sizes of ``level`` (geometric between the start and final sizes)."""
    n = len(cfg.upsample_at)
    frac = level / n if n else 1.0
    dv = cfg.density_voxels_start * (cfg.density_voxels / cfg.density_voxels_start) ** frac
    cv = cfg.color_voxels_start * (cfg.color_voxels / cfg.color_voxels_start) ** frac
    aabb = field.aabb.cpu()
    d_res, c_res = voxel_resolution(aabb, int(dv)), voxel_resolution(aabb, int(cv))
    return upsample_grid_field(field, d_res, c_res), float((aabb[1] - aabb[0]).max()) / max(d_res) * cfg.step_ratio


@torch.no_grad()
def render_grid_images(field: GridRadianceField, cameras, height: int, width: int, step: float,
                       background: float = 0.0, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Full images ``(N, H, W, 3)`` and opacities ``(N, H, W)`` of the fast field (``chunk`` rays at a time)."""
    o, d = image_rays(cameras, height, width)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb, op = [], []
    for s in range(0, o.shape[0], chunk):  # loop over chunks of rays (bounded memory)
        out = render_grid_field(field, o[s:s + chunk], d[s:s + chunk], step, background=background)
        rgb.append(out.rgb)
        op.append(out.opacity)
    n = o.shape[0] // (height * width)
    return torch.cat(rgb).view(n, height, width, 3).clamp(0, 1), torch.cat(op).view(n, height, width)


def _resume_step(name: str, config) -> int:
    """The step of the checkpoint ``runtime.train`` will resume from (0 for a fresh run): the grid field is
    built at that step's size, so that the checkpoint's tensors fit it."""
    from lib3d.runtime.checkpoint import checkpoint_step, latest_checkpoint

    if not config.run.resume or config.run.name is None:
        return 0
    return max(checkpoint_step(latest_checkpoint(runtime.run_directory(name, config) / "checkpoints")), 0)


def _prepare(config, ctx: WorkerContext, data: PosedImages | None):
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(runtime.derive_seed(config.run.seed, "nerf-init"))  # the same initial field on every rank
    data = load_system_data(config, ctx.device, data)
    train_idx, test_idx = split_indices(data.images.shape[0])
    return data, train_idx, test_idx


def _evaluate(state: TrainState, render, rays_per_step: int) -> Evaluation:
    """Held-out PSNR / SSIM of ``render(cameras, H, W) -> (N, H, W, 3)``, the held-out grid and the turntable."""
    from lib3d.metrics import psnr, ssim

    d = state.data
    config, data = d["config"], d["data"]
    H, W = data.images.shape[1:3]
    renders = render(camera_subset(data.cameras, d["test"]), H, W)
    targets = data.images[d["test"]]
    p, s = psnr(renders, targets), ssim(renders, targets)
    history = state.extra.setdefault("history", [])
    history.append({"step": state.extra.get("steps_done", 0), "seconds": time.time() - d["t0"],
                    "psnr": float(p.mean()), "ssim": float(s.mean())})
    gifs = {}
    if config.turntable_frames > 0:
        cams = turntable(data.cameras, config.turntable_frames, d["ctx"].device)
        gifs["turntable"] = torch.cat([render(cams[i:i + 8], H, W)
                                       for i in range(0, config.turntable_frames, 8)]).cpu()
    return Evaluation(metrics={"data": config.data, "method": config.method, "world_size": d["ctx"].world_size,
                               "test_psnr": float(p.mean()), "test_ssim": float(s.mean()),
                               "test_psnr_per_view": [float(x) for x in p], "rays_per_step": rays_per_step,
                               "history": list(history)},
                      images={"heldout": heldout_grid(renders, targets)}, gifs=gifs)


class GridNerfSystem(PosedImageSystem):
    """``runtime.train``'s contract for the fast grid NeRF (config: ``configs.nerf.NerfConfig``, method grid).

    Args:
        data: posed images to train on instead of loading ``config.data`` (tests, notebooks).
    """

    name = "nerf"

    def init(self, config, ctx: WorkerContext) -> TrainState:
        data, train_idx, test_idx = _prepare(config, ctx, self.data)
        cfg = dataclasses.replace(config.grid, batch_rays=max(1, config.grid.batch_rays // ctx.world_size))
        field, step_size = make_grid_field(data, train_idx, cfg)
        start = _resume_step(self.name, config)
        level = grid_level(cfg, start - 1) if start > 0 else 0  # the grids of the last trained step
        if level > 0:
            field, step_size = _grow(field, cfg, level)
        H, W = data.images.shape[1:3]
        o, dirs = image_rays(camera_subset(data.cameras, train_idx), H, W)
        sil = data.silhouettes[train_idx].reshape(-1) if data.silhouettes is not None else None
        opt = grid_optimizer(field, cfg, grid_lr_scale(cfg, start, config.steps))
        return TrainState(modules={"field": field}, optimizers={"field": opt},
                          data={"config": config, "cfg": cfg, "ctx": ctx, "data": data, "train": train_idx,
                                "test": test_idx, "origins": o.reshape(-1, 3), "directions": dirs.reshape(-1, 3),
                                "colors": data.images[train_idx].reshape(-1, 3), "silhouettes": sil,
                                "step_size": step_size, "level": level, "t0": time.time()})

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        cfg, config = d["cfg"], d["config"]
        level = grid_level(cfg, step)
        if level != d["level"]:
            field, d["step_size"] = _grow(state.modules["field"], cfg, level)
            state.modules["field"] = field
            state.optimizers["field"] = grid_optimizer(field, cfg, grid_lr_scale(cfg, step, config.steps))
            d["level"] = level
        field, opt = state.modules["field"], state.optimizers["field"]
        if cfg.prune_every > 0 and step > 0 and step % cfg.prune_every == 0:
            update_occupancy(field, d["step_size"], cfg.prune_alpha)
        scale = grid_lr_scale(cfg, step, config.steps)
        for group, base in zip(opt.param_groups, (cfg.lr_grid, cfg.lr_mlp)):
            group["lr"] = base * scale
        origins = d["origins"]
        idx = torch.randint(0, origins.shape[0], (cfg.batch_rays,), generator=generator, device=origins.device)
        out = render_grid_field(field, origins[idx], d["directions"][idx], d["step_size"], stratified=True,
                                generator=generator, background=d["data"].background,
                                color_threshold=cfg.color_threshold if step >= cfg.color_threshold_start else 0.0)
        loss_rgb = F.mse_loss(out.rgb, d["colors"][idx])
        loss = loss_rgb
        if d["silhouettes"] is not None and cfg.silhouette_weight > 0:
            loss = loss + cfg.silhouette_weight * F.mse_loss(out.opacity[:, 0], d["silhouettes"][idx])
        if cfg.tv_weight > 0 and step < cfg.tv_until:
            loss = loss + cfg.tv_weight * total_variation(field.density[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        runtime.all_reduce_gradients(field)
        opt.step()
        state.extra["steps_done"] = step + 1
        return {"loss": loss.detach(), "loss_rgb": loss_rgb.detach(),
                "psnr_batch": -10 * torch.log10(loss_rgb.detach().clamp_min(1e-10)),
                "samples_per_ray": out.num_samples / cfg.batch_rays}

    @torch.no_grad()
    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        d = state.data
        state.extra["steps_done"] = step

        def render(cams, H, W):
            return render_grid_images(state.modules["field"], cams, H, W, d["step_size"], d["data"].background)[0]

        return _evaluate(state, render, d["config"].grid.batch_rays)


# -------------------------------------------------------------------------------------- the book's NeRF
@torch.no_grad()
def render_book_images(nerf, cameras, height: int, width: int, n_pts_per_ray: int, min_depth: float,
                       max_depth: float, n_batches: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Full images ``(N, H, W, 3)`` and silhouettes ``(N, H, W)`` of the book's NeRF (a camera at a time,
    each in ``n_batches`` chunks of rays, as the book renders)."""
    rs = NDCMultinomialRaysampler(image_width=width, image_height=height, n_pts_per_ray=n_pts_per_ray,
                                  min_depth=min_depth, max_depth=max_depth)
    imgs, sils = [], []
    for n in range(cameras.R.shape[0]):  # loop over cameras (bounded memory)
        dens, cols = nerf.batched_forward(rs(cameras[n]), n_batches=n_batches)
        out = emission_absorption(dens, cols)
        imgs.append(out[..., :3])
        sils.append(out[..., 3])
    return torch.cat(imgs).clamp(0, 1), torch.cat(sils)


class BookNerfSystem(PosedImageSystem):
    """``runtime.train``'s contract for the book's NeRF (config: ``configs.nerf.NerfConfig``, method book).

    Args:
        data: posed images to train on instead of loading ``config.data`` (tests, notebooks).
    """

    name = "nerf"

    def init(self, config, ctx: WorkerContext) -> TrainState:
        data, train_idx, test_idx = _prepare(config, ctx, self.data)
        if data.silhouettes is None:
            raise runtime.UserError(f"--data {config.data}: the book's NeRF needs silhouettes (alpha)")
        b = config.book
        nerf = BookNeuralRadianceField(b.n_harmonic_functions, b.n_hidden_neurons).to(ctx.device)
        mc = MonteCarloRaysampler(-1.0, 1.0, -1.0, 1.0, n_rays_per_image=b.n_rays_per_image,
                                  n_pts_per_ray=b.n_pts_per_ray, min_depth=b.min_depth, max_depth=b.max_depth)
        opt = torch.optim.Adam(nerf.parameters(), lr=b.lr)
        return TrainState(modules={"nerf": nerf}, optimizers={"nerf": opt},
                          schedulers={"lr": book_lr_schedule(opt, config.steps)},
                          data={"config": config, "ctx": ctx, "data": data, "train": train_idx, "test": test_idx,
                                "renderer": ImplicitRenderer(mc, EmissionAbsorptionRaymarcher()),
                                "per_worker": max(1, b.batch_cameras // ctx.world_size), "t0": time.time()})

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        data, nerf, opt = d["data"], state.modules["nerf"], state.optimizers["nerf"]
        pick = torch.randperm(len(d["train"]), generator=generator, device=d["ctx"].device)[:d["per_worker"]]
        sel = d["train"][pick.cpu()]
        rendered, rays = d["renderer"](cameras=camera_subset(data.cameras, sel), volumetric_function=nerf,
                                       generator=generator)
        rgb_at = sample_images_at_mc_locs(data.images[sel], rays.xys)
        sil_at = sample_images_at_mc_locs(data.silhouettes[sel][..., None], rays.xys)
        loss, color_err, sil_err = book_huber_loss(rendered[..., :3], rendered[..., 3], rgb_at, sil_at[..., 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        runtime.all_reduce_gradients(nerf)
        opt.step()
        state.schedulers["lr"].step()
        mse = ((rendered[..., :3] - rgb_at) ** 2).mean().detach()
        return {"loss": loss.detach(), "loss_rgb": color_err.detach(), "loss_silhouette": sil_err.detach(),
                "psnr_batch": -10 * torch.log10(mse.clamp_min(1e-10))}

    @torch.no_grad()
    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        b = state.data["config"].book
        state.extra["steps_done"] = step

        def render(cams, H, W):
            return render_book_images(state.modules["nerf"], cams, H, W, b.n_pts_per_ray, b.min_depth, b.max_depth)[0]

        return _evaluate(state, render, b.batch_cameras * b.n_rays_per_image)


def nerf_system(config, data: PosedImages | None = None) -> GridNerfSystem | BookNerfSystem:
    """The system of ``config.method``: ``GridNerfSystem`` ("grid") or ``BookNerfSystem`` ("book")."""
    if config.method == "grid":
        return GridNerfSystem(data)
    if config.method == "book":
        return BookNerfSystem(data)
    raise runtime.UserError(f"--method must be 'grid' or 'book', got {config.method!r}")

