"""cluster/: the files parse, the `ray up` config passes Ray's own schema validation offline, the KubeRay
manifest has a GPU worker group, local.sh is valid bash and documents its commands."""

import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_ray_up_config_validates():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)  # Ray's JSON schema + node-type checks; no cloud call
    types = config["available_node_types"]
    assert sum(t["resources"].get("GPU", 0) * t["max_workers"] for t in types.values()) >= 8
    assert any("pip install" in c and "lib3d" in c for c in config["setup_commands"])
    assert "." in raw["file_mounts"].values()
    broken = prepare_config({**raw, "no_such_field": 1})
    with pytest.raises(Exception, match="no_such_field"):
        validate_config(broken)  # the validation can fail


def test_kuberay_manifest():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    (rc,) = [d for d in docs if d["kind"] == "RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    head = rc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    (gpu,) = rc["spec"]["workerGroupSpecs"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in gpu["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {pvc["metadata"]["name"]}


def test_local_sh_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(CLUSTER / "local.sh")]).returncode == 0
    p = subprocess.run(["bash", str(CLUSTER / "local.sh")], capture_output=True, text=True)
    assert p.returncode == 2 and "start" in p.stderr and "stop" in p.stderr


def test_readme_shows_the_workflow():
    text = (CLUSTER / "README.md").read_text()
    for needle in ("ray job submit --address http://HEAD:8265 --working-dir .", "python -m jobs.nerf",
                   "cluster/local.sh start", "ray rsync-down", "tensorboard --logdir", "--ray.num-workers",
                   "--ray.use-gpu", "kubectl apply -f cluster/kuberay.yaml", "ray up cluster/aws-gpu.yaml"):
        assert needle in text, needle
