"""generate_renders on the embedded toy: shapes, recipe, normalisation, errors."""

from __future__ import annotations

import pytest
import torch

from lib3d.data.renders import generate_renders, normalize_mesh, view_cameras
from lib3d.data.scenes import toy


def test_normalize_mesh():
    mesh, center, scale = normalize_mesh(toy())
    v = mesh.verts_packed()
    torch.testing.assert_close(v.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert abs(float(v.abs().max()) - 1.0) < 1e-5 and scale > 1.0 and center.shape == (3,)


def test_view_cameras_recipe():
    cams = view_cameras(5, azimuth_range=180.0, elev=0.0, dist=2.7)
    c = cams.get_camera_center()
    torch.testing.assert_close(c.norm(dim=-1), torch.full((5,), 2.7), atol=1e-5, rtol=0)
    # azim = linspace(-180, 180, 5) + 180 = 0, 90, 180, 270, 360: first and last on +Z, middle on -Z.
    torch.testing.assert_close(c[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-5, rtol=0)
    torch.testing.assert_close(c[2], torch.tensor([0.0, 0.0, -2.7]), atol=1e-5, rtol=0)
    # endpoint=False: a turntable without the repeated frame, azim = 0, 90, 180, 270 (+180 phase)
    t = view_cameras(4, 180.0, endpoint=False, fov=40.0).get_camera_center()
    torch.testing.assert_close(t[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-5, rtol=0)
    torch.testing.assert_close(t[1], torch.tensor([2.7, 0.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(t[2], torch.tensor([0.0, 0.0, -2.7]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="num_views"):
        view_cameras(0)


def test_generate_renders_toy():
    out = generate_renders(num_views=3, image_size=24, views_per_batch=2, silhouette_faces_per_pixel=10)
    assert out.images.shape == (3, 24, 24, 3) and out.silhouettes.shape == (3, 24, 24)
    assert len(out.cameras) == 3
    assert float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    cover = out.silhouettes.mean((1, 2))
    assert bool(((cover > 0.02) & (cover < 0.8)).all())
    # Coloured where the silhouette is, black background elsewhere.
    bg = out.silhouettes < 1e-3
    assert float(out.images[bg].abs().max()) < 1e-3
    sub = generate_renders(num_views=3, image_size=24, view_indices=[2], binary_silhouettes=True,
                           silhouette_faces_per_pixel=10)
    torch.testing.assert_close(sub.images, out.images[[2]])
    torch.testing.assert_close(sub.silhouettes, (out.silhouettes[[2]] > 1e-4).float())


def test_generate_renders_bad_input():
    with pytest.raises(ValueError, match="num_views"):
        generate_renders(num_views=0, image_size=16)
    with pytest.raises(ValueError, match="view_indices"):
        generate_renders(num_views=3, image_size=16, view_indices=[3])
    from lib3d.structures.meshes import join_meshes_as_batch

    with pytest.raises(ValueError, match="one mesh"):
        generate_renders(join_meshes_as_batch([toy(), toy()]), num_views=2, image_size=16)
