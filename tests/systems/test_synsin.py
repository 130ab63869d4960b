"""SynSin on the platform: a tiny in-process run, resume equality, evaluation baselines, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from configs.synsin import PRESETS
from lib3d import runtime
from lib3d.systems.synsin import SynSinSystem, depth_agreement, forward_walk_poses


def _cfg(tmp_path, name, **kw):
    base = PRESETS["smoke"][1]
    run = dataclasses.replace(base.run, output_root=str(tmp_path), name=name)
    return dataclasses.replace(base, run=run, **kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the dataset cache goes to ~/.cache/lib3d/indoor


@pytest.fixture
def _deterministic():
    # CPU scatter-adds (the backward of the rasterizer's gathers, the compositor's index_add_) sum in a
    # thread-dependent order, and Adam turns 1e-8 gradient differences of biases before a batch norm into
    # lr-sized steps: two *uninterrupted* runs differ too unless torch runs its deterministic kernels.
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _tensors(tmp_path, name):
    return runtime.load_checkpoint(tmp_path / "synsin" / name / "checkpoints")


def test_smoke_run_resume_equals_uninterrupted(tmp_path, _deterministic):
    full = runtime.train(SynSinSystem(), _cfg(tmp_path, "a"))
    m = full.result["metrics"]
    for k in ("psnr/synsin", "psnr/identity", "psnr/splat_true_depth", "psnr/no_refinement", "ssim/synsin",
              "depth/si_log_rmse", "depth/spearman", "psnr_gain_over_identity_db"):
        assert k in m and m[k] == m[k], k
    run_dir = tmp_path / "synsin" / "a"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["finished"] and saved["steps"] == 4
    assert (run_dir / "media" / "source_prediction_target_depth_truedepth.png").is_file()
    assert (run_dir / "media" / "forward_walk.gif").is_file()
    ck = _tensors(tmp_path, "a")
    assert {k.split(".")[0] for k in ck.tensors} == {"generator", "discriminator"}
    assert set(ck.optimizer_states) == {"generator", "discriminator"}
    # Resume: stop at step 3 (checkpoints every 2), rerun to 4: every tensor equals the uninterrupted run's.
    runtime.train(SynSinSystem(), _cfg(tmp_path, "split", steps=3))  # stops at 3 (checkpoints every 2)
    resumed = runtime.train(SynSinSystem(), _cfg(tmp_path, "split"))
    a, b = _tensors(tmp_path, "a"), _tensors(tmp_path, "split")
    assert a.step == b.step == 4 and set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=0, atol=0, msg=k)
    assert a.optimizer_states.keys() == b.optimizer_states.keys()
    assert full.result["state_digest"] == resumed.result["state_digest"]


def test_checkpoint_of_another_preset_is_named(tmp_path):
    runtime.train(SynSinSystem(), _cfg(tmp_path, "arch", steps=2))
    cfg = _cfg(tmp_path, "arch", steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ngf=16))
    with pytest.raises(runtime.CheckpointError, match=r"module 'generator' does not match"):
        runtime.train(SynSinSystem(), cfg)


def test_user_errors(tmp_path):
    cfg = _cfg(tmp_path, "bad")
    with pytest.raises(runtime.UserError, match="image-size"):
        SynSinSystem().check_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=64)))
    with pytest.raises(runtime.UserError, match="vgg-weights"):
        SynSinSystem().check_config(dataclasses.replace(cfg, vgg_weights=str(tmp_path / "none.pth")))


def test_depth_agreement_hand_cases():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    r = depth_agreement(t * 3.0, t)  # right up to scale: perfect
    assert r["si_log_rmse"].abs().max() < 1e-6 and torch.isclose(r["spearman"], torch.tensor([1.0])).all()
    r = depth_agreement(1.0 / t, t)  # reversed order
    assert torch.isclose(r["spearman"], torch.tensor([-1.0])).all()


def test_forward_walk_moves_points_backwards():
    RT = forward_walk_poses(3, step=0.5, turn_degrees=0.0)
    assert torch.allclose(RT[2, :3, 3], torch.tensor([0.0, 0.0, -1.0]))
    assert torch.allclose(RT[0], torch.eye(4))
