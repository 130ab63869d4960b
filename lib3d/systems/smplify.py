"""SMPLify over many images (the book's chapter 8) as a batch evaluation on ``lib3d.runtime.evaluate``.

The job ``jobs.smplify`` wires four pieces::

    check_config(config)                       # a user's mistake -> runtime.UserError, before any work
    items, truth = build_items(config)         # FitItems from a keypoint file, or synthetic people
    writer = FitWriter(run, config, items)     # writes each batch's fits as it arrives (on_batch)
    runtime.evaluate(SMPLifyPredictor, writer.pending(), on_batch=writer, ...)   # Ray Data actors
    metrics = writer.finish(truth)             # metrics.json, fits.csv, TensorBoard

- :class:`SMPLifyPredictor` is the callable class Ray Data builds once per actor (body model and pose prior
  loaded in ``__init__``, one torch thread) and calls on batches of :class:`~lib3d.bodies.pipeline.FitItem`;
  it returns a dict of ``(B, ...)`` tensors.
- :class:`FitWriter` writes, per image, ``params/<name>.safetensors`` (the fitted parameters, the projected
  keypoints and the fit's own numbers: energy, 2D reprojection error on confident keypoints, ...), and
  with ``write_meshes`` ``meshes/<name>.obj`` and ``media/<name>.png``. It writes the parameters last, so an
  image whose parameters exist is complete: a re-run of the same run name fits only the batches not yet
  written (same batch boundaries, so the same numbers) and a finished run just reports its metrics.
- Fit quality without ground truth (real keypoints): :func:`reprojection_error`, the mean 2D distance between
  the detected keypoints with confidence ``>= min_confidence`` and the fitted model's projections, per image
  and over the run. With synthetic people the 2D error against the noise-free keypoints, MPJPE, PA-MPJPE
  and the vertex error are reported too.

Dimension names: N images, B batch, K keypoints, S shape coefficients.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lib3d import runtime
from lib3d._checks import check_shapes
from lib3d.bodies.metrics import keypoint_error_2d, mpjpe, pa_mpjpe
from lib3d.bodies.pipeline import (
    FitItem,
    load_body_model,
    load_keypoints_json,
    load_lsp_est_joints,
    load_pose_prior,
)
from lib3d.bodies.skeletons import get_skeleton
from lib3d.bodies.smpl import smpl_forward
from lib3d.bodies.smplify import SMPLifyConfig, SyntheticPeople, smplify, synthetic_people
from lib3d.bodies.visualize import overlay
from lib3d.io import save_obj
from lib3d.io.images import to_uint8

__all__ = [
    "PARAMS",
    "FitWriter",
    "SMPLifyPredictor",
    "build_items",
    "check_config",
    "ground_truth_metrics",
    "predictor_kwargs",
    "reprojection_error",
]

PARAMS = ("betas", "body_pose", "global_orient", "camera_translation")
"""The fitted parameters, in the order of ``params/<name>.safetensors``."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def reprojection_error(keypoints: torch.Tensor, projected: torch.Tensor, min_confidence: float = 0.5
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image 2D reprojection error on confident keypoints: what a fit to real keypoints is judged by.

    ``e_n = mean over k with c_nk >= min_confidence and a finite projection of |x_nk - u_nk|`` (pixels).

    Args:
        keypoints: (N, K, 3) float detected ``(u, v, confidence)``.
        projected: (N, K, 2) float projected model keypoints (NaN where the skeleton has no model joint).
        min_confidence: keypoints below this confidence are not counted.

    Returns:
        ``(error (N,) float pixels, NaN for an image without a confident keypoint; count (N,) long)``.
    """
    check_shapes(dtype="float", keypoints=(keypoints, ("N", "K", 3)), projected=(projected, ("N", "K", 2)))
    mask = (keypoints[..., 2] >= min_confidence) & torch.isfinite(projected).all(-1)
    count = mask.sum(-1)
    err = keypoint_error_2d(projected, keypoints[..., :2], mask)
    return torch.where(count > 0, err, torch.full_like(err, math.nan)), count


# ------------------------------------------------------------------------------------------------ inputs


def check_config(config: Any) -> None:
    """Raise ``runtime.UserError`` (one line, exit status 2) for a user's mistake before any work starts.

    Checks that the keypoint file and image folder exist, that the body model and pose prior load, and that
    the sizes are sane.
    """
    for name in ("keypoints", "model", "gmm"):
        path = getattr(config, name)
        if path is not None and not Path(path).is_file():
            raise runtime.UserError(f"--{name} {path}: no such file")
    if config.images is not None and not Path(config.images).is_dir():
        raise runtime.UserError(f"--images {config.images}: no such folder")
    if config.keypoints is not None and Path(config.keypoints).suffix.lower() not in (".npz", ".json"):
        raise runtime.UserError(f"--keypoints {config.keypoints}: expected an LSP est_joints .npz or a .json list")
    for name in ("batch_size", "num_synthetic"):
        if getattr(config, name) < 1:
            raise runtime.UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.num_workers < 0:
        raise runtime.UserError(f"--num-workers must be >= 0, got {config.num_workers}")
    if min(config.image_size) < 1:
        raise runtime.UserError(f"--image-size must be positive, got {config.image_size}")
    # load what the actors will load, so that a bad file is one line here rather than a failed actor there
    for name, load in (("model", load_body_model), ("gmm", load_pose_prior)):
        if getattr(config, name) is not None:
            try:
                load(getattr(config, name))
            except (ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
                raise runtime.UserError(f"--{name} {getattr(config, name)}: not a readable file ({e})") from None


def _image_size(img: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if img and Path(img).is_file():
        with Image.open(img) as im:
            return (im.height, im.width)
    return tuple(default)


def build_items(config: Any) -> tuple[list[FitItem], SyntheticPeople | None]:
    """The images to fit and, for synthetic people, their ground truth.

    ``config.keypoints`` None: ``num_synthetic`` people sampled from the body model and pose prior (seed
    ``run.seed``). An ``.npz``: SMPLify's LSP ``est_joints`` (images ``im0001.jpg`` ... in ``config.images``,
    else that folder's image files in sorted order). A ``.json``: a list of ``{"image", "keypoints",
    "image_size"}``.

    Raises:
        runtime.UserError: an unreadable or malformed keypoint file, keypoints of the wrong size for the
            skeleton, or two images with the same name.
    """
    skeleton = get_skeleton(config.skeleton)
    K = len(skeleton.keypoints)
    size = tuple(config.image_size)
    if config.keypoints is None:
        model = load_body_model(config.model)
        truth = synthetic_people(model, config.num_synthetic, skeleton, prior=load_pose_prior(config.gmm),
                                 image_size=size, focal_length=config.fit.focal_length, noise_px=config.noise_px,
                                 drop_prob=config.drop_prob,
                                 generator=torch.Generator().manual_seed(config.run.seed))
        return [FitItem(f"person{i:04d}", truth.keypoints[i], size) for i in range(config.num_synthetic)], truth
    path = Path(config.keypoints)
    folder = Path(config.images) if config.images else None
    listed = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES) if folder else []
    items = []
    try:
        if path.suffix.lower() == ".npz":
            if config.skeleton != "lsp":
                raise runtime.UserError(f"--keypoints {path}: est_joints.npz holds LSP keypoints; use --skeleton lsp")
            kps = load_lsp_est_joints(path)
            for i in range(len(kps)):
                img = None
                if folder is not None:
                    cand = folder / f"im{i + 1:04d}.jpg"
                    img = str(cand) if cand.exists() else (str(listed[i]) if i < len(listed) else None)
                name = Path(img).stem if img else f"im{i + 1:04d}"
                items.append(FitItem(name, kps[i], _image_size(img, size), img))
        else:
            for i, d in enumerate(load_keypoints_json(path)):
                img = d.get("image")
                if img and folder is not None and not Path(img).is_absolute():
                    img = str(folder / img)
                kp = torch.tensor(d["keypoints"], dtype=torch.float32)
                if kp.shape != (K, 3) or not torch.isfinite(kp).all():
                    raise ValueError(f"{path}: item {i} must have {K} finite [u, v, confidence] keypoints "
                                     f"({config.skeleton}), got shape {tuple(kp.shape)}")
                hw = tuple(int(v) for v in d["image_size"]) if "image_size" in d else _image_size(img, size)
                items.append(FitItem(Path(img).stem if img else f"item{i:04d}", kp, hw, img))
    except ValueError as e:
        raise runtime.UserError(str(e)) from None
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise runtime.UserError(f"--keypoints {path}: two images are named {dup!r} (results are written per name)")
    return items, None


# --------------------------------------------------------------------------------------------- predictor


def predictor_kwargs(config: Any) -> dict[str, Any]:
    """The constructor arguments of :class:`SMPLifyPredictor` from a job config."""
    return {"model_path": config.model, "gmm_path": config.gmm, "skeleton": config.skeleton, "config": config.fit,
            "threads": config.threads_per_worker, "min_confidence": config.min_confidence,
            "write_meshes": config.write_meshes, "use_gpu": config.ray.use_gpu}


class SMPLifyPredictor:
    """Fits batches of :class:`~lib3d.bodies.pipeline.FitItem` with :func:`lib3d.bodies.smplify.smplify`.

    Built once per Ray actor (or once in-process): loads the body model and the pose prior.

    Args:
        model_path: body model file (None: the synthetic body).
        gmm_path: pose prior file (None: the embedded prior).
        skeleton: keypoint order of the items.
        config: SMPLify settings (None: the defaults).
        threads: torch threads of this process (None: leave as is). The tensors are small: one thread per
            actor and one actor per core is the fastest layout on CPU.
        min_confidence: confidence threshold of :func:`reprojection_error`.
        write_meshes: also return each image's posed mesh as OBJ bytes and its overlay (the body over the
            image, detected keypoints green, projected ones red) as PNG bytes: the rendering runs here, on
            the actors, and the driver only writes the bytes.
        use_gpu: fit on CUDA (the GPU Ray gave this actor).

    Calling it on a list of B items returns a dict of ``(B, ...)`` CPU tensors: the :data:`PARAMS`,
    ``energy``, ``keypoints_2d (B, K, 2)``, ``flipped``, ``stage_energies (B, stages + 1)``,
    ``reprojection_error_px``, ``confident_keypoints``, ``fit_seconds`` (the batch's time per image) and
    ``terms/<stage>/<term>`` (the batch-mean energy terms after each stage, repeated per image); with
    ``write_meshes`` also ``mesh_obj`` and ``overlay_png`` (lists of B ``bytes``).
    """

    def __init__(self, model_path: str | None = None, gmm_path: str | None = None, skeleton: str = "lsp",
                 config: SMPLifyConfig | None = None, threads: int | None = 1, min_confidence: float = 0.5,
                 write_meshes: bool = False, use_gpu: bool = False):
        if threads:
            torch.set_num_threads(int(threads))  # this process (a Ray actor) only
        self.device = torch.device("cuda") if use_gpu else torch.device("cpu")
        self.model = load_body_model(model_path).to(self.device)
        self.prior = load_pose_prior(gmm_path).to(self.device)
        self.skeleton = get_skeleton(skeleton)
        self.config = config or SMPLifyConfig()
        self.min_confidence = min_confidence
        self.write_meshes = write_meshes

    def __call__(self, items: list[FitItem]) -> dict[str, torch.Tensor]:
        dev, dt = self.model.device, self.model.dtype
        # runtime.evaluate calls predictors under inference_mode; SMPLify's L-BFGS option needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            kps = torch.stack([it.keypoints.clone() for it in items]).to(device=dev, dtype=dt)
            center = torch.tensor([[it.image_size[1] / 2, it.image_size[0] / 2] for it in items], dtype=dt,
                                  device=dev)
            stage_terms: list[tuple[str, dict]] = []
            t0 = time.perf_counter()
            res = smplify(self.model, kps, self.skeleton, center=center, prior=self.prior, config=self.config,
                          callback=lambda s, name, terms: stage_terms.append((f"{s}_{name}", terms)))
            seconds = (time.perf_counter() - t0) / len(items)
        B = len(items)
        err, count = reprojection_error(kps, res.keypoints_2d, self.min_confidence)
        out = {name: getattr(res, name) for name in PARAMS}
        out.update(energy=res.energy, keypoints_2d=res.keypoints_2d, flipped=res.flipped,
                   stage_energies=res.stage_energies.T.contiguous(), reprojection_error_px=err,
                   confident_keypoints=count, fit_seconds=torch.full((B,), seconds, dtype=torch.float64))
        for stage, terms in stage_terms:
            for k, v in terms.items():
                out[f"terms/{stage}/{k}"] = torch.full((B,), float(v), dtype=torch.float64)
        out = {k: v.detach().cpu() for k, v in out.items()}
        if self.write_meshes:
            out["mesh_obj"], out["overlay_png"] = self._draw(items, res, kps)
        return out

    def _draw(self, items: list[FitItem], res, kps: torch.Tensor) -> tuple[list[bytes], list[bytes]]:
        """OBJ bytes of the posed meshes and PNG bytes of the overlays."""
        with torch.no_grad():
            verts = smpl_forward(self.model.with_betas(res.betas.shape[1]), res.betas, res.body_pose,
                                 res.global_orient, res.camera_translation).vertices.cpu()
        faces = self.model.faces.cpu()
        meshes, pngs = [], []
        for i, item in enumerate(items):
            buf = io.BytesIO()
            save_obj(buf, verts[i], faces)
            meshes.append(buf.getvalue())
            img = None
            if item.image:
                with Image.open(item.image) as im:
                    img = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            center = torch.tensor([item.image_size[1] / 2, item.image_size[0] / 2])
            pic, _ = overlay(img, verts[i], faces, item.image_size, self.config.focal_length, center,
                             kps[i].cpu().numpy(), res.keypoints_2d[i].cpu().numpy())
            buf = io.BytesIO()
            Image.fromarray(to_uint8(pic, "overlay")).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        return meshes, pngs


# ------------------------------------------------------------------------------------------------ writer


_SCALARS = ("energy", "reprojection_error_px", "confident_keypoints", "flipped", "fit_seconds")


class FitWriter:
    """Writes SMPLify's results per image as the batches arrive (``runtime.evaluate``'s ``on_batch``).

    Args:
        run: the run (``runtime.start_run``); files go under ``run.dir``.
        config: the job config (``batch_size``, ``write_meshes``, ``model``, ``fit.focal_length``).
        items: all the images of the run, in order.

    Per image: ``meshes/<name>.obj`` and ``media/<name>.png`` (with ``write_meshes``: the bytes the
    predictor made), then
    ``params/<name>.safetensors`` holding the :data:`PARAMS`, ``keypoints_2d`` and the scalars
    ``energy``, ``reprojection_error_px``, ``confident_keypoints``, ``flipped``, ``fit_seconds``.
    """

    def __init__(self, run: runtime.Run, config: Any, items: list[FitItem]):
        self.run, self.config, self.items = run, config, list(items)
        self.params_dir = run.dir / "params"
        self.mesh_dir = run.dir / "meshes"
        self.params_dir.mkdir(parents=True, exist_ok=True)
        if config.write_meshes:
            self.mesh_dir.mkdir(parents=True, exist_ok=True)
            run.media_dir.mkdir(parents=True, exist_ok=True)
        self._pending: list[int] = []
        self._terms: dict[str, list[tuple[float, int]]] = {}
        self.written = 0

    def _params_path(self, item: FitItem) -> Path:
        return self.params_dir / f"{item.name}.safetensors"

    def pending(self) -> list[FitItem]:
        """The items of the batches (``config.batch_size`` consecutive items) not completely written yet.

        Whole batches are kept together, so a resumed run fits exactly the batches an uninterrupted one
        would have, with the same numbers (resume with the same ``batch_size``: a person's fit depends on
        the batch it shares the optimiser's stopping test with).
        """
        B = self.config.batch_size
        self._pending = []
        for start in range(0, len(self.items), B):
            batch = range(start, min(start + B, len(self.items)))
            if not all(self._params_path(self.items[i]).exists() for i in batch):
                self._pending.extend(batch)
        return [self.items[i] for i in self._pending]

    def __call__(self, indices: list[int], outputs: dict[str, Any]) -> None:
        """Write one batch: ``indices`` into :meth:`pending`'s list, ``outputs`` the predictor's dict."""
        for r, i in enumerate(indices):
            item = self.items[self._pending[i]]
            if "mesh_obj" in outputs:
                _write_bytes(self.mesh_dir / f"{item.name}.obj", outputs["mesh_obj"][r])
                _write_bytes(self.run.media_dir / f"{item.name}.png", outputs["overlay_png"][r])
            tensors = {k: outputs[k][r].contiguous() for k in PARAMS + ("keypoints_2d",)}
            tensors.update({k: outputs[k][r].reshape(1).to(torch.float32) for k in _SCALARS})
            runtime.save_safetensors(self._params_path(item), tensors)  # last: the image is complete
        for k, v in outputs.items():
            if k.startswith("terms/"):
                self._terms.setdefault(k, []).append((float(v[0]), len(indices)))
        self.written += len(indices)

    def load(self) -> dict[str, torch.Tensor]:
        """Every image's written results stacked in item order: ``{key: (N, ...)}``."""
        per = [runtime.load_safetensors(self._params_path(it)) for it in self.items]
        return {k: torch.stack([p[k] for p in per]) for k in per[0]}

    def finish(self, truth: SyntheticPeople | None = None) -> dict[str, Any]:
        """Metrics of the whole run from the files written (so a resumed run reports all images):
        energies, the reprojection error (mean, median, 90th percentile, per image in ``fits.csv``), the
        flipped count, the fit time per image, and with ``truth`` the errors against the ground truth.
        Writes ``fits.csv`` and logs the energy terms per stage (this process's batches) to TensorBoard;
        returns the metrics (the job writes ``metrics.json``)."""
        fits = self.load()
        err = fits["reprojection_error_px"][:, 0].double()
        ok = torch.isfinite(err)
        with (self.run.dir / "fits.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "reprojection_error_px", "confident_keypoints", "energy", "flipped", "fit_seconds"])
            for i, it in enumerate(self.items):
                w.writerow([it.name, f"{float(err[i]):.3f}", int(fits["confident_keypoints"][i]),
                            f"{float(fits['energy'][i]):.4g}", int(fits["flipped"][i]), f"{float(fits['fit_seconds'][i]):.4f}"])
        metrics: dict[str, Any] = {
            "images": len(self.items),
            "energy_mean": float(fits["energy"].mean()),
            "reprojection_error_px_mean": float(err[ok].mean()) if ok.any() else math.nan,
            "reprojection_error_px_median": float(err[ok].median()) if ok.any() else math.nan,
            "reprojection_error_px_p90": float(torch.quantile(err[ok], 0.9)) if ok.any() else math.nan,
            "reprojection_min_confidence": self.config.min_confidence,
            "images_without_confident_keypoints": int((~ok).sum()),
            "flipped": int(fits["flipped"].sum()),
            "seconds_per_image_in_fit": float(fits["fit_seconds"].mean()),
        }
        stages = sorted({k.split("/")[1] for k in self._terms}, key=lambda s: int(s.split("_")[0]))
        for k, vals in self._terms.items():
            total = sum(n for _, n in vals)
            self.run.log_scalars(stages.index(k.split("/")[1]), {f"energy/{k.split('/')[2]}":
                                                                   sum(v * n for v, n in vals) / total})
        if truth is not None:
            metrics.update(ground_truth_metrics(load_body_model(self.config.model), fits, truth))
        return metrics


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ground_truth_metrics(model, fits: dict[str, torch.Tensor], truth: SyntheticPeople) -> dict[str, float]:
    """2D error against the noise-free keypoints (observed ones and all), MPJPE and PA-MPJPE over the J
    model joints (mm), Procrustes-aligned vertex error (mm) of fits against synthetic ground truth."""
    P = {k: fits[k].to(model.dtype) for k in PARAMS}
    with torch.no_grad():
        out = smpl_forward(model.with_betas(P["betas"].shape[1]), P["betas"], P["body_pose"], P["global_orient"],
                           P["camera_translation"])
        gt = smpl_forward(model, truth.betas, truth.body_pose, truth.global_orient, truth.camera_translation)
    vis = truth.keypoints[..., 2] > 0
    kp2d = fits["keypoints_2d"].to(model.dtype)
    J = out.joints[:, :model.num_joints]
    return {
        "error_2d_px_observed": float(keypoint_error_2d(kp2d, truth.keypoints_clean, vis).mean()),
        "error_2d_px_all": float(keypoint_error_2d(kp2d, truth.keypoints_clean).mean()),
        "mpjpe_mm": float(1000 * mpjpe(J, truth.joints).mean()),
        "pa_mpjpe_mm": float(1000 * pa_mpjpe(J, truth.joints).mean()),
        "pa_vertex_error_mm": float(1000 * pa_mpjpe(out.vertices, gt.vertices).mean()),
    }
