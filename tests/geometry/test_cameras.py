"""Cameras: PyTorch3D golden parity, project/unproject identities, NDC/screen conventions, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.geometry import (
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    OpenGLOrthographicCameras,
    OpenGLPerspectiveCameras,
    OrthographicCameras,
    PerspectiveCameras,
    SfMOrthographicCameras,
    SfMPerspectiveCameras,
    camera_position_from_spherical_angles,
    look_at_rotation,
    look_at_view_transform,
    random_rotations,
    so3_exp_map,
    so3_log_map,
)
from tests.helpers import golden_case, load_golden

HYP = settings(max_examples=20, deadline=None)


def assert_rel(actual, expected, rtol=1e-5):
    """Golden README: cameras to 1e-5 relative (|a - b| <= rtol * max(|b|, 1))."""
    err = ((actual - expected).abs() / expected.abs().clamp(min=1.0)).max()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert float(err) <= rtol, float(err)


# --------------------------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden():
    return load_golden("cameras")[0]


@pytest.fixture(scope="module")
def look_at(golden):
    c = golden_case(golden, "look_at_view_transform")
    return c["R"], c["T"]


def test_golden_look_at(golden):
    c = golden_case(golden, "look_at_view_transform")
    R, T = look_at_view_transform(c["dist"], c["elev"], c["azim"], degrees=True)
    assert_rel(R, c["R"])
    assert_rel(T, c["T"])
    c = golden_case(golden, "look_at_eye")
    R, T = look_at_view_transform(eye=[[1.0, 2.0, 3.0], [-2.0, 0.5, 0.1]], at=((0.1, 0.2, 0),), up=((0, 1, 0),))
    assert_rel(R, c["R"])
    assert_rel(T, c["T"])
    c = golden_case(golden, "look_at_rotation")
    assert_rel(look_at_rotation(c["camera_position"]), c["R"])


def test_golden_fov_perspective(golden, look_at):
    c = golden_case(golden, "fov_perspective")
    cam = FoVPerspectiveCameras(R=look_at[0], T=look_at[1], znear=0.1, zfar=10, fov=c["fov"],
                                aspect_ratio=c["aspect_ratio"])
    assert_rel(cam.get_projection_transform().get_matrix(), c["projection"])
    assert_rel(cam.transform_points(c["points"]), c["ndc"])
    assert_rel(cam.get_world_to_view_transform().transform_points(c["points"]), c["view"])
    assert_rel(cam.transform_points_screen(c["points"], image_size=(128, 96)), c["screen"])
    assert_rel(cam.get_camera_center(), c["center"])


def test_golden_fov_orthographic(golden, look_at):
    c = golden_case(golden, "fov_orthographic")
    cam = FoVOrthographicCameras(R=look_at[0], T=look_at[1], znear=0.1, zfar=10, min_x=-1.5, max_x=1.5,
                                 min_y=-1, max_y=1)
    assert_rel(cam.get_projection_transform().get_matrix(), c["projection"])
    assert_rel(cam.transform_points(c["points"]), c["ndc"])


def test_golden_book_chapter1(golden):
    c = golden_case(golden, "book_chapter1")
    n = 8
    image_size = torch.ones(n, 2)  # the book's construction: (H, W) = (1024, 512) per camera
    image_size[:, 0] *= 1024
    image_size[:, 1] *= 512
    cam = PerspectiveCameras(focal_length=torch.tensor([[1200.0, 300.0]] * n),
                             principal_point=torch.tensor([[512.0, 256.0]] * n), in_ndc=False,
                             image_size=image_size, R=c["R"], T=c["T"])
    v = c["vertices"]
    assert_rel(cam.get_world_to_view_transform().transform_points(v), c["world_to_view"])
    assert_rel(cam.get_full_projection_transform().transform_points(v), c["world_to_screen"])
    assert_rel(cam.transform_points_screen(v), c["screen"])
    # the same camera with a single (H, W) pair and broadcast intrinsics
    cam1 = PerspectiveCameras(focal_length=((1200.0, 300.0),), principal_point=(512.0, 256.0), in_ndc=False,
                              image_size=(1024, 512), R=c["R"], T=c["T"])
    assert_rel(cam1.transform_points_screen(v), c["screen"])


def test_golden_perspective_ndc_and_unproject(golden, look_at):
    c = golden_case(golden, "perspective_ndc")
    cam = PerspectiveCameras(focal_length=2.0, principal_point=((0.1, -0.2),), R=look_at[0][:1], T=look_at[1][:1])
    ndc = cam.transform_points(c["points"])
    assert_rel(ndc, c["ndc"])
    depth = cam.get_world_to_view_transform().transform_points(c["points"])[..., 2:]
    xy_depth = torch.cat([c["ndc"][..., :2], depth], dim=-1)
    assert_rel(cam.unproject_points(xy_depth, world_coordinates=True), c["unprojected"])


def test_golden_orthographic(golden, look_at):
    c = golden_case(golden, "orthographic")
    cam = OrthographicCameras(focal_length=1.5, R=look_at[0][:1], T=look_at[1][:1])
    assert_rel(cam.transform_points(c["points"]), c["ndc"])


# --------------------------------------------------------------------------- project / unproject
def _cameras(kind: str, seed: int, n: int = 3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = random_rotations(n, dtype=dtype, generator=g)
    T = torch.randn(n, 3, dtype=dtype, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 4.0], dtype=dtype)
    u = torch.rand(n, 2, dtype=dtype, generator=g)
    if kind == "fov_perspective":
        return FoVPerspectiveCameras(znear=0.5, zfar=20.0, fov=30 + 60 * u[:, 0], aspect_ratio=0.5 + u[:, 1],
                                     R=R, T=T)
    if kind == "fov_orthographic":
        return FoVOrthographicCameras(znear=0.5, zfar=20.0, max_x=1 + u[:, 0], min_x=-1.5, max_y=2.0,
                                      min_y=-1 - u[:, 1], scale_xyz=((1.0, 2.0, 0.5),), R=R, T=T)
    if kind == "perspective":
        return PerspectiveCameras(focal_length=1 + u, principal_point=u - 0.5, R=R, T=T)
    if kind == "perspective_screen":
        return PerspectiveCameras(focal_length=300 * (1 + u), principal_point=100 * u, R=R, T=T, in_ndc=False,
                                  image_size=(120, 160))
    if kind == "orthographic":
        return OrthographicCameras(focal_length=1 + u, principal_point=u - 0.5, R=R, T=T)
    if kind == "orthographic_screen":
        return OrthographicCameras(focal_length=100 * (1 + u), principal_point=50 * u, R=R, T=T, in_ndc=False,
                                   image_size=((90, 60),))
    raise AssertionError(kind)


KINDS = ["fov_perspective", "fov_orthographic", "perspective", "perspective_screen", "orthographic",
         "orthographic_screen"]


@HYP
@given(st.integers(0, 2**31 - 1), st.sampled_from(KINDS))
def test_project_then_unproject_is_identity(seed, kind):
    cam = _cameras(kind, seed)
    pts = torch.randn(3, 20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    depth = cam.get_world_to_view_transform().transform_points(pts)[..., 2:]
    proj = cam.transform_points(pts)
    xy_depth = torch.cat([proj[..., :2], depth], dim=-1)
    torch.testing.assert_close(cam.unproject_points(xy_depth, world_coordinates=True), pts)
    view = cam.get_world_to_view_transform().transform_points(pts)
    torch.testing.assert_close(cam.unproject_points(xy_depth, world_coordinates=False), view)
    if kind.endswith("screen"):  # NDC input to a screen-space camera
        ndc = cam.transform_points_ndc(pts)
        xy_depth = torch.cat([ndc[..., :2], depth], dim=-1)
        torch.testing.assert_close(cam.unproject_points(xy_depth, from_ndc=True), pts)
    if kind.startswith("fov"):  # scaled (NDC) depth input
        torch.testing.assert_close(cam.unproject_points(proj, scaled_depth_input=True), pts)


def test_screen_camera_equals_its_ndc_twin():
    """A pixel-space PerspectiveCameras and the NDC camera with the converted intrinsics agree."""
    H, W = 120, 160
    s = min(H, W) / 2
    cam = _cameras("perspective_screen", 5)
    twin = PerspectiveCameras(focal_length=cam.focal_length / s,
                              principal_point=torch.stack([(W / 2 - cam.principal_point[:, 0]) / s,
                                                           (H / 2 - cam.principal_point[:, 1]) / s], 1),
                              R=cam.R, T=cam.T)
    pts = torch.randn(3, 10, 3, dtype=torch.float64)
    torch.testing.assert_close(cam.transform_points_ndc(pts), twin.transform_points(pts))
    torch.testing.assert_close(cam.transform_points_screen(pts), twin.transform_points_screen(pts, image_size=(H, W)))
    # and the screen projection is (image x) = px + fx * (-x/z): +X of view space points left
    view = cam.get_world_to_view_transform().transform_points(pts)
    scr = cam.transform_points_screen(pts)
    torch.testing.assert_close(scr[..., 0], cam.principal_point[:, None, 0] - cam.focal_length[:, None, 0]
                               * view[..., 0] / view[..., 2])


def test_non_square_ndc_to_screen_hand_computed():
    # NDC x spans [-2, 2] on a 100 x 200 (H x W) image: x_ndc = +2 (left in NDC) is the left edge x_s = 0
    cam = PerspectiveCameras(focal_length=1.0)
    pts = torch.tensor([[[2.0, 1.0, 1.0], [0.0, 0.0, 1.0], [-2.0, -1.0, 1.0]]])
    scr = cam.transform_points_screen(pts, image_size=(100, 200))
    torch.testing.assert_close(scr, torch.tensor([[[0.0, 0.0, 1.0], [100.0, 50.0, 1.0], [200.0, 100.0, 1.0]]]))
    flip = cam.transform_points_screen(pts, image_size=(100, 200), with_xyflip=False)
    torch.testing.assert_close(flip[0, 1], torch.tensor([-100.0, -50.0, 1.0]))


def test_fov_perspective_depth_range():
    cam = FoVPerspectiveCameras(znear=1.0, zfar=10.0)
    z = cam.transform_points(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 10.0]]))[..., 2]
    torch.testing.assert_close(z, torch.tensor([0.0, 1.0]))


def test_camera_center_and_look_at():
    R, T = look_at_view_transform(dist=[2.0, 3.0], elev=[10.0, -40.0], azim=[30.0, 200.0], at=((0.1, 0.2, 0.3),))
    cam = FoVPerspectiveCameras(R=R, T=T)
    C = cam.get_camera_center()
    torch.testing.assert_close(C, camera_position_from_spherical_angles([2.0, 3.0], [10.0, -40.0], [30.0, 200.0])
                               + torch.tensor([0.1, 0.2, 0.3]), atol=1e-5, rtol=0)
    # the camera centre maps to the view origin, the look-at point onto the +Z axis
    v = cam.get_world_to_view_transform().transform_points(C[:, None])
    torch.testing.assert_close(v, torch.zeros(2, 1, 3), atol=1e-5, rtol=0)
    a = cam.get_world_to_view_transform().transform_points(torch.tensor([[0.1, 0.2, 0.3]]))
    torch.testing.assert_close(a[..., :2], torch.zeros(2, 1, 2), atol=1e-5, rtol=0)
    assert bool((a[..., 2] > 0).all())
    # broadcasting of scalars and lists as PyTorch3D
    assert look_at_view_transform(2.7, 0, [0, 90, 180])[0].shape == (3, 3, 3)
    assert look_at_view_transform(torch.tensor([1.0, 2.0]), 10, 20)[1].shape == (2, 3)
    R1, _ = look_at_view_transform(2.7, 90.0, 0.0)  # up parallel to the view direction: still a rotation
    torch.testing.assert_close(R1 @ R1.transpose(1, 2), torch.eye(3)[None], atol=1e-5, rtol=0)



def _reference_look_at(C, at, up):
    """PyTorch3D's look_at_rotation written out in float64 (its normalisation eps 1e-5 and fallback)."""
    def nrm(v):
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-5)

    z = nrm(at - C)
    x = nrm(torch.cross(up, z, dim=1))
    y = nrm(torch.cross(z, x, dim=1))
    close = (x.abs() <= 5e-3).all(dim=1, keepdim=True)
    x = torch.where(close, nrm(torch.cross(y, z, dim=1)), x)
    return torch.stack([x, y, z], dim=1).transpose(1, 2)


@pytest.mark.parametrize(("eye", "at", "up", "cause"), [
    ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], [[0.0, 1.0, 0.0]], "sits at the point it looks at"),
    ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0 + 5e-6]], [[0.0, 1.0, 0.0]], "sits at the point it looks at"),
    ([[0.0, 3.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], "parallel"),      # exactly overhead
    ([[0.0, 3.0, 1e-5]], [[0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], "parallel"),     # x axis of length 1/3
    ([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], "zero or parallel"),
])
def test_look_at_degenerate_views_raise(eye, at, up, cause):
    """issue 12: PyTorch3D's formula returns an all-zero or non-unit "rotation" silently for these views."""
    ref = _reference_look_at(*(torch.tensor(v, dtype=torch.float64) for v in (eye, at, up)))
    assert not torch.allclose(ref @ ref.transpose(1, 2), torch.eye(3, dtype=torch.float64), atol=1e-3)
    with pytest.raises(ValueError, match=cause):
        look_at_view_transform(eye=eye, at=at, up=up)
    with pytest.raises(ValueError, match="camera 0"):
        look_at_rotation(eye, at=at, up=up)


def test_look_at_second_camera_named_and_near_degenerate_views_kept():
    with pytest.raises(ValueError, match="camera 1 sits at the point"):
        look_at_view_transform(dist=[2.0, 0.0], elev=10.0, azim=20.0)
    # nearly overhead views where PyTorch3D's fallback yields a rotation stay accepted, with its numbers
    for eye in ([[0.0, 3.0, 1e-3]], [[0.0, 3.0, 1e-8]], [[2e-4, -3.0, 0.0]]):
        R = look_at_rotation(torch.tensor(eye, dtype=torch.float64))
        torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64)[None], atol=1e-6, rtol=0)
        torch.testing.assert_close(R, _reference_look_at(torch.tensor(eye, dtype=torch.float64),
                                                         torch.zeros(1, 3, dtype=torch.float64),
                                                         torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)))

def test_kwargs_overrides_and_container():
    cam = _cameras("fov_perspective", 1)
    other = _cameras("fov_perspective", 2)
    pts = torch.randn(3, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(cam.transform_points(pts, R=other.R, T=other.T),
                               FoVPerspectiveCameras(znear=0.5, zfar=20.0, fov=cam.fov, aspect_ratio=cam.aspect_ratio,
                                                     R=other.R, T=other.T).transform_points(pts))
    assert len(cam) == 3 and len(cam[1]) == 1 and len(cam[[0, 2]]) == 2 and len(cam[1:]) == 2
    torch.testing.assert_close(cam[1].transform_points(pts[1]), cam.transform_points(pts)[1])
    assert cam.to(dtype=torch.float32).dtype == torch.float32
    assert cam.is_perspective() and cam.in_ndc() and cam.get_znear().shape == (3,)
    assert not _cameras("orthographic", 0).is_perspective()
    assert not _cameras("perspective_screen", 0).in_ndc()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.R = other.R
    c2 = cam.clone()
    assert c2 is not cam and torch.equal(c2.R, cam.R)
    # defaults: identity camera, float32, CPU
    d = FoVPerspectiveCameras()
    assert d.R.shape == (1, 3, 3) and d.T.shape == (1, 3) and d.dtype == torch.float32 and len(d) == 1
    assert PerspectiveCameras().focal_length.shape == (1, 2)
    # K overrides the computed projection
    K = torch.eye(4)[None]
    torch.testing.assert_close(FoVPerspectiveCameras(K=K).get_projection_transform().get_matrix(), K)


def test_gradients_flow_to_camera_parameters():
    R = random_rotations(2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    T = torch.tensor([[0.0, 0.0, 3.0], [0.1, -0.2, 4.0]], dtype=torch.float64, requires_grad=True)
    f = torch.tensor([1.5, 2.0], dtype=torch.float64, requires_grad=True)
    pts = torch.randn(2, 6, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda R, T, f: PerspectiveCameras(focal_length=f, R=R, T=T).transform_points(pts), (R, T, f))
    fov = torch.tensor([50.0, 70.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda R, T, fov: FoVPerspectiveCameras(fov=fov, R=R, T=T).transform_points_screen(pts, image_size=(32, 48)),
        (R, T, fov))


def test_bad_input():
    with pytest.raises(ValueError, match="R"):
        FoVPerspectiveCameras(R=torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="T"):
        FoVPerspectiveCameras(T=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="broadcast"):
        FoVPerspectiveCameras(R=torch.eye(3).expand(2, 3, 3), T=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="image_size"):
        PerspectiveCameras(image_size=((0, 10),))
    with pytest.raises(ValueError, match="image_size"):
        FoVPerspectiveCameras().transform_points_screen(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="image_size"):
        PerspectiveCameras(in_ndc=False).transform_points_ndc(torch.ones(5, 3))
    with pytest.raises(ValueError, match="xy_depth"):
        FoVPerspectiveCameras().unproject_points(torch.zeros(5, 2))
    with pytest.raises(TypeError, match="xy_depth"):
        PerspectiveCameras().unproject_points([[0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="focal_length"):
        PerspectiveCameras(focal_length=torch.ones(1, 3))
    with pytest.raises(ValueError, match="points"):
        FoVPerspectiveCameras().transform_points(torch.zeros(5, 4))
    with pytest.raises(IndexError):
        FoVPerspectiveCameras()[3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for kind in KINDS:
        cam = _cameras(kind, 3, dtype=torch.float32)
        pts = torch.randn(3, 50, 3)
        cuda = cam.to("cuda")
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.transform_points_ndc(pts.cuda()).cpu(), cam.transform_points_ndc(pts),
                                   atol=1e-4, rtol=1e-4)
        if kind.endswith("screen"):
            torch.testing.assert_close(cuda.transform_points_screen(pts.cuda()).cpu(),
                                       cam.transform_points_screen(pts), atol=1e-3, rtol=1e-4)
    R, T = look_at_view_transform(2.7, 10.0, [0.0, 90.0], device="cuda")
    assert R.device.type == "cuda" and T.device.type == "cuda"
    assert FoVPerspectiveCameras(R=R, T=T).get_camera_center().device.type == "cuda"


def test_deprecated_aliases():
    with pytest.warns(DeprecationWarning):
        cam = OpenGLPerspectiveCameras(fov=45.0)
    torch.testing.assert_close(cam.get_projection_transform().get_matrix(),
                               FoVPerspectiveCameras(fov=45.0).get_projection_transform().get_matrix())
    with pytest.warns(DeprecationWarning):
        assert isinstance(SfMPerspectiveCameras(focal_length=2.0), PerspectiveCameras)
    with pytest.warns(DeprecationWarning):
        assert isinstance(OpenGLOrthographicCameras(), FoVOrthographicCameras)
    with pytest.warns(DeprecationWarning):
        assert isinstance(SfMOrthographicCameras(), OrthographicCameras)


def test_torch_compile_fullgraph():
    """Pure functions and camera projections trace without graph breaks (data checks skip while tracing)."""
    R, T = look_at_view_transform(2.7, 10.0, [0.0, 90.0])
    cam = FoVPerspectiveCameras(R=R, T=T)
    pts = torch.randn(2, 10, 3)

    def fn(p, w):
        return cam.transform_points_screen(p, image_size=(32, 48)), so3_log_map(so3_exp_map(w))

    w = torch.randn(5, 3)
    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    for a, b in zip(compiled(pts, w), fn(pts, w)):
        torch.testing.assert_close(a, b)
