"""End-to-end runs of ``jobs.nerf`` and ``jobs.fit_volume`` (slow): the tiny presets learn, a 2-worker DDP
run, and a 2-Ray-worker fit_volume interrupted and resumed equal to an uninterrupted one (CI)."""

import dataclasses
import json

import pytest
import torch


def _run(tmp_path, *args):
    from jobs.nerf import main

    return main(["tiny", "--run.output-root", str(tmp_path), *args])


@pytest.mark.slow
@pytest.mark.ci
def test_tiny_preset_learns(tmp_path):
    from lib3d.data.posed_images import load_posed_images, split_indices
    from lib3d.metrics import psnr

    m = _run(tmp_path, "--run.name", "smoke").result["metrics"]
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
def test_ddp_two_workers(tmp_path):
    import ray

    try:
        res = _run(tmp_path, "--run.name", "ddp", "--ray.num-workers", "2", "--ray.no-include-dashboard",
                   "--steps", "40", "--turntable-frames", "0")
    finally:
        ray.shutdown()  # stop the embedded Ray the job started
    assert len(res.results) == 2
    m = res.result["metrics"]
    assert m["world_size"] == 2 and m["test_psnr"] > 10
    assert res.results[0]["state_digest"] == res.results[1]["state_digest"]  # the ranks stayed in step


@pytest.mark.slow
@pytest.mark.ci
def test_fit_volume_tiny(tmp_path):
    from jobs.fit_volume import main

    m = main(["tiny", "--run.output-root", str(tmp_path), "--run.name", "v"]).result["metrics"]
    assert (tmp_path / "fit_volume" / "v" / "media" / "rotating.gif").exists()
    assert m["test_psnr"] > 18 and m["final_loss"] < 0.2


@pytest.mark.slow
@pytest.mark.ci
def test_fit_volume_two_ray_workers_resume(ray_driver, tmp_path):
    """2 Ray Train workers stopped by the time limit after one step and resumed end where 2 uninterrupted
    workers end (parameters to 1e-6; each rank's cameras come from the per-step generator)."""
    from lib3d import runtime
    from lib3d.systems.volume import VolumeSystem
    from tests.fields.test_systems import DATA, _volume_config
    from tests.helpers import final_parameters

    def config(name, **run):
        c = _volume_config(tmp_path, name, **run)
        return dataclasses.replace(c, batch_size=4, ray=runtime.RayConfig(address=ray_driver["RAY_GCS_ADDRESS"],
                                                                          num_workers=2))

    full = runtime.train(VolumeSystem(DATA), config("full"))
    first = runtime.train(VolumeSystem(DATA), config("split", time_limit_s=1e-9)).result["metrics"]
    assert first["stopped_early"] and first["steps"] == 1
    resumed = runtime.train(VolumeSystem(DATA), config("split"))
    assert resumed.result["metrics"]["finished"] and resumed.result["metrics"]["world_size"] == 2
    a = final_parameters(tmp_path / "fit_volume" / "full")
    b = final_parameters(tmp_path / "fit_volume" / "split")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert full.results[0]["state_digest"] == full.results[1]["state_digest"] == resumed.results[1]["state_digest"]
