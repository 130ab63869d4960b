"""PyTorch3D drop-in behaviour of the OBJ / PLY readers and writers (issue 14), from PyTorch3D's io code
(``_check_faces_indices``, ``_parse_face``, ``save_obj``, ``_save_ply``): out-of-range face indices warn and
are kept, malformed face corners raise ``ValueError``, and the writers add no header comment."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from lib3d.io import FormatError, load_obj, load_ply, save_obj, save_ply

INVALID = "Faces have invalid indices"


def _obj(text: str, **kw):
    return load_obj(io.BytesIO(text.encode()), **kw)


def _no_warnings(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


@pytest.mark.parametrize(
    "text,field,expected",
    [
        # vertex index 4 of 3 vertices: kept as 0-based 3
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "verts_idx", [[0, 1, 3]]),
        # texture index 2 of 1 uv
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/2 2/1 3/1\n", "textures_idx", [[1, 0, 0]]),
        # normal index 1 without any normal
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1//1 2//1 3//1\n", "normals_idx", [[0, 0, 0]]),
        # a relative index before the first vertex stays negative
        ("v 0 0 0\nf -1 -2 -1\n", "verts_idx", [[0, -1, 0]]),
        # index 0: read as the first vertex, as PyTorch3D (which does not warn; lib3d does)
        ("v 0 0 0\nv 1 0 0\nf 1 2 0\n", "verts_idx", [[0, 1, 0]]),
    ],
)
def test_obj_invalid_indices_warn_and_are_kept(text, field, expected):
    with pytest.warns(UserWarning, match=rf"line \d+: {INVALID}"):
        _, faces, _ = _obj(text)
    assert getattr(faces, field).tolist() == expected


def test_obj_invalid_index_in_a_long_uniform_file_names_the_line():
    lines = ["v 0 0 0"] * 5 + [f"f 1 2 {k % 5 + 1}" for k in range(100)] + ["f 1 2 9"]
    with pytest.warns(UserWarning, match=rf"line 106: {INVALID}: vertex index 9 out of range"):
        _, faces, _ = _obj("\n".join(lines) + "\n")
    assert faces.verts_idx[-1].tolist() == [0, 1, 8] and faces.verts_idx.shape == (101, 3)


@pytest.mark.parametrize(
    "text,match",
    [
        ("v 0 0 0\nf 1/1/1/1 1 1\n", "more than 3 indices"),  # PyTorch3D: ValueError
        ("v 0 0 0\nvt 0 0\nf 1/1 1 1\n", "inconsistent"),  # PyTorch3D: ValueError
        ("v 0 0 0\nf 1 1 99999999999999999999999\n", "64 bits"),
    ],
)
def test_obj_malformed_faces_raise_value_error(text, match):
    with pytest.raises(ValueError, match=match):
        _obj(text)


def test_obj_valid_file_does_not_warn():
    _, faces, _ = _no_warnings(_obj, "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 -1/1/1\n")
    assert faces.verts_idx.tolist() == [[0, 1, 2]]


def test_obj_texture_atlas_with_bad_uv_index_raises(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl a\nKd 1 0 0\n")
    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nusemtl a\nf 1/1 2/1 3/5\n")
    with pytest.warns(UserWarning, match=INVALID), pytest.raises(FormatError, match="texture atlas"):
        load_obj(tmp_path / "m.obj", create_texture_atlas=True)


def test_save_obj_writes_no_comment_and_warns_on_invalid_faces():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    buf = io.StringIO()
    _no_warnings(save_obj, buf, v, torch.tensor([[0, 1, 2]]), decimal_places=6)
    # PyTorch3D's save_obj text (``%f`` floats with decimal_places=6), but for the final newline
    assert buf.getvalue() == ("v 0.000000 0.000000 0.000000\nv 1.000000 0.000000 0.000000\n"
                              "v 0.000000 1.000000 0.000000\nf 1 2 3\n")
    buf = io.StringIO()
    with pytest.warns(UserWarning, match=INVALID):
        save_obj(buf, v, torch.tensor([[0, 1, 3]]))
    assert buf.getvalue().splitlines()[-1] == "f 1 2 4"  # written anyway, as PyTorch3D
    with pytest.warns(UserWarning, match="Empty"):
        save_obj(io.StringIO(), torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))


def _ply_ascii(faces: str, n_faces: int) -> bytes:
    return (b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            + f"element face {n_faces}\n".encode() + b"property list uchar int vertex_indices\nend_header\n"
            + b"0 0 0\n1 0 0\n0 1 0\n" + faces.encode())


def test_ply_invalid_indices_warn_and_are_kept():
    with pytest.warns(UserWarning, match=rf"line 14: {INVALID}: vertex index 3 out of range \[0, 3\)"):
        verts, faces = load_ply(io.BytesIO(_ply_ascii("3 0 1 2\n3 0 1 3\n", 2)))
    assert faces.tolist() == [[0, 1, 2], [0, 1, 3]] and verts.shape == (3, 3)
    # binary: the row is named
    buf = io.BytesIO()
    with pytest.warns(UserWarning, match=INVALID):
        save_ply(buf, verts, torch.tensor([[0, 1, 2], [2, 1, -1]]))
    with pytest.warns(UserWarning, match=rf"element 'face', row 1: {INVALID}"):
        _, faces = load_ply(io.BytesIO(buf.getvalue()))
    assert faces.tolist() == [[0, 1, 2], [2, 1, -1]]
    _, faces = _no_warnings(load_ply, io.BytesIO(_ply_ascii("3 0 1 2\n", 1)))
    assert faces.tolist() == [[0, 1, 2]]


def test_ply_faces_with_fewer_than_3_vertices_raise_value_error():
    with pytest.raises(ValueError, match="at least 3"):
        load_ply(io.BytesIO(_ply_ascii("2 0 1\n", 1)))


def test_save_ply_header_is_pytorch3d_s():
    v = torch.rand(3, 3)
    buf = io.BytesIO()
    save_ply(buf, v, torch.tensor([[0, 1, 2]]))
    head = buf.getvalue().split(b"end_header\n")[0].decode()
    assert head == ("ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                    "property float z\nelement face 1\nproperty list uchar int vertex_index\n")
    buf = io.BytesIO()
    save_ply(buf, v, ascii=True)
    assert buf.getvalue().startswith(b"ply\nformat ascii 1.0\nelement vertex 3\n")
    assert b"comment" not in buf.getvalue()
    buf = io.BytesIO()
    save_ply(buf, v, comments=["made by me"])
    assert b"\ncomment made by me\n" in buf.getvalue()
    # no vertices: no face element (PyTorch3D's header)
    buf = io.BytesIO()
    save_ply(buf, torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    assert b"element face" not in buf.getvalue()
