"""lib3d.systems.mesh_fitting (chapters 2-3, jobs.fit_translation and jobs.fit_mesh on runtime.train):
the book's normalisation, the losses against hand-written references, resume equality in-process and on
2 Ray workers, fitted.ply in the cloud's units, and user mistakes as one line with exit status 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs.fit_mesh import PRESETS as MESH_PRESETS
from configs.fit_translation import PRESETS as TRANSLATION_PRESETS
from lib3d import runtime
from lib3d.ops import chamfer_distance, ico_sphere, sample_points_from_meshes
from lib3d.systems.mesh_fitting import (
    MeshFitSystem,
    TranslationFitSystem,
    chapter2_meshes,
    mesh_fitting_loss,
    normalize_points,
    translation_fitting_loss,
)
from tests.helpers import final_parameters

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    """The fits' per-step tensors are small: one thread avoids OpenMP overhead on the shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, name, **kw):
    return runtime.RunConfig(name=name, output_root=str(tmp_path), progress=False, **kw)


def _translation_cfg(tmp_path, name, **kw):
    base = TRANSLATION_PRESETS["smoke"][1]
    run = kw.pop("run", {})
    kw = {"num_samples": 300, "iterations": 12, **kw}
    run = {"checkpoint_every": 4, "log_every": 2, **run}
    return dataclasses.replace(base, run=_run(tmp_path, name, **run), **kw)


def _mesh_cfg(tmp_path, name, **kw):
    base = MESH_PRESETS["smoke"][1]
    run = kw.pop("run", {})
    kw = {"ico_level": 2, "iterations": 12, "image_size": 0, **kw}
    run = {"checkpoint_every": 4, "log_every": 2, **run}
    return dataclasses.replace(base, run=_run(tmp_path, name, **run), **kw)


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b) and a
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------- pure pieces


def test_normalize_points_is_the_books():
    """deform1.py: ``center = verts.mean(0); scale = max(abs(verts - center).max(0)); (verts - center) / scale``
    -- the largest absolute coordinate, not the largest norm."""
    pts = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    out, center, scale = normalize_points(pts)
    torch.testing.assert_close(center, torch.tensor([1.0, 0.75, 0.25]))
    assert float(scale) == 3.0  # |4 - 1| = 3 (the largest norm would be |(3, -0.75, -0.25)| = 3.10)
    torch.testing.assert_close(out, (pts - center) / 3.0)
    assert float(out.abs().max()) == 1.0
    torch.testing.assert_close(out * scale + center, pts)
    with pytest.raises(ValueError, match="coincide"):
        normalize_points(torch.ones(5, 3))
    with pytest.raises(ValueError, match="empty"):
        normalize_points(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="points"):
        normalize_points(torch.zeros(4, 2))


def _chamfer_brute(x, y):
    d = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    return d.min(2).values.mean(1) + d.min(1).values.mean(1)  # (N,)


def test_translation_loss_against_brute_force():
    meshes = chapter2_meshes()
    t = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    target = torch.randn(3, 50, 3, generator=torch.Generator().manual_seed(1))
    loss = translation_fitting_loss(meshes, t, target, 40, generator=torch.Generator().manual_seed(2))
    samples = sample_points_from_meshes(meshes.offset_verts(t), 40, generator=torch.Generator().manual_seed(2))
    per_mesh = _chamfer_brute(samples, target)
    torch.testing.assert_close(loss, per_mesh.mean())
    per = translation_fitting_loss(meshes, t, target, 40, generator=torch.Generator().manual_seed(2),
                                   batch_reduction=None)
    torch.testing.assert_close(per, per_mesh)
    with pytest.raises(ValueError, match="target_points"):
        translation_fitting_loss(meshes, t, target[:2], 40)


def test_mesh_fitting_loss_terms_and_weights():
    from lib3d.ops import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency

    mesh = ico_sphere(1)
    target = torch.randn(1, 30, 3, generator=torch.Generator().manual_seed(0))
    out = mesh_fitting_loss(mesh, target, 25, 1.0, 2.0, 0.5, 0.25, generator=torch.Generator().manual_seed(3))
    samples = sample_points_from_meshes(mesh, 25, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.chamfer, _chamfer_brute(samples, target)[0])
    torch.testing.assert_close(out.edge, mesh_edge_loss(mesh))
    torch.testing.assert_close(out.normal, mesh_normal_consistency(mesh))
    torch.testing.assert_close(out.laplacian, mesh_laplacian_smoothing(mesh))
    torch.testing.assert_close(out.total, out.chamfer + 2 * out.edge + 0.5 * out.normal + 0.25 * out.laplacian)
    off = mesh_fitting_loss(mesh, target, 25, w_edge=0.0)
    assert not off.edge.requires_grad and off.edge > 0  # reported, outside the graph



def test_render_points_hand_computed():
    """The origin projects to the image centre (32, 32) of a 64 px front view; a disc of radius 1 px covers
    that pixel and its 4 neighbours; points off the image are dropped."""
    from lib3d.systems.mesh_fitting import render_points

    img = render_points(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]), 64)
    blue = (img != 1.0).any(-1).nonzero().tolist()
    assert sorted(blue) == [[31, 32], [32, 31], [32, 32], [32, 33], [33, 32]]
    torch.testing.assert_close(img[32, 32], torch.tensor([30.0, 60.0, 160.0]) / 255)

# ------------------------------------------------------------------------------------- resume equality


def test_fit_translation_resume_equals_uninterrupted(tmp_path):
    full = runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "full"))
    runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "split", iterations=7))
    resumed = runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "split"))
    root = tmp_path / "fit_translation"
    _assert_same(final_parameters(root / "full"), final_parameters(root / "split"))
    assert full.result["state_digest"] == resumed.result["state_digest"]
    m = resumed.result["metrics"]
    assert m["steps"] == 12 and m["finished"] and m["true_offset"] == [3.0, 4.0, 5.0]


def test_fit_translation_step_is_the_batch_mean_loss(tmp_path):
    """One worker's step is SGD on ``translation_fitting_loss`` (the book's batch mean)."""
    from lib3d.runtime import WorkerContext, derive_seed

    cfg = _translation_cfg(tmp_path, "x")
    system = TranslationFitSystem()
    state = system.init(cfg, WorkerContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    d = state.data
    t = torch.tensor([0.5, 0.25, -0.5], requires_grad=True)
    with torch.no_grad():
        state.modules["model"].translation.copy_(t)
    g = torch.Generator().manual_seed(derive_seed(cfg.run.seed, "samples", 3))
    loss = translation_fitting_loss(d["meshes"], t, d["observed"], cfg.num_samples, generator=g)
    (grad,) = torch.autograd.grad(loss, t)
    state.optimizers["model"] = torch.optim.SGD(state.modules["model"].parameters(), lr=cfg.lr)  # no momentum
    out = system.train_step(state, 3, torch.Generator())
    torch.testing.assert_close(out["chamfer"], loss.detach())
    torch.testing.assert_close(state.modules["model"].translation.detach(), t.detach() - cfg.lr * grad)


def test_fit_mesh_resume_equals_uninterrupted(tmp_path):
    full = runtime.train(MeshFitSystem(), _mesh_cfg(tmp_path, "full"))
    runtime.train(MeshFitSystem(), _mesh_cfg(tmp_path, "split", iterations=6))
    resumed = runtime.train(MeshFitSystem(), _mesh_cfg(tmp_path, "split"))
    root = tmp_path / "fit_mesh"
    _assert_same(final_parameters(root / "full"), final_parameters(root / "split"))
    assert full.result["state_digest"] == resumed.result["state_digest"]
    assert resumed.result["metrics"]["final_chamfer_10k_samples"] == full.result["metrics"]["final_chamfer_10k_samples"]


# ------------------------------------------------------------------------------ fitted.ply overlays the cloud


def test_fitted_ply_overlays_the_input_cloud(tmp_path):
    """issue 12: fitted.ply used to stay in normalised units, far from a cloud that is not centred in the
    unit sphere. It is mapped back as the book does (``verts * scale + center``)."""
    from lib3d.data.person_cloud import person_cloud
    from lib3d.io import load_ply, save_ply
    from lib3d.structures import Meshes

    cloud = person_cloud(250, 0.01, generator=torch.Generator().manual_seed(0)) * 40.0 + torch.tensor([100.0, -50.0, 20.0])
    save_ply(tmp_path / "cloud.ply", cloud)
    cfg = _mesh_cfg(tmp_path, "overlay", points=str(tmp_path / "cloud.ply"), ico_level=3, iterations=150,
                    run={"checkpoint_every": 0})
    m = runtime.train(MeshFitSystem(), cfg).result["metrics"]
    centred = cloud - cloud.mean(0)
    assert m["scale"] == pytest.approx(float(centred.abs().max()), rel=1e-6)  # the book's largest |coordinate|
    assert m["center"] == pytest.approx(cloud.mean(0).tolist(), rel=1e-6)
    verts, faces = load_ply(tmp_path / "fit_mesh" / "overlay" / "fitted.ply")
    fitted = Meshes([verts], [faces])
    samples = sample_points_from_meshes(fitted, 5000, generator=torch.Generator().manual_seed(0))
    chamfer_input_units = float(chamfer_distance(samples, cloud[None])[0])
    # the same fit as in normalised units, scaled by scale^2 (squared distances) ...
    assert chamfer_input_units / m["scale"] ** 2 == pytest.approx(m["final_chamfer_10k_samples"], rel=0.25)
    assert chamfer_input_units < 0.02 * m["scale"] ** 2
    # ... and the mesh sits on the cloud: its bounding box within 10% of the scale of the cloud's
    for lo_hi in (0, 1):
        ext = verts.max(0).values if lo_hi else verts.min(0).values
        ref = cloud.max(0).values if lo_hi else cloud.min(0).values
        assert ((ext - ref).abs() < 0.1 * m["scale"]).all(), (ext, ref)
    # the normalised mesh (what was written before) does not overlay the cloud
    normalised = Meshes([(verts - torch.tensor(m["center"])) / m["scale"]], [faces])
    far = sample_points_from_meshes(normalised, 5000, generator=torch.Generator().manual_seed(0))
    assert float(chamfer_distance(far, cloud[None])[0]) > 100 * chamfer_input_units


# ------------------------------------------------------------------------------------------ user mistakes


def test_fit_mesh_missing_points_is_a_user_error(tmp_path):
    missing = tmp_path / "missing.ply"
    with pytest.raises(runtime.UserError, match=rf"--points {missing}: no such file"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", points=str(missing)))
    with pytest.raises(runtime.UserError, match="not a file"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", points=str(tmp_path)))
    (tmp_path / "one.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                      "property float z\nend_header\n1 2 3\n1 2 3\n")
    with pytest.raises(runtime.UserError, match="coincide"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", points=str(tmp_path / "one.ply")))
    (tmp_path / "junk.ply").write_bytes(b"\x00\x01garbage")
    from lib3d.io import FormatError

    with pytest.raises(FormatError, match="junk.ply"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", points=str(tmp_path / "junk.ply")))
    with pytest.raises(runtime.UserError, match="one worker"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", ray=runtime.RayConfig(num_workers=2)))
    with pytest.raises(runtime.UserError, match="--iterations must be > 0"):
        MeshFitSystem().check_config(_mesh_cfg(tmp_path, "x", iterations=0))
    with pytest.raises(runtime.UserError, match="--mesh-dir .*cube.obj, diamond.obj, dodecahedron.obj"):
        TranslationFitSystem().check_config(_translation_cfg(tmp_path, "x", mesh_dir=str(tmp_path)))
    assert not (tmp_path / "fit_mesh").exists()  # nothing started


def test_fit_mesh_missing_points_cli_one_line_exit_2(tmp_path):
    """``python -m jobs.fit_mesh --points missing.ply``: one line naming the path, exit status 2, no run."""
    missing = tmp_path / "missing.ply"
    p = subprocess.run([sys.executable, "-m", "jobs.fit_mesh", "smoke", "--points", str(missing),
                        "--run.output-root", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=180,
                       check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [f"jobs.fit_mesh: error: --points {missing}: no such file"]
    assert "Traceback" not in p.stdout + p.stderr and not (tmp_path / "fit_mesh").exists()


# ------------------------------------------------------------------------------------- 2 Ray workers


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.skipif(not Path(sys.executable).with_name("ray").exists(), reason="ray CLI not installed")
def test_fit_translation_two_ray_workers_resume_equals_one_worker(ray_driver, tmp_path):
    """2 Ray Train workers (the mesh batch split 2 + 1), interrupted at step 7 and resumed, end where one
    uninterrupted in-process worker ends (parameters to 1e-6), identical on both ranks."""
    one = runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "one"))
    two_cfg = {"ray": runtime.RayConfig(num_workers=2)}  # this process is the Ray driver (ray_driver)
    runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "two", iterations=7, **two_cfg))
    two = runtime.train(TranslationFitSystem(), _translation_cfg(tmp_path, "two", **two_cfg))
    assert len(two.results) == 2 and two.restarts == 0
    assert two.results[0]["state_digest"] == two.results[1]["state_digest"]
    assert two.result["metrics"]["world_size"] == 2 and one.result["metrics"]["world_size"] == 1
    root = tmp_path / "fit_translation"
    _assert_same(final_parameters(root / "one"), final_parameters(root / "two"))
    assert runtime.load_checkpoint(root / "two" / "checkpoints").step == 12


