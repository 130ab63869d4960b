"""PLY: golden parity with PyTorch3D, every format and scalar type, lists, unknown elements, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.io import FormatError, PlyList, load_ply, load_ply_data, save_ply
from tests.helpers import book_path, golden_case, load_golden
from tests.io.plywriter import write_ply

FORMATS = ["ascii", "binary_little_endian", "binary_big_endian"]
INT_TYPES = [
    "char",
    "int8",
    "uchar",
    "uint8",
    "short",
    "int16",
    "ushort",
    "uint16",
    "int",
    "int32",
    "uint",
    "uint32",
]
FLOAT_TYPES = ["float", "float32", "double", "float64"]
XYZ = [("x", "float", None), ("y", "float", None), ("z", "float", None)]


def _load(b: bytes, **kw):
    return load_ply(io.BytesIO(b), **kw)


# --- golden parity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["cow_ply", "cube_ply", "parallel_plane_color_ply", "parallel_plane_mono_ply"]
)
def test_golden_parity(case):
    tensors, cases = load_golden("io")
    g = golden_case(tensors, case)
    verts, faces = load_ply(book_path(cases[case]["file"]))
    assert verts.dtype == torch.float32 and faces.dtype == torch.int64
    torch.testing.assert_close(verts, g["verts"], atol=1e-6, rtol=0)
    assert torch.equal(faces, g["faces"])


# --- formats, types ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("vtype", FLOAT_TYPES + ["short", "int"])
@pytest.mark.parametrize(
    "ctype,itype",
    [
        ("uchar", "int"),
        ("uint8", "uint32"),
        ("ushort", "short"),
        ("int", "uint"),
        ("char", "ushort"),
        ("uint", "int16"),
    ],
)
def test_types_and_formats(fmt, vtype, ctype, itype):
    rng = np.random.default_rng(0)
    V = 7
    pts = rng.integers(-50, 50, (V, 3)) if vtype in ("short", "int") else rng.normal(size=(V, 3))
    tris = [[0, 1, 2], [2, 3, 4], [6, 5, 0]]
    props = [("x", vtype, None), ("y", vtype, None), ("z", vtype, None)]
    data = write_ply(
        fmt,
        [
            ("vertex", props, [tuple(p) for p in pts.tolist()]),
            ("face", [("vertex_indices", itype, ctype)], [(t,) for t in tris]),
        ],
    )
    verts, faces = _load(data)
    expect = torch.tensor(pts, dtype=torch.float32)
    torch.testing.assert_close(verts, expect, atol=1e-6, rtol=1e-6)
    assert torch.equal(faces, torch.tensor(tris))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("t", INT_TYPES + FLOAT_TYPES)
def test_every_scalar_type_roundtrips_exactly(fmt, t):
    info = (
        np.iinfo(
            np.dtype(
                {
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
                }[t]
            )
        )
        if t in INT_TYPES
        else None
    )
    vals = [info.min, 0, 1, info.max] if info else [-1.5, 0.0, 3.25, 1e6]
    data = write_ply(
        fmt,
        [
            ("vertex", XYZ, [(0.0, 0.0, 0.0)] * 4),
            ("extra", [("val", t, None), ("lst", t, "uchar")], [(v, [v, v]) for v in vals]),
        ],
    )
    d = load_ply_data(io.BytesIO(data))
    assert d.elements["extra"]["val"].tolist() == vals
    assert d.elements["extra"]["lst"].values.tolist() == [v for v in vals for _ in range(2)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_normals_colors_uchar_and_float(fmt):
    props = XYZ + [
        ("nx", "float", None),
        ("ny", "float", None),
        ("nz", "float", None),
        ("red", "uchar", None),
        ("green", "uchar", None),
        ("blue", "uchar", None),
        ("alpha", "uchar", None),
    ]
    rows = [(0, 0, 0, 0, 0, 1, 255, 0, 51, 255), (1, 0, 0, 1, 0, 0, 0, 102, 0, 0)]
    d = load_ply_data(io.BytesIO(write_ply(fmt, [("vertex", props, rows)])))
    torch.testing.assert_close(d.verts_normals, torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    torch.testing.assert_close(d.verts_colors, torch.tensor([[1.0, 0, 0.2, 1], [0, 0.4, 0, 0]]))
    assert d.faces.shape == (0, 3)
    props = XYZ + [("red", "float", None), ("green", "double", None), ("blue", "float", None)]
    d = load_ply_data(io.BytesIO(write_ply(fmt, [("vertex", props, [(0, 0, 0, 0.25, 0.5, 0.75)])])))
    torch.testing.assert_close(d.verts_colors, torch.tensor([[0.25, 0.5, 0.75]]))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("prop", ["vertex_indices", "vertex_index"])
def test_polygons_fan_triangulated_in_pytorch3d_order(fmt, prop):
    pts = [(float(i), 0.0, 0.0) for i in range(8)]
    # All quads: PyTorch3D stacks all first triangles, then all second triangles.
    quads = [([0, 1, 2, 3],), ([4, 5, 6, 7],)]
    _, faces = _load(write_ply(fmt, [("vertex", XYZ, pts), ("face", [(prop, "int", "uchar")], quads)]))
    assert faces.tolist() == [[0, 1, 2], [4, 5, 6], [0, 2, 3], [4, 6, 7]]
    # Mixed lengths: face by face.
    mixed = [([0, 1, 2],), ([3, 4, 5, 6, 7],), ([1, 2, 3, 4],)]
    _, faces = _load(write_ply(fmt, [("vertex", XYZ, pts), ("face", [(prop, "int", "uchar")], mixed)]))
    assert faces.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6], [3, 6, 7], [1, 2, 3], [1, 3, 4]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_elements_and_properties_are_skipped(fmt):
    pts = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    vprops = [
        ("quality", "double", None),
        ("x", "float", None),
        ("tags", "short", "uchar"),
        ("y", "float", None),
        ("z", "float", None),
        ("flags", "uint", "ushort"),
    ]
    vrows = [(9.5, p[0], [1, 2, 3][: i % 3], p[1], p[2], [7] * i) for i, p in enumerate(pts)]
    elements = [
        ("material", [("name", "uchar", "uint"), ("k", "float", None)], [([1, 2], 0.5), ([], 1.5)]),
        ("vertex", vprops, vrows),
        ("edge", [("vertex1", "int", None), ("vertex2", "int", None)], [(0, 1), (1, 2)]),
        (
            "face",
            [("flags", "uchar", None), ("vertex_indices", "uint", "uchar"), ("texcoord", "float", "uchar")],
            [(1, [0, 1, 2], [0.1] * 6), (2, [0, 2, 3], [])],
        ),
        ("trailer", [("junk", "double", "int")], [([1.0, 2.0],)]),
    ]
    d = load_ply_data(io.BytesIO(write_ply(fmt, elements)))
    torch.testing.assert_close(d.verts, torch.tensor(pts))
    assert d.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert d.elements["edge"]["vertex2"].tolist() == [1, 2]
    assert d.elements["trailer"]["junk"].values.tolist() == [1.0, 2.0]
    assert d.elements["vertex"]["flags"].lengths.tolist() == [0, 1, 2, 3]
    assert isinstance(d.elements["face"]["texcoord"], PlyList)


@pytest.mark.parametrize("ascii", [False, True])
def test_save_load_roundtrip(tmp_path, ascii):
    g = torch.Generator().manual_seed(0)
    V, F = 50, 80
    verts = torch.randn(V, 3, generator=g)
    faces = torch.randint(0, V, (F, 3), generator=g)
    normals = torch.nn.functional.normalize(torch.randn(V, 3, generator=g), dim=1)
    colors = torch.rand(V, 4, generator=g)
    p = tmp_path / "m.ply"
    save_ply(p, verts, faces, verts_normals=normals, verts_colors=colors, ascii=ascii)
    d = load_ply_data(p)
    assert torch.equal(d.verts, verts) and torch.equal(d.faces, faces)
    assert torch.equal(d.verts_normals, normals) and torch.equal(d.verts_colors, colors)
    # point cloud and empty faces
    save_ply(p, verts, ascii=ascii)
    v2, f2 = load_ply(p)
    assert torch.equal(v2, verts) and f2.shape == (0, 3) and f2.dtype == torch.int64
    save_ply(p, verts, faces[:0], ascii=ascii)
    assert load_ply(p)[1].shape == (0, 3)


def test_save_decimal_places_and_file_object():
    verts = torch.tensor([[0.123456789, 1.0, -2.5]])
    b = io.BytesIO()
    save_ply(b, verts, ascii=True, decimal_places=3)
    assert b"0.123 1.000 -2.500" in b.getvalue()
    b.seek(0)
    torch.testing.assert_close(load_ply(b)[0], torch.tensor([[0.123, 1.0, -2.5]]))


def test_save_rejects_bad_input(tmp_path):
    v = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="verts"):
        save_ply(tmp_path / "a.ply", torch.zeros(4, 2))
    with pytest.raises(TypeError, match="faces"):
        save_ply(tmp_path / "a.ply", v, torch.zeros(2, 3))
    with pytest.warns(UserWarning, match="Faces have invalid indices"):  # as PyTorch3D: warned, written
        save_ply(tmp_path / "a.ply", v, torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="verts_normals"):
        save_ply(tmp_path / "a.ply", v, verts_normals=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="verts_colors"):
        save_ply(tmp_path / "a.ply", v, verts_colors=torch.zeros(4, 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40), st.sampled_from(FORMATS), st.integers(0, 2**31 - 1))
def test_property_roundtrip_against_reference_writer(V, F, fmt, seed):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(V, 3)).astype(np.float32)
    polys = [rng.integers(0, V, rng.integers(3, 7)).tolist() for _ in range(F)]
    data = write_ply(
        fmt,
        [
            ("vertex", XYZ, [tuple(map(float, p)) for p in pts]),
            ("face", [("vertex_indices", "int", "uchar")], [(q,) for q in polys]),
        ],
    )
    verts, faces = _load(data)
    assert torch.equal(verts, torch.from_numpy(pts))
    if polys and len({len(q) for q in polys}) == 1:
        L = len(polys[0])
        expect = [[q[0], q[i + 1], q[i + 2]] for i in range(L - 2) for q in polys]
    else:
        expect = [[q[0], q[i + 1], q[i + 2]] for q in polys for i in range(len(q) - 2)]
    assert faces.tolist() == expect


# --- errors --------------------------------------------------------------------------------------


def _bad(data: bytes, match: str):
    with pytest.raises(FormatError, match=match):
        _load(data)


def test_errors_name_file_and_location(tmp_path):
    good = write_ply(
        "ascii",
        [
            ("vertex", XYZ, [(0.0, 0.0, 0.0)] * 3),
            ("face", [("vertex_indices", "int", "uchar")], [([0, 1, 2],)]),
        ],
    )
    p = tmp_path / "bad.ply"
    p.write_bytes(good.replace(b"1 2\n", b"1 3\n"))
    with pytest.warns(UserWarning, match=r"bad\.ply, line 14: Faces have invalid indices: vertex index 3 out of "
                      r"range \[0, 3\)"):
        load_ply(p)
    p.write_bytes(good.replace(b"0.0 0.0 0.0\n", b"0.0 zz 0.0\n", 1))
    with pytest.raises(FormatError, match=r"bad\.ply, line 11: bad value for property 'y'"):
        load_ply(p)
    p.write_bytes(good.replace(b"element vertex 3", b"element vertex 3000000000"))
    with pytest.raises(FormatError, match=r"bad\.ply, line 15.*declares 3000000000 rows"):
        load_ply(p)


def test_errors_header():
    _bad(b"plx\nformat ascii 1.0\nend_header\n", "line 1: not a PLY")
    _bad(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "end_header")
    _bad(b"ply\nformat weird 1.0\nend_header\n", "line 2: bad format")
    _bad(b"ply\nformat ascii 1.0\nelement vertex -1\nend_header\n", "line 3: element count -1 is negative")
    _bad(
        b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n", "line 4: unknown PLY type"
    )
    _bad(b"ply\nformat ascii 1.0\nproperty float x\nend_header\n", "line 3: property before any element")
    _bad(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list float int x\nend_header\n", "count type")
    _bad(b"ply\nformat ascii 1.0\nbogus\nend_header\n", "line 3: unexpected header line")
    _bad(b"ply\nelement vertex 0\nproperty float x\nend_header\n", "no format line")
    _bad(
        b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n",
        "no 'vertex' element",
    )
    _bad(b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n", "no 'y' property")


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_binary_errors_and_hostile_counts(fmt):
    good = write_ply(
        fmt,
        [
            ("vertex", XYZ, [(0.0, 0.0, 0.0)] * 3),
            ("face", [("vertex_indices", "int", "uchar")], [([0, 1, 2],), ([0, 1, 2, 0],)]),
        ],
    )
    _bad(good[:-3], "element 'face'.*truncated")
    _bad(good.replace(b"element vertex 3", b"element vertex 9999999999999"), "element 'vertex'.*declares")
    _bad(good.replace(b"element face 2", b"element face 9999999999"), "element 'face'.*declares")
    # a list length pointing past the end of the file
    body_start = good.index(b"end_header\n") + 11
    evil = bytearray(good)
    evil[body_start + 36] = 250
    _bad(bytes(evil), "element 'face'")
    # an index out of range names the element and the row (uniform and ragged rows)
    for polys, row in [([[0, 1, 2], [0, 1, 2, 1], [2, 9, 0]], 2), ([[0, 1, 2], [2, 1, 0], [0, 2, 7]], 2)]:
        bad = write_ply(
            fmt,
            [
                ("vertex", XYZ, [(0.0, 0.0, 0.0)] * 3),
                ("face", [("vertex_indices", "int", "uchar")], [(q,) for q in polys]),
            ],
        )
        with pytest.warns(UserWarning, match=rf"element 'face', row {row}: Faces have invalid indices: vertex "
                          rf"index \d out of range \[0, 3\)"):
            _load(bad)
    # faces with fewer than 3 vertices
    two = write_ply(
        fmt,
        [("vertex", XYZ, [(0.0, 0.0, 0.0)] * 3), ("face", [("vertex_indices", "int", "uchar")], [([0, 1],)])],
    )
    _bad(two, "at least 3")
    neg = write_ply(
        fmt,
        [
            ("vertex", XYZ, [(0.0, 0.0, 0.0)] * 3),
            ("face", [("vertex_indices", "int", "char")], [([0, 1, 2],), ([0, 1, 2, 1],)]),
        ],
    )
    neg = neg[:-17] + b"\xff" + neg[-16:]  # second row's length -1
    _bad(neg, "negative list length")


def test_ascii_errors():
    head = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    _bad(head + b"end_header\n0 0 0\n", r"line 9: element 'vertex' declares 2 rows but the file ends after 1")
    _bad(head + b"end_header\n0 0 0\n0 0\n", r"line 9: element 'vertex' row has 2 values")
    face = b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 1 1\n"
    _bad(head + face + b"4 0 1 2\n", r"line 12: list length 4")
    _bad(head + face + b"3 0 1 2 5\n", r"line 12: element 'face' row has 1 extra")
    _bad(head + face + b"3 0 1 x\n", r"line 12: bad value for property 'vertex_indices'")
    _bad(head + face + b"3 0 1 99999999999999999999\n", "line 12")
    _bad(head.replace(b"float z", b"uchar z") + b"end_header\n0 0 300\n0 0 0\n", "line 8: .*'z'")


def _scan_reference(data: bytes, count: int, isz: int):
    """Row by row: (starts of the items, lengths, end offset) or None when truncated."""
    o, starts, lengths = 0, [], []
    for _ in range(count):
        if o >= len(data):
            return None
        n = data[o]
        starts.append(o + 1)
        lengths.append(n)
        o += 1 + n * isz
    return (starts, lengths, o) if o <= len(data) else None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(1, 400)), min_size=1, max_size=30),
    st.sampled_from([1, 2, 4, 8]),
    st.integers(0, 3),
)
def test_variable_length_scan_matches_row_by_row_reference(runs, isz, cut):
    """The run-speculating scan of uchar-length lists equals the plain row-by-row scan (or both fail)."""
    from lib3d.io.ply import _scan_u1_list

    lengths = [n for n, k in runs for _ in range(k)]
    data = b"".join(bytes([n]) + bytes(range(n * isz)) for n in lengths)
    data = data[: len(data) - cut]
    ref = _scan_reference(data, len(lengths), isz)
    u8 = np.frombuffer(data, np.uint8)
    if ref is None:
        with pytest.raises(FormatError, match="truncated"):
            _scan_u1_list(data, u8, 0, len(lengths), isz, "f", "element 'face'")
        return
    starts, lens, end = _scan_u1_list(data, u8, 0, len(lengths), isz, "f", "element 'face'")
    assert starts.tolist() == ref[0] and lens.tolist() == ref[1] and end == ref[2]


def test_file_like_objects_uvs_and_pytorch3d_header(tmp_path):
    """PyTorch3D reads PLY from file objects (text for ascii), reads vertex texture coordinates and writes
    a header with no comment lines."""
    import io

    from lib3d.io import load_ply, load_ply_data, save_ply

    text = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            "property float s\nproperty float t\nelement face 1\nproperty list uchar int vertex_indices\n"
            "end_header\n0 0 0 0.1 0.2\n1 0 0 0.3 0.4\n0 1 0 0.5 0.6\n3 0 1 2\n")
    for stream in (io.StringIO(text), io.BytesIO(text.encode())):
        d = load_ply_data(stream)
        assert d.faces.tolist() == [[0, 1, 2]]
        torch.testing.assert_close(d.verts_uvs, torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))
    assert load_ply_data(io.StringIO(text.replace(" s\n", " u\n").replace(" t\n", " v\n"))).verts_uvs.shape == (3, 2)
    assert load_ply_data(io.StringIO(text.replace("property float s\nproperty float t\n", "")
                                     .replace(" 0.1 0.2", "").replace(" 0.3 0.4", "").replace(" 0.5 0.6", ""))
                         ).verts_uvs is None
    buf = io.BytesIO()
    save_ply(buf, torch.rand(3, 3), torch.tensor([[0, 1, 2]]), ascii=True)
    header = buf.getvalue().split(b"end_header")[0]
    assert b"comment" not in header
    assert header.startswith(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n")
    buf = io.BytesIO()
    save_ply(buf, torch.rand(3, 3), comments=["made by me"])
    assert b"\ncomment made by me\n" in buf.getvalue()
    buf.seek(0)
    assert load_ply(buf)[0].shape == (3, 3)
    with pytest.raises(ValueError, match="single lines"):
        save_ply(io.BytesIO(), torch.rand(3, 3), comments=["a\nb"])
