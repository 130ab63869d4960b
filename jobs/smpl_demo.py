"""Random SMPL bodies (the book's ``render_smpl.py``): shapes and poses sampled, saved as OBJ and rendered.

    python -m jobs.smpl_demo                     # 4 random synthetic bodies
    python -m jobs.smpl_demo tpose               # the mean shape in the rest pose
    python -m jobs.smpl_demo --model SMPL_NEUTRAL.pkl --gmm ../shared/data/book/smplify/gmm_08.pkl

Writes ``meshes/body<i>.obj``, ``media/body<i>.png`` (a front view), ``media/bodies.png`` (a grid),
``params/body<i>.safetensors`` and ``metrics.json`` under ``results/smpl_demo/<run>/``.
"""

from __future__ import annotations

import math

import torch

from configs.smpl_demo import PRESETS
from lib3d import runtime

JOB = "smpl_demo"


def main(args: list[str] | None = None) -> dict:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    run = runtime.start_run(JOB, config)
    from lib3d.bodies.pipeline import load_body_model, load_pose_prior
    from lib3d.bodies.priors import sample_gmm_poses
    from lib3d.bodies.smpl import smpl_forward
    from lib3d.bodies.visualize import render_body
    from lib3d.io import save_obj
    from lib3d.io.images import image_grid
    from lib3d.runtime import save_safetensors

    gen = torch.Generator().manual_seed(config.run.seed)
    model = load_body_model(config.model)
    n = config.num_bodies
    betas = config.beta_std * torch.randn(n, model.num_betas, generator=gen)
    pose = config.pose_scale * sample_gmm_poses(load_pose_prior(config.gmm), n, generator=gen)
    # camera frame (OpenCV axes): the body upright (R_x(pi)) 3 m in front of the camera
    orient = torch.tensor([[math.pi, 0.0, 0.0]]).expand(n, 3)
    with torch.no_grad():
        out = smpl_forward(model, betas, pose, orient, torch.tensor([[0.0, 0.0, 3.0]]).expand(n, 3))
    S = config.image_size
    focal = 1.1 * S  # the 1.9 m body fills ~70% of the image at 3 m
    images, methods = [], []
    (run.dir / "meshes").mkdir(parents=True, exist_ok=True)
    (run.dir / "params").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_obj(run.dir / "meshes" / f"body{i}.obj", out.vertices[i], model.faces)
        save_safetensors(run.dir / "params" / f"body{i}.safetensors", {"betas": betas[i], "body_pose": pose[i]})
        v = out.vertices[i] - torch.tensor([0.0, float(out.vertices[i, :, 1].mean()), 0.0])
        rgba, method = render_body(v, model.faces, (S, S), focal, torch.tensor([S / 2, S / 2]))
        img = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])  # white background
        images.append(torch.from_numpy(img))
        methods.append(method)
        run.save_image(f"body{i}", img)
    run.save_image("bodies", image_grid(images, rows=1 if n <= 4 else 2))
    metrics = {"bodies": n, "num_verts": model.num_verts, "render": methods[0], "model": model.description
               or config.model, "height_m": [float(out.vertices[i, :, 1].amax() - out.vertices[i, :, 1].amin())
                                             for i in range(n)]}
    run.write_metrics(metrics)
    print(f"[{JOB}] {n} bodies -> {run.dir}", flush=True)
    run.close()
    return {"dir": run.dir, **metrics}


if __name__ == "__main__":
    main()
