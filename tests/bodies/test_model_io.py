"""Model files: the restricted unpickler (official chumpy/scipy pickles, gmm_08.pkl, malicious pickles),
round trips in all three formats, and the synthetic body's properties."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from lib3d.bodies import (
    UnsafePickleError,
    load_smpl_model,
    safe_load_pickle,
    save_smpl_model,
    smpl_forward,
    synthetic_smpl_model,
)
from lib3d.bodies.model_io import smpl_model_to_arrays
from tests.helpers import book_path


@pytest.mark.parametrize("ext", ["pkl", "npz", "safetensors"])
def test_round_trip(synth, tmp_path, ext):
    p = save_smpl_model(synth, tmp_path / f"m.{ext}")
    m = load_smpl_model(p)
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "extra_regressor"):
        torch.testing.assert_close(getattr(m, name), getattr(synth, name), atol=0, rtol=0)
    assert torch.equal(m.faces, synth.faces) and torch.equal(m.parents, synth.parents)
    assert m.joint_names == synth.joint_names and m.extra_joint_names == synth.extra_joint_names
    assert m.description.startswith("SYNTHETIC")


def _fake_official_modules(monkeypatch):
    """Install stand-in 'chumpy' and 'scipy.sparse' modules so the test can WRITE an official-style pickle."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy pickles: __dict__ state with the value under 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    sp_mod = types.ModuleType("scipy.sparse.csc")

    class csc_matrix:
        def __init__(self, dense):
            cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
            self.indices = np.concatenate(cols).astype(np.int32)
            self.indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
            self.data = np.concatenate([dense[c, j] for j, c in enumerate(cols)])
            self._shape = dense.shape
            self.maxprint = 50

    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    sp_mod.csc_matrix = csc_matrix
    for name, mod in {"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_mod, "scipy": types.ModuleType("scipy"),
                      "scipy.sparse": types.ModuleType("scipy.sparse"), "scipy.sparse.csc": sp_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return Ch, csc_matrix


@pytest.mark.parametrize("protocol", [0, 2])
def test_official_style_pickle_with_chumpy_and_sparse(synth, tmp_path, monkeypatch, protocol):
    Ch, csc = _fake_official_modules(monkeypatch)
    d = smpl_model_to_arrays(synth)
    d = {k: v for k, v in d.items() if k not in ("joint_names", "description", "extra_regressor", "extra_joint_names")}
    d["shapedirs"] = Ch(d["shapedirs"])
    d["v_template"] = Ch(d["v_template"])
    d["J_regressor"] = csc(d["J_regressor"])
    d["bs_type"] = "lrotmin"
    blob = pickle.dumps(d, protocol=protocol)
    assert b"chumpy" in blob and b"csc_matrix" in blob
    monkeypatch.undo()  # the loader must not need the stand-ins
    assert "chumpy" not in sys.modules or not hasattr(sys.modules.get("chumpy.ch"), "Ch")
    (tmp_path / "official.pkl").write_bytes(blob)
    loaded = safe_load_pickle(tmp_path / "official.pkl")
    assert isinstance(loaded["shapedirs"], np.ndarray) and loaded["bs_type"] == "lrotmin"
    np.testing.assert_array_equal(loaded["J_regressor"], synth.J_regressor.double().numpy())
    m = load_smpl_model(tmp_path / "official.pkl")
    # a 6890-vertex file without extra regressor gets SMPL's standard extra vertices
    assert "head_top" in m.extra_joint_names
    b = torch.randn(2, 10)
    torch.testing.assert_close(smpl_forward(m, b).vertices, smpl_forward(synth, b).vertices)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Evil2:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    for proto in (0, 2, 4):
        blob = pickle.dumps({"x": np.zeros(3), "y": _Evil(marker)}, protocol=proto)
        with pytest.raises(UnsafePickleError, match="system"):
            safe_load_pickle(blob)
        assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="eval"):
        safe_load_pickle(pickle.dumps(_Evil2(), protocol=2))
    # a numpy object array smuggling a callable is refused too
    with pytest.raises(UnsafePickleError):
        safe_load_pickle(pickle.dumps(np.array([_Evil2()], dtype=object), protocol=2))


def test_loads_real_gmm_08():
    path = book_path("smplify/gmm_08.pkl")
    gmm = safe_load_pickle(path)
    assert gmm["means"].shape == (8, 69) and gmm["covars"].shape == (8, 69, 69) and gmm["weights"].shape == (8,)
    assert abs(float(gmm["weights"].sum()) - 1) < 1e-6
    np.testing.assert_allclose(gmm["covars"][0], gmm["covars"][0].T)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_smpl_model(tmp_path / "none.pkl")
    (tmp_path / "m.obj").write_text("")
    with pytest.raises(ValueError, match="format"):
        load_smpl_model(tmp_path / "m.obj")
    np.savez(tmp_path / "bad.npz", v_template=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="missing"):
        load_smpl_model(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------- synthetic body
def test_synthetic_body_layout(synth):
    assert synth.num_verts == 6890 and synth.num_joints == 24 and synth.num_betas == 10
    assert synth.posedirs.shape == (6890, 3, 207) and "SYNTHETIC" in synth.description
    V, F = synth.v_template.double().numpy(), synth.faces.numpy()
    # closed and consistently oriented: every directed edge has its reverse exactly once
    e = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    fwd = set(map(tuple, e))
    assert len(fwd) == len(e) and all((b, a) in fwd for a, b in e)
    vol = np.einsum("ij,ij->i", V[F[:, 0]], np.cross(V[F[:, 1]], V[F[:, 2]])).sum() / 6
    assert 0.04 < vol < 0.12  # m^3, outward normals
    W = synth.lbs_weights
    torch.testing.assert_close(W.sum(1), torch.ones(6890))
    # regressor reproduces joints on any shape (rings centred on joints): shaped joints move with the body
    b = torch.zeros(1, 10)
    b[0, 0] = 2.0
    out = smpl_forward(synth, b, return_v_shaped=True)
    torch.testing.assert_close(out.joints[0, :24], synth.J_regressor @ out.v_shaped[0], atol=1e-5, rtol=0)
    assert out.joints[0, 15, 1] > smpl_forward(synth).joints[0, 15, 1] + 0.05  # taller
    # deterministic
    again = synthetic_smpl_model(dtype=torch.float64)
    torch.testing.assert_close(again.v_template.float(), synth.v_template)


def test_synthetic_pose_blend_bulges(synth):
    pose = torch.zeros(1, 69)
    pose[0, 3 * 17 + 1] = -1.5  # bend the left elbow (joint 18)
    out = smpl_forward(synth, body_pose=pose)
    feat_only = smpl_forward(synth.with_betas(10), body_pose=pose)
    assert torch.isfinite(out.vertices).all() and torch.equal(out.vertices, feat_only.vertices)
    assert synth.posedirs[:, :, 9 * 17:9 * 18].abs().max() > 0
