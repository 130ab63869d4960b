"""Writing images, GIFs and labelled image grids with Pillow.

Images are ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (``(H, W)`` and ``(H, W, 1)`` grey also accepted),
either float in [0, 1] (values outside are clipped) or uint8, as torch tensors (any device) or numpy
arrays. Frame stacks are ``(T, H, W, 3|4)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["image_grid", "save_gif", "save_image", "to_uint8"]


def to_uint8(img: Any, name: str = "img") -> np.ndarray:
    """Convert an image to a numpy ``(H, W, C)`` uint8 array, C in {1, 3, 4}.

    Args:
        img: ``(H, W)``, ``(H, W, 1|3|4)`` float in [0, 1] or uint8 (tensor or numpy).
        name: argument name used in error messages.

    Raises:
        TypeError: for other dtypes or types.
        ValueError: for other shapes, or non-finite float values.
    """
    if isinstance(img, torch.Tensor):
        img = img.detach().to("cpu")
        img = img.float().numpy() if img.dtype in (torch.float16, torch.bfloat16) else img.numpy()
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(img).__name__}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name}: expected shape (H, W, 3|4) (or (H, W)), got {tuple(img.shape)}")
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"{name}: expected float in [0, 1] or uint8, got dtype {img.dtype}")
    if not np.isfinite(img).all():
        raise ValueError(f"{name}: image holds NaN or inf values")
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pil(img: Any, name: str = "img"):
    from PIL import Image

    arr = to_uint8(img, name)
    if arr.shape[-1] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr, mode="RGBA" if arr.shape[-1] == 4 else "RGB")


def save_image(path: str | os.PathLike, img: Any) -> Path:
    """Save one image (format from the suffix: .png, .jpg, ...); parent folders are created.

    Args:
        path: output file.
        img: ``(H, W, 3|4)`` float in [0, 1] or uint8.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = _pil(img)
    if path.suffix.lower() in (".jpg", ".jpeg") and im.mode == "RGBA":
        im = im.convert("RGB")
    im.save(path)
    return path


def save_gif(path: str | os.PathLike, frames: Any, fps: float = 10.0, loop: int = 0) -> Path:
    """Save an animated GIF.

    Args:
        path: output ``.gif`` file; parent folders are created.
        frames: ``(T, H, W, 3|4)`` float in [0, 1] or uint8 (tensor/array), or a sequence of ``(H, W, 3|4)``.
        fps: frames per second (> 0).
        loop: number of loops (0: forever).

    Returns:
        The path written.

    Raises:
        ValueError: for no frames, frames of different sizes or fps <= 0.
    """
    if not fps > 0:
        raise ValueError(f"save_gif: fps must be > 0, got {fps}")
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        if frames.ndim != 4:
            raise ValueError(f"save_gif: frames must have shape (T, H, W, 3|4), got {tuple(frames.shape)}")
        frames = list(frames)
    if len(frames) == 0:
        raise ValueError("save_gif: frames is empty (T = 0)")
    ims = [_pil(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if len({im.size for im in ims}) != 1:
        raise ValueError(f"save_gif: all frames must share one (H, W); got sizes {sorted({im.size for im in ims})}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ims = [im.convert("RGB") for im in ims]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=max(1, round(1000.0 / fps)), loop=loop)
    return path


def image_grid(images: Any, rows: int | None = None, labels: Sequence[str] | None = None,
               pad: int = 2, background: float = 1.0) -> np.ndarray:
    """Tile images into a grid (row-major), optionally with a text label over each tile.

    Args:
        images: ``(B, H, W, 3|4)`` or a sequence of ``(H, W, 3|4)`` images of one size, float in [0, 1] or
            uint8.
        rows: number of rows (None: about square); columns = ceil(B / rows).
        labels: B strings drawn at the top-left of the tiles (None: no labels).
        pad: pixels between tiles.
        background: grey level (0..1) of the padding and empty cells.

    Returns:
        ``(rows*H + (rows-1)*pad, cols*W + (cols-1)*pad, C)`` uint8 numpy image (C = 4 if any input has
        alpha, else 3).

    Raises:
        ValueError: for no images, differing sizes, bad ``rows`` or a label count that is not B.
    """
    from PIL import Image, ImageDraw

    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim != 4:
            raise ValueError(f"image_grid: images must have shape (B, H, W, 3|4), got {tuple(images.shape)}")
        images = list(images)
    arrs = [to_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
    b = len(arrs)
    if b == 0:
        raise ValueError("image_grid: images is empty (B = 0)")
    if len({a.shape[:2] for a in arrs}) != 1:
        raise ValueError(f"image_grid: all images must share one (H, W); got {sorted({a.shape[:2] for a in arrs})}")
    if rows is None:
        rows = max(1, math.floor(math.sqrt(b)))
    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"image_grid: rows must be an int >= 1, got {rows!r}")
    if labels is not None and len(labels) != b:
        raise ValueError(f"image_grid: expected {b} labels (one per image), got {len(labels)}")
    c = 4 if any(a.shape[-1] == 4 for a in arrs) else 3

    def widen(a: np.ndarray) -> np.ndarray:
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        if c == 4 and a.shape[-1] == 3:
            a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        return a

    cols = math.ceil(b / rows)
    rows = math.ceil(b / cols)
    h, w = arrs[0].shape[:2]
    fill = round(float(np.clip(background, 0, 1)) * 255)
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), fill, np.uint8)
    for i, a in enumerate(arrs):
        r, q = divmod(i, cols)
        grid[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = widen(a)
    if labels:
        im = Image.fromarray(grid)
        draw = ImageDraw.Draw(im)
        for i, text in enumerate(labels):
            r, q = divmod(i, cols)
            x, y = q * (w + pad) + 2, r * (h + pad) + 1
            draw.text((x + 1, y + 1), str(text), fill=(0,) * c)
            draw.text((x, y), str(text), fill=(255,) * c)
        grid = np.asarray(im)
    return grid
