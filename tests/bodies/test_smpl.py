"""SMPL forward: parity with smplx, a slow per-joint reference (forward and backward), gradcheck, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib3d.bodies import SMPL, batch_rodrigues, kinematic_levels, save_smpl_model, smpl_forward
from tests.bodies.conftest import tiny_model

smplx = pytest.importorskip("smplx")


def _params(N, S=10, seed=0, scale=0.6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, S, generator=g, dtype=dtype), scale * torch.randn(N, 69, generator=g, dtype=dtype),
            torch.randn(N, 3, generator=g, dtype=dtype), torch.randn(N, 3, generator=g, dtype=dtype))


@pytest.fixture(scope="module")
def smplx_models(synth, tmp_path_factory):
    d = tmp_path_factory.mktemp("smpl")
    out = {}
    save_smpl_model(synth, d / "syn.pkl")
    out["pkl"] = smplx.SMPL(str(d / "syn.pkl"))
    save_smpl_model(synth, d / "syn.npz")
    data = dict(np.load(d / "syn.npz"))
    out["npz"] = smplx.SMPL(str(d), data_struct=smplx.utils.Struct(**data))
    return out


@pytest.mark.parametrize("fmt", ["pkl", "npz"])
@pytest.mark.parametrize("N", [1, 17])
def test_parity_with_smplx(synth, smplx_models, fmt, N):
    betas, pose, orient, transl = _params(N, seed=N)
    ref = smplx_models[fmt](betas=betas, body_pose=pose, global_orient=orient, transl=transl)
    out = smpl_forward(synth, betas, pose, orient, transl)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints[:, :24], ref.joints[:, :24], atol=1e-5, rtol=0)


def test_parity_extra_joints_and_rotmats(synth, smplx_models):
    """smplx's 21 vertex-selected joints equal lib3d extra joints from a one-hot extra regressor."""
    import dataclasses

    sel = smplx_models["pkl"].vertex_joint_selector.extra_joints_idxs
    reg = torch.zeros(len(sel), synth.num_verts)
    reg[torch.arange(len(sel)), sel] = 1
    m = dataclasses.replace(synth, extra_regressor=reg, extra_joint_names=tuple(f"v{i}" for i in sel.tolist()))
    betas, pose, orient, transl = _params(5, seed=3)
    ref = smplx_models["pkl"](betas=betas, body_pose=pose, global_orient=orient, transl=transl)
    out = smpl_forward(m, betas, pose, orient, transl)
    torch.testing.assert_close(out.joints, ref.joints, atol=1e-5, rtol=0)
    # rotation-matrix input gives the same result as axis-angle
    rm = smpl_forward(m, betas, batch_rodrigues(pose.view(5, 23, 3)), batch_rodrigues(orient), transl)
    torch.testing.assert_close(rm.vertices, out.vertices, atol=1e-6, rtol=0)
    fewer = smpl_forward(m, betas[:, :4], pose, orient, transl)
    padded = smpl_forward(m, torch.cat([betas[:, :4], torch.zeros(5, 6)], 1), pose, orient, transl)
    torch.testing.assert_close(fewer.vertices, padded.vertices)


def reference_smpl(model, betas, pose, orient, transl):
    """Slow, literal SMPL: per-joint loop over the chain, homogeneous 4x4s, full-V joint regression."""
    N = betas.shape[0]
    S = betas.shape[1]
    v_shaped = model.v_template + torch.einsum("nl,vkl->nvk", betas, model.shapedirs[..., :S])
    J = torch.einsum("jv,nvk->njk", model.J_regressor, v_shaped)
    R = batch_rodrigues(torch.cat([orient, pose], 1).view(N, 24, 3))
    feat = (R[:, 1:] - torch.eye(3, dtype=R.dtype)).reshape(N, -1)
    v_posed = v_shaped + torch.einsum("np,vkp->nvk", feat, model.posedirs)
    parents = model.parents.tolist()
    G = []
    for j in range(24):
        t = J[:, j] - (J[:, parents[j]] if j else 0)
        M = torch.zeros(N, 4, 4, dtype=R.dtype)
        M[:, :3, :3] = R[:, j]
        M[:, :3, 3] = t
        M[:, 3, 3] = 1
        G.append(M if j == 0 else G[parents[j]] @ M)
    G = torch.stack(G, 1)
    A = G.clone()
    A[:, :, :3, 3] = G[:, :, :3, 3] - (G[:, :, :3, :3] @ J[..., None])[..., 0]
    T = torch.einsum("vj,njab->nvab", model.lbs_weights, A)
    vh = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], -1)
    verts = (T @ vh[..., None])[..., :3, 0] + transl[:, None]
    joints = G[:, :, :3, 3] + transl[:, None]
    extra = torch.einsum("ev,nvk->nek", model.extra_regressor, verts)
    return verts, torch.cat([joints, extra], 1)


@pytest.mark.parametrize("N", [1, 3])
def test_against_reference_forward_backward(N):
    model = tiny_model(dtype=torch.float64)
    params = [p.requires_grad_() for p in _params(N, S=3, seed=7, dtype=torch.float64)]
    out = smpl_forward(model, *params)
    ref_v, ref_j = reference_smpl(model, *params)
    torch.testing.assert_close(out.vertices, ref_v)
    torch.testing.assert_close(out.joints, ref_j)
    g = torch.Generator().manual_seed(1)
    wv, wj = torch.randn(out.vertices.shape, generator=g, dtype=torch.float64), torch.randn(
        out.joints.shape, generator=g, dtype=torch.float64)
    g1 = torch.autograd.grad((out.vertices * wv).sum() + (out.joints * wj).sum(), params)
    g2 = torch.autograd.grad((ref_v * wv).sum() + (ref_j * wj).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    # joints-only path (skins only the extra regressor's support) agrees
    fast = smpl_forward(model, *params, return_verts=False)
    assert fast.vertices is None
    torch.testing.assert_close(fast.joints, ref_j)


def test_gradcheck_float64():
    model = tiny_model(V=6, dtype=torch.float64)
    params = [p.requires_grad_() for p in _params(1, S=3, seed=2, dtype=torch.float64)]

    def f(b, p, o, t):
        out = smpl_forward(model, b, p, o, t)
        return out.vertices, out.joints

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5)


def test_rodrigues_small_angles_and_gradient_at_zero():
    v = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    R = batch_rodrigues(v)
    torch.testing.assert_close(R[0], torch.eye(3, dtype=torch.float64))
    (g,) = torch.autograd.grad(R[0, 2, 1], v)  # dR/dv at 0 is hat(e_i): R[2,1] = v_x
    torch.testing.assert_close(g, torch.tensor([[1.0, 0, 0]], dtype=torch.float64))
    w = torch.tensor([[0.0, 0.0, np.pi / 2]], dtype=torch.float64)
    torch.testing.assert_close(batch_rodrigues(w)[0] @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64))


def test_kinematic_levels_smpl():
    from lib3d.bodies import SMPL_PARENTS

    lv = kinematic_levels(SMPL_PARENTS)
    assert lv[0] == (0,) and len(lv) == 9 and sorted(j for l in lv for j in l) == list(range(24))
    with pytest.raises(ValueError, match="parents"):
        kinematic_levels((-1, 2, 0))


def test_module_and_device_dtype(synth):
    smpl = SMPL(synth).double()
    assert smpl.model.dtype == torch.float64 and smpl.model.blend_dirs.dtype == torch.float64
    out = smpl(betas=torch.zeros(2, 10, dtype=torch.float64), body_pose=torch.zeros(2, 69, dtype=torch.float64))
    assert out.vertices.shape == (2, 6890, 3) and out.joints.shape == (2, 24 + len(synth.extra_joint_names), 3)
    # rest pose, zero shape: vertices are the template
    torch.testing.assert_close(out.vertices[0], synth.v_template.double(), atol=1e-6, rtol=0)
    assert smpl.faces.shape == (13748, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(synth):
    b, p, o, t = _params(4)
    cpu = smpl_forward(synth, b, p, o, t)
    gpu = smpl_forward(synth.to("cuda"), b.cuda(), p.cuda(), o.cuda(), t.cuda())
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices, atol=1e-5, rtol=0)


def test_bad_inputs(synth):
    b, p, o, t = _params(2)
    with pytest.raises(ValueError, match="body_pose"):
        smpl_forward(synth, b, p[:, :60], o, t)
    with pytest.raises(ValueError, match="global_orient"):
        smpl_forward(synth, b, p, o[:, :2], t)
    with pytest.raises(ValueError, match="betas"):
        smpl_forward(synth, torch.zeros(2, 11), p, o, t)
    with pytest.raises(ValueError, match="batch size"):
        smpl_forward(synth, b, p, o[:1], t)
    with pytest.raises(TypeError, match="dtype"):
        smpl_forward(synth, b.double(), p, o, t)
    with pytest.raises(TypeError, match="body_pose"):
        smpl_forward(synth, b, p.numpy(), o, t)
    with pytest.raises(ValueError, match="transl"):
        smpl_forward(synth, b, p, o, t[:, :2])
    with pytest.raises(ValueError, match="num_betas"):
        synth.with_betas(11)


@pytest.mark.parametrize("which", ["tiny", "synthetic"])
def test_smpl_joint_jacobian_matches_autograd(which, synth):
    """The closed-form Jacobian of the joints (model and extra joints) equals autograd's, float64, including
    a zero rotation (the Taylor branch of the left Jacobian) and fewer betas than the model has."""
    from lib3d.bodies import smpl_joint_jacobian

    model = tiny_model() if which == "tiny" else synth.to(dtype=torch.float64)
    S = model.num_betas - 1
    g = torch.Generator().manual_seed(0)
    q = 0.5 * torch.randn(3, S + 75, generator=g, dtype=torch.float64)
    q[0, S:S + 3] = 0.0  # a joint at exactly zero rotation
    q[1, S + 69:S + 72] = 1e-5  # a tiny root rotation

    def joints(p):
        return smpl_forward(model, p[:, :S], p[:, S:S + 69], p[:, S + 69:S + 72], p[:, S + 72:],
                            return_verts=False).joints

    X, jac = smpl_joint_jacobian(model, q[:, :S], q[:, S:S + 69], q[:, S + 69:S + 72], q[:, S + 72:])
    ref = torch.autograd.functional.jacobian(joints, q)  # (N, P, 3, N, Q)
    ref = torch.stack([ref[n, ..., n, :] for n in range(3)])
    torch.testing.assert_close(X, joints(q))
    assert jac.shape == (3, 24 + len(model.extra_joint_names), 3, S + 75)
    torch.testing.assert_close(jac, ref, rtol=1e-9, atol=1e-10)


def test_smpl_joint_jacobian_bad_inputs(synth):
    from lib3d.bodies import smpl_joint_jacobian

    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="body_pose"):
        smpl_joint_jacobian(synth, torch.zeros(2, 10), torch.zeros(2, 68), z, z)
    with pytest.raises(TypeError, match="betas"):
        smpl_joint_jacobian(synth, torch.zeros(2, 10, dtype=torch.float64), torch.zeros(2, 69), z, z)
    with pytest.raises(ValueError, match="betas"):
        smpl_joint_jacobian(synth, torch.zeros(2, 11), torch.zeros(2, 69), z, z)


def test_bodies_has_no_function_local_lib3d_imports():
    """Issue 12: the model_io <-> smpl <-> synthetic cycle hid behind imports inside functions. No module
    of lib3d.bodies (or the SMPLify system) imports lib3d inside a function, and each imports first and alone."""
    import ast
    import importlib
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "lib3d" / "bodies").glob("*.py")) + [root / "lib3d" / "systems" / "smplify.py"]
    for f in files:
        tree = ast.parse(f.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("lib3d") for n in names), f"{f.name}:{node.lineno} imports {names} locally"
    saved = {k: v for k, v in sys.modules.items() if k.startswith(("lib3d.bodies", "lib3d.systems"))}
    try:
        for f in files:
            name = ("lib3d.systems." if f.parent.name == "systems" else "lib3d.bodies.") + f.stem
            for k in [k for k in sys.modules if k.startswith(("lib3d.bodies", "lib3d.systems"))]:
                del sys.modules[k]
            importlib.import_module(name.removesuffix(".__init__"))
    finally:
        for k in [k for k in sys.modules if k.startswith(("lib3d.bodies", "lib3d.systems"))]:
            del sys.modules[k]
        sys.modules.update(saved)
