"""OBJ + MTL: golden parity with PyTorch3D, every face form, materials, textures, save round trips, errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lib3d.io import FormatError, load_obj, save_obj
from lib3d.io.obj import make_mesh_texture_atlas
from tests.helpers import book_path, golden_case, load_golden

OBJ_CASES = ["cow_obj", "cube_texture_obj", "cube_obj", "dodecahedron_obj"]


def _obj(text: str, **kw):
    return load_obj(io.BytesIO(text.encode()), **kw)


# --- golden parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", OBJ_CASES)
def test_golden_parity(case):
    tensors, cases = load_golden("io")
    g = golden_case(tensors, case)
    verts, faces, aux = load_obj(book_path(cases[case]["file"]), **cases[case]["kwargs"])
    torch.testing.assert_close(verts, g["verts"], atol=1e-6, rtol=0)
    for k in ("verts_idx", "normals_idx", "textures_idx", "materials_idx"):
        assert getattr(faces, k).dtype == torch.int64
        assert torch.equal(getattr(faces, k), g[k]), k
    for k in ("normals", "verts_uvs"):
        if k in g:
            torch.testing.assert_close(getattr(aux, k), g[k], atol=1e-6, rtol=0)
        else:
            assert getattr(aux, k) is None
    mats = {k.split(".")[1] for k in g if k.startswith("material.")}
    if mats:
        assert set(aux.material_colors) == mats
    for k, v in g.items():
        if k.startswith("material."):
            _, m, prop = k.split(".")
            torch.testing.assert_close(aux.material_colors[m][prop], v, atol=1e-6, rtol=0)
        if k.startswith("texture_u8."):
            m = k.split(".", 1)[1]
            img = aux.texture_images[m]
            assert img.dtype == torch.float32 and img.shape == v.shape
            assert torch.equal((img * 255).round().to(torch.uint8), v)


# --- parsing -------------------------------------------------------------------------------------

QUAD = """
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vn 0 0 1
vn 0 0 -1
"""


@pytest.mark.parametrize(
    "face,vidx,tidx,nidx",
    [
        ("f 1 2 3 4", [[0, 1, 2], [0, 2, 3]], [[-1] * 3] * 2, [[-1] * 3] * 2),
        ("f 1/1 2/2 3/3 4/4", [[0, 1, 2], [0, 2, 3]], [[0, 1, 2], [0, 2, 3]], [[-1] * 3] * 2),
        ("f 1//1 2//1 3//2 4//2", [[0, 1, 2], [0, 2, 3]], [[-1] * 3] * 2, [[0, 0, 1], [0, 1, 1]]),
        ("f 1/4/2 2/3/2 3/2/1 4/1/1", [[0, 1, 2], [0, 2, 3]], [[3, 2, 1], [3, 1, 0]], [[1, 1, 0], [1, 0, 0]]),
        ("f -4/-4/-2 -3/-3/-2 -2/-2/-1", [[0, 1, 2]], [[0, 1, 2]], [[0, 0, 1]]),
        ("f\t1 2   3\r", [[0, 1, 2]], [[-1] * 3], [[-1] * 3]),
        ("f 1 2", [], [], []),
    ],
)
def test_face_forms(face, vidx, tidx, nidx):
    _, faces, aux = _obj(QUAD + face + "\n")
    assert faces.verts_idx.tolist() == vidx
    assert faces.textures_idx.tolist() == tidx
    assert faces.normals_idx.tolist() == nidx
    assert faces.materials_idx.tolist() == [-1] * len(vidx)
    assert faces.verts_idx.shape == (len(vidx), 3) and faces.materials_idx.shape == (len(vidx),)
    assert aux.normals.shape == (2, 3) and aux.verts_uvs.shape == (4, 2)


def test_negative_indices_are_relative_to_the_current_position():
    text = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 5 5 5\nf -1 -2 -3\n"
    _, faces, _ = _obj(text)
    assert faces.verts_idx.tolist() == [[0, 1, 2], [3, 2, 1]]


def test_polygon_and_groups_and_materials():
    text = """o thing
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
g first
s 1
f 1 2 3 4 5
usemtl red
f 1 2 3
s off
usemtl blue
g second
f 2 3 4
usemtl red
f 3 4 5
l 1 2
p 1
"""
    verts, faces, aux = _obj(text)
    assert verts.shape == (5, 3)
    assert faces.verts_idx.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert faces.materials_idx.tolist() == [-1, -1, -1, 0, 1, 0]
    assert aux.material_colors is None and aux.texture_images is None  # no mtllib


def test_extra_vertex_values_are_ignored():
    verts, _, _ = _obj("v 1 2 3 1.0\nv 4 5 6 0.1 0.2 0.3\n")
    assert verts.tolist() == [[1, 2, 3], [4, 5, 6]]


def _write_textured(tmp_path, mtl_extra="", image=True):
    Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)).save(tmp_path / "tex.png")
    (tmp_path / "m.mtl").write_text(
        "# materials\nnewmtl a\nKa 0.1 0.2 0.3\nKd 0.4 0.5 0.6 # comment\nKs 0.7 0.8 0.9\nNs 12\nd 0.5\nillum 2\n"
        + ("map_Kd tex.png\n" if image else "")
        + "newmtl b\nKd 1 0 0\n"
        + mtl_extra
    )
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\n" + QUAD + "usemtl a\nf 1/1 2/2 3/3\nusemtl b\nf 1/1 3/3 4/4\n"
    )
    return tmp_path / "m.obj"


def test_materials_and_textures(tmp_path):
    p = _write_textured(tmp_path)
    _, faces, aux = load_obj(p)
    assert faces.materials_idx.tolist() == [0, 1]
    a = aux.material_colors["a"]
    torch.testing.assert_close(a["ambient_color"], torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(a["diffuse_color"], torch.tensor([0.4, 0.5, 0.6]))
    torch.testing.assert_close(a["specular_color"], torch.tensor([0.7, 0.8, 0.9]))
    torch.testing.assert_close(a["shininess"], torch.tensor([12.0]))
    torch.testing.assert_close(a["opacity"], torch.tensor([0.5]))
    torch.testing.assert_close(a["illum"], torch.tensor([2.0]))
    assert set(aux.texture_images) == {"a"}
    img = aux.texture_images["a"]
    assert img.shape == (4, 6, 3) and img.dtype == torch.float32
    assert torch.equal((img * 255).round().to(torch.uint8).flatten(), torch.arange(72, dtype=torch.uint8))
    _, _, aux = load_obj(p, load_textures=False)
    assert aux.material_colors is None and aux.texture_images is None


def test_missing_mtl_and_texture_warn(tmp_path):
    p = _write_textured(tmp_path)
    (tmp_path / "tex.png").unlink()
    with pytest.warns(UserWarning, match="texture file does not exist"):
        _, _, aux = load_obj(p)
    assert aux.texture_images == {} and "a" in aux.material_colors
    (tmp_path / "m.mtl").unlink()
    with pytest.warns(UserWarning, match="mtl file does not exist"):
        _, _, aux = load_obj(p)
    assert aux.material_colors is None


def test_texture_atlas(tmp_path):
    p = _write_textured(tmp_path)
    _, _, aux = load_obj(p, create_texture_atlas=True, texture_atlas_size=3)
    atlas = aux.texture_atlas
    assert atlas.shape == (2, 3, 3, 3)
    assert torch.allclose(atlas[1], torch.tensor([1.0, 0.0, 0.0]).expand(3, 3, 3))  # material b: Kd, no image
    assert float(atlas[0].min()) >= 0 and float(atlas[0].max()) <= 1
    # A constant image gives a constant atlas; repeat wrap keeps only the fractional part.
    img = {"m": torch.full((5, 5, 3), 0.25)}
    uvs = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]]) + 2.0
    at = make_mesh_texture_atlas({"m": {}}, img, ["m"], uvs, 4, "repeat")
    torch.testing.assert_close(at, torch.full((1, 4, 4, 3), 0.25))
    # A horizontal ramp sampled at the sub-triangle centroids (u = w0*u0 + w1*u1 + w2*u2).
    ramp = torch.linspace(0, 1, 11).view(1, 11, 1).expand(11, 11, 3).contiguous()
    uvs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # w0 weights u=1
    at = make_mesh_texture_atlas({}, {"m": ramp}, ["m"], uvs, 2, None)
    # cell (y=0, x=0) is below the diagonal: w0 = (0 + 1/3) / 2
    torch.testing.assert_close(at[0, 0, 0], torch.full((3,), 1.0 / 6.0), atol=1e-6, rtol=0)


def test_several_materials_without_usemtl(tmp_path):
    _write_textured(tmp_path)
    (tmp_path / "n.obj").write_text("mtllib m.mtl\nv 0 0 0\n")
    with pytest.raises(FormatError, match="several materials but no usemtl"):
        load_obj(tmp_path / "n.obj")


# --- save ----------------------------------------------------------------------------------------


def test_save_roundtrip_all_forms(tmp_path):
    g = torch.Generator().manual_seed(1)
    V, F, T, N = 30, 40, 25, 10
    verts = torch.randn(V, 3, generator=g)
    faces = torch.randint(0, V, (F, 3), generator=g)
    uvs = torch.rand(T, 2, generator=g)
    fuv = torch.randint(0, T, (F, 3), generator=g)
    normals = torch.randn(N, 3, generator=g)
    fn = torch.randint(0, N, (F, 3), generator=g)
    p = tmp_path / "a.obj"
    for kw in [
        {},
        {"normals": normals, "faces_normals_idx": fn},
        {"verts_uvs": uvs, "faces_uvs": fuv},
        {"normals": normals, "faces_normals_idx": fn, "verts_uvs": uvs, "faces_uvs": fuv},
    ]:
        save_obj(p, verts, faces, **kw)
        v2, f2, aux = load_obj(p)
        assert torch.equal(v2, verts) and torch.equal(f2.verts_idx, faces)
        if "normals" in kw:
            assert torch.equal(aux.normals, normals) and torch.equal(f2.normals_idx, fn)
        else:
            assert aux.normals is None and bool((f2.normals_idx == -1).all())
        if "verts_uvs" in kw:
            assert torch.equal(aux.verts_uvs, uvs) and torch.equal(f2.textures_idx, fuv)
        else:
            assert aux.verts_uvs is None and bool((f2.textures_idx == -1).all())


def test_save_texture_and_decimal_places(tmp_path):
    g = torch.Generator().manual_seed(2)
    tex = torch.randint(0, 256, (8, 5, 3), generator=g).float() / 255.0
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2]])
    uvs = torch.tensor([[0.0, 0], [1, 0], [0, 1]])
    p = tmp_path / "t.obj"
    save_obj(p, verts, faces, verts_uvs=uvs, faces_uvs=faces, texture_map=tex)
    assert (tmp_path / "t.mtl").exists() and (tmp_path / "t.png").exists()
    _, f2, aux = load_obj(p)
    assert torch.equal(aux.texture_images["mesh"], tex)
    assert f2.materials_idx.tolist() == [0]
    buf = io.StringIO()
    save_obj(buf, torch.tensor([[0.123456, 1.0, 2.0]]), torch.zeros(0, 3, dtype=torch.long), decimal_places=2)
    assert "v 0.12 1.00 2.00" in buf.getvalue()


def test_save_rejects_bad_input(tmp_path):
    v = torch.zeros(3, 3)
    with pytest.warns(UserWarning, match="Faces have invalid indices"):  # as PyTorch3D: warned, written
        save_obj(tmp_path / "a.obj", v, torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="verts"):
        save_obj(tmp_path / "a.obj", torch.zeros(3, 4), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="together"):
        save_obj(tmp_path / "a.obj", v, torch.tensor([[0, 1, 2]]), normals=torch.zeros(1, 3))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,match",
    [
        ("v 1 2\n", r"line 1: vertex needs 3 values"),
        ("v 0 0 0\nv 1 x 0\n", r"line 2: bad vertex value 'x'"),
        ("vt 1\n", r"line 1: texture coordinate needs 2"),
        ("vn 1 0\n", r"line 1: normal needs 3"),
        ("v 0 0 0\nf 1/1/1/1 1 1\n", r"line 2: face corner"),
        ("v 0 0 0\nf 1/a 1 1\n", r"line 2: bad face corner"),
        ("v 0 0 0\nvt 0 0\nf 1/1 1 1\n", r"line 3: face corners are inconsistent"),
        ("usemtl\n", "line 1: usemtl without"),
        ("mtllib\n", "line 1: mtllib without"),
    ],
)
def test_errors_name_the_line(text, match):
    with pytest.raises(FormatError, match=match):
        _obj(text)


@pytest.mark.parametrize(
    "text,match",
    [
        ("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 4\n", r"line 4: Faces have invalid indices: vertex index 4 out of range"),
        ("v 0 0 0\nf 1 1 0\n", r"line 2: Faces have invalid indices: vertex index 0"),
        ("v 0 0 0\nf -1 -2 -1\n", r"line 2: Faces have invalid indices: a relative vertex index before the first"),
        ("v 0 0 0\nvt 0 0\nf 1/2 1/1 1/1\n", r"line 3: Faces have invalid indices: texture index 2 out of range"),
        ("v 0 0 0\n\n\nf 1//1 1//1 1//1\n", r"line 4: Faces have invalid indices: normal index 1 out of range"),
    ],
)
def test_invalid_indices_warn_naming_the_line(text, match):
    """As PyTorch3D, indices out of range are kept and warned about (issue 14)."""
    with pytest.warns(UserWarning, match=match):
        _obj(text)


def test_error_names_the_file(tmp_path):
    p = tmp_path / "broken.obj"
    p.write_text("v 0 0 0\nf 1 2/1 3\n")
    with pytest.raises(FormatError, match=r"broken\.obj, line 2"):
        load_obj(p)
    assert issubclass(FormatError, ValueError)


def test_mtl_errors(tmp_path):
    (tmp_path / "a.obj").write_text("mtllib a.mtl\nusemtl x\nv 0 0 0\n")
    (tmp_path / "a.mtl").write_text("newmtl x\nKd 1 0\n")
    with pytest.raises(FormatError, match=r"a\.mtl, line 2: Kd needs 3 values"):
        load_obj(tmp_path / "a.obj")
    (tmp_path / "a.mtl").write_text("Kd 1 0 0\n")
    with pytest.raises(FormatError, match=r"a\.mtl, line 1: Kd before any newmtl"):
        load_obj(tmp_path / "a.obj")
    (tmp_path / "a.mtl").write_text("newmtl x\nmap_Kd img.png\n")
    (tmp_path / "img.png").write_bytes(b"not a png")
    with pytest.raises(FormatError, match=r"img\.png"):
        load_obj(tmp_path / "a.obj")


def test_book_objs_load():
    for rel in ["obj/camera_cube.obj", "obj/diamond.obj"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verts, faces, _ = load_obj(book_path(rel))
        assert verts.shape[1] == 3 and faces.verts_idx.shape[1] == 3 and faces.verts_idx.shape[0] > 0


def test_load_objs_as_meshes():
    pytest.importorskip("lib3d.structures")
    from lib3d.io import load_objs_as_meshes

    cow = book_path("cow_mesh/cow.obj")
    cube = book_path("obj/cube_texture.obj")
    mesh = load_objs_as_meshes([cow])
    verts, faces, _ = load_obj(cow)
    assert len(mesh) == 1
    assert torch.equal(mesh.verts_packed(), verts) and torch.equal(mesh.faces_packed(), faces.verts_idx)
    tex = mesh.textures
    assert tex is not None and tex.maps_padded().shape == (1, 1024, 1024, 3)
    batch = load_objs_as_meshes([cow, cube])
    assert len(batch) == 2 and batch.num_verts_per_mesh().tolist() == [2930, 8]
    untextured = load_objs_as_meshes([cow], load_textures=False)
    assert untextured.textures is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_obj_on_cuda_with_atlas():
    verts, faces, aux = load_obj(book_path("obj/cube_texture.obj"), device="cuda", create_texture_atlas=True)
    assert verts.is_cuda and faces.verts_idx.is_cuda and aux.verts_uvs.is_cuda
    assert aux.texture_images["Skin"].is_cuda and aux.texture_atlas.is_cuda
    _, _, aux_cpu = load_obj(book_path("obj/cube_texture.obj"), create_texture_atlas=True)
    torch.testing.assert_close(aux.texture_atlas.cpu(), aux_cpu.texture_atlas, atol=1e-5, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["v", "v/t", "v//n", "v/t/n", "mixed"]), st.booleans())
def test_fast_face_parser_matches_line_by_line_reference(seed, form, relative):
    """The vectorised face parser and the line-by-line one agree (and the loader uses either)."""
    from lib3d.io.obj import _faces_fast, _faces_slow

    rng = np.random.default_rng(seed)
    F = int(rng.integers(1, 30))
    counts = np.sort(rng.integers(1, 20, (F, 3)), axis=0)  # (v, vt, vn) defined so far: non-decreasing
    corners = []
    forms = ["v", "v/t", "v//n", "v/t/n"]
    for fi in range(F):
        k = int(rng.integers(1, 7))
        fm = forms[int(rng.integers(4))] if form == "mixed" else form
        cs = []
        for _ in range(k):
            ids = [int(rng.integers(1, counts[fi, j] + 1)) for j in range(3)]
            if relative:
                ids = [i - int(counts[fi, j]) - 1 for j, i in enumerate(ids)]  # same element, counted back
            cs.append(fm.replace("v", str(ids[0])).replace("t", str(ids[1])).replace("n", str(ids[2])))
        corners.append(cs)
    lines = list(range(1, F + 1))
    slow = _faces_slow(corners, lines, counts, 10**6, "x")
    fast = _faces_fast(corners, counts, 10**6)
    if form == "mixed" and fast is None:
        return
    assert fast is not None
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)


def test_load_objs_as_meshes_with_atlas():
    pytest.importorskip("lib3d.structures")
    from lib3d.io import load_objs_as_meshes

    cube = book_path("obj/cube_texture.obj")
    mesh = load_objs_as_meshes([cube], create_texture_atlas=True, texture_atlas_size=4)
    _, _, aux = load_obj(cube, create_texture_atlas=True, texture_atlas_size=4)
    assert type(mesh.textures).__name__ == "TexturesAtlas"
    assert torch.equal(mesh.textures.atlas_padded()[0], aux.texture_atlas)
    assert aux.texture_atlas.shape == (12, 4, 4, 3)


def test_inline_comments_are_ignored():
    verts, faces, _ = _obj("# header\nv 0 0 0 # first\nv 1 0 0\nv 0 1 0\nf 1 2 3 # a face\n#f 1 1 1\n")
    assert verts.shape == (3, 3) and faces.verts_idx.tolist() == [[0, 1, 2]]


def test_non_utf8_names_survive_to_the_files(tmp_path):
    """Latin-1 bytes in material and file names: the MTL and the texture are still found."""
    Image.fromarray(np.full((2, 2, 3), 51, np.uint8)).save(
        tmp_path / b"t\xe9x.png".decode("utf-8", "surrogateescape")
    )
    (tmp_path / b"m\xe9.mtl".decode("utf-8", "surrogateescape")).write_bytes(
        b"newmtl caf\xe9\nmap_Kd t\xe9x.png\n"
    )
    (tmp_path / "a.obj").write_bytes(
        b"mtllib m\xe9.mtl\nusemtl caf\xe9\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    )
    _, faces, aux = load_obj(tmp_path / "a.obj")
    (img,) = aux.texture_images.values()
    assert faces.materials_idx.tolist() == [0] and torch.allclose(img, torch.full((2, 2, 3), 0.2))


# --- not an OBJ file (issue 12) ------------------------------------------------------------------


def test_random_bytes_raise_format_error_naming_file_and_line(tmp_path):
    """Random bytes used to load as an empty mesh; PyTorch3D fails on them (UnicodeDecodeError)."""
    rng = np.random.default_rng(0)
    for k in range(20):
        p = tmp_path / f"noise{k}.obj"
        p.write_bytes(rng.integers(0, 256, size=int(rng.integers(8, 4000)), dtype=np.uint8).tobytes())
        with pytest.raises(FormatError, match=rf"noise{k}\.obj, line \d+: control byte 0x[0-9a-f]{{2}}: binary data"):
            load_obj(p)
    # the line of the first control byte is named
    with pytest.raises(FormatError, match=r"line 3: control byte 0x00"):
        load_obj(io.BytesIO(b"v 0 0 0\nv 1 0 0\nv 0\x00 1 0\n"))


@pytest.mark.parametrize("text", ["hello world\n", "ply\nformat ascii 1.0\nend_header\n", "!!@@##\n  # c\n"])
def test_text_without_obj_statements_raises(text):
    with pytest.raises(FormatError, match=r"line 1: .* is no OBJ statement and the file holds none"):
        _obj(text)
    with pytest.raises(FormatError, match=r"line 2: 'hello'"):
        _obj("# a comment\n   hello\n")


@pytest.mark.parametrize("text", ["", "\n\n  \r\n", "# comment only\n", "o thing\ng group\ns off\n",
                                  "mtllib missing.mtl\n", "\x1a"])
def test_legitimately_empty_obj_files_load_empty(text):
    """As PyTorch3D: nothing to read is an empty mesh (its parser accepts these files too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing mtl warns
        verts, faces, aux = _obj(text)
    assert verts.shape == (0, 3) and faces.verts_idx.shape == (0, 3) and aux.normals is None


def test_unknown_statements_beside_obj_ones_are_still_ignored():
    verts, faces, _ = _obj("vendor_ext 1 2\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n\tfoo bar\x0c\n")
    assert verts.shape == (3, 3) and faces.verts_idx.tolist() == [[0, 1, 2]]
