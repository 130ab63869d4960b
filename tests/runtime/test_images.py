"""lib3d.io.images: conversions, PNG/GIF writing read back with Pillow, grids with labels, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib3d.io.images import image_grid, save_gif, save_image, to_uint8


def test_to_uint8():
    x = torch.tensor([[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.25]]])
    np.testing.assert_array_equal(to_uint8(x), [[[0, 128, 255], [0, 255, 64]]])
    u = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_uint8(u) is not None and np.array_equal(to_uint8(torch.from_numpy(u)), u)
    assert to_uint8(np.zeros((3, 4))).shape == (3, 4, 1)
    assert to_uint8(torch.zeros(3, 4, 4, dtype=torch.float16)).shape == (3, 4, 4)


@pytest.mark.parametrize("bad,err", [(torch.zeros(3, 4, 2), ValueError), (torch.zeros(2, 3, 4, 3), ValueError),
                                     (torch.zeros(3, 3, 3, dtype=torch.int64), TypeError),
                                     (torch.full((2, 2, 3), float("nan")), ValueError), ([[0.0]], TypeError)])
def test_bad_images(bad, err):
    with pytest.raises(err, match="img"):
        to_uint8(bad)


def test_save_image_round_trip(tmp_path):
    img = torch.rand(5, 7, 3)
    p = save_image(tmp_path / "a" / "b.png", img)
    back = np.asarray(Image.open(p))
    assert back.shape == (5, 7, 3) and np.array_equal(back, to_uint8(img))
    rgba = torch.rand(5, 7, 4)
    assert np.asarray(Image.open(save_image(tmp_path / "c.png", rgba))).shape == (5, 7, 4)
    assert Image.open(save_image(tmp_path / "c.jpg", rgba)).mode == "RGB"


def test_save_gif(tmp_path):
    frames = (torch.arange(4).float() / 3)[:, None, None, None].expand(4, 6, 8, 3)
    p = save_gif(tmp_path / "x.gif", frames, fps=20)
    im = Image.open(p)
    assert im.n_frames == 4 and im.size == (8, 6) and im.info["duration"] == 50
    vals = []
    for i in range(4):
        im.seek(i)
        vals.append(np.asarray(im.convert("RGB"))[0, 0, 0])
    assert vals == [0, 85, 170, 255]
    with pytest.raises(ValueError, match="fps"):
        save_gif(tmp_path / "y.gif", frames, fps=0)
    with pytest.raises(ValueError, match="empty"):
        save_gif(tmp_path / "y.gif", [])
    with pytest.raises(ValueError, match="one"):
        save_gif(tmp_path / "y.gif", [torch.zeros(2, 2, 3), torch.zeros(3, 2, 3)])


def test_image_grid():
    imgs = torch.stack([torch.full((4, 5, 3), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)])
    g = image_grid(imgs, rows=2, pad=1)
    assert g.shape == (2 * 4 + 1, 3 * 5 + 2, 3) and g.dtype == np.uint8
    assert g[0, 0, 0] == 0 and g[0, 6, 0] == 64 and g[5, 0, 0] == 191 and g[5, 6, 0] == 255
    assert g[4, 0, 0] == 255 and g[5, 12, 0] == 255  # padding row, empty cell: background
    labelled = image_grid(list(imgs[:2]), rows=1, labels=["a", "bb"], pad=0)
    assert labelled.shape == (4, 10, 3) and not np.array_equal(labelled, image_grid(imgs[:2], rows=1, pad=0))
    assert image_grid(torch.rand(4, 3, 3, 4)).shape[-1] == 4
    with pytest.raises(ValueError, match="labels"):
        image_grid(imgs, labels=["a"])
    with pytest.raises(ValueError, match="rows"):
        image_grid(imgs, rows=0)
    with pytest.raises(ValueError, match="empty"):
        image_grid([])
