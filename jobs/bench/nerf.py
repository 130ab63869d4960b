"""Benchmark of volumetric rendering and NeRF (issue 5's bars).

    python -m jobs.bench.nerf [--default-minutes 15] [--book-minutes 10] [--skip-noarg] [--quick]
                              [--only-chapter5] [--only-grid-step] [--cow-mesh PATH] [--device cpu]
                              [--out results/benchmarks/nerf.json]

- Chapter-5 step: the book's ``VolumeModel`` (128^3 density + colour logits, voxel 3/128) rendered by
  ``VolumeRenderer(NDCMultinomialRaysampler(128 x 128, 150 points, depth 0.1..3), EmissionAbsorption)``
  for 10 of the book's 40 cow cameras, the book's Huber loss on colour and silhouette, forward + backward;
  median of N, with the compiled sampler (``compiled_sampler=True``) and with ``grid_sample``.
  Bar: <= 3.0 s on 2 cores (PyTorch3D 6.37 s).
- Grid NeRF step: one ``GridNerfSystem`` training step at the final grid sizes of the default preset (120^3
  density, 80^3 features, 4096 rays of 128 x 128 cow cameras through a sphere-shaped occupancy), median of N.
- NeRF on the cow (128 x 128, train on the 35 views with index % 8 != 0, test
  on the 5 with index % 8 == 0; rendered by lib3d from ``--cow-mesh``): held-out PSNR against wall-clock minutes for the ``cow`` preset (the fast
  default method) and the ``book`` preset (the book's NeRF, bounded time). Bar: >= 28 dB within 15 min
  (the book's method: 14.5 dB after 25 min). Rays per second of training for both.
- ``python -m jobs.nerf`` with no arguments: end-to-end time and held-out PSNR (bar: <= 10 min, >= 25 dB).

Wall-clock and process CPU time are both recorded (the CPU time is the better guide on a shared machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_chapter5_step(repeats: int, device: torch.device, compiled: bool = True) -> dict:
    """Forward + backward of one chapter-5 iteration (10 cameras, 128 x 128, 150 points, 128^3).

    ``compiled=False`` samples with ``grid_sample`` (the path before the compiled sampler, for a before/after
    comparison on the same machine). The images are random: the step's time does not depend on them.
    """
    from configs.fit_volume import FitVolumeConfig
    from jobs.bench.ops import _time
    from lib3d.data.renders import view_cameras
    from lib3d.systems.volume import book_huber_loss, volume_model

    model = volume_model(FitVolumeConfig(compiled_sampler=compiled), 128, 128).to(device)
    cams = view_cameras(40, device=device)[list(range(10))]  # the book's cameras
    g = torch.Generator().manual_seed(0)
    imgs, sils = torch.rand(10, 128, 128, 3, generator=g).to(device), torch.rand(10, 128, 128, generator=g).to(device)

    def step():
        out = model(cams)
        loss = book_huber_loss(out[..., :3], out[..., 3], imgs, sils)[0]
        model.zero_grad(set_to_none=True)
        loss.backward()

    t0 = time.perf_counter()
    step()  # warm-up: the first call compiles the CPU sampler
    _sync(device)
    first = time.perf_counter() - t0
    wall, cpu = _time(step, device, repeats)  # its warm-up call settles the automatic dynamic shapes
    return {"median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu), "runs_s": wall,
            "first_step_s": first, "compiled_sampler": compiled and device.type == "cpu", "bar_s": 3.0,
            "pytorch3d_s": 6.37, "repeats": repeats}


def bench_grid_step(repeats: int, device: torch.device) -> dict:
    """One training step of the grid NeRF at the default preset's final grid sizes (median of N)."""
    from configs.nerf import NerfConfig
    from jobs.bench.ops import _time
    from lib3d.data.posed_images import PosedImages
    from lib3d.data.renders import view_cameras
    from lib3d.runtime import WorkerContext, step_generator
    from lib3d.systems.nerf import GridNerfSystem

    torch.manual_seed(0)
    cams = view_cameras(40, device=device)
    H = W = 128
    from lib3d.render import image_rays

    o, d = image_rays(cams, H, W)
    dn = torch.nn.functional.normalize(d, dim=-1)
    sil = ((o - (o * dn).sum(-1, keepdim=True) * dn).norm(dim=-1) < 0.8).float()  # a sphere of radius 0.8
    data = PosedImages(cams, torch.rand(40, H, W, 3, device=device), sil, 0.0)
    config = NerfConfig(threads=0)
    grid = config.grid
    system = GridNerfSystem(data)
    state = system.init(config, WorkerContext(rank=0, world_size=1, local_rank=0, device=device))
    last = grid.upsample_at[-1] + 1  # the final grid sizes (and colours thresholded)
    system.train_step(state, last, step_generator(0, 0, last, device))
    steps = iter(range(last + 1, last + 1000))

    def step():
        i = next(steps)
        system.train_step(state, i, step_generator(0, 0, i, device))

    wall, cpu = _time(step, device, repeats)
    return {"median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu), "runs_s": wall,
            "repeats": repeats, "batch_rays": grid.batch_rays,
            "density_grid": list(state.modules["field"].density.shape[1:])}


def _run_job(args: list[str], root: str) -> tuple[dict, float, float]:
    from jobs.nerf import main

    c0, t0 = time.process_time(), time.perf_counter()
    res = main([*args, "--run.output-root", root])
    return res.result["metrics"], time.perf_counter() - t0, time.process_time() - c0


def bench_nerf(preset: str, minutes: float, eval_every: int, root: str, extra: list[str] | None = None) -> dict:
    args = [preset, "--run.name", f"bench-{preset}", "--run.time-limit-s", str(minutes * 60), "--run.eval-every",
            str(eval_every), "--run.checkpoint-every", "0", "--run.no-progress", *(extra or [])]
    m, wall, cpu = _run_job(args, root)
    train_s = m["train_seconds_this_run"]
    return {"preset": preset, "time_limit_minutes": minutes, "steps": m["steps"], "test_psnr": m["test_psnr"],
            "test_ssim": m["test_ssim"], "train_minutes": train_s / 60, "process_cpu_minutes": cpu / 60,
            "wall_minutes": wall / 60, "rays_per_second": m["rays_per_step"] * m["steps"] / max(train_s, 1e-9),
            "psnr_vs_minutes": [(h["seconds"] / 60, h["psnr"]) for h in m["history"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default-minutes", type=float, default=15.0, help="training time of the cow preset")
    ap.add_argument("--book-minutes", type=float, default=10.0, help="training time of the book preset")
    ap.add_argument("--repeats", type=int, default=3, help="chapter-5 step repeats (median)")
    ap.add_argument("--skip-noarg", action="store_true", help="skip the no-argument job run")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 3 + 2 minutes (a smoke of the benchmark)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the chapter-5 step (0: default)")
    ap.add_argument("--only-chapter5", action="store_true",
                    help="run only the chapter-5 step, with and without the compiled sampler, and update that "
                         "entry of --out (the NeRF runs in it are kept)")
    ap.add_argument("--only-grid-step", action="store_true",
                    help="run only the grid NeRF step and update that entry of --out")
    ap.add_argument("--cow-mesh", default="../shared/data/book/cow_mesh/cow.obj",
                    help="the book's cow.obj (the NeRF runs render its 40 views)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/benchmarks/nerf.json")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.default_minutes, a.book_minutes = 1, 3.0, 2.0
    device = torch.device(a.device)
    from lib3d.runtime import keep_freed_memory

    allocator_kept = keep_freed_memory()  # as the nerf and fit_volume presets ask (RunConfig.keep_freed_memory)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    use_gpu = ["--ray.use-gpu"] if device.type == "cuda" else []
    cow = ["--data", f"cow:{a.cow_mesh}"]
    out: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
        "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "keep_freed_memory": allocator_kept,
        "note": "the CPU was shared with other processes unless stated; process CPU time is recorded beside "
                "wall-clock time",
    }
    if a.only_grid_step:
        previous = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
        load = os.getloadavg()
        step = bench_grid_step(a.repeats, device)
        print("grid NeRF step:", step, flush=True)
        previous["grid_step"] = {**step, "torch_threads": torch.get_num_threads(), "date": out["date"],
                                 "loadavg_start": load, "loadavg_end": os.getloadavg(),
                                 **({"before": previous["grid_step"]["before"]}
                                    if "before" in previous.get("grid_step", {}) else {})}
        Path(a.out).write_text(json.dumps(previous, indent=2))
        print(f"updated grid_step in {a.out}")
        return
    if a.only_chapter5:
        previous = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
        load = os.getloadavg()
        eager = bench_chapter5_step(a.repeats, device, compiled=False)
        print("chapter-5 step, grid_sample:", eager, flush=True)
        step = bench_chapter5_step(a.repeats, device)
        print("chapter-5 step:", step, flush=True)
        previous["chapter5_step"] = {**step, "torch_threads": torch.get_num_threads(), "date": out["date"],
                                     "loadavg_start": load, "loadavg_end": os.getloadavg(),
                                     "grid_sample_same_run": eager, "keep_freed_memory": allocator_kept}
        Path(a.out).write_text(json.dumps(previous, indent=2))
        print(f"updated chapter5_step in {a.out}")
        return
    out["chapter5_step"] = {**bench_chapter5_step(a.repeats, device), "torch_threads": torch.get_num_threads()}
    print("chapter-5 step:", out["chapter5_step"], flush=True)
    with tempfile.TemporaryDirectory() as root:
        out["grid_step"] = bench_grid_step(a.repeats, device)
        print("grid NeRF step:", out["grid_step"], flush=True)
        out["nerf_cow_default"] = bench_nerf("cow", a.default_minutes, 250, root, [*cow, *use_gpu])
        print("cow (fast default):", out["nerf_cow_default"], flush=True)
        out["nerf_cow_book"] = bench_nerf("book", a.book_minutes, 0, root, ["--turntable-frames", "0", *cow, *use_gpu])
        print("cow (book):", out["nerf_cow_book"], flush=True)
        if not a.skip_noarg:
            m, wall, cpu = _run_job(["--run.name", "bench-noarg", "--run.no-progress", *use_gpu], root)
            out["noarg_job"] = {"wall_minutes": wall / 60, "process_cpu_minutes": cpu / 60, "test_psnr": m["test_psnr"],
                                "test_ssim": m["test_ssim"], "steps": m["steps"], "stopped_early": m["stopped_early"],
                                "rays_per_second": m["rays_per_step"] * m["steps"] / max(m["train_seconds_this_run"], 1e-9),
                                "bar": "<= 10 min, >= 25 dB"}
            print("no-argument job:", out["noarg_job"], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
