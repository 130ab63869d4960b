"""SynSin benchmark: ``python -m jobs.bench.synsin [--device cpu|cuda|all] [--repeats 3] [--only NAME ...]``.

Workloads (float32, issue 16):

- ``splat_256``: the point renderer alone, SynSin's splatting step: a 256x256 depth map lifted to 65,536
  points with 64-d features, moved by a small relative pose, ``rasterize_points`` with radius 4 px and
  K = 128 points per pixel, alphas ``(1 - sqrt(d / r^2))``, alpha compositing; the image's sum is
  backpropagated to the points and features. PyTorch3D 0.7.9's CPU build takes 99.8 s for it on the 2-core
  development machine (``../shared/anchors/splat.json``); lib3d's bar is 2 s on 2 threads.
- ``train_step_paper_b1`` / ``train_step_paper_b8``: one training step of the ``paper`` preset (official
  RealEstate10K architecture, 256x256) at batch 1 / 8: generator forward + backward with L1 + hinge GAN +
  feature matching and one discriminator step, Adam (0, 0.9). No VGG term (it needs torchvision's weights).
- ``eval_paper_b8``: generator forward (eval mode, no grad) at 256x256, batch 8: images per second.

Each workload runs in its own spawned process (its own peak resident memory, ``ru_maxrss``; on CUDA the peak
of ``torch.cuda.max_memory_allocated``); one warm-up run, then the median of ``--repeats`` timed runs.
Writes ``results/benchmarks/synsin.json`` (CPU) and ``synsin_cuda.json`` (CUDA) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
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
ANCHOR = ROOT.parent / "shared" / "anchors" / "splat.json"
SPLAT_BAR_S = 2.0
WORKLOADS = ("splat_256", "train_step_paper_b1", "train_step_paper_b8", "eval_paper_b8")


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _small_pose(n: int, device) -> torch.Tensor:
    a = 0.05  # ~3 degrees of yaw and 10 cm forward/sideways, a RealEstate10K-sized move
    RT = torch.eye(4).repeat(n, 1, 1)
    RT[:, 0, 0], RT[:, 0, 2], RT[:, 2, 0], RT[:, 2, 2] = torch.cos(torch.tensor(a)), torch.sin(torch.tensor(a)), \
        -torch.sin(torch.tensor(a)), torch.cos(torch.tensor(a))
    RT[:, 0, 3], RT[:, 2, 3] = 0.05, -0.1
    return RT.to(device)


def splat_256(device):
    from lib3d.synthesis.synsin import official_intrinsics, reproject_points, splat_features

    g = torch.Generator().manual_seed(0)
    H = W = 256
    depth = (1.0 + 3.0 * torch.rand(1, 1, H // 8, W // 8, generator=g))
    depth = torch.nn.functional.interpolate(depth, size=(H, W), mode="bilinear", align_corners=False).to(device)
    feats0 = torch.randn(1, 64, H * W, generator=g).to(device)
    K, RT = official_intrinsics(1, device=device), _small_pose(1, device)

    def step():
        d = depth.clone().requires_grad_(True)
        f = feats0.clone().requires_grad_(True)
        pts = reproject_points(d, K, RT, align_corners=True)
        img = splat_features(pts, f, (H, W), radius_px=4.0, points_per_pixel=128, accumulation="alphacomposite")
        img.sum().backward()
        return d.grad, f.grad

    return step


def _paper_models(device):
    from configs.synsin import PRESETS
    from lib3d.synthesis.synsin import SynSinDiscriminator, SynSinGenerator

    cfg = PRESETS["paper"][1]
    torch.manual_seed(0)
    G = SynSinGenerator(cfg.model).to(device)
    m = cfg.model
    D = SynSinDiscriminator(m.ndf, m.num_discriminators, m.discriminator_layers).to(device)
    return cfg, G, D


def _train_step(batch: int):
    def make(device):
        from lib3d.synthesis.synsin import (
            discriminator_loss,
            feature_matching_loss,
            generator_hinge_loss,
            official_intrinsics,
        )

        cfg, G, D = _paper_models(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        g = torch.Generator().manual_seed(1)
        src = (torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1).to(device)
        tgt = (torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1).to(device)
        K, RT = official_intrinsics(batch, device=device), _small_pose(batch, device)

        def step():
            out = G(src, K, RT)
            preds = D(torch.cat((out.image, tgt)))
            fake = [[t[:batch] for t in p] for p in preds]
            real = [[t[batch:] for t in p] for p in preds]
            loss = torch.nn.functional.l1_loss(out.image, tgt) + generator_hinge_loss(fake) \
                + feature_matching_loss(fake, real, cfg.feature_matching_weight)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            preds = D(torch.cat((out.image.detach(), tgt)))
            d_loss = discriminator_loss([[t[:batch] for t in p] for p in preds], [[t[batch:] for t in p] for p in preds])
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            return loss

        return step

    return make


def eval_paper_b8(device):
    from lib3d.synthesis.synsin import official_intrinsics

    _, G, _ = _paper_models(device)
    G.eval()
    g = torch.Generator().manual_seed(2)
    src = (torch.rand(8, 3, 256, 256, generator=g) * 2 - 1).to(device)
    K, RT = official_intrinsics(8, device=device), _small_pose(8, device)

    def step():
        with torch.no_grad():
            return G(src, K, RT).image

    return step


MAKERS = {"splat_256": splat_256, "train_step_paper_b1": _train_step(1), "train_step_paper_b8": _train_step(8),
          "eval_paper_b8": eval_paper_b8}


def _child(name: str, device: str, repeats: int, threads: int, q) -> None:
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        fn = MAKERS[name](device)
        fn()  # warm-up
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        wall = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            wall.append(time.perf_counter() - t0)
        out = {"median_s": statistics.median(wall), "runs_s": wall,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device.startswith("cuda"):
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        if name == "eval_paper_b8":
            out["images_per_s"] = 8 / out["median_s"]
        q.put(out)
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        q.put({"error": f"{type(e).__name__}: {e}"})


def run(names, device: str, repeats: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    results = {}
    for name in names:
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(name, device, repeats, threads, q))
        p.start()
        res = q.get()
        p.join()
        if name == "splat_256" and "median_s" in res:
            res["bar_s"] = SPLAT_BAR_S
            res["meets_bar"] = bool(res["median_s"] < SPLAT_BAR_S) if device == "cpu" else None
            if ANCHOR.is_file():
                res["pytorch3d_cpu_s"] = json.loads(ANCHOR.read_text()).get("fwd_bwd_s")
        results[name] = res
        print(f"[bench.synsin] {device} {name}: {json.dumps(res)}", flush=True)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "all"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--only", nargs="*", choices=WORKLOADS, default=None)
    ap.add_argument("--out", default=None, help="output folder (default results/benchmarks)")
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    names = args.only or list(WORKLOADS)
    out_dir = Path(args.out) if args.out else ROOT / "results" / "benchmarks"
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("[bench.synsin] no CUDA device; skipped", file=sys.stderr)
            continue
        res = run(names, device, args.repeats, args.threads)
        meta = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats,
                "load_average": os.getloadavg(),
                "device_name": torch.cuda.get_device_name() if device == "cuda" else None}
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / ("synsin.json" if device == "cpu" else "synsin_cuda.json")
        path.write_text(json.dumps({"meta": meta, "workloads": res}, indent=1) + "\n")
        print(f"[bench.synsin] wrote {path}")


if __name__ == "__main__":
    main()
