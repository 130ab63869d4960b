"""Loaders of the real datasets of Mesh R-CNN: Pix3D, ShapeNet R2N2 renders and voxels, COCO-format detection.

Dimension names: G objects of an image; H/W image size; V views of a model; D/H/W voxel grid.

- ``load_pix3d``: the dataset's own ``pix3d.json`` (a list with one entry per image: ``img``, ``category``,
  ``img_size``, ``bbox`` (XYXY), ``mask``, ``model``, ``voxel``, ``rot_mat``, ``trans_mat``,
  ``focal_length``, ...); returns :class:`Pix3DRecord` with Mesh R-CNN's camera ``K = (f * w / 32, w / 2,
  h / 2)`` (Pix3D's focal length is in mm on a 32 mm sensor).
- ``load_coco_json``: COCO instance json (``images``, ``annotations`` with ``bbox`` in XYWH, ``categories``),
  including Mesh R-CNN's Pix3D splits (``pix3d_s1_train.json``: annotations add ``K``, ``rot_mat``,
  ``trans_mat``, ``model``, ``voxel``, ``segmentation`` as a mask file); category ids are mapped to
  contiguous indices in sorted-id order (detectron2's rule).
- ``read_binvox``: a ``.binvox`` run-length voxel file (ShapeNet R2N2's ``model.binvox``) as ``(D, H, W)``
  = (x, y, z) occupancy plus its ``translate`` and ``scale``.
- ``load_r2n2_views``: the renders of one ShapeNet model (``rendering/renderings.txt``, the PNGs and
  ``rendering_metadata.txt``: azimuth, elevation, in-plane rotation, distance ratio, field of view).
- ``read_mask``: a mask PNG as ``(H, W) bool`` (Pix3D masks are 8-bit, object > 127).
- ``load_pix3d_split``: Mesh R-CNN's split json (``pix3d_s1_train.json``, ...) as the same :class:`Pix3DRecord` s
  that ``load_pix3d`` gives (one per annotation; ``K``, ``rot_mat``, ``trans_mat``, ``model``, ``voxel`` and
  the mask path ``segmentation`` checked).
- ``read_voxel_mat``: Pix3D's ``voxel.mat`` (a 128^3 occupancy) as Mesh R-CNN's ``read_voxel`` makes it: the
  occupied voxels as points in the model frame.

``PIX3D_CATEGORIES`` are Pix3D's 9 categories in Mesh R-CNN's (and the split jsons') class order.

Malformed files raise :class:`lib3d.io.FormatError` naming the file and the line (json: the decoder's line;
text files: the line) or the entry; missing files raise ``FileNotFoundError`` naming them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lib3d.io.errors import FormatError

__all__ = [
    "PIX3D_CATEGORIES",
    "COCOImage",
    "Pix3DRecord",
    "R2N2Views",
    "load_coco_json",
    "load_pix3d",
    "load_pix3d_split",
    "load_r2n2_views",
    "read_binvox",
    "read_mask",
    "read_voxel_mat",
]

PIX3D_CATEGORIES = ("bed", "bookcase", "chair", "desk", "misc", "sofa", "table", "tool", "wardrobe")
"""Pix3D's categories; the class index is the position (the sorted names, as the split jsons' ids 1..9)."""


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(str(path), None, f"not UTF-8 text ({e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(str(path), f"line {e.lineno}", f"malformed json: {e.msg}") from None


def _entry_line(path: Path, needle: str) -> str | None:
    """The line where a json entry starts (best effort, for messages)."""
    try:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if needle in line:
                return f"line {i}"
    except OSError:  # pragma: no cover
        return None
    return None


class Pix3DRecord(NamedTuple):
    """One image of ``pix3d.json`` (one object per image).

    Attributes:
        image: path of the image; mask: path of the mask PNG; model: path of the ``.obj``; voxel: path of the
            ``.mat`` voxels (or None).
        category: class name; class_id: index into the sorted categories of the file.
        image_size: ``(W, H)``; box: ``(4,) float`` XYXY pixels.
        K: ``(3,) float`` ``(f, px, py)`` in pixels (Mesh R-CNN's convention); R: ``(3, 3) float``;
        t: ``(3,) float`` model-to-camera rotation and translation.
        truncated, occluded: Pix3D's flags.
    """

    image: Path
    mask: Path
    model: Path
    voxel: Path | None
    category: str
    class_id: int
    image_size: tuple[int, int]
    box: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    truncated: bool
    occluded: bool


def _field(entry: dict, key: str, path: Path, index: int, shape: tuple | None = None):
    if key not in entry:
        raise FormatError(str(path), _entry_line(path, json.dumps(entry.get("img", ""))) or f"entry {index}",
                          f"entry {index} has no {key!r}")
    value = entry[key]
    if shape is not None:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != shape or not np.isfinite(arr).all():
            raise FormatError(str(path), _entry_line(path, json.dumps(entry.get("img", ""))) or f"entry {index}",
                              f"entry {index}: {key!r} must be finite numbers of shape {shape}, got {value!r}")
        return torch.from_numpy(arr).float()
    return value


def load_pix3d(json_path: str | Path, root: str | Path | None = None, check_files: bool = False) -> list[Pix3DRecord]:
    """Read Pix3D's ``pix3d.json``.

    Args:
        json_path: the file.
        root: directory the relative paths are resolved against (default: the json's directory).
        check_files: raise ``FileNotFoundError`` for an image, mask or model that does not exist.

    Returns:
        One :class:`Pix3DRecord` per entry.

    Raises:
        FormatError: malformed json, a missing field or a field of the wrong shape (file and line named).
        FileNotFoundError: the json (or, with ``check_files``, a referenced file) does not exist.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Pix3D json file")
    root = path.parent if root is None else Path(root)
    data = _read_json(path)
    if not isinstance(data, list):
        raise FormatError(str(path), "line 1", "pix3d.json must be a list of image entries")
    cats = sorted({str(e.get("category", "")) for e in data if isinstance(e, dict)})
    out = []
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise FormatError(str(path), f"entry {i}", f"entry {i} must be an object")
        w, h = (int(v) for v in _field(e, "img_size", path, i, (2,)).tolist())
        box = _field(e, "bbox", path, i, (4,))
        focal = float(_field(e, "focal_length", path, i, ()))
        rec = Pix3DRecord(
            image=root / str(_field(e, "img", path, i)), mask=root / str(_field(e, "mask", path, i)),
            model=root / str(_field(e, "model", path, i)), voxel=(root / e["voxel"]) if e.get("voxel") else None,
            category=str(_field(e, "category", path, i)), class_id=cats.index(str(e["category"])),
            image_size=(w, h), box=box, K=torch.tensor([focal * w / 32.0, w / 2.0, h / 2.0]),
            R=_field(e, "rot_mat", path, i, (3, 3)), t=_field(e, "trans_mat", path, i, (3,)),
            truncated=bool(e.get("truncated", False)), occluded=bool(e.get("occluded", False)))
        if check_files:
            for f in (rec.image, rec.mask, rec.model):
                if not f.is_file():
                    raise FileNotFoundError(f"{path}, entry {i}: {f} does not exist")
        out.append(rec)
    return out


class COCOImage(NamedTuple):
    """One image of a COCO-format json.

    Attributes:
        file_name: path of the image; image_id: COCO id; height, width: pixels.
        boxes: ``(G, 4) float`` XYXY pixels; classes: ``(G,) int64`` contiguous class indices;
        iscrowd: ``(G,) bool``.
        extra: G dicts with the annotations' other fields (``segmentation``, and for Mesh R-CNN's Pix3D
            splits ``K``, ``rot_mat``, ``trans_mat``, ``model``, ``voxel``), paths resolved against the root.
    """

    file_name: Path
    image_id: int
    height: int
    width: int
    boxes: torch.Tensor
    classes: torch.Tensor
    iscrowd: torch.Tensor
    extra: list


def load_coco_json(json_path: str | Path, image_root: str | Path | None = None) -> tuple[list[COCOImage], list[str]]:
    """Read a COCO instance-annotation json (detectron2's ``load_coco_json`` / Mesh R-CNN's ``load_pix3d_json``).

    Args:
        json_path: the file.
        image_root: directory of ``file_name`` and of mask / model / voxel paths (default: the json's).

    Returns:
        ``(images sorted by id, class names in contiguous order)``.

    Raises:
        FormatError: malformed json, missing keys, an annotation of an unknown image or category, a bad box.
        FileNotFoundError: no such json.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such COCO json file")
    root = path.parent if image_root is None else Path(image_root)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise FormatError(str(path), "line 1", "a COCO json must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise FormatError(str(path), None, f"missing list {key!r}")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    images = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "height", "width"} <= set(im):
            raise FormatError(str(path), _entry_line(path, '"images"'), f"images[{i}] needs id, file_name, height, width")
        images[im["id"]] = im
    anns: dict = {k: [] for k in images}
    for j, a in enumerate(data["annotations"]):
        where = _entry_line(path, f'"id": {a.get("id")}') if isinstance(a, dict) and "id" in a else None
        if not isinstance(a, dict) or not {"image_id", "bbox", "category_id"} <= set(a):
            raise FormatError(str(path), where, f"annotations[{j}] needs image_id, bbox, category_id")
        if a["image_id"] not in images:
            raise FormatError(str(path), where, f"annotations[{j}] refers to unknown image {a['image_id']!r}")
        if a["category_id"] not in id_map:
            raise FormatError(str(path), where, f"annotations[{j}] has unknown category {a['category_id']!r}")
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (TypeError, ValueError):
            raise FormatError(str(path), where, f"annotations[{j}].bbox must be 4 numbers [x, y, w, h], "
                                                f"got {a['bbox']!r}") from None
        if not (math.isfinite(x + y + w + h) and w >= 0 and h >= 0):
            raise FormatError(str(path), where, f"annotations[{j}].bbox must be finite with w, h >= 0, got {a['bbox']}")
        anns[a["image_id"]].append((j, a, [x, y, x + w, y + h]))
    out = []
    for img_id in sorted(images):
        im = images[img_id]
        rows = anns[img_id]
        extra = []
        for _, a, _ in rows:
            e = {k: v for k, v in a.items() if k not in ("bbox", "category_id", "image_id", "iscrowd")}
            for k in ("segmentation", "model", "voxel"):
                if isinstance(e.get(k), str):
                    e[k] = root / e[k]
            extra.append(e)
        out.append(COCOImage(
            file_name=root / im["file_name"], image_id=int(img_id), height=int(im["height"]), width=int(im["width"]),
            boxes=torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(-1, 4),
            classes=torch.tensor([id_map[r[1]["category_id"]] for r in rows], dtype=torch.int64),
            iscrowd=torch.tensor([bool(r[1].get("iscrowd", 0)) for r in rows], dtype=torch.bool), extra=extra))
    return out, names


def read_binvox(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Read a ``.binvox`` file (Patrick Min's format: ASCII header, then run-length ``(value, count)`` bytes).

    The file stores voxels with y running fastest, then z, then x; the result is indexed ``[x, y, z]``.

    Returns:
        ``(occupancy (D, H, W) bool indexed [x, y, z], translate (3,) float, scale float)``.

    Raises:
        FormatError: a bad header (line named), truncated or overlong run-length data.
    """
    path = Path(path)
    raw = path.read_bytes()
    pos = 0
    header: dict[str, list[str]] = {}
    for line_no in range(1, 10):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise FormatError(str(path), f"line {line_no}", "truncated header")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if line_no == 1:
            if not line.startswith("#binvox"):
                raise FormatError(str(path), "line 1", f"not a binvox file (starts with {line[:20]!r})")
            continue
        if line == "data":
            break
        parts = line.split()
        if not parts or parts[0] not in ("dim", "translate", "scale"):
            raise FormatError(str(path), f"line {line_no}", f"unexpected header line {line!r}")
        header[parts[0]] = parts[1:]
    else:
        raise FormatError(str(path), None, "no 'data' line in the header")
    try:
        dims = [int(v) for v in header["dim"]]
        translate = torch.tensor([float(v) for v in header.get("translate", ["0", "0", "0"])])
        scale = float(header.get("scale", ["1"])[0])
    except (KeyError, ValueError):
        raise FormatError(str(path), None, f"bad dim / translate / scale header {header}") from None
    if len(dims) != 3 or min(dims) < 1 or translate.shape != (3,):
        raise FormatError(str(path), None, f"dim must be 3 positive ints, got {header.get('dim')}")
    body = np.frombuffer(raw[pos:], dtype=np.uint8)
    if body.size % 2:
        raise FormatError(str(path), None, "run-length data has an odd number of bytes (truncated)")
    values, counts = body[0::2], body[1::2].astype(np.int64)
    n = int(np.prod(dims))
    if int(counts.sum()) != n:
        raise FormatError(str(path), None, f"run-length data covers {int(counts.sum())} voxels, dim says {n}")
    flat = np.repeat(values > 0, counts)
    vox = flat.reshape(dims[0], dims[2], dims[1]).transpose(0, 2, 1)  # (x, z, y) -> (x, y, z)
    return torch.from_numpy(np.ascontiguousarray(vox)), translate, scale


class R2N2Views(NamedTuple):
    """Renders of one ShapeNet model (Choy et al. 2016).

    Attributes:
        images: ``(V, H, W, 4) uint8`` RGBA renders (137 x 137 in R2N2).
        azimuth, elevation, in_plane, distance_ratio, fov: ``(V,) float`` the metadata columns (degrees;
            the camera distance is ``distance_ratio * 1.75`` in ShapeNet units).
        names: the V image file names.
    """

    images: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    in_plane: torch.Tensor
    distance_ratio: torch.Tensor
    fov: torch.Tensor
    names: list


def load_r2n2_views(model_dir: str | Path) -> R2N2Views:
    """Read ``<model_dir>/rendering/{renderings.txt, rendering_metadata.txt, *.png}``.

    Raises:
        FileNotFoundError: a missing file (named).
        FormatError: a metadata line without 5 numbers (file and line named), mismatched counts, a PNG that
            is not RGB(A) or of a different size than the first.
    """
    from PIL import Image

    d = Path(model_dir) / "rendering"
    names_file, meta_file = d / "renderings.txt", d / "rendering_metadata.txt"
    for f in (names_file, meta_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such R2N2 file")
    names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    rows = []
    for i, ln in enumerate(meta_file.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        try:
            vals = [float(v) for v in ln.split()]
        except ValueError:
            vals = []
        if len(vals) != 5 or not all(math.isfinite(v) for v in vals):
            raise FormatError(str(meta_file), f"line {i}", f"expected 5 numbers (azimuth elevation in-plane "
                                                         f"distance-ratio fov), got {ln.strip()!r}")
        rows.append(vals)
    if len(rows) != len(names):
        raise FormatError(str(meta_file), None, f"{len(rows)} metadata lines for {len(names)} renderings")
    images = []
    for name in names:
        f = d / name
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such render (listed in {names_file})")
        with Image.open(f) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise FormatError(str(f), None, f"expected an RGB(A) image, got mode {im.mode}")
            arr = np.asarray(im.convert("RGBA"))
        if images and arr.shape != images[0].shape:
            raise FormatError(str(f), None, f"size {arr.shape[:2]} differs from the first render's {images[0].shape[:2]}")
        images.append(arr)
    meta = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)
    imgs = torch.from_numpy(np.stack(images)) if images else torch.zeros(0, 0, 0, 4, dtype=torch.uint8)
    return R2N2Views(imgs, meta[:, 0], meta[:, 1], meta[:, 2], meta[:, 3], meta[:, 4], names)


def read_mask(path: str | Path) -> torch.Tensor:
    """A mask PNG as ``(H, W) bool`` (gray or RGB; a pixel is in the mask when its first channel > 127)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(arr > 127)


def _annotation_line(path: Path, ann_id) -> str | None:
    """The line of the annotation with id ``ann_id`` (the first ``"id": <ann_id>`` after ``"annotations"``)."""
    import re

    pattern = re.compile(r'"id"\s*:\s*' + re.escape(json.dumps(ann_id)) + r"(?![\w.])")
    seen = False
    try:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            start = 0
            if not seen and '"annotations"' in line:
                seen, start = True, line.index('"annotations"')
            if seen and pattern.search(line, start):
                return f"line {i}"
    except OSError:  # pragma: no cover
        return None
    return None


def load_pix3d_split(json_path: str | Path, root: str | Path | None = None,
                     check_files: bool = False) -> list[Pix3DRecord]:
    """Read Mesh R-CNN's Pix3D split json (``pix3d_s1_train.json`` / ``pix3d_s1_test.json``, COCO layout).

    Each non-crowd annotation becomes a :class:`Pix3DRecord` (Pix3D has one object per image): ``bbox``
    (XYWH) becomes XYXY; ``K`` is the json's ``(f, px, py)`` (``f = focal_length * W / 32`` pixels, ``(px, py)
    = (W / 2, H / 2)``, Mesh R-CNN's issue 8); ``R``, ``t`` are ``rot_mat``, ``trans_mat``; the mask is the
    annotation's ``segmentation`` path; ``category`` is the name of its ``category_id`` and ``class_id`` its
    contiguous index (sorted ids, detectron2's rule).

    Args:
        json_path: the file.
        root: Pix3D's folder, against which image, mask, model and voxel paths are resolved (default: the
            json's directory).
        check_files: raise ``FileNotFoundError`` for an image, mask, model or voxel file that does not exist.

    Returns:
        The records, in image-id order.

    Raises:
        FormatError: malformed json (see :func:`load_coco_json`), or an annotation without a mask path or a
            model, or with a ``K`` / ``rot_mat`` / ``trans_mat`` that is not finite numbers of shape
            ``(3,)`` / ``(3, 3)`` / ``(3,)`` (file and line named).
        FileNotFoundError: no such json (or, with ``check_files``, a referenced file).
    """
    path = Path(json_path)
    root = path.parent if root is None else Path(root)
    images, names = load_coco_json(path, root)
    out = []
    for im in images:
        for g, e in enumerate(im.extra):
            if bool(im.iscrowd[g]):
                continue
            where = _annotation_line(path, e["id"]) if "id" in e else None
            where = where or f"annotation of image {im.image_id}"
            shaped = {}
            for key, shape in (("K", (3,)), ("rot_mat", (3, 3)), ("trans_mat", (3,))):
                try:
                    arr = np.asarray(e.get(key), dtype=np.float64)
                except (TypeError, ValueError):
                    arr = None
                if arr is None or arr.shape != shape or not np.isfinite(arr).all():
                    raise FormatError(str(path), where, f"the annotation of image {im.image_id} needs {key!r} as "
                                                        f"finite numbers of shape {shape}, got {e.get(key)!r}")
                shaped[key] = torch.from_numpy(arr).float()
            for key in ("segmentation", "model"):
                if not isinstance(e.get(key), Path):
                    raise FormatError(str(path), where, f"the annotation of image {im.image_id} needs {key!r} as a "
                                                        f"file path, got {e.get(key)!r}")
            rec = Pix3DRecord(
                image=im.file_name, mask=e["segmentation"], model=e["model"],
                voxel=e["voxel"] if isinstance(e.get("voxel"), Path) else None,
                category=names[int(im.classes[g])], class_id=int(im.classes[g]), image_size=(im.width, im.height),
                box=im.boxes[g].clone(), K=shaped["K"], R=shaped["rot_mat"], t=shaped["trans_mat"],
                truncated=bool(e.get("truncated", False)), occluded=bool(e.get("occluded", False)))
            if check_files:
                for f in (rec.image, rec.mask, rec.model, rec.voxel):
                    if f is not None and not f.is_file():
                        raise FileNotFoundError(f"{path}, image {im.image_id}: {f} does not exist")
            out.append(rec)
    return out


def read_voxel_mat(path: str | Path) -> torch.Tensor:
    """Pix3D's ``voxel.mat`` as points in the model frame (Mesh R-CNN's ``read_voxel``).

    The ``voxel`` array ``(D, H, W)`` is rotated by 270 degrees in its last two axes (``numpy.rot90(v, 3,
    axes=(1, 2))``), its occupied voxels' indices become points, which are centred on their bounding box and
    divided by twice their largest distance from that centre (a unit-diameter bounding sphere).

    Args:
        path: the ``.mat`` file (MATLAB v5, as Pix3D ships it).

    Returns:
        ``(Q, 3) float32`` points, Q the occupied voxels (no point for an empty grid).

    Raises:
        FileNotFoundError: no such file.
        FormatError: not a MATLAB file, or no 3-D ``voxel`` array in it.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such voxel file")
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise FormatError(str(path), None, f"not a readable MATLAB file ({e})") from None
    vox = mat.get("voxel")
    if not isinstance(vox, np.ndarray) or vox.ndim != 3:
        raise FormatError(str(path), None, "needs a 3-D array named 'voxel', got "
                                           f"{None if vox is None else getattr(vox, 'shape', type(vox))}")
    occ = torch.rot90(torch.from_numpy(np.ascontiguousarray(vox > 0)), 3, (1, 2))
    pts = torch.nonzero(occ).to(torch.float32)
    if pts.shape[0] == 0:
        return pts
    pts = pts - (pts.amax(0) + pts.amin(0)) / 2
    scale = pts.square().sum(1).max().sqrt() * 2
    return pts / scale.clamp(min=1e-12)
