"""SMPLify: priors against hand-computed values, energies and residuals agree, synthetic fit with ground
truth (bounded CI run asserting the 2D error), skeleton mapping, metrics, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from lib3d.bodies import smpl_forward
from lib3d.bodies.metrics import keypoint_error_2d, mpjpe, pa_mpjpe, procrustes_align
from lib3d.bodies.priors import (
    angle_prior,
    body_spheres,
    default_gmm_prior,
    gmm_from_arrays,
    gmm_pose_prior,
    interpenetration_penalty,
    load_gmm_prior,
    sample_gmm_poses,
    shape_prior,
)
from lib3d.bodies.skeletons import BODY25, COCO17, LSP14, skeleton_model_indices
from lib3d.bodies.smplify import (
    SMPLifyConfig,
    geman_mcclure,
    initial_depth,
    perspective_project,
    smplify,
    smplify_energy_terms,
    smplify_residuals,
    synthetic_people,
)
from tests.helpers import book_path


def test_gmm_prior_hand_computed():
    # one 2-D component, identity covariance: E = 0.5 |x - mu|^2 + log((2 pi)^(d/2)) - log(w)
    g = gmm_from_arrays([[1.0, 2.0]], [[[1.0, 0.0], [0.0, 1.0]]], [1.0], dtype=torch.float64)
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(gmm_pose_prior(x, g), torch.tensor([0.5 * 5 + math.log(2 * math.pi)],
                                                                  dtype=torch.float64))
    # max-mixture: the closer component wins
    g2 = gmm_from_arrays([[0.0, 0.0], [10.0, 0.0]], [torch.eye(2).numpy()] * 2, [0.5, 0.5], dtype=torch.float64)
    e = gmm_pose_prior(torch.tensor([[9.0, 0.0]], dtype=torch.float64), g2)
    torch.testing.assert_close(e, torch.tensor([0.5 + math.log(2 * math.pi) + math.log(2)], dtype=torch.float64))


def test_real_gmm_08_prior():
    prior = load_gmm_prior(book_path("smplify/gmm_08.pkl"))
    assert prior.means.shape == (8, 69)
    e_mean = gmm_pose_prior(prior.means[:1], prior)
    e_far = gmm_pose_prior(prior.means[:1] + 1.0, prior)
    assert e_far > e_mean
    samples = sample_gmm_poses(prior, 4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 69) and torch.isfinite(gmm_pose_prior(samples, prior)).all()


def test_angle_shape_priors_and_robustifier():
    pose = torch.zeros(2, 69)
    torch.testing.assert_close(angle_prior(pose), torch.full((2,), 4.0))
    pose[1, 52] = 1.0  # left elbow bending the unnatural way
    assert angle_prior(pose)[1] == pytest.approx(3 + math.exp(2.0))
    torch.testing.assert_close(shape_prior(torch.tensor([[3.0, 4.0]])), torch.tensor([25.0]))
    r = torch.tensor([0.0, 1.0, 100.0, 1e6])
    torch.testing.assert_close(geman_mcclure(r, 100.0), torch.tensor([0.0, 1e4 / 10001, 5000.0, 1e4 * 1e12 / (1e4 + 1e12)]))


def test_projection_and_depth_init(synth):
    pts = torch.tensor([[[1.0, -2.0, 10.0]]])
    torch.testing.assert_close(perspective_project(pts, 5000.0, torch.tensor([[256.0, 128.0]])),
                               torch.tensor([[[756.0, -872.0]]]))
    data = synthetic_people(synth, 3, "lsp", noise_px=0.0, drop_prob=0.0, generator=torch.Generator().manual_seed(1))
    d = initial_depth(data.keypoints, LSP14, synth, 5000.0)
    # similar triangles is a rough guess: right order of magnitude
    ratio = d / data.camera_translation[:, 2]
    assert ((ratio > 0.5) & (ratio < 2.0)).all()


def test_residuals_match_energy_terms(synth):
    data = synthetic_people(synth, 3, "lsp", generator=torch.Generator().manual_seed(2))
    prior = default_gmm_prior()
    kp, jt = skeleton_model_indices(LSP14, synth)
    cfg = SMPLifyConfig()
    params = (data.betas, data.body_pose + 0.1, data.global_orient, data.camera_translation)
    spheres = body_spheres(synth, data.betas)
    terms, _ = smplify_energy_terms(synth, params, data.keypoints, kp, jt, data.center, cfg, prior, 57.4, 10.0, spheres)
    r, c = smplify_residuals(synth, torch.cat(params, 1), 10, data.keypoints, kp, jt, data.center, cfg, prior, 57.4,
                             10.0, spheres)
    torch.testing.assert_close((r * r).sum(-1) + c, sum(terms.values()), rtol=1e-4, atol=1e-2)


def test_interpenetration(synth):
    sp = body_spheres(synth, torch.zeros(1, 10))
    rest = smpl_forward(synth, torch.zeros(1, 10), return_verts=False).joints
    assert interpenetration_penalty(rest, sp).item() == 0.0  # rest pose: nothing new touches
    pose = torch.zeros(1, 69)
    pose[0, 3 * 15 + 2] = 1.3  # left shoulder about z: arm down through... (T-pose -> arm up) no contact
    pose[0, 3 * 15 + 1] = -2.5  # swing the left arm across the chest
    pose[0, 3 * 17 + 1] = -2.0  # and fold the elbow into the torso
    bent = smpl_forward(synth, body_pose=pose, return_verts=False).joints
    assert interpenetration_penalty(bent, sp).item() > 0.0


def test_skeleton_mappings(synth):
    for sk in (LSP14, COCO17, BODY25):
        kp, jt = skeleton_model_indices(sk, synth)
        assert len(kp) == sum(j is not None for j in sk.model_joints)
    kp, jt = skeleton_model_indices(LSP14, synth)
    assert jt[:12].tolist() == [8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20]  # SMPLify's LSP mapping
    with pytest.raises(ValueError, match="head_top"):
        skeleton_model_indices(LSP14, synth.__class__(**{f: getattr(synth, f) for f in (
            "v_template", "shapedirs", "posedirs", "J_regressor", "parents", "lbs_weights", "faces")}))


def test_metrics_hand_computed():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    from lib3d.bodies import batch_rodrigues

    R = batch_rodrigues(torch.tensor([[0.3, -0.2, 1.0], [2.0, 0.1, 0.0]], dtype=torch.float64))
    Y = 1.7 * X @ R + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(procrustes_align(X, Y), Y)
    assert pa_mpjpe(X, Y).max() < 1e-9 and mpjpe(Y, Y).max() == 0
    torch.testing.assert_close(mpjpe(X + 1.0, X, root=None), torch.full((2,), math.sqrt(3), dtype=torch.float64))
    p = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    torch.testing.assert_close(keypoint_error_2d(p, torch.zeros(1, 2, 2)), torch.tensor([2.5]))
    torch.testing.assert_close(keypoint_error_2d(p, torch.zeros(1, 2, 2), torch.tensor([[False, True]])),
                               torch.tensor([5.0]))


@pytest.fixture
def one_thread():
    """SMPLify's tensors are small: one thread avoids contention on a shared CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.ci
def test_synthetic_smplify_ci(synth, one_thread):
    """Bounded synthetic benchmark: 6 people, 2 px noise, 10% dropped keypoints -> mean 2D error <= 3 px
    (observed keypoints, against the noise-free projections)."""
    data = synthetic_people(synth, 6, "lsp", generator=torch.Generator().manual_seed(0))
    res = smplify(synth, data.keypoints, "lsp", center=data.center,
                  config=SMPLifyConfig(camera_iters=10, stage_iters=8))
    vis = data.keypoints[..., 2] > 0
    err = keypoint_error_2d(res.keypoints_2d, data.keypoints_clean, vis)
    assert err.mean() <= 3.0, err
    assert torch.isfinite(res.energy).all() and res.stage_energies.shape == (6, 6)
    J = smpl_forward(synth, res.betas, res.body_pose, res.global_orient, res.camera_translation).joints[:, :24]
    assert pa_mpjpe(J, data.joints).mean() < 0.25  # metres: a sanity bound, the fit is 2D


def test_smplify_runs_coco_lbfgs_and_flip(synth, one_thread):
    data = synthetic_people(synth, 2, "coco", yaw_range=0.0, generator=torch.Generator().manual_seed(3))
    kps = data.keypoints.clone()
    # squeeze the shoulders together in 2D: forces the both-orientations path for person 0
    mid = kps[0, 5:7, :2].mean(0)
    kps[0, 5:7, :2] = mid + 0.1 * (kps[0, 5:7, :2] - mid)
    res = smplify(synth, kps, "coco", image_size=data.image_size,
                  config=SMPLifyConfig(camera_iters=3, stage_iters=2, optimizer="lbfgs", stage_weights=((404.0, 100.0),)))
    assert res.body_pose.shape == (2, 69) and res.keypoints_2d.shape == (2, 17, 2)
    assert torch.isfinite(res.keypoints_2d).all()


def test_smplify_bad_inputs(synth):
    kps = torch.zeros(2, 14, 3)
    with pytest.raises(ValueError, match="keypoints"):
        smplify(synth, torch.zeros(2, 13, 3), "lsp", image_size=(100, 100))
    with pytest.raises(ValueError, match="image_size"):
        smplify(synth, kps, "lsp")
    with pytest.raises(ValueError, match="skeleton"):
        smplify(synth, kps, "mpii", image_size=(100, 100))
    bad = kps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        smplify(synth, bad, "lsp", image_size=(100, 100))
    with pytest.raises(ValueError, match="center"):
        smplify(synth, kps, "lsp", center=torch.zeros(3, 2))


def test_prior_jacobian_matches_autograd():
    from lib3d.bodies.smplify import _prior_residuals

    prior = default_gmm_prior(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    p = 0.3 * torch.randn(3, 10 + 75, generator=g, dtype=torch.float64)
    cfg = SMPLifyConfig()
    _, J, _ = _prior_residuals(p, 10, prior, cfg, 57.4, 10.0, jacobian=True)
    ref = torch.autograd.functional.jacobian(lambda q: _prior_residuals(q, 10, prior, cfg, 57.4, 10.0, False)[0], p)
    ref = torch.stack([ref[n, :, n] for n in range(3)])  # people are independent: the diagonal blocks
    torch.testing.assert_close(J, ref)


@pytest.mark.parametrize("stage", ["camera", "full"])
def test_geometric_jacobian_normal_equations_match_autograd(synth, stage):
    """The closed-form residual Jacobian (data, camera depth, overlapping sphere pairs only) gives the
    normal equations J^T J, J^T r and the energy of autograd's Jacobian of ``smplify_residuals`` (float64,
    with a pose that makes spheres overlap)."""
    from lib3d.bodies.smplify import _geometric_jacobian

    m = synth.to(dtype=torch.float64)
    data = synthetic_people(m, 3, "lsp", generator=torch.Generator().manual_seed(2))
    kp, jt = skeleton_model_indices(LSP14, m)
    cfg = SMPLifyConfig()
    pose = data.body_pose.clone()
    pose[0, 3 * 15 + 1], pose[0, 3 * 17 + 1] = -2.5, -2.0  # the left arm folded into the torso
    p = torch.cat([data.betas, pose, data.global_orient, data.camera_translation], 1)
    if stage == "camera":
        free = torch.arange(79, 85)
        kw = {"torso_only": (torch.tensor([8, 9, 2, 3]), jt[[8, 9, 2, 3]]),
              "depth_init": 1.1 * data.camera_translation[:, 2]}
    else:
        free = torch.arange(85)
        kw = {"spheres": body_spheres(m, data.betas)}
    r, J = _geometric_jacobian(m, p, 10, free, data.keypoints, kp, jt, data.center, cfg, **kw)

    def res(q):
        return smplify_residuals(m, q, 10, data.keypoints, kp, jt, data.center, cfg, default_gmm_prior(
            dtype=torch.float64), 1.0, 1.0, geometric_only=True, **kw)[0]

    r0 = res(p)
    ref = torch.func.jacfwd(res)(p)  # forward mode: 255 tangents instead of ~2,000 backward passes
    ref = torch.stack([ref[n, :, n] for n in range(3)])[..., free]
    if stage == "full":
        assert r.shape[1] > 28  # some sphere pairs overlap: their rows are there
    torch.testing.assert_close((r * r).sum(1), (r0 * r0).sum(1))
    JtJ, ref_JtJ = J.transpose(1, 2) @ J, ref.transpose(1, 2) @ ref
    torch.testing.assert_close(JtJ, ref_JtJ, rtol=1e-9, atol=1e-9 * float(ref_JtJ.abs().max()))
    torch.testing.assert_close(J.transpose(1, 2) @ r[..., None], ref.transpose(1, 2) @ r0[..., None])


def test_reprojection_error_hand_computed():
    from lib3d.systems.smplify import reprojection_error

    kps = torch.tensor([[[0.0, 0.0, 1.0], [10.0, 0.0, 0.9], [5.0, 5.0, 0.2], [1.0, 1.0, 1.0]],
                        [[0.0, 0.0, 0.1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]])
    proj = torch.tensor([[[3.0, 4.0], [10.0, 0.0], [50.0, 50.0], [float("nan"), float("nan")]],
                         [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    err, count = reprojection_error(kps, proj, min_confidence=0.5)
    # image 0: keypoints 0 (5 px) and 1 (0 px); 2 is not confident, 3 has no model joint
    assert count.tolist() == [2, 0] and err[0].item() == pytest.approx(2.5) and torch.isnan(err[1])
    err, count = reprojection_error(kps, proj, min_confidence=0.1)
    assert count.tolist() == [3, 2] and err[0].item() == pytest.approx((5 + 0 + 45 * math.sqrt(2)) / 3)
    with pytest.raises(ValueError, match="projected"):
        reprojection_error(kps, proj[:, :3])
