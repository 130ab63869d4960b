"""FishEyeCameras (PyTorch3D's distortion model, checked against a scalar restatement of its formulas),
join_cameras_as_batch, and the (N, 2, 1) principal points PyTorch3D accepts (issue 14)."""

import math

import pytest
import torch

from lib3d.geometry import (
    FishEyeCameras,
    FoVPerspectiveCameras,
    PerspectiveCameras,
    join_cameras_as_batch,
    look_at_view_transform,
)


def _scalar_project(p, f, c, k, tp, s):
    """The fisheye model written out for one point with python floats (the docstring's steps 1-5)."""
    a, b = p[0] / p[2], p[1] / p[2]
    r = math.hypot(a, b)
    th = math.atan(r)
    radial = 1 + sum(k[i] * th ** (2 * i + 2) for i in range(len(k)))
    coeff = radial * (th / r if r > 1e-10 else 1.0)
    xr, yr = coeff * a, coeff * b
    rd2 = xr * xr + yr * yr
    tx = 2 * (xr * tp[0] + yr * tp[1]) * xr + rd2 * tp[0]
    ty = 2 * (xr * tp[0] + yr * tp[1]) * yr + rd2 * tp[1]
    sx, sy = s[0] * rd2 + s[1] * rd2 ** 2, s[2] * rd2 + s[3] * rd2 ** 2
    return f * (xr + tx + sx) + c[0], f * (yr + ty + sy) + c[1]


def _cams(dtype=torch.float64, **kw):
    return FishEyeCameras(
        focal_length=torch.tensor([[300.0], [250.0]], dtype=dtype),
        principal_point=torch.tensor([[320.0, 240.0], [300.0, 200.0]], dtype=dtype),
        radial_params=torch.tensor([[0.1, -0.02, 0.003, 0, 0, 0], [0.05, 0, 0, 0, 0, 1e-4]], dtype=dtype),
        tangential_params=torch.tensor([[1e-3, -2e-3], [0.0, 1e-3]], dtype=dtype),
        thin_prism_params=torch.tensor([[1e-3, 0.0, -1e-3, 1e-4], [0.0, 2e-4, 0.0, 0.0]], dtype=dtype), **kw)


def test_fisheye_projection_matches_the_formulas_and_inverts():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 40, 3, generator=g, dtype=torch.float64) - 0.5
    pts[..., 2] = pts[..., 2].abs() + 0.3
    pts[0, 0] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # on the axis: r = 0
    cams = _cams()
    uv = cams.transform_points(pts)
    assert uv.shape == (2, 40, 3) and torch.all(uv[..., 2] == 1)
    for n in range(2):
        for i in range(40):
            ref = _scalar_project(pts[n, i].tolist(), float(cams.focal_length[n, 0]), cams.principal_point[n].tolist(),
                                  cams.radial_params[n].tolist(), cams.tangential_params[n].tolist(),
                                  cams.thin_prism_params[n].tolist())
            torch.testing.assert_close(uv[n, i, :2], torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-9)
    rays = cams.unproject_points(uv, world_coordinates=False)
    torch.testing.assert_close(rays, pts / pts[..., 2:], rtol=0, atol=1e-9)
    # symmetric in z, as PyTorch3D documents
    torch.testing.assert_close(cams.transform_points(-pts), uv)


def test_fisheye_switches_world_points_and_gradients():
    cams = _cams(use_tangential=False, use_thin_prism=False)
    pts = torch.tensor([[0.2, -0.1, 1.5]], dtype=torch.float64)
    k = cams.radial_params[0].tolist()
    ref = _scalar_project(pts[0].tolist(), 300.0, [320.0, 240.0], k, [0, 0], [0, 0, 0, 0])
    torch.testing.assert_close(cams[0].transform_points(pts)[0, :2], torch.tensor(ref, dtype=torch.float64))
    R, T = look_at_view_transform(2.0, 10.0, 30.0)
    R, T = R.double(), T.double()
    radial = torch.tensor([[0.1, 0, 0, 0, 0, 0]], dtype=torch.float64)
    world = FishEyeCameras(focal_length=((200.0,),), R=R, T=T, world_coordinates=True, radial_params=radial)
    view = FishEyeCameras(focal_length=((200.0,),), radial_params=radial, R=torch.eye(3, dtype=torch.float64)[None])
    x = torch.rand(5, 3, dtype=torch.float64)
    x_view = x @ R[0] + T[0]
    torch.testing.assert_close(world.transform_points(x), view.transform_points(x_view))
    p = pts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: _cams().transform_points(q)[..., :2], (p,))
    with pytest.raises(ValueError, match="radial_params"):
        FishEyeCameras(radial_params=torch.zeros(1, 7))
    with pytest.raises(NotImplementedError, match="not a linear"):
        cams.get_projection_transform()


def test_join_cameras_as_batch():
    R, T = look_at_view_transform(torch.tensor([2.0, 3.0]), 0.0, torch.tensor([0.0, 90.0]))
    a = FoVPerspectiveCameras(R=R[:1], T=T[:1], fov=40.0)
    b = FoVPerspectiveCameras(R=R[1:], T=T[1:], fov=50.0)
    j = join_cameras_as_batch([a, b])
    assert isinstance(j, FoVPerspectiveCameras) and len(j) == 2
    torch.testing.assert_close(j.fov, torch.tensor([40.0, 50.0]))
    torch.testing.assert_close(j.get_full_projection_transform().get_matrix(),
                               torch.cat([a.get_full_projection_transform().get_matrix(),
                                          b.get_full_projection_transform().get_matrix()]))
    fish = join_cameras_as_batch([_cams()[0], _cams()[1]])
    torch.testing.assert_close(fish.transform_points(torch.rand(2, 4, 3, dtype=torch.float64) + 0.5)[..., 2],
                               torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="one class"):
        join_cameras_as_batch([a, PerspectiveCameras()])
    with pytest.raises(ValueError, match="degrees"):
        join_cameras_as_batch([a, FoVPerspectiveCameras(fov=0.5, degrees=False)])
    with pytest.raises(ValueError, match="image_size"):
        join_cameras_as_batch([PerspectiveCameras(image_size=((64, 64),)), PerspectiveCameras()])
    with pytest.raises(ValueError, match="empty"):
        join_cameras_as_batch([])


def test_principal_point_column_vectors_broadcast_as_pytorch3d():
    pp = torch.tensor([[[0.1], [0.2]], [[0.3], [0.4]]])
    cams = PerspectiveCameras(focal_length=torch.tensor([[2.0], [3.0]]), principal_point=pp)
    torch.testing.assert_close(cams.principal_point, pp[..., 0])
    same = PerspectiveCameras(focal_length=torch.tensor([[[2.0]], [[3.0]]]), principal_point=pp[..., 0])
    torch.testing.assert_close(cams.get_projection_transform().get_matrix(), same.get_projection_transform().get_matrix())
