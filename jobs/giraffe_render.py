"""Render the book's GIRAFFE figures (the official render.py) from a trained generator.

    python -m jobs.giraffe_render --checkpoint results/giraffe/<run>          # a lib3d run (default preset)
    python -m jobs.giraffe_render cars256 --checkpoint checkpoint_cars256-d9ea5e11.pt
    python -m jobs.giraffe_render --help                                       # presets: every official model

Writes <out_dir>/<program>/<program>.png (scenes x 6 steps) and <program>.gif for interpolate_app,
interpolate_shape, interpolate_bg_app, translation_object_depth, translation_object_horizontal,
rotation_object and add_objects (objects added one by one, then removed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from configs.giraffe import RENDER_PRESETS
from lib3d import runtime
from lib3d.io import image_grid, save_gif, save_image
from lib3d.nn.weights import WeightFileError, strict_load
from lib3d.synthesis.giraffe_render import PROGRAMS, render_program
from lib3d.synthesis.giraffe_weights import load_official_giraffe
from lib3d.systems.giraffe import build_generator


def load_generator(config) -> torch.nn.Module:
    """The EMA generator of ``config.checkpoint`` (an official ``.pt`` or a lib3d run)."""
    if config.checkpoint is None:
        raise runtime.UserError("give --checkpoint (an official model.pt or a results/giraffe/<run> directory)")
    path = Path(config.checkpoint)
    if not path.exists():
        raise runtime.UserError(f"--checkpoint: no such file or directory {str(path)!r}")
    gen = build_generator(config.model)
    try:
        if path.is_file():
            load_official_giraffe(path, None, generator_ema=gen)
        else:
            ck_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
            ck = runtime.load_checkpoint(ck_dir)
            if ck is None:
                raise runtime.UserError(f"{ck_dir}: no checkpoint in this directory")
            sd = {k[len("generator_ema."):]: v for k, v in ck.tensors.items() if k.startswith("generator_ema.")}
            strict_load(gen, sd, f"GIRAFFE EMA generator ({ck.path})")
    except WeightFileError as e:
        raise runtime.UserError(str(e)) from None
    return gen


def main(args: list[str] | None = None) -> dict[str, list[str]]:
    config = runtime.cli(RENDER_PRESETS, description=__doc__, args=args)
    bad = [p for p in config.programs if p not in PROGRAMS]
    if bad:
        raise runtime.UserError(f"--programs: unknown {bad}; choose from {sorted(PROGRAMS)}")
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if config.device == "auto" else config.device)
    gen = load_generator(config).to(device)
    written: dict[str, list[str]] = {}
    for program in config.programs:  # loop over the programs
        frames = render_program(gen, program, config.n_scenes, config.n_steps, config.seed, config.temperature)
        t, n = frames.shape[:2]
        hwc = frames.permute(0, 1, 3, 4, 2)  # (T, N, S, S, 3)
        pick = torch.linspace(0, t - 1, 6).round().long()
        grid = image_grid(hwc[pick].transpose(0, 1).reshape(n * 6, *hwc.shape[2:]), rows=n)
        folder = Path(config.out_dir) / program
        png = save_image(folder / f"{program}.png", grid)
        rows = max(1, round(n ** 0.5))
        gif = save_gif(folder / f"{program}.gif", [image_grid(f, rows=rows) for f in hwc], fps=config.fps)
        written[program] = [str(png), str(gif)]
        print(f"[giraffe_render] {program}: {png}, {gif}", flush=True)
    return written


if __name__ == "__main__":
    runtime.run_main(main)
