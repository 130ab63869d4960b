"""``IO()``: suffix dispatch for meshes and point clouds."""

from __future__ import annotations

import pytest
import torch

from lib3d.io import IO, load_obj
from tests.helpers import book_path

pytest.importorskip("lib3d.structures")


def test_mesh_obj_and_ply_roundtrip(tmp_path):
    from lib3d.structures import Meshes, TexturesVertex

    cow = book_path("cow_mesh/cow.obj")
    mesh = IO().load_mesh(cow)
    verts, faces, _ = load_obj(cow)
    assert torch.equal(mesh.verts_packed(), verts) and torch.equal(mesh.faces_packed(), faces.verts_idx)
    IO().save_mesh(mesh, tmp_path / "cow.obj")
    again = IO().load_mesh(tmp_path / "cow.obj")
    assert torch.equal(again.verts_packed(), verts)
    assert torch.equal(again.textures.maps_padded(), mesh.textures.maps_padded())
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0))
    colored = Meshes([verts], [faces.verts_idx], textures=TexturesVertex([colors]))
    for binary in (True, False):
        IO().save_mesh(colored, tmp_path / "cow.ply", binary=binary)
        back = IO().load_mesh(tmp_path / "cow.ply")
        assert torch.equal(back.verts_packed(), verts) and torch.equal(back.faces_packed(), faces.verts_idx)
        assert torch.equal(back.textures.verts_features_list()[0], colors)


def test_pointcloud_roundtrip(tmp_path):
    from lib3d.structures import Pointclouds

    g = torch.Generator().manual_seed(0)
    pts, nrm, col = (
        torch.randn(50, 3, generator=g),
        torch.randn(50, 3, generator=g),
        torch.rand(50, 4, generator=g),
    )
    IO().save_pointcloud(Pointclouds([pts], normals=[nrm], features=[col]), tmp_path / "p.ply")
    pc = IO().load_pointcloud(tmp_path / "p.ply")
    assert torch.equal(pc.points_list()[0], pts)
    assert torch.equal(pc.normals_list()[0], nrm) and torch.equal(pc.features_list()[0], col)


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.obj or \.ply"):
        IO().load_mesh(tmp_path / "x.stl")
    with pytest.raises(ValueError, match=r"\.ply"):
        IO().load_pointcloud(tmp_path / "x.obj")
