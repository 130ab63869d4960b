"""Against a real Ray head on this machine (started and stopped with cluster/local.sh, free ports, loopback
dashboard): ``ray job submit`` of the smoke job, Ray Train (``TorchTrainer``, DDP) on 2 CPU workers vs one
worker, a killed worker resuming from the checkpoint it reported to Ray Train, and evaluation on an actor
pool with a crashing actor.

Every test here is slow (a Ray head costs ~10 s to start on 2 cores); the bounded ones also run in CI."""

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from configs.common import RayConfig
from configs.fit_rigid import PRESETS
from lib3d import runtime

REPO = Path(__file__).resolve().parents[2]
LOCAL_SH = REPO / "cluster" / "local.sh"
RAY_CLI = str(Path(sys.executable).parent / "ray")

pytestmark = [pytest.mark.slow, pytest.mark.ci,
              pytest.mark.skipif(not Path(RAY_CLI).exists(), reason="ray CLI not installed")]


def test_job_submit_smoke(ray_env, tmp_path):
    ray_head = ray_env
    from ray.job_submission import JobStatus, JobSubmissionClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sid = f"lib3d-test-{uuid.uuid4().hex[:8]}"
    cmd = [RAY_CLI, "job", "submit", "--address", ray_head["RAY_ADDRESS"], "--submission-id", sid,
           "--working-dir", str(REPO), "--no-wait", "--", sys.executable, "-m", "jobs.fit_rigid", "smoke",
           "--run.name", "submitted", "--run.output-root", str(tmp_path)]
    p = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    client = JobSubmissionClient(ray_head["RAY_ADDRESS"])
    deadline = time.monotonic() + 240
    status = client.get_job_status(sid)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_job_status(sid)
    logs = client.get_job_logs(sid)
    if not status.is_terminal():
        client.stop_job(sid)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "dashboard" in logs  # the job says where the dashboard is
    run_dir = tmp_path / "fit_rigid" / "submitted"
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.json", "tensorboard", "checkpoints"}
    assert runtime.load_checkpoint(run_dir / "checkpoints").step == 30
    ea = EventAccumulator(str(run_dir / "tensorboard"))
    ea.Reload()
    loss = ea.Scalars("loss")
    assert [e.step for e in loss] == [5, 10, 15, 20, 25, 30]
    assert loss[-1].value < loss[0].value


def _smoke(tmp_path, name, **kw):
    cfg = PRESETS["smoke"][1]
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name, output_root=str(tmp_path)), **kw)


def _resumed_from(head: dict, checkpoint: Path) -> bool:
    """Whether a worker of the head printed jobs.fit_rigid's "resumed from <checkpoint>" line (workers'
    stdout lands in the head's session logs)."""
    line = f"resumed from {checkpoint} at step"
    return any(line in p.read_text(errors="replace") for p in head["state"].rglob("worker-*.out"))


def test_ddp_two_workers_equal_one_worker(ray_driver, tmp_path):
    """2 Ray Train workers, interrupted at step 20 and resumed, end where one uninterrupted worker ends
    (parameters to 1e-6), identical on both ranks."""
    from tests.helpers import train_rigid

    _, one = train_rigid(_smoke(tmp_path, "one"))
    # 20 steps, then the same run again to 30: the second TorchTrainer resumes from the checkpoint the
    # first one reported (ray.train.get_checkpoint(), restored from <run>/ray_train/)
    train_rigid(_smoke(tmp_path, "two", steps=20, ray=RayConfig(num_workers=2)))
    two, params = train_rigid(_smoke(tmp_path, "two", ray=RayConfig(num_workers=2)))
    assert _resumed_from(ray_driver, tmp_path / "fit_rigid" / "two" / "ray_train" / "step_000000020")
    assert len(two.results) == 2 and two.restarts == 0
    assert two.results[0]["state_digest"] == two.results[1]["state_digest"]  # identical on both ranks
    for k in one:
        torch.testing.assert_close(params[k], one[k], rtol=1e-5, atol=1e-6)
    run_dir = tmp_path / "fit_rigid" / "two"
    assert '"world_size": 2' in (run_dir / "metrics.json").read_text()
    # rank 0's safetensors checkpoints were reported to Ray Train, which keeps its copies under ray_train/
    assert two.metrics["step"] == 30 and Path(two.checkpoint.path).is_relative_to(run_dir / "ray_train")
    reported = runtime.load_checkpoint(two.checkpoint.path)
    assert reported.step == 30
    for k in one:
        assert torch.equal(reported.tensors[f"model.{k}"], params[k]), k


def test_killed_worker_resumes_from_checkpoint(ray_driver, tmp_path):
    from lib3d.systems.rigid import RigidSystem
    from tests.helpers import train_rigid

    _, ref = train_rigid(_smoke(tmp_path, "ref"))
    cfg = _smoke(tmp_path, "fault", kill_worker_at_step=15, ray=RayConfig(num_workers=2, max_failures=1))
    res, params = train_rigid(cfg)
    run_dir = tmp_path / "fit_rigid" / "fault"
    assert res.restarts == 1 and (run_dir / ".killed-at-15").exists()
    assert runtime.load_checkpoint(run_dir / "checkpoints").step == 30
    assert res.results[0]["state_digest"] == res.results[1]["state_digest"]
    for k in ref:  # resumed from step 10 and finished where an uninterrupted run ends
        torch.testing.assert_close(params[k], ref[k], rtol=1e-5, atol=1e-6)
    # the restarted rank 0 resumed from step 10: Ray Train's copy (ray.train.get_checkpoint()) if its
    # controller registered the report before the kill, else rank 0's own (the steps run in milliseconds)
    assert _resumed_from(ray_driver, run_dir / "ray_train" / "step_000000010") or \
        _resumed_from(ray_driver, run_dir / "checkpoints" / "step_000000010")
    cfg = _smoke(tmp_path, "fatal", kill_worker_at_step=5, ray=RayConfig(num_workers=2, max_failures=0))
    with pytest.raises(RuntimeError, match="failed 1 times"):
        runtime.train(RigidSystem(), cfg)


def test_evaluate_ray_data_retries_in_order(ray_driver, tmp_path):
    from tests.runtime.helpers_eval import AffinePredictor

    x = torch.arange(30.0)
    marker = tmp_path / "crashed"
    out = runtime.evaluate(AffinePredictor, x, batch_size=4, num_actors=2, max_retries=2,
                           predictor_args=(3.0,), predictor_kwargs={"crash_on": 13, "marker": str(marker)},
                           progress=False)
    assert marker.exists()  # an actor process died mid-run ...
    assert torch.equal(out["y"], 3 * x)  # ... and its batch was retried; results in input order
    assert len(set(out["pid"].tolist())) >= 2
    auto = runtime.evaluate(AffinePredictor, x, batch_size=8, num_actors=-1, cpus_per_actor=2,
                            predictor_args=(1.0,), progress=False)  # 4 CPUs / 2 -> 2 actors
    assert torch.equal(auto["y"], x) and len(set(auto["pid"].tolist())) <= 2


def test_one_worker_runs_remotely_on_a_cluster(ray_driver, tmp_path):
    from tests.runtime.helpers_eval import pid_loop

    on_cluster = _smoke(tmp_path, "one", ray=RayConfig(num_workers=1, address=ray_driver["RAY_GCS_ADDRESS"]))
    assert runtime.fit(pid_loop, on_cluster, "pid").result != os.getpid()
    local = _smoke(tmp_path, "local", ray=RayConfig(num_workers=1))
    assert runtime.fit(pid_loop, local, "pid").result == os.getpid()


def test_unschedulable_group_times_out(ray_driver, tmp_path):
    from lib3d.systems.rigid import RigidSystem

    cfg = _smoke(tmp_path, "big", ray=RayConfig(num_workers=2, cpus_per_worker=64, schedule_timeout_s=2))
    with pytest.raises(RuntimeError, match="could not be scheduled"):
        runtime.train(RigidSystem(), cfg)


def test_head_and_workers_listen_on_loopback_only(ray_driver):
    # After the other tests of this module ran tasks, actors, Train workers and Ray Data on it: every TCP server
    # of the head's process tree (GCS, raylet, dashboard, agents, workers) is bound to 127.0.0.1.
    import psutil

    head = psutil.Process(ray_driver["pid"])
    procs = [head, *head.children(recursive=True)]
    listening = [(p.pid, c.laddr) for p in procs for c in _tcp_listeners(p)]
    assert len(listening) >= 5, listening  # the head's servers were found at all
    outside = [(pid, addr) for pid, addr in listening if not _loopback(addr.ip)]
    assert not outside, f"Ray servers listening beyond loopback: {outside}"


def _loopback(ip: str) -> bool:
    import ipaddress

    a = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(a, "ipv4_mapped", None) or a).is_loopback


def _tcp_listeners(proc):
    import psutil

    try:
        return [c for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
