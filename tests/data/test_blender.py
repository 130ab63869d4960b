"""Blender-format loader on a tiny dataset written by the test: images, compositing, camera conversion."""

import json
import math

import numpy as np
import pytest
import torch

from lib3d.data.blender import load_blender, opengl_c2w_to_pytorch3d


def _look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """OpenGL camera-to-world: the camera looks down its -Z axis, +Y up, +X right."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    upv = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, upv, back, eye
    return m


def _write_dataset(root, size=8):
    from PIL import Image

    (root / "train").mkdir(parents=True)
    frames = []
    eyes = [(0.0, 0.0, 4.0), (3.0, 1.0, 2.0)]
    for i, eye in enumerate(eyes):
        rgba = np.zeros((size, size, 4), dtype=np.uint8)
        rgba[..., 0] = 255  # red
        rgba[: size // 2, :, 3] = 255  # top half opaque, bottom half transparent
        Image.fromarray(rgba, "RGBA").save(root / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": _look_at_c2w(eye).tolist()})
    fov = 0.6911112070083618  # lego's camera_angle_x
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
    return fov, eyes


def test_load_blender_tiny(tmp_path):
    fov, eyes = _write_dataset(tmp_path)
    v = load_blender(tmp_path, "train", background=1.0)
    assert v.images.shape == (2, 8, 8, 3) and v.alpha.shape == (2, 8, 8)
    torch.testing.assert_close(v.images[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # opaque red
    torch.testing.assert_close(v.images[0, -1, 0], torch.tensor([1.0, 1.0, 1.0]))  # white background
    black = load_blender(tmp_path, "train", background=0.0)
    torch.testing.assert_close(black.images[0, -1, 0], torch.zeros(3))
    small = load_blender(tmp_path, "train", image_size=4)
    assert small.images.shape == (2, 4, 4, 3)
    assert load_blender(tmp_path, "val") is None
    # camera centres are the eyes
    torch.testing.assert_close(v.cameras.get_camera_center(), torch.tensor(eyes), atol=1e-5, rtol=0)


def test_blender_projection_of_a_known_point(tmp_path):
    fov, _ = _write_dataset(tmp_path)
    v = load_blender(tmp_path, "train")
    # camera 0 at (0, 0, 4) looking at the origin: the world point (0.5, 0.25, 0) is at view depth 4, to the
    # right (+x in OpenGL) and up; pinhole: u = W/2 + f x / z, v = H/2 - f y / z with f = W / (2 tan(fov/2))
    W = H = 8
    f = W / (2 * math.tan(fov / 2))
    u = W / 2 + f * 0.5 / 4
    vpx = H / 2 - f * 0.25 / 4
    scr = v.cameras[0].transform_points_screen(torch.tensor([[[0.5, 0.25, 0.0]]]), image_size=(H, W))[0, 0]
    torch.testing.assert_close(scr[:2], torch.tensor([u, vpx]), atol=1e-4, rtol=0)


def test_c2w_conversion_roundtrip_and_errors():
    c2w = torch.tensor(_look_at_c2w((1.0, 2.0, 3.0)), dtype=torch.float32)[None]
    R, T = opengl_c2w_to_pytorch3d(c2w)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    assert abs(float(torch.det(R[0])) - 1) < 1e-5
    # the eye maps to the view-space origin: eye @ R + T = 0
    torch.testing.assert_close(torch.tensor([[1.0, 2.0, 3.0]]) @ R[0] + T, torch.zeros(1, 3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="c2w"):
        opengl_c2w_to_pytorch3d(torch.eye(4))


def test_bad_json(tmp_path):
    (tmp_path / "transforms_train.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match="camera_angle_x"):
        load_blender(tmp_path, "train")


def test_posed_images_from_blender(tmp_path):
    from lib3d.data.posed_images import load_posed_images
    from lib3d.render import image_rays

    _write_dataset(tmp_path)
    data = load_posed_images(f"blender:{tmp_path}", image_size=8)
    assert data.images.shape == (2, 8, 8, 3) and data.silhouettes.shape == (2, 8, 8) and data.background == 1.0
    o, d = image_rays(data.cameras, 8, 8)
    # the centre rays of camera 0 (at (0, 0, 4)) point at the origin: direction ~ -z
    centre = d[0, 3:5, 3:5].mean(dim=(0, 1))
    assert float(torch.nn.functional.normalize(centre, dim=0)[2]) < -0.99
    torch.testing.assert_close(o[0, 0, 0], torch.tensor([0.0, 0.0, 4.0]), atol=1e-4, rtol=0)


def test_posed_images_data_spec_errors(tmp_path):
    """A missing or empty dataset folder, a missing mesh and an unknown spec each name themselves (the job
    turns them into one line and exit status 2)."""
    from lib3d.data.posed_images import check_data_spec, load_posed_images

    with pytest.raises(FileNotFoundError, match="no dataset folder '/missing/dir'"):
        load_posed_images("blender:/missing/dir")
    with pytest.raises(FileNotFoundError, match="holds no transforms_train.json"):
        check_data_spec(f"blender:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="no mesh file '/missing/cow.obj'"):
        check_data_spec("cow:/missing/cow.obj")
    with pytest.raises(ValueError, match="cow:PATH/cow.obj"):
        check_data_spec("lego")
    check_data_spec("embedded")
    _write_dataset(tmp_path)
    check_data_spec(f"blender:{tmp_path}")
