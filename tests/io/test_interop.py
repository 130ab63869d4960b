"""Interop with trimesh.

What lib3d writes, lib3d and trimesh read back identically; what trimesh writes, lib3d reads.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lib3d.io import load_obj, load_ply, load_ply_data, save_obj, save_ply

trimesh = pytest.importorskip("trimesh")


def _mesh(seed=0, subdiv=2):
    m = trimesh.creation.icosphere(subdivisions=subdiv)
    rng = np.random.default_rng(seed)
    verts = torch.from_numpy((m.vertices + rng.normal(scale=0.01, size=m.vertices.shape)).astype(np.float32))
    faces = torch.from_numpy(m.faces.astype(np.int64))
    return verts, faces


def _tm_load(path, **kw):
    return trimesh.load(str(path), process=False, force="mesh", **kw)


@pytest.mark.parametrize("ascii", [False, True])
def test_lib3d_ply_read_by_trimesh(tmp_path, ascii):
    verts, faces = _mesh()
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0))
    p = tmp_path / "m.ply"
    save_ply(p, verts, faces, verts_colors=colors, ascii=ascii)
    v_ours, f_ours = load_ply(p)
    m = _tm_load(p)
    assert np.array_equal(np.asarray(m.vertices, np.float32), v_ours.numpy())
    assert np.array_equal(np.asarray(m.faces), f_ours.numpy())
    assert torch.equal(v_ours, verts) and torch.equal(f_ours, faces)
    # lib3d writes float colours (as PyTorch3D); trimesh rounds them to uint8
    rgb_tm = np.asarray(m.visual.vertex_colors, np.float32)[:, :3]
    np.testing.assert_allclose(rgb_tm, colors.numpy() * 255.0, atol=0.5 + 1e-3)


@pytest.mark.parametrize("uv,normals", [(False, False), (True, False), (False, True), (True, True)])
def test_lib3d_obj_read_by_trimesh(tmp_path, uv, normals):
    verts, faces = _mesh()
    kw = {}
    g = torch.Generator().manual_seed(1)
    if uv:
        kw.update(verts_uvs=torch.rand(verts.shape[0], 2, generator=g), faces_uvs=faces)
    if normals:
        kw.update(normals=torch.nn.functional.normalize(verts, dim=1), faces_normals_idx=faces)
    p = tmp_path / "m.obj"
    save_obj(p, verts, faces, **kw)
    v_ours, f_ours, aux = load_obj(p)
    assert torch.equal(v_ours, verts) and torch.equal(f_ours.verts_idx, faces)
    m = _tm_load(p)
    # trimesh may re-index corners that carry uv/normals; the triangles themselves must agree.
    tri_tm = np.asarray(m.vertices, np.float32)[np.asarray(m.faces)]
    tri_ours = v_ours[f_ours.verts_idx].numpy()
    np.testing.assert_allclose(tri_tm, tri_ours, atol=1e-7, rtol=0)
    if uv:
        uv_tm = np.asarray(m.visual.uv, np.float32)[np.asarray(m.faces)]
        np.testing.assert_allclose(uv_tm, aux.verts_uvs[f_ours.textures_idx].numpy(), atol=1e-7, rtol=0)
    if not uv and not normals:
        assert np.array_equal(np.asarray(m.faces), f_ours.verts_idx.numpy())


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_trimesh_ply_read_by_lib3d(encoding):
    m = trimesh.creation.icosphere(subdivisions=3)
    rgba = np.random.default_rng(0).integers(0, 256, (len(m.vertices), 4), dtype=np.uint8)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=rgba)
    data = m.export(file_type="ply", encoding=encoding)
    d = load_ply_data(io.BytesIO(data))
    tol = 1e-7  # trimesh writes 8 decimals in ascii, float32 in binary
    np.testing.assert_allclose(d.verts.numpy(), m.vertices.astype(np.float32), atol=tol, rtol=0)
    assert np.array_equal(d.faces.numpy(), m.faces)
    np.testing.assert_allclose(d.verts_colors.numpy(), rgba / 255.0, atol=1e-7)


def test_trimesh_point_cloud_ply_read_by_lib3d():
    pts = np.random.default_rng(1).normal(size=(100, 3))
    data = trimesh.PointCloud(pts).export(file_type="ply", encoding="binary")
    verts, faces = load_ply(io.BytesIO(data))
    np.testing.assert_allclose(verts.numpy(), pts.astype(np.float32), atol=0, rtol=0)
    assert faces.shape == (0, 3)


def test_trimesh_obj_read_by_lib3d(tmp_path):
    m = trimesh.creation.icosphere(subdivisions=2)
    m.export(tmp_path / "s.obj")
    verts, faces, _ = load_obj(tmp_path / "s.obj")
    np.testing.assert_allclose(verts.numpy(), m.vertices, atol=1e-7)
    assert np.array_equal(faces.verts_idx.numpy(), m.faces)


def test_trimesh_textured_obj_read_by_lib3d(tmp_path):
    from PIL import Image

    m = trimesh.creation.box()
    rng = np.random.default_rng(0)
    uv = rng.random((len(m.vertices), 2))
    img = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    m.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    m.export(tmp_path / "box.obj")
    verts, faces, aux = load_obj(tmp_path / "box.obj")
    m2 = _tm_load(tmp_path / "box.obj")
    np.testing.assert_allclose(verts[faces.verts_idx].numpy(), np.asarray(m2.vertices)[m2.faces], atol=1e-7)
    np.testing.assert_allclose(
        aux.verts_uvs[faces.textures_idx].numpy(), np.asarray(m2.visual.uv)[m2.faces], atol=1e-7
    )
    ((_name, tex),) = aux.texture_images.items()
    assert torch.equal((tex * 255).round().to(torch.uint8), torch.from_numpy(img))
    assert bool((faces.materials_idx == 0).all())
