"""Benchmark of lib3d.ops against PyTorch3D 0.7.9's C++ CPU kernels (issue 4's bar).

    python -m jobs.bench.ops [--repeats 5] [--device cpu] [--out results/benchmarks/ops.json]

Median of ``repeats`` timed runs (after one warm-up), float32; wall-clock time (the bar) and process CPU
time (all threads summed; less sensitive to a loaded machine) are both recorded, with the load average. The 20k x 20k KNN's peak memory is
measured in a fresh subprocess as the growth of the resident set size (sampled from ``/proc``) during the
call.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# workload -> (PyTorch3D seconds, lib3d bar seconds)
BARS = {
    "knn_k1_b3_5000x5000": (0.260, 0.15),
    "knn_k1_20000x20000": (1.54, 0.8),
    "chapter2_step": (0.61, 0.3),
    "chapter3_step": (0.0134, 0.013),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def knn_small(device):
    from lib3d.ops import knn_points

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5000, 3, generator=g).to(device)
    y = torch.rand(3, 5000, 3, generator=g).to(device)
    return lambda: knn_points(x, y, K=1)


def knn_large(device):
    from lib3d.ops import knn_points

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 20000, 3, generator=g).to(device)
    y = torch.rand(1, 20000, 3, generator=g).to(device)
    return lambda: knn_points(x, y, K=1)


def chapter2_step(device):
    """Book ch. 2: chamfer between samples of a translated heterogeneous batch and of the target."""
    from lib3d.ops import chamfer_distance, ico_sphere, sample_points_from_meshes
    from lib3d.structures import join_meshes_as_batch

    meshes = join_meshes_as_batch([ico_sphere(2, device), ico_sphere(3, device), ico_sphere(4, device)])
    t = torch.zeros(3, device=device, requires_grad=True)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        src = sample_points_from_meshes(meshes.offset_verts(t), 5000, generator=gen)
        tgt = sample_points_from_meshes(meshes, 5000, generator=gen)
        loss, _ = chamfer_distance(src, tgt)
        t.grad = None
        loss.backward()

    return step


def chapter3_step(device):
    """Book ch. 3: deform ico_sphere(4) towards a 239-point cloud with chamfer + 3 regularisers."""
    from lib3d.ops import (
        chamfer_distance,
        ico_sphere,
        mesh_edge_loss,
        mesh_laplacian_smoothing,
        mesh_normal_consistency,
        sample_points_from_meshes,
    )

    src = ico_sphere(4, device)
    g = torch.Generator().manual_seed(0)
    target = torch.randn(1, 239, 3, generator=g).to(device)
    deform = torch.zeros_like(src.verts_packed(), requires_grad=True)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        new = src.offset_verts(deform)
        sample = sample_points_from_meshes(new, 239, generator=gen)
        loss_chamfer, _ = chamfer_distance(sample, target)
        loss = (loss_chamfer + mesh_edge_loss(new) + 0.01 * mesh_normal_consistency(new)
                + 0.1 * mesh_laplacian_smoothing(new, method="uniform"))
        deform.grad = None
        loss.backward()

    return step


def _peak_memory_knn_large(device: str) -> float | None:
    """Peak resident-memory growth (bytes) of one 20k x 20k KNN, measured in a fresh process by sampling
    ``/proc/self/statm`` every 0.5 ms during the call (Linux)."""
    if device != "cpu" or not os.path.exists("/proc/self/statm"):
        return None
    code = (
        "import os, threading, time, torch\n"
        "from lib3d.ops import knn_points\n"
        "torch.set_num_threads(2)\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "def rss():\n"
        "    with open('/proc/self/statm') as f:\n"
        "        return int(f.read().split()[1]) * page\n"
        "x = torch.rand(1, 20000, 3); y = torch.rand(1, 20000, 3)\n"
        "knn_points(x[:, :100], y[:, :100])\n"
        "base = rss(); peak = [base]; stop = [False]\n"
        "def watch():\n"
        "    while not stop[0]:\n"
        "        peak[0] = max(peak[0], rss()); time.sleep(0.0005)\n"
        "t = threading.Thread(target=watch); t.start()\n"
        "knn_points(x, y, K=1)\n"
        "stop[0] = True; t.join()\n"
        "print(max(peak[0], rss()) - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch CPU thread counts to time (the bar is on 2 cores); the headline is the fastest")
    p.add_argument("--out", default="results/benchmarks/ops.json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cases = {"knn_k1_b3_5000x5000": knn_small, "knn_k1_20000x20000": knn_large,
             "chapter2_step": chapter2_step, "chapter3_step": chapter3_step}
    results = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, make in cases.items():
            times, cpu = _time(make(device), device, args.repeats)
            ref, bar = BARS[name]
            med = statistics.median(times)
            entry = {"median_s": med, "times_s": times, "median_process_cpu_s": statistics.median(cpu),
                     "pytorch3d_s": ref, "bar_s": bar, "meets_bar": med <= bar}
            by = results.setdefault(name, {"by_threads": {}})["by_threads"]
            by[str(threads)] = entry
            if med <= results[name].get("median_s", float("inf")):  # headline: the best thread count
                results[name].update({k: v for k, v in entry.items()}, threads=threads)
            print(f"[{threads} thr] {name:22s} median {med * 1000:9.2f} ms wall, "
                  f"{statistics.median(cpu) * 1000:9.2f} ms process CPU  (bar {bar * 1000:.1f} ms, "
                  f"PyTorch3D {ref * 1000:.1f} ms)  {'OK' if med <= bar else 'SLOWER'}", flush=True)
    peak = _peak_memory_knn_large(args.device)
    if peak is not None:
        results["knn_k1_20000x20000"]["peak_memory_bytes"] = peak
        results["knn_k1_20000x20000"]["meets_memory_bar"] = peak <= 1e9
        print(f"knn 20k peak memory growth {peak / 2**20:.1f} MiB (bar 1 GB)")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "area": "ops",
        "load_average_1_5_15min": load,
        "note": "process CPU time sums all threads; on a shared, loaded machine wall times are inflated",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": list(args.threads),
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "torch": torch.__version__,
        "repeats": args.repeats,
        "dtype": "float32",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
