"""The book's chapter 2-3 fits as systems of ``runtime.train``: ``jobs.fit_translation`` and ``jobs.fit_mesh``.

- Chapter 2 (``TranslationFitSystem``): a heterogeneous batch of meshes (cube, diamond, dodecahedron) is
  observed as noisy surface points shifted by an unknown offset; SGD on the Chamfer distance between surface
  samples of the shifted meshes and the observations recovers the offset.
- Chapter 3 (``MeshFitSystem``): ``ico_sphere(4)`` is deformed into a point cloud by SGD on per-vertex
  offsets with ``w_c chamfer + w_e edge + w_n normal_consistency + w_l laplacian`` (Wang et al., Pixel2Mesh,
  2018). The cloud is normalised as the book's ``deform1.py`` does (``normalize_points``: centre at the
  mean, divide by the largest absolute coordinate) and the fitted mesh is written back in the cloud's own
  units (``verts * scale + center``), so ``fitted.ply`` overlays the input cloud.

Dimension names: N meshes in a batch, V vertices, F faces, P target points, S surface samples per mesh,
T turntable frames, H/W image height/width.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from lib3d import runtime
from lib3d._checks import check_shape
from lib3d.ops.chamfer import chamfer_distance
from lib3d.ops.mesh_losses import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from lib3d.ops.sample_points import sample_points_from_meshes
from lib3d.runtime import Evaluation, TrainState, WorkerContext, derive_seed

__all__ = [
    "CHAPTER2_MESHES",
    "MeshDeformation",
    "MeshFitLosses",
    "MeshFitSystem",
    "Translation",
    "TranslationFitSystem",
    "chapter2_meshes",
    "final_chamfer",
    "load_target_cloud",
    "mesh_fitting_loss",
    "normalize_points",
    "render_points",
    "render_views",
    "translation_fitting_loss",
]

CHAPTER2_MESHES = ("cube", "diamond", "dodecahedron")
"""The book's chapter-2 OBJ files (``<name>.obj`` in ``mesh_dir``)."""


# ------------------------------------------------------------------------------------------------ losses


def translation_fitting_loss(meshes, translation: torch.Tensor, target_points: torch.Tensor, num_samples: int,
                             generator: torch.Generator | None = None,
                             batch_reduction: Literal["mean", "sum"] | None = "mean") -> torch.Tensor:
    """Chamfer distance between samples of ``meshes`` moved by ``translation`` and ``target_points``.

    Args:
        meshes: ``Meshes`` of N meshes.
        translation: ``(3,) float`` offset applied to every vertex (the parameter).
        target_points: ``(N, P, 3) float`` observed points of each mesh.
        num_samples: samples S per mesh.
        generator: random generator of the surface samples (on the meshes' device).
        batch_reduction: ``"mean"`` / ``"sum"`` over the N meshes, or None for the ``(N,)`` per-mesh values.

    Returns:
        ``() float`` (or ``(N,)`` with ``batch_reduction=None``) Chamfer distance.
    """
    check_shape("translation", translation, (3,), dtype="float")
    check_shape("target_points", target_points, (len(meshes), None, 3), dtype="float")
    samples = sample_points_from_meshes(meshes.offset_verts(translation), num_samples, generator=generator)
    return chamfer_distance(samples, target_points, batch_reduction=batch_reduction)[0]


class MeshFitLosses(NamedTuple):
    """Terms of the chapter-3 objective (each a ``() float`` tensor); ``total`` is their weighted sum."""

    chamfer: torch.Tensor
    edge: torch.Tensor
    normal: torch.Tensor
    laplacian: torch.Tensor
    total: torch.Tensor


def mesh_fitting_loss(meshes, target_points: torch.Tensor, num_samples: int, w_chamfer: float = 1.0,
                      w_edge: float = 1.0, w_normal: float = 0.01, w_laplacian: float = 0.1,
                      laplacian_method: Literal["uniform", "cot", "cotcurv"] = "uniform",
                      generator: torch.Generator | None = None) -> MeshFitLosses:
    """The book's chapter-3 mesh-fitting objective.

    ``total = w_chamfer CD(samples, target) + w_edge E + w_normal NC + w_laplacian L`` with S surface
    samples of ``meshes``; a regulariser of weight zero is still reported, computed without autograd.

    Args:
        meshes: ``Meshes`` being deformed (N meshes).
        target_points: ``(N, P, 3) float`` target clouds.
        num_samples: samples S per mesh.
        w_chamfer, w_edge, w_normal, w_laplacian: the weights.
        laplacian_method: the Laplacian of the smoothing term.
        generator: random generator of the surface samples.

    Returns:
        :class:`MeshFitLosses`.
    """
    check_shape("target_points", target_points, (len(meshes), None, 3), dtype="float")
    samples = sample_points_from_meshes(meshes, num_samples, generator=generator)
    chamfer = chamfer_distance(samples, target_points)[0]

    def term(w: float, fn) -> torch.Tensor:
        if w == 0:
            with torch.no_grad():
                return fn().reshape(())
        return fn().reshape(())

    edge = term(w_edge, lambda: mesh_edge_loss(meshes))
    normal = term(w_normal, lambda: mesh_normal_consistency(meshes))
    lap = term(w_laplacian, lambda: mesh_laplacian_smoothing(meshes, method=laplacian_method))
    total = w_chamfer * chamfer + w_edge * edge + w_normal * normal + w_laplacian * lap
    return MeshFitLosses(chamfer, edge, normal, lap, total)


# ------------------------------------------------------------------------------------------------ data


def normalize_points(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The book's normalisation of a cloud (``deform1.py``): centre at the mean, divide by the largest
    absolute coordinate, so the cloud fits the cube ``[-1, 1]^3`` and touches it.

    ``points == normalised * scale + center`` maps a result back onto the input.

    Args:
        points: ``(P, 3) float``.

    Returns:
        ``(normalised (P, 3), center (3,), scale ())``.

    Raises:
        ValueError: for an empty cloud or one whose points all coincide (zero extent).
    """
    check_shape("points", points, ("P", 3), dtype="float")
    if points.shape[0] == 0:
        raise ValueError("normalize_points: points is empty, shape (0, 3)")
    center = points.mean(0)
    centred = points - center
    scale = centred.abs().max()
    if not bool(scale > 0):
        raise ValueError(f"normalize_points: all {points.shape[0]} points coincide (zero extent); cannot scale")
    return centred / scale, center, scale


def chapter2_meshes(mesh_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
    """The chapter-2 batch of N = 3 meshes: the book's ``cube.obj``, ``diamond.obj``, ``dodecahedron.obj``
    from ``mesh_dir``, or lib3d's embedded cube, octahedron and dodecahedron (None)."""
    from lib3d.structures import Meshes

    if mesh_dir is None:
        from lib3d.data import primitives

        shapes = [primitives.cube(), primitives.octahedron(), primitives.dodecahedron()]
        return Meshes([v for v, _ in shapes], [f for _, f in shapes]).to(device)
    from lib3d.io import load_objs_as_meshes

    return load_objs_as_meshes([Path(mesh_dir) / f"{n}.obj" for n in CHAPTER2_MESHES], device=device,
                               load_textures=False)


def load_target_cloud(points: str | os.PathLike | None, num_points: int = 250, noise: float = 0.01,
                      seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(P, 3) float32`` target cloud: the vertices of a PLY file (``points``), or lib3d's procedural
    person-shaped cloud of ``num_points`` points with Gaussian ``noise`` drawn from ``seed`` (None)."""
    if points is not None:
        from lib3d.io import load_ply

        return load_ply(points)[0].to(device=device, dtype=torch.float32)
    from lib3d.data.person_cloud import person_cloud

    return person_cloud(num_points, noise, generator=torch.Generator().manual_seed(seed), device=device)


# --------------------------------------------------------------------------------------------- pictures


def _turntable_cameras(num: int, device):
    """``num`` views at elevation 10 and distance 2.7, azimuths evenly over a full turn from 0 (the front)."""
    from lib3d.data.renders import view_cameras

    return view_cameras(num, azimuth_range=180.0, elev=10.0, dist=2.7, device=device, endpoint=False)


def render_views(meshes, num_views: int, image_size: int, chunk: int = 4) -> torch.Tensor:
    """``(T, H, W, 3)`` Phong renders (CPU) of a one-mesh ``Meshes`` turning around the Y axis (T =
    ``num_views`` azimuths from 0, elevation 10 degrees, distance 2.7; H = W = ``image_size``)."""
    from lib3d.render.lighting import PointLights
    from lib3d.render.mesh_rasterizer import RasterizationSettings
    from lib3d.render.shading import render_mesh
    from lib3d.structures import Meshes, TexturesVertex

    device = meshes.device
    verts, faces = meshes.verts_packed().detach(), meshes.faces_packed()
    colour = torch.tensor([0.7, 0.75, 0.9], device=device).expand(verts.shape[0], 3)
    cams = _turntable_cameras(num_views, device)
    settings = RasterizationSettings(image_size=image_size, faces_per_pixel=1)
    lights = PointLights(location=[[0.0, 2.0, 3.0]], device=device)  # camera side (azimuth 0 looks from +Z)
    frames = []
    for s in range(0, num_views, chunk):  # chunks of views bound the rasterizer's memory
        n = min(chunk, num_views - s)
        m = Meshes([verts] * n, [faces] * n, textures=TexturesVertex([colour] * n))
        img = render_mesh(m, cams[list(range(s, s + n))], lights, raster_settings=settings)
        frames.append(img[..., :3].clamp(0, 1))
    return torch.cat(frames, 0).cpu()


def render_points(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(H, W, 3) float`` image (CPU) of a ``(P, 3)`` cloud seen by the first turntable camera (the front
    view): a blue disc of radius ``max(1, H / 128)`` pixels around each projected point on white."""
    check_shape("points", points, ("P", 3), dtype="float")
    cams = _turntable_cameras(1, points.device)
    xy = cams.transform_points_screen(points[None], image_size=(image_size, image_size))[0, :, :2].cpu()
    r = max(1.0, image_size / 128)
    k = int(r) + 1
    d = torch.arange(-k, k + 1, dtype=xy.dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    centre = xy.round()
    px = (centre[:, None, 0] + dx.reshape(1, -1)).long()  # (P, D) candidate pixels of each disc
    py = (centre[:, None, 1] + dy.reshape(1, -1)).long()
    inside = ((px.to(xy.dtype) - xy[:, None, 0]) ** 2 + (py.to(xy.dtype) - xy[:, None, 1]) ** 2 <= r * r) \
        & (px >= 0) & (px < image_size) & (py >= 0) & (py < image_size)
    img = torch.ones(image_size, image_size, 3)
    img[py[inside], px[inside]] = torch.tensor([30.0, 60.0, 160.0]) / 255
    return img


def final_chamfer(meshes, target: torch.Tensor, num_samples: int = 10000, seed: int = 0) -> float:
    """Chamfer distance between ``num_samples`` surface samples of a one-mesh ``Meshes`` and a ``(P, 3)``
    target (the figure the book's ablation is judged by)."""
    check_shape("target", target, ("P", 3), dtype="float")
    gen = torch.Generator(device=meshes.device).manual_seed(seed)
    with torch.no_grad():
        samples = sample_points_from_meshes(meshes, num_samples, generator=gen)
        return float(chamfer_distance(samples, target[None])[0])


# ------------------------------------------------------------------------------------------------ modules


class Translation(nn.Module):
    """The chapter-2 parameter: one ``(3,)`` offset ``translation`` (zero at start)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.translation = nn.Parameter(torch.zeros(3, dtype=dtype))

    def forward(self, meshes):
        """``meshes`` moved by the offset."""
        return meshes.offset_verts(self.translation)


class MeshDeformation(nn.Module):
    """The chapter-3 parameter: per-vertex offsets ``deform_verts (V, 3)`` of a source mesh (zero at start)."""

    def __init__(self, num_verts: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.deform_verts = nn.Parameter(torch.zeros(num_verts, 3, dtype=dtype))

    def forward(self, meshes):
        """The deformed ``meshes`` (packed vertices ``V`` must match)."""
        return meshes.offset_verts(self.deform_verts)


def _positive(config, *names: str, allow_zero: tuple[str, ...] = ()) -> None:
    for n in names:
        v = getattr(config, n)
        if v < 0 or (v == 0 and n not in allow_zero):
            raise runtime.UserError(f"--{n.replace('_', '-')} must be {'>= 0' if n in allow_zero else '> 0'}, got {v}")


def _single_worker(config, job: str) -> None:
    if config.ray.num_workers > 1:
        raise runtime.UserError(f"--ray.num-workers {config.ray.num_workers}: {job} fits one problem and runs on "
                                "one worker (0 or 1)")


# ------------------------------------------------------------------------------------------ chapter 2


class TranslationFitSystem:
    """``runtime.train``'s contract for the chapter-2 fit (config: ``configs.fit_translation``).

    The loss is ``translation_fitting_loss`` (the batch mean), computed data parallel over the mesh batch:
    each step draws the surface samples of all N meshes from a stream seeded by (seed, step) only, each rank
    takes its shard of the meshes (``shard_indices``), its loss is ``world_size / N`` times the sum of its
    meshes' Chamfer distances and the gradients are averaged (``all_reduce_gradients``), so any number of
    workers follows one worker's trajectory. The logged ``chamfer`` is the mean over the rank's meshes.
    """

    name = "fit_translation"

    def num_steps(self, config) -> int:
        return config.iterations

    def check_config(self, config) -> None:
        """User mistakes (``runtime.UserError``): missing book OBJ files, non-positive sizes."""
        if config.mesh_dir is not None:
            missing = [n for n in CHAPTER2_MESHES if not (Path(config.mesh_dir) / f"{n}.obj").is_file()]
            if missing:
                raise runtime.UserError(f"--mesh-dir {config.mesh_dir}: no {', '.join(m + '.obj' for m in missing)} "
                                        "there (the book's chapter-2 meshes)")
        _positive(config, "num_samples", "lr", "iterations")
        _positive(config, "noise", "momentum", allow_zero=("noise", "momentum"))

    def init(self, config, ctx: WorkerContext) -> TrainState:
        meshes = chapter2_meshes(config.mesh_dir)  # the observations are drawn on the CPU: any device agrees
        g = torch.Generator().manual_seed(derive_seed(config.run.seed, "observations"))
        offset = torch.tensor(config.offset, dtype=torch.float32)
        with torch.no_grad():
            observed = sample_points_from_meshes(meshes, config.num_samples, generator=g) + offset
            observed = observed + config.noise * torch.randn(observed.shape, generator=g)
        model = Translation().to(ctx.device)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        shard = runtime.shard_indices(len(meshes), ctx.rank, ctx.world_size)
        data = {"meshes": meshes.to(ctx.device), "observed": observed.to(ctx.device), "offset": offset.to(ctx.device),
                "config": config, "ctx": ctx, "shard": list(shard)}
        return TrainState(modules={"model": model}, optimizers={"model": opt}, data=data)

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        config, ctx, meshes = d["config"], d["ctx"], d["meshes"]
        model, opt = state.modules["model"], state.optimizers["model"]
        # the samples of all N meshes from one (seed, step) stream, the Chamfer terms of this rank's meshes
        g = torch.Generator(device=ctx.device).manual_seed(derive_seed(config.run.seed, "samples", step))
        samples = sample_points_from_meshes(model(meshes), config.num_samples, generator=g)
        shard = d["shard"]
        chamfer_sum = chamfer_distance(samples[shard], d["observed"][shard], batch_reduction="sum")[0] \
            if shard else model.translation.sum() * 0.0
        opt.zero_grad(set_to_none=True)
        (chamfer_sum * (ctx.world_size / len(meshes))).backward()
        runtime.all_reduce_gradients(model)  # the mean over the workers: the batch mean of one worker
        opt.step()
        t = model.translation.detach()
        return {"chamfer": chamfer_sum.detach() / max(len(shard), 1), "error": (t - d["offset"]).norm(),
                "translation/x": t[0], "translation/y": t[1], "translation/z": t[2]}

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        recovered = state.modules["model"].translation.detach().cpu()
        offset = state.data["offset"].cpu()
        return Evaluation(metrics={
            "recovered_translation": recovered.tolist(),
            "true_offset": offset.tolist(),
            "max_abs_error": float((recovered - offset).abs().max()),
            "world_size": state.data["ctx"].world_size,
        })


# ------------------------------------------------------------------------------------------ chapter 3


class MeshFitSystem:
    """``runtime.train``'s contract for the chapter-3 fit (config: ``configs.fit_mesh``).

    One problem on one worker (``check_config`` refuses ``--ray.num-workers`` above 1). Each step's surface
    samples come from the loop's per-step generator, so a resumed run draws what an uninterrupted one draws.
    Evaluations write ``fitted.ply`` (the deformed sphere mapped back into the cloud's units) into the run
    directory and return the renders ``before`` (the sphere), ``target`` (the cloud), ``after`` and, once
    all steps are done, the ``turntable`` GIF.
    """

    name = "fit_mesh"

    def num_steps(self, config) -> int:
        return config.iterations

    def check_config(self, config) -> None:
        """User mistakes (``runtime.UserError``): a missing, unreadable or degenerate ``--points`` file, bad
        sizes, more than one worker. The PLY is read here, in the driver, before any worker starts."""
        _single_worker(config, "fit_mesh")
        _positive(config, "iterations", "lr", "num_points")
        _positive(config, "noise", "momentum", "image_size", "turntable_frames", "w_chamfer", "w_edge", "w_normal",
                  "w_laplacian", allow_zero=("noise", "momentum", "image_size", "turntable_frames", "w_chamfer",
                                             "w_edge", "w_normal", "w_laplacian"))
        if config.num_samples is not None and config.num_samples <= 0:
            raise runtime.UserError(f"--num-samples must be > 0 (or None), got {config.num_samples}")
        if not 0 <= config.ico_level <= 6:
            raise runtime.UserError(f"--ico-level must be in 0..6, got {config.ico_level}")
        if config.points is None:
            return
        path = Path(config.points)
        if not path.exists():
            raise runtime.UserError(f"--points {config.points}: no such file")
        if not path.is_file():
            raise runtime.UserError(f"--points {config.points}: not a file")
        pts = load_target_cloud(path)  # a malformed file raises FormatError (one line, exit 2 in run_main)
        if pts.shape[0] == 0:
            raise runtime.UserError(f"--points {config.points}: the file holds no vertices")
        if config.normalize and not bool((pts - pts.mean(0)).abs().max() > 0):
            raise runtime.UserError(f"--points {config.points}: all points coincide (zero extent)")

    def init(self, config, ctx: WorkerContext) -> TrainState:
        from lib3d.ops.ico_sphere import ico_sphere

        raw = load_target_cloud(config.points, config.num_points, config.noise, config.run.seed, ctx.device)
        if config.normalize:
            target, center, scale = normalize_points(raw)
        else:
            target, center, scale = raw, raw.new_zeros(3), raw.new_ones(())
        src = ico_sphere(config.ico_level, ctx.device)
        model = MeshDeformation(src.verts_packed().shape[0]).to(ctx.device)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        data = {"src": src, "target": target, "center": center, "scale": scale, "config": config,
                "num_samples": config.num_samples or target.shape[0],
                "run_dir": runtime.run_directory(self.name, config)}
        return TrainState(modules={"model": model}, optimizers={"model": opt}, data=data)

    def train_step(self, state: TrainState, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = state.data
        c = d["config"]
        model, opt = state.modules["model"], state.optimizers["model"]
        losses = mesh_fitting_loss(model(d["src"]), d["target"][None], d["num_samples"], c.w_chamfer, c.w_edge,
                                   c.w_normal, c.w_laplacian, c.laplacian_method, generator=generator)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        opt.step()
        return {"loss": losses.total.detach(), "chamfer": losses.chamfer.detach(), "edge": losses.edge.detach(),
                "normal": losses.normal.detach(), "laplacian": losses.laplacian.detach()}

    def fitted_mesh(self, state: TrainState, input_units: bool = True):
        """The deformed sphere as a one-mesh ``Meshes``: in the input cloud's units (``verts * scale +
        center``, the book's ``deform1.py``), or in the normalised units the fit runs in."""
        d = state.data
        with torch.no_grad():
            fitted = state.modules["model"](d["src"])
            if input_units:
                fitted = fitted.update_padded(fitted.verts_padded() * d["scale"] + d["center"])
        return fitted

    def evaluate(self, state: TrainState, step: int) -> Evaluation:
        from lib3d.io import save_ply

        d = state.data
        c = d["config"]
        fitted = self.fitted_mesh(state, input_units=False)
        out = self.fitted_mesh(state, input_units=True)
        d["run_dir"].mkdir(parents=True, exist_ok=True)
        save_ply(d["run_dir"] / "fitted.ply", out.verts_packed().cpu(), out.faces_packed().cpu())
        metrics = {
            "final_chamfer_10k_samples": final_chamfer(fitted, d["target"]),
            "final_normal_consistency": float(mesh_normal_consistency(fitted)),
            "target_points": int(d["target"].shape[0]),
            "center": d["center"].tolist(),
            "scale": float(d["scale"]),
        }
        images, gifs = {}, {}
        if c.image_size > 0:
            images = {"before": render_views(d["src"], 1, c.image_size)[0],
                      "target": render_points(d["target"], c.image_size),
                      "after": render_views(fitted, 1, c.image_size)[0]}
            if c.turntable_frames > 0 and step >= c.iterations:
                gifs = {"turntable": render_views(fitted, c.turntable_frames, c.image_size)}
        return Evaluation(metrics=metrics, images=images, gifs=gifs)
