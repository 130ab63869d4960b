"""SynSin on the systems platform (``jobs.synsin``): training recipe, evaluation and baselines.

One step draws a global batch of (source, target, K, RT) pairs from the procedural indoor dataset (a
function of (seed, step) only, so 1 worker and N workers see the same pairs; each rank takes its shard),
runs the generator, and minimises ``l1 |I - I_gt| + vgg * perceptual + gan * (hinge + fm * feature
matching)``; with the GAN, the multiscale discriminator then takes one hinge step on the same images.
Gradients are averaged over workers with ``runtime.all_reduce_gradients`` (the discriminator also runs
inside the generator's step, so DDP wrappers are not used), and ``runtime.train`` averages batch-norm statistics after
each step so every rank holds the same networks. Batch norm sees each rank's shard, so N workers match one
worker's gradients up to the batch statistics (computed per shard, as DDP without SyncBatchNorm does).

Evaluation (rank 0) on held-out scenes (frame t -> t + eval_gap of every test scene) reports PSNR and SSIM
of SynSin and of three baselines on the same pairs: the identity (the source image as the prediction),
splatting the RGB with the true depth (no refinement) and splatting the RGB with SynSin's predicted depth
(SynSin without its refinement network); and the depth network's agreement with the true depth
(scale-invariant log RMSE and Spearman rank correlation), although it never saw depth.

Images are ``(N, 3, H, W)`` in [0, 1] at the data boundary and in [-1, 1] inside the networks. Dimension
names: N pairs, H/W image size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from lib3d import runtime
from lib3d.data.indoor import ViewPairs, fixed_pairs, load_indoor, sample_pairs
from lib3d.runtime import Evaluation, TrainState, WorkerContext, derive_seed
from lib3d.synthesis.synsin import (
    SynSinDiscriminator,
    SynSinGenerator,
    SynSinModelConfig,
    discriminator_loss,
    feature_matching_loss,
    generator_hinge_loss,
    reproject_points,
    splat_features,
)

__all__ = ["SYNSIN_VGG19_TAPS", "SYNSIN_VGG19_WEIGHTS", "LoadedGenerator", "SynSinPredictor", "SynSinSystem",
           "book_pose", "depth_agreement", "evaluate_pairs", "forward_walk_poses", "load_generator",
           "load_synsin_vgg", "perceptual_loss", "rgb_splat"]

SYNSIN_VGG19_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
"""The official perceptual loss's VGG19 slices end at these layers."""
SYNSIN_VGG19_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
"""The official weights of those layers."""


def load_synsin_vgg(path: str, device=None):
    """The official perceptual loss's frozen VGG19 (torchvision weights at ``path``; inputs in [-1, 1] are fed
    unnormalised, as the official code does)."""
    from lib3d.nn.vgg import VGGFeatures
    from lib3d.nn.weights import load_vgg

    vgg = VGGFeatures(depth=19, taps=SYNSIN_VGG19_TAPS, normalize_input=False, requires_grad=False)
    load_vgg(path, vgg)
    return vgg.to(device).eval()


def perceptual_loss(vgg, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SynSin's content loss: ``sum_l w_l L1(vgg_l(pred), vgg_l(target))`` (``SYNSIN_VGG19_WEIGHTS``).

    Args:
        vgg: ``load_synsin_vgg``'s network.
        pred, target: (N, 3, H, W) float in [-1, 1].
    """
    fp, ft = vgg(pred), vgg(target)
    return sum(w * F.l1_loss(fp[k], ft[k]) for w, k in zip(SYNSIN_VGG19_WEIGHTS, SYNSIN_VGG19_TAPS))


def rgb_splat(image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, RT: torch.Tensor,
              config: SynSinModelConfig) -> torch.Tensor:
    """Splat the source RGB into the target view with a depth map and no refinement (a baseline).

    Args:
        image: (N, 3, H, W) float in [0, 1].
        depth: (N, 1, H, W) float.
        K, RT: (N, 3, 3), (N, 4, 4) float.
        config: the splatter's settings (radius, K, tau, accumulation, pixel grid).

    Returns:
        (N, 3, H, W) float in [0, 1]; black where nothing lands.
    """
    N, _, H, W = image.shape
    pts = reproject_points(depth, K, RT, config.align_corners)
    return splat_features(pts, image.reshape(N, 3, H * W), (H, W), config.radius_px, config.points_per_pixel,
                          config.tau, config.rad_pow, config.accumulation).clamp(0, 1)


def depth_agreement(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image agreement of a predicted depth map with the true one, blind to the unknown scale.

    - ``si_log_rmse``: Eigen et al.'s scale-invariant error ``sqrt(mean(d^2) - mean(d)^2)``, ``d = log p - log t``;
    - ``spearman``: the rank correlation of the two maps.

    Args:
        pred, true: (N, 1, H, W) float positive depths (non-finite true pixels are ignored).

    Returns:
        ``{"si_log_rmse": (N,), "spearman": (N,)}``.
    """
    out_si, out_sp = [], []
    for p, t in zip(pred.flatten(1), true.flatten(1)):  # per image: masks differ
        ok = torch.isfinite(t) & (t > 0) & (p > 0)
        d = p[ok].log() - t[ok].log()
        out_si.append((d.pow(2).mean() - d.mean().pow(2)).clamp_min(0).sqrt())
        rp = torch.argsort(torch.argsort(p[ok])).float()
        rt = torch.argsort(torch.argsort(t[ok])).float()
        rp, rt = rp - rp.mean(), rt - rt.mean()
        out_sp.append((rp * rt).sum() / (rp.norm() * rt.norm()).clamp_min(1e-12))
    return {"si_log_rmse": torch.stack(out_si), "spearman": torch.stack(out_sp)}


def _hwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


@torch.no_grad()
def evaluate_pairs(generator: SynSinGenerator, pairs: ViewPairs, batch_size: int = 16, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """SynSin and the baselines on every pair: per-pair PSNR / SSIM and depth agreement.

    Returns:
        ``{"psnr/<method>": (N,), "ssim/<method>": (N,), "depth/si_log_rmse": (N,), "depth/spearman": (N,),
        "prediction": (N, 3, H, W) in [0, 1], "depth": (N, 1, H, W)}`` with methods ``synsin``, ``identity``,
        ``splat_true_depth`` (RGB splatted with the true depth, no refinement) and ``no_refinement`` (RGB
        splatted with SynSin's depth).
    """
    from lib3d.metrics import psnr, ssim

    was_training = generator.training
    generator.eval()
    dev = next(generator.parameters()).device
    cfg = generator.config
    g = torch.Generator(device=dev).manual_seed(int(seed))
    outs: dict[str, list[torch.Tensor]] = {}

    def add(k, v):
        outs.setdefault(k, []).append(v.detach().cpu())

    N = pairs.source.shape[0]
    for s in range(0, N, batch_size):
        b = ViewPairs(*(t[s:s + batch_size].to(dev) for t in pairs))
        out = generator(b.source * 2 - 1, b.K, b.RT, generator=g)
        pred = (out.image + 1) / 2
        preds = {"synsin": pred, "identity": b.source,
                 "splat_true_depth": rgb_splat(b.source, b.source_depth, b.K, b.RT, cfg),
                 "no_refinement": rgb_splat(b.source, out.depth, b.K, b.RT, cfg)}
        tgt = _hwc(b.target)
        for name, p in preds.items():
            add(f"psnr/{name}", psnr(_hwc(p), tgt))
            add(f"ssim/{name}", ssim(_hwc(p), tgt))
        for k, v in depth_agreement(out.depth, b.source_depth).items():
            add(f"depth/{k}", v)
        add("prediction", pred)
        add("depth", out.depth)
    generator.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


def forward_walk_poses(frames: int, step: float = 0.1, turn_degrees: float = 1.5) -> torch.Tensor:
    """(frames, 4, 4) relative poses of a camera walking forward and turning right (the book's GIF).

    Frame k moves the camera ``k * step`` forward and yaws it ``k * turn`` degrees: points move by
    ``X' = R_y(-k turn) (X - (0, 0, k step))``.
    """
    out = []
    for k in range(frames):
        a = math.radians(k * turn_degrees)
        R = torch.tensor([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
        M = torch.eye(4)
        M[:3, :3] = R
        M[:3, 3] = -(R @ torch.tensor([0.0, 0.0, k * step]))
        out.append(M)
    return torch.stack(out)


def _depth_image(depth: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) depth -> (N, 3, H, W) grey in [0, 1] (near bright), normalised per image."""
    inv = 1.0 / depth.clamp_min(1e-6)
    lo = inv.flatten(1).min(1).values[:, None, None, None]
    hi = inv.flatten(1).max(1).values[:, None, None, None]
    return ((inv - lo) / (hi - lo).clamp_min(1e-12)).expand(-1, 3, -1, -1)


def _grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """rows of (n, 3, H, W) in [0, 1] -> (rows * H, n * W, 3)."""
    return torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1).permute(1, 2, 0).clamp(0, 1)


class SynSinSystem:
    """``runtime.train``'s contract for SynSin (config: ``configs.synsin.SynSinConfig``)."""

    name = "synsin"

    def check_config(self, config) -> None:
        if config.data.image_size != config.model.image_size:
            raise runtime.UserError(f"--data.image-size ({config.data.image_size}) must equal --model.image-size "
                                    f"({config.model.image_size})")
        if config.model.image_size % (2 ** config.model.depth_levels):
            raise runtime.UserError(f"--model.image-size {config.model.image_size} must be divisible by "
                                    f"2 ** --model.depth-levels = {2 ** config.model.depth_levels}")
        if config.batch_size < 1 or config.steps < 1:
            raise runtime.UserError("--batch-size and --steps must be >= 1")
        if config.ray.num_workers > 1 and config.batch_size % config.ray.num_workers:
            raise runtime.UserError(f"--batch-size {config.batch_size} must be divisible by --ray.num-workers "
                                    f"{config.ray.num_workers}")
        if not 1 <= config.eval_gap < config.data.frames:
            raise runtime.UserError(f"--eval-gap must be in [1, {config.data.frames - 1}]")
        if config.vgg_weights is not None:
            import os

            if not os.path.isfile(config.vgg_weights):
                raise runtime.UserError(f"--vgg-weights {config.vgg_weights}: no such file")

    def num_steps(self, config) -> int:
        return config.steps

    def init(self, config, ctx: WorkerContext) -> TrainState:
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        train = load_indoor(config.data, "train")
        test = load_indoor(config.data, "test") if ctx.is_main else None
        gen = SynSinGenerator(config.model).to(ctx.device)
        modules: dict[str, torch.nn.Module] = {"generator": gen}
        optimizers = {"generator": torch.optim.Adam(gen.parameters(), lr=config.lr_g, betas=config.betas)}
        if config.gan_weight > 0:
            m = config.model
            disc = SynSinDiscriminator(m.ndf, m.num_discriminators, m.discriminator_layers).to(ctx.device)
            modules["discriminator"] = disc
            optimizers["discriminator"] = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=config.betas)
        vgg = load_synsin_vgg(config.vgg_weights, ctx.device) if config.vgg_weights else None
        shard = runtime.shard_indices(config.batch_size, ctx.rank, ctx.world_size)
        data = {"config": config, "ctx": ctx, "train": train, "test": test, "vgg": vgg, "shard": shard}
        return TrainState(modules=modules, optimizers=optimizers, data=data)

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, Any]:
        d = state.data
        config, ctx = d["config"], d["ctx"]
        gb = torch.Generator().manual_seed(derive_seed(config.run.seed, "pairs", step))
        pairs = sample_pairs(d["train"], config.batch_size, config.max_gap, generator=gb)
        sh = d["shard"]
        b = ViewPairs(*(t[sh.start:sh.stop].to(ctx.device) for t in pairs))
        src, tgt = b.source * 2 - 1, b.target * 2 - 1
        G = state.modules["generator"]
        out = G(src, b.K, b.RT, generator=generator)
        logs: dict[str, Any] = {}
        l1 = F.l1_loss(out.image, tgt)
        loss = config.l1_weight * l1
        logs["loss/l1"] = l1.detach()
        if d["vgg"] is not None:
            perc = perceptual_loss(d["vgg"], out.image, tgt)
            loss = loss + config.vgg_weight * perc
            logs["loss/perceptual"] = perc.detach()
        D = state.modules.get("discriminator")
        if D is not None:
            n = out.image.shape[0]
            preds = D(torch.cat((out.image, tgt)))
            fake = [[t[:n] for t in p] for p in preds]
            real = [[t[n:] for t in p] for p in preds]
            g_gan = generator_hinge_loss(fake)
            fm = feature_matching_loss(fake, real, config.feature_matching_weight)
            loss = loss + config.gan_weight * (g_gan + fm)
            logs["loss/g_gan"], logs["loss/feature_matching"] = g_gan.detach(), fm.detach()
        opt_g = state.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        runtime.all_reduce_gradients(G)
        opt_g.step()
        logs["loss/generator"] = loss.detach()
        if D is not None:
            n = out.image.shape[0]
            preds = D(torch.cat((out.image.detach(), tgt)))
            d_loss = discriminator_loss([[t[:n] for t in p] for p in preds], [[t[n:] for t in p] for p in preds])
            opt_d = state.optimizers["discriminator"]
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            runtime.all_reduce_gradients(D)
            opt_d.step()
            logs["loss/discriminator"] = d_loss.detach()
        return logs

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        d = state.data
        config = d["config"]
        G = runtime.unwrap_model(state.modules["generator"])
        pairs = fixed_pairs(d["test"], config.eval_gap)
        res = evaluate_pairs(G, pairs, seed=config.run.seed)
        metrics: dict[str, Any] = {"eval_pairs": int(pairs.source.shape[0])}
        for k, v in res.items():
            if k.startswith(("psnr/", "ssim/", "depth/")):
                metrics[k] = float(v.mean())
        metrics["psnr_gain_over_identity_db"] = metrics["psnr/synsin"] - metrics["psnr/identity"]
        n = min(config.eval_images, pairs.source.shape[0])
        idx = torch.linspace(0, pairs.source.shape[0] - 1, n).round().long()
        grid = _grid([pairs.source[idx], res["prediction"][idx], pairs.target[idx], _depth_image(res["depth"][idx]),
                      _depth_image(pairs.source_depth[idx])])
        images = {"source_prediction_target_depth_truedepth": grid}
        gifs = {}
        if config.gif_frames > 0:
            gifs["forward_walk"] = self.walk(G, pairs.source[:1], pairs.K[:1], config.gif_frames, config.run.seed)
        return Evaluation(metrics=metrics, images=images, gifs=gifs)

    @staticmethod
    @torch.no_grad()
    def walk(G: SynSinGenerator, image: torch.Tensor, K: torch.Tensor, frames: int, seed: int = 0) -> torch.Tensor:
        """(frames, H, W, 3) views of a forward walk from one (1, 3, H, W) image in [0, 1]."""
        was = G.training
        G.eval()
        dev = next(G.parameters()).device
        RT = forward_walk_poses(frames).to(dev)
        src = (image.to(dev) * 2 - 1).expand(frames, -1, -1, -1)
        out = G(src, K.to(dev).expand(frames, 3, 3), RT, generator=torch.Generator(device=dev).manual_seed(seed))
        G.train(was)
        return ((out.image + 1) / 2).permute(0, 2, 3, 1).clamp(0, 1).cpu()




# ------------------------------------------------------------------------------------------ inference


class LoadedGenerator(NamedTuple):
    """A generator ready for inference.

    Attributes:
        generator: ``SynSinGenerator`` in eval mode.
        K: (3, 3) float normalised intrinsics to use for images without their own (the training data's,
            or the official code's 90 degree camera).
        source: what was loaded (a file or a checkpoint directory).
    """

    generator: SynSinGenerator
    K: torch.Tensor
    source: str


def load_generator(path: str, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load a SynSin generator: an official ``synsin.pth`` file, or a ``jobs.synsin`` run directory (its latest
    checkpoint) or one of its checkpoint directories.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: an unreadable file, a run directory without ``config.json`` or checkpoint, or tensors
            that do not fit the saved architecture (named).
    """
    from lib3d.nn.weights import strict_load
    from lib3d.synthesis.synsin import load_official_checkpoint, official_intrinsics

    p = Path(path)
    if p.is_file():
        gen, _, _ = load_official_checkpoint(p)
        return LoadedGenerator(gen.to(device).eval(), official_intrinsics(1)[0], str(p))
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no SynSin checkpoint file or run directory")
    ck_dir = p if (p / "state.json").is_file() else None
    run_dir = p.parent.parent if ck_dir is not None else p
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run_dir}: not a jobs.synsin run directory (no config.json)")
    saved = json.loads(cfg_path.read_text()).get("config", {})
    if "model" not in saved:
        raise ValueError(f"{cfg_path}: no 'model' section (not a jobs.synsin run?)")
    try:
        mc = SynSinModelConfig(**saved["model"])
    except TypeError as e:
        raise ValueError(f"{cfg_path}: model config does not match this lib3d ({e})") from None
    ck = runtime.load_checkpoint(ck_dir if ck_dir is not None else run_dir / "checkpoints")
    sd = {k[len("generator."):]: v for k, v in ck.tensors.items() if k.startswith("generator.")}
    gen = SynSinGenerator(mc)
    strict_load(gen, sd, f"{ck.path} (SynSin generator)")
    fov = float(saved.get("data", {}).get("fov_degrees", 60.0))
    f = 0.5 / math.tan(math.radians(fov) / 2)
    K = torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]])
    return LoadedGenerator(gen.to(device).eval(), K, str(ck.path))


def book_pose(theta: float, phi: float, tx: float, ty: float, tz: float) -> torch.Tensor:
    """The book's / official demo's relative pose, converted to lib3d's convention.

    The demo builds ``RT_gl`` with the rotation of the rotation vector ``(phi, theta, 0)`` (radians; phi about
    x, theta about y) and the translation ``(tx, ty, tz)`` in the official OpenGL-like axes; lib3d's pose
    is ``synsin_pose_to_opencv(RT_gl)``.

    Returns:
        (4, 4) float.
    """
    from lib3d.geometry.rotations import axis_angle_to_matrix
    from lib3d.synthesis.synsin import synsin_pose_to_opencv

    RT = torch.eye(4)
    RT[:3, :3] = axis_angle_to_matrix(torch.tensor([[phi, theta, 0.0]]))[0]
    RT[:3, 3] = torch.tensor([tx, ty, tz])
    return synsin_pose_to_opencv(RT)


class SynSinPredictor:
    """Batched evaluation with ``runtime.evaluate``: loads the model once; each call maps a list of pairs
    ``(source (3, H, W), target (3, H, W), K (3, 3), RT (4, 4))`` (images in [0, 1]) to
    ``{"prediction": (B, 3, H, W), "psnr": (B,), "ssim": (B,), "psnr_identity": (B,), "ssim_identity": (B,)}``
    plus ``"percsim"`` / ``"percsim_identity"`` (SynSin's "Perc Sim") when VGG16 weights are given."""

    def __init__(self, model: str, device: str = "cpu", vgg16_weights: str | None = None, seed: int = 0):
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.device = torch.device(device)
        self.model = load_generator(model, self.device)
        self.seed = seed
        self.percsim = None
        if vgg16_weights:
            from lib3d.metrics import PerceptualSimilarity
            from lib3d.nn.weights import load_vgg

            self.percsim = PerceptualSimilarity()
            load_vgg(vgg16_weights, self.percsim.net)
            self.percsim = self.percsim.to(self.device).eval()

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        from lib3d.metrics import psnr, ssim

        src, tgt, K, RT = (torch.stack([b[i] for b in batch]).to(self.device).float() for i in range(4))
        G = self.model.generator
        with torch.no_grad():
            out = G(src * 2 - 1, K, RT, generator=torch.Generator(device=self.device).manual_seed(self.seed))
            pred = ((out.image + 1) / 2).clamp(0, 1)
            res = {"prediction": pred.cpu(), "depth": out.depth.cpu()}
            for name, p in (("", pred), ("_identity", src)):
                res["psnr" + name] = psnr(_hwc(p), _hwc(tgt)).cpu()
                res["ssim" + name] = ssim(_hwc(p), _hwc(tgt)).cpu() if min(p.shape[-2:]) >= 11 else \
                    torch.full((p.shape[0],), float("nan"))
                if self.percsim is not None:
                    res["percsim" + name] = self.percsim(p, tgt).cpu()
        return res
