"""Benchmark of lib3d.detect: RoIAlign, NMS, and Mesh R-CNN training / evaluation speed (issue 17's bar).

    python -m jobs.bench.detect [--device cpu|cuda] [--repeats 5] [--presets quick paper] [--out FILE]
                              [--trained-run results/meshrcnn/RUN]

Workloads (float32, median of ``repeats`` timed runs after one warm-up; wall clock and process CPU time,
with the load average, since the CPU machine is shared):

- ``roi_align_fwd_bwd``: 512 RoIs (random sizes 16..512 px) pooled 7x7 (sampling ratio 2) from a P2-P5 pyramid
  of an 800 x 800 image (256 channels), forward + backward;
- ``nms_10000``: greedy NMS of 10,000 random boxes at IoU 0.7;
- ``train_step_<preset>`` / ``eval_images_per_s_<preset>``: one training step (batch 2, losses of every head,
  backward, optimizer step) and inference images per second of the ``quick`` (ResNet-18-FPN, 128 px) and
  ``paper`` (R50-FPN, 800 px) models on random images with two synthetic objects, with peak memory
  (CUDA: ``max_memory_allocated``; CPU: growth of the resident set);
- the bar: RoIAlign + NMS time (forward + backward of every pooler and every proposal NMS, replayed on the
  exact inputs one real training step gave them) under 10% of a training step of each preset. On a random
  model few proposals reach the heads (Mesh R-CNN's Pix3D matcher ignores proposals under IoU 0.2, and random
  proposals rarely overlap the two objects: the paper preset pools 4 RoIs per pooler), so
  ``--trained-run RUN_DIR`` also replays a batch-4 step of a trained ``jobs.meshrcnn`` model on its own data,
  and ``roi_align_fwd_bwd`` is the paper-scale RoIAlign figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from jobs.bench.ops import _time


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def roi_align_workload(device):
    from lib3d.detect import multilevel_roi_align

    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 256, 800 // s, 800 // s, generator=g).to(device).requires_grad_() for s in (4, 8, 16, 32)]
    xy = torch.rand(512, 2, generator=g) * 600
    wh = torch.rand(512, 2, generator=g) * 496 + 16
    rois = torch.cat([torch.randint(0, 2, (512, 1), generator=g).float(), xy, (xy + wh).clamp(max=800)], 1).to(device)

    def run():
        out = multilevel_roi_align(feats, rois, 7, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 2)
        out.sum().backward()
    return run


def nms_workload(device):
    from lib3d.detect import nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(10000, 2, generator=g) * 800
    wh = torch.rand(10000, 2, generator=g) * 100 + 4
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    scores = torch.rand(10000, generator=g).to(device)
    return lambda: nms(boxes, scores, 0.7)


def _model_and_batch(preset: str, device):
    from configs.meshrcnn import QUICK_MODEL
    from lib3d.data.primitives import cube
    from lib3d.detect import InstanceTargets, MeshRCNN, MeshRCNNConfig

    if preset == "quick":
        cfg, size = dataclass_replace(QUICK_MODEL), 128
    else:
        cfg, size = MeshRCNNConfig(num_classes=5, norm="bn", freeze_at=0), 800
    torch.manual_seed(0)
    model = MeshRCNN(cfg).to(device)
    v, f = cube(1.0)
    s = size / 128
    boxes = torch.tensor([[20.0, 30, 70, 100], [60, 20, 120, 90]]) * s
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    for k, b in enumerate(boxes.long().tolist()):
        masks[k, b[1]:b[3], b[0]:b[2]] = True
    centres = torch.tensor([[0.3, 0.0, 4.0], [-0.5, 0.4, 5.0]])
    tgt = InstanceTargets(boxes.to(device), torch.tensor([0, 2], device=device), masks.to(device),
                          torch.tensor([[1.1 * size, size / 2 + 1, size / 2 + 1]]).expand(2, 3).to(device),
                          [((v + c).to(device), f.to(device)) for c in centres],
                          (torch.rand(2, 500, 3) - 0.5 + centres[:, None]).to(device),
                          torch.tensor([500, 400], device=device), torch.tensor([40.0, 30.0], device=device))
    images = torch.rand(2, 3, size, size).to(device)
    return model, images, [tgt, tgt]


def dataclass_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def _training_step(model, opt, images, targets, device):
    """One training step of ``model`` on a fixed batch (all losses, backward, optimizer step), as a closure."""
    gen = torch.Generator(device=device).manual_seed(0)

    def run():
        model.train()
        losses = model(images, targets, generator=gen)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return run


def train_step_workload(preset, device):
    model, images, targets = _model_and_batch(preset, device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    return _training_step(model, opt, images, targets, device), model, images


def _roi_align_nms_times(model, run, device, repeats: int):
    """RoIAlign + NMS inside a training step: one real step (``run``) records the exact inputs of every pooler
    (box, mask, z, voxel, mesh: feature maps and RoIs) and of every proposal NMS; replaying them times RoIAlign
    forward + backward and NMS as the step runs them. Returns (pool times, NMS times, pooler calls, NMS calls)."""
    import lib3d.detect.rpn as rpn_module

    pool_calls, nms_calls = [], []
    hooks = [getattr(model, n).register_forward_hook(lambda m, inp, o: pool_calls.append((m, inp[0], inp[1])))
             for n in ("box_pooler", "mask_pooler", "z_pooler", "voxel_pooler", "mesh_pooler")
             if getattr(model, n, None) is not None]
    real_nms = rpn_module.batched_nms

    def recording_nms(*nms_args, **kw):
        nms_calls.append((nms_args, kw))
        return real_nms(*nms_args, **kw)
    rpn_module.batched_nms = recording_nms
    try:
        run()
    finally:
        rpn_module.batched_nms = real_nms
        for h in hooks:
            h.remove()

    def pool():
        total = 0
        for m, feats, rois in pool_calls:
            total = total + m([f.detach().requires_grad_() for f in feats], rois).sum()
        total.backward()
    pw, _ = _time(pool, device, repeats)
    nw, _ = _time(lambda: [real_nms(*x, **kw) for x, kw in nms_calls], device, repeats)
    return pw, nw, pool_calls, nms_calls


def main(args: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", nargs="*", default=["quick", "paper"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--trained-run", default=None,
                    help="a jobs.meshrcnn run directory: also replay RoIAlign + NMS of a real training step of that "
                         "trained model on its own data (batch 4), where the RPN's proposals fill the RoI batch")
    a = ap.parse_args(args)
    device = torch.device(a.device)
    out: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "host": platform.node(), "load_average_start": os.getloadavg(),
                 "command": "python -m jobs.bench.detect " + " ".join(args if args is not None else sys.argv[1:]),
                 "results": {}}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    res = out["results"]

    def save():  # after every workload, so a stopped run keeps what it measured
        if a.out:
            out["load_average_end"] = os.getloadavg()
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(out, indent=1))
    for name, make in (("roi_align_fwd_bwd_512_p2p5_800px", roi_align_workload), ("nms_10000", nms_workload)):
        wall, cpu = _time(make(device), device, a.repeats)
        res[name] = {"median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu), "wall_s": wall}
        print(f"[bench.detect] {name}: {statistics.median(wall):.4f} s", flush=True)
        save()
    for preset in a.presets:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss0 = _rss_mb()
        run, model, images = train_step_workload(preset, device)
        wall, cpu = _time(run, device, max(1, a.repeats // 2))
        peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else _rss_mb() - rss0)
        step = statistics.median(wall)
        pw, nw, pool_calls, nms_calls = _roi_align_nms_times(model, run, device, max(1, a.repeats // 2))
        model.eval()
        with torch.no_grad():
            iw, _ = _time(lambda model=model, images=images: model(images), device, max(1, a.repeats // 2))
        frac = (statistics.median(pw) + statistics.median(nw)) / step
        res[f"train_step_{preset}"] = {"median_s": step, "cpu_median_s": statistics.median(cpu), "wall_s": wall,
                                       "batch": 2, "image_size": int(images.shape[-1]), "peak_memory_mb": peak}
        res[f"eval_images_per_s_{preset}"] = {"images_per_s": 2 / statistics.median(iw), "median_batch_s": statistics.median(iw)}
        res[f"roi_align_nms_fraction_of_step_{preset}"] = {
            "roi_align_all_poolers_fwd_bwd_s": statistics.median(pw), "proposal_nms_s": statistics.median(nw),
            "pooler_calls": len(pool_calls), "rois_pooled": sum(int(r.shape[0]) for _, _, r in pool_calls),
            "nms_calls": len(nms_calls),
            "fraction": frac, "bar": 0.10, "meets_bar": frac < 0.10}
        print(f"[bench.detect] {preset}: step {step:.3f} s, eval {2 / statistics.median(iw):.2f} img/s, "
              f"RoIAlign+NMS {100 * frac:.1f}% of a step, peak {peak:.0f} MB", flush=True)
        save()

    save()
    if a.trained_run:
        res["roi_align_nms_fraction_of_trained_step"] = _trained_step_fraction(a.trained_run, device, a.repeats)
        print(f"[bench.detect] trained step: {res['roi_align_nms_fraction_of_trained_step']}", flush=True)
        save()
    return out


def _trained_step_fraction(run_dir: str, device, repeats: int) -> dict:
    """RoIAlign + NMS share of a real training step (batch 4 of the run's own training data) of a trained
    model: unlike a random model's step, its RPN fills the RoI batch of the box head."""
    from lib3d.systems.meshrcnn import batch_targets, load_data, model_from_run

    model, data_cfg = model_from_run(run_dir, device=device)
    data = load_data(data_cfg or {})
    images, targets = batch_targets([data.train[i] for i in range(4)], device)
    run = _training_step(model, torch.optim.AdamW(model.parameters(), 1e-5), images, targets, device)
    wall, _ = _time(run, device, repeats)
    pw, nw, pool_calls, nms_calls = _roi_align_nms_times(model, run, device, repeats)
    step = statistics.median(wall)
    frac = (statistics.median(pw) + statistics.median(nw)) / step
    return {"run": run_dir, "batch": 4, "step_s": step, "roi_align_all_poolers_fwd_bwd_s": statistics.median(pw),
            "proposal_nms_s": statistics.median(nw), "rois_per_pooler": [int(r.shape[0]) for _, _, r in pool_calls],
            "nms_calls": len(nms_calls), "fraction": frac, "bar": 0.10, "meets_bar": frac < 0.10}


if __name__ == "__main__":
    main()
