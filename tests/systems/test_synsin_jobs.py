"""jobs.synsin_infer and jobs.synsin_eval on a one-step smoke run: outputs and one-line user errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from configs.synsin import PRESETS
from lib3d import runtime
from lib3d.systems.synsin import SynSinSystem, book_pose, load_generator


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synsin_jobs")
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(root / "home"))
    base = PRESETS["smoke"][1]
    cfg = dataclasses.replace(base, steps=1, gan_weight=0.0, gif_frames=0,
                              run=dataclasses.replace(base.run, output_root=str(root), name="r"))
    runtime.train(SynSinSystem(), cfg)
    yield root / "synsin" / "r"
    mp.undo()


def test_load_generator_and_errors(run_dir, tmp_path):
    g = load_generator(str(run_dir))
    assert g.generator.config.image_size == 32 and not g.generator.training
    assert torch.isclose(g.K[0, 0], torch.tensor(0.5 / np.tan(np.radians(30.0)), dtype=torch.float32))
    with pytest.raises(FileNotFoundError):
        load_generator(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="config.json"):
        load_generator(str(tmp_path))


def test_infer_writes_png_depth_and_gif(run_dir, tmp_path):
    from jobs.synsin_infer import main

    img = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    out = main([str(img), "--model", str(run_dir), "--frames", "3", "--out", str(tmp_path / "o")])
    assert np.asarray(Image.open(out["image"])).shape == (32, 32, 3)
    assert out["depth"].is_file() and out["gif"].is_file()
    assert Image.open(out["gif"]).n_frames == 4  # the input, then 3 steps


def test_infer_user_errors(run_dir, tmp_path, capsys):
    from jobs.synsin_infer import main

    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(grey)
    for args, msg in (([str(tmp_path / "none.png"), "--model", str(run_dir)], "no such image"),
                      ([str(grey), "--model", str(run_dir)], "expected an RGB image"),
                      ([str(grey)], "give --model")):
        with pytest.raises(SystemExit) as e:
            runtime.run_main(lambda a=args: main(a))
        assert e.value.code == 2
        assert msg in capsys.readouterr().err


def test_eval_in_process(run_dir, tmp_path):
    from jobs.synsin_eval import main

    m = main(["--model", str(run_dir), "--indoor.frames", "4", "--indoor.test-scenes", "2", "--gap", "2",
              "--output", str(tmp_path / "e"), "--save-images", "2"])
    assert m["pairs"] == 4 and {"psnr", "ssim", "psnr_identity", "ssim_identity"} <= set(m)
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["pairs"] == 4
    assert (tmp_path / "e" / "00001_pred.png").is_file() and not (tmp_path / "e" / "00002_pred.png").exists()


def test_book_pose_convention():
    # The official +z translation (backwards in its OpenGL axes) moves lib3d's camera points to -z.
    RT = book_pose(0.0, 0.0, 0.1, 0.2, 0.3)
    assert torch.allclose(RT[:3, 3], torch.tensor([0.1, -0.2, -0.3]))
    assert torch.allclose(book_pose(0.2, 0.0, 0, 0, 0)[:3, :3].det(), torch.tensor(1.0))
