"""SMPLify (Bogo et al. 2016, "Keep it SMPL"), batched over people, in PyTorch.

Fits SMPL shape ``beta``, pose ``theta`` and the camera translation ``t`` to 2D keypoints with confidences:

``E = E_J + w_theta^2 E_theta + (0.317 w_theta)^2 E_a + w_beta^2 E_beta + w_sp E_sp``

- ``E_J = sum_i c_i^2 sum_xy rho_sigma(Pi(R_theta J(beta)_i + t) - x_i)``, Geman-McClure
  ``rho(r) = sigma^2 r^2 / (sigma^2 + r^2)`` with ``sigma = 100`` px;
- ``E_theta`` the max-mixture GMM pose prior, ``E_a`` the elbow/knee angle prior, ``E_beta = |beta|^2``,
  ``E_sp`` the capsule/sphere interpenetration penalty (:mod:`lib3d.bodies.priors`).

Procedure (as SMPLify): the camera depth is initialised from the torso by similar triangles
(``t_z = f * torso_height_3d / torso_height_2d``); the camera translation and global orientation are
fitted to the torso keypoints first; then all parameters in four stages with annealed
``(w_theta, w_beta) = (404, 100), (404, 50), (57.4, 10), (4.78, 5)`` (lib3d appends a light (1, 1)
refinement stage by default). When the 2D shoulder distance is
under ``pix_thsh`` (25 px) the person is also fitted with the orientation rotated by pi about the body's
vertical axis and the lower final energy wins. lib3d additionally (on by default) picks the initial facing
from the left/right order of the shoulders, and initialises ``t_x, t_y`` from the torso centre.

Camera: fixed focal length ``f`` (5000 px as SMPLify) and principal point ``c`` (image centre); OpenCV
axes (x right, y down, z forward), ``u = f X / Z + c_x``. The body's rest orientation is ``R_x(pi)``
(SMPL's +Y up becomes image up). All people are fitted at once: every energy is a sum over the batch
and each person's parameters only enter its own terms. The default optimiser is a batched
Levenberg-Marquardt (per-person damping and step acceptance), the PyTorch counterpart of SMPLify's
dogleg; L-BFGS on the summed energy is available. Its Jacobians are closed-form, no autograd: the joints'
Jacobian (:func:`lib3d.bodies.smpl.smpl_joint_jacobian`: ``omega x (x_j - x_k)`` per pose coordinate, the
kinematic chain for the shape), then the chain rule through the projection, the Geman-McClure square root
and the overlapping sphere pairs (:func:`_geometric_jacobian`); the prior terms' Jacobian is analytic too.
(Forward-mode AD over the 85 parameters did the same ~18x slower on CPU.)

Performance note: the tensors are small, so on a busy CPU one thread per process is often faster than
several (``torch.set_num_threads(1)``; the jobs do this per Ray worker).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from lib3d._checks import check_finite, check_shape
from lib3d.bodies.priors import (
    GMMPrior,
    angle_prior,
    body_spheres,
    default_gmm_prior,
    gmm_pose_prior,
    interpenetration_penalty,
    sample_gmm_poses,
    shape_prior,
)
from lib3d.bodies.skeletons import Skeleton, get_skeleton, skeleton_model_indices
from lib3d.bodies.smpl import SMPLModel, batch_rodrigues, smpl_forward, smpl_joint_jacobian
from lib3d.geometry import matrix_to_axis_angle

__all__ = [
    "SMPLifyConfig",
    "SMPLifyResult",
    "SyntheticPeople",
    "geman_mcclure",
    "initial_depth",
    "opencv_to_pytorch3d",
    "perspective_project",
    "smplify",
    "smplify_energy_terms",
    "synthetic_people",
]


@dataclasses.dataclass(frozen=True)
class SMPLifyConfig:
    """Settings of :func:`smplify` (defaults are SMPLify's)."""

    focal_length: float = 5000.0
    """Focal length in pixels (SMPLify's fixed 5000)."""
    sigma: float = 100.0
    """Geman-McClure scale in pixels."""
    stage_weights: tuple[tuple[float, float], ...] = ((404.0, 100.0), (404.0, 50.0), (57.4, 10.0), (4.78, 5.0),
                                                      (1.0, 1.0))
    """(pose-prior weight, shape-prior weight) per stage; energies use their squares, as SMPLify. The first
    four are SMPLify's; the fifth, a light refinement, is a lib3d addition (drop it to reproduce SMPLify)."""
    angle_prior_scale: float = 0.317
    """The angle prior weight is ``angle_prior_scale * pose-prior weight``."""
    interpenetration_weight: float = 1.0e6
    """Weight of the sphere-overlap penalty (metres^2); 0 disables it."""
    interpenetration_stages: tuple[int, ...] = (2, 3)
    """Stages (0-based among the annealed ones) using the interpenetration penalty."""
    depth_weight: float = 100.0
    """Camera stage: weight of ``(t_z - t_z_init)`` keeping the depth near the similar-triangles guess."""
    camera_iters: int = 30
    """L-BFGS iterations of the camera stage."""
    stage_iters: int = 30
    """L-BFGS iterations of each annealed stage."""
    pix_thsh: float = 25.0
    """2D shoulder distance (px) under which both orientations are fitted."""
    orient_from_shoulders: bool = True
    """Pick the initial facing from the shoulders' left/right order (lib3d addition; SMPLify: always front)."""
    num_betas: int = 10
    """Shape coefficients to fit."""
    spheres_per_bone: int = 4
    """Spheres per capsule of the interpenetration term."""
    optimizer: Literal["lm", "lbfgs"] = "lm"
    """``"lm"``: batched Levenberg-Marquardt on the residuals (each person steps and damps independently,
    closed-form Jacobians; close to SMPLify's dogleg). ``"lbfgs"``: torch L-BFGS on the summed energy."""


class SMPLifyResult(NamedTuple):
    """Fitted parameters and energies (N people, K keypoints).

    Attributes:
        betas: (N, S) shapes.
        body_pose: (N, 69) axis-angle body poses.
        global_orient: (N, 3) axis-angle root orientations in the camera frame.
        camera_translation: (N, 3) body translation in the camera frame (metres).
        energy: (N,) final total energies (last-stage weights).
        keypoints_2d: (N, K, 2) projected model keypoints (px); NaN for unmapped keypoints.
        flipped: (N,) bool, True where the flipped orientation won.
        stage_energies: (num_stages + 1, N) total energy after the camera stage and each stage.
    """

    betas: torch.Tensor
    body_pose: torch.Tensor
    global_orient: torch.Tensor
    camera_translation: torch.Tensor
    energy: torch.Tensor
    keypoints_2d: torch.Tensor
    flipped: torch.Tensor
    stage_energies: torch.Tensor


def perspective_project(points: torch.Tensor, focal_length: torch.Tensor | float,
                        center: torch.Tensor) -> torch.Tensor:
    """Pinhole projection in OpenCV axes: ``u = f X / Z + c_x``, ``v = f Y / Z + c_y``.

    Args:
        points: (N, P, 3) float camera-frame points (Z > 0 in front).
        focal_length: float or (N,) pixels.
        center: (N, 2) or (2,) principal point (px).

    Returns:
        (N, P, 2) pixel coordinates (column, row).
    """
    check_shape("points", points, (None, None, 3), dtype="float")
    f = torch.as_tensor(focal_length, dtype=points.dtype, device=points.device)
    f = f.reshape(-1, 1, 1) if f.dim() else f
    c = center.reshape(-1, 1, 2) if center.dim() == 2 else center
    z = points[..., 2:3]
    return f * points[..., :2] / z + c


def geman_mcclure(r: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robustifier ``rho(r) = sigma^2 r^2 / (sigma^2 + r^2)`` (elementwise)."""
    r2 = r * r
    return sigma * sigma * r2 / (sigma * sigma + r2)


def opencv_to_pytorch3d(camera_translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R (N, 3, 3), T (N, 3)) of the lib3d/PyTorch3D camera equal to SMPLify's OpenCV camera at the origin.

    lib3d views have +X left, +Y up, so ``R = diag(-1, -1, 1)`` and ``T = 0``; the body keeps its
    ``camera_translation`` (pass it as ``transl``). Use with ``PerspectiveCameras(focal_length=f,
    principal_point=c, in_ndc=False, image_size=(H, W), R=R, T=T)``.
    """
    N = camera_translation.shape[0]
    R = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=camera_translation.dtype,
                                device=camera_translation.device)).expand(N, 3, 3).contiguous()
    return R, torch.zeros_like(camera_translation)


def _torso_indices(skeleton: Skeleton, model: SMPLModel):
    kp = [skeleton.keypoints.index(n) for n in skeleton.torso]
    names = model.all_joint_names
    jt = [names.index(skeleton.model_joints[i]) for i in kp]
    return kp, jt


def initial_depth(keypoints: torch.Tensor, skeleton: Skeleton, model: SMPLModel, focal_length: float,
                  betas: torch.Tensor | None = None) -> torch.Tensor:
    """Camera depth by similar triangles: ``t_z = f * mean 3D shoulder-hip length / mean 2D length``.

    Args:
        keypoints: (N, K, 3) float (u, v, confidence).
        skeleton, model: to find the torso keypoints and joints.
        focal_length: pixels.
        betas: (N, S) shapes (default zero).

    Returns:
        (N,) depths in metres (the 2D length is clamped to >= 1 px; missing torso sides are ignored).
    """
    kp, jt = _torso_indices(skeleton, model)
    N = keypoints.shape[0]
    J = smpl_forward(model, betas, global_orient=None, return_verts=False).joints
    J = J.expand(N, -1, -1) if J.shape[0] == 1 else J
    d3 = torch.stack([(J[:, jt[0]] - J[:, jt[2]]).norm(dim=-1), (J[:, jt[1]] - J[:, jt[3]]).norm(dim=-1)], 1)
    x = keypoints
    d2 = torch.stack([(x[:, kp[0], :2] - x[:, kp[2], :2]).norm(dim=-1), (x[:, kp[1], :2] - x[:, kp[3], :2]).norm(dim=-1)], 1)
    ok = torch.stack([(x[:, kp[0], 2] > 0) & (x[:, kp[2], 2] > 0), (x[:, kp[1], 2] > 0) & (x[:, kp[3], 2] > 0)], 1)
    okf = ok.to(x.dtype)
    n_ok = okf.sum(1)
    mean2 = torch.where(n_ok > 0, (d2 * okf).sum(1) / n_ok.clamp_min(1), torch.full_like(n_ok, 100.0)).clamp_min(1.0)
    mean3 = torch.where(n_ok > 0, (d3 * okf).sum(1) / n_ok.clamp_min(1), d3.mean(1))
    return focal_length * mean3 / mean2


def _rot_x_pi(dtype, device):
    return torch.tensor([math.pi, 0.0, 0.0], dtype=dtype, device=device)


def _flip_orient(orient: torch.Tensor) -> torch.Tensor:
    """``R' = R R_y(pi)``: the body turned by pi about its own vertical axis (SMPLify's flipped init)."""
    Ry = batch_rodrigues(torch.tensor([0.0, math.pi, 0.0], dtype=orient.dtype, device=orient.device))
    return matrix_to_axis_angle(batch_rodrigues(orient) @ Ry)


def smplify_energy_terms(model, params, keypoints, kp_idx, jt_idx, center, cfg: SMPLifyConfig, prior: GMMPrior,
                         w_pose: float, w_betas: float, spheres=None, torso_only=None, depth_init=None):
    """Per-person energy terms (dict of (N,) tensors) and the projected joints (N, J + E, 2)."""
    betas, body_pose, orient, transl = params
    out = smpl_forward(model, betas, body_pose, orient, transl, return_verts=False)
    proj = perspective_project(out.joints, cfg.focal_length, center)
    terms = {}
    if torso_only is not None:
        kp, jt = torso_only
        r = proj[:, jt] - keypoints[:, kp, :2]
        c = keypoints[:, kp, 2]
        terms["data"] = (c[..., None] ** 2 * r * r).sum((1, 2))
        terms["depth"] = cfg.depth_weight**2 * (transl[:, 2] - depth_init) ** 2
        return terms, proj
    r = proj[:, jt_idx] - keypoints[:, kp_idx, :2]
    c = keypoints[:, kp_idx, 2]
    terms["data"] = (c[..., None] ** 2 * geman_mcclure(r, cfg.sigma)).sum((1, 2))
    terms["pose"] = w_pose**2 * gmm_pose_prior(body_pose, prior)
    terms["angle"] = (cfg.angle_prior_scale * w_pose) ** 2 * angle_prior(body_pose)
    terms["shape"] = w_betas**2 * shape_prior(betas)
    if spheres is not None:
        terms["interpenetration"] = cfg.interpenetration_weight * interpenetration_penalty(out.joints, spheres)
    return terms, proj


def _lbfgs(params, energy_fn, iters):
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-9)

    def closure():
        opt.zero_grad(set_to_none=True)
        e = energy_fn().sum()
        e.backward()
        return e

    opt.step(closure)


def smplify_residuals(model, p, S, keypoints, kp_idx, jt_idx, center, cfg: SMPLifyConfig, prior: GMMPrior,
                      w_pose: float, w_betas: float, spheres=None, torso_only=None, depth_init=None,
                      geometric_only: bool = False):
    """Residuals ``r (N, R)`` and constants ``c (N,)`` with energy ``E = |r|^2 + c`` (the same energy as
    :func:`smplify_energy_terms`, written as a least-squares problem: signed square roots of each term).
    ``geometric_only``: just the terms that need the body model (data, interpenetration)."""
    betas, body_pose, orient, transl = p[:, :S], p[:, S:S + 69], p[:, S + 69:S + 72], p[:, S + 72:S + 75]
    out = smpl_forward(model, betas, body_pose, orient, transl, return_verts=False)
    proj = perspective_project(out.joints, cfg.focal_length, center)
    N = p.shape[0]
    if torso_only is not None:
        kp, jt = torso_only
        r = (proj[:, jt] - keypoints[:, kp, :2]) * keypoints[:, kp, 2:3]
        return torch.cat([r.reshape(N, -1), cfg.depth_weight * (transl[:, 2:3] - depth_init[:, None])], 1), \
            torch.zeros(N, dtype=p.dtype, device=p.device)
    r = proj[:, jt_idx] - keypoints[:, kp_idx, :2]
    # signed sqrt of Geman-McClure: rho(r) = (sigma r / sqrt(sigma^2 + r^2))^2
    data = keypoints[:, kp_idx, 2:3] * cfg.sigma * r / torch.sqrt(cfg.sigma**2 + r * r)
    parts = [data.reshape(N, -1)]
    if spheres is not None:
        a_, b_ = out.joints[:, spheres.parent], out.joints[:, spheres.child]
        c_ = a_ + spheres.t[:, None] * (b_ - a_)
        i, kk = spheres.pairs[:, 0], spheres.pairs[:, 1]
        d = (c_[:, i] - c_[:, kk]).norm(dim=-1)
        parts.append(math.sqrt(cfg.interpenetration_weight)
                     * torch.relu(spheres.radius[:, i] + spheres.radius[:, kk] - d))
    if geometric_only:
        return torch.cat(parts, 1), torch.zeros(N, dtype=p.dtype, device=p.device)
    r_p, _, const = _prior_residuals(p, S, prior, cfg, w_pose, w_betas, jacobian=False)
    return torch.cat(parts + [r_p], 1), const


_ANGLE_COLS = (52, 55, 9, 12)
_ANGLE_SIGNS = (1.0, -1.0, -1.0, -1.0)


def _prior_residuals(p, S, prior: GMMPrior, cfg: SMPLifyConfig, w_pose: float, w_betas: float, jacobian: bool):
    """Prior residuals [pose (69), angle (4), shape (S)] (N, R_p), their analytic Jacobian (N, R_p, S + 75)
    (or None) and the constants (N,)."""
    N = p.shape[0]
    body_pose, betas = p[:, S:S + 69], p[:, :S]
    diff = body_pose[:, None, :] - prior.means
    y = torch.einsum("ngd,gde->nge", diff, prior.prec_chol) * math.sqrt(0.5)
    full = (y * y).sum(-1) + prior.log_norm
    k = full.detach().argmin(1)
    rows = torch.arange(N, device=p.device)
    pose_r = w_pose * y[rows, k]
    const = w_pose**2 * prior.log_norm[k]
    sign = torch.tensor(_ANGLE_SIGNS, dtype=p.dtype, device=p.device)
    ang = cfg.angle_prior_scale * w_pose * torch.exp(body_pose[:, list(_ANGLE_COLS)] * sign)
    r = torch.cat([pose_r, ang, w_betas * betas], 1)
    if not jacobian:
        return r, None, const
    Jp = torch.zeros(N, 69 + 4 + S, S + 75, dtype=p.dtype, device=p.device)
    # d pose_r / d theta = w sqrt(1/2) L_k^T
    Jp[:, :69, S:S + 69] = w_pose * math.sqrt(0.5) * prior.prec_chol[k].transpose(1, 2)
    for i, (col, sg) in enumerate(zip(_ANGLE_COLS, _ANGLE_SIGNS)):
        Jp[:, 69 + i, S + col] = ang[:, i] * sg
    Jp[:, 73:, :S] = w_betas * torch.eye(S, dtype=p.dtype, device=p.device)
    return r, Jp, const


def _geometric_jacobian(model: SMPLModel, p: torch.Tensor, S: int, free: torch.Tensor, keypoints: torch.Tensor,
                        kp_idx: torch.Tensor, jt_idx: torch.Tensor, center: torch.Tensor, cfg: SMPLifyConfig,
                        spheres=None, torso_only=None, depth_init=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model-dependent residuals of :func:`smplify_residuals` (data, camera depth, interpenetration)
    and their Jacobian w.r.t. the ``free`` columns of ``p``: ``(r (N, R), J (N, R, F))``.

    The joints' Jacobian in closed form (:func:`lib3d.bodies.smpl.smpl_joint_jacobian`), then the chain rule in closed form through the
    projection ``u = f X / Z + c`` (``du/dX = f/Z [1, 0, -X/Z]``), the Geman-McClure square root
    ``s(d) = sigma d / sqrt(sigma^2 + d^2)`` (``ds/dd = sigma^3 / (sigma^2 + d^2)^(3/2)``) and the sphere
    overlaps ``o = r_i + r_k - |c_i - c_k|`` (``do = -u^T (dc_i - dc_k)``, u the unit centre difference).
    Only overlapping sphere pairs have a non-zero residual, so the interpenetration rows are those pairs
    alone (padded to the largest count in the batch with zero rows): the normal equations are unchanged.
    """
    N = p.shape[0]
    X, dX = smpl_joint_jacobian(model, p[:, :S], p[:, S:S + 69], p[:, S + 69:S + 72], p[:, S + 72:S + 75])
    dX = dX[..., free] if free.numel() < dX.shape[-1] else dX
    kp, jt = torso_only if torso_only is not None else (kp_idx, jt_idx)
    P, dP = X[:, jt], dX[:, jt]  # (N, K', 3), (N, K', 3, F)
    z = P[..., 2:3]
    f = cfg.focal_length
    uv = f * P[..., :2] / z + center[:, None]
    duv = (f / z)[..., None] * (dP[..., :2, :] - (P[..., :2] / z)[..., None] * dP[..., 2:3, :])  # (N, K', 2, F)
    d = uv - keypoints[:, kp, :2]
    conf = keypoints[:, kp, 2:3]
    if torso_only is not None:
        r_depth = cfg.depth_weight * (p[:, S + 74:S + 75] - depth_init[:, None])
        J_depth = (cfg.depth_weight * (free == S + 74).to(p.dtype)).expand(N, 1, -1)
        return (torch.cat([(conf * d).reshape(N, -1), r_depth], 1),
                torch.cat([(conf[..., None] * duv).reshape(N, -1, free.numel()), J_depth], 1))
    s2 = cfg.sigma**2
    den = torch.sqrt(s2 + d * d)
    r = [(conf * cfg.sigma * d / den).reshape(N, -1)]
    J = [((conf * cfg.sigma * s2 / den**3)[..., None] * duv).reshape(N, -1, free.numel())]
    if spheres is not None:
        t = spheres.t[:, None]
        c = X[:, spheres.parent] + t * (X[:, spheres.child] - X[:, spheres.parent])  # (N, P, 3)
        i, k = spheres.pairs[:, 0], spheres.pairs[:, 1]
        diff = c[:, i] - c[:, k]
        dist = diff.norm(dim=-1)
        over = spheres.radius[:, i] + spheres.radius[:, k] - dist  # (N, Q)
        active = over > 0
        A = int(active.sum(1).max())
        if A > 0:
            sel = torch.topk(active.to(p.dtype), A, dim=1).indices  # (N, A): the overlapping pairs first
            on = torch.gather(active, 1, sel).to(p.dtype)
            w = math.sqrt(cfg.interpenetration_weight)
            rows = torch.arange(N, device=p.device)[:, None]
            u = torch.gather(diff, 1, sel[..., None].expand(-1, -1, 3)) \
                / torch.gather(dist, 1, sel).clamp_min(1e-12)[..., None]
            # centre derivatives of the selected pairs' spheres only: dc = (1 - t) dX_parent + t dX_child

            def dcentre(sphere):  # (N, A) sphere indices -> (N, A, 3, F)
                tt = spheres.t[sphere][..., None, None]
                return (1 - tt) * dX[rows, spheres.parent[sphere]] + tt * dX[rows, spheres.child[sphere]]

            dd = dcentre(i[sel]) - dcentre(k[sel])  # (N, A, 3, F)
            r.append(w * on * torch.gather(over, 1, sel))
            J.append(-w * on[..., None] * (u[..., None] * dd).sum(2))
    return torch.cat(r, 1), torch.cat(J, 1)


@torch.no_grad()
def _levenberg_marquardt(res_fn, jac_fn, p: torch.Tensor, free: torch.Tensor, iters: int, lam0: float = 1e-3,
                         ftol: float = 1e-5):
    """Batched Levenberg-Marquardt (Marquardt's diagonal scaling); each person accepts/rejects its own step.

    Minimises ``E_n(p_n) = |r_n(p_n)|^2 + c_n`` for every row n; stops early once every person has
    converged (an accepted step gaining less than ``ftol`` relative energy). Returns the new ``p``.
    """
    N = p.shape[0]
    lam = torch.full((N,), lam0, dtype=p.dtype, device=p.device)
    r, c = res_fn(p)
    E = (r * r).sum(-1) + c
    eye = torch.eye(free.numel(), dtype=p.dtype, device=p.device)
    done = torch.zeros(N, dtype=torch.bool, device=p.device)
    for _ in range(iters):
        r, Jm = jac_fn(p)
        JtJ = Jm.transpose(1, 2) @ Jm
        g = (Jm.transpose(1, 2) @ r[..., None])[..., 0]
        diag = torch.diagonal(JtJ, dim1=-2, dim2=-1).clamp_min(1e-9)
        A = JtJ + lam[:, None, None] * (diag[:, :, None] * eye)
        step = torch.linalg.solve(A, -g)
        q = p.clone()
        q[:, free] = p[:, free] + step
        r_new, c_new = res_fn(q)
        E_new = (r_new * r_new).sum(-1) + c_new
        ok = torch.isfinite(E_new) & (E_new < E)
        # converged: an accepted step that gained less than ftol (relative), or damping at its ceiling
        done = (ok & ((E - E_new) <= ftol * E.abs().clamp_min(1e-12))) | (~ok & (lam >= 1e7)) | done
        p = torch.where(ok[:, None], q, p)
        E = torch.where(ok, E_new, E)
        lam = torch.where(ok, (lam / 3).clamp_min(1e-7), (lam * 4).clamp_max(1e7))
        if bool(done.all()) or bool((g.abs().amax(-1) < 1e-6).all()):
            break
    return p


def smplify(
    model: SMPLModel,
    keypoints: torch.Tensor,
    skeleton: str | Skeleton = "lsp",
    *,
    image_size: tuple[int, int] | torch.Tensor | None = None,
    center: torch.Tensor | None = None,
    prior: GMMPrior | None = None,
    config: SMPLifyConfig = SMPLifyConfig(),
    callback: Callable[[int, str, dict], None] | None = None,
) -> SMPLifyResult:
    """Fit SMPL to 2D keypoints of N people at once (see the module docstring for the energy).

    Args:
        model: the body model (the synthetic body or a loaded SMPL file).
        keypoints: (N, K, 3) float ``(u, v, confidence)`` in pixels, confidence 0 for missing keypoints.
        skeleton: ``"lsp"``, ``"coco"``, ``"body25"`` or a :class:`Skeleton` (keypoint order).
        image_size: (H, W) of the images (the principal point is the image centre), or
        center: (N, 2) or (2,) principal points in pixels (overrides ``image_size``).
        prior: the GMM pose prior (default: the embedded one; load SMPLify's with
            :func:`lib3d.bodies.priors.load_gmm_prior`).
        config: weights, iterations and switches.
        callback: called as ``callback(stage, name, terms)`` after each stage with the batch-mean energy
            terms (``stage`` 0 is the camera stage) (for logging).

    Returns:
        SMPLifyResult.

    Raises:
        ValueError: bad shapes, non-finite keypoints, no principal point, or a skeleton the model lacks.
    """
    skeleton = get_skeleton(skeleton)
    K = len(skeleton.keypoints)
    check_shape("keypoints", keypoints, (None, K, 3), dtype="float")
    check_finite("keypoints", keypoints)
    dev, dt = model.device, model.dtype
    keypoints = keypoints.to(device=dev, dtype=dt)
    N = keypoints.shape[0]
    if center is None:
        if image_size is None:
            raise ValueError("smplify needs image_size=(H, W) or center=(c_x, c_y) for the principal point")
        H, W = (float(s) for s in image_size)
        center = torch.tensor([W / 2, H / 2], dtype=dt, device=dev)
    center = torch.as_tensor(center, dtype=dt, device=dev)
    if center.dim() == 1:
        check_shape("center", center, (2,))
        center = center.expand(N, 2)
    else:
        check_shape("center", center, (N, 2))
    model = model.with_betas(min(config.num_betas, model.num_betas))
    S = model.num_betas
    prior = (prior or default_gmm_prior()).to(device=dev, dtype=dt)
    kp_idx, jt_idx = skeleton_model_indices(skeleton, model)
    torso_kp, torso_jt = _torso_indices(skeleton, model)
    torso_kp_t = torch.tensor(torso_kp, device=dev)
    torso_jt_t = torch.tensor(torso_jt, device=dev)

    # ---- initialisation: facing, depth by similar triangles, t_xy from the torso centre
    x = keypoints
    rs, ls = x[:, torso_kp[0]], x[:, torso_kp[1]]
    shoulder_px = (rs[:, :2] - ls[:, :2]).norm(dim=-1)
    both_sh = (rs[:, 2] > 0) & (ls[:, 2] > 0)
    front = torch.ones(N, dtype=torch.bool, device=dev)
    if config.orient_from_shoulders:  # facing the camera: the left shoulder is on the image right
        front = ~(both_sh & (ls[:, 0] < rs[:, 0]))
    base = _rot_x_pi(dt, dev).expand(N, 3)
    orient0 = torch.where(front[:, None], base, _flip_orient(base))
    try_both = ~both_sh | (shoulder_px < config.pix_thsh)
    dup = torch.nonzero(try_both).flatten()
    # the batch: all people, then the flipped copies
    idx = torch.cat([torch.arange(N, device=dev), dup])
    orient0 = torch.cat([orient0, _flip_orient(orient0[dup])])
    kps, ctr = keypoints[idx], center[idx]
    M = idx.numel()
    depth0 = initial_depth(kps, skeleton, model, config.focal_length)
    tc = kps[:, torso_kp_t]
    w_t = (tc[..., 2] > 0).to(dt)
    uv = (tc[..., :2] * w_t[..., None]).sum(1) / w_t.sum(1, keepdim=True).clamp_min(1)
    uv = torch.where(w_t.sum(1, keepdim=True) > 0, uv, ctr)
    J0 = smpl_forward(model, None, prior.mean_pose[None].expand(M, -1), orient0, return_verts=False).joints
    torso3d = J0[:, torso_jt_t].mean(1)
    txy = (uv - ctr) * depth0[:, None] / config.focal_length - torso3d[:, :2]
    transl = torch.cat([txy, depth0[:, None] - torso3d[:, 2:3]], 1)

    betas = torch.zeros(M, S, dtype=dt, device=dev, requires_grad=True)
    body_pose = prior.mean_pose[None].repeat(M, 1).requires_grad_(True)
    orient = orient0.clone().requires_grad_(True)
    transl = transl.clone().requires_grad_(True)
    params = (betas, body_pose, orient, transl)
    stage_E = []

    # ---- stage 0: camera translation and global orientation on the torso
    def cam_energy():
        terms, _ = smplify_energy_terms(model, params, kps, kp_idx, jt_idx, ctr, config, prior, 0, 0,
                                        torso_only=(torso_kp_t, torso_jt_t), depth_init=depth0.detach())
        return sum(terms.values())

    if config.optimizer == "lm":
        P = torch.cat([betas, body_pose, orient, transl], 1).detach()

        def cam_res(q):
            return smplify_residuals(model, q, S, kps, kp_idx, jt_idx, ctr, config, prior, 0, 0,
                                     torso_only=(torso_kp_t, torso_jt_t), depth_init=depth0.detach())

        cam_free = torch.arange(S + 69, S + 75, device=dev)

        def cam_jac(q):
            return _geometric_jacobian(model, q, S, cam_free, kps, kp_idx, jt_idx, ctr, config,
                                       torso_only=(torso_kp_t, torso_jt_t), depth_init=depth0.detach())

        P = _levenberg_marquardt(cam_res, cam_jac, P, cam_free, config.camera_iters)
        with torch.no_grad():
            for t_, v_ in zip(params, (P[:, :S], P[:, S:S + 69], P[:, S + 69:S + 72], P[:, S + 72:])):
                t_.copy_(v_)
    else:
        _lbfgs([orient, transl], cam_energy, config.camera_iters)
    with torch.no_grad():
        stage_E.append(cam_energy())
        if callback is not None:
            terms, _ = smplify_energy_terms(model, params, kps, kp_idx, jt_idx, ctr, config, prior, 0, 0,
                                            torso_only=(torso_kp_t, torso_jt_t), depth_init=depth0.detach())
            callback(0, "camera", {k: float(v.mean()) for k, v in terms.items()})

    # ---- stages 1..: everything, annealed prior weights
    spheres = None
    all_free = torch.arange(S + 75, device=dev)
    for s, (w_pose, w_betas) in enumerate(config.stage_weights):
        if config.interpenetration_weight > 0 and s in config.interpenetration_stages:
            spheres = body_spheres(model, betas.detach(), per_bone=config.spheres_per_bone)
        else:
            spheres = None

        def energy(w_pose=w_pose, w_betas=w_betas, spheres=spheres):
            terms, _ = smplify_energy_terms(model, params, kps, kp_idx, jt_idx, ctr, config, prior, w_pose, w_betas,
                                            spheres)
            return sum(terms.values())

        if config.optimizer == "lm":
            P = torch.cat([t_.detach() for t_ in params], 1)

            def res(q, w_pose=w_pose, w_betas=w_betas, spheres=spheres):
                return smplify_residuals(model, q, S, kps, kp_idx, jt_idx, ctr, config, prior, w_pose, w_betas,
                                         spheres)

            def jac(q, w_pose=w_pose, w_betas=w_betas, spheres=spheres):
                # model terms through the joint Jacobian, prior terms analytically (same normal equations as res)
                r_g, J_g = _geometric_jacobian(model, q, S, all_free, kps, kp_idx, jt_idx, ctr, config, spheres)
                r_p, J_p, _ = _prior_residuals(q, S, prior, config, w_pose, w_betas, jacobian=True)
                return torch.cat([r_g, r_p], 1), torch.cat([J_g, J_p], 1)

            P = _levenberg_marquardt(res, jac, P, all_free, config.stage_iters)
            with torch.no_grad():
                for t_, v_ in zip(params, (P[:, :S], P[:, S:S + 69], P[:, S + 69:S + 72], P[:, S + 72:])):
                    t_.copy_(v_)
        else:
            _lbfgs(list(params), energy, config.stage_iters)
        with torch.no_grad():
            terms, proj = smplify_energy_terms(model, params, kps, kp_idx, jt_idx, ctr, config, prior, w_pose,
                                               w_betas, spheres)
            stage_E.append(sum(terms.values()))
            if callback is not None:
                callback(s + 1, f"stage{s + 1}", {k: float(v.mean()) for k, v in terms.items()})

    # ---- keep the lower-energy orientation per person
    with torch.no_grad():
        final = stage_E[-1]
        choice = torch.arange(N, device=dev)
        flipped = torch.zeros(N, dtype=torch.bool, device=dev)
        if dup.numel():
            better = final[N:] < final[dup]
            choice[dup[better]] = N + torch.nonzero(better).flatten()
            flipped[dup[better]] = True
        kp2d = torch.full((N, K, 2), float("nan"), dtype=dt, device=dev)
        kp2d[:, kp_idx] = proj[choice][:, jt_idx]
        return SMPLifyResult(
            betas.detach()[choice], body_pose.detach()[choice], orient.detach()[choice], transl.detach()[choice],
            final[choice], kp2d, flipped, torch.stack(stage_E)[:, choice])


# ----------------------------------------------------------------------------- synthetic benchmark data
class SyntheticPeople(NamedTuple):
    """Ground truth and observations of :func:`synthetic_people`.

    Attributes:
        keypoints: (N, K, 3) noisy (u, v, confidence) with dropped keypoints at confidence 0.
        keypoints_clean: (N, K, 2) noise-free projections.
        betas, body_pose, global_orient, camera_translation: ground-truth parameters.
        joints: (N, J, 3) ground-truth model joints in the camera frame (metres).
        center: (N, 2) principal points; image_size: (H, W).
    """

    keypoints: torch.Tensor
    keypoints_clean: torch.Tensor
    betas: torch.Tensor
    body_pose: torch.Tensor
    global_orient: torch.Tensor
    camera_translation: torch.Tensor
    joints: torch.Tensor
    center: torch.Tensor
    image_size: tuple[int, int]


def synthetic_people(model: SMPLModel, n: int, skeleton: str | Skeleton = "lsp", *, prior: GMMPrior | None = None,
                     image_size: tuple[int, int] = (512, 512), focal_length: float = 5000.0,
                     height_px: tuple[float, float] = (300.0, 420.0), noise_px: float = 2.0,
                     drop_prob: float = 0.1, beta_std: float = 1.0, yaw_range: float = math.pi,
                     generator: torch.Generator | None = None) -> SyntheticPeople:
    """People sampled from the shape and pose priors, seen by a random camera, with noisy keypoints.

    Shapes ``beta ~ N(0, beta_std^2)``, poses from the GMM prior, a random yaw in ``[-yaw_range, yaw_range]``
    and a small random tilt, a depth giving a body height in ``height_px`` pixels, a random offset inside
    the image; keypoints get Gaussian noise of ``noise_px`` per axis and are dropped (confidence 0) with
    probability ``drop_prob``.
    """
    skeleton = get_skeleton(skeleton)
    dev, dt = model.device, model.dtype
    prior = (prior or default_gmm_prior()).to(device=dev, dtype=dt)
    S = model.num_betas

    def rnd(*shape):
        return torch.rand(*shape, generator=generator, dtype=dt).to(dev)

    def rndn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dt).to(dev)

    betas = beta_std * rndn(n, S)
    body_pose = sample_gmm_poses(prior, n, generator=generator).to(dtype=dt)
    yaw = (2 * rnd(n) - 1) * yaw_range
    tilt = 0.15 * rndn(n, 2)
    Rx = batch_rodrigues(torch.stack([math.pi + tilt[:, 0], torch.zeros_like(yaw), tilt[:, 1]], 1))
    Ry = batch_rodrigues(torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], 1))
    orient = matrix_to_axis_angle(Rx @ Ry)
    out = smpl_forward(model, betas, body_pose, orient, return_verts=True)
    H, W = image_size
    height_m = (out.vertices[..., 1].amax(1) - out.vertices[..., 1].amin(1))
    hpx = height_px[0] + (height_px[1] - height_px[0]) * rnd(n)
    depth = focal_length * height_m / hpx
    center = torch.tensor([W / 2, H / 2], dtype=dt, device=dev).expand(n, 2)
    mid = 0.5 * (out.vertices.amax(1) + out.vertices.amin(1))  # (n, 3)
    off_px = (2 * rnd(n, 2) - 1) * torch.tensor([0.15 * W, 0.08 * H], dtype=dt, device=dev)
    txy = off_px * depth[:, None] / focal_length - mid[:, :2]
    transl = torch.cat([txy, depth[:, None] - mid[:, 2:3]], 1)
    joints = out.joints + transl[:, None]
    kp_idx, jt_idx = skeleton_model_indices(skeleton, model)
    K = len(skeleton.keypoints)
    clean = torch.zeros(n, K, 2, dtype=dt, device=dev)
    clean[:, kp_idx] = perspective_project(joints[:, jt_idx], focal_length, center)
    conf = torch.zeros(n, K, dtype=dt, device=dev)
    conf[:, kp_idx] = (rnd(n, len(kp_idx)) >= drop_prob).to(dt)
    noisy = clean + noise_px * rndn(n, K, 2)
    kps = torch.cat([noisy, conf[..., None]], -1)
    return SyntheticPeople(kps, clean, betas, body_pose, orient, transl, joints[:, :model.num_joints], center,
                           (H, W))
