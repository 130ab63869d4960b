"""The chapter-2 render job (``jobs.render``): a smoke run. (The chapter-4 camera fit is tested in
tests/systems/test_camera_fit.py.)"""

from __future__ import annotations


def test_render_job_smoke(tmp_path):
    from jobs import render

    out = render.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "t"])
    media = tmp_path / "render" / "t" / "media"
    assert (media / "variations.png").exists() and (media / "turntable.gif").exists()
    assert len(out["panels"]) == 8 and len(list(media.glob("*.png"))) == 9
    from PIL import Image

    grid = Image.open(media / "variations.png")
    assert grid.size[0] > 4 * 64 and grid.size[1] > 2 * 64
