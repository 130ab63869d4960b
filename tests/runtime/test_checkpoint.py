"""Checkpoints: round trip, optimizer flattening, last-N, atomic writes, resume equality, refusal of
truncated / foreign / pickle files (without ever unpickling)."""

import dataclasses
import json
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.fit_rigid import PRESETS
from lib3d import runtime
from lib3d.runtime import CheckpointError

REPO = Path(__file__).resolve().parents[2]


def _trained_adam(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _assert_same_state(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            _assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_state(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path):
    model, opt = _trained_adam()
    g = torch.Generator().manual_seed(5)
    path = runtime.save_checkpoint(tmp_path, 12, model.state_dict(), opt, extra={"best": 0.5},
                                   config={"lr": 0.01}, generators={"data": g})
    assert path.name == "step_000000012"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    ck = runtime.load_checkpoint(tmp_path)  # the folder: newest checkpoint
    assert ck.step == 12 and ck.extra == {"best": 0.5} and ck.config == {"lr": 0.01} and ck.path == path
    _assert_same_state(dict(model.state_dict()), ck.tensors)
    _assert_same_state(opt.state_dict(), ck.optimizer_state)
    model2, _ = _trained_adam(seed=1)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1.0)
    model2.load_state_dict(ck.tensors)
    opt2.load_state_dict(ck.optimizer_state)
    _assert_same_state(opt.state_dict(), opt2.state_dict())
    # RNG: the generator continues where it was when saved
    expected = torch.rand(3, generator=g)
    g2 = torch.Generator().manual_seed(99)
    runtime.restore_rng_state(ck.rng, {"data": g2})
    assert torch.equal(torch.rand(3, generator=g2), expected)
    with pytest.raises(CheckpointError, match="no saved state for generator"):
        runtime.restore_rng_state(ck.rng, {"other": torch.Generator()})


def test_global_rng_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = json.loads(json.dumps(runtime.capture_rng_state()))
    a = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    runtime.restore_rng_state(state)
    b = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_optimizer_flatten_exact():
    for opt_cls, kw in ((torch.optim.Adam, {}), (torch.optim.SGD, {"momentum": 0.9}),
                        (torch.optim.AdamW, {"amsgrad": True})):
        model = torch.nn.Linear(3, 3)
        opt = opt_cls(model.parameters(), lr=0.1, **kw)
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
        sd = opt.state_dict()
        tensors, meta = runtime.flatten_optimizer_state(sd)
        assert all(isinstance(v, torch.Tensor) for v in tensors.values())
        json.dumps(meta)
        _assert_same_state(sd, runtime.unflatten_optimizer_state(tensors, json.loads(json.dumps(meta))))


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(-1, 1), st.text(max_size=3),
                  st.builds(lambda n: torch.arange(n, dtype=torch.float64), st.integers(0, 3)))
_tree = st.recursive(_leaf, lambda c: st.one_of(
    st.lists(c, max_size=3), st.tuples(c, c),
    st.dictionaries(st.one_of(st.integers(0, 5), st.text("abc", min_size=1, max_size=2)), c, max_size=3)),
    max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(_tree)
def test_flatten_unflatten_property(tree):
    tensors, meta = runtime.flatten_optimizer_state({"state": tree})
    _assert_same_state({"state": tree}, runtime.unflatten_optimizer_state(tensors, json.loads(json.dumps(meta))))


def test_flatten_rejects_objects():
    with pytest.raises(TypeError, match="cannot store"):
        runtime.flatten_optimizer_state({"state": {0: {"x": object()}}})


def test_keep_last_n_and_atomic(tmp_path):
    t = {"w": torch.ones(3)}
    for step in range(0, 60, 10):
        runtime.save_checkpoint(tmp_path, step, t, keep=3)
    assert [p.name for p in runtime.list_checkpoints(tmp_path)] == [f"step_{s:09d}" for s in (30, 40, 50)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    # a half-written checkpoint (crash before rename) is invisible
    (tmp_path / ".tmp-step_000000070-dead").mkdir()
    (tmp_path / "step_000000080").mkdir()  # no state.json: incomplete, ignored
    assert runtime.latest_checkpoint(tmp_path).name == "step_000000050"
    runtime.save_checkpoint(tmp_path, 50, {"w": torch.zeros(3)})  # overwrite same step
    assert torch.equal(runtime.load_checkpoint(tmp_path).tensors["w"], torch.zeros(3))


def test_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"a": base, "b": base, "t": base.t(), "v": base[1], "half": torch.ones(2, dtype=torch.bfloat16)}
    runtime.save_checkpoint(tmp_path, 1, tensors)
    ck = runtime.load_checkpoint(tmp_path)
    for k, v in tensors.items():
        assert torch.equal(ck.tensors[k], v) and ck.tensors[k].dtype == v.dtype


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="step"):
        runtime.save_checkpoint(tmp_path, -1, {})
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        runtime.save_checkpoint(tmp_path, 1, {"w": [1, 2]})
    with pytest.raises(TypeError, match="JSON"):
        runtime.save_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, extra={"x": object()})
    with pytest.raises(CheckpointError, match="not a directory"):
        runtime.load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        runtime.load_checkpoint(tmp_path / "empty")
    assert not list(tmp_path.glob("step_*")) and not list(tmp_path.glob(".tmp*"))  # failed saves leave nothing


class _Evil:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (Path(self.flag),))


def test_refuses_truncated_foreign_and_pickle(tmp_path):
    ck = runtime.save_checkpoint(tmp_path / "c", 5, {"w": torch.randn(100)})
    model = ck / "model.safetensors"
    good = model.read_bytes()
    for n in (len(good) - 7, 20, 5, 0):  # truncated in the data, in the header, in the length, empty
        model.write_bytes(good[:n])
        with pytest.raises(CheckpointError, match="truncated|not a safetensors"):
            runtime.load_checkpoint(ck)
    model.write_bytes(os.urandom(256))  # foreign bytes
    with pytest.raises(CheckpointError):
        runtime.load_checkpoint(ck)
    model.write_bytes(json.dumps({"w": 1}).encode())  # foreign JSON
    with pytest.raises(CheckpointError):
        runtime.load_checkpoint(ck)
    flag = tmp_path / "unpickled"
    model.write_bytes(pickle.dumps({"w": _Evil(str(flag))}))  # a pickle that would create a file
    with pytest.raises(CheckpointError, match="pickle"):
        runtime.load_checkpoint(ck)
    torch.save({"w": torch.ones(2), "evil": _Evil(str(flag))}, model)  # torch.save zip archive
    with pytest.raises(CheckpointError, match="zip"):
        runtime.load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="pickle"):
        runtime.load_safetensors(model)
    assert not flag.exists()  # nothing was ever unpickled
    model.write_bytes(good)
    runtime.load_checkpoint(ck)  # intact again
    state = json.loads((ck / "state.json").read_text())
    (ck / "state.json").write_text(json.dumps({**state, "format": "someone-else"}))
    with pytest.raises(CheckpointError, match="not a lib3d checkpoint"):
        runtime.load_checkpoint(ck)
    (ck / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        runtime.load_checkpoint(ck)


def _smoke(tmp_path, name, **kw):
    cfg = PRESETS["smoke"][1]
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name, output_root=str(tmp_path)), **kw)


def test_resume_in_process_equals_uninterrupted(tmp_path):
    from tests.helpers import train_rigid

    _, full = train_rigid(_smoke(tmp_path, "full"))
    train_rigid(_smoke(tmp_path, "split", steps=20))  # stops at step 20
    _, resumed = train_rigid(_smoke(tmp_path, "split"))  # resumes 20 -> 30
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert runtime.load_checkpoint(tmp_path / "fit_rigid" / "split" / "checkpoints").step == 30


def test_killed_process_resumes_to_same_parameters(tmp_path):
    """A real interruption: the job process SIGKILLs itself at step 17; rerunning the same command
    resumes from step 10 and ends with exactly the parameters of an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "jobs.fit_rigid", "smoke", "--run.output-root", str(tmp_path)]
    p = subprocess.run(cmd + ["--run.name", "k", "--kill-worker-at-step", "17"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL
    run_dir = tmp_path / "fit_rigid" / "k"
    assert runtime.latest_checkpoint(run_dir / "checkpoints").name == "step_000000010"
    p = subprocess.run(cmd + ["--run.name", "k", "--kill-worker-at-step", "17"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resumed from" in p.stdout and "at step 10" in p.stdout
    from tests.helpers import train_rigid

    train_rigid(_smoke(tmp_path, "u"))  # uninterrupted reference, in-process
    a = runtime.load_checkpoint(run_dir / "checkpoints")
    b = runtime.load_checkpoint(tmp_path / "fit_rigid" / "u" / "checkpoints")
    assert a.step == b.step == 30
    for k in b.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    _assert_same_state(a.optimizer_states["model"], b.optimizer_states["model"])
