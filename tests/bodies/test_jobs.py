"""The bodies jobs end to end on their smoke presets (outputs under a temporary root)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_smplify_job_smoke(tmp_path, one_thread):
    from jobs.smplify import main

    out = main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "s"])
    d = tmp_path / "smplify" / "s"
    assert (d / "params" / "person0000.safetensors").exists() and (d / "meshes" / "person0001.obj").exists()
    assert (d / "media" / "person0000.png").exists()
    m = json.loads((d / "metrics.json").read_text())
    assert m["images"] == 2 and "pa_mpjpe_mm" in m and out["images"] == 2
    p = load_file(str(d / "params" / "person0000.safetensors"))
    assert p["body_pose"].shape == (69,) and p["betas"].shape == (10,)
    assert list((d / "tensorboard").iterdir())


def test_smplify_job_json_input(tmp_path, one_thread, synth):
    from jobs.smplify import main
    from lib3d.bodies.smplify import synthetic_people

    data = synthetic_people(synth, 1, "coco", image_size=(96, 128), generator=torch.Generator().manual_seed(0))
    items = [{"image": None, "keypoints": data.keypoints[0].tolist(), "image_size": [96, 128]}]
    (tmp_path / "kps.json").write_text(json.dumps(items))
    main(["smoke", "--keypoints", str(tmp_path / "kps.json"), "--skeleton", "coco", "--run.output-root",
          str(tmp_path), "--run.name", "j"])
    assert (tmp_path / "smplify" / "j" / "params" / "item0000.safetensors").exists()


def test_lsp_est_joints_reader(tmp_path):
    import numpy as np

    from lib3d.bodies.pipeline import load_lsp_est_joints

    a = np.zeros((5, 14, 3))
    a[0, :, 1] = np.arange(14)
    a[2] = 1
    np.savez(tmp_path / "est_joints.npz", est_joints=a)
    k = load_lsp_est_joints(tmp_path / "est_joints.npz")
    assert k.shape == (3, 14, 3) and k[1, 13, 0] == 13 and (k[..., 2] == 1).all()
    np.savez(tmp_path / "bad.npz", est_joints=np.zeros((3, 13, 2)))
    with pytest.raises(ValueError, match="14"):
        load_lsp_est_joints(tmp_path / "bad.npz")


def test_smpl_demo_and_convert(tmp_path):
    from jobs.convert_body_model import main as convert
    from jobs.smpl_demo import main as demo

    demo(["smoke", "--run.output-root", str(tmp_path), "--run.name", "d"])
    assert (tmp_path / "smpl_demo" / "d" / "meshes" / "body0.obj").exists()
    assert (tmp_path / "smpl_demo" / "d" / "media" / "bodies.png").exists()
    convert(["--synthetic", str(tmp_path / "s.pkl")])
    convert([str(tmp_path / "s.pkl"), str(tmp_path / "s.safetensors")])
    from lib3d.bodies import load_smpl_model

    assert load_smpl_model(tmp_path / "s.safetensors").num_verts == 6890


@pytest.mark.slow
def test_smplify_job_ray_two_workers(tmp_path):
    from jobs.smplify import main

    out = main(["smoke", "--num-synthetic", "4", "--num-workers", "2", "--ray.num-cpus", "2",
                "--ray.no-include-dashboard", "--run.output-root", str(tmp_path), "--run.name", "r"])
    assert out["images"] == 4 and out["workers"] == 2


def test_draw_keypoints_outside_image_draws_nothing():
    import numpy as np

    from lib3d.bodies.visualize import draw_keypoints

    img = np.zeros((20, 30, 3))
    out = draw_keypoints(img, np.array([[-50.0, 5.0], [5.0, -40.0], [100.0, 100.0], [np.nan, 1.0]]), (0, 1, 0))
    assert out.sum() == 0
    out = draw_keypoints(img, np.array([[10.0, 10.0]]), (0, 1, 0), radius=1)
    assert out[..., 1].sum() == 9
