"""Recover a similarity transform between two procedural point clouds (the platform's smoke job).

    python -m jobs.fit_rigid                      # default preset, in this process
    python -m jobs.fit_rigid smoke --run.name s1  # 30 steps
    python -m jobs.fit_rigid ddp                  # 2 Ray workers, DDP
    python -m jobs.fit_rigid --help
"""

from __future__ import annotations

from configs.fit_rigid import PRESETS
from lib3d import runtime
from lib3d.systems.rigid import RigidSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(RigidSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
