"""lib3d.geometry: rotations, rigid transforms (``Transform3d``) and cameras, with PyTorch3D's names.

Dimension names used in every docstring of this subpackage:

- ``N``: batch (transforms, cameras, rotations); ``...``: any number of leading batch dimensions.
- ``P``: points per batch element.

Conventions (PyTorch3D's):

- ``Transform3d`` and cameras use **row vectors**: ``points @ M`` with the translation in the last row of
  the ``(N, 4, 4)`` matrix; world to view is ``X_view = X_world @ R + T``.
- The rotation-conversion functions (``quaternion_to_matrix``, ``so3_exp_map``, ...) return matrices for
  **column** vectors (``R @ x``), exactly as ``pytorch3d.transforms``.
- View space: +X left, +Y up, +Z into the scene (right-handed). NDC: +X left, +Y up, the shorter image
  side spans [-1, 1]. Screen: pixels, +X right, +Y down, origin at the top-left corner. ``image_size`` is
  ``(H, W)``.
- Quaternions are real part first ``(w, x, y, z)``. Angles are radians unless ``degrees=True``.
"""

from lib3d.geometry.cameras import (
    CamerasBase,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    OpenGLOrthographicCameras,
    OpenGLPerspectiveCameras,
    OrthographicCameras,
    PerspectiveCameras,
    SfMOrthographicCameras,
    SfMPerspectiveCameras,
    camera_position_from_spherical_angles,
    fov_orthographic_projection_matrix,
    fov_perspective_projection_matrix,
    get_ndc_to_screen_transform,
    get_screen_to_ndc_transform,
    get_world_to_view_transform,
    join_cameras_as_batch,
    look_at_rotation,
    look_at_view_transform,
    ndc_to_screen_matrix,
    sfm_projection_matrix,
    world_to_view_matrix,
)
from lib3d.geometry.fisheye import FishEyeCameras, fisheye_project, fisheye_unproject
from lib3d.geometry.rotations import (
    acos_linear_extrapolation,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_angles_to_matrix,
    hat,
    hat_inv,
    matrix_to_axis_angle,
    matrix_to_euler_angles,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_apply,
    quaternion_invert,
    quaternion_multiply,
    quaternion_raw_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_quaternions,
    random_rotation,
    random_rotations,
    rotation_6d_to_matrix,
    se3_exp_map,
    se3_log_map,
    so3_exp_map,
    so3_log_map,
    so3_relative_angle,
    so3_rotation_angle,
    standardize_quaternion,
)
from lib3d.geometry.transforms import Rotate, RotateAxisAngle, Scale, Transform3d, Translate

__all__ = [
    "CamerasBase",
    "FoVOrthographicCameras",
    "FishEyeCameras",
    "FoVPerspectiveCameras",
    "OpenGLOrthographicCameras",
    "OpenGLPerspectiveCameras",
    "OrthographicCameras",
    "PerspectiveCameras",
    "Rotate",
    "RotateAxisAngle",
    "Scale",
    "SfMOrthographicCameras",
    "SfMPerspectiveCameras",
    "Transform3d",
    "Translate",
    "acos_linear_extrapolation",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "camera_position_from_spherical_angles",
    "euler_angles_to_matrix",
    "fov_orthographic_projection_matrix",
    "fov_perspective_projection_matrix",
    "get_ndc_to_screen_transform",
    "get_screen_to_ndc_transform",
    "get_world_to_view_transform",
    "hat",
    "hat_inv",
    "look_at_rotation",
    "look_at_view_transform",
    "join_cameras_as_batch",
    "fisheye_project",
    "fisheye_unproject",
    "matrix_to_axis_angle",
    "matrix_to_euler_angles",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "ndc_to_screen_matrix",
    "quaternion_apply",
    "quaternion_invert",
    "quaternion_multiply",
    "quaternion_raw_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_rotation",
    "random_rotations",
    "rotation_6d_to_matrix",
    "se3_exp_map",
    "se3_log_map",
    "sfm_projection_matrix",
    "so3_exp_map",
    "so3_log_map",
    "so3_relative_angle",
    "so3_rotation_angle",
    "standardize_quaternion",
    "world_to_view_matrix",
]
