"""The SMPL body model (Loper et al. 2015, "SMPL: A Skinned Multi-Person Linear Model") as pure functions.

The model is an immutable container (:class:`SMPLModel`) of plain tensors; :func:`smpl_forward` maps
shape and pose parameters to a posed mesh in four numbered steps, with the einsum index formula of each
written beside it (the layout of ``smplx/lbs.py``, plus input checks):

1. shape blend shapes    ``v_shaped[n, v, k] = v_template[v, k] + sum_s betas[n, s] * shapedirs[v, k, s]``
2. rest joints           ``J[n, j, k] = sum_v J_regressor[j, v] * v_shaped[n, v, k]``
3. pose blend shapes     ``v_posed[n, v, k] = v_shaped[n, v, k] + sum_p f[n, p] * posedirs[v, k, p]`` with
   the 207-dim feature ``f = vec(R_1 - I, ..., R_23 - I)`` of the non-root joint rotations
4. kinematic chain + linear blend skinning
   ``G_j = G_parent(j) [R_j | J_j - J_parent(j)]``, ``A_j = G_j [I | -J_j]`` and
   ``verts[n, v] = sum_j W[v, j] * A_j[n] [v_posed[n, v]; 1]``.

Conventions: column-vector rotations (``R @ x``) as in SMPL and smplx; axis-angle vectors (Rodrigues);
metres; the model's +Y is up and it faces +Z. Dimension names are those of :mod:`lib3d.bodies`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from lib3d._checks import check_shape, check_tensor
from lib3d.geometry import axis_angle_to_matrix
from lib3d.geometry.rotations import _rodrigues_factors, hat

__all__ = [
    "SMPL_JOINT_NAMES",
    "SMPL_PARENTS",
    "SMPLModel",
    "SMPLOutput",
    "batch_rodrigues",
    "kinematic_levels",
    "smpl_forward",
    "smpl_joint_jacobian",
]

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
"""The 24 SMPL joints in model order."""

SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                                 20, 21)
"""Parent of each SMPL joint (the first row of SMPL's ``kintree_table``; -1 for the root)."""


def batch_rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula), smooth at zero.

    ``R = I + sin(t)/t [r]_x + (1 - cos t)/t^2 [r]_x^2`` with ``t = |r|`` (delegates to
    :func:`lib3d.geometry.axis_angle_to_matrix` with ``fast=True``, which uses Taylor series near zero).

    Args:
        rotvec: (..., 3) float axis-angle vectors (radians).

    Returns:
        (..., 3, 3) rotation matrices (column-vector convention, ``R @ x``).
    """
    return axis_angle_to_matrix(rotvec, fast=True)


def kinematic_levels(parents: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Group the joints of a kinematic tree by depth (the root is depth 0).

    The parent of every joint at depth ``d`` is at depth ``d - 1``, so the chain can be composed one level
    at a time: one batched matrix product per level instead of one per joint.

    Args:
        parents: parent index of each joint, -1 for the root(s); parents precede their children.

    Returns:
        tuple of levels, each a tuple of joint indices in increasing order.
    """
    depth: list[int] = []
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError(f"parents must list each parent before its child, got parents[{j}] = {p}")
        depth.append(0 if p < 0 else depth[p] + 1)
    return tuple(tuple(j for j, d in enumerate(depth) if d == lvl) for lvl in range(max(depth) + 1))


@dataclasses.dataclass(frozen=True, eq=False)
class SMPLModel:
    """An SMPL-layout body model: immutable, plain tensors (all on one device, one float dtype).

    Attributes:
        v_template: (V, 3) float template vertices in the rest pose (metres).
        shapedirs: (V, 3, S) float shape blend shapes (principal directions).
        posedirs: (V, 3, 9 * (J - 1)) float pose blend shapes (207 columns for SMPL).
        J_regressor: (J, V) float joint regressor applied to the shaped template.
        parents: (J,) long kinematic tree, -1 at the root.
        lbs_weights: (V, J) float skinning weights (rows sum to 1).
        faces: (F, 3) long triangle indices.
        joint_names: the J joint names.
        extra_regressor: optional (E, V) float regressor for extra joints (head top, nose, toes, ...),
            applied to the posed vertices.
        extra_joint_names: the E extra joint names.
        description: free text (``"synthetic ..."`` for the embedded procedural body).

    The blend-shape matrices in the layout the forward pass needs (``(S + P, 3V)``) and the joint
    regressor folded into the shape space (``J = J_template + betas @ J_shapedirs``) are computed once at
    construction.
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    parents: torch.Tensor
    lbs_weights: torch.Tensor
    faces: torch.Tensor
    joint_names: tuple[str, ...] = SMPL_JOINT_NAMES
    extra_regressor: torch.Tensor | None = None
    extra_joint_names: tuple[str, ...] = ()
    description: str = ""
    # derived (computed in __post_init__, mapped along by .to())
    blend_dirs: torch.Tensor = dataclasses.field(init=False, repr=False)
    v_template_t: torch.Tensor = dataclasses.field(init=False, repr=False)
    lbs_weights_t: torch.Tensor = dataclasses.field(init=False, repr=False)
    J_template: torch.Tensor = dataclasses.field(init=False, repr=False)
    J_shapedirs: torch.Tensor = dataclasses.field(init=False, repr=False)
    extra_support: torch.Tensor | None = dataclasses.field(init=False, repr=False)
    levels: tuple = dataclasses.field(init=False, repr=False)
    chain: tuple = dataclasses.field(init=False, repr=False)
    ancestors: torch.Tensor = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        V = self.v_template.shape[0] if isinstance(self.v_template, torch.Tensor) else None
        sizes = check_shape("v_template", self.v_template, ("V", 3), dtype="float")
        check_shape("shapedirs", self.shapedirs, ("V", 3, "S"), sizes, dtype="float")
        check_shape("J_regressor", self.J_regressor, ("J", "V"), sizes, dtype="float")
        check_shape("parents", self.parents, ("J",), sizes, dtype="int")
        check_shape("lbs_weights", self.lbs_weights, ("V", "J"), sizes, dtype="float")
        check_shape("posedirs", self.posedirs, ("V", 3, 9 * (sizes["J"] - 1)), sizes, dtype="float")
        check_shape("faces", self.faces, ("F", 3), dtype="int")
        if len(self.joint_names) != sizes["J"]:
            raise ValueError(f"joint_names must have J={sizes['J']} names, got {len(self.joint_names)}")
        if self.extra_regressor is not None:
            check_shape("extra_regressor", self.extra_regressor, ("E", V), dtype="float")
            if len(self.extra_joint_names) != self.extra_regressor.shape[0]:
                raise ValueError(f"extra_joint_names must have E={self.extra_regressor.shape[0]} names, got "
                                 f"{len(self.extra_joint_names)}")
        elif self.extra_joint_names:
            raise ValueError("extra_joint_names given without extra_regressor")
        dt = self.v_template.dtype
        for name in ("shapedirs", "posedirs", "J_regressor", "lbs_weights", "extra_regressor"):
            t = getattr(self, name)
            if t is not None and t.dtype != dt:
                raise TypeError(f"{name} must have the dtype of v_template ({dt}), got {t.dtype}")
        S = sizes["S"]
        Vn, J = sizes["V"], sizes["J"]
        setf = object.__setattr__
        # (S + P, 3V): one GEMM gives shape + pose blend shapes, columns in (k, v) order (the (3, V) layout)
        setf(self, "blend_dirs", torch.cat([self.shapedirs.permute(1, 0, 2).reshape(3 * Vn, S).T,
                                            self.posedirs.permute(1, 0, 2).reshape(3 * Vn, -1).T], 0).contiguous())
        setf(self, "v_template_t", self.v_template.T.contiguous())
        setf(self, "lbs_weights_t", self.lbs_weights.T.contiguous())
        # J_regressor folded into the shape space (exact: the regressor is linear)
        setf(self, "J_template", self.J_regressor @ self.v_template)
        setf(self, "J_shapedirs", torch.einsum("jv,vks->sjk", self.J_regressor, self.shapedirs)
             .reshape(S, J * 3).contiguous())
        if self.extra_regressor is not None:
            support = torch.nonzero(self.extra_regressor.abs().sum(0) > 0).flatten()
            setf(self, "extra_support", support)
        else:
            setf(self, "extra_support", None)
        par = tuple(int(p) for p in self.parents.tolist())
        levels = kinematic_levels(par)
        setf(self, "levels", levels)
        # index tensors of the level-by-level chain: level 0 joints, then per level (joints, parent positions
        # in the previous level), then the inverse permutation back to joint order
        dev = self.parents.device
        chain = [torch.tensor(levels[0], dtype=torch.long, device=dev)]
        for prev, lvl in zip(levels[:-1], levels[1:]):
            chain.append(torch.tensor(lvl, dtype=torch.long, device=dev))
            chain.append(torch.tensor([prev.index(par[j]) for j in lvl], dtype=torch.long, device=dev))
        order = [j for lvl in levels for j in lvl]
        inv = [0] * len(order)
        for i, j in enumerate(order):
            inv[j] = i
        chain.append(torch.tensor(inv, dtype=torch.long, device=dev))
        setf(self, "chain", tuple(chain))
        # ancestors[j, k]: k is j or one of its ancestors (the joints whose rotation moves joint j)
        anc = torch.zeros(J, J, dtype=torch.bool)
        for j, p in enumerate(par):
            if p >= 0:
                anc[j] = anc[p]
            anc[j, j] = True
        setf(self, "ancestors", anc.to(dev))

    # ---------------------------------------------------------------- sizes
    @property
    def num_verts(self) -> int:
        """V."""
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        """J (24 for SMPL)."""
        return self.J_regressor.shape[0]

    @property
    def num_betas(self) -> int:
        """S, the number of shape directions the model holds."""
        return self.shapedirs.shape[-1]

    @property
    def all_joint_names(self) -> tuple[str, ...]:
        """The J model joints followed by the E extra joints (the order of ``SMPLOutput.joints``)."""
        return tuple(self.joint_names) + tuple(self.extra_joint_names)

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SMPLModel:
        """A new model with ``fn`` applied to every tensor (derived ones too, without recomputing them)."""
        new = object.__new__(SMPLModel)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = fn(v)
            elif isinstance(v, tuple) and v and all(isinstance(x, torch.Tensor) for x in v):
                v = tuple(fn(x) for x in v)
            object.__setattr__(new, f.name, v)
        return new

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SMPLModel:
        """The model on ``device`` and/or with float tensors cast to ``dtype`` (index tensors keep theirs)."""

        def fn(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point() and dtype is not None:
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return self.map_tensors(fn)

    def with_betas(self, num_betas: int) -> SMPLModel:
        """The model keeping only the first ``num_betas`` shape directions."""
        if not 0 < num_betas <= self.num_betas:
            raise ValueError(f"num_betas must be in [1, {self.num_betas}], got {num_betas}")
        return dataclasses.replace(self, shapedirs=self.shapedirs[..., :num_betas])


class SMPLOutput(NamedTuple):
    """Result of :func:`smpl_forward`.

    Attributes:
        vertices: (N, V, 3) posed vertices, or None when ``return_verts=False``.
        joints: (N, J + E, 3) posed joints: the J model joints then the E extra joints.
        rot_mats: (N, J, 3, 3) local joint rotations (root first).
        v_shaped: (N, V, 3) shaped template in the rest pose (only with ``return_v_shaped=True``).
    """

    vertices: torch.Tensor | None
    joints: torch.Tensor
    rot_mats: torch.Tensor
    v_shaped: torch.Tensor | None = None


def _is_axis_angle(pose: torch.Tensor | None, n_joints: int) -> bool:
    """True for None or an axis-angle pose of shape (N, 3n) or (N, n, 3)."""
    if pose is None:
        return True
    if not isinstance(pose, torch.Tensor):
        return False
    return (pose.dim() == 2 and pose.shape[1] == 3 * n_joints) or (pose.dim() == 3
                                                                    and tuple(pose.shape[1:]) == (n_joints, 3))


def _pose_to_rotmats(name: str, pose: torch.Tensor, n_joints: int) -> torch.Tensor:
    """(N, 3*n) / (N, n, 3) axis-angle or (N, n, 3, 3) matrices (also (N, 3, 3) for n = 1) -> (N, n, 3, 3)."""
    check_tensor(name, pose, dtype="float")
    if pose.dim() == 2 and pose.shape[1] == 3 * n_joints:
        return batch_rodrigues(pose.reshape(pose.shape[0], n_joints, 3))
    if pose.dim() == 3 and pose.shape[1:] == (n_joints, 3):
        return batch_rodrigues(pose)
    if pose.dim() == 4 and pose.shape[1:] == (n_joints, 3, 3):
        return pose
    if n_joints == 1 and pose.dim() == 3 and pose.shape[1:] == (3, 3):
        return pose[:, None]
    forms = f"(N, {3 * n_joints}) or (N, {n_joints}, 3) axis-angle, or (N, {n_joints}, 3, 3) matrices"
    if n_joints == 1:
        forms += ", or (N, 3, 3)"
    raise ValueError(f"{name} must have shape {forms}, got {tuple(pose.shape)}")


def smpl_forward(
    model: SMPLModel,
    betas: torch.Tensor | None = None,
    body_pose: torch.Tensor | None = None,
    global_orient: torch.Tensor | None = None,
    transl: torch.Tensor | None = None,
    *,
    return_verts: bool = True,
    return_v_shaped: bool = False,
) -> SMPLOutput:
    """Pose and shape an SMPL-layout model: shape blend shapes, pose blend shapes, kinematic chain, LBS.

    Args:
        model: the body model (V vertices, J joints, S shape directions).
        betas: (N, S') float shape coefficients, any S' <= S (missing ones are zero); (1, S') broadcasts
            over the batch. None: zeros.
        body_pose: (N, 3(J-1)) or (N, J-1, 3) axis-angle (radians) or (N, J-1, 3, 3) rotation matrices of
            the non-root joints relative to their parents. None: zeros (the rest pose).
        global_orient: (N, 3) axis-angle or (N, 3, 3) / (N, 1, 3, 3) rotation of the root. None: identity.
        transl: (N, 3) float translation added to vertices and joints. None: zero.
        return_verts: False skips the mesh (only the joints and the few vertices the extra joints need
            are skinned: fast inside fitting loops).
        return_v_shaped: also return the shaped rest-pose template.

    Returns:
        SMPLOutput with vertices (N, V, 3), joints (N, J + E, 3), rot_mats (N, J, 3, 3).

    Raises:
        ValueError / TypeError: on wrong shapes, dtypes or devices, naming the argument.

    Example:
        >>> model = synthetic_smpl_model()
        >>> out = smpl_forward(model, betas=torch.zeros(2, 10), body_pose=torch.zeros(2, 69))
        >>> out.vertices.shape, out.joints.shape
    """
    dtype, device = model.dtype, model.device
    J, S = model.num_joints, model.num_betas
    args = {"betas": betas, "body_pose": body_pose, "global_orient": global_orient, "transl": transl}
    batch = {name: t.shape[0] for name, t in args.items()
             if isinstance(t, torch.Tensor) and t.dim() >= 2 and not (name == "betas" and t.shape[0] == 1)}
    if len(set(batch.values())) > 1:
        raise ValueError(f"betas, body_pose, global_orient and transl must share the batch size N, got {batch}")
    N = next(iter(batch.values())) if batch else (betas.shape[0] if isinstance(betas, torch.Tensor)
                                                  and betas.dim() == 2 else 1)
    for name, t in args.items():
        if t is None:
            continue
        check_tensor(name, t, dtype="float")
        if t.dtype != dtype or t.device != device:
            raise TypeError(f"{name} must have the model's dtype {dtype} and device {device}, got {t.dtype} "
                            f"on {t.device}")

    # 0. parameters -> rotation matrices (N, J, 3, 3)
    if (global_orient is not None or body_pose is not None) and _is_axis_angle(global_orient, 1) \
            and _is_axis_angle(body_pose, J - 1):
        # both axis-angle (or absent): one Rodrigues call for all J joints
        parts = []
        for name, t, n in (("global_orient", global_orient, 1), ("body_pose", body_pose, J - 1)):
            if t is None:
                parts.append(torch.zeros(N, n, 3, dtype=dtype, device=device))  # exp(0) = I exactly
            else:
                check_tensor(name, t, dtype="float")
                parts.append(t.reshape(N, n, 3))
        rot_mats = batch_rodrigues(torch.cat(parts, 1))
    else:
        if body_pose is None:
            body_rot = torch.eye(3, dtype=dtype, device=device).expand(N, J - 1, 3, 3)
        else:
            body_rot = _pose_to_rotmats("body_pose", body_pose, J - 1)
        if global_orient is None:
            root_rot = torch.eye(3, dtype=dtype, device=device).expand(N, 1, 3, 3)
        else:
            root_rot = _pose_to_rotmats("global_orient", global_orient, 1)
        rot_mats = torch.cat([root_rot, body_rot], 1)
    if betas is None:
        betas_full = torch.zeros(N, S, dtype=dtype, device=device)
    else:
        check_shape("betas", betas, (None, None))
        if betas.shape[1] > S:
            raise ValueError(f"betas must have at most S={S} columns (the model's shape directions), got "
                             f"{tuple(betas.shape)}")
        betas_full = betas if betas.shape[1] == S else nn.functional.pad(betas, (0, S - betas.shape[1]))
        betas_full = betas_full.expand(N, S)
    if transl is not None:
        check_shape("transl", transl, (N, 3))

    # 1-2. rest joints, linear in the betas: J[n, j, k] = J_template[j, k] + sum_s betas[n, s] Jdirs[s, j, k]
    joints_rest = torch.addmm(model.J_template.reshape(1, J * 3), betas_full, model.J_shapedirs).reshape(N, J, 3)

    # 3. blend shapes in one GEMM: v_posed[n, (v, k)] = v_template + [betas | f][n, :] @ blend_dirs
    pose_feature = (rot_mats[:, 1:] - torch.eye(3, dtype=dtype, device=device)).reshape(N, (J - 1) * 9)
    feats = torch.cat([betas_full, pose_feature], 1)

    # 4a. kinematic chain, one batched product per tree level: G_j = G_parent [R_j | J_j - J_parent]
    G = _kinematic_chain(model, rot_mats, joints_rest)  # (N, J, 3, 4)
    posed_joints = G[..., 3]
    # A_j = G_j [I | -J_j]: the rest-to-posed transform of joint j
    A_t = posed_joints - (G[..., :3] @ joints_rest[..., None])[..., 0]
    # A12[n, :, j] = (R[:, 0], R[:, 1], R[:, 2], t): rows grouped per input coordinate
    A12 = torch.cat([G[..., :3].transpose(-1, -2).reshape(N, J, 9), A_t], -1).transpose(1, 2).contiguous()

    # 3 + 4b. blend shapes in one GEMM, in the (N, 3, V) layout:
    #   v_posed[n, k, v] = v_template[v, k] + sum_q [betas | f][n, q] * blend_dirs[q, (k, v)]
    #   verts[n, :, v] = sum_j W[v, j] A_j[n] [v_posed[n, :, v]; 1]
    vertices = v_shaped = None
    V = model.num_verts
    if return_verts or return_v_shaped:
        if return_verts:
            v_posed = torch.addmm(model.v_template_t.reshape(1, V * 3), feats, model.blend_dirs).view(N, 3, V)
            vertices = _skin(model.lbs_weights_t, A12, v_posed).transpose(1, 2).contiguous()
        if return_v_shaped:
            v_shaped = torch.addmm(model.v_template_t.reshape(1, V * 3), betas_full,
                                   model.blend_dirs[:S]).view(N, 3, V).transpose(1, 2).contiguous()
    joints = posed_joints
    if model.extra_regressor is not None:
        if vertices is not None:
            verts_for_extra, reg = vertices, model.extra_regressor
        else:  # skin only the support of the extra regressor
            sup = model.extra_support
            ns = sup.numel()
            cols = (torch.arange(3, device=device)[:, None] * V + sup).reshape(-1)
            vt = model.v_template_t[:, sup].reshape(1, 3 * ns)
            v_posed_s = torch.addmm(vt, feats, model.blend_dirs.index_select(1, cols)).view(N, 3, ns)
            verts_for_extra = _skin(model.lbs_weights_t[:, sup], A12, v_posed_s).transpose(1, 2)
            reg = model.extra_regressor[:, sup]
        # extra[n, e, k] = sum_v R_extra[e, v] * verts[n, v, k]
        extra = torch.einsum("ev,nvk->nek", reg, verts_for_extra)
        joints = torch.cat([joints, extra], 1)
    if transl is not None:
        joints = joints + transl[:, None]
        if vertices is not None:
            vertices = vertices + transl[:, None]
    return SMPLOutput(vertices, joints, rot_mats, v_shaped)


def _kinematic_chain(model: SMPLModel, rot_mats: torch.Tensor, joints_rest: torch.Tensor) -> torch.Tensor:
    """World transforms (N, J, 3, 4) of every joint, composed one tree level at a time.

    ``G_j = G_parent(j) [R_j | J_j - J_parent(j)]``; the parents of level ``d`` all lie in level ``d - 1``,
    so each level is one gather and one batched 4x4 product.
    """
    N, J = rot_mats.shape[:2]
    rel = joints_rest - joints_rest.index_select(1, model.parents.clamp(min=0))
    rel = torch.cat([joints_rest[:, :1], rel[:, 1:]], 1)
    local = torch.cat([rot_mats, rel[..., None]], -1)  # (N, J, 3, 4)
    chain = model.chain
    prev = local.index_select(1, chain[0])
    outs = [prev]
    if len(chain) > 2:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot_mats.dtype, device=rot_mats.device)
        local4 = torch.cat([local, bottom.expand(N, J, 1, 4)], -2)  # (N, J, 4, 4)
        for lvl in range(1, (len(chain) - 1) // 2 + 1):
            joints_l, parent_pos = chain[2 * lvl - 1], chain[2 * lvl]
            prev = prev.index_select(1, parent_pos) @ local4.index_select(1, joints_l)
            outs.append(prev)
    return torch.cat(outs, 1).index_select(1, chain[-1])


_SKIN_CHUNK_BYTES = 16 << 20  # per chunk of the (n, 12, V) blend: few, large ops (fewer thread hand-offs)


def _skin(weights_t: torch.Tensor, A12: torch.Tensor, v_posed_t: torch.Tensor, chunk_bytes: int | None = None
          ) -> torch.Tensor:
    """Linear blend skinning in the (N, 3, V) layout.

    ``T[n, :, v] = sum_j A12[n, :, j] W[v, j]`` then ``x' = T_x x + T_y y + T_z z + T_t``, where the
    12 rows of ``A12[n, :, j]`` are the columns of the 3x4 transform ``A_j``. One GEMM per chunk of the
    batch keeps the (n, 12, V) blend in cache.

    Args:
        weights_t: (J, V) transposed skinning weights.
        A12: (N, 12, J) joint transforms.
        v_posed_t: (N, 3, V) rest-pose vertices with blend shapes.

    Returns:
        (N, 3, V) skinned vertices.
    """
    N = A12.shape[0]
    V = weights_t.shape[1]
    chunk_bytes = chunk_bytes or _SKIN_CHUNK_BYTES
    n = max(1, min(N, chunk_bytes // max(1, V * 12 * A12.element_size())))
    outs = []
    for A, vp in zip(A12.split(n), v_posed_t.split(n)):  # split: one cheap backward for all chunks
        T = (A.reshape(-1, A.shape[-1]) @ weights_t).view(A.shape[0], 12, V)  # one GEMM: (n, 12, V)
        if torch.is_grad_enabled() and (T.requires_grad or vp.requires_grad):
            # one product and one sum: cheap backward (slicing T would allocate a zero-filled T per slice)
            m = T.shape[0]
            vh = torch.cat([vp, torch.ones_like(vp[:, :1])], 1)  # (n, 4, V)
            outs.append((T.view(m, 4, 3, V) * vh[:, :, None]).sum(1))
            continue
        out = torch.addcmul(T[:, 9:12], T[:, 0:3], vp[:, 0:1])
        out = torch.addcmul(out, T[:, 3:6], vp[:, 1:2])
        outs.append(torch.addcmul(out, T[:, 6:9], vp[:, 2:3]))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def _rotations_and_left_jacobians(rotvec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R = exp([w]_x)`` and the left Jacobian ``J_l(w)`` of SO(3), both (..., 3, 3), from one set of
    Rodrigues factors ``a = sin t / t``, ``b = (1 - cos t) / t^2``, ``c = (t - sin t) / t^3``:

    ``R = I + a [w]_x + b [w]_x^2`` and ``J_l = I + b [w]_x + c [w]_x^2``, with
    ``exp(w + d) = exp(J_l(w) d) exp(w)`` to first order, i.e. ``dR/dw_l R^T = [J_l e_l]_x``.
    """
    theta2 = (rotvec * rotvec).sum(-1)
    a, b, c = _rodrigues_factors(theta2, 1e-4)
    K = hat(rotvec)
    # [w]_x^2 = w w^T - t^2 I
    outer = rotvec[..., :, None] * rotvec[..., None, :]
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    R = (1.0 - b * theta2)[..., None, None] * eye + a[..., None, None] * K + b[..., None, None] * outer
    Jl = (1.0 - c * theta2)[..., None, None] * eye + b[..., None, None] * K + c[..., None, None] * outer
    return R, Jl


def smpl_joint_jacobian(
    model: SMPLModel,
    betas: torch.Tensor,
    body_pose: torch.Tensor,
    global_orient: torch.Tensor,
    transl: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed joints and their Jacobian w.r.t. all parameters, in closed form (no autograd).

    The parameters are packed per person as ``q = [betas (S'), body_pose (3(J-1)), global_orient (3),
    transl (3)]`` (the layout SMPLify's optimiser works in). With ``x_j`` the posed joints, ``W_j`` the
    world rotations and ``omega_(k, l) = W_parent(k) J_l(theta_k) e_l`` the world-frame rotation axis of
    pose coordinate ``(k, l)`` (``J_l`` the left Jacobian of SO(3)):

    - pose: ``dx_j / dtheta_(k, l) = [k is j or an ancestor of j] omega_(k, l) x (x_j - x_k)``;
    - shape: ``dx_j / dbetas = sum over the path root..j of W_parent(m) d(J_m - J_parent(m)) / dbetas``
      (the rest joints are linear in the betas);
    - translation: the identity;
    - extra joints (regressed from the skinned vertices ``v' = sum_j w_vj (W_j (v_posed - J_j) + x_j)``):
      the same rules per vertex plus the pose blend shapes, ``sum_j w_vj W_j dv_posed / dq``.

    Args:
        model: the body model (J joints, E extra joints, S shape directions).
        betas: (N, S') float, S' <= S.
        body_pose: (N, 3(J-1)) float axis-angle.
        global_orient: (N, 3) float axis-angle.
        transl: (N, 3) float.

    Returns:
        ``(joints (N, J + E, 3), jacobian (N, J + E, 3, S' + 3J + 3))``, joints as :func:`smpl_forward`'s.

    Raises:
        ValueError / TypeError: on wrong shapes, dtypes or devices.
    """
    dtype, device = model.dtype, model.device
    J, S = model.num_joints, model.num_betas
    sizes = check_shape("betas", betas, ("N", None), dtype="float")
    check_shape("body_pose", body_pose, ("N", 3 * (J - 1)), sizes, dtype="float")
    check_shape("global_orient", global_orient, ("N", 3), sizes, dtype="float")
    check_shape("transl", transl, ("N", 3), sizes, dtype="float")
    for name, t in (("betas", betas), ("body_pose", body_pose), ("global_orient", global_orient), ("transl", transl)):
        if t.dtype != dtype or t.device != device:
            raise TypeError(f"{name} must have the model's dtype {dtype} and device {device}, got {t.dtype} "
                            f"on {t.device}")
    N, Sb = betas.shape
    if Sb > S:
        raise ValueError(f"betas must have at most S={S} columns, got {tuple(betas.shape)}")
    theta = torch.cat([global_orient[:, None], body_pose.reshape(N, J - 1, 3)], 1)  # (N, J, 3), root first
    rot, Jl = _rotations_and_left_jacobians(theta)
    dirs = model.J_shapedirs[:Sb].reshape(Sb, J, 3)  # d J_rest / d betas
    joints_rest = model.J_template + torch.einsum("ns,sjk->njk", betas, dirs)
    G = _kinematic_chain(model, rot, joints_rest)  # (N, J, 3, 4)
    Wr, x = G[..., :3], G[..., 3]  # world rotations, posed joints
    par = model.parents.clamp(min=0)
    eye = torch.eye(3, dtype=dtype, device=device)
    W_par = torch.cat([eye.expand(N, 1, 3, 3), Wr.index_select(1, par[1:])], 1)  # (N, J, 3, 3)
    anc = model.ancestors.to(dtype)  # (J, J): anc[j, k] = 1 if k is j or an ancestor of j
    # pose: Omega[n, k] = W_parent(k) J_l(theta_k) (columns: the axes omega_(k, l))
    Omega = W_par @ Jl
    # dx_j/dtheta_k = anc[j, k] ([x_k]_x - [x_j]_x) Omega_k
    Bk = hat(x) @ Omega  # (N, J, 3, 3)
    d_pose = anc[None, :, :, None, None] * (Bk[:, None] - torch.einsum("njab,nkbl->njkal", hat(x), Omega))
    # shape: dx_j/dbetas = sum_m anc[j, m] W_parent(m) d rel_m, rel_m = J_m - J_parent(m) (rel_0 = J_0)
    drel = dirs - dirs[:, par]
    drel = torch.cat([dirs[:, :1], drel[:, 1:]], 1)  # (Sb, J, 3)
    Vm = torch.einsum("nmab,smb->nmas", W_par, drel)  # (N, J, 3, Sb)
    d_beta = torch.einsum("jm,nmas->njas", anc, Vm)
    jac = _pack_joint_jacobian(d_beta, d_pose.permute(0, 1, 3, 2, 4).reshape(N, J, 3, 3 * J), eye, N, J)
    joints = x
    if model.extra_regressor is not None:
        sup = model.extra_support
        ns = sup.numel()
        w = model.lbs_weights[sup]  # (ns, J)
        feats_pose = (rot[:, 1:] - eye).reshape(N, (J - 1) * 9)
        shp = model.shapedirs[sup][..., :Sb]  # (ns, 3, Sb)
        pdirs = model.posedirs[sup]  # (ns, 3, 9 (J - 1))
        v_posed = model.v_template[sup] + torch.einsum("ns,vks->nvk", betas, shp) \
            + torch.einsum("np,vkp->nvk", feats_pose, pdirs)  # (N, ns, 3)
        # y[n, v, j] = W_j (v_posed - J_j) + x_j: the vertex moved by joint j alone
        y = torch.einsum("njab,nvjb->nvja", Wr, v_posed[:, :, None] - joints_rest[:, None]) + x[:, None]
        verts = torch.einsum("vj,nvja->nva", w, y)
        wa = w @ anc  # (ns, J): wa[v, k] = sum_j w_vj anc[j, k]
        Yk = torch.einsum("vj,jk,nvja->nvka", w, anc, y) - wa[None, :, :, None] * x[:, None]  # (N, ns, J, 3)
        dv_pose = -hat(Yk) @ Omega[:, None]  # (N, ns, J, 3, 3): omega x (Y - a x_k)
        M = torch.einsum("vj,njab->nvab", w, Wr)  # (N, ns, 3, 3) blended rotations
        # pose blend shapes: d(R_k - I)/dtheta_(k, l) = [J_l(theta_k) e_l]_x R_k, for k >= 1
        dR = hat(Jl[:, 1:].transpose(-1, -2)) @ rot[:, 1:, None]  # (N, J-1, 3 (l), 3, 3)
        # dv_posed[n, v, c, k, l] = sum_(a, b) posedirs[v, c, (k, a, b)] dR[n, k, l, a, b]
        dvp = torch.einsum("vckp,nklp->nvckl", pdirs.reshape(ns, 3, J - 1, 9), dR.reshape(N, J - 1, 3, 9))
        dv_pose = torch.cat([dv_pose[:, :, :1], dv_pose[:, :, 1:] + torch.einsum("nvac,nvckl->nvkal", M, dvp)], 2)
        # shape: M dv_posed/dbetas - sum_j w_vj W_j dJ_j/dbetas + sum_j w_vj dx_j/dbetas
        dv_beta = torch.einsum("nvab,vbs->nvas", M, shp) \
            - torch.einsum("vj,njab,sjb->nvas", w, Wr, dirs) + torch.einsum("vj,njas->nvas", w, d_beta)
        jac_v = _pack_joint_jacobian(dv_beta, dv_pose.permute(0, 1, 3, 2, 4).reshape(N, ns, 3, 3 * J), eye, N, ns)
        reg = model.extra_regressor[:, sup]  # (E, ns)
        joints = torch.cat([joints, torch.einsum("ev,nva->nea", reg, verts)], 1)
        jac = torch.cat([jac, torch.einsum("ev,nvaq->neaq", reg, jac_v)], 1)
    return joints + transl[:, None], jac


def _pack_joint_jacobian(d_beta: torch.Tensor, d_theta: torch.Tensor, eye: torch.Tensor, N: int, P: int
                         ) -> torch.Tensor:
    """Columns in the packed order [betas, body pose, global orient, transl]: (N, P, 3, S' + 3J + 3) from
    ``d_beta (N, P, 3, S')`` and ``d_theta (N, P, 3, 3J)`` (root first)."""
    return torch.cat([d_beta, d_theta[..., 3:], d_theta[..., :3], eye.expand(N, P, 3, 3)], -1)

