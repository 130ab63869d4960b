"""Convert a body model file (the official SMPL .pkl, .npz or .safetensors) to another format.

    python -m jobs.convert_body_model SMPL_NEUTRAL.pkl smpl_neutral.safetensors
    python -m jobs.convert_body_model --synthetic synthetic_body.pkl     # write the embedded synthetic body

The official pickle is read with lib3d's restricted unpickler (no chumpy, no scipy, no code execution).
The output format follows the suffix: .safetensors (lib3d's), .npz, or .pkl (plain numpy, readable by smplx).
"""

from __future__ import annotations

import argparse

import torch

from lib3d import runtime
from lib3d.bodies.model_io import load_smpl_model, save_smpl_model
from lib3d.bodies.synthetic import synthetic_smpl_model


def main(args: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m jobs.convert_body_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="IN OUT, or just OUT with --synthetic")
    p.add_argument("--synthetic", action="store_true", help="write the embedded synthetic body to OUT")
    a = p.parse_args(args)
    if a.synthetic:
        if len(a.paths) != 1:
            p.error("--synthetic takes exactly one path (OUT)")
        model, out = synthetic_smpl_model(dtype=torch.float64), a.paths[0]
    else:
        if len(a.paths) != 2:
            p.error("expected IN OUT")
        try:
            model = load_smpl_model(a.paths[0], dtype=torch.float64)
        except ValueError as e:  # not a body model file (the message names it): one line, exit status 2
            raise runtime.UserError(str(e)) from None
        out = a.paths[1]
    path = save_smpl_model(model, out)
    print(f"wrote {path}: V={model.num_verts} J={model.num_joints} S={model.num_betas} "
          f"extra={list(model.extra_joint_names)}")
    return str(path)


if __name__ == "__main__":
    runtime.run_main(main)
