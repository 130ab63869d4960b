"""Chapter 2: recover the translation of a heterogeneous mesh batch from noisy points by Chamfer distance.

    python -m jobs.fit_translation                 # lib3d's embedded cube / octahedron / dodecahedron
    python -m jobs.fit_translation book            # the book's OBJ files (../shared/data/book/obj)
    python -m jobs.fit_translation --mesh-dir DIR  # any folder with cube.obj, diamond.obj, dodecahedron.obj
    python -m jobs.fit_translation smoke           # a quick bounded run

Writes ``results/fit_translation/<run>/``: config, TensorBoard scalars (loss, translation, error),
``metrics.json`` (recovered translation, error) and the final translation as a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from configs.fit_translation import PRESETS, FitTranslationConfig
from lib3d import runtime
from lib3d.ops import sample_points_from_meshes
from lib3d.ops.fitting import translation_fitting_loss
from lib3d.structures import Meshes

JOB = "fit_translation"


def load_meshes(mesh_dir: str | None, device) -> Meshes:
    """The chapter-2 batch: cube, diamond (octahedron) and dodecahedron, from files or embedded."""
    if mesh_dir is None:
        from lib3d.data import primitives

        shapes = [primitives.cube(), primitives.octahedron(), primitives.dodecahedron()]
        return Meshes([v for v, _ in shapes], [f for _, f in shapes]).to(device)
    from lib3d.io import load_objs_as_meshes

    root = Path(mesh_dir)
    return load_objs_as_meshes([root / f"{n}.obj" for n in ("cube", "diamond", "dodecahedron")], device=device,
                               load_textures=False)


def main(config: FitTranslationConfig | None = None) -> dict:
    config = config or runtime.cli(PRESETS, description=__doc__)
    run = runtime.start_run(JOB, config)
    device = torch.device(config.device)
    gen = torch.Generator(device=device).manual_seed(config.run.seed)
    meshes = load_meshes(config.mesh_dir, device)
    offset = torch.tensor(config.offset, dtype=torch.float32, device=device)
    with torch.no_grad():  # the observations: noisy samples of the shifted meshes
        observed = sample_points_from_meshes(meshes, config.num_samples, generator=gen) + offset
        observed = observed + config.noise * torch.randn(observed.shape, generator=gen, device=device)
    translation = torch.zeros(3, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([translation], lr=config.lr, momentum=config.momentum)
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for step in run.progress(range(config.iterations), total=config.iterations, desc=JOB):
        optimizer.zero_grad(set_to_none=True)
        loss = translation_fitting_loss(meshes, translation, observed, config.num_samples, generator=gen)
        loss.backward()
        optimizer.step()
        done = step + 1
        if done % max(config.run.log_every, 1) == 0 or done == config.iterations:
            err = (translation.detach() - offset).norm()
            t = translation.detach().tolist()
            run.log_scalars(done, {"loss/chamfer": loss.detach(), "error": err, "translation/x": t[0],
                                   "translation/y": t[1], "translation/z": t[2]})
    wall = time.perf_counter() - t0
    recovered = translation.detach().cpu()
    metrics = {
        "recovered_translation": recovered.tolist(),
        "true_offset": list(config.offset),
        "max_abs_error": float((recovered - offset.cpu()).abs().max()),
        "final_chamfer": float(loss.detach()),
        "wall_time_s": wall,
    }
    run.write_metrics(metrics)
    run.save_checkpoint(config.iterations, {"translation": recovered})
    print(f"[{JOB}] recovered {[round(v, 4) for v in metrics['recovered_translation']]} "
          f"(true {list(config.offset)}, max error {metrics['max_abs_error']:.4f}) in {wall:.1f} s")
    run.close()
    return metrics


if __name__ == "__main__":
    main()
