"""The image-folder loader (``images:DIR/*.jpg``): transforms, errors naming the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib3d.data.image_folder import ImageFolder, ImageFolderError, parse_images_spec


def _write(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_random_crop_resizes_shorter_side_and_crops(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "a.png", rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    _write(tmp_path / "b.png", rng.integers(0, 255, (30, 10, 3), dtype=np.uint8))
    data = ImageFolder(str(tmp_path / "*.png"), 8, crop="random")
    assert len(data) == 2
    out = data.sample([0, 1, 0], torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 8, 8) and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    # same generator -> same crops
    torch.testing.assert_close(out, data.sample([0, 1, 0], torch.Generator().manual_seed(0)))


def test_none_mode_is_exact_and_flip_mirrors(tmp_path):
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    _write(tmp_path / "x.png", img)
    data = ImageFolder(str(tmp_path), 4, crop="none", flip=True)
    outs = torch.stack([data.sample([0], torch.Generator().manual_seed(s))[0] for s in range(8)])
    ref = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    flipped = [bool(torch.equal(o, ref.flip(-1))) for o in outs]
    plain = [bool(torch.equal(o, ref)) for o in outs]
    assert all(a or b for a, b in zip(flipped, plain)) and any(flipped) and any(plain)


def test_center_crop_and_npy(tmp_path):
    arr = np.zeros((1, 3, 12, 12), dtype=np.uint8)
    arr[0, 0, 4:8, 4:8] = 255  # a red centre square
    np.save(tmp_path / "face.npy", arr)
    data = ImageFolder(str(tmp_path / "*.npy"), 4, crop="center", center_crop=4, flip=False)
    out = data.sample([0])
    torch.testing.assert_close(out[0, 0], torch.ones(4, 4))
    torch.testing.assert_close(out[0, 1:], torch.zeros(2, 4, 4))


def test_rgba_alpha_dropped(tmp_path):
    rgba = np.full((4, 4, 4), 200, dtype=np.uint8)
    _write(tmp_path / "a.png", rgba, mode="RGBA")
    out = ImageFolder(str(tmp_path / "*.png"), 4, crop="none", flip=False).sample([0])
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 200 / 255))


@pytest.mark.parametrize("case", ["empty", "unreadable", "gray", "size", "npy_layout", "spec"])
def test_bad_input_one_clear_error(tmp_path, case):
    if case == "empty":
        with pytest.raises(ImageFolderError, match="no image files match"):
            ImageFolder(str(tmp_path / "*.jpg"), 8)
        return
    if case == "spec":
        with pytest.raises(ImageFolderError, match="images:DIR"):
            parse_images_spec("folder/*.jpg")
        assert parse_images_spec("images:data/*.jpg") == "data/*.jpg"
        return
    if case == "unreadable":
        (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
        pattern, match = "*.jpg", "bad.jpg: cannot read the image"
    elif case == "gray":
        _write(tmp_path / "g.png", np.zeros((8, 8), dtype=np.uint8))
        pattern, match = "*.png", r"g.png: not an RGB image \(mode L\)"
    elif case == "size":
        _write(tmp_path / "s.png", np.zeros((6, 8, 3), dtype=np.uint8))
        pattern, match = "*.png", "s.png: expected a 8x8 image, got 8x6"
    else:
        np.save(tmp_path / "a.npy", np.zeros((3, 8, 8), dtype=np.uint8))
        pattern, match = "*.npy", r"a.npy: expected a \(1, 3, H, W\) uint8 array"
    data = ImageFolder(str(tmp_path / pattern), 8, crop="none")
    with pytest.raises(ImageFolderError, match=match):
        data.sample([0])
