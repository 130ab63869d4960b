"""Priors of SMPLify (Bogo et al. 2016): GMM pose prior, angle prior, shape prior, interpenetration.

- :func:`gmm_pose_prior`: the max-mixture negative log-likelihood of an 8-component Gaussian mixture over
  the 69 body-pose numbers, ``E(theta) = min_g [ 0.5 (theta - mu_g)^T Sigma_g^-1 (theta - mu_g)
  - log(w_g / ((2 pi)^(d/2) sqrt|Sigma_g| / min_h sqrt|Sigma_h|)) ]`` (SMPLify's ``MaxMixtureCompletePrior``
  with its normalisation). It reads the official ``gmm_08.pkl`` (keys ``means (8, 69)``, ``covars
  (8, 69, 69)``, ``weights (8,)``) through the restricted unpickler, or uses an embedded default.
- :func:`angle_prior`: ``sum exp(2 s_i theta_i)`` over the elbow (y) and knee (x) bending angles with the
  signs of unnatural bending (SMPLify's indices 55, 58, 12, 15 of the 72-dim pose).
- :func:`shape_prior`: ``|beta|^2``.
- :func:`interpenetration_penalty`: the body as spheres along capsules on the bones; squared overlap of
  every pair of spheres that do not already touch in the rest pose.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lib3d._checks import check_shape
from lib3d.bodies.model_io import safe_load_pickle
from lib3d.bodies.smpl import SMPL_JOINT_NAMES, SMPLModel, smpl_forward

__all__ = [
    "CAPSULE_BONES",
    "BodySpheres",
    "GMMPrior",
    "angle_prior",
    "body_spheres",
    "default_gmm_prior",
    "gmm_from_arrays",
    "gmm_pose_prior",
    "interpenetration_penalty",
    "load_gmm_prior",
    "sample_gmm_poses",
    "shape_prior",
]


class GMMPrior(NamedTuple):
    """A Gaussian mixture over body poses (G components, D = 69).

    Attributes:
        means: (G, D) component means.
        prec_chol: (G, D, D) lower Cholesky factors ``L_g`` of the precisions (``Sigma_g^-1 = L_g L_g^T``).
        cov_chol: (G, D, D) Cholesky factors of the covariances (for sampling).
        weights: (G,) mixture weights.
        log_norm: (G,) ``-log`` of SMPLify's normalised weights (the constant term of each component).
    """

    means: torch.Tensor
    prec_chol: torch.Tensor
    cov_chol: torch.Tensor
    weights: torch.Tensor
    log_norm: torch.Tensor

    def to(self, device=None, dtype=None) -> GMMPrior:
        return GMMPrior(*(t.to(device=device, dtype=dtype) for t in self))

    @property
    def mean_pose(self) -> torch.Tensor:
        """(D,) the weighted mean of the means (SMPLify's initial pose)."""
        return self.weights @ self.means


def gmm_from_arrays(means, covars, weights, *, dtype=torch.float32, device=None) -> GMMPrior:
    """Build a :class:`GMMPrior` from numpy/torch arrays ``means (G, D)``, ``covars (G, D, D)``, ``weights (G,)``."""
    mu = torch.as_tensor(np.asarray(means), dtype=torch.float64)
    cov = torch.as_tensor(np.asarray(covars), dtype=torch.float64)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    sizes = check_shape("means", mu, ("G", "D"))
    check_shape("covars", cov, ("G", "D", "D"), sizes)
    check_shape("weights", w, ("G",), sizes)
    cov_chol = torch.linalg.cholesky(cov)
    prec = torch.cholesky_inverse(cov_chol)
    prec_chol = torch.linalg.cholesky(prec)
    D = mu.shape[1]
    log_sqrdet = torch.log(torch.diagonal(cov_chol, dim1=-2, dim2=-1)).sum(-1)
    log_norm = -(torch.log(w) - (0.5 * D * math.log(2 * math.pi) + log_sqrdet - log_sqrdet.min()))
    return GMMPrior(mu, prec_chol, cov_chol, w, log_norm).to(device=device, dtype=dtype)


def load_gmm_prior(path: str | Path, *, dtype=torch.float32, device=None) -> GMMPrior:
    """Read SMPLify's ``gmm_08.pkl`` (a Python 2 pickle) with the restricted unpickler."""
    d = safe_load_pickle(path)
    if not isinstance(d, dict) or not {"means", "covars", "weights"} <= set(d):
        raise ValueError(f"{path}: expected a dict with means, covars and weights")
    return gmm_from_arrays(d["means"], d["covars"], d["weights"], dtype=dtype, device=device)


def _pose(**joint_aa) -> np.ndarray:
    p = np.zeros((23, 3))
    for name, aa in joint_aa.items():
        p[SMPL_JOINT_NAMES.index(name) - 1] = aa
    return p.reshape(-1)


def default_gmm_prior(*, dtype=torch.float32, device=None) -> GMMPrior:
    """The embedded SYNTHETIC 8-component pose prior (hand-made canonical poses with diagonal covariances).

    Used when no ``gmm_08.pkl`` is given. Components: relaxed standing, two walking phases, holding
    (elbows bent), sitting, crouching, arms raised, bending forward. Not learned from motion capture.
    """
    arms = dict(left_shoulder=(0, 0, -1.2), right_shoulder=(0, 0, 1.2), left_elbow=(0, -0.3, 0),
                right_elbow=(0, 0.3, 0))
    means = np.stack([
        _pose(**arms, left_knee=(0.1, 0, 0), right_knee=(0.1, 0, 0)),
        _pose(**arms, left_hip=(-0.45, 0, 0), right_hip=(0.3, 0, 0), left_knee=(0.3, 0, 0),
              right_knee=(0.6, 0, 0)),
        _pose(**arms, right_hip=(-0.45, 0, 0), left_hip=(0.3, 0, 0), right_knee=(0.3, 0, 0),
              left_knee=(0.6, 0, 0)),
        _pose(left_shoulder=(0, 0.3, -1.1), right_shoulder=(0, -0.3, 1.1), left_elbow=(0, -1.4, 0),
              right_elbow=(0, 1.4, 0)),
        _pose(**arms, left_hip=(-1.4, 0, 0), right_hip=(-1.4, 0, 0), left_knee=(1.5, 0, 0), right_knee=(1.5, 0, 0)),
        _pose(**arms, spine1=(0.3, 0, 0), left_hip=(-1.6, 0, 0.1), right_hip=(-1.6, 0, -0.1),
              left_knee=(2.0, 0, 0), right_knee=(2.0, 0, 0)),
        _pose(left_shoulder=(0, 0, -0.2), right_shoulder=(0, 0, 0.2), left_elbow=(0, -0.2, 0),
              right_elbow=(0, 0.2, 0)),
        _pose(**arms, spine1=(0.5, 0, 0), spine2=(0.3, 0, 0), left_hip=(-0.3, 0, 0), right_hip=(-0.3, 0, 0)),
    ])
    std = {"spine": 0.1, "neck": 0.15, "head": 0.15, "hip": 0.22, "knee": 0.25, "ankle": 0.12, "foot": 0.06,
           "collar": 0.08, "shoulder": 0.25, "elbow": 0.25, "wrist": 0.2, "hand": 0.08}
    sd = np.array([[next(v for k, v in std.items() if k in n)] * 3 for n in SMPL_JOINT_NAMES[1:]]).reshape(-1)
    covars = np.stack([np.diag(sd**2)] * 8)
    weights = np.array([0.25, 0.12, 0.12, 0.1, 0.1, 0.08, 0.08, 0.15])
    return gmm_from_arrays(means, covars, weights, dtype=dtype, device=device)


def gmm_pose_prior(body_pose: torch.Tensor, prior: GMMPrior) -> torch.Tensor:
    """Max-mixture negative log-likelihood of body poses (SMPLify's pose prior).

    ``E(theta) = min_g [0.5 |L_g^T (theta - mu_g)|^2 + log_norm_g]``

    Args:
        body_pose: (N, 69) float axis-angle body pose.
        prior: the mixture.

    Returns:
        (N,) energies.
    """
    check_shape("body_pose", body_pose, ("N", prior.means.shape[1]), dtype="float")
    diff = body_pose[:, None, :] - prior.means  # (N, G, D)
    # y[n, g, e] = sum_d diff[n, g, d] * L[g, d, e]
    y = torch.einsum("ngd,gde->nge", diff, prior.prec_chol)
    e = 0.5 * (y * y).sum(-1) + prior.log_norm
    return e.min(1).values


def sample_gmm_poses(prior: GMMPrior, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, D) poses drawn from the mixture: component by weight, then ``mu + C z`` with ``Sigma = C C^T``."""
    comp = torch.multinomial(prior.weights.double().cpu(), n, replacement=True, generator=generator)
    z = torch.randn(n, prior.means.shape[1], generator=generator, dtype=torch.float64)
    comp = comp.to(prior.means.device)
    z = z.to(device=prior.means.device, dtype=prior.means.dtype)
    return prior.means[comp] + torch.einsum("nde,ne->nd", prior.cov_chol[comp], z)


_ANGLE_IDX = (52, 55, 9, 12)  # in the 69-dim body pose: left/right elbow (y), left/right knee (x)
_ANGLE_SIGN = (1.0, -1.0, -1.0, -1.0)


def angle_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """SMPLify's angle prior on elbows and knees: ``sum_i exp(2 s_i theta_i)`` (unnatural bending grows).

    Args:
        body_pose: (N, 69) float.

    Returns:
        (N,) energies.
    """
    check_shape("body_pose", body_pose, (None, 69), dtype="float")
    sign = torch.tensor(_ANGLE_SIGN, dtype=body_pose.dtype, device=body_pose.device)
    return torch.exp(2 * body_pose[:, list(_ANGLE_IDX)] * sign).sum(-1)


def shape_prior(betas: torch.Tensor) -> torch.Tensor:
    """``|beta|^2`` per person: (N, S) -> (N,)."""
    check_shape("betas", betas, (None, None), dtype="float")
    return (betas * betas).sum(-1)


# --------------------------------------------------------------------------------------------- spheres
CAPSULE_BONES: tuple[tuple[int, int], ...] = (
    (0, 3), (3, 6), (6, 9), (9, 12), (12, 15),  # torso, neck
    (16, 18), (18, 20), (20, 22), (17, 19), (19, 21), (21, 23),  # arms, hands
    (1, 4), (4, 7), (2, 5), (5, 8), (7, 10), (8, 11),  # legs, feet
)
"""Bones (parent joint, child joint) carrying a capsule of the body approximation."""


class BodySpheres(NamedTuple):
    """Spheres along capsules: P = len(bones) * per_bone spheres.

    Attributes:
        parent, child: (P,) long joint indices of the bone each sphere sits on.
        t: (P,) float position along the bone (0 at the parent joint).
        radius: (N, P) float radii (from the shaped template).
        pairs: (Q, 2) long sphere pairs checked for interpenetration.
    """

    parent: torch.Tensor
    child: torch.Tensor
    t: torch.Tensor
    radius: torch.Tensor
    pairs: torch.Tensor


@torch.no_grad()
def body_spheres(model: SMPLModel, betas: torch.Tensor, per_bone: int = 4,
                 bones: tuple[tuple[int, int], ...] = CAPSULE_BONES) -> BodySpheres:
    """Approximate the shaped body by spheres along capsules on its bones.

    The radius of a bone's capsule is the median distance to the bone of the template vertices skinned
    mostly to its parent joint. Pairs of spheres on the same or adjacent bones, or already overlapping in
    the rest pose of the mean shape, are excluded: only new contacts are penalised.

    Args:
        model: the body model.
        betas: (N, S) shapes.
        per_bone: spheres per capsule (at t = (i + 0.5) / per_bone).

    Returns:
        BodySpheres.
    """
    check_shape("betas", betas, (None, None), dtype="float")
    dev, dt = model.device, model.dtype
    N = betas.shape[0]
    out = smpl_forward(model, torch.cat([betas, torch.zeros(1, betas.shape[1], dtype=dt, device=dev)]),
                       return_verts=False, return_v_shaped=True)
    vs, J = out.v_shaped, out.joints[:, : model.num_joints]  # (N+1, V, 3), (N+1, J, 3)
    owner = model.lbs_weights.argmax(1)
    par = torch.tensor([b[0] for b in bones], device=dev)
    chi = torch.tensor([b[1] for b in bones], device=dev)
    radii = []
    for b, (p, c) in enumerate(bones):
        ids = torch.nonzero(owner == p).flatten()
        a, e = J[:, p][:, None], J[:, c][:, None]  # (N+1, 1, 3)
        ab = e - a
        x = vs[:, ids]
        tt = (((x - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        d = (x - (a + tt[..., None] * ab)).norm(dim=-1)
        radii.append(d.median(1).values if ids.numel() else torch.full((N + 1,), 0.03, dtype=dt, device=dev))
    R = torch.stack(radii, 1)  # (N+1, B)
    t = (torch.arange(per_bone, dtype=dt, device=dev) + 0.5) / per_bone
    P = len(bones) * per_bone
    sp_par, sp_chi = par.repeat_interleave(per_bone), chi.repeat_interleave(per_bone)
    sp_t = t.repeat(len(bones))
    sp_bone = torch.arange(len(bones), device=dev).repeat_interleave(per_bone)
    sp_r = R.repeat_interleave(per_bone, 1)  # (N+1, P)
    # rest-pose centres of the mean shape (the last row)
    c = J[-1, sp_par] + sp_t[:, None] * (J[-1, sp_chi] - J[-1, sp_par])
    dist = torch.cdist(c, c)
    touching = dist < (sp_r[-1][:, None] + sp_r[-1][None, :]) * 1.2
    jp = [set(b) for b in bones]
    adj = torch.tensor([[len(jp[i] & jp[k]) > 0 or i == k for k in range(len(bones))] for i in range(len(bones))],
                       device=dev)
    excl = touching | adj[sp_bone][:, sp_bone]
    iu = torch.triu_indices(P, P, 1, device=dev)
    keep = ~excl[iu[0], iu[1]]
    return BodySpheres(sp_par, sp_chi, sp_t, sp_r[:N], iu[:, keep].T.contiguous())


def interpenetration_penalty(joints: torch.Tensor, spheres: BodySpheres) -> torch.Tensor:
    """Squared overlap of sphere pairs: ``sum_(i,k) max(0, r_i + r_k - |c_i - c_k|)^2``.

    Args:
        joints: (N, J', 3) posed joints (the first J are the model joints; only the bone ends are used).
        spheres: from :func:`body_spheres` for the same N.

    Returns:
        (N,) penalties (metres^2).
    """
    a, b = joints[:, spheres.parent], joints[:, spheres.child]
    c = a + spheres.t[:, None] * (b - a)  # (N, P, 3)
    i, k = spheres.pairs[:, 0], spheres.pairs[:, 1]
    d = (c[:, i] - c[:, k]).norm(dim=-1)
    over = torch.relu(spheres.radius[:, i] + spheres.radius[:, k] - d)
    return (over * over).sum(-1)
