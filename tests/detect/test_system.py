"""Mesh R-CNN on the platform: a tiny in-process run, its outputs, resume equality, another preset's
checkpoint, user errors, the learning-rate schedule. The two end-to-end runs are marked slow (about 1 min
on a quiet 2-core machine, several under load): ``pytest tests/detect -m slow``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from configs.meshrcnn import PRESETS
from lib3d import runtime
from lib3d.systems.meshrcnn import MeshRCNNSystem, lr_factor


def _cfg(tmp_path, name, **kw):
    base = PRESETS["smoke"][1]
    run = dataclasses.replace(base.run, output_root=str(tmp_path), name=name)
    return dataclasses.replace(base, run=run, **kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _ck(tmp_path, name):
    return runtime.load_checkpoint(tmp_path / "meshrcnn" / name / "checkpoints")


@pytest.mark.slow
def test_smoke_run_outputs_and_resume_equals_uninterrupted(tmp_path):
    full = runtime.train(MeshRCNNSystem(), _cfg(tmp_path, "a"))
    m = full.result["metrics"]
    for k in ("box_ap", "box_ap50", "mask_ap", "mesh_ap50", "eval_images"):
        assert k in m, k
    run_dir = tmp_path / "meshrcnn" / "a"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["finished"] and saved["steps"] == 4
    assert (run_dir / "media" / "heldout_detections.png").is_file()
    assert (run_dir / "media" / "heldout_meshes.png").is_file()
    runtime.train(MeshRCNNSystem(), _cfg(tmp_path, "split", steps=3))  # stops at 3 (checkpoint at 2 and 3)
    runtime.train(MeshRCNNSystem(), _cfg(tmp_path, "split"))
    a, b = _ck(tmp_path, "a"), _ck(tmp_path, "split")
    assert a.step == b.step == 4 and set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        # CPU index_add / scatter in RoIAlign's and GraphConv's backward may sum in another order
        torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_checkpoint_of_another_preset_is_named(tmp_path):
    runtime.train(MeshRCNNSystem(), _cfg(tmp_path, "arch", steps=2))
    cfg = _cfg(tmp_path, "arch", steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, box_fc_dim=48))
    with pytest.raises(runtime.CheckpointError, match=r"module 'model' does not match.*box_head"):
        runtime.train(MeshRCNNSystem(), cfg)


def test_user_errors(tmp_path):
    cfg = _cfg(tmp_path, "bad")
    with pytest.raises(runtime.UserError, match="weights"):
        MeshRCNNSystem().check_config(dataclasses.replace(cfg, weights=str(tmp_path / "none.pth")))
    with pytest.raises(runtime.UserError, match="batch-size"):
        MeshRCNNSystem().check_config(dataclasses.replace(cfg, batch_size=1,
                                                          ray=dataclasses.replace(cfg.ray, num_workers=2)))


def test_lr_schedule():
    assert lr_factor(0, 100, 0.1, (200,)) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0.1, (200,)) == pytest.approx(0.55)
    assert lr_factor(150, 100, 0.1, (200,)) == 1.0
    assert lr_factor(250, 100, 0.1, (200, 300)) == pytest.approx(0.1)
    assert lr_factor(300, 100, 0.1, (200, 300)) == pytest.approx(0.01)
