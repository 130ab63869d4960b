"""GIRAFFE on the platform: a tiny in-process run, resume equality, outputs, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from configs.giraffe import OFFICIAL_MODELS, PRESETS
from lib3d import runtime
from lib3d.systems.giraffe import GiraffeSystem, build_generator


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, name, **kw):
    base = PRESETS["smoke"][1]
    run = dataclasses.replace(base.run, output_root=str(tmp_path / "results"), name=name)
    return dataclasses.replace(base, run=run, cache_dir=str(tmp_path / "cache"), **kw)


def _ck(tmp_path, name):
    return runtime.load_checkpoint(tmp_path / "results" / "giraffe" / name / "checkpoints")


def test_smoke_run_outputs_and_resume_equals_uninterrupted(tmp_path):
    full = runtime.train(GiraffeSystem(), _cfg(tmp_path, "a"))
    m = full.result["metrics"]
    for k in ("fid_domain", "kid_domain", "fid_domain_untrained", "fid_domain_real_floor",
              "control/translation_spearman", "control/app_change_iou"):
        assert k in m, k
    run_dir = tmp_path / "results" / "giraffe" / "a"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["finished"] and saved["steps"] == 4
    assert (run_dir / "media" / "samples_ema.png").is_file()
    assert (run_dir / "media" / "translation_horizontal.gif").is_file()
    ck = _ck(tmp_path, "a")
    assert {k.split(".")[0] for k in ck.tensors} == {"generator", "discriminator", "generator_ema"}
    assert set(ck.optimizer_states) == {"generator", "discriminator"}
    # stop at 3 (checkpoints every 2 -> resumes from 2), rerun to 4: equal to the uninterrupted run
    runtime.train(GiraffeSystem(), _cfg(tmp_path, "split", steps=3))
    runtime.train(GiraffeSystem(), _cfg(tmp_path, "split"))
    # the render job on this run: every program writes a PNG grid and a GIF
    import jobs.giraffe_render as render_job

    written = render_job.main(["--checkpoint", str(run_dir), "--model.img-size", "16", "--model.n-ray-samples", "8",
                               "--n-scenes", "2", "--n-steps", "3", "--out-dir", str(tmp_path / "render"),
                               "--device", "cpu"])
    assert set(written) == {"interpolate_app", "interpolate_shape", "interpolate_bg_app", "translation_object_depth",
                            "translation_object_horizontal", "rotation_object", "add_objects"}
    for png, gif in written.values():
        assert (tmp_path / "render").joinpath(png).is_file() and (tmp_path / "render").joinpath(gif).is_file()
    with pytest.raises(runtime.UserError, match="missing key"):  # a run of another architecture
        render_job.main(["--checkpoint", str(run_dir), "--n-scenes", "1", "--n-steps", "2",
                         "--out-dir", str(tmp_path / "render2"), "--device", "cpu"])
    a, b = _ck(tmp_path, "a"), _ck(tmp_path, "split")
    assert a.step == b.step == 4 and set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        # CPU index_add (scatter of the packed object samples) may sum in another order: 1e-7 level
        torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    runtime.train(GiraffeSystem(), _cfg(tmp_path, "arch", steps=2))
    cfg = _cfg(tmp_path, "arch", steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden_size=32))
    with pytest.raises(runtime.CheckpointError, match=r"module 'generator' does not match"):
        runtime.train(GiraffeSystem(), cfg)


def test_image_folder_data_and_bad_folders(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    cfg = _cfg(tmp_path, "folder", data=f"images:{folder}/*.jpg", crop="random", steps=2)
    out = runtime.train(GiraffeSystem(), cfg)
    assert "fid_domain" not in out.result["metrics"]  # no labels: no domain extractor
    assert "control/translation_spearman" in out.result["metrics"]
    with pytest.raises(runtime.UserError, match="no image files match"):
        GiraffeSystem().check_config(_cfg(tmp_path, "x", data=f"images:{tmp_path}/none/*.jpg"))
    with pytest.raises(runtime.UserError, match="power-of-two multiple"):
        bad = _cfg(tmp_path, "x")
        GiraffeSystem().check_config(dataclasses.replace(bad, model=dataclasses.replace(bad.model, img_size=24)))
    with pytest.raises(runtime.UserError, match="inception_weights"):
        bad = _cfg(tmp_path, "x")
        GiraffeSystem().check_config(dataclasses.replace(bad, eval=dataclasses.replace(bad.eval,
                                                                                        inception_weights="no.pth")))


def test_official_presets_build():
    from lib3d.nn import DCGANDiscriminator

    assert sum(p.numel() for p in build_generator(OFFICIAL_MODELS["cars64"]).parameters()) == 411595
    assert sum(p.numel() for p in DCGANDiscriminator(3, 64).parameters()) == 2763776
    for name in ("cars256", "clevr2345_256", "church64"):
        g = build_generator(OFFICIAL_MODELS[name])
        assert g.img_size == OFFICIAL_MODELS[name].img_size


def test_job_cli_one_line_error(tmp_path, capsys):
    import jobs.giraffe as job

    with pytest.raises(SystemExit) as e:
        runtime.run_main(lambda: job.main(["smoke", "--data", f"images:{tmp_path}/*.jpg",
                                           "--run.output-root", str(tmp_path)]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image files match" in err[0]


def test_gan2d_baseline_runs_with_the_same_loop(tmp_path):
    out = runtime.train(GiraffeSystem(), _cfg(tmp_path, "g2d", generator="gan2d", steps=2))
    m = out.result["metrics"]
    assert "fid_domain" in m and "fid_domain_untrained" in m
    assert not any(k.startswith("control/") for k in m)
    ck = _ck(tmp_path, "g2d")
    assert any(k.startswith("generator.convs.") for k in ck.tensors)


@pytest.mark.slow
def test_inception_fid_with_a_weights_file(tmp_path):
    from lib3d.nn import FIDInceptionV3

    sd = FIDInceptionV3().state_dict()
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path / "pt_inception-test.pth"
    torch.save(sd, path)
    cfg = _cfg(tmp_path, "incep", steps=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, inception_weights=str(path)))
    m = runtime.train(GiraffeSystem(), cfg).result["metrics"]
    assert "fid_inception" in m and "fid_inception_untrained" in m and "fid_domain" in m


@pytest.mark.slow
def test_two_ray_workers_stay_in_sync(tmp_path):
    cfg = _cfg(tmp_path, "ddp", steps=2)
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, num_workers=2))
    out = runtime.train(GiraffeSystem(), cfg)
    assert len(out.results) == 2
    assert out.results[0]["state_digest"] == out.results[1]["state_digest"]  # G, D and G_ema equal on both ranks
    assert out.results[0]["metrics"]["steps"] == 2


def test_evaluation_alone(tmp_path):
    import jobs.giraffe as job

    with pytest.raises(runtime.UserError, match="no checkpoint to evaluate"):
        job.main(["smoke", "--run.output-root", str(tmp_path / "results"), "--run.name", "e",
                  "--cache-dir", str(tmp_path / "cache"), "--evaluate-only"])
    runtime.train(GiraffeSystem(), _cfg(tmp_path, "e", steps=1))
    m = job.main(["smoke", "--run.output-root", str(tmp_path / "results"), "--run.name", "e",
                  "--cache-dir", str(tmp_path / "cache"), "--evaluate-only"])
    run_dir = tmp_path / "results" / "giraffe" / "e"
    assert (run_dir / "eval_step_1.json").is_file() and (run_dir / "media" / "eval_samples_ema.png").is_file()
    assert m["fid_domain"] == json.loads((run_dir / "metrics.json").read_text())["fid_domain"]  # same G_ema, seeds
