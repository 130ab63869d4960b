"""Render benchmark: ``python -m jobs.bench.render [--repeats 5] [--device cpu|cuda|all] [--only NAME ...]``.

Workloads (issue 7; float32; the bar is PyTorch3D 0.7.9's C++ CPU kernels on the 2-core dev machine):

- ``raster_512``: rasterization only of the textured cow at raw scale, 512x512, 1 face/pixel, book ch2 view
  ``look_at_view_transform(2.7, 0, 180)`` with ``FoVPerspectiveCameras``.
- ``hard_phong_512``: the same scene fully rendered with hard Phong shading (``PointLights([0, 0, -3])``).
- ``soft_silhouette_256``: normalised cow, 256x256, 100 faces/pixel, blur ``log(1/1e-4 - 1) * 1e-4``,
  ``SoftSilhouetteShader(BlendParams(1e-4, 1e-4))``, forward + backward of an image loss to the camera
  position (book ch4, view dist 3, elev 50, azim 0).
- ``soft_phong_256``: as above with ``SoftPhongShader`` (textured, ``PointLights([2, 2, -2])``), 50 faces/pixel.

Each workload runs in its own spawned process so that its peak resident memory (``ru_maxrss``) is its own;
one warm-up run, then the median of ``--repeats`` timed runs. Writes ``results/benchmarks/render.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
COW = ROOT.parent / "shared" / "data" / "book" / "cow_mesh" / "cow.obj"
OUT = ROOT / "results" / "benchmarks" / "render.json"

# name -> (PyTorch3D C++ CPU seconds, lib3d bar seconds)
BARS = {
    "raster_512": (4.13, 0.40),
    "hard_phong_512": (4.36, 0.45),
    "soft_silhouette_256": (8.09, 1.0),
    "soft_phong_256": (8.76, 1.2),
}
RSS_BAR_MB = 2048
BLUR = math.log(1.0 / 1e-4 - 1.0) * 1e-4


def _load_cow(device, normalise: bool):
    """The book's textured cow (lib3d.io when available; raw verts/faces/UVs otherwise)."""
    from lib3d.io import load_objs_as_meshes

    meshes = load_objs_as_meshes([str(COW)], device=device)
    if normalise:  # the book's generate_cow_renders normalisation (one scalar scale)
        verts = meshes.verts_packed()
        centre = verts.mean(0)
        scale = (verts - centre).abs().max()
        meshes = meshes.offset_verts(-centre).scale_verts(1.0 / float(scale))
    return meshes


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(name: str, device: torch.device):
    """A zero-argument callable running one iteration of workload ``name``."""
    from lib3d.geometry import FoVPerspectiveCameras, look_at_rotation, look_at_view_transform
    from lib3d.render.mesh_rasterizer import MeshRasterizer, RasterizationSettings

    if name in ("raster_512", "hard_phong_512"):
        meshes = _load_cow(device, normalise=False)
        R, T = look_at_view_transform(2.7, 0, 180, device=device)
        cameras = FoVPerspectiveCameras(R=R, T=T, device=device)
        settings = RasterizationSettings(image_size=512, blur_radius=0.0, faces_per_pixel=1)
        if name == "raster_512":
            rasterizer = MeshRasterizer(cameras, settings)
            return lambda: rasterizer(meshes).pix_to_face
        from lib3d.render.shading import PointLights, render_mesh

        lights = PointLights(location=[[0.0, 0.0, -3.0]], device=device)
        return lambda: render_mesh(meshes, cameras, lights, raster_settings=settings, shader="hard_phong")

    from lib3d.render.shading import BlendParams, PointLights, render_mesh

    meshes = _load_cow(device, normalise=True)
    K = 100 if name == "soft_silhouette_256" else 50
    settings = RasterizationSettings(image_size=256, blur_radius=BLUR, faces_per_pixel=K)
    R0, T0 = look_at_view_transform(3.0, 50.0, 0.0, device=device)
    position0 = -(R0 @ T0[:, :, None])[:, :, 0]  # camera centre C = -R T (row-vector convention)
    if name == "soft_silhouette_256":
        shader, blend, lights = "soft_silhouette", BlendParams(sigma=1e-4, gamma=1e-4), None
    else:
        shader, blend = "soft_phong", BlendParams(sigma=1e-4, gamma=1e-4)
        lights = PointLights(location=[[2.0, 2.0, -2.0]], device=device)
    target = None

    def step():
        nonlocal target
        position = (position0 + 0.1).clone().requires_grad_(True)  # chapter 4: optimise the camera position
        R = look_at_rotation(position, device=device)
        T = -torch.bmm(R.transpose(1, 2), position[:, :, None])[:, :, 0]
        cameras = FoVPerspectiveCameras(R=R, T=T, device=device)
        image = render_mesh(meshes, cameras, lights, raster_settings=settings, shader=shader, blend_params=blend)
        if target is None:
            target = image.detach() * 0.5
        loss = ((image - target) ** 2).sum()
        loss.backward()
        return position.grad

    return step


def _worker(name: str, device: str, repeats: int, threads: int, queue) -> None:
    try:
        torch.set_num_threads(threads)
        dev = torch.device(device)
        fn = _build(name, dev)
        fn()  # warm-up
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - t0)
        res = {"times_s": times, "median_s": statistics.median(times),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        if dev.type == "cuda":
            res["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        queue.put(res)
    except Exception as e:  # noqa: BLE001 - report any failure, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def run_workload(name: str, device: str, repeats: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(name, device, repeats, threads, queue))
    proc.start()
    try:
        res = queue.get(timeout=1800)
    finally:
        proc.join(timeout=60)
    p3d, bar = BARS[name]
    res.update({"device": device, "pytorch3d_cpu_s": p3d, "bar_s": bar})
    if "median_s" in res and device == "cpu":
        res["meets_bar"] = bool(res["median_s"] <= bar and res["peak_rss_mb"] <= RSS_BAR_MB)
        res["speedup_vs_pytorch3d_cpu"] = p3d / res["median_s"]
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per workload (median reported)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"],
                    help="cpu, cuda, or all (cuda only when available)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the bar was measured on 2 cores)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of workloads: " + ", ".join(BARS))
    ap.add_argument("--out", default=str(OUT), help="output JSON path")
    args = ap.parse_args(argv)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    names = args.only or list(BARS)
    results: dict = {}
    for device in devices:
        for name in names:
            key = name if device == "cpu" else f"{name}@{device}"
            results[key] = run_workload(name, device, args.repeats, args.threads)
            print(f"{key:28s} {json.dumps(results[key])}", flush=True)
    report = {
        "benchmark": "render",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": args.threads,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average": os.getloadavg()},
        "repeats": args.repeats,
        "dtype": "float32",
        "notes": "median of repeats after one warm-up; each workload in its own process (peak_rss_mb is its "
                 "ru_maxrss); bars from issue 7 (PyTorch3D 0.7.9 C++ CPU in pytorch3d_cpu_s). CPU timings "
                 "taken while other jobs shared the machine are noisy.",
        "workloads": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and args.only:  # keep the other workloads of a previous full run
        try:
            old = json.loads(out.read_text())
            old_w = old.get("workloads", {})
            old_w.update(results)
            report["workloads"] = old_w
        except (ValueError, OSError):
            pass
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
