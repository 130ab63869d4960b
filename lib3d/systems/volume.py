"""The book's chapter 5 (``jobs.fit_volume``): fit a dense voxel volume of density and colour logits to posed
renders with PyTorch3D's ``VolumeRenderer``, and the pieces of the book's recipe that chapter 6's NeRF
reuses (its Huber loss on colour and silhouette, its learning-rate schedule, its turntable).

Each step renders ``batch_size`` random training cameras (``VolumeRenderer(NDCMultinomialRaysampler(H x W,
n_pts_per_ray points, depths min_depth..volume_extent_world), EmissionAbsorptionRaymarcher())``) and takes
one Adam step on ``book_huber_loss``; the learning rate drops to a tenth at 75% of the steps
(``book_lr_schedule``). Views with ``index % 8 == 0`` are held out for the evaluation (PSNR).

Dimension names: N views, B cameras of a step, H/W image size, T turntable frames.
"""

from __future__ import annotations

from typing import Any

import torch

from lib3d import runtime
from lib3d._checks import check_tensor
from lib3d.data.posed_images import (
    PosedImages,
    camera_subset,
    check_data_spec,
    load_posed_images,
    split_indices,
)
from lib3d.fields.losses import huber
from lib3d.runtime import Evaluation, TrainState, WorkerContext

__all__ = ["VolumeSystem", "book_huber_loss", "book_lr_schedule", "check_data", "heldout_grid", "load_system_data",
           "turntable", "volume_model"]


def book_huber_loss(rgb: torch.Tensor, silhouette: torch.Tensor, images: torch.Tensor, silhouettes: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The book's loss of chapters 5 and 6: ``mean |huber(rgb, images)| + mean |huber(silhouette,
    silhouettes)|`` (``lib3d.fields.huber``, scaling 0.1).

    Args:
        rgb: ``(..., 3)`` rendered colours; ``images``: their targets, same shape.
        silhouette: ``(...)`` rendered opacities; ``silhouettes``: their targets, same shape.

    Returns:
        ``(loss, color_err, silhouette_err)`` scalars.
    """
    for name, t in (("rgb", rgb), ("silhouette", silhouette), ("images", images), ("silhouettes", silhouettes)):
        check_tensor(name, t, dtype="float")
    if rgb.shape != images.shape or silhouette.shape != silhouettes.shape:
        raise ValueError(f"rgb {tuple(rgb.shape)} / images {tuple(images.shape)} and silhouette "
                         f"{tuple(silhouette.shape)} / silhouettes {tuple(silhouettes.shape)} must match")
    color_err = huber(rgb, images).abs().mean()
    sil_err = huber(silhouette, silhouettes).abs().mean()
    return color_err + sil_err, color_err, sil_err


def book_lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, at: float = 0.75, factor: float = 0.1
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    """The book's schedule: the learning rate times ``factor`` from step ``round(at * total_steps)`` on
    (step it once after each optimizer step; its state is JSON, so ``TrainState.schedulers`` resumes it)."""
    milestone = round(at * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor if step >= milestone else 1.0)


def load_system_data(config: Any, device: torch.device, data: PosedImages | None = None) -> PosedImages:
    """``config.data`` loaded on ``device`` (``load_posed_images(config.data, config.image_size,
    config.num_views)``), or the given ``data`` moved there."""
    if data is None:
        return load_posed_images(config.data, config.image_size, config.num_views, device=device)
    sil = None if data.silhouettes is None else data.silhouettes.to(device)
    return PosedImages(data.cameras.to(device), data.images.to(device), sil, data.background)


def check_data(config: Any) -> None:
    """``check_data_spec(config.data)`` as a ``runtime.UserError`` (one line, exit status 2)."""
    try:
        check_data_spec(config.data)
    except (FileNotFoundError, ValueError) as e:
        raise runtime.UserError(str(e)) from None


def turntable(cameras_like, num_frames: int, device: torch.device):
    """``num_frames`` cameras around the origin at the distance of ``cameras_like[0]``, with its field of view
    when it has one (``lib3d.data.renders.view_cameras`` without the repeated end frame)."""
    from lib3d.data.renders import view_cameras

    dist = float(cameras_like.get_camera_center()[0].norm())
    kw = {"fov": cameras_like.fov.reshape(-1)[:1].expand(num_frames).to(device)} if hasattr(cameras_like, "fov") else {}
    return view_cameras(num_frames, 180.0, dist=dist, device=device, endpoint=False, **kw)


def heldout_grid(renders: torch.Tensor, targets: torch.Tensor) -> Any:
    """Renders ``(N, H, W, 3)`` above their targets, tiled into one image (``lib3d.io.images.image_grid``)."""
    from lib3d.io.images import image_grid

    return image_grid(torch.cat([renders, targets]).detach().cpu().clamp(0, 1), rows=2)


def volume_model(config: Any, height: int, width: int):
    """The book's ``VolumeModel`` of ``config`` (``FitVolumeConfig``) for ``height x width`` images."""
    from lib3d.fields.voxel import VolumeModel
    from lib3d.render import EmissionAbsorptionRaymarcher, NDCMultinomialRaysampler, VolumeRenderer

    rs = NDCMultinomialRaysampler(image_width=width, image_height=height, n_pts_per_ray=config.n_pts_per_ray,
                                  min_depth=config.min_depth, max_depth=config.volume_extent_world)
    renderer = VolumeRenderer(rs, EmissionAbsorptionRaymarcher(), compiled=config.compiled_sampler)
    return VolumeModel(renderer, [config.volume_size] * 3, config.volume_extent_world / config.volume_size)


class PosedImageSystem:
    """What the systems trained on posed images share: data given directly (tests, notebooks) or loaded from
    ``config.data`` (checked in the driver by ``check_config``), and ``config.steps`` steps.

    Args:
        data: posed images to train on instead of loading ``config.data``.
    """

    def __init__(self, data: PosedImages | None = None) -> None:
        self.data = data

    def check_config(self, config) -> None:
        if self.data is None:
            check_data(config)

    def num_steps(self, config) -> int:
        return config.steps


class VolumeSystem(PosedImageSystem):
    """``runtime.train``'s contract for chapter 5 (config: ``configs.fit_volume.FitVolumeConfig``).

    Args:
        data: posed images to fit instead of loading ``config.data`` (tests, notebooks).

    With several workers each takes ``batch_size // world_size`` cameras of its own per step and the
    gradients are averaged (``runtime.all_reduce_gradients``).
    """

    name = "fit_volume"

    def num_steps(self, config) -> int:
        return config.iterations

    def init(self, config, ctx: WorkerContext) -> TrainState:
        data = load_system_data(config, ctx.device, self.data)
        if data.silhouettes is None:
            raise runtime.UserError(f"--data {config.data}: fit_volume needs silhouettes (alpha), the data has none")
        train_idx, test_idx = split_indices(data.images.shape[0])
        model = volume_model(config, *data.images.shape[1:3]).to(ctx.device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        return TrainState(modules={"model": model}, optimizers={"model": opt},
                          schedulers={"lr": book_lr_schedule(opt, config.iterations)},
                          data={"config": config, "ctx": ctx, "data": data, "train": train_idx, "test": test_idx,
                                "per_worker": max(1, config.batch_size // ctx.world_size)})

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        data, ctx = d["data"], d["ctx"]
        pick = torch.randperm(len(d["train"]), generator=generator, device=ctx.device)[:d["per_worker"]]
        sel = d["train"][pick.cpu()]
        out = state.modules["model"](camera_subset(data.cameras, sel))
        loss, color_err, sil_err = book_huber_loss(out[..., :3], out[..., 3], data.images[sel], data.silhouettes[sel])
        opt = state.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        runtime.all_reduce_gradients(state.modules["model"])
        opt.step()
        state.schedulers["lr"].step()
        return {"loss": loss.detach(), "loss_color": color_err.detach(), "loss_silhouette": sil_err.detach()}

    @torch.no_grad()
    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        from lib3d.metrics import psnr

        d = state.data
        config, data, model = d["config"], d["data"], state.modules["model"]
        renders = torch.cat([model(camera_subset(data.cameras, i.reshape(1)))[..., :3] for i in d["test"]])
        renders = renders.clamp(0, 1)  # one camera at a time: bounded memory
        targets = data.images[d["test"]]
        p = psnr(renders, targets)
        gifs = {}
        if config.rotating_frames > 0:
            cams = turntable(data.cameras, config.rotating_frames, d["ctx"].device)
            gifs["rotating"] = torch.cat([model(cams[i:i + 1])[..., :3] for i in range(config.rotating_frames)]
                                         ).clamp(0, 1).cpu()
        return Evaluation(metrics={"data": config.data, "iterations": config.iterations,
                                   "world_size": d["ctx"].world_size, "test_psnr": float(p.mean()),
                                   "test_psnr_per_view": [float(x) for x in p]},
                          images={"heldout": heldout_grid(renders, targets)}, gifs=gifs)

