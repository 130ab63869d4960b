"""The book's ``inference()``: synthesise a new view of any image with a SynSin model.

    python -m jobs.synsin_infer photo.jpg --model results/synsin/<run> --theta -0.15 --phi -0.1 --tz 0.1
    python -m jobs.synsin_infer photo.jpg --checkpoint realestate/synsin.pth --theta -0.15 --tz 0.1
    python -m jobs.synsin_infer photo.jpg --model results/synsin/<run> --tz 0.3 --frames 12   # GIF

The pose is given as in the book / the official demo: ``theta`` (about y) and ``phi`` (about x) are the
rotation vector ``(phi, theta, 0)`` in radians, ``(tx, ty, tz)`` the translation, all in the official
camera axes (converted with ``lib3d.synthesis.synsin.synsin_pose_to_opencv``). The image is resized to the
model's size. Writes ``<out>/<stem>_synsin.png`` and the predicted depth ``<stem>_depth.png`` (near is
bright); ``--frames N`` also writes ``<stem>_synsin.gif``, the book's sequence from the input pose to the
given one in N steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lib3d import runtime


def parse(args=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m jobs.synsin_infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="input image (any size; RGB)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="a jobs.synsin run directory or checkpoint directory")
    src.add_argument("--checkpoint", help="an official synsin.pth (RealEstate10K, KITTI or MP3D)")
    for name, default in (("theta", -0.15), ("phi", -0.1), ("tx", 0.0), ("ty", 0.0), ("tz", 0.1)):
        ap.add_argument(f"--{name}", type=float, default=default, help=f"(default {default})")
    ap.add_argument("--frames", type=int, default=0, help="also write an N-frame GIF (0: none)")
    ap.add_argument("--out", default="results/synsin_infer", help="output folder")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generator's noise")
    return ap.parse_args(args)


def main(args: list[str] | None = None) -> dict[str, Path]:
    from lib3d.data.realestate import read_image_rgb
    from lib3d.io.images import save_gif, save_image
    from lib3d.systems.synsin import _depth_image, book_pose, load_generator

    a = parse(args)
    source = a.checkpoint or a.model
    if not source:
        raise runtime.UserError("give --model (a jobs.synsin run directory) or --checkpoint (an official synsin.pth)")
    if a.frames < 0:
        raise runtime.UserError(f"--frames must be >= 0, got {a.frames}")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise runtime.UserError("--device cuda: CUDA is not available")
    try:
        loaded = load_generator(source, a.device)
        size = loaded.generator.config.image_size
        img = read_image_rgb(a.image, size)
    except (FileNotFoundError, ValueError) as e:
        raise runtime.UserError(str(e)) from None
    G, dev = loaded.generator, torch.device(a.device)
    n = max(a.frames, 1)
    fr = torch.linspace(1.0 / n, 1.0, n) if a.frames else torch.ones(1)
    RT = torch.stack([book_pose(a.theta * f, a.phi * f, a.tx * f, a.ty * f, a.tz * f) for f in fr.tolist()])
    with torch.no_grad():
        out = G((img[None].to(dev) * 2 - 1).expand(len(RT), -1, -1, -1), loaded.K[None].expand(len(RT), 3, 3).to(dev),
                RT.to(dev), generator=torch.Generator(device=dev).manual_seed(a.seed))
    views = ((out.image + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()
    outdir = Path(a.out)
    stem = Path(a.image).stem
    written = {"image": save_image(outdir / f"{stem}_synsin.png", views[-1]),
               "depth": save_image(outdir / f"{stem}_depth.png", _depth_image(out.depth[:1].cpu())[0].permute(1, 2, 0))}
    if a.frames:
        frames = torch.cat((img.permute(1, 2, 0)[None], views))
        written["gif"] = save_gif(outdir / f"{stem}_synsin.gif", frames)
    print("[synsin_infer] wrote " + ", ".join(str(p) for p in written.values()), flush=True)
    return written


if __name__ == "__main__":
    runtime.run_main(main)
