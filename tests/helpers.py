"""Shared test helpers: paths to ../shared and a golden-file reader that skips cleanly when absent."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
BOOK = SHARED / "data" / "book"


def book_path(relative: str) -> Path:
    """Path of a book asset under ../shared/data/book; skips the test when it is absent."""
    p = BOOK / relative
    if not p.exists():
        pytest.skip(f"book asset {p} is absent (../shared not beside the project)")
    return p


def load_golden(name: str) -> tuple[dict, dict]:
    """Read ../shared/golden/<name>.safetensors -> (tensors by '<case>.<key>', cases metadata).

    Skips the test when the file is absent. Files are read once per test session (treat the tensors as
    read-only; clone before modifying them in place).
    """
    p = GOLDEN / f"{name}.safetensors"
    if not p.exists():
        pytest.skip(f"golden file {p} is absent (../shared not beside the project)")
    return _read_golden(str(p))


@functools.lru_cache(maxsize=None)
def _read_golden(p: str) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(p, "pt") as f:
        cases = json.loads(f.metadata()["cases"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, cases


def golden_case(tensors: dict, case: str) -> dict:
    """The tensors of one case, keyed without the '<case>.' prefix."""
    prefix = case + "."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}



def final_parameters(run_dir: Path, module: str = "model") -> dict:
    """The tensors of ``module`` in the newest checkpoint of a run directory, without the module prefix."""
    from lib3d import runtime

    ck = runtime.load_checkpoint(Path(run_dir) / "checkpoints")
    prefix = f"{module}."
    return {k[len(prefix):]: v for k, v in ck.tensors.items() if k.startswith(prefix)}


def train_rigid(config):
    """``runtime.train`` of the smoke system (jobs.fit_rigid) -> (FitResult, final parameters of rank 0)."""
    from lib3d import runtime
    from lib3d.systems.rigid import RigidSystem

    res = runtime.train(RigidSystem(), config)
    rc = res.config.run
    return res, final_parameters(Path(rc.output_root) / "fit_rigid" / rc.name)
