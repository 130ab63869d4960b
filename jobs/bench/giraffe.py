"""Benchmark of one GIRAFFE training iteration (issue 15's bar), against the official implementation's time.

    python -m jobs.bench.giraffe [--repeats 3] [--threads 2] [--device cpu|cuda] [--out PATH]

What is timed (as ``../shared/anchors/giraffe.json``): the ``paper`` preset (official cars-64: 64x64 images,
16x16 feature image, 64 samples per ray, 1 object + background, 411,595 generator and 2,763,776
discriminator parameters) at batch 32: one ``lib3d.synthesis.giraffe_train.train_iteration`` = G step
(non-saturating loss, RMSprop) + EMA update + D step (R1 10 on reals, a fresh generator forward without
gradients). Real images are a fixed random batch (data loading is not timed, as in the anchor). Median of
``repeats`` iterations after one warm-up, wall clock and process CPU time, with the G step and D step
split out; peak resident memory of the process (CPU) or peak allocated memory (CUDA); the load average of
the machine before and after. The official implementation took 36.5 s per iteration (median of 3) on the
2-core development machine with 2 torch threads; the goal is at most half of that.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

ANCHOR = Path(__file__).resolve().parents[2].parent / "shared" / "anchors" / "giraffe.json"
OFFICIAL_ITER_S = 36.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(repeats: int, device: torch.device, batch_size: int = 32) -> dict:
    from configs.giraffe import OFFICIAL_MODELS
    from lib3d.nn import DCGANDiscriminator, ema_copy
    from lib3d.synthesis import giraffe_train
    from lib3d.systems.giraffe import build_generator

    torch.manual_seed(0)
    gen = build_generator(OFFICIAL_MODELS["cars64"]).to(device)
    disc = DCGANDiscriminator(3, 64).to(device)
    ema = ema_copy(gen)
    opt_g = torch.optim.RMSprop(gen.parameters(), lr=5e-4)
    opt_d = torch.optim.RMSprop(disc.parameters(), lr=1e-4)
    real = torch.rand(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    rng = torch.Generator(device=device).manual_seed(0)
    # split timing of the two halves through the iteration's own functions
    split = {"g": [], "d": []}
    orig_g, orig_d = giraffe_train.generator_loss, giraffe_train.discriminator_losses

    def run_once() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        giraffe_train.train_iteration(gen, ema, disc, opt_g, opt_d, real, rng)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def timed_g_step():
        t0 = time.perf_counter()
        disc.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        orig_g(disc, gen.sample(batch_size, rng, mode="training")).backward()
        opt_g.step()
        _sync(device)
        split["g"].append(time.perf_counter() - t0)
        disc.requires_grad_(True)

    def timed_d_step():
        t0 = time.perf_counter()
        gen.requires_grad_(False)
        opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = gen.sample(batch_size, rng, mode="training")
        orig_d(disc, real, fake, 10.0).total.backward()
        opt_d.step()
        _sync(device)
        split["d"].append(time.perf_counter() - t0)
        gen.requires_grad_(True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()
    run_once()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):  # loop over timed iterations
        w, c = run_once()
        wall.append(w)
        cpu.append(c)
    for _ in range(max(1, repeats // 2)):  # loop over split timings (G step, D step)
        timed_g_step()
        timed_d_step()
    out = {
        "iteration_s": statistics.median(wall),
        "iteration_s_min": min(wall),
        "iteration_cpu_s": statistics.median(cpu),
        "iteration_s_all": wall,
        "iters_timed": repeats,
        "g_step_s": statistics.median(split["g"]),
        "d_step_s": statistics.median(split["d"]),
        "batch_size": batch_size,
        "G_params": sum(p.numel() for p in gen.parameters()),
        "D_params": sum(p.numel() for p in disc.parameters()),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("jobs.bench.giraffe: --device cuda but CUDA is not available")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    anchor = json.loads(ANCHOR.read_text()) if ANCHOR.is_file() else {"iter_s_median": OFFICIAL_ITER_S}
    res = bench(a.repeats, device, a.batch_size)
    official = float(anchor.get("iter_s_median", OFFICIAL_ITER_S))
    report = {
        "what": "one GIRAFFE training iteration (G step + EMA + D step with R1 10) of the paper preset "
                "(official cars-64 architecture), batch 32, 64x64, 16x16 feature image, 64 samples per ray",
        "device": a.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **res,
        "official_iter_s_median": official,
        "ratio_to_official": res["iteration_s"] / official,
        "meets_goal": bool(res["iteration_s"] <= 0.5 * official) if a.device == "cpu" else None,
        "command": "python -m jobs.bench.giraffe " + " ".join(argv if argv is not None else []),
    }
    out = Path(a.out or f"results/benchmarks/giraffe{'' if a.device == 'cpu' else '_cuda'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "iteration_s_all"}, indent=1))
    return report


if __name__ == "__main__":
    main()
