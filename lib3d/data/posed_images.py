"""Posed images (images with their cameras) for radiance-field and volume fitting, loaded from a data spec.

Dimension names (see ``lib3d.data``): N views, H/W image size.

A data spec is one string (the ``--data`` of ``jobs.nerf`` and ``jobs.fit_volume``):

- ``"embedded"``: lib3d's procedural default scene (``lib3d.data.scenes.toy``) rendered from ``num_views``
  cameras with the book's recipe (``lib3d.data.renders.generate_renders``);
- ``"cow:PATH"``: the book's cow renders made by lib3d from the book's mesh ``PATH`` (``cow.obj`` with its
  ``.mtl`` and texture, e.g. ``data/cow_mesh/cow.obj`` as the book downloads it): ``generate_cow_renders``
  with ``num_views`` cameras ``look_at_view_transform(2.7, 0, azim)``, ``azim = linspace(-180, 180, N) +
  180``, on ``image_size`` pixels (the book: 40 views of 128 x 128);
- ``"blender:DIR"``: a NeRF Blender-format dataset (``lib3d.data.blender``), splits train, val and test
  concatenated, downscaled to ``image_size``.

Views with ``index % 8 == 0`` are the held-out test views (``split_indices``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

__all__ = ["DATA_SPEC_HELP", "PosedImages", "camera_subset", "check_data_spec", "load_posed_images",
           "split_indices"]

DATA_SPEC_HELP = "'embedded', 'cow:PATH/cow.obj' or 'blender:DIR'"


class PosedImages(NamedTuple):
    """Images with their cameras.

    Attributes:
        cameras: ``N`` cameras (``FoVPerspectiveCameras`` or ``PerspectiveCameras``).
        images: ``(N, H, W, 3)`` float RGB in [0, 1] (composited on ``background``).
        silhouettes: ``(N, H, W)`` float in [0, 1], or None.
        background: the background colour the images were composited on (0 black, 1 white).
    """

    cameras: Any
    images: torch.Tensor
    silhouettes: torch.Tensor | None
    background: float


def check_data_spec(source: str) -> None:
    """Check that a data spec names a source that exists, without loading it.

    Raises:
        FileNotFoundError: the mesh of ``cow:PATH`` or the folder of ``blender:DIR`` (or any
            ``transforms_{train,val,test}.json`` in it) is missing; the message names the path.
        ValueError: an unknown spec.
    """
    if source == "embedded":
        return
    if source.startswith("cow:"):
        path = Path(source[len("cow:"):]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--data {source}: no mesh file {str(path)!r} (the book's cow.obj, with its "
                                    "cow.mtl and cow_texture.png beside it)")
        return
    if source.startswith("blender:"):
        root = Path(source[len("blender:"):]).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {source}: no dataset folder {str(root)!r}")
        if not any((root / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
            raise FileNotFoundError(f"--data {source}: {str(root)!r} holds no transforms_train.json, "
                                    "transforms_val.json or transforms_test.json (a NeRF Blender-format folder)")
        return
    if source == "cow":
        raise ValueError("--data cow: give the book's mesh, e.g. --data cow:data/cow_mesh/cow.obj")
    raise ValueError(f"--data must be {DATA_SPEC_HELP}, got {source!r}")


def load_posed_images(source: str, image_size: int = 128, num_views: int = 40, device=None) -> PosedImages:
    """Load (or render) the posed images of a data spec (see the module docstring).

    Args:
        source: ``"embedded"``, ``"cow:PATH"`` or ``"blender:DIR"``.
        image_size: rendered size (``embedded``, ``cow:``); target height (downscale) for ``blender:``.
        num_views: views rendered for ``embedded`` and ``cow:``.
        device: device of the tensors and cameras.

    Returns:
        ``PosedImages`` (silhouettes: the soft silhouettes of the renders, the alpha of Blender images).

    Raises:
        FileNotFoundError, ValueError: as ``check_data_spec``.
    """
    check_data_spec(source)
    if source == "embedded" or source.startswith("cow:"):
        from lib3d.data.renders import generate_renders
        from lib3d.data.scenes import load_mesh

        mesh = None if source == "embedded" else load_mesh(Path(source[len("cow:"):]).expanduser(), device=device)
        v = generate_renders(mesh, num_views=num_views, image_size=image_size, device=device)
        return PosedImages(v.cameras, v.images, v.silhouettes, 0.0)
    from lib3d.data.blender import load_blender
    from lib3d.geometry import FoVPerspectiveCameras

    root = source[len("blender:"):]
    parts = [load_blender(root, split, image_size=image_size, device=device) for split in ("train", "val", "test")]
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        p = parts[0]
        return PosedImages(p.cameras, p.images, p.alpha, p.background)
    if not all(isinstance(p.cameras, FoVPerspectiveCameras) for p in parts):
        raise ValueError(f"--data {source}: several splits of non-square images cannot be joined yet")
    cams = FoVPerspectiveCameras(R=torch.cat([p.cameras.R for p in parts]), T=torch.cat([p.cameras.T for p in parts]),
                                 fov=torch.cat([p.cameras.fov.reshape(-1) for p in parts]), znear=0.1, zfar=100.0)
    return PosedImages(cams, torch.cat([p.images for p in parts]), torch.cat([p.alpha for p in parts]),
                       parts[0].background)


def split_indices(n: int, every: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` long view indices: the test views are those with ``index % every == 0``."""
    if n < 2 or every < 2:
        raise ValueError(f"split_indices needs n >= 2 views and every >= 2, got n={n}, every={every}")
    idx = torch.arange(n)
    return idx[idx % every != 0], idx[idx % every == 0]


def camera_subset(cameras, idx: torch.Tensor):
    """The cameras at the long indices ``idx`` (any lib3d camera class, through ``__getitem__``)."""
    return cameras[[int(i) for i in idx.reshape(-1).tolist()]]
