"""A folder of images as a GAN dataset: ``images:DIR/*.jpg`` (CompCars, CelebA-HQ, FFHQ, LSUN exports, ...).

The transforms follow GIRAFFE's ``ImagesDataset`` (torchvision semantics, written with PIL):

- ``crop="random"``: resize the shorter side to ``size`` (bilinear), crop ``size`` x ``size`` at a uniform
  random offset, flip horizontally with probability 1/2 (CompCars);
- ``crop="center"``: centre-crop ``center_crop`` x ``center_crop`` pixels, resize to ``size`` x ``size``,
  random flip (CelebA: 108; CelebA-HQ: 650);
- ``crop="resize"``: resize to ``size`` x ``size``, random flip (the official default);
- ``crop="none"``: the images must already be ``size`` x ``size``; random flip.

Files: ``.jpg``/``.jpeg``/``.png`` (mode RGB, or RGBA whose alpha is dropped as the official loader does;
any other mode is refused) and ``.npy`` arrays of shape ``(1, 3, H, W)`` uint8 (GIRAFFE's CelebA-HQ export).
A file that cannot be read stops the run with one line naming it (the official loader silently drew
another image instead).

Dimension names: B batch; S the output size; H/W a file's size.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = ["ImageFolder", "ImageFolderError", "parse_images_spec"]

_SUFFIXES = (".jpg", ".jpeg", ".png", ".npy")
CropMode = Literal["random", "center", "resize", "none"]


class ImageFolderError(ValueError):
    """An empty or unreadable image folder, or an image of the wrong kind (the message names the file)."""


def parse_images_spec(spec: str) -> str:
    """The glob pattern of an ``images:PATTERN`` data spec (a bare directory means all its images).

    Raises:
        ImageFolderError: the spec does not start with ``images:``.
    """
    if not isinstance(spec, str) or not spec.startswith("images:"):
        raise ImageFolderError(f"an image-folder data spec looks like 'images:DIR/*.jpg', got {spec!r}")
    return spec[len("images:"):]


class ImageFolder:
    """Images matched by a glob pattern, decoded on demand (optionally kept in memory after the first read).

    Args:
        pattern: a glob pattern (``data/cars/images/*.jpg``) or a directory (all ``.jpg/.jpeg/.png/.npy``).
        size: output size S.
        crop: see the module docstring.
        center_crop: side of the centre crop (``crop="center"``).
        flip: random horizontal flips.
        cache: keep each decoded, deterministically resized image in memory after its first read.

    Raises:
        ImageFolderError: no file matches.

    Example:
        >>> data = ImageFolder("data/comprehensive_cars/images/*.jpg", 64, crop="random")
        >>> batch = data.sample(torch.arange(8), torch.Generator().manual_seed(0))   # (8, 3, 64, 64)
    """

    def __init__(self, pattern: str | os.PathLike, size: int, crop: CropMode = "resize", center_crop: int = 108,
                 flip: bool = True, cache: bool = True) -> None:
        if crop not in ("random", "center", "resize", "none"):
            raise ValueError(f"crop must be one of ['random', 'center', 'resize', 'none'], got {crop!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        pattern = os.fspath(pattern)
        if os.path.isdir(pattern):
            files = [str(p) for p in sorted(Path(pattern).iterdir()) if p.suffix.lower() in _SUFFIXES]
        else:
            files = sorted(glob.glob(pattern))
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise ImageFolderError(f"no image files match {pattern!r} (expected .jpg, .jpeg, .png or .npy files)")
        bad = [f for f in files if Path(f).suffix.lower() not in _SUFFIXES]
        if bad:
            raise ImageFolderError(f"{bad[0]}: not an image file (expected .jpg, .jpeg, .png or .npy)")
        self.files: list[str] = files
        self.size, self.crop, self.center_crop, self.flip = size, crop, center_crop, flip
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        """File ``index`` decoded: ``(H, W, 3)`` uint8.

        Raises:
            ImageFolderError: unreadable file, wrong mode or array layout.
        """
        path = self.files[index]
        if path.lower().endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as e:  # noqa: BLE001 - one clear line naming the file
                raise ImageFolderError(f"{path}: cannot read the array ({type(e).__name__}: {e})") from None
            if arr.ndim != 4 or arr.shape[:2] != (1, 3) or arr.dtype != np.uint8:
                raise ImageFolderError(f"{path}: expected a (1, 3, H, W) uint8 array, got {arr.shape} {arr.dtype}")
            return np.ascontiguousarray(arr[0].transpose(1, 2, 0))
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode not in ("RGB", "RGBA"):
                    raise ImageFolderError(f"{path}: not an RGB image (mode {mode}); convert the folder to RGB")
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        except ImageFolderError:
            raise
        except Exception as e:  # noqa: BLE001 - one clear line naming the file
            raise ImageFolderError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None

    def _prepared(self, index: int) -> np.ndarray:
        """The deterministic part of the transform (crop to the centre, resize), cached when asked."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        from PIL import Image

        img = self.read(index)
        h, w = img.shape[:2]
        s = self.size
        if self.crop == "none":
            if (h, w) != (s, s):
                raise ImageFolderError(f"{self.files[index]}: expected a {s}x{s} image, got {w}x{h}")
            out = img
        else:
            pil = Image.fromarray(img)
            if self.crop == "center":
                c = self.center_crop
                if min(h, w) < c:
                    raise ImageFolderError(f"{self.files[index]}: smaller ({w}x{h}) than the centre crop {c}")
                top, left = round((h - c) / 2.0), round((w - c) / 2.0)
                pil = pil.crop((left, top, left + c, top + c)).resize((s, s), Image.BILINEAR)
            elif self.crop == "resize":
                pil = pil.resize((s, s), Image.BILINEAR)
            else:  # random: shorter side to s, the crop happens per sample
                if h <= w:
                    new = (max(s, int(s * w / h)), s)
                else:
                    new = (s, max(s, int(s * h / w)))
                pil = pil.resize(new, Image.BILINEAR)
            out = np.asarray(pil, dtype=np.uint8)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def sample(self, indices: torch.Tensor | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Transformed images ``(B, 3, S, S)`` float32 in [0, 1] of files ``indices`` (random crops and flips
        drawn from ``generator``)."""
        idx = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        if any(i < 0 or i >= len(self) for i in idx):
            raise ValueError(f"indices must lie in [0, {len(self)}), got {idx}")
        s = self.size
        u = torch.rand(len(idx), 3, generator=generator)
        out = torch.empty(len(idx), s, s, 3, dtype=torch.uint8)
        for b, i in enumerate(idx):  # loop over the images of a batch (sizes differ before cropping)
            img = self._prepared(i)
            h, w = img.shape[:2]
            top = int(u[b, 0] * (h - s + 1)) if self.crop == "random" else 0
            left = int(u[b, 1] * (w - s + 1)) if self.crop == "random" else 0
            crop = img[top:top + s, left:left + s]
            if self.flip and u[b, 2] < 0.5:
                crop = crop[:, ::-1]
            out[b] = torch.from_numpy(np.array(crop, copy=True))
        return out.permute(0, 3, 1, 2).float() / 255.0
