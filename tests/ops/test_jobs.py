"""The chapter 2-3 fitting jobs end to end (bounded versions in CI; full runs marked slow). The systems'
pieces, resume equality and user mistakes: tests/systems/test_mesh_fitting.py."""

import dataclasses
import json

import pytest
import torch

from configs.fit_mesh import PRESETS as MESH_PRESETS
from configs.fit_translation import PRESETS as TRANSLATION_PRESETS
from lib3d import runtime
from lib3d.data.person_cloud import person_cloud
from lib3d.systems.mesh_fitting import MeshFitSystem, TranslationFitSystem


@pytest.fixture(autouse=True)
def _one_thread():
    """The fits' per-step tensors are small: one thread avoids OpenMP overhead on the shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, name, **kw):
    return runtime.RunConfig(name=name, output_root=str(tmp_path), progress=False, **kw)


def _translation(cfg) -> dict:
    return runtime.train(TranslationFitSystem(), cfg).result["metrics"]


def _mesh(cfg) -> dict:
    return runtime.train(MeshFitSystem(), cfg).result["metrics"]


@pytest.mark.slow
@pytest.mark.ci
def test_fit_translation_smoke_recovers_offset(tmp_path):
    from jobs import fit_translation

    res = fit_translation.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "t"])
    metrics = res.result["metrics"]
    assert metrics["max_abs_error"] < 0.05, metrics
    saved = json.loads((tmp_path / "fit_translation" / "t" / "metrics.json").read_text())
    assert saved["recovered_translation"] == pytest.approx([3, 4, 5], abs=0.05)


@pytest.mark.slow
def test_fit_translation_default_recovers_offset(tmp_path):
    cfg = dataclasses.replace(TRANSLATION_PRESETS["default"][1], run=_run(tmp_path, "t", checkpoint_every=0))
    assert _translation(cfg)["max_abs_error"] < 0.05


@pytest.mark.slow
@pytest.mark.ci
def test_fit_mesh_smoke_writes_outputs(tmp_path):
    from jobs import fit_mesh

    metrics = fit_mesh.main(["smoke", "--run.output-root", str(tmp_path), "--run.name", "m",
                             "--run.checkpoint-every", "100"]).result["metrics"]
    out = tmp_path / "fit_mesh" / "m"
    for rel in ["fitted.ply", "media/before.png", "media/after.png", "media/target.png", "media/turntable.gif",
                "metrics.json", "checkpoints"]:
        assert (out / rel).exists(), rel
    assert list((out / "tensorboard").iterdir())
    # the sphere started at chamfer ~0.1 from the person cloud; 200 steps bring it far closer
    assert metrics["final_chamfer_10k_samples"] < 0.02, metrics


@pytest.mark.slow
def test_fit_mesh_default_full(tmp_path):
    cfg = dataclasses.replace(MESH_PRESETS["default"][1], image_size=64, turntable_frames=4,
                              run=_run(tmp_path, "full", checkpoint_every=0))
    metrics = _mesh(cfg)
    assert metrics["final_chamfer_10k_samples"] < 0.01, metrics


@pytest.mark.slow
@pytest.mark.ci
def test_regularisers_lower_normal_consistency(tmp_path):
    """The book's ablation, bounded: regularised fit is smoother than the Chamfer-only fit."""
    base = dataclasses.replace(MESH_PRESETS["smoke"][1], iterations=100, image_size=0)
    reg = _mesh(dataclasses.replace(base, run=_run(tmp_path, "reg", checkpoint_every=0)))
    noreg = _mesh(dataclasses.replace(base, w_edge=0.0, w_normal=0.0, w_laplacian=0.0,
                                      run=_run(tmp_path, "noreg", checkpoint_every=0)))
    assert reg["final_normal_consistency"] < noreg["final_normal_consistency"], (reg, noreg)


def test_presets_match_the_book():
    d = MESH_PRESETS["default"][1]
    assert (d.w_chamfer, d.w_edge, d.w_normal, d.w_laplacian, d.lr, d.momentum, d.iterations, d.ico_level) == (
        1.0, 1.0, 0.01, 0.1, 1.0, 0.9, 2000, 4)
    assert MESH_PRESETS["no_regularizers"][1].w_edge == 0 and MESH_PRESETS["edge_only"][1].w_edge == 1.0
    assert MESH_PRESETS["edge_only"][1].w_normal == 0 and MESH_PRESETS["edge_only"][1].w_laplacian == 0
    t = TRANSLATION_PRESETS["default"][1]
    assert (t.lr, t.momentum, t.iterations, t.num_samples, t.offset) == (0.1, 0.9, 200, 5000, (3.0, 4.0, 5.0))


def test_person_cloud():
    a = person_cloud(250, 0.01, generator=torch.Generator().manual_seed(0))
    b = person_cloud(250, 0.01, generator=torch.Generator().manual_seed(0))
    assert a.shape == (250, 3) and torch.equal(a, b)
    ext = a.max(0).values - a.min(0).values
    assert ext[1] > 2 * ext[0] and ext[1] > 3 * ext[2]  # tall and thin, Y up
    assert a.norm(dim=1).max() < 1.1
    with pytest.raises(ValueError, match="num_points"):
        person_cloud(0)
    with pytest.raises(ValueError, match="noise"):
        person_cloud(10, noise=-1.0)

