"""Run directories: layout, config.json, TensorBoard scalars/images read back with TensorBoard's reader,
media, metrics.json, rank-0-only writing."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configs.common import RayConfig, RunConfig
from lib3d import runtime


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    """Learning rate."""
    run: RunConfig = RunConfig()
    """Run."""
    ray: RayConfig = RayConfig()
    """Ray."""


def _cfg(tmp_path, **kw):
    return _Cfg(run=RunConfig(output_root=str(tmp_path), progress=False, **kw))


def read_scalars(run_dir, tag):
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)], ea


def test_layout_and_logging(tmp_path, capsys):
    run = runtime.start_run("demo", _cfg(tmp_path, name="r1"))
    assert run.dir == tmp_path / "demo" / "r1" and run.is_main
    assert "demo" in capsys.readouterr().out  # resolved config printed
    cfg = json.loads((run.dir / "config.json").read_text())
    assert cfg == {"job": "demo", "config": runtime.config_to_dict(run.config)}
    for step in range(3):
        run.log_scalars(step, {"loss": 1.0 / (step + 1), "train/psnr": torch.tensor(20.0 + step)})
    run.log_image("render", torch.rand(6, 5, 3), step=2)
    with pytest.raises(ValueError, match="scalar"):
        run.log_scalars(0, {"bad": torch.ones(2)})
    png = run.save_image("frame", torch.zeros(4, 7, 3))
    gif = run.save_gif("orbit", torch.rand(5, 4, 4, 3), fps=5)
    run.write_metrics({"psnr": 30.0, "t": torch.tensor(2.0)})
    run.write_metrics({"ssim": 0.9})
    run.close()
    run.close()  # idempotent
    assert sorted(p.name for p in run.dir.iterdir()) == ["checkpoints", "config.json", "media", "metrics.json",
                                                         "tensorboard"]
    assert json.loads((run.dir / "metrics.json").read_text()) == {"psnr": 30.0, "t": 2.0, "ssim": 0.9}
    assert png == run.dir / "media" / "frame.png" and Image.open(png).size == (7, 4)
    assert Image.open(gif).n_frames == 5
    loss, ea = read_scalars(run.dir, "loss")
    assert [s for s, _ in loss] == [0, 1, 2] and np.allclose([v for _, v in loss], [1, 0.5, 1 / 3])
    assert [v for _, v in read_scalars(run.dir, "train/psnr")[0]] == [20.0, 21.0, 22.0]
    (img,) = ea.Images("render")
    assert (img.width, img.height, img.step) == (5, 6, 2)


def test_non_main_rank_writes_nothing(tmp_path):
    run = runtime.start_run("demo", _cfg(tmp_path, name="r"), rank=1, world_size=2)
    assert not run.is_main and run.writer is None
    run.log_scalars(0, {"loss": 1.0})
    run.save_image("x", torch.zeros(2, 2, 3))
    run.write_metrics({"a": 1})
    assert run.save_checkpoint(1, {"w": torch.ones(1)}) is None
    run.close()
    assert not (tmp_path / "demo").exists()


def test_timestamped_name_and_checkpoints(tmp_path):
    run = runtime.start_run("demo", _cfg(tmp_path, keep_checkpoints=2), quiet=True)
    assert run.dir.parent == tmp_path / "demo" and len(run.dir.name) == len("20250101-000000")
    assert run.load_checkpoint() is None
    g = torch.Generator().manual_seed(0)
    for s in (1, 2, 3):
        run.save_checkpoint(s, {"w": torch.full((2,), float(s))}, extra={"s": s}, generators={"g": g})
    assert [p.name for p in runtime.list_checkpoints(run.checkpoint_dir)] == ["step_000000002", "step_000000003"]
    expected = torch.rand(2, generator=g)
    g2 = torch.Generator()
    ck = run.load_checkpoint(generators={"g": g2})
    assert ck.step == 3 and ck.extra == {"s": 3} and torch.equal(ck.tensors["w"], torch.full((2,), 3.0))
    assert torch.equal(torch.rand(2, generator=g2), expected)
    assert ck.config["run"]["keep_checkpoints"] == 2
    assert len(list(run.progress(range(4)))) == 4
    run.close()


def test_no_resume_starts_fresh_directory(tmp_path):
    a = runtime.start_run("demo", _cfg(tmp_path, name="x"), quiet=True)
    a.save_checkpoint(1, {"w": torch.ones(1)})
    b = runtime.start_run("demo", _cfg(tmp_path, name="x", resume=False), quiet=True)
    assert b.dir.name == "x-1" and b.load_checkpoint() is None
    c = runtime.start_run("demo", _cfg(tmp_path, name="x"), quiet=True)
    assert c.dir == a.dir and c.load_checkpoint().step == 1


def test_config_without_run_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    @dataclasses.dataclass(frozen=True)
    class Bare:
        x: int = 1
        """x."""

    run = runtime.start_run("bare", Bare(), quiet=True)
    assert run.dir.parent == tmp_path / "results" / "bare"
