"""The procedural toy scene: deterministic, closed and outward, textured, asymmetric (pose unambiguous)."""

from __future__ import annotations

import pytest
import torch

from lib3d.data.scenes import default_scene, load_mesh, toy
from lib3d.structures.textures import TexturesUV, TexturesVertex


@pytest.fixture(scope="module")
def mesh():
    return toy()


def test_deterministic_and_textured(mesh):
    again = toy()
    assert torch.equal(mesh.verts_packed(), again.verts_packed())
    assert torch.equal(mesh.faces_packed(), again.faces_packed())
    assert isinstance(mesh.textures, TexturesUV)
    maps = mesh.textures.maps_padded()
    assert maps.shape == (1, 512, 512, 3) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert torch.equal(maps, again.textures.maps_padded())
    uv = mesh.textures.verts_uvs_list()[0]
    assert float(uv.min()) >= 0 and float(uv.max()) <= 1
    assert mesh.textures.faces_uvs_list()[0].shape == mesh.faces_packed().shape
    # Enough texture detail: many distinct colours.
    assert torch.unique((maps[0] * 15).round().reshape(-1, 3), dim=0).shape[0] > 30


def test_vertex_colours_and_default():
    mv = toy("vertex")
    assert isinstance(mv.textures, TexturesVertex)
    cols = mv.textures.verts_features_packed()
    assert cols.shape == mv.verts_packed().shape and float(cols.min()) >= 0 and float(cols.max()) <= 1
    assert torch.equal(default_scene().verts_packed(), toy().verts_packed())
    assert toy(dtype=torch.float64).verts_packed().dtype == torch.float64


def test_closed_and_outward(mesh):
    faces = mesh.faces_packed()
    verts = mesh.verts_packed().double()
    # Closed, consistently wound: every directed edge appears once and its reverse once.
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = e[:, 0] * verts.shape[0] + e[:, 1]
    rkey = e[:, 1] * verts.shape[0] + e[:, 0]
    assert key.unique().numel() == key.numel()
    assert torch.isin(rkey, key).all()
    # Outward: positive signed volume; no degenerate faces.
    tri = verts[faces]
    vol = (torch.linalg.cross(tri[:, 0], tri[:, 1], dim=-1) * tri[:, 2]).sum() / 6
    assert float(vol) > 0.2
    assert float(mesh.faces_areas_packed().min()) > 0
    # About the cow's size, roughly centred, facing -Z (head is the most negative z).
    lo, hi = verts.min(0).values, verts.max(0).values
    assert float((hi - lo).max()) < 3.0 and float(verts.mean(0).abs().max()) < 0.3
    assert float(lo[2]) < -1.2 and -float(lo[2]) > float(hi[2])


def _silhouettes(mesh, azims, elev=20.0):
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform
    from lib3d.render.mesh_rasterizer import RasterizationSettings
    from lib3d.render.shading import render_mesh

    R, T = look_at_view_transform(2.7, elev, torch.tensor(azims))
    img = render_mesh(mesh.extend(len(azims)), FoVPerspectiveCameras(R=R, T=T),
                      raster_settings=RasterizationSettings(image_size=64), shader="hard_silhouette")
    return img[..., 3]


def test_pose_is_unambiguous(mesh):
    """Mirror views (azim a vs -a, a vs 180 - a) give silhouettes that are not mirror images of each other."""
    azims = [30.0, -30.0, 150.0, 60.0, -60.0, 120.0]
    sil = _silhouettes(mesh, azims)
    for i, j in ((0, 1), (0, 2), (3, 4), (3, 5)):
        diff = (sil[i] - sil[j].flip(-1)).abs().mean()
        assert float(diff) > 0.01, (azims[i], azims[j], float(diff))


def test_load_mesh(tmp_path):
    from lib3d.io import save_obj, save_ply

    assert load_mesh(None).verts_packed().shape == toy().verts_packed().shape
    v, f = toy().verts_packed(), toy().faces_packed()
    save_ply(tmp_path / "toy.ply", v, f)
    save_obj(tmp_path / "toy.obj", v, f)
    for name in ("toy.ply", "toy.obj"):
        m = load_mesh(tmp_path / name)
        assert m.verts_packed().shape == v.shape and isinstance(m.textures, TexturesVertex)
    with pytest.raises(ValueError, match="obj or .ply"):
        load_mesh(tmp_path / "toy.stl")
