"""Tests of lib3d.render.mesh_rasterizer: PyTorch3D parity, fast vs brute force, gradients, exactness."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.render.mesh_rasterizer import (
    Fragments,
    MeshRasterizer,
    RasterizationSettings,
    pixel_centers_ndc,
    rasterize_face_verts,
    rasterize_meshes,
    rasterize_meshes_reference,
)
from lib3d.structures import Meshes
from tests.helpers import golden_case, load_golden

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs CUDA"))]
GOLDEN_CASES = ["hard_k1_64", "hard_k3_96x128", "hard_k1_128_noperspcorrect", "hard_k1_128_cull",
                "soft_k10_64", "soft_k20_64_blur1e-3"]


def _weights(c: float, shape) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(c * torch.arange(n, dtype=torch.float32)).reshape(shape)


def _golden_loss(fr: Fragments) -> torch.Tensor:
    """The README's recipe: sum(zbuf*wz*m) + sum(bary*wb*m) + sum(dists*wd*m), m = pix_to_face >= 0."""
    m = (fr.pix_to_face >= 0).to(fr.zbuf.dtype)
    dev = fr.zbuf.device
    return ((fr.zbuf * _weights(0.37, fr.zbuf.shape).to(dev) * m).sum()
            + (fr.bary_coords * _weights(0.53, fr.bary_coords.shape).to(dev) * m[..., None]).sum()
            + (fr.dists * _weights(0.71, fr.dists.shape).to(dev) * m).sum())


def _random_scene(n_faces: int, seed: int, n_meshes: int = 2, spread: float = 1.1, size: float = 0.5,
                  dtype=torch.float32, device="cpu") -> Meshes:
    """Random independent triangles in NDC with positive depth (triangles of both orientations)."""
    g = torch.Generator().manual_seed(seed)
    verts, faces = [], []
    for i in range(n_meshes):
        nf = n_faces + 3 * i  # heterogeneous batch
        centres = (torch.rand(nf, 1, 2, generator=g) * 2 - 1) * spread
        xy = centres + (torch.rand(nf, 3, 2, generator=g) - 0.5) * size
        z = 0.5 + 2.0 * torch.rand(nf, 1, 1, generator=g) + 0.3 * torch.rand(nf, 3, 1, generator=g)
        verts.append(torch.cat((xy, z), -1).reshape(-1, 3).to(dtype=dtype, device=device))
        faces.append(torch.arange(3 * nf, device=device).reshape(nf, 3))
    return Meshes(verts, faces)


# ------------------------------------------------------------------------------------------------
# PyTorch3D parity
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_parity(case, device):
    tensors, cases = load_golden("rasterize_meshes")
    g = golden_case(tensors, case)
    meta = cases[case]
    verts = g["verts_ndc"].to(device).requires_grad_(True)
    meshes = Meshes(verts=verts, faces=g["faces"].to(device))
    K = g["pix_to_face"].shape[-1]
    fr = rasterize_meshes(meshes, image_size=meta["image_size"], blur_radius=meta["blur_radius"],
                          faces_per_pixel=K, perspective_correct=meta["perspective_correct"],
                          cull_backfaces=meta["cull_backfaces"], bin_size=0)
    assert fr.pix_to_face.dtype == torch.int64
    assert fr.pix_to_face.shape == g["pix_to_face"].shape
    p2f = fr.pix_to_face.cpu()
    agree = p2f == g["pix_to_face"]
    # >= 99.9% of the pixels identical (all K slots).
    assert agree.all(dim=-1).float().mean() >= 0.999
    m = agree & (g["pix_to_face"] >= 0)
    torch.testing.assert_close(fr.zbuf.detach().cpu()[m], g["zbuf"][m], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fr.dists.detach().cpu()[m], g["dists"][m], atol=1e-4, rtol=1e-5)
    bary, gbary = fr.bary_coords.detach().cpu()[m], g["bary_coords"][m]
    if device == "cpu":
        torch.testing.assert_close(bary, gbary, atol=1e-4, rtol=1e-5)
    else:
        # The golden file is PyTorch3D's CPU kernel; on CUDA a sliver face's barycentrics (a division by
        # a tiny area) can move by a few ulps more (seen on an H200: 1 of 38,151 values off by 1.2e-4).
        err = (bary - gbary).abs()
        assert (err <= 1e-4 + 1e-5 * gbary.abs()).float().mean() >= 0.9999 and float(err.max()) <= 1e-3
    # Empty slots are -1 everywhere.
    empty = p2f < 0
    assert (fr.zbuf.detach().cpu()[empty] == -1).all() and (fr.dists.detach().cpu()[empty] == -1).all()
    _golden_loss(fr).backward()
    gg = g["grad_verts"].double()
    rel = (verts.grad.cpu().double() - gg).norm() / gg.norm()
    assert rel <= 1e-3, f"grad_verts relative error {rel:.2e}"


def test_mesh_rasterizer_with_cameras_matches_golden():
    """World meshes + FoVPerspectiveCameras through MeshRasterizer reproduce the golden NDC scene."""
    geometry = pytest.importorskip("lib3d.geometry")
    tensors, _ = load_golden("rasterize_meshes")
    cam = golden_case(tensors, "cameras")
    g = golden_case(tensors, "hard_k1_64")
    cameras = geometry.FoVPerspectiveCameras(R=cam["R"], T=cam["T"])
    meshes = Meshes(verts=cam["verts_world"], faces=g["faces"])
    rasterizer = MeshRasterizer(cameras, RasterizationSettings(image_size=64, faces_per_pixel=1))
    ndc = rasterizer.transform(meshes).verts_padded()
    torch.testing.assert_close(ndc, g["verts_ndc"], atol=1e-5, rtol=1e-5)
    fr = rasterizer(meshes)
    assert (fr.pix_to_face == g["pix_to_face"]).float().mean() >= 0.999


# ------------------------------------------------------------------------------------------------
# Fast vs brute force
# ------------------------------------------------------------------------------------------------

OPTIONS = [
    {"blur_radius": 0.0, "faces_per_pixel": 1, "perspective_correct": False},
    {"blur_radius": 0.0, "faces_per_pixel": 4, "perspective_correct": True},
    {"blur_radius": 0.0, "faces_per_pixel": 3, "perspective_correct": True, "cull_backfaces": True},
    {"blur_radius": 2e-3, "faces_per_pixel": 6, "perspective_correct": True, "clip_barycentric_coords": True},
    {"blur_radius": 5e-3, "faces_per_pixel": 5, "perspective_correct": False},
]


def _compare(fast: Fragments, ref: Fragments, atol=1e-5):
    assert torch.equal(fast.pix_to_face, ref.pix_to_face)
    for a, b in ((fast.zbuf, ref.zbuf), (fast.bary_coords, ref.bary_coords), (fast.dists, ref.dists)):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("image_size", [24, (20, 28), (30, 18)])
def test_fast_matches_reference_forward_backward(opts, image_size, device):
    meshes = _random_scene(40, seed=3, device=device)
    verts = meshes.verts_packed().detach().requires_grad_(True)
    m = Meshes([verts[:120], verts[120:]], meshes.faces_list())
    fast = rasterize_meshes(m, image_size=image_size, max_pairs_per_chunk=257, **opts)
    ref = rasterize_meshes_reference(m, image_size=image_size, **opts)
    _compare(fast, ref)
    assert (fast.pix_to_face >= 0).any()
    g_fast, = torch.autograd.grad(_golden_loss(fast), verts)
    g_ref, = torch.autograd.grad(_golden_loss(ref), verts)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-4, rtol=1e-4)


def test_chunk_budget_does_not_change_result():
    meshes = _random_scene(25, seed=5, size=0.3)
    kw = {"image_size": (17, 13), "blur_radius": 3e-3, "faces_per_pixel": 7, "perspective_correct": True}
    big = rasterize_meshes(meshes, **kw)
    for budget in (61, 397):
        _compare(rasterize_meshes(meshes, max_pairs_per_chunk=budget, **kw), big, atol=0)


def test_thousands_of_tiny_overlapping_faces_in_one_bin_are_exact():
    """PyTorch3D's coarse rasterizer overflows max_faces_per_bin here (issues #348, #1064); lib3d is exact."""
    g = torch.Generator().manual_seed(0)
    nf = 2000
    centres = (torch.rand(nf, 1, 2, generator=g) - 0.5) * 0.5  # all inside one 6-pixel-wide region
    xy = centres + (torch.rand(nf, 3, 2, generator=g) - 0.5) * 0.2
    z = 1.0 + torch.rand(nf, 1, 1, generator=g) * 3 + 0.01 * torch.rand(nf, 3, 1, generator=g)
    verts = torch.cat((xy, z), -1).reshape(-1, 3)
    meshes = Meshes([verts], [torch.arange(3 * nf).reshape(nf, 3)])
    kw = {"image_size": 24, "faces_per_pixel": 20, "perspective_correct": True, "blur_radius": 1e-3}
    fast = rasterize_meshes(meshes, max_pairs_per_chunk=1 << 14, **kw)
    ref = rasterize_meshes_reference(meshes, **kw)
    _compare(fast, ref)
    assert (fast.pix_to_face >= 0).sum(-1).max() == 20  # many pixels are saturated


def test_float64_path_matches_reference():
    meshes = _random_scene(30, seed=11, dtype=torch.float64)
    kw = {"image_size": (21, 17), "blur_radius": 4e-3, "faces_per_pixel": 4, "perspective_correct": True,
              "clip_barycentric_coords": True}
    _compare(rasterize_meshes(meshes, **kw), rasterize_meshes_reference(meshes, **kw), atol=1e-12)
    kw["faces_per_pixel"] = 1
    _compare(rasterize_meshes(meshes, **kw), rasterize_meshes_reference(meshes, **kw), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Hand-checked semantics
# ------------------------------------------------------------------------------------------------


def test_pixel_centres_conventions():
    xs, ys = pixel_centers_ndc((2, 4))
    # W > H: x spans [-2, 2]; column 0 is +X (left); row 0 is +Y (top).
    torch.testing.assert_close(xs, torch.tensor([1.5, 0.5, -0.5, -1.5]))
    torch.testing.assert_close(ys, torch.tensor([0.5, -0.5]))


def test_single_triangle_hand_computed():
    # A counter-clockwise triangle covering the left half of the image (+X is left) at depth 2.
    verts = torch.tensor([[1.0, -1.0, 2.0], [1.0, 1.0, 2.0], [0.0, 0.0, 2.0]])
    faces = torch.tensor([[0, 1, 2]])
    fr = rasterize_meshes(Meshes([verts], [faces]), image_size=4, faces_per_pixel=2)
    # Pixel (row 1, col 0) centre: (0.75, 0.25), inside.
    assert fr.pix_to_face[0, 1, 0].tolist() == [0, -1]
    assert fr.zbuf[0, 1, 0, 0] == 2.0
    b = fr.bary_coords[0, 1, 0, 0]
    torch.testing.assert_close(b.sum(), torch.tensor(1.0))
    torch.testing.assert_close(b @ verts[:, :2], torch.tensor([0.75, 0.25]))
    # Squared distance to the nearest edge (x + y = 1 for the top edge: (1 - 0.75 - 0.25)... use x=1 edge):
    # distances to edges: x=1 -> 0.0625, y=x -> 0.125, y=-x -> 0.5 -> min 0.0625, negative inside.
    torch.testing.assert_close(fr.dists[0, 1, 0, 0], torch.tensor(-0.0625))
    # Right half of the image is empty.
    assert (fr.pix_to_face[0, :, 2:] == -1).all() and (fr.zbuf[0, :, 2:] == -1).all()


def test_depth_order_and_backface_culling():
    # Two overlapping full-screen-ish triangles at depths 3 (ccw) and 1 (cw); nearest first.
    tri = torch.tensor([[3.0, -3.0], [0.0, 3.0], [-3.0, -3.0]])
    far = torch.cat((tri, torch.full((3, 1), 3.0)), 1)  # orientation: see below
    near = torch.cat((tri.flip(0), torch.full((3, 1), 1.0)), 1)
    verts = torch.cat((far, near))
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fr = rasterize_meshes(Meshes([verts], [faces]), image_size=8, faces_per_pixel=2)
    assert fr.pix_to_face[0, 4, 4].tolist() == [1, 0]
    torch.testing.assert_close(fr.zbuf[0, 4, 4], torch.tensor([1.0, 3.0]))
    culled = rasterize_meshes(Meshes([verts], [faces]), image_size=8, faces_per_pixel=2, cull_backfaces=True)
    kept = culled.pix_to_face[0, 4, 4, 0].item()
    assert culled.pix_to_face[0, 4, 4, 1] == -1 and kept in (0, 1)
    # The kept face is the one with a positive signed area (v0 -> v1 -> v2 counter-clockwise on screen).
    v = verts[faces[kept]]
    area = (v[0, 0] - v[1, 0]) * (v[2, 1] - v[1, 1]) - (v[0, 1] - v[1, 1]) * (v[2, 0] - v[1, 0])
    assert area > 0


def test_faces_behind_camera_and_degenerate_faces_are_skipped():
    verts = torch.tensor([[1.0, -1.0, -0.5], [1.0, 1.0, 2.0], [-1.0, 0.0, 2.0],  # one vertex behind
                          [0.0, 0.0, 1.0], [0.5, 0.5, 1.0], [1.0, 1.0, 1.0]])  # zero area
    fr = rasterize_meshes(Meshes([verts], [torch.tensor([[0, 1, 2], [3, 4, 5]])]), image_size=8)
    assert (fr.pix_to_face == -1).all()


def test_blur_radius_only_keeps_faces_within_squared_distance():
    verts = torch.tensor([[0.5, -0.5, 1.0], [0.5, 0.5, 1.0], [-0.5, 0.0, 1.0]])
    m = Meshes([verts], [torch.tensor([[0, 1, 2]])])
    blur = 0.01
    fr = rasterize_meshes(m, image_size=32, blur_radius=blur, faces_per_pixel=1)
    d = fr.dists[fr.pix_to_face >= 0]
    assert (d < blur).all() and (d > 0).any() and (d < 0).any()
    hard = rasterize_meshes(m, image_size=32, faces_per_pixel=1)
    assert (hard.pix_to_face >= 0).sum() < (fr.pix_to_face >= 0).sum()


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", [{"perspective_correct": True, "blur_radius": 0.0},
                                  {"perspective_correct": True, "blur_radius": 0.02, "clip_barycentric_coords": True},
                                  {"perspective_correct": False, "blur_radius": 0.02}])
def test_gradcheck_float64(opts):
    verts0 = torch.tensor([[0.9, -0.8, 1.5], [0.1, 0.85, 2.0], [-0.7, -0.3, 1.2],
                           [-0.9, 0.7, 1.8], [0.6, 0.2, 1.1], [-0.2, -0.9, 2.3],
                           [0.75, 0.65, 2.5], [-0.85, 0.1, 2.2], [0.3, -0.45, 1.7]], dtype=torch.float64)
    faces = torch.arange(9).reshape(3, 3)

    def fn(v):
        fr = rasterize_face_verts(v[faces], torch.tensor([0]), torch.tensor([faces.shape[0]]), image_size=6,
                                  faces_per_pixel=2, **opts)
        m = (fr.pix_to_face >= 0).to(v.dtype)
        return fr.zbuf * m, fr.bary_coords * m[..., None], fr.dists * m

    assert (rasterize_face_verts(verts0[faces], torch.tensor([0]), torch.tensor([faces.shape[0]]), 6,
                                 faces_per_pixel=2, **opts).pix_to_face >= 0).sum() > 5
    assert torch.autograd.gradcheck(fn, (verts0.clone().requires_grad_(True),), eps=1e-7, atol=1e-5,
                                    rtol=1e-4)


def test_soft_silhouette_changes_smoothly_as_a_vertex_crosses_a_pixel():
    """A SoftRas silhouette (sigmoid of -dists/sigma) is continuous in the vertex position, unlike coverage."""
    sigma = 1e-4
    blur = math.log(1.0 / 1e-4 - 1.0) * sigma
    xs, _ = pixel_centers_ndc(16)
    centre = xs[8].item()  # the vertex tip will sweep across this pixel centre (row 8, col 8)
    vals, hard = [], []
    for t in torch.linspace(-0.05, 0.05, 101):
        tip = centre + t.item()
        verts = torch.tensor([[1.5, -0.9, 1.0], [1.5, 0.9, 1.0], [tip, 0.0 - 1 / 16, 1.0]])
        fr = rasterize_meshes(Meshes([verts], [torch.tensor([[0, 1, 2]])]), image_size=16, blur_radius=blur,
                              faces_per_pixel=1, clip_barycentric_coords=True)
        prob = torch.sigmoid(-fr.dists[0, 8, 8, 0] / sigma) * (fr.pix_to_face[0, 8, 8, 0] >= 0)
        vals.append(prob.item())
        hard.append(float(fr.dists[0, 8, 8, 0] < 0 and fr.pix_to_face[0, 8, 8, 0] >= 0))
    vals = torch.tensor(vals)
    assert vals.min() < 0.05 and vals.max() > 0.95  # the pixel goes from outside to inside
    assert (vals[1:] - vals[:-1]).abs().max() < 0.15  # no jump: smooth transition
    assert torch.tensor(hard).diff().abs().max() == 1  # the hard coverage does jump


def test_gradient_flows_to_camera_position():
    """Chapter 4's setting: a soft silhouette is differentiable w.r.t. the camera position."""
    geometry = pytest.importorskip("lib3d.geometry")
    meshes = _random_scene(30, seed=4, n_meshes=1, spread=0.5, size=0.4)
    pos = torch.tensor([[0.3, 0.4, -3.0]], requires_grad=True)
    R = geometry.look_at_rotation(pos)
    T = -torch.bmm(R.transpose(1, 2), pos[:, :, None])[:, :, 0]
    cameras = geometry.FoVPerspectiveCameras(R=R, T=T)
    settings = RasterizationSettings(image_size=32, blur_radius=1e-3, faces_per_pixel=10)
    fr = MeshRasterizer(cameras, settings)(meshes)
    prob = torch.sigmoid(-fr.dists / 1e-4) * (fr.pix_to_face >= 0)
    (1 - torch.prod(1 - prob, dim=-1)).sum().backward()
    assert torch.isfinite(pos.grad).all() and pos.grad.abs().sum() > 0


def test_soft_gradients_reach_vertices():
    meshes = _random_scene(20, seed=9, n_meshes=1)
    verts = meshes.verts_packed().detach().requires_grad_(True)
    fr = rasterize_meshes(Meshes([verts], meshes.faces_list()), image_size=32, blur_radius=1e-3,
                          faces_per_pixel=8, clip_barycentric_coords=True)
    prob = torch.sigmoid(-fr.dists / 1e-4) * (fr.pix_to_face >= 0)
    (1 - torch.prod(1 - prob, dim=-1)).sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise():
    meshes = _random_scene(4, seed=0, n_meshes=1)
    with pytest.raises(TypeError, match="meshes"):
        rasterize_meshes(torch.zeros(3, 3), image_size=8)
    with pytest.raises(ValueError, match="faces_per_pixel"):
        rasterize_meshes(meshes, image_size=8, faces_per_pixel=0)
    with pytest.raises(ValueError, match="blur_radius"):
        rasterize_meshes(meshes, image_size=8, blur_radius=-1.0)
    with pytest.raises(ValueError, match="image_size"):
        rasterize_meshes(meshes, image_size=(8, 0))
    with pytest.raises(ValueError, match="image_size"):
        rasterize_meshes(meshes, image_size=(8, 8, 8))
    with pytest.raises(ValueError, match="face_verts"):
        rasterize_face_verts(torch.zeros(4, 3, 2), torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(ValueError, match="num_faces_per_mesh"):
        rasterize_face_verts(torch.zeros(4, 3, 3), torch.tensor([0]), torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="cameras"):
        MeshRasterizer()(meshes)


def test_settings_are_frozen():
    s = RasterizationSettings(image_size=(4, 5), faces_per_pixel=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.faces_per_pixel = 4  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# z clipping (faces crossing the near plane)
# ------------------------------------------------------------------------------------------------


def _fov_project(view: torch.Tensor) -> torch.Tensor:
    s = 1 / math.tan(math.radians(30))  # FoVPerspectiveCameras(fov=60) in NDC, view z kept
    return torch.stack([s * view[:, 0] / view[:, 2], s * view[:, 1] / view[:, 2], view[:, 2]], -1)


def _crossing_scene():
    view = torch.tensor([[1.0, -1.0, 0.2], [0.0, 1.0, 3.0], [-1.0, -1.0, 3.0],  # one vertex behind z=0.5
                         [0.5, 0.5, 0.1], [0.3, -0.2, 0.2], [-0.5, 0.0, 4.0]])  # two vertices behind
    return view, torch.tensor([[0, 1, 2], [3, 4, 5]])


def test_clip_faces_splits_and_converts():
    from lib3d.render.mesh_rasterizer import clip_faces

    view, faces = _crossing_scene()
    fv = _fov_project(view)[faces]
    c = clip_faces(fv, torch.tensor([0]), torch.tensor([2]), 0.5, True)
    assert c.clipped_to_unclipped.tolist() == [0, 0, 1]
    assert c.neighbor.tolist() == [1, 0, -1]
    assert c.num_faces_per_mesh.tolist() == [3]
    assert (c.face_verts[..., 2] >= 0.5 - 1e-6).all()
    # Each clipped vertex is its conversion-weighted combination of the original view-space vertices.
    for k in range(3):
        orig = (c.conversion[:, :, k, None] * view[faces][c.clipped_to_unclipped]).sum(1)
        torch.testing.assert_close(_fov_project(orig), c.face_verts[:, k], atol=1e-5, rtol=1e-5)
    assert clip_faces(fv, torch.tensor([0]), torch.tensor([2]), 0.05, True) is None


@pytest.mark.parametrize("blur,K", [(0.0, 2), (0.02, 4)])
def test_z_clipping_maps_back_to_original_faces(blur, K):
    view, faces = _crossing_scene()
    verts = _fov_project(view).requires_grad_(True)
    fr = rasterize_meshes(Meshes([verts], [faces]), image_size=32, blur_radius=blur, faces_per_pixel=K,
                          perspective_correct=True, clip_barycentric_coords=blur > 0, z_clip_value=0.5)
    hit = fr.pix_to_face >= 0
    assert hit.sum() > 100 and set(fr.pix_to_face[hit].unique().tolist()) == {0, 1}
    assert (fr.zbuf[hit] >= 0.5 - 1e-6).all()
    # The two halves of the split face never both occupy slots of one pixel.
    p2f = fr.pix_to_face[0]
    assert ((p2f == 0).sum(-1) <= 1).all()
    if blur == 0:
        # bary_coords refer to the original faces: the interpolated view point projects onto the pixel.
        b, f = fr.bary_coords[hit], fr.pix_to_face[hit]
        point = (b[:, :, None] * view[faces][f]).sum(1)
        torch.testing.assert_close(point[:, 2], fr.zbuf[hit], atol=1e-5, rtol=1e-5)
        xs, ys = pixel_centers_ndc(32)
        idx = hit.nonzero()
        proj = _fov_project(point.detach())
        torch.testing.assert_close(proj[:, 0], xs[idx[:, 2]], atol=1e-4, rtol=0)
        torch.testing.assert_close(proj[:, 1], ys[idx[:, 1]], atol=1e-4, rtol=0)
    _golden_loss(fr).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# Property: fast == brute force on arbitrary small scenes
# ------------------------------------------------------------------------------------------------



@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_faces=st.integers(1, 12), h=st.integers(1, 12), w=st.integers(1, 12),
       K=st.integers(1, 5), blur=st.sampled_from([0.0, 1e-3, 2e-2]), persp=st.booleans(), clip=st.booleans(),
       cull=st.booleans(), budget=st.integers(1, 300))
def test_property_fast_equals_brute_force(seed, n_faces, h, w, K, blur, persp, clip, cull, budget):
    meshes = _random_scene(n_faces, seed=seed, n_meshes=2, spread=1.0, size=0.8)
    kw = {"image_size": (h, w), "blur_radius": blur, "faces_per_pixel": K, "perspective_correct": persp,
              "clip_barycentric_coords": clip, "cull_backfaces": cull}
    _compare(rasterize_meshes(meshes, max_pairs_per_chunk=budget, **kw), rasterize_meshes_reference(meshes, **kw))


def test_clipped_perspective_barycentrics_have_float32_gradients():
    """Blurred, perspective-correct, clipped barycentrics: float32 gradients agree with float64.

    Off a face the perspective denominator is near zero; dividing by it before clipping gave float32
    gradients of 1e8 where float64's are 2e3 (200 thin random triangles, K = 10).
    """
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(200, 1, 2, generator=g) * 1.6 - 0.8
    xy = centres + 0.15 * (torch.rand(200, 3, 2, generator=g) - 0.5) * torch.tensor([1.0, 0.1])
    z = 1.0 + 2.0 * torch.rand(200, 3, 1, generator=g)
    verts64 = torch.cat([xy, z], -1).reshape(1, -1, 3).double()
    faces = torch.arange(600).reshape(1, 200, 3)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        verts = verts64.to(dtype).requires_grad_(True)
        fr = rasterize_meshes(Meshes(verts=verts, faces=faces), image_size=32, blur_radius=9.2e-4,
                              faces_per_pixel=10, perspective_correct=True, clip_barycentric_coords=True)
        m = fr.pix_to_face >= 0
        loss = (fr.zbuf * m).sum() + (fr.bary_coords * m[..., None]).sum()
        grads[dtype] = torch.autograd.grad(loss, verts)[0].double()
    g32, g64 = grads[torch.float32], grads[torch.float64]
    assert g64.abs().max() > 0
    assert (g32 - g64).norm() <= 1e-3 * g64.norm(), ((g32 - g64).abs().max(), g64.abs().max())


def test_barycentric_coordinates_reconstruct_points():
    """PyTorch3D's barycentric_coordinates, vectorised: w sums to 1 and w0 v0 + w1 v1 + w2 v2 = p."""
    from lib3d.render.mesh_rasterizer import barycentric_coordinates

    g = torch.Generator().manual_seed(0)
    tri = torch.rand(200, 3, 2, generator=g, dtype=torch.float64) * 2 - 1
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    tri = tri[(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() > 0.1][:50]  # the 1e-8 epsilon is relative to area
    p = torch.rand(50, 2, generator=g, dtype=torch.float64) * 2 - 1
    w0, w1, w2 = barycentric_coordinates(p, tri[:, 0], tri[:, 1], tri[:, 2])
    torch.testing.assert_close(w0 + w1 + w2, torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-6)
    recon = w0[:, None] * tri[:, 0] + w1[:, None] * tri[:, 1] + w2[:, None] * tri[:, 2]
    torch.testing.assert_close(recon, p, rtol=0, atol=1e-6)
    # a hand-computed case: the centroid of a counter-clockwise-in-NDC unit triangle
    v0, v1, v2 = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    w = barycentric_coordinates(torch.tensor([1 / 3, 1 / 3]), v0, v1, v2)
    torch.testing.assert_close(torch.stack(w), torch.full((3,), 1 / 3), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="p must have shape"):
        barycentric_coordinates(torch.zeros(3), v0, v1, v2)
