"""Re-render the book's 40-view cow dataset (generate_cow_renders) with lib3d and match PyTorch3D's."""

from __future__ import annotations

import pytest
import torch

from lib3d.data.renders import generate_renders, load_cow_renders_golden
from tests.helpers import book_path, golden_case, load_golden


@pytest.fixture(scope="module")
def cow():
    from lib3d.io import load_objs_as_meshes

    return load_objs_as_meshes([book_path("cow_mesh/cow.obj")])


def _golden():
    tensors, cases = load_golden("cow_renders")
    assert "cow_40" in cases
    return golden_case(tensors, "cow_40")


def _check(out, golden, idx):
    torch.testing.assert_close(out.cameras.R, golden["R"][idx], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cameras.T, golden["T"][idx], atol=1e-5, rtol=0)
    img_mae = (out.images - golden["images"][idx]).abs().mean()
    sil_mae = (out.silhouettes - golden["silhouettes"][idx]).abs().mean()
    assert out.images.shape == golden["images"][idx].shape
    assert float(img_mae) <= 2 / 255, f"image MAE {float(img_mae)}"
    assert float(sil_mae) <= 2e-3, f"silhouette MAE {float(sil_mae)}"


def test_cow_renders_subset(cow):
    """Three of the 40 views (front, side, back), full recipe: default suite."""
    golden = _golden()
    idx = torch.tensor([0, 13, 26])
    _check(generate_renders(cow, num_views=40, azimuth_range=180, view_indices=idx), golden, idx)


@pytest.mark.slow
def test_cow_data_spec_renders_the_books_views():
    """``--data cow:PATH/cow.obj`` (jobs.nerf, jobs.fit_volume) renders the book's 40 views from the mesh; the
    golden PyTorch3D renders are the oracle."""
    from lib3d.data.posed_images import load_posed_images

    path = book_path("cow_mesh/cow.obj")
    data = load_posed_images(f"cow:{path}", image_size=128, num_views=40)
    _check(data, _golden(), torch.arange(40))
    assert data.background == 0.0


@pytest.mark.slow
def test_cow_renders_all_40(cow):
    golden = _golden()
    _check(generate_renders(cow, num_views=40, azimuth_range=180), golden, torch.arange(40))


def test_load_cow_renders_golden():
    _golden()  # skips when ../shared is absent
    data = load_cow_renders_golden()
    assert data.images.shape == (40, 128, 128, 3) and data.silhouettes.shape == (40, 128, 128)
    assert len(data.cameras) == 40
    # The cameras are the recipe's: azim linspace(-180, 180, 40) + 180, elev 0, dist 2.7.
    centers = data.cameras.get_camera_center()
    torch.testing.assert_close(centers.norm(dim=-1), torch.full((40,), 2.7), atol=1e-4, rtol=0)
    assert load_cow_renders_golden("/nonexistent/cow_renders.safetensors") is None
