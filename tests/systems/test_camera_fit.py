"""lib3d.systems.camera_fit (chapter 4, jobs.fit_camera on runtime.train): the camera model, bad input,
float32 gradients, resume equality (parameters and GIF frames), user mistakes, the job's outputs and
convergence."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from configs.fit_camera import PRESETS
from lib3d import runtime
from lib3d.systems.camera_fit import (
    CameraFitSystem,
    CameraPosition,
    camera_from_position,
    fit_camera_steps,
    fit_loss,
    position_from_view,
    render_target,
)
from tests.helpers import final_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    """Small renders: one thread avoids OpenMP barrier waits on the shared, loaded 2-core box (measured 16 px
    steps 0.15 s with one thread, 2.8 s with two under a load average of 18)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tmp_path, name, **kw):
    base = PRESETS["smoke"][1]
    run = {"checkpoint_every": 3, "log_every": 1, "name": name, "output_root": str(tmp_path), **kw.pop("run", {})}
    kw = {"image_size": 16, "faces_per_pixel": 4, "faces_per_pixel_rgb": 2, "iterations": 6, "frame_every": 2, **kw}
    return dataclasses.replace(base, run=dataclasses.replace(base.run, **run), **kw)


# ------------------------------------------------------------------------------------------- the model


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
    with pytest.raises(ValueError, match="sits at the point it looks at"):  # the origin: no view
        camera_from_position(torch.zeros(3))


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


# ----------------------------------------------------------------------------------------------- system


def test_system_follows_fit_camera_steps(tmp_path):
    """``runtime.train`` of the system takes the same Adam steps as the plain iterator."""
    from lib3d.data.renders import normalize_mesh
    from lib3d.data.scenes import toy

    cfg = _cfg(tmp_path, "same", loss="textured", iterations=3)
    res = runtime.train(CameraFitSystem(), cfg).result["metrics"]
    mesh = normalize_mesh(toy())[0]
    target = render_target(mesh, image_size=16, faces_per_pixel=4, faces_per_pixel_rgb=2)
    steps = list(fit_camera_steps(mesh, target, loss="textured", iterations=3, faces_per_pixel=4,
                                  faces_per_pixel_rgb=2))
    torch.testing.assert_close(torch.tensor(res["final_position"]), steps[-1].position, rtol=0, atol=1e-6)
    assert res["position_error"] == pytest.approx(steps[-1].error, abs=1e-6)
    assert res["final_loss"] == pytest.approx(steps[-1].loss, rel=1e-5)


def test_resume_equals_uninterrupted_with_the_gif(tmp_path):
    from PIL import Image

    full = runtime.train(CameraFitSystem(), _cfg(tmp_path, "full"))
    runtime.train(CameraFitSystem(), _cfg(tmp_path, "split", iterations=4))
    resumed = runtime.train(CameraFitSystem(), _cfg(tmp_path, "split"))
    root = tmp_path / "fit_camera"
    a, b = final_parameters(root / "full", "camera"), final_parameters(root / "split", "camera")
    assert set(a) == {"camera_position"}
    torch.testing.assert_close(a["camera_position"], b["camera_position"], rtol=0, atol=1e-6)
    assert full.result["state_digest"] == resumed.result["state_digest"]
    # the GIF holds steps 1, 2, 4, 6 in both runs: the resumed process re-rendered steps 1, 2, 4
    frames = {}
    for name in ("full", "split"):
        gif = Image.open(root / name / "media" / "fit.gif")
        assert gif.n_frames == 4 and gif.size == (32, 16)
        frames[name] = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames[name].append(torch.tensor(list(gif.convert("RGB").getdata()), dtype=torch.float32))
    for x, y in zip(frames["full"], frames["split"]):
        assert (x - y).abs().mean() < 2.0  # same renders (GIF palettes may differ by a level)
    ck = runtime.load_checkpoint(root / "split" / "checkpoints")
    assert [f[0] for f in ck.extra["state"]["frames"]] == [1, 2, 4, 6]
    assert (root / "split" / "media" / "final.png").is_file()


def test_user_mistakes(tmp_path):
    s = CameraFitSystem()
    with pytest.raises(runtime.UserError, match=r"--mesh .*nope\.obj: no such file"):
        s.check_config(_cfg(tmp_path, "x", mesh=str(tmp_path / "nope.obj")))
    (tmp_path / "m.stl").write_text("solid")
    with pytest.raises(runtime.UserError, match=r"\.obj or \.ply"):
        s.check_config(_cfg(tmp_path, "x", mesh=str(tmp_path / "m.stl")))
    (tmp_path / "noise.obj").write_bytes(bytes(range(256)))
    from lib3d.io import FormatError

    with pytest.raises(FormatError, match=r"noise\.obj, line 1: control byte 0x00"):
        s.check_config(_cfg(tmp_path, "x", mesh=str(tmp_path / "noise.obj")))
    with pytest.raises(runtime.UserError, match="--start: camera centre .* no look-at view"):
        s.check_config(_cfg(tmp_path, "x", start=(0.0, 0.0, 0.0)))
    with pytest.raises(runtime.UserError, match="--start: .*parallel"):
        s.check_config(_cfg(tmp_path, "x", start=(0.0, 4.0, 0.0)))  # straight above the origin, +Y up
    with pytest.raises(runtime.UserError, match="--target-dist/elev/azim"):
        s.check_config(_cfg(tmp_path, "x", target_elev=90.0, target_azim=0.0, target_dist=1e-7))
    with pytest.raises(runtime.UserError, match="one worker"):
        s.check_config(_cfg(tmp_path, "x", ray=runtime.RayConfig(num_workers=2)))
    with pytest.raises(runtime.UserError, match="--image-size must be >= 8"):
        s.check_config(_cfg(tmp_path, "x", image_size=4))
    s.check_config(_cfg(tmp_path, "x"))


def test_fit_camera_job_smoke(tmp_path):
    from jobs import fit_camera

    out = fit_camera.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "t", "--loss", "textured"])
    run_dir = tmp_path / "fit_camera" / "t"
    assert (run_dir / "media" / "fit.gif").exists() and (run_dir / "media" / "final.png").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and len(metrics["final_position"]) == 3 and metrics["loss"] == "textured"
    assert metrics["position_error"] == pytest.approx(out.result["metrics"]["position_error"])
    assert any((run_dir / "tensorboard").rglob("events.*"))


# ------------------------------------------------------------------------------------------ convergence


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
