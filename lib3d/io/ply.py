"""PLY reading and writing (ascii, binary_little_endian, binary_big_endian).

Dimension names: V vertices, F faces (triangles after fan triangulation), C colour channels.

Reading (``load_ply``, ``load_ply_data``):

- every PLY scalar type: ``char/int8``, ``uchar/uint8``, ``short/int16``, ``ushort/uint16``,
  ``int/int32``, ``uint/uint32``, ``float/float32``, ``double/float64``;
- any elements and properties, including list properties; elements other than ``vertex`` and ``face``
  are parsed (so that they are skipped correctly) and returned by ``load_ply_data``;
- the ``vertex`` element gives ``x, y, z`` and optionally ``nx, ny, nz`` and ``red, green, blue(, alpha)``;
- the ``face`` element gives a ``vertex_indices`` or ``vertex_index`` list of any integer type; polygons are
  fan-triangulated exactly as PyTorch3D does (when all faces have the same length L, all first triangles
  come first, then all second triangles, ...; otherwise face by face);
- binary bodies are read with numpy in bulk: an element whose rows have a fixed size (including list
  properties whose lengths are all equal, the usual triangle mesh) is one ``np.frombuffer`` with a
  structured dtype; an element whose lists vary in length falls back to a scan of the row offsets
  (bounded by the file size) followed by vectorised gathers; for the usual face element (one list with a
  uchar length) the scan finds runs of equal lengths with vectorised checks and scans only the rows that
  break the runs one by one;
- ascii bodies are tokenised once and parsed with vectorised per-property cursors (one row per line, as
  PyTorch3D); numbers are converted token by token (no fixed-width string arrays);
- every count in the header is checked against the bytes (binary) or lines (ascii) left in the file
  before anything is allocated; at most ``MAX_ELEMENTS`` elements and ``MAX_PROPERTIES`` properties per
  element; a face index outside ``[0, V)`` is kept and warned about (``UserWarning`` "Faces have invalid
  indices", naming the file and the line or row), as PyTorch3D.

Deviations from PyTorch3D: a ``face`` element may hold other properties beside its index list (PyTorch3D
rejects it); ``load_ply_data`` also returns normals, colours (alpha included) and every element;
``save_ply`` also writes colours (as float properties, like PyTorch3D's point-cloud writer) and writes
floats with 9 significant digits in ascii (PyTorch3D: ``%f``), which round-trips float32 exactly.

Bad input raises :class:`lib3d.io.FormatError` naming the file and the header/ascii line, or the binary
element (and row).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from lib3d._checks import check_shape
from lib3d.io.errors import FormatError, PathOrFile, file_name, read_bytes

__all__ = [
    "PlyData",
    "PlyElement",
    "PlyHeader",
    "PlyList",
    "PlyProperty",
    "load_ply",
    "load_ply_data",
    "save_ply",
]

# PLY type name -> numpy type code (without byte order).
PLY_TYPES: dict[str, str] = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_STRUCT_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}
_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
MAX_ELEMENTS = 1000  # header sanity limits (real files have a handful): bound the per-element work
MAX_PROPERTIES = 1000


class PlyProperty(NamedTuple):
    """One property of an element: a scalar, or a list when ``count_type`` is set."""

    name: str
    type: str  # numpy type code of the value (or of the list items), e.g. "f4"
    count_type: str | None = None  # numpy type code of the list length; None for a scalar


class PlyElement(NamedTuple):
    """An element declaration of the header: name, row count and properties."""

    name: str
    count: int
    properties: tuple[PlyProperty, ...]


class PlyHeader(NamedTuple):
    """The parsed header."""

    format: str  # "ascii" | "binary_little_endian" | "binary_big_endian"
    elements: tuple[PlyElement, ...]
    comments: tuple[str, ...]
    body_offset: int  # byte offset of the body
    body_line: int  # 1-based line number of the first body line


class PlyList(NamedTuple):
    """A list property of an element: all lists concatenated, and the length of each row's list.

    ``values[offsets[i] : offsets[i] + lengths[i]]`` is row ``i``'s list with
    ``offsets = cumsum(lengths) - lengths``. ``uniform_length`` is the common length when all rows have
    the same one (then ``values.reshape(count, L)`` gives the rows), else None.
    """

    values: np.ndarray
    lengths: np.ndarray

    @property
    def uniform_length(self) -> int | None:
        if self.lengths.size == 0:
            return 0
        first = int(self.lengths[0])
        return first if bool((self.lengths == first).all()) else None


class PlyData(NamedTuple):
    """Everything ``load_ply_data`` reads.

    Attributes:
        verts: (V, 3) float32.
        faces: (F, 3) int64 triangles (fan-triangulated), (0, 3) for a point cloud.
        verts_normals: (V, 3) float32 from ``nx, ny, nz``, or None.
        verts_colors: (V, C) float32 in [0, 1] from ``red, green, blue(, alpha)`` (C = 3 or 4), integer
            colours divided by the type's maximum (255 for uchar), float colours as stored; or None.
        elements: element name -> property name -> numpy array (scalar property, shape (count,)) or
            :class:`PlyList`. All elements of the file, including unknown ones.
        header: the parsed :class:`PlyHeader`.
        verts_uvs: (V, 2) float32 texture coordinates from ``u, v``, ``s, t`` or ``texture_u, texture_v``
            (the names PyTorch3D and common exporters use), or None.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    verts_normals: torch.Tensor | None
    verts_colors: torch.Tensor | None
    elements: dict
    header: PlyHeader
    verts_uvs: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------------


def _find_end_header(data: bytes) -> tuple[int, int] | None:
    """(end of the header lines, start of the body) of the first line that is ``end_header``."""
    i = data.find(b"end_header")
    n = len(data)
    while i >= 0:
        if i > 0 and data[i - 1] == 10:  # at the start of a line
            j = i + 10
            while j < n and data[j] in b" \t\r":
                j += 1
            if j == n or data[j] == 10:
                return i - 1, min(j + 1, n)
        i = data.find(b"end_header", i + 1)
    return None


def _parse_header(data: bytes, name: str) -> PlyHeader:
    if not data.startswith(b"ply"):
        raise FormatError(name, "line 1", "not a PLY file (the first line must be 'ply')")
    found = _find_end_header(data)
    if found is None:
        raise FormatError(name, None, "no 'end_header' line: the header is truncated")
    header_end, body_offset = found
    header_bytes = data[:header_end]
    lines = header_bytes.split(b"\n")
    fmt = None
    elements: list[list] = []
    comments: list[str] = []
    for i, raw in enumerate(lines):
        lineno = i + 1
        where = f"line {lineno}"
        line = raw.decode("latin-1").strip()
        if i == 0:
            if line != "ply":
                raise FormatError(name, where, f"not a PLY file (first line {line[:40]!r}, expected 'ply')")
            continue
        tokens = line.split()
        if not tokens:
            continue
        key = tokens[0]
        if key in ("comment", "obj_info"):
            comments.append(line[len(key) :].strip())
        elif key == "format":
            if len(tokens) != 3 or tokens[1] not in _FORMATS:
                raise FormatError(
                    name, where, f"bad format line {line[:60]!r}, expected one of {list(_FORMATS)}"
                )
            if fmt is not None:
                raise FormatError(name, where, "duplicate format line")
            fmt = tokens[1]
        elif key == "element":
            if len(tokens) != 3:
                raise FormatError(
                    name, where, f"bad element line {line[:60]!r}, expected 'element <name> <count>'"
                )
            try:
                count = int(tokens[2])
            except ValueError:
                raise FormatError(
                    name, where, f"element count {tokens[2][:30]!r} is not an integer"
                ) from None
            if count < 0:
                raise FormatError(name, where, f"element count {count} is negative")
            if len(elements) >= MAX_ELEMENTS:
                raise FormatError(name, where, f"more than {MAX_ELEMENTS} elements")
            elements.append([tokens[1], count, []])
        elif key == "property":
            if not elements:
                raise FormatError(name, where, "property before any element")
            if len(elements[-1][2]) >= MAX_PROPERTIES:
                raise FormatError(
                    name, where, f"more than {MAX_PROPERTIES} properties in element '{elements[-1][0]}'"
                )
            if len(tokens) >= 2 and tokens[1] == "list":
                if len(tokens) != 5:
                    raise FormatError(
                        name,
                        where,
                        f"bad list property {line[:60]!r}, expected "
                        "'property list <count type> <item type> <name>'",
                    )
                ctype, itype = PLY_TYPES.get(tokens[2]), PLY_TYPES.get(tokens[3])
                if ctype is None or itype is None:
                    raise FormatError(name, where, f"unknown PLY type in {line[:60]!r}")
                if ctype[0] == "f":
                    raise FormatError(
                        name, where, f"list count type must be an integer type, got {tokens[2]!r}"
                    )
                elements[-1][2].append(PlyProperty(tokens[4], itype, ctype))
            else:
                if len(tokens) != 3:
                    raise FormatError(
                        name, where, f"bad property line {line[:60]!r}, expected 'property <type> <name>'"
                    )
                t = PLY_TYPES.get(tokens[1])
                if t is None:
                    raise FormatError(name, where, f"unknown PLY type {tokens[1][:30]!r}")
                elements[-1][2].append(PlyProperty(tokens[2], t))
        else:
            raise FormatError(name, where, f"unexpected header line {line[:60]!r}")
    if fmt is None:
        raise FormatError(name, None, "the header has no format line")
    els = tuple(PlyElement(n, c, tuple(p)) for n, c, p in elements)
    return PlyHeader(fmt, els, tuple(comments), body_offset, len(lines) + 2)


# ---------------------------------------------------------------------------------------------------
# Binary body
# ---------------------------------------------------------------------------------------------------


def _gather(u8: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values of ``dtype`` stored at the given byte offsets (vectorised)."""
    size = dtype.itemsize
    if offsets.size == 0:
        return np.zeros(0, dtype.newbyteorder("="))
    idx = offsets[:, None] + np.arange(size, dtype=np.int64)
    return u8[idx].reshape(-1).view(dtype).astype(dtype.newbyteorder("="))


def _ragged_offsets(starts: np.ndarray, lengths: np.ndarray, item: int) -> np.ndarray:
    """Byte offsets of every item of every list: starts[i] + k * item for k < lengths[i]."""
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths
    within = np.arange(total, dtype=np.int64) - np.repeat(first, lengths)
    return np.repeat(starts, lengths) + within * item


def _scan_u1_list(data: bytes, u8: np.ndarray, pos: int, count: int, isz: int, name: str, where: str):
    """Row offsets of an element made of one list with a uchar length whose lengths vary.

    Runs of rows of equal length are found with a vectorised check over growing blocks (speculating that
    the next rows have the current row's length). A row that breaks a run is scanned on its own; after
    several short runs in a row, a stretch of rows (256, doubling while speculation keeps failing) is
    scanned one by one (two list appends per row), so alternating lengths cost almost no numpy call per
    row. Every offset is checked against the file size.

    Returns:
        (starts (count,) int64 byte offset of each row's first item, lengths (count,) int64, end offset).
    """
    end = len(data)
    run_r: list[int] = []  # vectorised runs: first row, byte offset, rows, list length
    run_o: list[int] = []
    run_n: list[int] = []
    run_l: list[int] = []
    st_r: list[int] = []  # row-by-row stretches: first row, rows
    st_k: list[int] = []
    so: list[int] = []  # offsets and lengths of the rows of the stretches
    sn: list[int] = []
    o, r = pos, 0
    block, streak, stretch = 64, 0, 256
    while r < count:
        if o >= end:
            raise FormatError(name, where, f"truncated at row {r} of {count}")
        L = data[o]
        rs = 1 + L * isz
        nb = min(block, count - r, (end - o) // rs)
        k = 1
        if nb >= 16:
            # first row whose length differs (argmax of a bool array; 0 = none, since row 0 has length L)
            m = int((u8[o : o + (nb - 1) * rs + 1 : rs] != L).argmax()) or nb
            run_r.append(r)
            run_o.append(o)
            run_n.append(m)
            run_l.append(L)
            o += m * rs
            r += m
            if m == nb:
                block = min(2 * block, 1 << 20)
                streak, stretch = 0, 256
                continue
            if m >= 16:  # a long run ended: scan the odd row directly, then speculate again
                block, streak, stretch = 64, 0, 256
            else:
                streak += 1
        else:
            streak += 1
        if streak >= 4:  # speculation keeps failing: scan a stretch, longer each time (up to 65536 rows)
            k, streak, stretch = stretch, 0, min(2 * stretch, 1 << 16)
        stop = min(count, r + k)
        st_r.append(r)
        st_k.append(stop - r)
        so_append, sn_append = so.append, sn.append
        for i in range(r, stop):
            if o >= end:
                raise FormatError(name, where, f"truncated at row {i} of {count}")
            n = data[o]
            so_append(o)
            sn_append(n)
            o += 1 + n * isz
        r = stop
        block = 64
    if o > end:
        raise FormatError(name, where, f"truncated at row {count - 1} of {count}")
    starts = np.empty(count, np.int64)
    lengths = np.empty(count, np.int64)
    if run_n:
        rn = np.asarray(run_n, np.int64)
        rl = np.asarray(run_l, np.int64)
        within = np.arange(int(rn.sum()), dtype=np.int64) - np.repeat(np.cumsum(rn) - rn, rn)
        rows = np.repeat(np.asarray(run_r, np.int64), rn) + within
        starts[rows] = np.repeat(np.asarray(run_o, np.int64), rn) + within * np.repeat(1 + rl * isz, rn) + 1
        lengths[rows] = np.repeat(rl, rn)
    if st_k:
        k = np.asarray(st_k, np.int64)
        rows = (
            np.repeat(np.asarray(st_r, np.int64), k)
            + np.arange(int(k.sum()), dtype=np.int64)
            - np.repeat(np.cumsum(k) - k, k)
        )
        starts[rows] = np.asarray(so, np.int64) + 1
        lengths[rows] = np.asarray(sn, np.int64)
    return starts, lengths, o


def _read_binary_element(
    data: bytes, u8: np.ndarray, pos: int, el: PlyElement, endian: str, name: str
) -> tuple[dict, int]:
    where = f"element '{el.name}'"
    left = len(data) - pos
    props = el.properties
    count = el.count
    if not props:
        return {}, pos
    has_list = any(p.count_type is not None for p in props)
    dtypes = [np.dtype(endian + p.type) for p in props]
    cdtypes = [np.dtype(endian + p.count_type) if p.count_type else None for p in props]
    min_row = sum(c.itemsize if c is not None else d.itemsize for d, c in zip(dtypes, cdtypes))
    if count * min_row > left:
        raise FormatError(
            name,
            where,
            f"declares {count} rows (at least {count * min_row} bytes) but only "
            f"{left} bytes are left in the file",
        )
    out: dict = {}
    if not has_list:
        row = np.dtype([(f"p{i}", d) for i, d in enumerate(dtypes)])
        arr = np.frombuffer(data, row, count, pos)
        for i, p in enumerate(props):
            out.setdefault(p.name, arr[f"p{i}"].astype(dtypes[i].newbyteorder("=")))
        return out, pos + count * row.itemsize
    if count == 0:
        for i, p in enumerate(props):
            z = np.zeros(0, dtypes[i].newbyteorder("="))
            out.setdefault(p.name, PlyList(z, np.zeros(0, np.int64)) if p.count_type else z)
        return out, pos

    # Fast path: every row has the list lengths of the first row -> one structured frombuffer.
    o = pos
    first_lengths = []
    for d, c in zip(dtypes, cdtypes):
        if c is None:
            o += d.itemsize
        else:
            if o + c.itemsize > len(data):
                raise FormatError(name, where, f"truncated at row 0 of {count}")
            n = int(np.frombuffer(data, c, 1, o)[0])
            if n < 0:
                raise FormatError(name, where, f"row 0 has a negative list length {n}")
            first_lengths.append(n)
            o += c.itemsize + n * d.itemsize
    if o > len(data):
        raise FormatError(name, where, f"truncated at row 0 of {count}")
    fields = []
    li = 0
    for i, (d, c) in enumerate(zip(dtypes, cdtypes)):
        if c is None:
            fields.append((f"p{i}", d))
        else:
            fields.append((f"n{i}", c))
            fields.append((f"p{i}", d, (first_lengths[li],)))
            li += 1
    row = np.dtype(fields)
    if row.itemsize > 0 and count * row.itemsize <= left:
        arr = np.frombuffer(data, row, count, pos)
        li = 0
        uniform = True
        for i, c in enumerate(cdtypes):
            if c is not None:
                if not bool((arr[f"n{i}"] == first_lengths[li]).all()):
                    uniform = False
                    break
                li += 1
        if uniform:
            li = 0
            for i, p in enumerate(props):
                d = dtypes[i].newbyteorder("=")
                if p.count_type is None:
                    out.setdefault(p.name, arr[f"p{i}"].astype(d))
                else:
                    vals = np.ascontiguousarray(arr[f"p{i}"]).astype(d, copy=False).reshape(-1)
                    out.setdefault(p.name, PlyList(vals, np.full(count, first_lengths[li], np.int64)))
                    li += 1
            return out, pos + count * row.itemsize

    # Fallback: scan the row offsets (lists of varying lengths), then gather every property at once.
    offs = [[] for _ in props]
    lens = [[] if c is not None else None for c in cdtypes]
    readers = [
        struct.Struct(endian + _STRUCT_CODES[c.str[1:]]).unpack_from if c is not None else None
        for c in cdtypes
    ]
    sizes = [d.itemsize for d in dtypes]
    csizes = [c.itemsize if c is not None else 0 for c in cdtypes]
    end = len(data)
    o = pos
    k = range(len(props))
    if len(props) == 1 and cdtypes[0].str[1:] == "u1":
        # The usual face element (one list with a uchar length).
        starts, lengths, o = _scan_u1_list(data, u8, pos, count, sizes[0], name, where)
        # The rows are contiguous: the items are the element's bytes without the length bytes.
        keep = np.ones(o - pos, bool)
        keep[starts - 1 - pos] = False
        vals = u8[pos:o][keep].view(dtypes[0]).astype(dtypes[0].newbyteorder("="))
        out.setdefault(props[0].name, PlyList(vals, lengths))
        return out, o
    for r in range(count):
        for i in k:
            if readers[i] is None:
                offs[i].append(o)
                o += sizes[i]
            else:
                if o + csizes[i] > end:
                    raise FormatError(name, where, f"truncated at row {r} of {count}")
                n = readers[i](data, o)[0]
                if n < 0:
                    raise FormatError(name, where, f"row {r} has a negative list length {n}")
                offs[i].append(o + csizes[i])
                lens[i].append(n)
                o += csizes[i] + n * sizes[i]
        if o > end:
            raise FormatError(name, where, f"truncated at row {r} of {count}")
    for i, p in enumerate(props):
        starts = np.asarray(offs[i], np.int64)
        if p.count_type is None:
            out.setdefault(p.name, _gather(u8, starts, dtypes[i]))
        else:
            lengths = np.asarray(lens[i], np.int64)
            vals = _gather(u8, _ragged_offsets(starts, lengths, sizes[i]), dtypes[i])
            out.setdefault(p.name, PlyList(vals, lengths))
    return out, o


def _read_binary(data: bytes, header: PlyHeader, name: str) -> dict:
    endian = "<" if header.format == "binary_little_endian" else ">"
    u8 = np.frombuffer(data, np.uint8)
    pos = header.body_offset
    elements: dict = {}
    for el in header.elements:
        props, pos = _read_binary_element(data, u8, pos, el, endian, name)
        elements.setdefault(el.name, props)
    return elements


# ---------------------------------------------------------------------------------------------------
# Ascii body
# ---------------------------------------------------------------------------------------------------


_WS = np.zeros(256, bool)
_WS[[9, 10, 11, 12, 13, 32]] = True  # the ASCII whitespace of bytes.split()


def _to_float64(tokens: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Tokens -> float64 (C-level ``map(float)``; no fixed-width string array, so one huge token cannot blow
    up memory). Returns (values, mask of unparsable tokens or None)."""
    try:
        return np.fromiter(map(float, tokens), np.float64, len(tokens)), None
    except ValueError:  # error path: find the bad tokens one by one
        out = np.empty(len(tokens), np.float64)
        bad = np.zeros(len(tokens), bool)
        for i, t in enumerate(tokens):
            try:
                out[i] = float(t)
            except ValueError:
                out[i], bad[i] = np.nan, True
        return out, bad


def _cast_mask(col: np.ndarray, type_code: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 column -> the property type; for integer types also the mask of non-integral/out-of-range."""
    if type_code[0] == "f":
        return col.astype(type_code), None
    info = np.iinfo(np.dtype(type_code))
    with np.errstate(invalid="ignore"):
        ok = (col == np.round(col)) & (col >= info.min) & (col <= info.max)
    safe = np.where(ok, col, 0)
    return safe.astype(type_code), ~ok


def _read_ascii(data: bytes, header: PlyHeader, name: str, row_lines: dict | None = None) -> dict:
    """Ascii body, vectorised over rows: one row per line (as PyTorch3D), every token parsed once."""
    body = data[header.body_offset :]
    tokens = body.split()
    u8 = np.frombuffer(body, np.uint8)
    ws = _WS[u8]
    is_start = ~ws
    is_start[1:] &= ws[:-1]
    starts = np.flatnonzero(is_start)
    del ws, is_start
    # body line (0-based) of each token = number of newlines before it
    tok_line = np.searchsorted(np.flatnonzero(u8 == 10), starts)
    del starts
    if tok_line.size:
        brk = np.flatnonzero(np.diff(tok_line)) + 1
        row_first_tok = np.concatenate([[0], brk]).astype(np.int64)  # first token of each non-empty line
        row_line = tok_line[row_first_tok]
        row_ntok = np.diff(np.concatenate([row_first_tok, [tok_line.size]]))
    else:
        row_first_tok = row_line = row_ntok = np.zeros(0, np.int64)
    first_line = header.body_line
    elements: dict = {}
    cur = 0
    for el in header.elements:
        count, props = el.count, el.properties
        out: dict = {}
        if not props:
            elements.setdefault(el.name, out)
            continue
        avail = row_line.size - cur
        if count > avail:
            last = first_line + (int(row_line[-1]) + 1 if row_line.size else 0)
            raise FormatError(
                name,
                f"line {last}",
                f"element '{el.name}' declares {count} rows but the file ends after {avail}",
            )
        rl = row_line[cur : cur + count]
        rc = row_ntok[cur : cur + count]
        if row_lines is not None:
            row_lines.setdefault(el.name, first_line + rl)
        t0 = int(row_first_tok[cur]) if count else 0
        cur += count

        def fail(r: int, msg: str, rl=rl):
            raise FormatError(name, f"line {first_line + int(rl[r])}", msg)

        has_list = any(p.count_type is not None for p in props)
        if not has_list:
            bad = np.flatnonzero(rc != len(props))
            if bad.size:
                r = int(bad[0])
                fail(r, f"element '{el.name}' row has {int(rc[r])} values, expected {len(props)}")
        n_tok = int(rc.sum())
        vals, bad_tok = _to_float64(tokens[t0 : t0 + n_tok])
        row_end = np.cumsum(rc)
        pos = row_end - rc  # per-row cursor, in tokens relative to t0
        for p in props:
            short = np.flatnonzero(pos >= row_end)
            if short.size:
                fail(int(short[0]), f"element '{el.name}' row is too short")
            if p.count_type is None:
                if bad_tok is not None and bool(bad_tok[pos].any()):
                    fail(
                        int(np.flatnonzero(bad_tok[pos])[0]),
                        f"bad value for property '{p.name}' of element '{el.name}'",
                    )
                col, bad = _cast_mask(vals[pos], p.type)
                if bad is not None and bool(bad.any()):
                    fail(
                        int(np.flatnonzero(bad)[0]),
                        f"bad value for property '{p.name}' of element '{el.name}'",
                    )
                out.setdefault(p.name, col)
                pos = pos + 1
                continue
            nf = vals[pos]
            room = row_end - pos - 1
            with np.errstate(invalid="ignore"):
                okn = (nf == np.round(nf)) & (nf >= 0) & (nf <= room)
            if bad_tok is not None:
                okn &= ~bad_tok[pos]
            if not bool(okn.all()):
                r = int(np.flatnonzero(~okn)[0])
                fail(
                    r,
                    f"list length {tokens[t0 + int(pos[r])][:20].decode('latin-1')} of property "
                    f"'{p.name}' does not match the row",
                )
            n = nf.astype(np.int64)
            idx = _ragged_offsets(pos + 1, n, 1)
            item_row = np.repeat(np.arange(count), n)
            if bad_tok is not None and bool(bad_tok[idx].any()):
                fail(
                    int(item_row[np.flatnonzero(bad_tok[idx])[0]]),
                    f"bad value for property '{p.name}' of element '{el.name}'",
                )
            items, bad = _cast_mask(vals[idx], p.type)
            if bad is not None and bool(bad.any()):
                fail(
                    int(item_row[np.flatnonzero(bad)[0]]),
                    f"bad value for property '{p.name}' of element '{el.name}'",
                )
            out.setdefault(p.name, PlyList(items, n))
            pos = pos + 1 + n
        extra = np.flatnonzero(pos != row_end)
        if extra.size:
            r = int(extra[0])
            fail(r, f"element '{el.name}' row has {int(row_end[r] - pos[r])} extra values")
        elements.setdefault(el.name, out)
    return elements


# ---------------------------------------------------------------------------------------------------
# Mesh extraction
# ---------------------------------------------------------------------------------------------------


def _tri_to_row(lst: PlyList, t: int) -> int:
    """The face row that triangle ``t`` of :func:`_triangulate` comes from (error messages)."""
    L = lst.uniform_length
    if L is not None:
        return t % lst.lengths.size
    return int(np.searchsorted(np.cumsum(lst.lengths - 2), t, side="right"))


def _triangulate(lst: PlyList, name: str, row_where) -> np.ndarray:
    """Fan-triangulate polygons (PyTorch3D's order) -> (F, 3) int64."""
    count = lst.lengths.size
    if count == 0:
        return np.zeros((0, 3), np.int64)
    L = lst.uniform_length
    if L is not None:
        if L < 3:
            raise FormatError(name, row_where(0), f"faces must have at least 3 vertices, got {L}")
        rows = lst.values.reshape(count, L)
        if L == 3:
            return rows.astype(np.int64)
        # fan position major, then face: (L-2, count, 3) -> ((L-2) * count, 3)
        first = np.broadcast_to(rows[:, 0], (L - 2, count))
        return (
            np.stack([first, rows[:, 1 : L - 1].T, rows[:, 2:L].T], axis=-1).reshape(-1, 3).astype(np.int64)
        )
    lengths = lst.lengths
    if bool((lengths < 3).any()):
        r = int(np.flatnonzero(lengths < 3)[0])
        raise FormatError(name, row_where(r), f"face has {int(lengths[r])} vertices; at least 3 are needed")
    vals = lst.values.astype(np.int64)
    first = np.cumsum(lengths) - lengths
    ntri = lengths - 2
    max_tri = int(ntri.max())
    if max_tri <= 64:
        # loop over the fan position (not over faces): triangle i of every face that has one
        off = np.cumsum(ntri) - ntri  # first output triangle of each face (face by face order)
        out = np.empty((int(ntri.sum()), 3), np.int64)
        for i in range(max_tri):
            sel = slice(None) if i == 0 else np.flatnonzero(ntri > i)
            s, dst = first[sel], off[sel] + i
            out[dst, 0] = vals[s]
            out[dst, 1] = vals[s + i + 1]
            out[dst, 2] = vals[s + i + 2]
        return out
    tri_face = np.repeat(np.arange(count), ntri)
    k = np.arange(int(ntri.sum()), dtype=np.int64) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    s = first[tri_face]
    return np.stack([vals[s], vals[s + k + 1], vals[s + k + 2]], axis=1)


def _mesh_from_elements(elements: dict, name: str, row_lines: dict | None = None):
    """verts, faces, normals, colours from the parsed elements. ``row_lines``: element -> file line of each
    row (ascii), so that errors name the line; binary errors name the element and the row."""

    def row_where(r: int) -> str:
        if row_lines is not None and "face" in row_lines:
            return f"line {int(row_lines['face'][r])}"
        return f"element 'face', row {r}"

    vertex = elements.get("vertex")
    if vertex is None:
        raise FormatError(name, None, "the file has no 'vertex' element")
    for axis in "xyz":
        if axis not in vertex:
            raise FormatError(name, "element 'vertex'", f"has no '{axis}' property")
        if isinstance(vertex[axis], PlyList):
            raise FormatError(name, "element 'vertex'", f"property '{axis}' is a list")
    verts = np.stack([vertex[a] for a in "xyz"], axis=1).astype(np.float32)
    V = verts.shape[0]

    normals = None
    if all(k in vertex and not isinstance(vertex[k], PlyList) for k in ("nx", "ny", "nz")):
        normals = torch.from_numpy(np.stack([vertex[k] for k in ("nx", "ny", "nz")], 1).astype(np.float32))
    colors = None
    ckeys = ["red", "green", "blue"] + (["alpha"] if "alpha" in vertex else [])
    if all(k in vertex and not isinstance(vertex[k], PlyList) for k in ckeys):
        cols = []
        for k in ckeys:
            c = vertex[k]
            if c.dtype.kind in "iu":
                c = c.astype(np.float32) / (
                    65535.0 if c.dtype.itemsize >= 2 and c.dtype.kind == "u" else 255.0
                )
            cols.append(c.astype(np.float32))
        colors = torch.from_numpy(np.stack(cols, 1))

    uvs = None
    for ukey, vkey in (("u", "v"), ("s", "t"), ("texture_u", "texture_v")):
        if ukey in vertex and vkey in vertex and not isinstance(vertex[ukey], PlyList) \
                and not isinstance(vertex[vkey], PlyList):
            uvs = torch.from_numpy(np.stack([vertex[ukey], vertex[vkey]], 1).astype(np.float32))
            break

    faces = np.zeros((0, 3), np.int64)
    face = elements.get("face")
    if face is not None:
        lst = face.get("vertex_indices", face.get("vertex_index"))
        if lst is None:
            lists = [v for v in face.values() if isinstance(v, PlyList)]
            if len(lists) != 1:
                raise FormatError(name, "element 'face'", "has no 'vertex_indices' or 'vertex_index' list")
            lst = lists[0]
        if not isinstance(lst, PlyList):
            raise FormatError(name, "element 'face'", "vertex indices must be a list property")
        if lst.values.dtype.kind not in "iu":
            raise FormatError(
                name, "element 'face'", f"vertex indices must be integers, got {lst.values.dtype}"
            )
        faces = _triangulate(lst, name, row_where)
        if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= V):  # PyTorch3D: warn, keep
            bad_rows = np.flatnonzero(((faces < 0) | (faces >= V)).any(axis=1))
            t = int(bad_rows[0])
            bad = faces[t][(faces[t] < 0) | (faces[t] >= V)][0]
            warnings.warn(f"{name}, {row_where(_tri_to_row(lst, t))}: Faces have invalid indices: vertex index "
                          f"{int(bad)} out of range [0, {V}) in element 'face' ({bad_rows.size} triangles "
                          "affected)", stacklevel=3)
    return torch.from_numpy(verts), torch.from_numpy(np.ascontiguousarray(faces)), normals, colors, uvs


def load_ply_data(f: PathOrFile) -> PlyData:
    """Read a PLY file with everything in it.

    Args:
        f: a path or a file object: binary (``open(p, "rb")``, ``io.BytesIO``) or, for ascii PLY, text
            (``io.StringIO``).

    Returns:
        :class:`PlyData` (verts (V, 3) float32, faces (F, 3) int64, verts_normals, verts_colors, all
        elements, header, verts_uvs).

    Raises:
        FormatError: the file is malformed, truncated or inconsistent.

    Warns:
        UserWarning: "Faces have invalid indices" for a face index outside ``[0, V)`` (kept, as PyTorch3D).
    """
    name = file_name(f)
    data = read_bytes(f)
    try:
        header = _parse_header(data, name)
        if header.format == "ascii":
            row_lines: dict = {}
            elements = _read_ascii(data, header, name, row_lines)
        else:
            row_lines = None
            elements = _read_binary(data, header, name)
        verts, faces, normals, colors, uvs = _mesh_from_elements(elements, name, row_lines)
    except FormatError:
        raise
    except (ValueError, IndexError, OverflowError, struct.error, TypeError, KeyError) as e:  # safety net
        raise FormatError(name, None, f"malformed PLY ({type(e).__name__}: {e})") from e
    return PlyData(verts, faces, normals, colors, elements, header, uvs)


def load_ply(f: PathOrFile) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the vertices and triangles of a PLY file, as ``pytorch3d.io.load_ply``.

    Args:
        f: a path or a binary file object (ascii, binary_little_endian or binary_big_endian PLY).

    Returns:
        verts: (V, 3) float32.
        faces: (F, 3) int64 vertex indices (polygons fan-triangulated); (0, 3) when the file has no faces.

    Raises:
        FormatError: the file is malformed, truncated or inconsistent.

    Warns:
        UserWarning: "Faces have invalid indices" for a face index outside ``[0, V)`` (kept, as PyTorch3D).

    Example:
        >>> verts, faces = load_ply("cow.ply")
    """
    d = load_ply_data(f)
    return d.verts, d.faces


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _ascii_rows(arr: np.ndarray, fmt: str) -> bytes:
    if arr.shape[0] == 0:
        return b""
    row = " ".join([fmt] * arr.shape[1])
    return ("\n".join(row % tuple(r) for r in arr.tolist()) + "\n").encode("ascii")


def save_ply(
    f: PathOrFile,
    verts: torch.Tensor,
    faces: torch.Tensor | None = None,
    verts_normals: torch.Tensor | None = None,
    verts_colors: torch.Tensor | None = None,
    ascii: bool = False,
    decimal_places: int | None = None,
    comments: Sequence[str] = (),
) -> None:
    """Write a mesh or point cloud to a PLY file (as ``pytorch3d.io.save_ply``, plus colours).

    Vertex properties are written as ``float`` (``x y z``, then ``nx ny nz``, then ``red green blue
    (alpha)``, colours as floats like PyTorch3D); faces as ``property list uchar int vertex_index``.
    Binary files are little-endian whatever the machine.

    Args:
        f: a path or a binary file object.
        verts: (V, 3) float.
        faces: (F, 3) integer vertex indices in [0, V), or None for a point cloud.
        verts_normals: (V, 3) float or None.
        verts_colors: (V, C) float in [0, 1] with C = 3 or 4, or None.
        ascii: write the ascii format instead of binary_little_endian.
        decimal_places: ascii only; digits after the point (default: 9 significant digits, which
            round-trips float32 exactly).
        comments: ``comment`` lines for the header (none by default, so the header is PyTorch3D's).

    Raises:
        ValueError/TypeError: bad shapes or dtypes.

    Warns:
        UserWarning: "Faces have invalid indices" for face indices outside ``[0, V)`` (written anyway, as
            PyTorch3D).
    """
    sizes = check_shape("verts", verts, ("V", 3), dtype="float")
    if verts_normals is not None:
        check_shape("verts_normals", verts_normals, ("V", 3), sizes, dtype="float")
    if verts_colors is not None:
        check_shape("verts_colors", verts_colors, ("V", None), sizes, dtype="float")
        if verts_colors.shape[1] not in (3, 4):
            raise ValueError(
                f"verts_colors must have shape (V, 3) or (V, 4), got {tuple(verts_colors.shape)}"
            )
    if faces is not None:
        check_shape("faces", faces, ("F", 3), dtype="int")
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= sizes["V"]):
            warnings.warn(f"Faces have invalid indices: faces holds values in [{int(faces.min())}, "
                          f"{int(faces.max())}], outside [0, {sizes['V']})", stacklevel=2)
    V = sizes["V"]
    if V == 0:
        faces = None  # as PyTorch3D: no face element without vertices
    cols = [verts.detach().cpu().float()]
    names = ["x", "y", "z"]
    if verts_normals is not None:
        cols.append(verts_normals.detach().cpu().float())
        names += ["nx", "ny", "nz"]
    if verts_colors is not None:
        cols.append(verts_colors.detach().cpu().float())
        names += ["red", "green", "blue", "alpha"][: verts_colors.shape[1]]
    vdata = torch.cat(cols, dim=1).numpy()

    fmt = "ascii" if ascii else "binary_little_endian"
    for c in comments:
        if "\n" in c or "\r" in c:
            raise ValueError(f"comments must be single lines, got {c!r}")
    head = [b"ply", f"format {fmt} 1.0".encode()] + [f"comment {c}".encode() for c in comments]
    head += [f"element vertex {V}".encode()]
    head += [f"property float {n}".encode() for n in names]
    if faces is not None:
        head += [f"element face {faces.shape[0]}".encode(), b"property list uchar int vertex_index"]
    head.append(b"end_header")
    chunks = [b"\n".join(head) + b"\n"]
    fdata = None if faces is None else faces.detach().cpu().to(torch.int64).numpy()
    if ascii:
        ffmt = "%.9g" if decimal_places is None else f"%.{int(decimal_places)}f"
        chunks.append(_ascii_rows(vdata, ffmt))
        if fdata is not None:
            chunks.append(_ascii_rows(np.concatenate([np.full((len(fdata), 1), 3), fdata], 1), "%d"))
    else:
        chunks.append(vdata.astype("<f4").tobytes())
        if fdata is not None:
            rows = np.empty(len(fdata), np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
            rows["n"] = 3
            rows["v"] = fdata
            chunks.append(rows.tobytes())
    payload = b"".join(chunks)
    if hasattr(f, "write"):
        f.write(payload)
    else:
        with open(f, "wb") as fh:
            fh.write(payload)
