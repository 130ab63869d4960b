"""GIRAFFE on the systems platform (``jobs.giraffe``; config ``configs.giraffe.GiraffeConfig``; book ch. 7).

Modules: ``generator`` (``GiraffeGenerator``), ``discriminator`` (``lib3d.nn.DCGANDiscriminator``) and
``generator_ema`` (the EMA copy used for evaluation and rendering); optimizers ``generator`` and
``discriminator`` (RMSprop). One step is ``lib3d.synthesis.giraffe_train.train_iteration``.

Data parallelism: the global batch of real images of step ``s`` is drawn from (run seed, s) and each rank
takes its shard; every rank draws its own fakes (its step generator) and the gradients of G and D are
averaged over the ranks after each backward (``runtime.all_reduce_gradients``): with mean losses, W workers
with B / W images each follow the gradients of one worker with B images.

Evaluation (rank 0, G_ema): FID / KID against held-out real images with the domain feature extractor
(embedded data: a small CNN trained on the scenes' labels; ``fid_domain``), and with the standard Inception
features when ``eval.inception_weights`` is given (``fid_inception``); the same for the untrained generator
(rebuilt from the run's init seed) and the real-vs-real floor (training vs held-out images); the
controllability figures of ``lib3d.synthesis.giraffe_eval.controllability``; a sample grid and a GIF of an
object's horizontal translation.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from lib3d import runtime
from lib3d.runtime import Evaluation, TrainState, WorkerContext, derive_seed

__all__ = ["GiraffeSystem", "build", "build_generator", "evaluate_run", "feature_extractor", "translation_frames"]


def build_generator(model) -> torch.nn.Module:
    """A ``GiraffeGenerator`` from a ``configs.giraffe.ModelConfig``."""
    from lib3d.synthesis.giraffe import BoxRanges, CameraRanges, GiraffeGenerator

    m = model
    return GiraffeGenerator(
        z_dim=m.z_dim, z_dim_bg=m.z_dim_bg, img_size=m.img_size, feature_dim=m.feature_dim,
        hidden_size=m.hidden_size, n_blocks=m.n_blocks, skips=m.skips, bg_hidden_size=m.bg_hidden_size,
        bg_n_blocks=m.bg_n_blocks, bg_downscale=m.bg_downscale, resolution_vol=m.resolution_vol,
        n_ray_samples=m.n_ray_samples,
        camera=CameraRanges(tuple(m.range_u), tuple(m.range_v), tuple(m.range_radius), m.fov, tuple(m.depth_range)),
        boxes=BoxRanges(m.n_boxes, tuple(m.scale_min), tuple(m.scale_max), tuple(m.translation_min),
                        tuple(m.translation_max), tuple(m.rotation_range), True, m.object_on_plane, m.z_level_plane),
        bg_rotation_range=tuple(m.bg_rotation_range), object_count_probs=m.object_count_probs,
        object_count_min=m.object_count_min)


def build(config) -> torch.nn.Module:
    """The generator of a ``GiraffeConfig``: GIRAFFE, or the 2D GAN baseline."""
    if config.generator == "gan2d":
        from lib3d.synthesis.giraffe_train import Generator2D

        return Generator2D(config.model.z_dim, config.model.img_size)
    return build_generator(config.model)


def _real_data(config, device):
    """``(train, holdout, scenes)``: train is a ``(N, 3, S, S)`` tensor or an ``ImageFolder``; holdout a tensor."""
    from lib3d.data.clevr import load_clevr
    from lib3d.data.image_folder import ImageFolder, parse_images_spec

    size = config.model.img_size
    if config.data == "clevr":
        scenes = load_clevr(config.n_scenes, size, max(1, config.max_objects), 1, config.data_seed,
                            cache_dir=config.cache_dir, device=device)
        images = scenes.image_tensor()
        n_hold = max(2, round(config.holdout_fraction * len(images)))
        return images[:-n_hold].to(device), images[-n_hold:], scenes
    folder = ImageFolder(parse_images_spec(config.data), size, crop=config.crop, center_crop=config.center_crop)
    n_hold = max(2, min(config.eval.n_samples, round(config.holdout_fraction * len(folder))))
    hold = folder.sample(torch.arange(len(folder) - n_hold, len(folder)), torch.Generator().manual_seed(0))
    return folder, hold, None


def feature_extractor(config, scenes, device):
    """The domain feature extractor (embedded data) or None."""
    from lib3d.synthesis.giraffe_eval import load_domain_features

    if scenes is None:
        return None
    tag = f"n{config.n_scenes}_s{config.model.img_size}_k{config.max_objects}_d{config.data_seed}"
    hold = max(2, round(config.holdout_fraction * config.n_scenes))
    train = type(scenes)(*(x[:-hold] for x in scenes))
    return load_domain_features(train, max(1, config.max_objects), steps=config.eval.domain_feature_steps,
                                seed=config.data_seed, cache_dir=config.cache_dir, tag=tag).to(device)


@torch.no_grad()
def _features(fn, images: torch.Tensor, device, batch: int = 128) -> torch.Tensor:
    return torch.cat([fn(images[i:i + batch].to(device)).double().cpu() for i in range(0, len(images), batch)])


@torch.no_grad()
def _samples(generator, n: int, seed: int, batch: int = 64) -> torch.Tensor:
    rng = torch.Generator(device=generator._device()).manual_seed(seed)
    return torch.cat([generator.sample(min(batch, n - i), rng, mode="eval").clamp(0, 1).cpu()
                      for i in range(0, n, batch)])


@torch.no_grad()
def translation_frames(generator, n_scenes: int = 4, n_steps: int = 12, seed: int = 0,
                       temperature: float = 0.65) -> torch.Tensor:
    """``(T, H, W * n_scenes, 3)`` frames of object 0 moving along the box's second translation axis."""
    from lib3d.synthesis.giraffe import boxes_from_values

    g, dev = generator, generator._device()
    rng = torch.Generator(device=dev).manual_seed(seed)
    lat, cams, bg = g.sample_latents(n_scenes, rng, temperature), g.sample_cameras(n_scenes, rng), \
        g.sample_bg_rotation(n_scenes, rng)
    t0 = torch.rand(n_scenes, g.n_boxes, 3, generator=rng, device=dev)
    half = torch.full((n_scenes, g.n_boxes, 3), 0.5, device=dev)
    rot = torch.full((n_scenes, g.n_boxes), 0.5, device=dev)
    frames = []
    for v in torch.linspace(0, 1, n_steps).tolist():  # loop over the T frames
        t = t0.clone()
        t[:, 0, 0], t[:, 0, 1] = 0.5, v
        img = g(lat, cams, boxes_from_values(g.boxes, half, t, rot), bg).clamp(0, 1)  # (N, 3, S, S)
        frames.append(img.permute(2, 0, 3, 1).reshape(img.shape[2], -1, 3).cpu())
    return torch.stack(frames)


def _grid(images: torch.Tensor, rows: int) -> torch.Tensor:
    """``(N, 3, S, S)`` -> one ``(rows S, cols S, 3)`` grid."""
    n, _, s, _ = images.shape
    cols = math.ceil(n / rows)
    pad = torch.ones(rows * cols - n, 3, s, s)
    x = torch.cat((images, pad)).reshape(rows, cols, 3, s, s)
    return x.permute(0, 3, 1, 4, 2).reshape(rows * s, cols * s, 3)


class GiraffeSystem:
    """``runtime.train``'s contract for GIRAFFE (see the module docstring)."""

    name = "giraffe"

    def check_config(self, config) -> None:
        """User mistakes stop here with one line (data spec, sizes, batch)."""
        from lib3d.data.image_folder import ImageFolder, ImageFolderError, parse_images_spec

        m = config.model
        if m.img_size % m.resolution_vol or (m.img_size // m.resolution_vol) & (m.img_size // m.resolution_vol - 1):
            raise runtime.UserError(f"model.img_size ({m.img_size}) must be a power-of-two multiple of "
                                    f"model.resolution_vol ({m.resolution_vol})")
        if config.batch_size < max(1, config.ray.num_workers):
            raise runtime.UserError(f"batch_size ({config.batch_size}) must be at least the number of workers")
        if config.data != "clevr":
            try:
                ImageFolder(parse_images_spec(config.data), m.img_size, crop=config.crop)
            except ImageFolderError as e:
                raise runtime.UserError(str(e)) from None
        if config.eval.inception_weights is not None:
            import os

            if not os.path.isfile(config.eval.inception_weights):
                raise runtime.UserError(f"eval.inception_weights: no such file {config.eval.inception_weights!r}")

    def num_steps(self, config) -> int:
        return config.steps

    def init(self, config, ctx: WorkerContext) -> TrainState:
        from lib3d.nn import DCGANDiscriminator, ema_copy

        if config.threads > 0 and ctx.device.type == "cpu":
            torch.set_num_threads(config.threads)
        train, hold, scenes = _real_data(config, ctx.device)
        torch.manual_seed(derive_seed(config.run.seed, "giraffe-init"))
        gen = build(config).to(ctx.device)
        disc = DCGANDiscriminator(3, config.model.img_size, final_channels=config.disc_final_channels).to(ctx.device)
        ema = ema_copy(gen)
        opt_g = torch.optim.RMSprop(gen.parameters(), lr=config.lr_g)
        opt_d = torch.optim.RMSprop(disc.parameters(), lr=config.lr_d)
        data = {"config": config, "ctx": ctx, "train": train, "holdout": hold, "scenes": scenes,
                "shard": runtime.shard_indices(config.batch_size, ctx.rank, ctx.world_size)}
        return TrainState(modules={"generator": gen, "discriminator": disc, "generator_ema": ema},
                          optimizers={"generator": opt_g, "discriminator": opt_d}, data=data)

    def _real_batch(self, state: TrainState, step: int, generator: torch.Generator) -> torch.Tensor:
        d = state.data
        config, train = d["config"], d["train"]
        n = len(train)
        g = torch.Generator().manual_seed(derive_seed(config.run.seed, "batch", step))
        idx = torch.randint(n, (config.batch_size,), generator=g)[d["shard"].start:d["shard"].stop]
        if isinstance(train, torch.Tensor):
            flip = (torch.rand(config.batch_size, generator=g) < 0.5)[d["shard"].start:d["shard"].stop]
            real = train[idx.to(train.device)]
            return torch.where(flip.to(train.device)[:, None, None, None], real.flip(-1), real)
        return train.sample(idx, g).to(d["ctx"].device)

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        from lib3d.synthesis.giraffe_train import train_iteration

        config = state.data["config"]
        real = self._real_batch(state, step, generator)
        return train_iteration(state.modules["generator"], state.modules["generator_ema"],
                               state.modules["discriminator"], state.optimizers["generator"],
                               state.optimizers["discriminator"], real, generator, r1_gamma=config.r1_gamma,
                               ema_decay=config.ema_decay, reduce_gradients=runtime.all_reduce_gradients)

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        from lib3d.metrics import fid_from_features, kernel_inception_distance
        from lib3d.synthesis.giraffe_eval import controllability

        d = state.data
        config, dev = d["config"], d["ctx"].device
        ema = state.modules["generator_ema"].eval()
        n = config.eval.n_samples
        hold = d["holdout"]
        train = d["train"]
        metrics: dict[str, float] = {"step": step}

        # feature extractors: the domain CNN (embedded data) and Inception when its weights are given
        extractors = {}
        if "domain_net" not in d:
            d["domain_net"] = feature_extractor(config, d["scenes"], dev)
        if d["domain_net"] is not None:
            extractors["domain"] = d["domain_net"].features
        if config.eval.inception_weights is not None:
            if "inception" not in d:
                from lib3d.nn import FIDInceptionV3
                from lib3d.nn.weights import load_inception

                net = FIDInceptionV3()
                load_inception(config.eval.inception_weights, net)
                d["inception"] = net.to(dev).eval()
            extractors["inception"] = d["inception"]

        fakes = _samples(ema, n, derive_seed(config.run.seed, "eval-samples"))
        if isinstance(train, torch.Tensor):
            ref = train[:min(len(train), len(hold))].cpu()
        else:
            ref = train.sample(torch.arange(min(len(train) - len(hold), len(hold))), torch.Generator().manual_seed(1))
        if "untrained" not in d:  # the untrained generator, rebuilt from the run's init seed
            torch.manual_seed(derive_seed(config.run.seed, "giraffe-init"))
            d["untrained"] = _samples(build(config).to(dev).eval(), n,
                                      derive_seed(config.run.seed, "eval-samples"))
        kid_rng = torch.Generator().manual_seed(0)
        for name, fn in extractors.items():
            f_hold = _features(fn, hold, dev)
            f_fake = _features(fn, fakes, dev)
            metrics[f"fid_{name}"] = fid_from_features(f_fake, f_hold)
            metrics[f"kid_{name}"] = kernel_inception_distance(f_fake, f_hold, 50, 1000, kid_rng)[0]
            key = f"fid_{name}_untrained"
            if key not in d:
                f_un = _features(fn, d["untrained"], dev)
                d[key] = fid_from_features(f_un, f_hold)
                d[f"fid_{name}_real_floor"] = fid_from_features(_features(fn, ref, dev), f_hold)
            metrics[key] = d[key]
            metrics[f"fid_{name}_real_floor"] = d[f"fid_{name}_real_floor"]
            metrics[f"fid_{name}_improvement"] = d[key] / max(metrics[f"fid_{name}"], 1e-9)
        metrics["n_fake"], metrics["n_real_holdout"] = len(fakes), len(hold)
        gifs = {}
        if config.generator == "giraffe":
            rng = torch.Generator(device=dev).manual_seed(derive_seed(config.run.seed, "controllability"))
            metrics.update({f"control/{k}": v for k, v in controllability(
                ema, config.eval.controllability_scenes, 8, rng, config.eval.temperature).items()})
            gifs["translation_horizontal"] = translation_frames(ema, 4, 12, derive_seed(config.run.seed, "gif"),
                                                                config.eval.temperature).numpy()

        grid_rng = torch.Generator(device=dev).manual_seed(derive_seed(config.run.seed, "grid"))
        with torch.no_grad():
            grid = ema.sample(16, grid_rng, mode="eval", temperature=config.eval.temperature).clamp(0, 1).cpu()
        images = {"samples_ema": _grid(grid, 4).numpy(), "real_holdout": _grid(hold[:16], 4).numpy()}
        return Evaluation(metrics=metrics, images=images, gifs=gifs)


def evaluate_run(config) -> dict:
    """Evaluation alone: load the newest checkpoint of the run ``config`` names and evaluate it again (rank 0
    of this process); writes ``<run>/eval_step_<step>.json`` and the images / GIFs to ``<run>/media/eval_*``.

    Raises:
        runtime.UserError: the run has no checkpoint.
    """
    import json

    from lib3d.io import save_gif, save_image
    from lib3d.runtime import load_train_state

    system = GiraffeSystem()
    run_dir = runtime.run_directory(system.name, config)
    if runtime.latest_checkpoint(run_dir / "checkpoints") is None:
        raise runtime.UserError(f"{run_dir}: no checkpoint to evaluate (train the run first)")
    ctx = runtime.worker_context(config.ray.use_gpu)
    state = system.init(config, ctx)
    ck = runtime.load_checkpoint(run_dir / "checkpoints", map_location=ctx.device)
    load_train_state(state, ck)
    ev = system.evaluate(state, ck.step)
    metrics = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in ev.metrics.items()}
    (run_dir / f"eval_step_{ck.step}.json").write_text(json.dumps(metrics, indent=1) + "\n")
    for name, img in ev.images.items():
        save_image(run_dir / "media" / f"eval_{name}.png", img)
    for name, frames in ev.gifs.items():
        save_gif(run_dir / "media" / f"eval_{name}.gif", frames)
    print(f"[giraffe] evaluated {ck.path}: {json.dumps(metrics)}", flush=True)
    return metrics


def with_overrides(config, **fields):
    """``dataclasses.replace`` for nested GIRAFFE configs (``model__img_size=32`` style keys)."""
    top, nested = {}, {}
    for k, v in fields.items():
        if "__" in k:
            a, b = k.split("__", 1)
            nested.setdefault(a, {})[b] = v
        else:
            top[k] = v
    for a, kv in nested.items():
        top[a] = dataclasses.replace(getattr(config, a), **kv)
    return dataclasses.replace(config, **top)
