"""The bodies jobs end to end on their smoke presets (outputs under a temporary root): SMPLify's outputs,
resume equality, user mistakes as one line with exit status 2, and 2 Ray Data actors with a crashed batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib3d import runtime


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
    assert m["images"] == 2 and "pa_mpjpe_mm" in m and out["images"] == 2 and m["fitted_now"] == 2
    p = load_file(str(d / "params" / "person0000.safetensors"))
    assert p["body_pose"].shape == (69,) and p["betas"].shape == (10,) and p["keypoints_2d"].shape == (14, 2)
    assert list((d / "tensorboard").iterdir())
    # fit quality without ground truth: per image (params, fits.csv) and over the run (metrics.json)
    rows = (d / "fits.csv").read_text().splitlines()
    assert rows[0].startswith("name,reprojection_error_px") and len(rows) == 3
    errs = [float(load_file(str(d / "params" / f"person000{i}.safetensors"))["reprojection_error_px"]) for i in (0, 1)]
    assert m["reprojection_error_px_mean"] == pytest.approx(float(np.mean(errs)), rel=1e-5)
    assert float(rows[1].split(",")[1]) == pytest.approx(errs[0], abs=1e-3)


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


@pytest.mark.parametrize("job", ["convert", "demo"])
def test_body_model_jobs_bad_model_file_one_line_exit_2(tmp_path, capsys, job):
    from jobs.convert_body_model import main as convert
    from jobs.smpl_demo import main as demo

    junk = tmp_path / "junk.pkl"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    for bad in (junk, tmp_path / "missing.pkl"):
        with pytest.raises(SystemExit) as e:
            if job == "convert":
                runtime.run_main(lambda bad=bad: convert([str(bad), str(tmp_path / "out.safetensors")]))
            else:
                runtime.run_main(lambda bad=bad: demo(["smoke", "--model", str(bad), "--run.output-root",
                                                       str(tmp_path)]))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and str(bad.name) in err, err


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


def _params(d):
    return {p.stem: load_file(str(p)) for p in sorted((d / "params").glob("*.safetensors"))}


def test_smplify_resume_equals_uninterrupted(tmp_path, one_thread, monkeypatch):
    """A run stopped after its first batch and run again fits only the missing batches and ends with the
    same parameters as an uninterrupted run; a finished run run again fits nothing and reports."""
    from jobs.smplify import main
    from lib3d.systems.smplify import FitWriter

    args = ["smoke", "--num-synthetic", "3", "--no-write-meshes", "--run.output-root", str(tmp_path)]
    main(args + ["--run.name", "full"])
    write = FitWriter.__call__

    def crash_after_first(self, indices, outputs):
        write(self, indices, outputs)
        raise KeyboardInterrupt("stopped after one batch")

    monkeypatch.setattr(FitWriter, "__call__", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--run.name", "cut"])
    monkeypatch.setattr(FitWriter, "__call__", write)
    assert len(list((tmp_path / "smplify" / "cut" / "params").iterdir())) == 2
    out = main(args + ["--run.name", "cut"])
    assert out["fitted_now"] == 1 and out["images"] == 3
    full, cut = _params(tmp_path / "smplify" / "full"), _params(tmp_path / "smplify" / "cut")
    assert list(full) == list(cut) == ["person0000", "person0001", "person0002"]
    for name in full:
        for k in ("betas", "body_pose", "global_orient", "camera_translation"):
            torch.testing.assert_close(cut[name][k], full[name][k], rtol=0, atol=1e-6)
    again = main(args + ["--run.name", "cut"])
    assert again["fitted_now"] == 0 and again["pa_mpjpe_mm"] == pytest.approx(out["pa_mpjpe_mm"])
    assert json.loads((tmp_path / "smplify" / "cut" / "metrics.json").read_text())["images_per_second"] > 0


@pytest.mark.parametrize("case", ["missing", "random_bytes", "no_est_joints", "bad_shape", "bad_json",
                                  "missing_images", "bad_batch", "bad_model", "bad_gmm"])
def test_smplify_user_mistakes_are_one_line_exit_2(tmp_path, capsys, case):
    from jobs.smplify import main

    path = tmp_path / "est_joints.npz"
    extra = []
    if case == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif case == "no_est_joints":
        np.savez(path, joints=np.zeros((3, 14, 2)))
    elif case == "bad_shape":
        np.savez(path, est_joints=np.zeros((3, 13, 2)))
    elif case == "bad_json":
        path = tmp_path / "kps.json"
        path.write_text("[{\"keypoints\": ")
    elif case == "missing_images":
        np.savez(path, est_joints=np.zeros((3, 14, 2)))
        extra = ["--images", str(tmp_path / "nowhere")]
    elif case == "bad_batch":
        np.savez(path, est_joints=np.zeros((3, 14, 2)))
        extra = ["--batch-size", "0"]
    elif case in ("bad_model", "bad_gmm"):
        np.savez(path, est_joints=np.zeros((3, 14, 2)))
        junk = tmp_path / "junk.pkl"
        junk.write_bytes(np.random.default_rng(1).bytes(300))
        extra = ["--model" if case == "bad_model" else "--gmm", str(junk)]
    with pytest.raises(SystemExit) as e:
        runtime.run_main(lambda: main(["smoke", "--keypoints", str(path), *extra, "--run.output-root",
                                       str(tmp_path / "out")]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.slow
@pytest.mark.ci
def test_smplify_two_ray_actors_crashed_batch_equals_in_process(ray_driver, tmp_path):
    """2 Ray Data actors on a Ray head: one actor dies on its first batch, the batch is retried on a
    restarted actor, results arrive in input order and equal the in-process fit; a run resumed on the 2
    actors after losing a batch refits that batch and equals the uninterrupted in-process run."""
    from configs.smplify import PRESETS
    from jobs.smplify import main
    from lib3d.systems.smplify import FitWriter, build_items, predictor_kwargs
    from tests.bodies.helpers_smplify import CrashOncePredictor  # module-level: the actors import it

    args = ["smoke", "--num-synthetic", "4", "--no-write-meshes", "--run.output-root", str(tmp_path)]
    main(args + ["--run.name", "local"])
    config = runtime.cli(PRESETS, args=args + ["--run.name", "ray", "--num-workers", "2", "--ray.address",
                                               ray_driver["RAY_GCS_ADDRESS"]])
    items, _ = build_items(config)
    run = runtime.start_run("smplify", config)
    writer = FitWriter(run, config, items)
    seen = []
    marker = tmp_path / "crashed"
    runtime.evaluate(CrashOncePredictor, writer.pending(), batch_size=config.batch_size, num_actors=2,
                     max_retries=2, predictor_kwargs={**predictor_kwargs(config), "marker": str(marker)},
                     on_batch=lambda i, o: (seen.append(list(i)), writer(i, o)), progress=False)
    run.close()
    assert marker.exists() and seen == [[0, 1], [2, 3]]
    local, ray = _params(tmp_path / "smplify" / "local"), _params(run.dir)
    assert list(local) == list(ray)
    for name in local:
        torch.testing.assert_close(ray[name]["body_pose"], local[name]["body_pose"], rtol=0, atol=1e-6)
    # resume on the 2 actors: a batch left incomplete is fitted again, whole, with the same numbers
    (run.dir / "params" / "person0002.safetensors").unlink()
    out = main(args + ["--run.name", "ray", "--num-workers", "2", "--ray.address", ray_driver["RAY_GCS_ADDRESS"]])
    assert out["fitted_now"] == 2 and out["images"] == 4
    ray = _params(run.dir)
    for name in local:
        for k in ("betas", "body_pose", "global_orient", "camera_translation"):
            torch.testing.assert_close(ray[name][k], local[name][k], rtol=0, atol=1e-6)


def test_draw_keypoints_outside_image_draws_nothing():
    import numpy as np

    from lib3d.bodies.visualize import draw_keypoints

    img = np.zeros((20, 30, 3))
    out = draw_keypoints(img, np.array([[-50.0, 5.0], [5.0, -40.0], [100.0, 100.0], [np.nan, 1.0]]), (0, 1, 0))
    assert out.sum() == 0
    out = draw_keypoints(img, np.array([[10.0, 10.0]]), (0, 1, 0), radius=1)
    assert out[..., 1].sum() == 9
