"""Random SMPL bodies (the book's ``render_smpl.py``): shapes and poses sampled, saved as OBJ and rendered.

    python -m jobs.smpl_demo                     # 4 random synthetic bodies
    python -m jobs.smpl_demo tpose               # the mean shape in the rest pose
    python -m jobs.smpl_demo --model SMPL_NEUTRAL.pkl --gmm ../shared/data/book/smplify/gmm_08.pkl

Writes ``meshes/body<i>.obj``, ``media/body<i>.png`` (a front view), ``media/bodies.png`` (a grid),
``params/body<i>.safetensors`` and ``metrics.json`` under ``results/smpl_demo/<run>/``.
"""

from __future__ import annotations

import pickle

import torch

from configs.smpl_demo import PRESETS
from lib3d import runtime
from lib3d.bodies.pipeline import load_body_model, load_pose_prior
from lib3d.bodies.priors import sample_gmm_poses
from lib3d.bodies.visualize import front_views
from lib3d.io import save_obj
from lib3d.io.images import image_grid

JOB = "smpl_demo"


def main(args: list[str] | None = None) -> dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    try:
        model, prior = load_body_model(config.model), load_pose_prior(config.gmm)
    except (ValueError, EOFError, pickle.UnpicklingError) as e:  # not a model / prior file: one line, exit 2
        raise runtime.UserError(str(e)) from None
    run = runtime.start_run(JOB, config)
    gen = torch.Generator().manual_seed(config.run.seed)
    n = config.num_bodies
    betas = config.beta_std * torch.randn(n, model.num_betas, generator=gen)
    pose = config.pose_scale * sample_gmm_poses(prior, n, generator=gen)
    verts, images, method = front_views(model, betas, pose, config.image_size)
    for d in ("meshes", "params"):
        (run.dir / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_obj(run.dir / "meshes" / f"body{i}.obj", verts[i], model.faces)
        runtime.save_safetensors(run.dir / "params" / f"body{i}.safetensors", {"betas": betas[i], "body_pose": pose[i]})
        run.save_image(f"body{i}", images[i])
    run.save_image("bodies", image_grid([torch.from_numpy(im) for im in images], rows=1 if n <= 4 else 2))
    height = (verts[..., 1].amax(1) - verts[..., 1].amin(1)).tolist()
    metrics = {"bodies": n, "num_verts": model.num_verts, "render": method, "model": model.description or config.model,
               "height_m": height}
    run.write_metrics(metrics)
    run.close()
    print(f"[{JOB}] {n} bodies -> {run.dir}", flush=True)
    return {"dir": run.dir, **metrics}


if __name__ == "__main__":
    runtime.run_main(main)
