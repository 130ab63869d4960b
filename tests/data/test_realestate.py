"""RealEstate10K and KITTI odometry readers, on small files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib3d.data.realestate import (
    load_kitti_odometry,
    load_realestate_sequence,
    read_image_rgb,
    read_kitti_calib,
    read_kitti_poses,
    read_realestate_cameras,
)
from lib3d.io.errors import FormatError


def _camera_line(t, fx=0.5, fy=0.9, cx=0.5, cy=0.5, tz=0.0):
    pose = [1, 0, 0, 0.1, 0, 1, 0, 0.2, 0, 0, 1, tz]
    return " ".join(str(v) for v in [t, fx, fy, cx, cy, 0, 0, *pose])


def _write_png(path, h=6, w=8, mode="RGB", value=100):
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[0, 0] = [255, 0, 0]
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)


def test_realestate_camera_file(tmp_path):
    f = tmp_path / "abc.txt"
    f.write_text("https://www.youtube.com/watch?v=abc\n" + _camera_line(1000) + "\n" + _camera_line(2000, tz=0.5)
                 + "\n")
    tr = read_realestate_cameras(f)
    assert tr.url.endswith("abc") and tr.timestamps.tolist() == [1000, 2000]
    assert torch.allclose(tr.K[0], torch.tensor([[0.5, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1.0]]))
    assert torch.allclose(tr.poses[1, :3, 3], torch.tensor([0.1, 0.2, 0.5]))
    assert torch.equal(tr.poses[1, 3], torch.tensor([0.0, 0, 0, 1]))


@pytest.mark.parametrize("bad, match", [
    ("1000 0.5 0.5 0.5", "line 3.*19 numbers"),
    (_camera_line(3000).replace("0.9", "abc"), "line 3.*'abc' is not a number"),
    (_camera_line(3000).replace("3000", "3.5", 1), "line 3.*timestamp"),
    (_camera_line(3000, fx=-1), "line 3.*focal"),
])
def test_realestate_camera_file_errors(tmp_path, bad, match):
    f = tmp_path / "v.txt"
    f.write_text("url\n" + _camera_line(1000) + "\n" + bad + "\n")
    with pytest.raises(FormatError, match=match) as e:
        read_realestate_cameras(f)
    assert str(f) in str(e.value)
    empty = tmp_path / "e.txt"
    empty.write_text("url\n")
    with pytest.raises(FormatError, match="no frame lines"):
        read_realestate_cameras(empty)


def test_realestate_sequence(tmp_path):
    cams = tmp_path / "vid.txt"
    cams.write_text("url\n" + "\n".join(_camera_line(t) for t in (10, 20, 30)) + "\n")
    frames = tmp_path / "vid"
    frames.mkdir()
    _write_png(frames / "10.png")
    _write_png(frames / "30.png", value=200)
    seq = load_realestate_sequence(cams, frames)
    assert seq.images.shape == (2, 3, 6, 8) and seq.track.timestamps.tolist() == [10, 30]
    assert torch.isclose(seq.images[1, 1, 2, 2], torch.tensor(200 / 255))
    assert torch.allclose(seq.images[0, :, 0, 0], torch.tensor([1.0, 0, 0]))
    small = load_realestate_sequence(cams, frames, image_size=4)
    assert small.images.shape == (2, 3, 4, 4)
    # Errors: empty folder, non-RGB image, another size, missing folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no frame image"):
        load_realestate_sequence(cams, empty)
    _write_png(frames / "20.png", mode="L")
    with pytest.raises(ValueError, match="20.png: expected an RGB image, got mode 'L'"):
        load_realestate_sequence(cams, frames)
    _write_png(frames / "20.png", h=5)
    with pytest.raises(ValueError, match="20.png: image size"):
        load_realestate_sequence(cams, frames)
    with pytest.raises(FileNotFoundError):
        load_realestate_sequence(cams, tmp_path / "nope")
    (frames / "20.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_rgb(frames / "20.png")


def _kitti(tmp_path, n_images=3):
    seq = tmp_path / "sequences" / "00"
    (seq / "image_2").mkdir(parents=True)
    fx, cx, cy = 700.0, 600.0, 180.0
    P0 = [fx, 0, cx, 0, 0, fx, cy, 0, 0, 0, 1, 0]
    P2 = [fx, 0, cx, fx * 0.06, 0, fx, cy, 0, 0, 0, 1, 0]  # t_2 = K^-1 P2[:, 3] = (0.06, 0, 0)
    lines = [f"P{i}: " + " ".join(map(str, P2 if i == 2 else P0)) for i in range(4)]
    (seq / "calib.txt").write_text("\n".join(lines + ["Tr: " + " ".join(["0"] * 12)]) + "\n")
    poses = tmp_path / "poses"
    poses.mkdir()
    rows = []
    for k in range(3):
        rows.append(" ".join(map(str, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0.8 * k])))
    (poses / "00.txt").write_text("\n".join(rows) + "\n")
    for k in range(n_images):
        _write_png(seq / "image_2" / f"{k:06d}.png", h=12, w=40)
    return seq, poses / "00.txt"


def test_kitti_odometry(tmp_path):
    seq, poses = _kitti(tmp_path)
    c2w = read_kitti_poses(poses)
    assert c2w.shape == (3, 4, 4) and float(c2w[2, 2, 3]) == pytest.approx(1.6)
    calib = read_kitti_calib(seq / "calib.txt")
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    k = load_kitti_odometry(seq, poses, image_size=8)
    assert k.images.shape == (3, 3, 8, 8)
    assert torch.allclose(k.K, torch.tensor([[700 / 40, 0, 600 / 40], [0, 700 / 12, 180 / 12], [0, 0, 1.0]]))
    # Frame 2: camera 0 is 1.6 m forward; camera 2's world-to-camera translation is (0.06, 0, -1.6).
    assert torch.allclose(k.poses[2, :3, 3], torch.tensor([0.06, 0.0, -1.6]), atol=1e-6)


def test_kitti_errors(tmp_path):
    seq, poses = _kitti(tmp_path, n_images=4)
    with pytest.raises(ValueError, match="4 images but"):
        load_kitti_odometry(seq, poses)
    poses.write_text("1 0 0\n")
    with pytest.raises(FormatError, match="line 1.*12 numbers"):
        read_kitti_poses(poses)
    (seq / "calib.txt").write_text("P0 1 2 3\n")
    with pytest.raises(FormatError, match="calib.txt, line 1"):
        read_kitti_calib(seq / "calib.txt")
    with pytest.raises(FileNotFoundError):
        read_kitti_poses(tmp_path / "missing.txt")
