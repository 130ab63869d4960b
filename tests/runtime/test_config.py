"""cli presets/overrides/help, config JSON, run-directory resolution, and the smoke job's command line."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs.common import RayConfig, RunConfig
from configs.fit_rigid import PRESETS, FitRigidConfig
from lib3d import runtime
from lib3d.runtime.run import resolve_run_config

REPO = Path(__file__).resolve().parents[2]


def test_no_arguments_uses_first_preset():
    assert runtime.cli(PRESETS, args=[]) == PRESETS["default"][1]


def test_preset_and_overrides():
    c = runtime.cli(PRESETS, args=["smoke", "--steps", "7", "--run.name", "x", "--ray.num-workers", "2"])
    assert isinstance(c, FitRigidConfig)
    assert (c.steps, c.run.name, c.ray.num_workers) == (7, "x", 2)
    assert c.num_points == PRESETS["smoke"][1].num_points  # rest of the preset kept
    c = runtime.cli(PRESETS, args=["--lr", "0.5", "--run.no-resume"])  # overrides on the default preset
    assert c.lr == 0.5 and c.run.resume is False and c.steps == PRESETS["default"][1].steps


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["default"][1].steps = 3


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        runtime.cli(PRESETS, args=["--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    for name in PRESETS:
        assert name in top
    with pytest.raises(SystemExit):
        runtime.cli(PRESETS, args=["smoke", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for cls, prefix in ((FitRigidConfig, ""), (RunConfig, "run."), (RayConfig, "ray.")):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type) or f.name in ("run", "ray"):
                continue
            assert f"--{prefix}{f.name.replace('_', '-')}" in text, f.name
    assert "Global minibatch of corresponding points" in text  # field docstrings become help


def test_bad_override_exits(capsys):
    with pytest.raises(SystemExit) as e:
        runtime.cli(PRESETS, args=["smoke", "--steps", "many"])
    assert e.value.code != 0
    with pytest.raises(SystemExit):
        runtime.cli(PRESETS, args=["--no-such-field", "1"])


def test_empty_presets():
    with pytest.raises(ValueError, match="presets"):
        runtime.cli({}, args=[])


def test_config_to_dict_roundtrips_json():
    d = runtime.config_to_dict(PRESETS["smoke"][1])
    assert json.loads(json.dumps(d)) == d
    assert d["run"]["checkpoint_every"] == 10 and d["ray"]["num_workers"] == 0
    with pytest.raises(TypeError):
        runtime.config_to_dict(3)


def test_resolve_run_config(tmp_path):
    c = dataclasses.replace(PRESETS["smoke"][1], run=RunConfig(output_root=str(tmp_path)))
    r = resolve_run_config("j", c)
    assert r.run.name and Path(r.run.output_root).is_absolute()
    named = dataclasses.replace(c, run=dataclasses.replace(c.run, name="a", resume=False))
    assert resolve_run_config("j", named).run.name == "a"
    (tmp_path / "j" / "a").mkdir(parents=True)
    (tmp_path / "j" / "a-1").mkdir()
    fresh = resolve_run_config("j", named)
    assert fresh.run.name == "a-2" and fresh.run.resume is True  # later restarts resume in a-2
    resumed = dataclasses.replace(named, run=dataclasses.replace(named.run, resume=True))
    assert resolve_run_config("j", resumed).run.name == "a"


def _job(args, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.fit_rigid", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_job_runs_with_no_arguments(tmp_path):
    """``python -m jobs.fit_rigid`` with NO arguments: default preset, timestamped run dir under ./results."""
    p = _job([], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (run_dir,) = (tmp_path / "results" / "fit_rigid").iterdir()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["job"] == "fit_rigid" and cfg["config"]["steps"] == PRESETS["default"][1].steps
    assert '"num_points": 4096' in p.stdout  # the resolved config is printed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rotation_error_deg"] < 0.5 and metrics["scale_error"] < 1e-2
    assert metrics["startup_to_first_step_s"] < 15.0
    assert (run_dir / "checkpoints" / f"step_{300:09d}" / "model.safetensors").is_file()
    assert list((run_dir / "tensorboard").iterdir())


def test_job_help_lists_presets(tmp_path):
    p = _job(["--help"], tmp_path)
    assert p.returncode == 0 and "smoke" in p.stdout and "ddp" in p.stdout
