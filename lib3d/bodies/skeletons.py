"""2D keypoint skeletons (LSP-14, COCO-17, OpenPose BODY_25) mapped to the joints of an SMPL-layout model.

Each skeleton lists its keypoints in the detector's order and, for each, the name of the model joint it is
compared with (one of the 24 SMPL joints or an extra joint such as ``head_top`` or ``nose``; ``None``
when the keypoint has no counterpart and is ignored). SMPLify's own LSP mapping is kept: the 12 limb
joints to SMPL joints, the neck ignored (LSP's neck is not SMPL's), the head top to a head vertex.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lib3d.bodies.smpl import SMPLModel

__all__ = ["BODY25", "COCO17", "LSP14", "SKELETONS", "Skeleton", "get_skeleton", "skeleton_model_indices"]


class Skeleton(NamedTuple):
    """A named 2D keypoint set.

    Attributes:
        name: ``"lsp"``, ``"coco"`` or ``"body25"``.
        keypoints: the K keypoint names in detector order.
        model_joints: for each keypoint the model joint name it maps to, or None (unused).
        torso: names of (right shoulder, left shoulder, right hip, left hip) keypoints, used to initialise
            the camera by similar triangles and to test the shoulder width.
    """

    name: str
    keypoints: tuple[str, ...]
    model_joints: tuple[str | None, ...]
    torso: tuple[str, str, str, str]


LSP14 = Skeleton(
    "lsp",
    ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
     "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"),
    ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
     "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", None, "head_top"),
    ("right_shoulder", "left_shoulder", "right_hip", "left_hip"),
)
"""Leeds Sports Pose order (SMPLify's ``est_joints``); SMPL ids 8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20."""

COCO17 = Skeleton(
    "coco",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle"),
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle"),
    ("right_shoulder", "left_shoulder", "right_hip", "left_hip"),
)

BODY25 = Skeleton(
    "body25",
    ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
     "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
     "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
     "right_small_toe", "right_heel"),
    ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
     "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
     "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
     "right_small_toe", "right_heel"),
    ("right_shoulder", "left_shoulder", "right_hip", "left_hip"),
)

SKELETONS = {"lsp": LSP14, "coco": COCO17, "body25": BODY25}


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """The skeleton called ``name`` (``"lsp"``, ``"coco"``, ``"body25"``) or ``name`` itself."""
    if isinstance(name, Skeleton):
        return name
    if name not in SKELETONS:
        raise ValueError(f"skeleton must be one of {list(SKELETONS)}, got {name!r}")
    return SKELETONS[name]


def skeleton_model_indices(skeleton: Skeleton, model: SMPLModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each used keypoint is in ``SMPLOutput.joints`` of ``model``.

    Returns:
        (keypoint_idx (K',) long, joint_idx (K',) long): keypoint ``keypoint_idx[i]`` is compared with
        model joint ``joint_idx[i]``; unmapped keypoints are left out.

    Raises:
        ValueError: the skeleton needs an extra joint the model does not have.
    """
    names = model.all_joint_names
    kp, jt, missing = [], [], []
    for i, j in enumerate(skeleton.model_joints):
        if j is None:
            continue
        if j not in names:
            missing.append(j)
            continue
        kp.append(i)
        jt.append(names.index(j))
    if missing:
        raise ValueError(f"skeleton {skeleton.name!r} needs model joints {missing}, which the model lacks "
                         f"(it has {list(names)}); give the model an extra_regressor for them")
    dev = model.device
    return torch.tensor(kp, dtype=torch.long, device=dev), torch.tensor(jt, dtype=torch.long, device=dev)
