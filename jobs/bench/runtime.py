"""Benchmark of lib3d.runtime (issue 3's bar: a local job reaches its first step in < 15 s).

    python -m jobs.bench.runtime [--repeats 3] [--out results/benchmarks/runtime.json]

Workloads (median of ``repeats``):

- ``startup_in_process``: ``python -m jobs.fit_rigid smoke`` in a fresh process; the job measures from its
  process creation to the end of its first optimisation step (``startup_to_first_step_s``; the bar) and the
  whole command's wall time is recorded too;
- ``startup_ray_train_2_workers``: ``python -m jobs.fit_rigid smoke --ray.num-workers 2`` (embedded Ray,
  Ray Train ``TorchTrainer``, DDP over 2 CPU workers): seconds from launch to the first logged loss (step 5;
  TensorBoard's event time, also recorded in-process) and wall time of the whole command;
- ``checkpoint_save_100MB`` / ``checkpoint_load_100MB``: a 25M-float model plus Adam state (~300 MB on
  disk in all) saved with ``save_checkpoint`` (atomic, fsync) and loaded with ``load_checkpoint`` (model tensors read in full).
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
import tempfile
import time
from pathlib import Path

import torch

BAR_STARTUP_S = 15.0
ROOT = Path(__file__).resolve().parents[2]


def _job(args: list[str], out_root: str, name: str) -> tuple[float, dict, float]:
    """Run the smoke job; returns its wall time, its metrics and the seconds from launch to its first logged
    loss (step 5, TensorBoard's wall time of the event: comparable between in-process and Ray Train)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    launch = time.time()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "jobs.fit_rigid", "smoke", "--run.output-root", out_root,
                        "--run.name", name, *args], env=env, capture_output=True, text=True, timeout=600,
                       check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"fit_rigid failed:\n{p.stderr[-3000:]}")
    run_dir = Path(out_root) / "fit_rigid" / name
    ea = EventAccumulator(str(run_dir / "tensorboard"))
    ea.Reload()
    first_log = ea.Scalars("loss")[0].wall_time - launch
    return wall, json.loads((run_dir / "metrics.json").read_text()), first_log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "runtime.json"))
    ap.add_argument("--skip-ray", action="store_true", help="skip the Ray workload")
    args = ap.parse_args()
    from lib3d import runtime

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        first, walls, logs = [], [], []
        for i in range(args.repeats):
            wall, m, first_log = _job([], tmp, f"inproc{i}")
            first.append(m["startup_to_first_step_s"])
            walls.append(wall)
            logs.append(first_log)
        results["startup_in_process"] = {
            "median_s": statistics.median(first), "runs_s": first, "wall_median_s": statistics.median(walls),
            "launch_to_first_log_median_s": statistics.median(logs),
            "bar_s": BAR_STARTUP_S, "meets_bar": statistics.median(first) < BAR_STARTUP_S}
        print("startup_in_process", results["startup_in_process"], flush=True)
        if not args.skip_ray:
            runs = [_job(["--ray.num-workers", "2", "--ray.no-include-dashboard"], tmp, f"ray{i}")
                    for i in range(args.repeats)]
            walls, logs = [r[0] for r in runs], [r[2] for r in runs]
            results["startup_ray_train_2_workers"] = {
                "launch_to_first_log_median_s": statistics.median(logs), "launch_to_first_log_runs_s": logs,
                "wall_median_s": statistics.median(walls), "runs_s": walls,
                "meets_bar": statistics.median(logs) < BAR_STARTUP_S}
            print("startup_ray_train_2_workers", results["startup_ray_train_2_workers"], flush=True)

        model = torch.nn.Linear(5000, 5000)
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(2, 5000)).sum().backward()
        opt.step()
        nbytes = sum(p.numel() * 4 for p in model.parameters())
        saves, loads = [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            runtime.save_checkpoint(Path(tmp) / "ck", i, model.state_dict(), opt, keep=1)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ck = runtime.load_checkpoint(Path(tmp) / "ck")
            float(sum(t.double().sum() for t in ck.tensors.values()))  # touch every byte (files are mmapped)
            loads.append(time.perf_counter() - t0)
        for key, runs in (("checkpoint_save_100MB", saves), ("checkpoint_load_100MB", loads)):
            results[key] = {"median_s": statistics.median(runs), "runs_s": runs, "model_bytes": nbytes,
                            "files_bytes": 3 * nbytes}
            print(key, results[key], flush=True)

    out = {
        "area": "runtime",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "CPU shared with other processes while measured: timings are noisy",
        "load_1_5_15": list(os.getloadavg()),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
