"""pytest configuration. Reusable helpers (golden files, book assets) live in ``tests/helpers.py``.

The Ray head fixtures live here so the whole session shares ONE head (started by ``cluster/local.sh`` on
the first test that asks for it, stopped by its pid when the session ends: each start + stop costs ~45 s
on 2 cores). ``ray_env`` (module scope) points Ray's environment at the head; ``ray_driver`` (module scope)
also connects this process to it as a driver and disconnects after the module.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

# Deterministic and quiet defaults for the whole suite; the suite is sized for 2 cores.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
# Every Ray server the suite starts (the session head, embedded ray.init(), job subprocesses) listens on
# 127.0.0.1 only: Ray's single-machine mode, read when ray is first imported (cluster/README.md).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

_LOCAL_SH = Path(__file__).resolve().parents[1] / "cluster" / "local.sh"


def _read_env(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)


def _refresh_ray_auth_config():
    """Ray caches RAY_AUTH_MODE when first imported (another test may have imported it before the head's
    environment was set): re-read it, as Ray itself does when it turns token authentication on."""
    if "ray" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


@pytest.fixture(scope="session")
def ray_head():
    """A Ray head started by cluster/local.sh in its own state dir; stopped (by its pid) at the session's end.
    Yields ``{"env", "pid", "state", "RAY_ADDRESS", "RAY_GCS_ADDRESS", ...}`` (the head's env file).

    A reaper process polls this pytest process and stops the head if pytest dies without its teardown
    (SIGKILL, or SIGTERM, whose handler the Ray driver replaces); the teardown stops the reaper first."""
    state = Path(tempfile.mkdtemp(prefix="l3r"))  # short: Ray's unix socket paths must stay < 108 chars
    env = {**os.environ, "LIB3D_RAY_DIR": str(state), "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    pid = None
    reaper = subprocess.Popen(
        ["bash", "-c", f'while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; bash "$0" stop; rm -rf "$1"',
         str(_LOCAL_SH), str(state)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        p = subprocess.run(["bash", str(_LOCAL_SH), "start", "--num-cpus", "4"], env=env, capture_output=True,
                           text=True, timeout=240, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        pid = int((state / "head.pid").read_text())
        head_env = _read_env(state / "env")
        assert head_env["RAY_ADDRESS"].startswith("http://127.0.0.1:")
        yield {"env": {**env, **head_env}, "pid": pid, "state": state, **head_env}
    finally:
        reaper.kill()
        reaper.wait()
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        subprocess.run(["bash", str(_LOCAL_SH), "stop"], env=env, capture_output=True, timeout=180, check=False)
        alive = pid is not None
        for _ in range(50 if alive else 0):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive = False
                break
            time.sleep(0.2)
        shutil.rmtree(state, ignore_errors=True)
        assert not alive, "the Ray head did not stop"


@pytest.fixture(scope="module")
def ray_env(ray_head):
    """The head's authentication settings in this process's environment for one module."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
            if k in ray_head:
                mp.setenv(k, ray_head[k])
        mp.delenv("RAY_ADDRESS", raising=False)
        _refresh_ray_auth_config()
        yield ray_head
    _refresh_ray_auth_config()


@pytest.fixture(scope="module")
def ray_driver(ray_env):
    """This test process connected to the head as a Ray driver (for one module)."""
    import ray

    from lib3d import runtime

    runtime.init_ray(runtime.RayConfig(address=ray_env["RAY_GCS_ADDRESS"]))
    assert ray.cluster_resources().get("CPU", 0) >= 4
    yield ray_env
    ray.shutdown()
