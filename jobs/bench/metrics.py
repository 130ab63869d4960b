"""Benchmark of lib3d.metrics against the reference implementations (issue 13's bars).

    python -m jobs.bench.metrics [--repeats 3] [--device cpu|cuda] [--out results/benchmarks/metrics.json]

Workloads (same input for both sides, same numbers checked):

- ``fid_10k_2048``: FID between two sets of 10,000 random correlated 2048-d features (statistics and
  Frechet distance). lib3d: ``fid_from_features`` (float64 statistics, symmetric-eigenvalue trace). Reference:
  ``np.mean`` / ``np.cov`` and pytorch-fid's ``calculate_frechet_distance`` (``scipy.linalg.sqrtm``), restated.
  Bar: at least 3x faster.
- ``coco_bbox_5000``: COCO box AP of 5,000 detections over 500 images (20 categories, ~3,000 ground-truth
  boxes). lib3d: ``coco_evaluate`` from per-image tensors. Reference: pycocotools' ``COCO.createIndex``,
  ``loadRes``, ``COCOeval.evaluate / accumulate / summarize`` from the already-built annotation dicts.
  Bar: at least 5x faster.
- ``coco_segm_5000`` (no bar, recorded): the same scene with dense 64x64..128x128 masks; pycocotools gets
  them RLE-encoded (encoding not timed), lib3d dense.

Median of ``repeats`` timed runs after one warm-up (``jobs.bench.ops._time``); wall and process-CPU time.
lib3d runs once per torch thread count in ``--threads`` (default 1 and all cores; on a loaded machine the
many small batched ops of ``coco_evaluate`` suffer from OpenMP contention with 2 threads); the references
(numpy/scipy BLAS, pycocotools) run once, as they come.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import warnings
from pathlib import Path

import numpy as np
import torch

from jobs.bench.ops import _time

BARS = {"fid_10k_2048": 3.0, "coco_bbox_5000": 5.0}  # minimum speed-up over the reference


def _by_threads(fn, device: torch.device, repeats: int, threads: list[int]) -> dict:
    """``{threads: {median_s, times_s, median_process_cpu_s}}`` of ``fn`` for each torch thread count."""
    out = {}
    before = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            wall, cpu = _time(fn, device, repeats)
            out[str(t)] = {"median_s": statistics.median(wall), "times_s": wall,
                           "median_process_cpu_s": statistics.median(cpu)}
    finally:
        torch.set_num_threads(before)
    return out


def _speedups(ours: dict, ref_s: float, bar: float | None) -> None:
    """Add ``speedup`` (reference / lib3d) and ``meets_bar`` to each thread count's entry."""
    for r in ours.values():
        r["speedup"] = ref_s / r["median_s"]
        if bar is not None:
            r["meets_bar"] = r["speedup"] >= bar


def _fid_reference(f1: np.ndarray, f2: np.ndarray) -> float:
    """clean-fid's ``fid_from_feats`` with pytorch-fid's ``calculate_frechet_distance`` (scipy sqrtm)."""
    import scipy.linalg

    mu1, s1 = np.mean(f1, axis=0), np.cov(f1, rowvar=False)
    mu2, s2 = np.mean(f2, axis=0), np.cov(f2, rowvar=False)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def bench_fid(device: torch.device, repeats: int, threads: list[int]) -> dict:
    from lib3d.metrics import fid_from_features

    g = torch.Generator().manual_seed(0)
    d, n = 2048, 10_000
    mix1 = torch.randn(d, d, generator=g) / d ** 0.5
    mix2 = mix1 + 0.1 * torch.randn(d, d, generator=g) / d ** 0.5
    f1 = torch.relu(torch.randn(n, d, generator=g) @ mix1 + 0.3)  # Inception-like: non-negative, float32
    f2 = torch.relu(torch.randn(n, d, generator=g) @ mix2 + 0.35)
    f1_np, f2_np = f1.numpy(), f2.numpy()
    f1d, f2d = f1.to(device), f2.to(device)
    ours: dict = {}
    ref: dict = {}
    lib = _by_threads(lambda: ours.__setitem__("v", fid_from_features(f1d, f2d)), device, repeats, threads)
    rwall, rcpu = _time(lambda: ref.__setitem__("v", _fid_reference(f1_np, f2_np)), torch.device("cpu"),
                        repeats)
    _speedups(lib, statistics.median(rwall), BARS["fid_10k_2048"])
    rel = abs(ours["v"] - ref["v"]) / abs(ref["v"])
    return {"lib3d_by_threads": lib,
            "reference": "np.mean/np.cov + scipy.linalg.sqrtm (pytorch-fid calculate_frechet_distance)",
            "reference_median_s": statistics.median(rwall), "reference_times_s": rwall,
            "reference_median_process_cpu_s": statistics.median(rcpu), "bar_speedup": BARS["fid_10k_2048"],
            "fid_lib3d": ours["v"], "fid_reference": ref["v"], "relative_difference": rel}


def _scene(n_images: int, n_dets: int, n_cats: int, masks: bool, seed: int = 0):
    """Random boxes (and rectangle masks with dropped pixels): jittered ground-truth copies plus clutter."""
    from lib3d.metrics import Detections, GroundTruths

    g = torch.Generator().manual_seed(seed)
    per_img = torch.multinomial(torch.ones(n_images), n_dets, replacement=True, generator=g)
    det_counts = torch.bincount(per_img, minlength=n_images).tolist()
    dets, gts, sizes = [], [], []
    for i in range(n_images):  # input construction only (not timed)
        h, w = (int(torch.randint(64, 129, (1,), generator=g)) for _ in range(2))
        sizes.append((h, w))
        n_gt = int(torch.randint(0, 12, (1,), generator=g))
        xy = torch.rand(n_gt, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n_gt, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) + 2
        gb = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], 1)
        gl = torch.randint(0, n_cats, (n_gt,), generator=g) + 1
        nd = det_counts[i]
        src = torch.randint(0, max(n_gt, 1), (nd,), generator=g)
        clutter = torch.rand(nd, generator=g) < 0.3
        if n_gt:
            size = (gb[src, 2:] - gb[src, :2]).repeat(1, 2)
            db = gb[src] + torch.randn(nd, 4, generator=g) * size * torch.rand(nd, 1, generator=g) * 0.3
            dl = gl[src]
        else:
            db, dl, clutter = torch.zeros(nd, 4), torch.zeros(nd, dtype=torch.int64), torch.ones(nd, dtype=torch.bool)
        rxy = torch.rand(nd, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        rb = torch.cat([rxy, rxy + torch.rand(nd, 2, generator=g) * 30 + 1], 1)
        db = torch.where(clutter[:, None], rb, db)
        dl = torch.where(clutter, torch.randint(0, n_cats, (nd,), generator=g) + 1, dl)
        db = torch.cat([db[:, :2], torch.maximum(db[:, 2:], db[:, :2] + 0.5)], 1).float()
        ds = torch.rand(nd, generator=g)
        dm = gm = None
        if masks:
            ys = torch.arange(h)[:, None] + 0.5
            xs = torch.arange(w)[None, :] + 0.5

            def rect(b, noise, xs=xs, ys=ys):
                inside = (xs >= b[:, None, None, 0]) & (xs < b[:, None, None, 2]) & \
                         (ys >= b[:, None, None, 1]) & (ys < b[:, None, None, 3])
                return inside & ~(torch.rand(inside.shape, generator=g) < noise)

            dm, gm = rect(db, 0.1), rect(gb, 0.03)
        dets.append(Detections(db, ds, dl, dm))
        gts.append(GroundTruths(gb.float(), gl, gm))
    return dets, gts, sizes


def _coco_dicts(dets, gts, sizes, iou_type: str):
    """The COCO-format inputs of pycocotools (built once, not timed)."""
    from pycocotools import mask as mask_utils

    def xywh(b):
        b = b.double()
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    def rle(m):
        return mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))

    cats = sorted({int(c) for d in dets for c in d.labels} | {int(c) for g in gts for c in g.labels})
    images = [{"id": i + 1, "height": h, "width": w} for i, (h, w) in enumerate(sizes)]
    anns, res = [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        for j in range(g.labels.shape[0]):
            a = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(g.labels[j]), "iscrowd": 0,
                 "bbox": xywh(g.boxes[j])}
            if iou_type == "segm":
                a["segmentation"], a["area"] = rle(g.masks[j]), float(g.masks[j].sum())
            else:
                a["area"] = a["bbox"][2] * a["bbox"][3]
            anns.append(a)
        for j in range(d.labels.shape[0]):
            r = {"image_id": i + 1, "category_id": int(d.labels[j]), "score": float(d.scores[j])}
            if iou_type == "segm":
                r["segmentation"] = rle(d.masks[j])
            else:
                r["bbox"] = xywh(d.boxes[j])
            res.append(r)
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}, res


def _pycocotools_eval(dataset: dict, results: list, iou_type: str) -> np.ndarray:
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(dataset)  # pycocotools modifies the annotations in place
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def bench_coco(device: torch.device, repeats: int, iou_type: str, threads: list[int]) -> dict:
    from lib3d.metrics import Detections, GroundTruths, coco_evaluate

    dets, gts, sizes = _scene(500, 5000, 20, masks=iou_type == "segm")
    dataset, results = _coco_dicts(dets, gts, sizes, iou_type)

    def move(x, cls):
        return cls(*[None if t is None else t.to(device) for t in x])

    dets_d = [move(d, Detections) for d in dets]
    gts_d = [move(g, GroundTruths) for g in gts]
    ours: dict = {}
    ref: dict = {}
    lib = _by_threads(lambda: ours.__setitem__("r", coco_evaluate(dets_d, gts_d, iou_type=iou_type)), device,
                      repeats, threads)
    # the deep copies pycocotools needs are made inside the timed call: time them separately and subtract
    import copy
    cwall, _ = _time(lambda: (copy.deepcopy(dataset), copy.deepcopy(results)), torch.device("cpu"), repeats)
    rwall, rcpu = _time(lambda: ref.__setitem__("s", _pycocotools_eval(dataset, results, iou_type)),
                        torch.device("cpu"), repeats)
    r = ours["r"]
    mine = np.array([r.ap, r.ap50, r.ap75, r.ap_small, r.ap_medium, r.ap_large, r.ar])
    theirs = np.concatenate([ref["s"][:6], ref["s"][8:9]])
    ref_s = statistics.median(rwall) - statistics.median(cwall)
    name = f"coco_{iou_type}_5000"
    _speedups(lib, ref_s, BARS.get(name))
    out = {"lib3d_by_threads": lib,
           "reference": "pycocotools createIndex + loadRes + COCOeval evaluate/accumulate/summarize",
           "reference_median_s": ref_s, "reference_times_s_incl_input_copies": rwall,
           "reference_input_copy_median_s": statistics.median(cwall),
           "reference_median_process_cpu_s": statistics.median(rcpu),
           "num_detections": sum(int(d.scores.shape[0]) for d in dets),
           "num_ground_truth": sum(int(g.labels.shape[0]) for g in gts), "num_images": len(dets),
           "stats_lib3d": mine.tolist(), "stats_pycocotools": theirs.tolist(),
           "max_abs_difference": float(np.abs(mine - theirs).max())}
    if name in BARS:
        out["bar_speedup"] = BARS[name]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="*", default=None, help="fid_10k_2048 coco_bbox_5000 coco_segm_5000")
    p.add_argument("--threads", type=int, nargs="*", default=None, help="torch thread counts for lib3d "
                   "(default: 1 and all cores)")
    p.add_argument("--out", default="results/benchmarks/metrics.json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or sorted({1, torch.get_num_threads()})
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    work = {"fid_10k_2048": lambda: bench_fid(device, args.repeats, threads),
            "coco_bbox_5000": lambda: bench_coco(device, args.repeats, "bbox", threads),
            "coco_segm_5000": lambda: bench_coco(device, args.repeats, "segm", threads)}
    results = {}
    for name, fn in work.items():
        if args.only and name not in args.only:
            continue
        results[name] = fn()
        r = results[name]
        for t, lr in r["lib3d_by_threads"].items():
            bar = (f" (bar {r['bar_speedup']}x: {'met' if lr['meets_bar'] else 'MISSED'})"
                   if "bar_speedup" in r else "")
            print(f"{name} [{t} thread(s)]: lib3d {lr['median_s']:.3f} s, reference {r['reference_median_s']:.3f} s,"
                  f" speed-up {lr['speedup']:.1f}x{bar}", flush=True)
    report = {
        "area": "metrics",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1_5_15min_start": load_start,
        "load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "note": "wall-clock medians; the reference runs on CPU (numpy/scipy/pycocotools) on the same machine, "
                "in the same run; on a shared, loaded machine (load average >> cores) multi-threaded torch ops "
                "suffer OpenMP contention, so compare the 1-thread entries there",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads_default": torch.get_num_threads(), "lib3d_threads": threads,
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "torch": torch.__version__, "repeats": args.repeats, "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
