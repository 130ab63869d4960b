"""The chapter 1-2 tour job: runs on the embedded default and reproduces the book's camera numbers."""

import dataclasses

import torch

from configs.common import RunConfig
from configs.tour_basics import PRESETS
from tests.helpers import book_path, golden_case, load_golden


def test_tour_runs_on_embedded_default(tmp_path):
    from jobs.tour_basics import main

    cfg = dataclasses.replace(PRESETS["default"][1], run=RunConfig(name="t", output_root=str(tmp_path),
                                                                   progress=False))
    metrics = main(cfg)
    assert metrics["verts_per_mesh"] == [8, 6, 20]
    assert (tmp_path / "tour_basics" / "t" / "projections.png").stat().st_size > 0
    assert (tmp_path / "tour_basics" / "t" / "metrics.json").exists()


def test_book_cameras_match_pytorch3d():
    from jobs.tour_basics import book_cameras, load_batch

    tensors, _ = load_golden("cameras")
    g = golden_case(tensors, "book_chapter1")
    cfg = dataclasses.replace(PRESETS["book"][1], book_dir=str(book_path("obj").parent))
    cams = book_cameras(cfg)
    meshes, cube = load_batch(cfg.book_dir)
    assert meshes.num_faces_per_mesh().tolist()[0] == 12
    torch.testing.assert_close(cams.R, g["R"], atol=1e-5, rtol=0)
    torch.testing.assert_close(cube, g["vertices"])
    w2v = cams.get_world_to_view_transform().transform_points(cube)
    torch.testing.assert_close(w2v, g["world_to_view"], rtol=1e-5, atol=1e-4)
    full = cams.get_full_projection_transform().transform_points(cube)
    torch.testing.assert_close(full, g["world_to_screen"], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(cams.transform_points_screen(cube), g["screen"], rtol=1e-5, atol=1e-3)
