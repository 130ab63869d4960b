"""The chapter-5 and chapter-6 systems on ``runtime.train``: resumed runs equal uninterrupted ones (grid NeRF
across an upsampling, the book's NeRF across its learning-rate drop, the voxel volume), the finished run
re-run, a time limit, user mistakes in one line, the book's schedule and loss."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs.fit_volume import FitVolumeConfig
from configs.nerf import BookConfig, GridConfig, NerfConfig
from lib3d import runtime
from lib3d.data.posed_images import PosedImages
from lib3d.systems.nerf import BookNerfSystem, GridNerfSystem, grid_level
from lib3d.systems.volume import VolumeSystem, book_huber_loss, book_lr_schedule
from tests.helpers import final_parameters

REPO = Path(__file__).resolve().parents[2]


def _data(n: int = 8, size: int = 12) -> PosedImages:
    """Random images and silhouettes seen from a ring of cameras (resume equality needs no real scene)."""
    from lib3d.data.renders import view_cameras

    g = torch.Generator().manual_seed(0)
    sil = (torch.rand(n, size, size, generator=g) > 0.3).float()
    return PosedImages(view_cameras(n, 180.0, endpoint=False), torch.rand(n, size, size, 3, generator=g), sil, 0.0)


DATA = _data()
RUN = runtime.RunConfig(checkpoint_every=2, log_every=1, progress=False)


def _run(tmp_path, name, **kw):
    return dataclasses.replace(RUN, name=name, output_root=str(tmp_path), **kw)


def _volume_config(tmp_path, name, **run):
    return FitVolumeConfig(data="embedded", volume_size=12, n_pts_per_ray=12, batch_size=2, iterations=6,
                           rotating_frames=2, compiled_sampler=False, run=_run(tmp_path, name, **run))


def _grid_config(tmp_path, name, **run):
    grid = GridConfig(density_voxels=10 ** 3, density_voxels_start=6 ** 3, color_voxels=6 ** 3,
                      color_voxels_start=4 ** 3, upsample_at=(4,), batch_rays=64, prune_every=3,
                      color_threshold_start=2, n_features=4, hidden=8)
    return NerfConfig(steps=8, threads=0, turntable_frames=0, grid=grid, run=_run(tmp_path, name, **run))


def _book_config(tmp_path, name, **run):
    book = BookConfig(n_harmonic_functions=3, n_hidden_neurons=16, batch_cameras=2, n_rays_per_image=16,
                      n_pts_per_ray=8)
    return NerfConfig(method="book", steps=6, threads=0, turntable_frames=2, book=book,
                      run=_run(tmp_path, name, **run))


class _Crash(Exception):
    pass


def _crashing(system_class, at_step: int):
    """The system, crashing (like a killed process) when it reaches ``at_step``."""

    class Crashing(system_class):
        def train_step(self, state, step, generator):
            if step == at_step:
                raise _Crash(step)
            return super().train_step(state, step, generator)

    return Crashing(DATA)


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b) and a
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("system_class, config_of, module, crash_at", [
    (VolumeSystem, _volume_config, "model", 3),     # crashes at 3: resumes from the checkpoint of step 2
    pytest.param(GridNerfSystem, _grid_config, "field", 5,  # resumes at 4: the coarse grids, grown by step 4
                 marks=pytest.mark.slow),
    (GridNerfSystem, _grid_config, "field", 7),     # resumes at 6: the grown grids, pruned occupancy
    (BookNerfSystem, _book_config, "nerf", 5),      # resumes at 4: after the learning-rate drop (step 4.5)
])
def test_resume_equals_uninterrupted(tmp_path, system_class, config_of, module, crash_at):
    full = runtime.train(system_class(DATA), config_of(tmp_path, "full"))
    with pytest.raises(_Crash):
        runtime.train(_crashing(system_class, crash_at), config_of(tmp_path, "split"))
    resumed = runtime.train(system_class(DATA), config_of(tmp_path, "split"))
    job = system_class.name
    _assert_same(final_parameters(tmp_path / job / "full", module), final_parameters(tmp_path / job / "split", module))
    assert full.result["state_digest"] == resumed.result["state_digest"]
    assert resumed.result["metrics"]["finished"] and resumed.result["metrics"]["test_psnr"] > 0


def test_grid_levels():
    cfg = GridConfig(upsample_at=(4, 9))
    assert [grid_level(cfg, s) for s in (0, 3, 4, 8, 9, 100)] == [0, 0, 1, 1, 2, 2]


def test_time_limit_stops_and_resumes_grid_nerf(tmp_path):
    """The loop's time limit (rank 0's clock, shared on the worker's device) replaces nerf's own all-reduce
    of a CPU tensor: it stops after the first step, checkpoints, and a re-run finishes the same run."""
    first = runtime.train(GridNerfSystem(DATA), _grid_config(tmp_path, "limited", time_limit_s=1e-9)).result["metrics"]
    assert first["stopped_early"] and first["steps"] == 1 and not first["finished"]
    second = runtime.train(GridNerfSystem(DATA), _grid_config(tmp_path, "limited")).result["metrics"]
    assert second["finished"] and second["steps"] == 8
    runtime.train(GridNerfSystem(DATA), _grid_config(tmp_path, "ref"))
    _assert_same(final_parameters(tmp_path / "nerf" / "ref", "field"),
                 final_parameters(tmp_path / "nerf" / "limited", "field"))


def test_finished_fit_volume_rerun_reports_and_returns(tmp_path, capsys):
    """``python -m jobs.fit_volume --run.name X`` twice: the second run reports the finished run's metrics
    (it used to crash on an unassigned loss)."""
    first = runtime.train(VolumeSystem(DATA), _volume_config(tmp_path, "X")).result["metrics"]
    again = runtime.train(VolumeSystem(DATA), _volume_config(tmp_path, "X")).result["metrics"]
    assert again["finished"] and again["test_psnr"] == pytest.approx(first["test_psnr"])
    assert "already finished at step 6" in capsys.readouterr().out
    media = tmp_path / "fit_volume" / "X" / "media"
    assert (media / "rotating.gif").is_file() and (media / "heldout.png").is_file()


def test_book_schedule_and_loss():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = book_lr_schedule(opt, 8)  # drop at round(0.75 * 8) = 6
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [1.0] * 6 + [0.1] * 2
    import json

    json.dumps(sched.state_dict())  # resumable through TrainState.schedulers
    rgb, sil = torch.full((2, 3, 3), 0.3), torch.zeros(2, 3)
    loss, c, s = book_huber_loss(rgb, sil, torch.zeros(2, 3, 3), torch.zeros(2, 3))
    expected = 0.1 * ((1 + 9) ** 0.5 - 1)  # huber(0.3, 0) with scaling 0.1
    assert float(c) == pytest.approx(expected) and float(s) == 0 and float(loss) == pytest.approx(expected)
    with pytest.raises(ValueError, match="must match"):
        book_huber_loss(rgb, sil, torch.zeros(2, 3), torch.zeros(2, 3))


def test_missing_cow_mesh_is_a_user_error(tmp_path):
    from jobs.nerf import main

    with pytest.raises(runtime.UserError, match="/missing/cow.obj"):
        main(["cow", "--data", "cow:/missing/cow.obj", "--run.output-root", str(tmp_path)])
    from jobs.fit_volume import main as fit_volume

    with pytest.raises(runtime.UserError, match="e.g. --data cow:data/cow_mesh/cow.obj"):
        fit_volume(["--data", "cow", "--run.output-root", str(tmp_path)])


def test_missing_blender_dir_is_one_line_and_status_2(tmp_path):
    """``python -m jobs.nerf --data blender:/missing/dir`` used to die in torch.cat on an empty list."""
    p = subprocess.run([sys.executable, "-m", "jobs.nerf", "--data", "blender:/missing/dir", "--run.output-root",
                        str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "/missing/dir" in lines[0] and lines[0].startswith("jobs.nerf: error:"), lines
    assert not (tmp_path / "nerf").exists()  # refused before any run directory was made
