"""runtime.train, the one training loop: resume equality with several modules, optimizers, a scheduler, a
kept generator, JSON extras and global-RNG dropout; a finished run re-run; the time limit; checkpoint
mismatches named; evaluations logged; layering (lib3d never imports configs)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib3d import runtime
from lib3d.runtime import Evaluation, TrainState

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    steps: int = 12
    width: int = 8
    run: runtime.RunConfig = runtime.RunConfig(checkpoint_every=4, log_every=2, progress=False)
    ray: runtime.RayConfig = runtime.RayConfig()


class ToySystem:
    """A small GAN-shaped system: two modules + an EMA copy, two optimizers, a scheduler, a kept generator,
    a JSON counter and dropout drawn from torch's global RNG."""

    name = "toy"

    def num_steps(self, config):
        return config.steps

    def init(self, config, ctx):
        torch.manual_seed(0)
        g = torch.nn.Sequential(torch.nn.Linear(4, config.width), torch.nn.Dropout(0.3), torch.nn.Linear(config.width, 4))
        d = torch.nn.Linear(4, 1)
        ema = torch.nn.Linear(4, config.width)
        opt_g = torch.optim.Adam(g.parameters(), lr=1e-2)
        opt_d = torch.optim.SGD(d.parameters(), lr=1e-2, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt_g, step_size=5, gamma=0.5)
        kept = torch.Generator().manual_seed(123)
        return TrainState(modules={"g": g, "d": d, "ema": ema}, optimizers={"g": opt_g, "d": opt_d},
                          schedulers={"g": sched}, generators={"kept": kept}, extra={"seen": 0})

    def train_step(self, state, step, generator):
        g, d = state.modules["g"], state.modules["d"]
        x = torch.randn(16, 4, generator=generator) + torch.rand(1, generator=state.generators["kept"])
        loss_d = (d(x) - d(g(x).detach())).pow(2).mean()
        state.optimizers["d"].zero_grad()
        loss_d.backward()
        state.optimizers["d"].step()
        loss_g = -d(g(x)).mean() + g(x).pow(2).mean()
        state.optimizers["g"].zero_grad()
        loss_g.backward()
        state.optimizers["g"].step()
        state.schedulers["g"].step()
        with torch.no_grad():
            state.modules["ema"].weight.mul_(0.9).add_(0.1 * g[0].weight)
        state.extra["seen"] += 16
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach()}

    def evaluate(self, state, step):
        img = torch.full((4, 4, 3), 0.5)
        return Evaluation(metrics={"seen": state.extra["seen"], "weight_sum": float(state.modules["g"][0].weight.detach().sum())},
                          images={"sample": img}, gifs={"turn": torch.stack([img, img])})


def _cfg(tmp_path, name, **kw):
    base = ToyConfig()
    run = dataclasses.replace(base.run, name=name, output_root=str(tmp_path), **kw.pop("run", {}))
    return dataclasses.replace(base, run=run, **kw)


def _tensors(tmp_path, name):
    return runtime.load_checkpoint(tmp_path / "toy" / name / "checkpoints")


def test_resume_equals_uninterrupted(tmp_path):
    full = runtime.train(ToySystem(), _cfg(tmp_path, "full"))
    runtime.train(ToySystem(), _cfg(tmp_path, "split", steps=7))  # interrupted at 7 (not a checkpoint multiple)
    resumed = runtime.train(ToySystem(), _cfg(tmp_path, "split"))
    a, b = _tensors(tmp_path, "full"), _tensors(tmp_path, "split")
    assert a.step == b.step == 12 and set(a.tensors) == set(b.tensors)
    assert {k.split(".")[0] for k in a.tensors} == {"g", "d", "ema"}
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=0, atol=1e-6)
    assert set(a.optimizer_states) == {"g", "d"}
    assert a.extra["state"]["seen"] == b.extra["state"]["seen"] == 12 * 16
    assert a.extra["schedulers"]["g"]["last_epoch"] == 12
    assert full.result["state_digest"] == resumed.result["state_digest"]
    assert resumed.result["metrics"]["seen"] == 192


def test_finished_run_reports_its_metrics(tmp_path, capsys):
    first = runtime.train(ToySystem(), _cfg(tmp_path, "done")).result["metrics"]
    again = runtime.train(ToySystem(), _cfg(tmp_path, "done")).result["metrics"]
    assert again == json.loads((tmp_path / "toy" / "done" / "metrics.json").read_text())
    assert again["finished"] and again["seen"] == first["seen"]
    assert "already finished at step 12" in capsys.readouterr().out


def test_time_limit_stops_checkpoints_and_resumes(tmp_path):
    class Slow(ToySystem):
        def train_step(self, state, step, generator):
            import time

            time.sleep(0.05)
            return super().train_step(state, step, generator)

    m = runtime.train(Slow(), _cfg(tmp_path, "limited", run={"time_limit_s": 0.12})).result["metrics"]
    assert m["stopped_early"] and not m["finished"] and 1 <= m["steps"] < 12
    assert _tensors(tmp_path, "limited").step == m["steps"]  # checkpointed where it stopped
    m2 = runtime.train(Slow(), _cfg(tmp_path, "limited")).result["metrics"]
    assert m2["finished"] and m2["steps"] == 12
    runtime.train(ToySystem(), _cfg(tmp_path, "ref"))
    for k, v in _tensors(tmp_path, "ref").tensors.items():
        torch.testing.assert_close(_tensors(tmp_path, "limited").tensors[k], v, rtol=0, atol=1e-6)


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    runtime.train(ToySystem(), _cfg(tmp_path, "arch", steps=4))
    with pytest.raises(runtime.CheckpointError, match=r"module 'g' does not match.*shapes"):
        runtime.train(ToySystem(), _cfg(tmp_path, "arch", width=16))


def test_logs_evaluations_and_media(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runtime.train(ToySystem(), _cfg(tmp_path, "tb", run={"eval_every": 6}))
    run_dir = tmp_path / "toy" / "tb"
    assert (run_dir / "media" / "sample.png").is_file() and (run_dir / "media" / "turn.gif").is_file()
    ea = EventAccumulator(str(run_dir / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("loss_g")] == [2, 4, 6, 8, 10, 12]
    assert [e.step for e in ea.Scalars("eval/seen")] == [6, 12]
    assert ea.Scalars("lr/g")[-1].value == pytest.approx(1e-2 * 0.25)
    assert "eval/sample" in ea.Tags()["images"]


def test_step_generator_depends_on_seed_rank_step_only():
    a = torch.rand(3, generator=runtime.step_generator(0, 1, 5))
    assert torch.equal(a, torch.rand(3, generator=runtime.step_generator(0, 1, 5)))
    assert not torch.equal(a, torch.rand(3, generator=runtime.step_generator(0, 0, 5)))
    assert not torch.equal(a, torch.rand(3, generator=runtime.step_generator(0, 1, 6)))


def test_lib3d_never_imports_configs():
    """Layering: the library does not import the application package ``configs`` (not even lazily)."""
    # The source scan runs in a fresh interpreter: CPython 3.11.7's ast.parse can fail spuriously with
    # "AST constructor recursion depth mismatch" while other threads of this process (left by earlier Ray
    # tests) also use the AST machinery (CPython gh-106905).
    scan = (
        "import ast, json, sys\n"
        "from pathlib import Path\n"
        "def imports_configs(path):\n"
        "    for node in ast.walk(ast.parse(path.read_text())):\n"
        "        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'configs':\n"
        "            return True\n"
        "        if isinstance(node, ast.Import) and any(a.name.split('.')[0] == 'configs' for a in node.names):\n"
        "            return True\n"
        "    return False\n"
        "repo = Path(sys.argv[1])\n"
        "print(json.dumps(sorted(str(p.relative_to(repo)) for p in (repo / 'lib3d').rglob('*.py') if imports_configs(p))))\n"
    )
    p = subprocess.run([sys.executable, "-c", scan, str(REPO)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    offenders = json.loads(p.stdout)
    assert offenders == []
    code = "import sys, lib3d.runtime, lib3d.systems.rigid; print(any(m.split('.')[0] == 'configs' for m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.stdout.strip() == "False", p.stderr[-2000:]


def test_user_error_is_one_line(tmp_path):
    code = ("from lib3d import runtime\n"
            "def main():\n    raise runtime.UserError('--data: no such folder /missing')\n"
            "runtime.run_main(main)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["lib3d: error: --data: no such folder /missing"]


def test_progress_bar_is_throttled_off_a_terminal(tmp_path):
    """Into a log file (stderr not a terminal) the bar writes a handful of updates, not one per step."""
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        p = subprocess.run([sys.executable, "-m", "jobs.fit_rigid", "smoke", "--steps", "300", "--run.progress",
                            "--run.output-root", str(tmp_path), "--run.name", "bar"], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=err, timeout=300)
    assert p.returncode == 0
    updates = [u for u in log.read_text().replace("\r", "\n").split("\n") if "fit_rigid:" in u]
    assert 1 <= len(updates) <= 4, updates
    assert "300/300" in updates[-1]
