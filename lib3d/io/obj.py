"""Wavefront OBJ + MTL reading and writing, with PyTorch3D's return types.

Dimension names: V vertices, F faces (triangles after fan triangulation), T texture coordinates
(``vt``), Nn normals (``vn``), H/W texture image, R texture-atlas resolution.

Reading (``load_obj``) understands ``v``, ``vt``, ``vn``, ``f`` in every form (``v``, ``v/vt``,
``v//vn``, ``v/vt/vn``), negative (relative) indices, polygons (fan-triangulated: ``(0, i, i+1)``),
``o``/``g``/``s`` (accepted, no effect), ``usemtl``/``mtllib``, and the MTL keys ``newmtl``, ``Ka``,
``Kd``, ``Ks``, ``Ns``, ``d``, ``illum``, ``map_Kd`` (texture images read with Pillow). Other keys
(``l``, ``p``, ``vp``, ...) are ignored, as in PyTorch3D.

Index conventions (PyTorch3D's): all returned indices are 0-based; ``normals_idx``/``textures_idx`` are
-1 for face corners without normals/texture coordinates; ``materials_idx`` is -1 for faces before any
``usemtl``. A negative index counts back from the most recently defined element (OBJ spec; PyTorch3D counts
from the end of the file, which agrees whenever all vertices precede the faces). As PyTorch3D, an index out
of range (vertex, texture or normal) is kept and warned about (``UserWarning`` "Faces have invalid
indices", naming the file and the first such line); an index of 0 is read as the first element, as
PyTorch3D does, but with the same warning (PyTorch3D is silent). Malformed face corners raise.

Other deviations from PyTorch3D: inline ``# comments`` are ignored (PyTorch3D fails on them in ``f``
lines); ``map_Kd`` paths are resolved against the MTL's directory, then the OBJ's (PyTorch3D: the OBJ's
only), and ``map_Kd -options file`` takes the last token; ``material_colors`` also carries ``opacity``
(``d``) and ``illum`` when present; ``save_obj`` writes 9 significant digits (PyTorch3D: ``%f``) and rounds
texture maps to uint8 (PyTorch3D truncates).

Not an OBJ file: a file holding control bytes (NUL and the other C0 codes except tab, line feed, vertical
tab, form feed, carriage return, and DOS's end-of-file ^Z at the very end) is binary, and one whose content
lines all start with words that are no OBJ statement is some other text; both raise :class:`FormatError`
naming the file and the first offending line. PyTorch3D fails on most binary files with a ``UnicodeDecodeError`` (it reads the
file as UTF-8 text) and returns an empty mesh for other text; lib3d returned an empty mesh for both. A file
that is empty or holds only blank lines, comments or statements without geometry (``o``, ``g``, ...) is a
legitimately empty OBJ and loads as an empty mesh, as in PyTorch3D.

Speed: lines are tokenised once; face corners are parsed in bulk with numpy when every corner has the
same form (the usual case), line by line otherwise (which also produces the exact error messages).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from itertools import chain
from operator import methodcaller
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lib3d._checks import check_choice, check_shape
from lib3d.io.errors import FormatError, PathOrFile, data_dir_of, file_name, read_bytes

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

__all__ = [
    "Aux",
    "Faces",
    "load_mtl",
    "load_obj",
    "load_objs_as_meshes",
    "make_mesh_texture_atlas",
    "save_obj",
]


class Faces(NamedTuple):
    """Face indices of an OBJ file (PyTorch3D's ``faces`` result).

    Attributes:
        verts_idx: (F, 3) int64 indices into verts.
        normals_idx: (F, 3) int64 indices into ``aux.normals``, -1 where absent.
        textures_idx: (F, 3) int64 indices into ``aux.verts_uvs``, -1 where absent.
        materials_idx: (F,) int64 index into the materials in order of first ``usemtl``, -1 where none.
    """

    verts_idx: torch.Tensor
    normals_idx: torch.Tensor
    textures_idx: torch.Tensor
    materials_idx: torch.Tensor


class Aux(NamedTuple):
    """Auxiliary data of an OBJ file (PyTorch3D's ``aux`` result).

    Attributes:
        normals: (Nn, 3) float32 or None when the file has no ``vn``.
        verts_uvs: (T, 2) float32 or None when the file has no ``vt``.
        material_colors: dict material name -> dict with (when given in the MTL) ``ambient_color`` (3,),
            ``diffuse_color`` (3,), ``specular_color`` (3,), ``shininess`` (1,) float32 tensors, plus
            ``opacity`` (1,) from ``d`` and ``illum`` (1,) when present; None when no MTL was loaded.
        texture_images: dict material name -> (H, W, 3) float32 image in [0, 1]; None when no MTL was
            loaded.
        texture_atlas: (F, R, R, 3) float32 per-face texture when ``create_texture_atlas``, else None.
    """

    normals: torch.Tensor | None
    verts_uvs: torch.Tensor | None
    material_colors: dict | None
    texture_images: dict | None
    texture_atlas: torch.Tensor | None


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------


def _to_float_array(toks: list[str], lines: list[int], width: int, name: str, what: str) -> np.ndarray:
    """Bulk float conversion; on failure find the offending line."""
    if not toks:
        return np.zeros((0, width), np.float32)
    try:  # float() token by token (C-level map): no fixed-width string array, whatever the token lengths
        return np.fromiter(map(float, toks), np.float64, len(toks)).reshape(-1, width).astype(np.float32)
    except ValueError:
        for k, t in enumerate(toks):
            try:
                float(t)
            except ValueError:
                raise FormatError(name, f"line {lines[k // width]}", f"bad {what} value {t[:30]!r}") from None
        raise  # pragma: no cover


class _Parsed(NamedTuple):
    verts: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    tri_v: np.ndarray
    tri_n: np.ndarray
    tri_t: np.ndarray
    tri_m: np.ndarray
    tri_line: np.ndarray
    material_names: list
    mtl_paths: list


def _fan(corner_vals: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons given as concatenated corners -> ((T, 3) values, (T,) polygon index)."""
    ntri = np.maximum(k - 2, 0)
    first = np.cumsum(k) - k
    tri_face = np.repeat(np.arange(k.size), ntri)
    j = np.arange(int(ntri.sum()), dtype=np.int64) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    s = first[tri_face]
    tri = np.stack([corner_vals[s], corner_vals[s + j + 1], corner_vals[s + j + 2]], axis=1)
    return tri, tri_face


def _faces_fast(f_corners: list, f_counts: np.ndarray, max_ref: int):
    """Vectorised face parsing when every corner has the same form (``v``, ``v/vt``, ``v//vn`` or
    ``v/vt/vn``) and every index is in range; None otherwise (the file is then parsed line by line)."""
    k = np.fromiter(map(len, f_corners), np.int64, len(f_corners))
    corners = list(chain.from_iterable(f_corners))
    if not corners:
        return None
    nslash = np.fromiter(map(methodcaller("count", "/"), corners), np.int64, len(corners))
    s0 = int(nslash[0])
    if s0 > 2 or not bool((nslash == s0).all()):
        return None
    parts = "/".join(corners).split("/") if s0 else corners
    cols = [parts[j :: s0 + 1] for j in range(s0 + 1)]
    if s0 >= 1 and "" in cols[1]:
        if cols[1].count("") != len(corners):
            return None
        cols[1] = None  # v//vn
    try:
        raw = [None if c is None else np.fromiter(map(int, c), np.int64, len(corners)) for c in cols]
    except (ValueError, OverflowError):
        return None
    out = []
    for j in range(3):
        if j >= len(raw) or raw[j] is None:
            out.append(None)
            continue
        idx = raw[j]
        cnt = np.repeat(f_counts[:, j], k)
        res = np.where(idx > 0, idx - 1, cnt + idx)
        if bool(((idx == 0) | (res < 0) | (idx > max_ref)).any()):
            return None
        out.append(res)
    tv, tri_face = _fan(out[0], k)
    tt = _fan(out[1], k)[0] if out[1] is not None else np.full_like(tv, -1)
    tn = _fan(out[2], k)[0] if out[2] is not None else np.full_like(tv, -1)
    return tv, tt, tn, tri_face


def _faces_slow(f_corners: list, f_line: list, f_counts: np.ndarray, name: str, zero_lines: list):
    """Face parsing line by line with exact error messages (any corner form, mixed forms); the (line, kind)
    of every index 0 is appended to ``zero_lines``."""
    tri_v: list[int] = []
    tri_n: list[int] = []
    tri_t: list[int] = []
    tri_face: list[int] = []
    for fi, corners in enumerate(f_corners):
        lineno = f_line[fi]
        nv, nt, nn = (int(x) for x in f_counts[fi])
        fv: list[int] = []
        ft: list[int] = []
        fn: list[int] = []
        for c in corners:
            parts = c.split("/")
            if len(parts) > 3:
                raise FormatError(name, f"line {lineno}", f"face corner {c[:30]!r} has more than 3 indices")
            try:
                iv = int(parts[0])
                it = int(parts[1]) if len(parts) > 1 and parts[1] != "" else None
                inn = int(parts[2]) if len(parts) > 2 and parts[2] != "" else None
            except ValueError:
                raise FormatError(name, f"line {lineno}", f"bad face corner {c[:30]!r}") from None
            for idx, cnt, lst, what in (
                (iv, nv, fv, "vertex"),
                (it, nt, ft, "texture"),
                (inn, nn, fn, "normal"),
            ):
                if idx is None:
                    continue
                # out-of-range indices are kept (and warned about by _parse_obj), as PyTorch3D
                if idx > 0:
                    lst.append(idx - 1)
                elif idx < 0:
                    lst.append(cnt + idx)
                else:  # PyTorch3D reads 0 as the first element, silently; lib3d warns
                    zero_lines.append((lineno, what))
                    lst.append(0)
                if not _INT64_MIN <= lst[-1] <= _INT64_MAX:
                    raise FormatError(name, f"line {lineno}", f"{what} index {idx} does not fit in 64 bits")
        k = len(fv)
        if (ft and len(ft) != k) or (fn and len(fn) != k):
            raise FormatError(
                name,
                f"line {lineno}",
                "face corners are inconsistent (all or none of the corners must have texture/normal indices)",
            )
        if not ft:
            ft = [-1] * k
        if not fn:
            fn = [-1] * k
        for i in range(k - 2):  # fan triangulation; faces with < 3 corners give none (as PyTorch3D)
            tri_v += (fv[0], fv[i + 1], fv[i + 2])
            tri_t += (ft[0], ft[i + 1], ft[i + 2])
            tri_n += (fn[0], fn[i + 1], fn[i + 2])
            tri_face.append(fi)
    return (
        np.asarray(tri_v, np.int64).reshape(-1, 3),
        np.asarray(tri_t, np.int64).reshape(-1, 3),
        np.asarray(tri_n, np.int64).reshape(-1, 3),
        np.asarray(tri_face, np.int64),
    )


# Control bytes no text file holds (tab, LF, VT, FF and CR are allowed; so is ^Z at the very end, DOS's
# end-of-file mark, which ``_parse_obj`` strips first).
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f]")

# Every statement keyword of the OBJ specification (Wavefront, version 3.0) and of common extensions.
_OBJ_KEYWORDS = frozenset((
    "v", "vt", "vn", "vp", "f", "l", "p", "o", "g", "s", "mg", "usemtl", "mtllib", "cstype", "deg", "bmat", "step",
    "curv", "curv2", "surf", "parm", "trim", "hole", "scrv", "sp", "end", "con", "bevel", "c_interp", "d_interp",
    "lod", "shadow_obj", "trace_obj", "ctech", "stech", "maplib", "usemap", "call", "csh",
))


def _check_text(data: bytes, name: str) -> None:
    """Raise ``FormatError`` for binary data (a control byte), naming its line."""
    m = _BINARY.search(data)
    if m is not None:
        line = data.count(b"\n", 0, m.start()) + 1
        raise FormatError(name, f"line {line}", f"control byte 0x{data[m.start()]:02x}: binary data, "
                          "not an OBJ text file")


def _parse_obj(data: bytes, name: str) -> _Parsed:
    data = data.rstrip(b"\x1a")
    _check_text(data, name)
    text = data.decode("utf-8", errors="surrogateescape")  # bytes survive into file names
    v_toks: list[str] = []
    v_lines: list[int] = []
    n_toks: list[str] = []
    n_lines: list[int] = []
    t_toks: list[str] = []
    t_lines: list[int] = []
    f_corners: list[list[str]] = []  # per polygon: its corner tokens
    f_line: list[int] = []
    f_mat: list[int] = []
    f_counts: list[tuple[int, int, int]] = []  # (v, vt, vn) defined before the polygon (relative indices)
    material_names: list[str] = []
    material_index: dict[str, int] = {}
    mtl_paths: list[str] = []
    mat = -1
    nv = nn = nt = 0
    max_ref = text.count("\n") + 1
    known = False  # any OBJ statement seen
    first_unknown: tuple[int, str] | None = None  # (line, word) of the first line that is no OBJ statement

    for lineno, raw in enumerate(text.split("\n"), 1):
        if "#" in raw and not raw.lstrip().startswith("mtllib"):  # inline comment (file names may hold '#')
            raw = raw[: raw.index("#")]
        tokens = raw.split()
        if not tokens:
            continue
        key = tokens[0]
        if key == "f":
            f_corners.append(tokens[1:])
            f_line.append(lineno)
            f_mat.append(mat)
            f_counts.append((nv, nt, nn))
        elif key == "v":
            if len(tokens) < 4:
                raise FormatError(name, f"line {lineno}", f"vertex needs 3 values, got {len(tokens) - 1}")
            v_toks += tokens[1:4]
            v_lines.append(lineno)
            nv += 1
        elif key == "vt":
            if len(tokens) < 3:
                raise FormatError(
                    name, f"line {lineno}", f"texture coordinate needs 2 values, got {len(tokens) - 1}"
                )
            t_toks += tokens[1:3]
            t_lines.append(lineno)
            nt += 1
        elif key == "vn":
            if len(tokens) < 4:
                raise FormatError(name, f"line {lineno}", f"normal needs 3 values, got {len(tokens) - 1}")
            n_toks += tokens[1:4]
            n_lines.append(lineno)
            nn += 1
        elif key == "usemtl":
            if len(tokens) < 2:
                raise FormatError(name, f"line {lineno}", "usemtl without a material name")
            mname = tokens[1]
            mat = material_index.get(mname, -1)
            if mat < 0:
                mat = material_index[mname] = len(material_names)
                material_names.append(mname)
        elif key == "mtllib":
            rest = raw.strip()[len("mtllib") :].strip()
            if not rest:
                raise FormatError(name, f"line {lineno}", "mtllib without a file name")
            mtl_paths.append(rest)
        # o, g, s, l, p, vp, ... and unknown keys: ignored (a file of unknown keys only is not an OBJ file).
        if not known:
            if key in _OBJ_KEYWORDS:
                known = True
            elif first_unknown is None:
                first_unknown = (lineno, key)

    if first_unknown is not None and not known:
        raise FormatError(name, f"line {first_unknown[0]}", f"{first_unknown[1][:30]!r} is no OBJ statement and "
                          "the file holds none (v, vt, vn, f, ...): not an OBJ file")

    verts = _to_float_array(v_toks, v_lines, 3, name, "vertex")
    normals = _to_float_array(n_toks, n_lines, 3, name, "normal")
    uvs = _to_float_array(t_toks, t_lines, 2, name, "texture coordinate")
    counts = np.asarray(f_counts, np.int64).reshape(-1, 3)
    faces = _faces_fast(f_corners, counts, max_ref)
    zero_lines: list[tuple[int, str]] = []
    if faces is None:
        faces = _faces_slow(f_corners, f_line, counts, name, zero_lines)
    tv, tt, tn, tri_face = faces
    tm = np.asarray(f_mat, np.int64)[tri_face]
    tl = np.asarray(f_line, np.int64)[tri_face]
    if zero_lines:
        line, what = zero_lines[0]
        warnings.warn(f"{name}, line {line}: Faces have invalid indices: {what} index 0 (OBJ indices start at 1; "
                      f"read as the first {what}, as PyTorch3D; {len(zero_lines)} such indices)", stacklevel=3)
    for arr, size, what, pad in (
        (tv, verts.shape[0], "vertex", False),
        (tn, normals.shape[0], "normal", True),
        (tt, uvs.shape[0], "texture", True),
    ):
        if not arr.size:
            continue
        used = (arr != -1).any(axis=1) if pad else np.ones(arr.shape[0], bool)  # -1 rows: no normal / uv
        bad = np.flatnonzero(used & ((arr >= size) | (arr < 0)).any(axis=1))
        if bad.size:  # PyTorch3D's _check_faces_indices: warn, keep the indices
            r = int(bad[0])
            out = arr[r][(arr[r] >= size) | (arr[r] < 0)][0]
            which = f"{what} index {int(out) + 1}" if out >= 0 else f"a relative {what} index before the first"
            warnings.warn(f"{name}, line {int(tl[r])}: Faces have invalid indices: {which} out of range (the "
                          f"file has {size} {what}s; {bad.size} faces affected)", stacklevel=3)
    return _Parsed(verts, normals, uvs, tv, tn, tt, tm, tl, material_names, mtl_paths)


# ---------------------------------------------------------------------------------------------------
# Materials
# ---------------------------------------------------------------------------------------------------


def _resolve(rel: str, dirs: Sequence[Path]) -> Path | None:
    """Find a referenced file: the whole string, then its last token (``map_Kd -o 1 1 file.png``)."""
    candidates = [rel]
    toks = rel.split()
    if len(toks) > 1:
        candidates.append(toks[-1])
    for c in candidates:
        c = c.replace("\\", "/")
        for d in dirs:
            try:
                p = Path(c) if os.path.isabs(c) else d / c
                if p.is_file():
                    return p
            except (OSError, ValueError):  # name too long, embedded NUL, ...: not a usable file
                continue
    return None


def _read_texture(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as e:  # Pillow raises many kinds of errors for corrupt images
        raise FormatError(str(path), None, f"cannot read texture image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_mtl(
    f: PathOrFile,
    material_names: Sequence[str],
    data_dir: str | os.PathLike | None = None,
    load_images: bool = True,
) -> tuple[dict, dict]:
    """Read an MTL file: colours of the materials used and their ``map_Kd`` texture images.

    Args:
        f: path or binary file object of the .mtl file.
        material_names: names used by the OBJ (``usemtl``), in order; only these are returned. When empty
            and the MTL defines exactly one material, that one is used (as PyTorch3D).
        data_dir: directory of the OBJ; texture paths are resolved against the MTL's directory, then this.
        load_images: read the texture images (Pillow) or skip them.

    Returns:
        material_colors: name -> {``ambient_color`` (3,), ``diffuse_color`` (3,), ``specular_color`` (3,),
            ``shininess`` (1,), ``opacity`` (1,), ``illum`` (1,)} float32, the keys present in the file.
        texture_images: name -> (H, W, 3) float32 in [0, 1].

    Raises:
        FormatError: a malformed line (named), or several materials but no ``usemtl``.
    """
    name = file_name(f)
    text = read_bytes(f).decode("utf-8", errors="surrogateescape")  # bytes survive into file names
    props: dict[str, dict] = {}
    tex_files: dict[str, str] = {}
    current = None
    keys = {
        "Ka": ("ambient_color", 3),
        "Kd": ("diffuse_color", 3),
        "Ks": ("specular_color", 3),
        "Ns": ("shininess", 1),
        "d": ("opacity", 1),
        "illum": ("illum", 1),
    }
    for lineno, raw in enumerate(text.split("\n"), 1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        key = tokens[0]
        if key == "newmtl":
            if len(tokens) < 2:
                raise FormatError(name, f"line {lineno}", "newmtl without a name")
            current = tokens[1]
            props[current] = {}
        elif key in keys or key == "map_Kd":
            if current is None:
                raise FormatError(name, f"line {lineno}", f"{key} before any newmtl")
            if key == "map_Kd":
                rest = raw.strip()[len("map_Kd") :].strip()
                if not rest:
                    raise FormatError(name, f"line {lineno}", "map_Kd without a file name")
                tex_files[current] = rest
                continue
            field, n = keys[key]
            vals = [t for t in tokens[1:] if not t.startswith("#")][:n]
            if len(vals) < n:
                raise FormatError(name, f"line {lineno}", f"{key} needs {n} values, got {len(vals)}")
            try:
                props[current][field] = torch.tensor([float(v) for v in vals], dtype=torch.float32)
            except ValueError:
                raise FormatError(name, f"line {lineno}", f"bad {key} value") from None
    used = list(material_names)
    if not used and props:
        if len(props) > 1:
            raise FormatError(name, None, "several materials but no usemtl in the OBJ file")
        used = [next(iter(props))]
    dirs = [data_dir_of(f)] + ([Path(data_dir)] if data_dir is not None else [])
    colors: dict = {}
    images: dict = {}
    for m in used:
        if m in tex_files and load_images:
            p = _resolve(tex_files[m], dirs)
            if p is None:
                warnings.warn(f"{name}: texture file does not exist: {tex_files[m]}", stacklevel=2)
            else:
                images[m] = _read_texture(p)
        if m in props:
            colors[m] = props[m]
    return colors, images


# ---------------------------------------------------------------------------------------------------
# Texture atlas
# ---------------------------------------------------------------------------------------------------


def _atlas_barycentrics(R: int, device, dtype) -> torch.Tensor:
    """(R, R, 3) barycentrics of the centroids of the R*R sub-triangles (SoftRas / PyTorch3D layout)."""
    rng = torch.arange(R, device=device, dtype=dtype)
    Y, X = torch.meshgrid(rng, rng, indexing="ij")
    grid = torch.stack([X, Y], dim=-1)  # (R, R, 2) as (x, y)
    below = (grid.sum(-1) < R)[..., None]
    w01 = torch.where(below, (grid + 1.0 / 3.0) / R, ((R - 1.0 - grid) + 2.0 / 3.0) / R)
    return torch.cat([w01, 1.0 - w01.sum(-1, keepdim=True)], dim=-1)


def _bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of (H, W, C) at uv in [0, 1] (u right, v down the flipped image), corners aligned."""
    H, W, _ = image.shape
    xy = uv * torch.tensor([W - 1, H - 1], dtype=uv.dtype, device=uv.device)
    x0f = xy[..., 0].floor().clamp(0, W - 1)
    y0f = xy[..., 1].floor().clamp(0, H - 1)
    wx = (xy[..., 0] - x0f)[..., None]
    wy = (xy[..., 1] - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    return (
        image[y0, x0] * (1 - wx) * (1 - wy)
        + image[y1, x0] * (1 - wx) * wy
        + image[y0, x1] * wx * (1 - wy)
        + image[y1, x1] * wx * wy
    )


def make_mesh_texture_atlas(
    material_colors: dict,
    texture_images: dict,
    face_material_names: Sequence[str],
    faces_verts_uvs: torch.Tensor | None,
    texture_size: int,
    texture_wrap: str | None,
) -> torch.Tensor:
    """Per-face (R, R, 3) textures sampled from the material images (PyTorch3D's / SoftRas's atlas).

    Faces start white; faces of a material with ``diffuse_color`` take that colour; faces of a material
    with a texture image take the bilinear samples at the centroids of the R*R sub-triangles of their UV
    triangle (Liu et al., "Soft Rasterizer", ICCV 2019).

    Args:
        material_colors: as returned by :func:`load_mtl`.
        texture_images: as returned by :func:`load_mtl`.
        face_material_names: (F,) material name per face, "" for none.
        faces_verts_uvs: (F, 3, 2) float UV of each face corner, or None.
        texture_size: R.
        texture_wrap: "repeat" (keep the fractional part), "clamp" (to [0, 1]) or None.

    Returns:
        (F, R, R, 3) float32 atlas.
    """
    check_choice("texture_wrap", texture_wrap, ("repeat", "clamp", None))
    F = len(face_material_names)
    R = int(texture_size)
    dev = faces_verts_uvs.device if faces_verts_uvs is not None else torch.device("cpu")
    atlas = torch.ones((F, R, R, 3), dtype=torch.float32, device=dev)
    names = np.asarray(list(face_material_names), dtype=object)
    for m, props in (material_colors or {}).items():
        sel = torch.from_numpy(names == m).to(dev)
        if "diffuse_color" in props and bool(sel.any()):
            atlas[sel] = props["diffuse_color"].to(dev, torch.float32)
    if faces_verts_uvs is None or not texture_images:
        return atlas
    uvs = faces_verts_uvs.to(torch.float32)
    if texture_wrap == "repeat":
        uvs = uvs % 1.0
    elif texture_wrap == "clamp":
        uvs = uvs.clamp(0.0, 1.0)
    bary = _atlas_barycentrics(R, dev, torch.float32)  # (R, R, 3)
    for m, image in texture_images.items():
        sel = torch.from_numpy(names == m).to(dev)
        if not bool(sel.any()):
            continue
        img = torch.flip(image[..., :3].to(dev, torch.float32), [0])  # v goes up
        uv_pos = torch.einsum("rsk,fkc->frsc", bary, uvs[sel])  # (F_m, R, R, 2)
        atlas[sel] = _bilinear(img, uv_pos)
    return atlas


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def load_obj(
    f: PathOrFile,
    load_textures: bool = True,
    create_texture_atlas: bool = False,
    texture_atlas_size: int = 4,
    texture_wrap: str | None = "repeat",
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, Faces, Aux]:
    """Load an OBJ file (and its MTL and textures) as ``pytorch3d.io.load_obj``.

    Args:
        f: a path or a file object; ``mtllib`` and ``map_Kd`` paths are resolved against its directory.
        load_textures: read the MTL file and its texture images.
        create_texture_atlas: also build an (F, R, R, 3) per-face texture atlas (``aux.texture_atlas``).
        texture_atlas_size: R.
        texture_wrap: "repeat", "clamp" or None: how UVs outside [0, 1] are handled by the atlas.
        device: device of the returned tensors.

    Returns:
        verts: (V, 3) float32.
        faces: :class:`Faces` (verts_idx (F, 3), normals_idx (F, 3), textures_idx (F, 3), materials_idx (F,),
            int64, 0-based, -1 where absent).
        aux: :class:`Aux` (normals, verts_uvs, material_colors, texture_images, texture_atlas).

    Raises:
        FormatError: a malformed line (the file and the line are named), binary data (a control byte), text
            without any OBJ statement, or ``create_texture_atlas`` with texture indices out of range. An empty
            file, or one of blank lines, comments and geometry-free statements only, loads as an empty mesh
            (as in PyTorch3D).

    Warns:
        UserWarning: "Faces have invalid indices" for face indices out of range or 0 (kept in ``faces``, as
            PyTorch3D).

    Example:
        >>> verts, faces, aux = load_obj("cow_mesh/cow.obj")
        >>> faces.verts_idx.shape, aux.texture_images["material_1"].shape
    """
    check_choice("texture_wrap", texture_wrap, ("repeat", "clamp", None))
    name = file_name(f)
    data = read_bytes(f)
    try:
        p = _parse_obj(data, name)
    except FormatError:
        raise
    except (ValueError, IndexError, OverflowError, TypeError, KeyError) as e:  # safety net
        raise FormatError(name, None, f"malformed OBJ ({type(e).__name__}: {e})") from e
    dev = torch.device(device)
    verts = torch.from_numpy(p.verts).to(dev)
    normals = torch.from_numpy(p.normals).to(dev)
    uvs = torch.from_numpy(p.uvs).to(dev)
    faces = Faces(
        torch.from_numpy(p.tri_v).to(dev),
        torch.from_numpy(p.tri_n).to(dev),
        torch.from_numpy(p.tri_t).to(dev),
        torch.from_numpy(p.tri_m).to(dev),
    )

    material_colors = texture_images = atlas = None
    if load_textures and p.mtl_paths:
        base = data_dir_of(f)
        mtl = None
        for rel in p.mtl_paths:
            mtl = _resolve(rel, [base])
            if mtl is not None:
                break
        if mtl is None:
            warnings.warn(f"{name}: mtl file does not exist: {p.mtl_paths[0]}", stacklevel=2)
        else:
            material_colors, texture_images = load_mtl(mtl, p.material_names, data_dir=base)
            material_colors = {
                k: {kk: vv.to(dev) for kk, vv in v.items()} for k, v in material_colors.items()
            }
            texture_images = {k: v.to(dev) for k, v in texture_images.items()}
            if create_texture_atlas:
                mnames = np.array(p.material_names + [""], dtype=object)[p.tri_m]  # -1 -> ""
                fuv = None
                t_idx = faces.textures_idx
                if t_idx.numel() and (int(t_idx.max()) >= uvs.shape[0] or int(t_idx.min()) < -1):
                    raise FormatError(name, None, "texture indices out of range: cannot build the texture atlas")
                if uvs.shape[0] > 0:
                    fuv = uvs[faces.textures_idx]  # as PyTorch3D: a corner without UV (-1) reads the last UV
                atlas = make_mesh_texture_atlas(
                    material_colors, texture_images, list(mnames), fuv, texture_atlas_size, texture_wrap
                )
    aux = Aux(
        normals if normals.shape[0] else None,
        uvs if uvs.shape[0] else None,
        material_colors,
        texture_images,
        atlas,
    )
    return verts, faces, aux


def _warn_invalid_indices(name: str, idx: torch.Tensor, size: int) -> None:
    """PyTorch3D's writers' check: warn (do not raise) when an index lies outside ``[0, size)``."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        warnings.warn(f"Faces have invalid indices: {name} holds values in [{int(idx.min())}, {int(idx.max())}], "
                      f"outside [0, {size})", stacklevel=3)


def _rows(arr: np.ndarray, prefix: str, fmt: str) -> str:
    if arr.shape[0] == 0:
        return ""
    row = prefix + " " + " ".join([fmt] * arr.shape[1])
    return "\n".join(row % tuple(r) for r in arr.tolist()) + "\n"


def save_obj(
    f: PathOrFile,
    verts: torch.Tensor,
    faces: torch.Tensor,
    decimal_places: int | None = None,
    *,
    normals: torch.Tensor | None = None,
    faces_normals_idx: torch.Tensor | None = None,
    verts_uvs: torch.Tensor | None = None,
    faces_uvs: torch.Tensor | None = None,
    texture_map: torch.Tensor | None = None,
) -> None:
    """Write a mesh to an OBJ file (as ``pytorch3d.io.save_obj``).

    With ``verts_uvs``, ``faces_uvs`` and ``texture_map`` all given, also writes ``<stem>.mtl`` (material
    ``mesh``, ``map_Kd <stem>.png``) and ``<stem>.png`` beside the OBJ, which then starts with
    ``mtllib <stem>.mtl`` / ``usemtl mesh``.

    Args:
        f: a path (required for textures) or a text/binary file object.
        verts: (V, 3) float.
        faces: (F, 3) integer indices into verts.
        decimal_places: digits after the point (default: 9 significant digits, exact for float32).
        normals: (Nn, 3) float vertex normals (``vn``), with faces_normals_idx (F, 3).
        faces_normals_idx: (F, 3) integer indices into normals.
        verts_uvs: (T, 2) float texture coordinates (``vt``), with faces_uvs (F, 3).
        faces_uvs: (F, 3) integer indices into verts_uvs.
        texture_map: (H, W, 3) float in [0, 1] (or (1, H, W, 3)).

    Raises:
        ValueError/TypeError: bad shapes or dtypes.

    Warns:
        UserWarning: "Faces have invalid indices" when an index of ``faces`` (or ``faces_normals_idx``,
            ``faces_uvs``) is outside its range; the file is written anyway, as PyTorch3D.
    """
    sizes = check_shape("verts", verts, ("V", 3), dtype="float")
    check_shape("faces", faces, ("F", 3), sizes, dtype="int")
    _warn_invalid_indices("faces", faces, sizes["V"])
    if (normals is None) != (faces_normals_idx is None):
        raise ValueError("normals and faces_normals_idx must be given together")
    if normals is not None:
        check_shape("normals", normals, (None, 3), dtype="float")
        check_shape("faces_normals_idx", faces_normals_idx, ("F", 3), sizes, dtype="int")
        _warn_invalid_indices("faces_normals_idx", faces_normals_idx, normals.shape[0])
    use_uv = verts_uvs is not None and faces_uvs is not None
    if use_uv:
        check_shape("verts_uvs", verts_uvs, (None, 2), dtype="float")
        check_shape("faces_uvs", faces_uvs, ("F", 3), sizes, dtype="int")
        _warn_invalid_indices("faces_uvs", faces_uvs, verts_uvs.shape[0])
    use_texture = use_uv and texture_map is not None
    if use_texture:
        if texture_map.dim() == 4 and texture_map.shape[0] == 1:
            texture_map = texture_map[0]
        check_shape("texture_map", texture_map, (None, None, 3), dtype="float")
        if hasattr(f, "write"):
            raise ValueError("saving a texture_map needs f to be a path (the .mtl and .png go beside it)")
    if verts.shape[0] == 0 and faces.shape[0] == 0:
        warnings.warn("Empty 'verts' and 'faces' arguments provided (an empty file is written)", stacklevel=2)
    fmt = "%.9g" if decimal_places is None else f"%.{int(decimal_places)}f"
    out = []  # no header comment: the text is PyTorch3D's (but for the number format)
    if use_texture:
        stem = Path(f).stem
        out.append(f"mtllib {stem}.mtl\nusemtl mesh\n")
    out.append(_rows(verts.detach().cpu().float().numpy(), "v", fmt))
    if use_uv:
        out.append(_rows(verts_uvs.detach().cpu().float().numpy(), "vt", fmt))
    if normals is not None:
        out.append(_rows(normals.detach().cpu().float().numpy(), "vn", fmt))
    fv = faces.detach().cpu().long().numpy() + 1
    cols = [fv]
    if use_uv:
        cols.append(faces_uvs.detach().cpu().long().numpy() + 1)
    if normals is not None:
        cols.append(faces_normals_idx.detach().cpu().long().numpy() + 1)
    if use_uv and normals is not None:
        corner = "%d/%d/%d"
    elif use_uv:
        corner = "%d/%d"
    elif normals is not None:
        corner = "%d//%d"
    else:
        corner = "%d"
    table = np.stack(cols, axis=2).reshape(fv.shape[0], 3 * len(cols))  # (F, 3 * k): corner by corner
    if table.shape[0]:
        row = "f " + " ".join([corner] * 3)
        out.append("\n".join(row % tuple(r) for r in table.tolist()) + "\n")
    text = "".join(out)
    if hasattr(f, "write"):
        try:
            f.write(text)
        except TypeError:
            f.write(text.encode("utf-8"))
    else:
        Path(f).write_text(text)
    if use_texture:
        from PIL import Image

        path = Path(f)
        img = (texture_map.detach().cpu().float().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        Image.fromarray(img, "RGB").save(path.parent / f"{stem}.png")
        (path.parent / f"{stem}.mtl").write_text(
            f"newmtl mesh\nmap_Kd {stem}.png\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
            "Ks 0.000 0.000 0.000\nNs 10.0\nillum 2\n"
        )


def load_objs_as_meshes(
    files: Sequence[PathOrFile],
    device: str | torch.device | None = None,
    load_textures: bool = True,
    create_texture_atlas: bool = False,
    texture_atlas_size: int = 4,
    texture_wrap: str | None = "repeat",
):
    """Load OBJ files into one batched ``lib3d.structures.Meshes`` (as ``pytorch3d.io.load_objs_as_meshes``).

    Each mesh gets ``TexturesUV`` from its first texture image (or ``TexturesAtlas`` when
    ``create_texture_atlas``); meshes without a texture get no textures.

    Args:
        files: paths of OBJ files (N of them).
        device: device of the meshes (default CPU).
        load_textures: read the materials and textures.
        create_texture_atlas: use per-face atlases instead of UV textures.
        texture_atlas_size: R of the atlas.
        texture_wrap: "repeat", "clamp" or None.

    Returns:
        ``Meshes`` with N meshes.
    """
    from lib3d.structures import Meshes, TexturesAtlas, TexturesUV, join_meshes_as_batch

    dev = torch.device("cpu" if device is None else device)
    meshes = []
    for fobj in files:
        verts, faces, aux = load_obj(
            fobj,
            load_textures=load_textures,
            create_texture_atlas=create_texture_atlas,
            texture_atlas_size=texture_atlas_size,
            texture_wrap=texture_wrap,
            device=dev,
        )
        tex = None
        if create_texture_atlas and aux.texture_atlas is not None:
            tex = TexturesAtlas(atlas=[aux.texture_atlas])
        elif aux.texture_images and aux.verts_uvs is not None:
            image = next(iter(aux.texture_images.values()))[None]
            tex = TexturesUV(maps=image, faces_uvs=[faces.textures_idx], verts_uvs=[aux.verts_uvs])
        meshes.append(Meshes(verts=[verts], faces=[faces.verts_idx], textures=tex))
    if len(meshes) == 1:
        return meshes[0]
    return join_meshes_as_batch(meshes)
