"""Benchmark of lib3d.nn's backbones (issue 13): images per second and peak memory.

    python -m jobs.bench.nn [--device cpu|cuda] [--repeats 5] [--batch-fpn N] [--batch-vgg N] [--out PATH]

Workloads (float32, median of ``repeats`` timed calls after one warm-up):

- ``resnet50_fpn_forward_512``: ``ResNetFPN(50, norm="frozen_bn")`` forward at 512x512 under
  ``torch.inference_mode()`` (Mask R-CNN's backbone; frozen batch norm as in detection training).
- ``vgg16_features_fwd_bwd_256``: ``VGGFeatures(16)`` (LPIPS / perceptual-loss taps relu1_2 .. relu5_3,
  frozen weights) forward + backward at 256x256, the gradient flowing to the input images, as in a
  perceptual loss.

Each workload runs in its own spawned process so that its peak resident memory (``ru_maxrss``) is its own
(``rss_before_mb`` is the process after building the model and inputs); on CUDA the peak of
``torch.cuda.max_memory_allocated`` is recorded too. Writes ``results/benchmarks/nn.json`` on CPU and
``results/benchmarks/nn_cuda.json`` on CUDA unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
from pathlib import Path

import torch

from jobs.bench.ops import _time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def resnet50_fpn_forward_512(device: torch.device, batch: int):
    from lib3d.nn import ResNetFPN

    model = ResNetFPN(50, norm="frozen_bn").to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 512, 512, generator=g).to(device)

    def step():
        with torch.inference_mode():
            return model(x)

    return step


def vgg16_features_fwd_bwd_256(device: torch.device, batch: int):
    from lib3d.nn import VGGFeatures

    model = VGGFeatures(16).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 256, 256, generator=g).to(device).requires_grad_()

    def step():
        x.grad = None
        feats = model(x)
        sum(f.mean() for f in feats.values()).backward()

    return step


WORKLOADS = {"resnet50_fpn_forward_512": resnet50_fpn_forward_512,
             "vgg16_features_fwd_bwd_256": vgg16_features_fwd_bwd_256}


def _run(name: str, device: str, batch: int, repeats: int, threads: int | None, queue) -> None:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    step = WORKLOADS[name](dev, batch)
    rss_before = _rss_mb() if os.path.exists("/proc/self/statm") else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, cpu = _time(step, dev, repeats)  # one warm-up call, then ``repeats`` timed ones
    med = statistics.median(times)
    res = {"batch": batch, "median_s": med, "times_s": times, "median_process_cpu_s": statistics.median(cpu),
           "images_per_s": batch / med, "rss_before_mb": rss_before,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if dev.type == "cuda":
        res["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    queue.put(res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-fpn", type=int, default=None, help="default 2 on CPU, 16 on CUDA")
    p.add_argument("--batch-vgg", type=int, default=None, help="default 4 on CPU, 32 on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    cuda = args.device == "cuda"
    batches = {"resnet50_fpn_forward_512": args.batch_fpn or (16 if cuda else 2),
               "vgg16_features_fwd_bwd_256": args.batch_vgg or (32 if cuda else 4)}
    ctx = mp.get_context("spawn")
    results = {}
    for name in args.only:
        q = ctx.Queue()
        proc = ctx.Process(target=_run, args=(name, args.device, batches[name], args.repeats, args.threads, q))
        proc.start()
        res = q.get()
        proc.join()
        results[name] = res
        extra = f", peak CUDA {res['peak_cuda_mb']:.0f} MiB" if "peak_cuda_mb" in res else ""
        print(f"{name:28s} batch {res['batch']:3d}: {res['images_per_s']:8.2f} img/s (median {res['median_s']:.3f} s), "
              f"peak RSS {res['peak_rss_mb']:.0f} MiB{extra}", flush=True)
    report = {
        "area": "nn",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m jobs.bench.nn " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads or torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None},
        "torch": torch.__version__,
        "dtype": "float32",
        "repeats": args.repeats,
        "note": "median of repeats after one warm-up; each workload in its own spawned process; on a shared, "
                "loaded machine wall times are inflated (see median_process_cpu_s and the load average)",
        "results": results,
    }
    out = Path(args.out or f"results/benchmarks/nn{'_cuda' if cuda else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
