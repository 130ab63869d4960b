"""The chapter-2 render job and the chapter-4 camera fit: smoke runs, the camera model, convergence."""

from __future__ import annotations

import json

import pytest
import torch

from lib3d.render.camera_fitting import (
    CameraPosition,
    camera_from_position,
    fit_camera_steps,
    fit_loss,
    position_from_view,
    render_target,
)


def test_camera_from_position_matches_look_at_view_transform():
    from lib3d.geometry import look_at_view_transform

    for dist, elev, azim in ((3.0, 50.0, 0.0), (2.7, 10.0, -150.0), (5.0, -30.0, 75.0)):
        R, T = camera_from_position(position_from_view(dist, elev, azim)[None])
        R2, T2 = look_at_view_transform(dist, elev, azim)
        torch.testing.assert_close(R, R2, atol=1e-5, rtol=0)
        torch.testing.assert_close(T, T2, atol=1e-5, rtol=0)
    # The camera centre maps to the view origin: p @ R + T = 0.
    p = torch.tensor([[3.0, 6.9, 2.5]])
    R, T = camera_from_position(p)
    torch.testing.assert_close(torch.bmm(p[:, None], R)[:, 0] + T, torch.zeros(1, 3), atol=1e-5, rtol=0)
    model = CameraPosition()
    assert torch.equal(model.camera_position.detach(), torch.tensor([3.0, 6.9, 2.5]))
    R, T = model()
    assert R.shape == (1, 3, 3) and T.requires_grad


def test_fit_camera_bad_input():
    from lib3d.data.scenes import toy

    mesh = toy()
    target = render_target(mesh, image_size=16, faces_per_pixel=4)
    with pytest.raises(ValueError, match="loss"):
        next(fit_camera_steps(mesh, target, loss="l1"))
    with pytest.raises(ValueError, match="square"):
        next(fit_camera_steps(mesh, target._replace(silhouette=torch.zeros(16, 12))))
    with pytest.raises(ValueError, match="faces_per_pixel_rgb"):
        next(fit_camera_steps(mesh, target, loss="textured", faces_per_pixel_rgb=0))


def test_fit_loss_gradient_float32_matches_float64():
    """The textured loss's gradient w.r.t. the camera centre is the same in float32 as in float64.

    With perspective-corrected barycentrics at blurred pixels the float32 colour gradient was noise
    (cow, 64 px: (-1069, 2032, -3129) against float64's (1.38, 2.69, -6.75)) and the fit stalled.
    """
    from lib3d.data.renders import normalize_mesh
    from lib3d.data.scenes import toy

    mesh = normalize_mesh(toy())[0]
    grads = {}
    for dtype in (torch.float32, torch.float64):
        m = mesh.to(dtype=dtype)
        target = render_target(m, 3.0, 50.0, 0.0, image_size=64)
        p = torch.tensor([3.0, 6.9, 2.5], dtype=dtype, requires_grad=True)
        value, sil, rgb = fit_loss(m, target, p, "textured")
        assert sil.shape == (64, 64) and rgb.shape == (64, 64, 3)
        grads[dtype] = torch.autograd.grad(value, p)[0].double()
    g32, g64 = grads[torch.float32], grads[torch.float64]
    assert g64.norm() > 0
    assert (g32 - g64).norm() < 1e-2 * g64.norm(), (g32, g64)


def test_render_job_smoke(tmp_path):
    from jobs import render

    out = render.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "t"])
    media = tmp_path / "render" / "t" / "media"
    assert (media / "variations.png").exists() and (media / "turntable.gif").exists()
    assert len(out["panels"]) == 8 and len(list(media.glob("*.png"))) == 9
    from PIL import Image

    grid = Image.open(media / "variations.png")
    assert grid.size[0] > 4 * 64 and grid.size[1] > 2 * 64


def test_fit_camera_job_smoke(tmp_path):
    from jobs import fit_camera

    out = fit_camera.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "t", "--loss", "textured"])
    run_dir = tmp_path / "fit_camera" / "t"
    assert (run_dir / "media" / "fit.gif").exists() and (run_dir / "media" / "final.png").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and len(metrics["final_position"]) == 3
    assert metrics["position_error"] == pytest.approx(out["position_error"])
    assert any((run_dir / "tensorboard").rglob("events.*"))


def _fit_error(mesh, loss: str, image_size: int = 64, stop_below: float = 0.01 * 3.0) -> float:
    target = render_target(mesh, 3.0, 50.0, 0.0, image_size=image_size)
    best = None
    for s in fit_camera_steps(mesh, target, loss=loss, iterations=200):
        best = s.error
        if s.error < stop_below:  # stop early to keep the test short
            break
    return best


def _case(which: str, loss: str):
    marks = [pytest.mark.slow]
    if (which, loss) == ("toy", "textured"):
        # The bounded case of the default suite: the embedded mesh (no book data needed) and the loss that
        # used to stall; 134 steps to the 5% bar at 64 px (measured 7 s on 2 quiet cores, 25 s under load).
        marks.append(pytest.mark.ci)
    return pytest.param(which, loss, marks=marks, id=f"{which}-{loss}")


@pytest.mark.parametrize(("which", "loss"),
                         [_case(m, k) for m in ("toy", "cow") for k in ("silhouette", "textured")])
def test_fit_camera_converges(which, loss):
    """Book ch. 4: from (3.0, 6.9, 2.5) to the view (3, 50, 0) within 200 Adam steps, error < 5% of 3."""
    from lib3d.data.renders import normalize_mesh
    from lib3d.data.scenes import load_mesh, toy

    if which == "toy":
        mesh = toy()
    else:
        from tests.helpers import book_path

        mesh = load_mesh(book_path("cow_mesh/cow.obj"))
    mesh = normalize_mesh(mesh)[0]
    ci = (which, loss) == ("toy", "textured")
    # The default-suite case stops at the bar itself; the slow cases go on to 1% of the distance.
    assert _fit_error(mesh, loss, stop_below=0.05 * 3.0 if ci else 0.01 * 3.0) < 0.05 * 3.0
