"""Rank helpers, the in-process training path and the in-process evaluation path (no Ray).

Ray Train (2 workers vs 1, a killed worker resuming) is tested against a real Ray head in test_ray.py."""

import copy
import dataclasses
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from configs.fit_rigid import PRESETS
from lib3d import runtime
from tests.runtime.helpers_eval import AffinePredictor


@given(st.integers(0, 200), st.integers(1, 9))
def test_shard_indices_partition(n, world):
    shards = [runtime.shard_indices(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # disjoint, ordered, covering
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("args", [(-1, 0, 1), (4, 2, 2), (4, -1, 2), (4, 0, 0)])
def test_shard_indices_bad(args):
    with pytest.raises(ValueError, match="shard_indices"):
        runtime.shard_indices(*args)


def test_seeds_and_generators():
    assert runtime.derive_seed(0, "rank", 1) == runtime.derive_seed(0, "rank", 1)
    assert len({runtime.derive_seed(0, "rank", r) for r in range(100)}) == 100
    a, b = runtime.rank_generator(3, 0), runtime.rank_generator(3, 1)
    assert not torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    assert torch.equal(torch.rand(5, generator=runtime.rank_generator(3, 1)),
                       torch.rand(5, generator=runtime.rank_generator(3, 1)))


def test_seed_everything():
    import random

    import numpy as np

    a = (runtime.seed_everything(4, rank=1), torch.rand(2), np.random.rand(2), random.random())
    b = (runtime.seed_everything(4, rank=1), torch.rand(2), np.random.rand(2), random.random())
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]
    assert runtime.seed_everything(4, rank=0) != a[0]


def test_worker_context_and_prepare_model():
    ctx = runtime.worker_context()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.device.type) == (0, 1, True, False, "cpu")
    m = torch.nn.Linear(2, 2)
    assert runtime.prepare_model(m, ctx) is m and runtime.unwrap_model(m) is m
    x = torch.tensor([1.0, 3.0])
    assert runtime.all_reduce_mean(x) is x
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            runtime.worker_context(use_gpu=True)


def test_fit_in_process(tmp_path):
    from tests.helpers import train_rigid

    cfg = PRESETS["smoke"][1]
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_root=str(tmp_path)))
    res, params = train_rigid(cfg)
    assert res.restarts == 0 and len(res.results) == 1 and set(params) == {"log_rot", "translation", "log_scale"}
    assert res.result["metrics"]["finished"] and res.result["metrics"]["rotation_error_deg"] < 10
    assert res.config.run.name and (tmp_path / "fit_rigid" / res.config.run.name / "metrics.json").is_file()
    assert res.checkpoint is None and res.metrics == {}  # nothing is reported to Ray Train in-process


def test_fit_in_process_never_imports_ray(tmp_path):
    code = ("import dataclasses, sys; from configs.fit_rigid import PRESETS; from lib3d.systems.rigid import RigidSystem;"
            "from lib3d import runtime; c = PRESETS['smoke'][1];"
            f"c = dataclasses.replace(c, run=dataclasses.replace(c.run, output_root={str(tmp_path)!r}));"
            "runtime.train(RigidSystem(), c); print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_worker_context_outside_a_ray_train_worker():
    pytest.importorskip("ray.train")  # imported, but this process is no Ray Train worker: torch.distributed's answer
    from lib3d.runtime.distributed import _ray_train_context

    assert _ray_train_context() is None
    ctx = runtime.worker_context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device.type) == (0, 1, 0, "cpu")


def test_evaluate_in_process_keeps_order():
    x = torch.arange(23.0)
    out = runtime.evaluate(AffinePredictor, x, batch_size=5, predictor_args=(2.0,), progress=False)
    assert torch.equal(out["y"], 2 * x) and out["pid"].shape == (23,)
    lst = runtime.evaluate(lambda: (lambda b: [v * 10 for v in b]), list(range(7)), batch_size=3,
                           progress=False)
    assert lst == [0, 10, 20, 30, 40, 50, 60]
    with pytest.raises(ValueError, match="batch_size"):
        runtime.evaluate(AffinePredictor, x, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        runtime.evaluate(AffinePredictor, [], batch_size=2)


def test_evaluate_streams_batches_and_can_keep_nothing():
    """In-process ``evaluate``: ``on_batch`` sees each batch in order as it comes; ``keep_outputs=False``
    returns None (large outputs written away by ``on_batch`` are not gathered)."""
    from tests.runtime.helpers_eval import AffinePredictor

    seen = []
    out = runtime.evaluate(AffinePredictor, torch.arange(7.0), batch_size=3, predictor_args=(2.0,),
                           progress=False, on_batch=lambda idx, o: seen.append((idx, o["y"].tolist())))
    assert torch.equal(out["y"], 2 * torch.arange(7.0))
    assert seen == [([0, 1, 2], [0.0, 2.0, 4.0]), ([3, 4, 5], [6.0, 8.0, 10.0]), ([6], [12.0])]
    assert runtime.evaluate(AffinePredictor, torch.arange(7.0), batch_size=3, predictor_args=(2.0,),
                            progress=False, keep_outputs=False) is None


def test_outputs_moved_to_cpu_keep_named_tuples():
    from typing import NamedTuple

    from lib3d.runtime.distributed import _to_cpu

    class Pred(NamedTuple):
        boxes: torch.Tensor
        label: str

    out = _to_cpu({"p": [Pred(torch.ones(2, requires_grad=True), "chair")], "t": (torch.zeros(1),)})
    assert isinstance(out["p"][0], Pred) and out["p"][0].label == "chair" and not out["p"][0].boxes.requires_grad
    assert isinstance(out["t"], tuple)


def _sync_worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    import torch.distributed as dist

    from lib3d.runtime import all_reduce_gradients, broadcast_module, sync_buffers

    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    torch.manual_seed(rank)  # rank-dependent initial weights: broadcast_module makes them rank 0's
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    broadcast_module(net)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(rank))  # a different shard per rank
    net(x).square().sum().backward()
    all_reduce_gradients(net)
    sync_buffers(net)
    torch.save({k: v.clone() for k, v in net.state_dict().items()} | {"grad": net[0].weight.grad.clone()},
               f"{out_path}.{rank}")
    dist.destroy_process_group()


def test_broadcast_module_and_sync_buffers_keep_ranks_equal(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "out")
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}") for r in range(2))
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)  # identical on both ranks
    # The reference: each rank's own running mean after one step, averaged; gradients summed / 2.
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    means, grads = [], []
    for rank in range(2):
        net = copy.deepcopy(ref)
        net(torch.randn(8, 3, generator=torch.Generator().manual_seed(rank))).square().sum().backward()
        means.append(net[1].running_mean)
        grads.append(net[0].weight.grad)
    torch.testing.assert_close(r0["1.running_mean"], (means[0] + means[1]) / 2)
    torch.testing.assert_close(r0["grad"], (grads[0] + grads[1]) / 2)
    assert int(r0["1.num_batches_tracked"]) == 1
    assert not torch.equal(means[0], means[1])  # the shards differ, so the test can fail
