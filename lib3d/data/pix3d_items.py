"""Pix3D images as Mesh R-CNN items, read lazily: the real-data feed of ``jobs.meshrcnn`` / ``jobs.meshrcnn_eval``
(``--data.source pix3d``).

Dimension names: S image side (square items); G objects of an image (1 in Pix3D); V/F mesh vertices/faces;
Q voxel points of an object.

Each image of a split becomes a :class:`lib3d.data.furniture.FurnitureImage`, the item type that
:mod:`lib3d.systems.meshrcnn` trains and evaluates on, when it is indexed (nothing is read up front but the
jsons); models are parsed once per path and kept in a small cache (:class:`Pix3DModels`).

Resizing (Mesh R-CNN's ``ResizeShortestEdge`` + detectron2's padding, made square): an image of ``(W, H)``
pixels is scaled by ``s = S / max(W, H)`` to ``(w, h) = (round(s W), round(s H))`` (PIL bilinear; JPEGs are
first decoded at the smallest DCT scale that is still at least that size) and padded with black at the right
and bottom to ``S x S``. Boxes scale by ``(w / W, h / H)`` (clipped to the image), the mask is resized
bilinearly and kept where it is > 127 (Mesh R-CNN's ``/ 255 >= 0.5``).

Camera. Pix3D places the camera at the origin and the model at ``X = R V + t`` (``rot_mat``, ``trans_mat``), in
PyTorch3D's view space (+X left, +Y up, +Z forward); a point is seen at ``u = W / 2 - f X / Z``, ``v = H / 2 -
f Y / Z`` with ``f = focal_length * W / 32`` pixels (Mesh R-CNN's issue 8: ``K = (f, W / 2, H / 2)``). The
item's mesh is the model in that camera space (metric, as Mesh R-CNN's Pix3D evaluation compares it) and its
camera is ``K = (s f, w / 2 + 1, h / 2 + 1)`` in lib3d's convention ``u = (px - 1) - f X / Z``
(:mod:`lib3d.detect.mesh_head`), so the projection lands on the resized image exactly. (Mesh R-CNN's mapper
keeps ``f`` and scales the camera-space X and Y by the resize factors instead, which gives the same pixels, the
same box-normalised mesh and voxel targets and the same ``dz``; its box transform puts the principal point at
``w / 2 - 1``, one pixel from the projection above.)

Targets: ``dz = (z_max - z_min) / z_centre * s f`` of the camera-space mesh (the mapper's ``dz`` times its
``new_h / h``); voxel points are :func:`lib3d.data.pix3d.read_voxel_mat`'s model-frame points moved by the
same ``R``, ``t``; ``instances`` index the split's model paths (sorted). Images whose mask does not match
them in Pix3D are left out, as Mesh R-CNN does (``img/table/1749.jpg``, ``img/table/0045.png``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lib3d.data.furniture import FurnitureImage
from lib3d.data.pix3d import PIX3D_CATEGORIES, Pix3DRecord, load_pix3d, load_pix3d_split, read_voxel_mat
from lib3d.io.errors import FormatError

__all__ = [
    "EXCLUDED_IMAGES",
    "Pix3DData",
    "Pix3DImages",
    "Pix3DModels",
    "Pix3DSplit",
    "load_pix3d_data",
    "load_pix3d_records",
    "pix3d_item",
    "resize_image",
]

EXCLUDED_IMAGES = ("img/table/1749.jpg", "img/table/0045.png")
"""Pix3D images whose masks do not match them; Mesh R-CNN's loader skips them (paths relative to the root)."""


def _resized_size(width: int, height: int, size: int) -> tuple[float, int, int]:
    s = size / max(width, height)
    return s, max(1, round(width * s)), max(1, round(height * s))


def resize_image(path: str | Path, expected_size: tuple[int, int], size: int, mask: bool = False) -> torch.Tensor:
    """Read an image (or mask), scale its longest side to ``size`` and pad it to ``size x size``.

    Args:
        path: an image PIL reads.
        expected_size: ``(W, H)`` the annotation gives; the file must have it.
        size: S.
        mask: read a mask: its first channel, resized and thresholded at > 127.

    Returns:
        ``(3, S, S) uint8`` RGB (an image) or ``(S, S) bool`` (a mask), zero where padded.

    Raises:
        FileNotFoundError: no such file.
        FormatError: a file PIL cannot read, or one whose size is not ``expected_size``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {'mask' if mask else 'image'} file")
    w0, h0 = (int(v) for v in expected_size)
    _, w, h = _resized_size(w0, h0, size)
    try:
        with Image.open(path) as im:
            if im.size != (w0, h0):
                raise FormatError(str(path), None, f"the file is {im.size[0]}x{im.size[1]} but its annotation says "
                                                   f"{w0}x{h0}")
            if im.format == "JPEG":
                im.draft(None, (w, h))  # DCT-domain downscale, never below (w, h)
            if mask:
                band = im.getchannel(0) if len(im.getbands()) > 1 else im
                small = band.convert("L").resize((w, h), Image.BILINEAR)
            else:
                small = im.convert("RGB").resize((w, h), Image.BILINEAR)
            arr = np.array(small)  # a writable copy
    except (UnidentifiedImageError, OSError) as e:
        raise FormatError(str(path), None, f"not a readable image ({e})") from None
    if mask:
        out = torch.zeros(size, size, dtype=torch.bool)
        out[:h, :w] = torch.from_numpy(arr > 127)
        return out
    out = torch.zeros(3, size, size, dtype=torch.uint8)
    out[:, :h, :w] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


class Pix3DModels:
    """Pix3D models in their model frame, each parsed once and kept for the ``capacity`` most recently used
    paths (least recently used dropped first).

    ``mesh(path)`` is ``(verts (V, 3) float32, faces (F, 3) int64)`` of the OBJ (:func:`lib3d.io.load_obj`,
    no materials); ``voxels(path)`` is ``(Q, 3) float32`` of :func:`lib3d.data.pix3d.read_voxel_mat`.
    """

    def __init__(self, capacity: int = 128):
        if not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def _get(self, key: tuple[str, Path], load):
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = load(key[1])
        if self.capacity:
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return value

    def mesh(self, path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        return self._get(("mesh", Path(path)), _load_mesh)

    def voxels(self, path: str | Path) -> torch.Tensor:
        return self._get(("voxel", Path(path)), read_voxel_mat)

    def __len__(self) -> int:
        return len(self._entries)


def _load_mesh(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from lib3d.io import load_obj

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    verts, faces, _ = load_obj(path, load_textures=False)
    if faces.verts_idx.shape[0] == 0:
        raise FormatError(str(path), None, "the model has no faces")
    return verts, faces.verts_idx


def pix3d_item(records: Sequence[Pix3DRecord], image_size: int, models: Pix3DModels,
               instance_ids: dict | None = None, categories: Sequence[str] = PIX3D_CATEGORIES) -> FurnitureImage:
    """One image's annotations as a Mesh R-CNN item (see the module docstring for the conventions).

    Args:
        records: the G records of one image (same ``image``; Pix3D: one).
        image_size: S.
        models: the model cache.
        instance_ids: ``{model path: id}`` for ``instances`` (default: -1).
        categories: class names; ``classes`` are the positions of the records' categories.

    Returns:
        :class:`lib3d.data.furniture.FurnitureImage` with ``image (3, S, S) uint8``, ``K (3,)``, ``boxes (G,
        4)``, ``classes (G,)``, ``masks (G, S, S) bool``, G camera-space meshes, ``voxel_points (G, Q, 3)``,
        ``voxel_lengths (G,)``, ``dz (G,)``, ``instances (G,)``.

    Raises:
        ValueError: no records, records of different images, or a category not in ``categories``.
        FileNotFoundError, FormatError: a missing or unreadable image, mask, model or voxel file.
    """
    if not records:
        raise ValueError("records must hold at least one record of the image, got none")
    first = records[0]
    if any(r.image != first.image or r.image_size != first.image_size for r in records):
        raise ValueError(f"records must all belong to one image, got {sorted({str(r.image) for r in records})}")
    for r in records:
        if r.category not in categories:
            raise ValueError(f"category {r.category!r} of {r.image} is not one of {tuple(categories)}")
    w0, h0 = first.image_size
    s, w, h = _resized_size(w0, h0, image_size)
    image = resize_image(first.image, first.image_size, image_size)
    f = float(first.K[0]) * s
    scale = torch.tensor([w / w0, h / h0, w / w0, h / h0])
    limit = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = torch.stack([r.box for r in records]).float() * scale
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    masks = torch.stack([resize_image(r.mask, r.image_size, image_size, mask=True) for r in records])
    meshes, points, dz = [], [], []
    for r in records:  # the image's objects (one in Pix3D)
        verts, faces = models.mesh(r.model)
        cam = verts @ r.R.T + r.t
        z0, z1 = cam[:, 2].min(), cam[:, 2].max()
        dz.append((z1 - z0) / ((z1 + z0) / 2) * f)
        meshes.append((cam, faces))
        if r.voxel is None:
            raise FormatError(str(r.image), None, "its annotation names no voxel file (Pix3D's model/.../voxel.mat)")
        points.append(models.voxels(r.voxel) @ r.R.T + r.t)
    q = max(p.shape[0] for p in points)
    vp = torch.zeros(len(records), q, 3)
    for i, p in enumerate(points):  # the image's objects
        vp[i, : p.shape[0]] = p
    ids = instance_ids or {}
    return FurnitureImage(
        image=image, K=torch.tensor([f, w / 2 + 1.0, h / 2 + 1.0]), boxes=boxes,
        classes=torch.tensor([list(categories).index(r.category) for r in records], dtype=torch.int64),
        masks=masks, meshes=meshes, voxel_points=vp,
        voxel_lengths=torch.tensor([p.shape[0] for p in points], dtype=torch.int64),
        dz=torch.stack(dz).float(), instances=torch.tensor([ids.get(r.model, -1) for r in records], dtype=torch.int64))


class Pix3DImages(Sequence):
    """The resized images of a split only (``(3, S, S) uint8`` each, read when indexed): what a predictor
    needs, light to send to Ray Data actors."""

    def __init__(self, paths: Sequence[Path], sizes: Sequence[tuple[int, int]], image_size: int):
        self.paths, self.sizes, self.image_size = list(paths), list(sizes), int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Pix3DImages(self.paths[i], self.sizes[i], self.image_size)
        return resize_image(self.paths[i], self.sizes[i], self.image_size)


class Pix3DSplit(Sequence):
    """A lazy list of Mesh R-CNN items: ``split[i]`` reads image i (:func:`pix3d_item`); a slice is another
    lazy split sharing the model cache.

    Attributes:
        groups: one tuple of records per image.
        image_size: S.
        models: the shared :class:`Pix3DModels`.
        instance_ids: ``{model path: id}``.
        categories: class names.
    """

    def __init__(self, groups: Sequence[tuple[Pix3DRecord, ...]], image_size: int, models: Pix3DModels,
                 instance_ids: dict, categories: Sequence[str] = PIX3D_CATEGORIES):
        self.groups = list(groups)
        self.image_size = int(image_size)
        self.models = models
        self.instance_ids = instance_ids
        self.categories = tuple(categories)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Pix3DSplit(self.groups[i], self.image_size, self.models, self.instance_ids, self.categories)
        return pix3d_item(self.groups[i], self.image_size, self.models, self.instance_ids, self.categories)

    def images(self) -> Pix3DImages:
        """The split's images alone (for batched prediction)."""
        return Pix3DImages([g[0].image for g in self.groups], [g[0].image_size for g in self.groups],
                           self.image_size)


@dataclasses.dataclass(frozen=True)
class Pix3DData:
    """Pix3D through the interface of :class:`lib3d.data.furniture.FurnitureData`: lazy ``train`` and ``test``
    splits, the square item side ``image_size``, ``focal`` None (it differs per image: see each item's ``K``)
    and the 9 ``categories``."""

    train: Pix3DSplit
    test: Pix3DSplit
    image_size: int
    focal: float | None = None
    categories: tuple = PIX3D_CATEGORIES


def load_pix3d_records(json_path: str | Path, root: str | Path, check_files: bool = True) -> list[Pix3DRecord]:
    """The records of a split file: Mesh R-CNN's COCO-layout json (an object) or Pix3D's own ``pix3d.json``
    (a list), told apart by the first character; paths resolve against ``root``.

    Raises:
        FileNotFoundError: no such json (or, with ``check_files``, a missing image, mask, model or voxel).
        FormatError: a malformed json (file and line), or a category that is not one of Pix3D's 9.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Pix3D split json")
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        records = load_pix3d(path, root)
        if check_files:
            for i, r in enumerate(records):
                for f in (r.image, r.mask, r.model, r.voxel):
                    if f is not None and not f.is_file():
                        raise FileNotFoundError(f"{path}, entry {i}: {f} does not exist")
    else:
        records = load_pix3d_split(path, root, check_files=check_files)
    for r in records:
        if r.category not in PIX3D_CATEGORIES:
            raise FormatError(str(path), None, f"category {r.category!r} (image {r.image}) is not one of Pix3D's "
                                               f"{PIX3D_CATEGORIES}")
    return records


def _group(records: Sequence[Pix3DRecord], root: Path) -> list[tuple[Pix3DRecord, ...]]:
    excluded = {root / p for p in EXCLUDED_IMAGES}
    groups: dict[Path, list[Pix3DRecord]] = {}
    for r in records:
        if r.image not in excluded:
            groups.setdefault(r.image, []).append(r)
    return [tuple(g) for g in groups.values()]


def load_pix3d_data(root: str | Path, image_size: int, split: str = "s1", train_json: str | Path | None = None,
                    test_json: str | Path | None = None, model_cache: int = 128,
                    check_files: bool = True) -> Pix3DData:
    """Pix3D with Mesh R-CNN's split, as lazy Mesh R-CNN items.

    Args:
        root: Pix3D's folder (``img/``, ``mask/``, ``model/``, the jsons).
        image_size: S, the side of the square items.
        split: Mesh R-CNN's split name: ``<root>/pix3d_<split>_train.json`` and ``..._test.json`` (``s1``, ``s2``).
        train_json, test_json: other split files (relative to ``root`` or absolute): Mesh R-CNN's COCO layout
            or Pix3D's ``pix3d.json`` layout.
        model_cache: models kept parsed (:class:`Pix3DModels`).
        check_files: check now that every image, mask, model and voxel file exists.

    Returns:
        :class:`Pix3DData`.

    Raises:
        ValueError: ``image_size`` < 1.
        FileNotFoundError: no such root or json, or (with ``check_files``) a missing referenced file.
        FormatError: a malformed json (file and line named).
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Pix3D folder")

    def resolve(p, kind: str) -> Path:
        p = Path(p) if p else Path(f"pix3d_{split}_{kind}.json")
        return p if p.is_absolute() else root / p

    train = load_pix3d_records(resolve(train_json, "train"), root, check_files)
    test = load_pix3d_records(resolve(test_json, "test"), root, check_files)
    ids = {p: i for i, p in enumerate(sorted({r.model for r in train + test}))}
    models = Pix3DModels(model_cache)
    return Pix3DData(train=Pix3DSplit(_group(train, root), image_size, models, ids),
                     test=Pix3DSplit(_group(test, root), image_size, models, ids), image_size=image_size)
