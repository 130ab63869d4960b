"""SynSin and Mesh R-CNN on 2 Ray Train workers (DDP over gloo, an embedded one-machine Ray): each step's
batch is split over the ranks and the gradients averaged, so both ranks must hold identical networks and
optimizer states after every step; a second call resumes the finished run. Marked slow (~1-2 min each on
2 quiet cores): ``pytest tests/systems/test_ddp_runs.py -m slow``."""

from __future__ import annotations

import dataclasses

import pytest

from lib3d import runtime

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # dataset caches (~/.cache/lib3d/...)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _two_workers(presets, tmp_path, name, **kw):
    base = presets["smoke"][1]
    run = dataclasses.replace(base.run, output_root=str(tmp_path), name=name)
    return dataclasses.replace(base, run=run, ray=dataclasses.replace(base.ray, num_workers=2), **kw)


def _check(out, steps):
    assert len(out.results) == 2 and out.restarts == 0
    assert out.results[0]["state_digest"] == out.results[1]["state_digest"]  # every network and optimizer
    assert out.result["metrics"]["steps"] == steps


def test_synsin_two_workers_stay_in_sync(tmp_path):
    from configs.synsin import PRESETS
    from lib3d.systems.synsin import SynSinSystem

    cfg = _two_workers(PRESETS, tmp_path, "ddp", steps=2)
    _check(runtime.train(SynSinSystem(), cfg), 2)
    assert runtime.load_checkpoint(tmp_path / "synsin" / "ddp" / "checkpoints").step == 2


def test_meshrcnn_two_workers_stay_in_sync(tmp_path):
    from configs.meshrcnn import PRESETS
    from lib3d.systems.meshrcnn import MeshRCNNSystem

    cfg = _two_workers(PRESETS, tmp_path, "ddp", steps=2)
    _check(runtime.train(MeshRCNNSystem(), cfg), 2)
    assert runtime.load_checkpoint(tmp_path / "meshrcnn" / "ddp" / "checkpoints").step == 2
