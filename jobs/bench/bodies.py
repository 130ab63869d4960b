"""Benchmark of lib3d.bodies (issue 6's bars): SMPL forward against smplx, SMPLify speed and accuracy.

    python -m jobs.bench.bodies [--repeats 10] [--device cpu] [--quick] [--out results/benchmarks/bodies.json]
    python -m jobs.bench.bodies --only-smplify            # rerun the SMPLify section, keep the rest of --out
    python -m jobs.bench.bodies --only-smplify --lsp est_joints.npz --lsp-images 2000   # + the end-to-end job

- SMPL forward (6,890 vertices, 10 betas, no grad) of lib3d and ``smplx.SMPL`` on the same model file (the
  synthetic body written as an SMPL .pkl), same process, batch 1, 64, 512; median of ``repeats`` after one
  warm-up; wall-clock time and process CPU time; ratio lib3d / smplx (bar <= 1.0). Forward + backward too.
  Measured with the default torch threads and again with one thread (``forward_1_thread``).
  smplx 0.1.28 on the idle 2-core machine: 3.7, 26, 294 ms.
- SMPLify on synthetic people with ground truth (2 px noise, 10% dropped keypoints, LSP-14, focal 5000):
  seconds per image single (B = 1) and batched (B = 32), one torch thread; images per second through
  ``lib3d.runtime.evaluate`` with 1 and 2 Ray actors (actor start-up and model load included); 2D error
  (px, observed keypoints against the noise-free projections, and all mapped keypoints), MPJPE (pelvis-
  aligned) and PA-MPJPE over the 24 joints (mm), Procrustes-aligned vertex error (mm). Bar: <= 5 s per image
  batched.
- ``--lsp FILE``: ``jobs.smplify book`` end to end on a file shaped like the book's LSP ``est_joints.npz``
  (2 Ray actors, one thread each, batches of 16, meshes and overlays written; Ray start-up, model loading
  and writing included): images per second, wall seconds and the mean reprojection error. Issue 12's bar:
  >= 1.11 images/s (2,000 images in under 30 minutes on 2 cores).

Every figure is recorded with the load average around it: the 2-core machine is shared.
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

SMPLX_IDLE_MS = {1: 3.7, 64: 26.0, 512: 294.0}
_GMM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "book" / "smplify" / "gmm_08.pkl"


def _time(fn, repeats: int, device) -> tuple[float, float]:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def bench_forward(repeats: int, device: torch.device, batches=(1, 64, 512)) -> dict:
    import smplx

    from lib3d.bodies import save_smpl_model, smpl_forward, synthetic_smpl_model

    model = synthetic_smpl_model(device=device)
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        save_smpl_model(model, Path(d) / "synthetic.pkl")
        ref = smplx.SMPL(str(Path(d) / "synthetic.pkl")).to(device)
    for B in batches:
        g = torch.Generator().manual_seed(B)
        betas = torch.randn(B, 10, generator=g).to(device)
        pose = (0.5 * torch.randn(B, 69, generator=g)).to(device)
        orient = torch.randn(B, 3, generator=g).to(device)
        row = {}
        with torch.no_grad():
            row["smplx_ms"], row["smplx_cpu_ms"] = (1e3 * t for t in _time(
                lambda: ref(betas=betas, body_pose=pose, global_orient=orient), repeats, device))
            row["lib3d_ms"], row["lib3d_cpu_ms"] = (1e3 * t for t in _time(
                lambda: smpl_forward(model, betas, pose, orient), repeats, device))
        row["ratio"] = row["lib3d_ms"] / row["smplx_ms"]
        params = [p.clone().requires_grad_() for p in (betas, pose, orient)]

        def fb_smplx():
            ref(betas=params[0], body_pose=params[1], global_orient=params[2]).vertices.sum().backward()

        def fb_lib3d():
            smpl_forward(model, *params).vertices.sum().backward()

        row["smplx_fwd_bwd_ms"] = 1e3 * _time(fb_smplx, max(3, repeats // 2), device)[0]
        row["lib3d_fwd_bwd_ms"] = 1e3 * _time(fb_lib3d, max(3, repeats // 2), device)[0]
        row["fwd_bwd_ratio"] = row["lib3d_fwd_bwd_ms"] / row["smplx_fwd_bwd_ms"]
        row["smplx_idle_reference_ms"] = SMPLX_IDLE_MS.get(B)
        out[f"batch_{B}"] = row
        print(f"[bench.bodies] forward B={B}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if v is not None),
              flush=True)
    return out


def bench_smplify(n_batched: int, ray_images: int, ray_workers=(1, 2)) -> dict:
    from lib3d import runtime
    from lib3d.bodies import smpl_forward, synthetic_smpl_model
    from lib3d.bodies.metrics import keypoint_error_2d, mpjpe, pa_mpjpe
    from lib3d.bodies.pipeline import FitItem
    from lib3d.bodies.smplify import SMPLifyConfig, smplify, synthetic_people
    from lib3d.systems.smplify import SMPLifyPredictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    model = synthetic_smpl_model()
    cfg = SMPLifyConfig()
    data = synthetic_people(model, n_batched, "lsp", generator=torch.Generator().manual_seed(0))
    out: dict = {"config": "SMPLifyConfig() defaults (LM, 4 SMPLify stages + (1, 1) refinement, 30 iterations)",
                 "people": n_batched, "noise_px": 2.0, "drop_prob": 0.1, "torch_threads": 1}
    t0 = time.perf_counter()
    smplify(model, data.keypoints[:1], "lsp", center=data.center[:1], config=cfg)
    out["seconds_per_image_single"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = smplify(model, data.keypoints, "lsp", center=data.center, config=cfg)
    out["seconds_per_image_batched"] = (time.perf_counter() - t0) / n_batched
    vis = data.keypoints[..., 2] > 0
    fit = smpl_forward(model, res.betas, res.body_pose, res.global_orient, res.camera_translation)
    gt = smpl_forward(model, data.betas, data.body_pose, data.global_orient, data.camera_translation)
    J = fit.joints[:, :24]
    out.update({
        "error_2d_px_observed": float(keypoint_error_2d(res.keypoints_2d, data.keypoints_clean, vis).mean()),
        "error_2d_px_all": float(keypoint_error_2d(res.keypoints_2d, data.keypoints_clean).mean()),
        "mpjpe_mm": float(1000 * mpjpe(J, data.joints).mean()),
        "pa_mpjpe_mm": float(1000 * pa_mpjpe(J, data.joints).mean()),
        "pa_vertex_error_mm": float(1000 * pa_mpjpe(fit.vertices, gt.vertices).mean()),
        "flipped": int(res.flipped.sum()),
    })
    print(f"[bench.bodies] smplify: {out}", flush=True)
    items = [FitItem(f"p{i}", data.keypoints[i % n_batched], (512, 512)) for i in range(ray_images)]
    runtime.init_ray(quiet=True)
    for w in ray_workers:
        t0 = time.perf_counter()
        runtime.evaluate(SMPLifyPredictor, items, batch_size=max(1, ray_images // (2 * w)), num_actors=w,
                         predictor_kwargs=dict(config=cfg, threads=1), progress=False)
        wall = time.perf_counter() - t0
        out[f"ray_{w}_workers_images_per_second"] = ray_images / wall
        print(f"[bench.bodies] ray {w} workers: {ray_images / wall:.3f} images/s", flush=True)
    out["ray_images"] = ray_images
    out["loadavg_start"], out["loadavg_end"] = load0, os.getloadavg()
    torch.set_num_threads(threads)
    return out


def bench_lsp(path: str, images: int, name: str) -> dict:
    """``jobs.smplify book`` end to end on the first ``images`` people of an LSP-shaped ``est_joints.npz``."""
    import numpy as np

    from jobs.smplify import main as smplify_job

    with tempfile.TemporaryDirectory() as d:
        with np.load(path) as z:
            est = z["est_joints"][:, :, :images]
        npz = Path(d) / "est_joints.npz"
        np.savez(npz, est_joints=est)
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        m = smplify_job(["book", "--keypoints", str(npz), "--gmm", str(_GMM), "--ray.num-cpus", "2",
                         "--ray.no-include-dashboard", "--run.output-root", d, "--run.name", name,
                         "--run.no-progress"])
        wall = time.perf_counter() - t0
    out = {"images": est.shape[2], "workers": m["workers"], "batch_size": m["batch_size"], "wall_seconds": wall,
           "images_per_second": est.shape[2] / wall, "seconds_per_image_in_fit": m["seconds_per_image_in_fit"],
           "reprojection_error_px_mean": m["reprojection_error_px_mean"], "energy_mean": m["energy_mean"],
           "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    print(f"[bench.bodies] lsp: {out}", flush=True)
    return out


def main(args: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not the benchmark)")
    p.add_argument("--skip-smplify", action="store_true")
    p.add_argument("--only-smplify", action="store_true", help="rerun the SMPLify section only; the other "
                   "sections of --out are kept")
    p.add_argument("--lsp", default=None, help="an LSP-shaped est_joints.npz: also run jobs.smplify end to end")
    p.add_argument("--lsp-images", type=int, default=2000)
    p.add_argument("--note", default=None, help="replaces the report's note")
    p.add_argument("--out", default="results/benchmarks/bodies.json")
    a = p.parse_args(args)
    device = torch.device(a.device)
    out = Path(a.out)
    load0 = os.getloadavg()
    report = json.loads(out.read_text()) if a.only_smplify and out.exists() else {}
    report.update({
        "benchmark": "lib3d.bodies", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "device": str(device), "torch_threads": torch.get_num_threads(), "loadavg_start": load0},
        "torch": torch.__version__,
    })
    report["note"] = a.note or report.get("note") or (
        "CPU shared with other jobs while measured: timings are noisy; see loadavg. Ratios compare lib3d and "
        "smplx measured back to back in the same process.")
    if not a.only_smplify:
        report["forward"] = bench_forward(2 if a.quick else a.repeats, device, (1, 8) if a.quick else (1, 64, 512))
        # one thread as well: process CPU time at one thread is the figure least disturbed by a busy machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        report["forward_1_thread"] = bench_forward(2 if a.quick else a.repeats, device,
                                                   (1, 8) if a.quick else (1, 64, 512))
        torch.set_num_threads(threads)
    if not a.skip_smplify:
        report["smplify"] = bench_smplify(4 if a.quick else 32, 4 if a.quick else 32)
    if a.lsp:
        report["smplify_lsp_job"] = bench_lsp(a.lsp, 8 if a.quick else a.lsp_images, "bench")
    report["machine"]["loadavg_end"] = os.getloadavg()
    try:
        import smplx

        report["smplx"] = getattr(smplx, "__version__", "0.1.28")
    except ImportError:  # pragma: no cover
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"[bench.bodies] wrote {out}", flush=True)
    return report


if __name__ == "__main__":
    main()
