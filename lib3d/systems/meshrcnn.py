"""Mesh R-CNN as a lib3d system (the book's chapter 10): train on the embedded furniture data or on Pix3D,
evaluate box / mask / mesh AP on held-out images (see ``configs/meshrcnn.py`` and ``jobs/meshrcnn.py``).

The data is anything with the :class:`MeshRCNNData` interface (``load_data`` picks it from ``config.data``):
the embedded :class:`lib3d.data.furniture.FurnitureData`, or :class:`lib3d.data.pix3d_items.Pix3DData` whose
splits read each image when it is indexed. Their items are :class:`lib3d.data.furniture.FurnitureImage`.

Everything that trains lives in the ``TrainState``: the model (``"model"``), its optimizer and learning-rate
schedule (linear warm-up, /10 at ``lr_decay_steps``). Each step draws ``batch_size`` training images with a
rank-independent generator seeded from (run seed, step), and each worker takes its shard of them, so N workers
see the batch one worker would; gradients are averaged with ``runtime.all_reduce_gradients``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from lib3d import runtime
from lib3d.runtime import Evaluation, TrainState, WorkerContext

__all__ = ["MeshRCNNData", "MeshRCNNSystem", "batch_targets", "data_num_classes", "draw_detections", "load_data",
           "lr_factor"]


class MeshRCNNData(Protocol):
    """What the system reads of a dataset.

    Attributes:
        train, test: sequences of :class:`lib3d.data.furniture.FurnitureImage` (lists, or lazy splits that
            read an item when indexed; a slice of one is again such a sequence).
        image_size: S, the items' square side.
        focal: the focal length in pixels shared by all items, or None when it differs (each item's ``K``).
        categories: the class names (class ``k`` is ``categories[k]``).
    """

    train: Sequence[Any]
    test: Sequence[Any]
    image_size: int
    focal: float | None
    categories: tuple


def _get(data_config, name: str, default=None):
    return data_config.get(name, default) if isinstance(data_config, dict) else getattr(data_config, name, default)


def data_num_classes(data_config) -> int | None:
    """The class count a data config fixes for the model: Pix3D's 9 for ``source="pix3d"``, None for the
    embedded data (``model.num_classes`` must then match its categories). Accepts the config or its dict."""
    if _get(data_config, "source", "furniture") == "pix3d":
        from lib3d.data.pix3d import PIX3D_CATEGORIES

        return len(PIX3D_CATEGORIES)
    return None


def load_data(data_config, check_files: bool = False) -> MeshRCNNData:
    """The dataset of a ``configs.meshrcnn.FurnitureConfig`` (or its dict).

    ``source="furniture"``: :func:`lib3d.data.furniture.load_furniture` with the config's generator fields
    (cached on disk). ``source="pix3d"``: :func:`lib3d.data.pix3d_items.load_pix3d_data` (the jsons are read,
    images and models are read lazily; ``check_files`` checks now that every file exists).

    Raises:
        runtime.UserError: a Pix3D source without ``pix3d_root``.
        FileNotFoundError, lib3d.io.FormatError: a missing or malformed Pix3D file (named).
    """
    if _get(data_config, "source", "furniture") == "pix3d":
        from lib3d.data.pix3d_items import load_pix3d_data

        root = _get(data_config, "pix3d_root", "")
        if not root:
            raise runtime.UserError("--data.source pix3d needs --data.pix3d-root (Pix3D's folder)")
        return load_pix3d_data(root, int(_get(data_config, "image_size")), _get(data_config, "pix3d_split", "s1"),
                               _get(data_config, "train_json", "") or None, _get(data_config, "test_json", "") or None,
                               int(_get(data_config, "model_cache", 128)), check_files=check_files)
    from lib3d.data.furniture import load_furniture, make_furniture

    names = inspect.signature(make_furniture).parameters
    fields = data_config if isinstance(data_config, dict) else dataclasses.asdict(data_config)
    return load_furniture(**{k: v for k, v in fields.items() if k in names})


def lr_factor(step: int, warmup_steps: int, warmup_factor: float, decay_steps: tuple[int, ...]) -> float:
    """detectron2's ``WarmupMultiStepLR`` factor: linear warm-up, then x0.1 at each decay step."""
    f = 0.1 ** sum(step >= s for s in decay_steps)
    if step < warmup_steps:
        a = step / max(warmup_steps, 1)
        f *= warmup_factor * (1 - a) + a
    return f


def batch_targets(items, device) -> tuple[torch.Tensor, list]:
    """Images ``(N, 3, S, S)`` in [0, 1] and :class:`lib3d.detect.InstanceTargets` of furniture images."""
    from lib3d.detect import InstanceTargets

    images = torch.stack([x.image for x in items]).to(device=device, dtype=torch.float32) / 255.0
    targets = []
    for x in items:
        g = x.boxes.shape[0]
        targets.append(InstanceTargets(
            boxes=x.boxes.to(device), classes=x.classes.to(device), masks=x.masks.to(device),
            Ks=x.K.view(1, 3).expand(g, 3).to(device), meshes=[(v.to(device), f.to(device)) for v, f in x.meshes],
            voxel_points=x.voxel_points.to(device), voxel_lengths=x.voxel_lengths.to(device), dz=x.dz.to(device)))
    return images, targets


def draw_detections(image: torch.Tensor, pred, threshold: float = 0.5) -> torch.Tensor:
    """``(S, S, 3)`` float copy of ``image (3, S, S) uint8`` with the masks (tinted) and boxes (green) of the
    detections scoring above ``threshold``."""
    from lib3d.detect import paste_masks

    out = image.permute(1, 2, 0).float() / 255.0
    keep = pred.scores > threshold
    boxes = pred.boxes[keep].cpu()
    s = out.shape[0]
    if pred.masks is not None and boxes.shape[0]:
        masks = paste_masks(pred.masks[keep].float().cpu(), boxes, (s, out.shape[1]))
        palette = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.4, 1.0], [1.0, 0.9, 0.1], [0.8, 0.2, 1.0], [0.1, 1.0, 1.0]])
        for k in range(masks.shape[0]):  # a handful of detections
            col = palette[int(pred.classes[keep][k]) % len(palette)]
            out = torch.where(masks[k][..., None], 0.5 * out + 0.5 * col, out)
    green = torch.tensor([0.0, 1.0, 0.0])
    for b in boxes.round().long().tolist():
        x0, y0 = max(b[0], 0), max(b[1], 0)
        x1, y1 = min(b[2], out.shape[1]) - 1, min(b[3], s) - 1
        if x1 < x0 or y1 < y0:
            continue
        out[y0, x0:x1 + 1] = green
        out[y1, x0:x1 + 1] = green
        out[y0:y1 + 1, x0] = green
        out[y0:y1 + 1, x1] = green
    return out


class MeshRCNNSystem:
    """Mesh R-CNN (``lib3d.detect.MeshRCNN``) on the embedded furniture dataset or Pix3D (``config.data``)."""

    name = "meshrcnn"

    def num_steps(self, config) -> int:
        return int(config.steps)

    def check_config(self, config) -> None:
        """User mistakes, reported before any worker starts."""
        from pathlib import Path

        from lib3d.io.errors import FormatError

        for field in ("backbone_weights", "weights"):
            p = getattr(config, field)
            if p is not None and not Path(p).is_file():
                raise runtime.UserError(f"--{field.replace('_', '-')} {p}: no such file")
        if config.batch_size < max(1, config.ray.num_workers):
            raise runtime.UserError(f"--batch-size {config.batch_size} must be at least the number of workers "
                                    f"({config.ray.num_workers})")
        if config.steps < 1:
            raise runtime.UserError(f"--steps must be positive, got {config.steps}")
        if config.data.source == "pix3d":
            try:
                data = load_data(config.data, check_files=True)
            except FormatError:
                raise  # one line naming the file and the line already
            except (FileNotFoundError, NotADirectoryError, ValueError) as e:
                raise runtime.UserError(str(e)) from None
            if len(data.train) == 0:
                raise runtime.UserError(f"--data.pix3d-root {config.data.pix3d_root}: the training split has no images")

    def init(self, config, ctx: WorkerContext) -> TrainState:
        from lib3d.detect import MeshRCNN, load_official_meshrcnn

        if config.threads > 0:
            torch.set_num_threads(config.threads)
        data = load_data(config.data)
        model_config = config.model
        if data_num_classes(config.data) is not None:  # the data fixes the classes (Pix3D: 9)
            model_config = dataclasses.replace(model_config, num_classes=len(data.categories))
        if model_config.num_classes != len(data.categories):
            raise runtime.UserError(f"--model.num-classes {config.model.num_classes} must equal the dataset's "
                                    f"{len(data.categories)} categories")
        torch.manual_seed(runtime.derive_seed(config.run.seed, "init"))  # the same weights on every rank
        model = MeshRCNN(model_config)
        if config.backbone_weights:
            from lib3d.nn import load_resnet

            load_resnet(config.backbone_weights, model.backbone.bottom_up)
        if config.weights:
            load_official_meshrcnn(config.weights, model)
        model.to(ctx.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            lr_factor, warmup_steps=config.warmup_steps, warmup_factor=config.warmup_factor,
            decay_steps=tuple(config.lr_decay_steps)))
        return TrainState(modules={"model": model}, optimizers={"model": opt}, schedulers={"lr": sched},
                          data={"data": data, "config": config, "ctx": ctx})

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict:
        config, ctx, data = state.data["config"], state.data["ctx"], state.data["data"]
        model = state.modules["model"]
        opt = state.optimizers["model"]
        pick = torch.Generator().manual_seed(runtime.derive_seed(config.run.seed, "batch", step))
        idx = torch.randint(len(data.train), (config.batch_size,), generator=pick)
        idx = idx[list(runtime.shard_indices(config.batch_size, ctx.rank, ctx.world_size))]
        images, targets = batch_targets([data.train[i] for i in idx.tolist()], ctx.device)
        model.train()
        losses = model(images, targets, generator=generator)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        runtime.all_reduce_gradients(model)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        state.schedulers["lr"].step()
        return {"loss": total.detach(), **{k: v.detach() for k, v in losses.items()}}

    @torch.no_grad()
    def predict(self, state: TrainState, items, batch: int = 8) -> list:
        """Predictions for furniture images (eval mode, in batches)."""
        model = state.modules["model"]
        model.eval()
        ctx = state.data["ctx"]
        out = []
        for s in range(0, len(items), batch):  # batches of images
            images, _ = batch_targets(items[s:s + batch], ctx.device)
            out += model(images)
        return out

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        from lib3d.detect.evaluation import GroundTruth, evaluate_predictions

        config, data = state.data["config"], state.data["data"]
        items = list(data.test[: config.eval_images])  # a lazy split reads its items once, here
        preds = self.predict(state, items)
        truths = [GroundTruth(x.boxes, x.classes, x.masks, x.meshes, x.K) for x in items]
        cpu_preds = [_to_cpu(p) for p in preds]
        metrics = evaluate_predictions(cpu_preds, truths, (data.image_size, data.image_size),
                                       config.eval_mesh_samples, torch.Generator().manual_seed(0))
        metrics["eval_images"] = len(items)
        images = {}
        rows = [torch.cat([items[i].image.permute(1, 2, 0).float() / 255.0, draw_detections(items[i].image, cpu_preds[i])],
                          1) for i in range(min(config.vis_images, len(items)))]
        if rows:
            images["heldout_detections"] = torch.cat(rows, 0).clamp(0, 1)
            images["heldout_meshes"] = torch.cat([_render_meshes(items[i], cpu_preds[i], data.focal)
                                                  for i in range(len(rows))], 0)
        return Evaluation(metrics=metrics, images=images)


def _to_cpu(p):
    from lib3d.detect import Prediction

    def cpu(x):
        return None if x is None else x.cpu()

    meshes = None if p.meshes is None else [(v.cpu(), f.cpu()) for v, f in p.meshes]
    return Prediction(p.boxes.cpu(), p.scores.cpu(), p.classes.cpu(), cpu(p.masks), cpu(p.voxels), meshes, cpu(p.z))


def _render_meshes(item, pred, focal: float | None, threshold: float = 0.5) -> torch.Tensor:
    """``(S, 2 S, 3)``: the predicted meshes (depth from the z head around the matched ground truth's centre)
    and the ground-truth meshes, flat-shaded from the image's camera (``focal`` None: the item's ``K``, its
    principal point reached by shearing the meshes, ``X += (S / 2 - c) Z / f``, which keeps every projection)."""
    from lib3d.data.furniture import render_scene
    from lib3d.detect.evaluation import match_detections
    from lib3d.detect.mesh_head import z_ranges_from_dz
    from lib3d.detect.meshrcnn import meshes_to_camera

    s = item.image.shape[1]
    light = torch.nn.functional.normalize(torch.tensor([[0.3, 1.0, -0.6]]), dim=1)

    def render(meshes):
        if not meshes:
            return torch.zeros(s, s, 3)
        verts = torch.cat([v for v, _ in meshes])
        offs = torch.cumsum(torch.tensor([0] + [v.shape[0] for v, _ in meshes[:-1]]), 0)
        faces = torch.cat([f + o for (_, f), o in zip(meshes, offs.tolist())])
        ok = verts[:, 2] > 0.1
        if not bool(ok.all()):
            return torch.zeros(s, s, 3)
        f = focal
        if f is None:
            f = float(item.K[0])
            shift = (s / 2 - (item.K[1:] - 1)).to(verts.dtype)  # principal point (px - 1, py - 1) -> S / 2
            verts = torch.cat([verts[:, :2] + shift * verts[:, 2:] / f, verts[:, 2:]], 1)
        rgb, _ = render_scene([verts], [faces], [torch.full((faces.shape[0], 3), 0.8)], s, f, light)
        return rgb[0]

    pred_meshes = []
    if pred.meshes is not None and pred.z is not None and pred.boxes.shape[0]:
        keep = torch.nonzero(pred.scores > threshold, as_tuple=True)[0]
        m = match_detections(pred.boxes[keep], pred.scores[keep], pred.classes[keep], item.boxes, item.classes)
        sel = keep[m >= 0]
        if sel.numel():
            gt = m[m >= 0]
            zc = torch.stack([(item.meshes[g][0][:, 2].min() + item.meshes[g][0][:, 2].max()) / 2 for g in gt.tolist()])
            ks = item.K.view(1, 3).expand(sel.numel(), 3)
            zr = z_ranges_from_dz(pred.z[sel, None], pred.classes[sel], pred.boxes[sel], ks[:, 0], zc)
            pred_meshes = meshes_to_camera([pred.meshes[k] for k in sel.tolist()], pred.boxes[sel], zr, ks)
    return torch.cat([render(pred_meshes), render(list(item.meshes))], 1)


def model_from_run(model: str, preset_model=None, num_classes: int = 0, device="cpu"):
    """Build a :class:`lib3d.detect.MeshRCNN` from a ``jobs.meshrcnn`` run directory (config.json + latest
    checkpoint) or an official checkpoint file (``preset_model``: the architecture). Returns
    ``(model in eval mode, the run's data config dict or None)``."""
    import json
    from pathlib import Path

    from lib3d.detect import MeshRCNN, MeshRCNNConfig, load_official_meshrcnn

    p = Path(model)
    if p.is_dir():
        cfg_file = p / "config.json"
        if not cfg_file.is_file():
            raise runtime.UserError(f"--model {p}: not a jobs.meshrcnn run directory (no config.json)")
        saved = json.loads(cfg_file.read_text())
        saved = saved.get("config", saved)
        fields = {f.name: f for f in dataclasses.fields(MeshRCNNConfig)}
        kw = {}
        for k, v in saved["model"].items():
            if k in fields:
                kw[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        fixed = data_num_classes(saved.get("data") or {})
        if fixed is not None:  # the run's data fixed the classes (see MeshRCNNSystem.init)
            kw["num_classes"] = fixed
        net = MeshRCNN(MeshRCNNConfig(**kw))
        ck = runtime.load_checkpoint(p / "checkpoints")
        if ck is None:
            raise runtime.UserError(f"--model {p}: the run has no checkpoint")
        from lib3d.nn import strict_load

        sd = {k[len("model."):]: v for k, v in ck.tensors.items() if k.startswith("model.")}
        strict_load(net, sd, f"Mesh R-CNN of run {p}")
        data = saved.get("data")
    elif p.is_file():
        if preset_model is None:
            raise runtime.UserError("an official checkpoint needs --preset (the architecture)")
        cfg = preset_model if num_classes <= 0 else dataclasses.replace(preset_model, num_classes=num_classes)
        net = MeshRCNN(cfg)
        load_official_meshrcnn(p, net)
        data = None
    else:
        raise runtime.UserError(f"--model {p}: no such run directory or checkpoint file")
    return net.to(device).eval(), data


class MeshRCNNPredictor:
    """Ray Data / in-process predictor: loads the model once, maps a batch of ``(3, S, S) uint8`` images to
    their predictions as dicts of :class:`lib3d.detect.Prediction`'s fields on the CPU (plain dicts travel
    through Ray Data; ``Prediction(**d)`` rebuilds them)."""

    def __init__(self, model: str, preset_model=None, num_classes: int = 0, use_gpu: bool = False):
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model, _ = model_from_run(model, preset_model, num_classes, self.device)

    def __call__(self, batch) -> list:
        images = torch.stack(list(batch)).to(self.device, torch.float32) / 255.0
        with torch.no_grad():
            return [_to_cpu(p)._asdict() for p in self.model(images)]
