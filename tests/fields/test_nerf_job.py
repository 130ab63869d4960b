"""End-to-end runs of ``jobs.nerf``: the tiny smoke (CI), resume from a checkpoint, a 2-worker DDP smoke."""

import json

import pytest
import torch


def _run(tmp_path, *args):
    from jobs.nerf import main

    return main(["tiny", "--run.output-root", str(tmp_path), *args])


@pytest.mark.slow
@pytest.mark.ci
def test_tiny_preset_learns(tmp_path):
    from lib3d.fields.training import load_posed_images, split_indices
    from lib3d.metrics import psnr

    res = _run(tmp_path, "--run.name", "smoke")
    m = res.result
    run_dir = tmp_path / "nerf" / "smoke"
    for name in ("metrics.json", "media/heldout.png", "media/turntable.gif", "config.json"):
        assert (run_dir / name).exists(), name
    assert any((run_dir / "tensorboard").iterdir())
    data = load_posed_images("embedded", 64, 16)
    _, test = split_indices(16)
    blank = float(psnr(torch.zeros_like(data.images[test]), data.images[test]).mean())
    assert m["test_psnr"] > blank + 6.0, (m["test_psnr"], blank)
    assert json.loads((run_dir / "metrics.json").read_text())["test_psnr"] == pytest.approx(m["test_psnr"])


@pytest.mark.slow
def test_resume_from_checkpoint(tmp_path):
    first = _run(tmp_path, "--run.name", "r", "--steps", "60", "--turntable-frames", "0").result
    assert first["steps"] == 60
    ckpts = list((tmp_path / "nerf" / "r" / "checkpoints").iterdir())
    assert ckpts
    second = _run(tmp_path, "--run.name", "r", "--steps", "100", "--turntable-frames", "0").result
    assert second["steps"] == 100
    assert second["train_seconds"] < first["train_seconds"] * 2  # only 40 more steps were trained


@pytest.mark.slow
def test_ddp_two_workers(tmp_path):
    import ray

    try:
        res = _run(tmp_path, "--run.name", "ddp", "--ray.num-workers", "2", "--ray.no-include-dashboard",
                   "--steps", "40", "--turntable-frames", "0")
    finally:
        ray.shutdown()  # stop the embedded Ray the job started
    assert len(res.results) == 2
    assert res.result["world_size"] == 2 and res.result["test_psnr"] > 10


@pytest.mark.slow
@pytest.mark.ci
def test_fit_volume_tiny(tmp_path):
    from jobs.fit_volume import main

    m = main(["tiny", "--run.output-root", str(tmp_path), "--run.name", "v"]).result
    assert (tmp_path / "fit_volume" / "v" / "media" / "rotating.gif").exists()
    assert m["test_psnr"] > 18 and m["final_loss"] < 0.2
