"""Readers of the real view-synthesis datasets SynSin trains on: RealEstate10K and KITTI odometry.

Dimension names: T frames, H/W image height/width.

Conventions (those of ``lib3d.synthesis.synsin``): poses are world-to-camera ``(T, 4, 4)`` in OpenCV axes
(+x right, +y down, +z forward); intrinsics are normalised ``(T, 3, 3)`` or ``(3, 3)`` (``u = fx X / Z + cx``
in [0, 1] across the width, ``v`` likewise across the height), so they stay valid when images are resized.
Images are ``(3, H, W)`` float in [0, 1].

- RealEstate10K camera file (``<video id>.txt``): a first line with the YouTube URL, then one line per
  frame ``timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3`` (intrinsics
  normalised by the image size, a 3x4 world-to-camera matrix row by row). Frames are images named
  ``<timestamp>.png`` (or ``.jpg``) in a folder (SynSin's ``frames/<split>/<video id>/``).
- KITTI odometry: ``poses/XX.txt`` holds one 3x4 camera-to-world matrix of camera 0 per line (12
  numbers); ``sequences/XX/calib.txt`` holds ``P0: .. P3:`` 3x4 projection matrices (pixels) of the
  rectified cameras (``Pi = K [I | t_i]``, ``t_i`` the offset of camera i from camera 0); the images of
  camera i are ``sequences/XX/image_i/NNNNNN.png``.

Malformed files raise ``lib3d.io.FormatError`` naming the file and line; missing or empty folders,
images that are not RGB or whose size differs within a sequence raise ``ValueError`` naming the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lib3d.io.errors import FormatError

__all__ = [
    "CameraTrack",
    "KittiSequence",
    "RealEstateSequence",
    "load_kitti_odometry",
    "load_realestate_sequence",
    "read_image_rgb",
    "read_kitti_calib",
    "read_kitti_poses",
    "read_realestate_cameras",
]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


class CameraTrack(NamedTuple):
    """The cameras of one RealEstate10K video.

    Attributes:
        url: the video's URL (the file's first line).
        timestamps: (T,) int64 frame timestamps (microseconds).
        K: (T, 3, 3) float32 normalised intrinsics.
        poses: (T, 4, 4) float32 world-to-camera.
    """

    url: str
    timestamps: torch.Tensor
    K: torch.Tensor
    poses: torch.Tensor


class RealEstateSequence(NamedTuple):
    """Frames of a RealEstate10K video with their cameras.

    Attributes:
        images: (T, 3, H, W) float32 in [0, 1].
        track: the ``CameraTrack`` of those frames (same order).
        paths: the T image files.
    """

    images: torch.Tensor
    track: CameraTrack
    paths: tuple[Path, ...]


class KittiSequence(NamedTuple):
    """A KITTI odometry sequence seen by one camera.

    Attributes:
        images: (T, 3, H, W) float32 in [0, 1].
        poses: (T, 4, 4) float32 world-to-camera of that camera (world = camera 0 at frame 0).
        K: (3, 3) float32 normalised intrinsics.
        paths: the T image files.
    """

    images: torch.Tensor
    poses: torch.Tensor
    K: torch.Tensor
    paths: tuple[Path, ...]


def _numbers(path: Path, lineno: int, fields: list[str]) -> list[float]:
    out = []
    for f in fields:
        try:
            v = float(f)
        except ValueError:
            raise FormatError(str(path), f"line {lineno}", f"{f!r} is not a number") from None
        if not math.isfinite(v):
            raise FormatError(str(path), f"line {lineno}", f"{f!r} is not finite")
        out.append(v)
    return out


def _lines(path: str | os.PathLike) -> tuple[Path, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise FormatError(str(p), None, "not a text file") from None
    return p, text.splitlines()


def read_realestate_cameras(path: str | os.PathLike) -> CameraTrack:
    """Read a RealEstate10K camera file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        FormatError: a line without 19 numbers, a non-number, a timestamp that is not an integer, a
            non-positive focal length, or no frame lines (file and line named).
    """
    p, lines = _lines(path)
    if not lines:
        raise FormatError(str(p), None, "empty camera file")
    url = lines[0].strip()
    ts, Ks, Ps = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 19:
            raise FormatError(str(p), f"line {lineno}", f"expected 19 numbers (timestamp, fx fy cx cy, 0 0, "
                                                         f"3x4 world-to-camera), got {len(fields)}")
        try:
            t = int(fields[0])
        except ValueError:
            raise FormatError(str(p), f"line {lineno}", f"timestamp {fields[0]!r} is not an integer") from None
        v = _numbers(p, lineno, fields[1:])
        fx, fy, cx, cy = v[:4]
        if fx <= 0 or fy <= 0:
            raise FormatError(str(p), f"line {lineno}", f"focal lengths must be positive, got {fx}, {fy}")
        ts.append(t)
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        P = np.eye(4)
        P[:3, :4] = np.asarray(v[6:], dtype=np.float64).reshape(3, 4)
        Ps.append(P)
    if not ts:
        raise FormatError(str(p), None, "no frame lines after the URL line")
    return CameraTrack(url, torch.tensor(ts, dtype=torch.int64), torch.tensor(Ks, dtype=torch.float32),
                       torch.tensor(np.stack(Ps), dtype=torch.float32))


def read_image_rgb(path: str | os.PathLike, image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an RGB image as (3, H, W) float32 in [0, 1], resized (bilinear) to ``image_size`` if given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or not an RGB image (grey, palette, RGBA, 16-bit: the mode is named).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode != "RGB":
                raise ValueError(f"{p}: expected an RGB image, got mode {im.mode!r}")
            if image_size is not None:
                h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
                im = im.resize((int(w), int(h)), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{p}: not a readable image ({type(e).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def _read_frames(paths: list[Path], image_size) -> torch.Tensor:
    """Read frames; without ``image_size`` every frame must have the first one's size."""
    imgs = []
    for path in paths:
        img = read_image_rgb(path, image_size)
        if imgs and img.shape != imgs[0].shape:
            raise ValueError(f"{path}: image size {tuple(img.shape[1:])} differs from the sequence's "
                             f"{tuple(imgs[0].shape[1:])} ({paths[0].name})")
        imgs.append(img)
    return torch.stack(imgs)


def load_realestate_sequence(camera_file: str | os.PathLike, frames_dir: str | os.PathLike,
                             image_size: int | tuple[int, int] | None = None,
                             max_frames: int | None = None) -> RealEstateSequence:
    """Load a RealEstate10K video: its camera file and the frames named by timestamp.

    Frames without an image are skipped (downloads often miss some); the images must be RGB.

    Args:
        camera_file: the ``<video id>.txt`` camera file.
        frames_dir: the folder of ``<timestamp>.png`` / ``.jpg`` frames.
        image_size: resize every frame to this (int: square); None keeps the size (all frames must agree).
        max_frames: read at most this many frames (the first ones).

    Returns:
        ``RealEstateSequence`` of the frames that have an image.

    Raises:
        FileNotFoundError: no camera file, or no such folder.
        FormatError: a malformed camera file.
        ValueError: a folder with no frame of the track, an image that is not RGB or of another size.
    """
    track = read_realestate_cameras(camera_file)
    d = Path(frames_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such frames folder")
    present = {f.stem: f for f in d.iterdir() if f.suffix.lower() in _IMAGE_EXTS}
    keep, paths = [], []
    for i, t in enumerate(track.timestamps.tolist()):
        f = present.get(str(t))
        if f is not None:
            keep.append(i)
            paths.append(f)
        if max_frames is not None and len(keep) >= max_frames:
            break
    if not keep:
        raise ValueError(f"{d}: no frame image named after a timestamp of {camera_file} "
                         f"({len(present)} images in the folder)")
    idx = torch.tensor(keep)
    sub = CameraTrack(track.url, track.timestamps[idx], track.K[idx], track.poses[idx])
    return RealEstateSequence(_read_frames(paths, image_size), sub, tuple(paths))


def read_kitti_poses(path: str | os.PathLike) -> torch.Tensor:
    """Read a KITTI odometry pose file: (T, 4, 4) float64 camera-0-to-world matrices.

    Raises:
        FileNotFoundError: no such file.
        FormatError: a line without 12 numbers or an empty file (file and line named).
    """
    p, lines = _lines(path)
    out = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 12:
            raise FormatError(str(p), f"line {lineno}", f"expected 12 numbers (a 3x4 pose), got {len(fields)}")
        M = np.eye(4)
        M[:3, :4] = np.asarray(_numbers(p, lineno, fields)).reshape(3, 4)
        out.append(M)
    if not out:
        raise FormatError(str(p), None, "no poses")
    return torch.tensor(np.stack(out), dtype=torch.float64)


def read_kitti_calib(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a KITTI odometry ``calib.txt``: ``{"P0": (3, 4), ..., "Tr": (3, 4)}`` float64.

    Raises:
        FileNotFoundError: no such file.
        FormatError: a line that is not ``NAME: 12 numbers`` (file and line named), or no P matrix.
    """
    p, lines = _lines(path)
    out = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) != 12:
            raise FormatError(str(p), f"line {lineno}", "expected 'NAME: ' followed by 12 numbers")
        out[name.strip()] = torch.tensor(_numbers(p, lineno, fields), dtype=torch.float64).reshape(3, 4)
    if not any(k.startswith("P") for k in out):
        raise FormatError(str(p), None, "no projection matrix (P0..P3)")
    return out


def load_kitti_odometry(sequence_dir: str | os.PathLike, poses_file: str | os.PathLike, camera: int = 2,
                        image_size: int | tuple[int, int] | None = None,
                        max_frames: int | None = None) -> KittiSequence:
    """Load a KITTI odometry sequence: images of ``camera``, its world-to-camera poses and intrinsics.

    Camera i's pose is camera 0's moved by the calibration offset: ``P_i = K_i [I | t_i]`` gives
    ``t_i = K_i^-1 P_i[:, 3]`` and ``world_to_cam_i = [I | t_i] (cam0_to_world)^-1``. Intrinsics are
    normalised by the original image size (read from the first frame).

    Args:
        sequence_dir: ``sequences/XX`` (holding ``calib.txt`` and ``image_<camera>/``).
        poses_file: ``poses/XX.txt``.
        camera: 0..3 (2: the left colour camera, SynSin's choice).
        image_size: resize frames to this (int: square); None keeps the size.
        max_frames: read at most this many frames.

    Raises:
        FileNotFoundError: a missing file or folder.
        FormatError: a malformed pose or calibration file.
        ValueError: no images, more images than poses, a non-RGB image.
    """
    d = Path(sequence_dir)
    calib = read_kitti_calib(d / "calib.txt")
    key = f"P{camera}"
    if key not in calib:
        raise ValueError(f"{d / 'calib.txt'}: no {key} (holds {sorted(calib)})")
    cam0_to_world = read_kitti_poses(poses_file)
    img_dir = d / f"image_{camera}"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: no such image folder")
    paths = sorted(f for f in img_dir.iterdir() if f.suffix.lower() in _IMAGE_EXTS)
    if not paths:
        raise ValueError(f"{img_dir}: no images")
    if len(paths) > cam0_to_world.shape[0]:
        raise ValueError(f"{img_dir}: {len(paths)} images but {poses_file} has {cam0_to_world.shape[0]} poses")
    if max_frames is not None:
        paths = paths[:max_frames]
    from PIL import Image

    with Image.open(paths[0]) as im:
        W, H = im.size
    P = calib[key]
    Kpix = P[:, :3]
    t = torch.linalg.solve(Kpix, P[:, 3])
    offset = torch.eye(4, dtype=torch.float64)
    offset[:3, 3] = t
    w2c = offset @ torch.linalg.inv(cam0_to_world[: len(paths)])
    K = Kpix.clone()
    K[0] /= W
    K[1] /= H
    images = _read_frames(paths, image_size)
    return KittiSequence(images, w2c.float(), K.float(), tuple(paths))
