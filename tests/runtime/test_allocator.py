"""keep_freed_memory: an opt-in of RunConfig; applied on glibc; large tensors stop faulting pages."""

import os
import platform
import resource
import subprocess
import sys

import pytest

from lib3d.runtime import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_opt_in_by_config(tmp_path, monkeypatch):
    """start_run applies the allocator setting only when RunConfig.keep_freed_memory is True."""
    import dataclasses

    from lib3d import runtime
    from lib3d.runtime import run as run_module

    calls = []
    monkeypatch.setattr(run_module, "keep_freed_memory", lambda: calls.append(1) or True)

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        run: runtime.RunConfig = runtime.RunConfig()

    for flag in (False, True):
        cfg = Cfg(run=runtime.RunConfig(name=f"a{flag}", output_root=str(tmp_path), keep_freed_memory=flag))
        runtime.start_run("alloc", cfg, quiet=True).close()
    assert calls == [1]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_reused_memory_does_not_fault_again():
    code = (
        "import resource, sys, torch\n"
        "from lib3d.runtime import keep_freed_memory\n"
        "ok = keep_freed_memory() if sys.argv[1] == '1' else False\n"
        "x = torch.ones(64 << 20); del x\n"  # 256 MB, allocated once to warm up
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(3):\n"
        "    x = torch.ones(64 << 20); del x\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    env = dict(os.environ)
    out = {m: subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, env=env,
                             check=True, timeout=120).stdout.split() for m in ("0", "1")}
    assert out["1"][0] == "True"
    faults_default, faults_kept = int(out["0"][1]), int(out["1"][1])
    assert faults_default > 3 * (64 << 20) * 4 // 4096 // 2  # every 256 MB block faulted in again
    assert faults_kept <= faults_default // 2  # measured: 65,536 (one re-fault) against 196,611


def test_returns_bool():
    assert keep_freed_memory() in (True, False)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
