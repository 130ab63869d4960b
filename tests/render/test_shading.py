"""Lights, materials, shading and blending: hand-computed cases, slow references, gradients, parity."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from lib3d.render.blending import BlendParams, hard_rgb_blend, sigmoid_alpha_blend, softmax_rgb_blend
from lib3d.render.lighting import AmbientLights, DirectionalLights, Materials, PointLights, diffuse, specular
from lib3d.render.shading import (
    HardPhongShader,
    SoftSilhouetteShader,
    flat_shading,
    gouraud_shading,
    interpolate_face_attributes,
    phong_shading,
    shade,
)
from lib3d.structures.meshes import Meshes
from lib3d.structures.textures import TexturesVertex
from tests.helpers import book_path, golden_case, load_golden


class Frags(NamedTuple):
    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor
    dists: torch.Tensor


class FakeCameras:
    """Just enough camera for shading: a centre per batch element and a depth range."""

    def __init__(self, centers: torch.Tensor, znear=1.0, zfar=100.0):
        self.centers, self.znear, self.zfar = centers, znear, zfar

    def get_camera_center(self) -> torch.Tensor:
        return self.centers


def _scene(n=2, h=5, w=6, k=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    verts = [torch.randn(7, 3, generator=g, dtype=dtype) for _ in range(n)]
    faces = [torch.randint(0, 7, (9, 3), generator=g) for _ in range(n)]
    for f in faces:  # non-degenerate faces
        f[:, 1] = (f[:, 0] + 1 + f[:, 1] % 5) % 7
        f[:, 2] = (f[:, 1] + 1 + f[:, 2] % 4) % 7
        f[:, 2] = torch.where(f[:, 2] == f[:, 0], (f[:, 2] + 1) % 7, f[:, 2])
        f[:, 2] = torch.where(f[:, 2] == f[:, 1], (f[:, 2] + 1) % 7, f[:, 2])
    colors = [torch.rand(7, 3, generator=g, dtype=dtype) for _ in range(n)]
    meshes = Meshes(verts, faces, textures=TexturesVertex(colors))
    n_faces = 9
    p2f = torch.randint(-1, n_faces, (n, h, w, k), generator=g)
    p2f = torch.where(p2f >= 0, p2f + torch.arange(n)[:, None, None, None] * n_faces, p2f)
    bary = torch.rand(n, h, w, k, 3, generator=g, dtype=dtype) + 0.05
    bary = bary / bary.sum(-1, keepdim=True)
    zbuf = torch.where(p2f >= 0, torch.rand(n, h, w, k, generator=g, dtype=dtype) * 5 + 1, -1.0)
    zbuf = zbuf.sort(dim=-1).values
    dists = torch.where(p2f >= 0, (torch.rand(n, h, w, k, generator=g, dtype=dtype) - 0.5) * 4e-4, -1.0)
    frags = Frags(p2f, zbuf, bary, dists)
    cams = FakeCameras(torch.randn(n, 3, generator=g, dtype=dtype) * 3)
    return meshes, frags, cams


# ------------------------------------------------------------------------------------------------
# Slow full-tensor references: PyTorch3D's code paths, line by line
# ------------------------------------------------------------------------------------------------
def _ref_interp(p2f, bary, face_attrs):
    mask = p2f < 0
    idx = p2f.clamp(min=0)
    vals = face_attrs[idx]  # (N, H, W, K, 3, D)
    out = (bary[..., None] * vals).sum(dim=-2)
    return torch.where(mask[..., None], torch.zeros_like(out), out)


def _ref_lighting(points, normals, lights, cam_centers, materials):
    """PyTorch3D's _apply_lighting on (N, H, W, K, 3) with props of batch N (looped per batch element)."""
    n = points.shape[0]
    out = []
    for b in range(n):
        def pick(t):
            return t[b if t.shape[0] > 1 else 0].to(points.dtype)
        pts, nrm = points[b], normals[b]
        nrm_u = F.normalize(nrm, dim=-1, eps=1e-6)
        if isinstance(lights, AmbientLights):
            dif = torch.zeros_like(pts)
            spe = torch.zeros_like(pts)
        else:
            if isinstance(lights, PointLights):
                d = pick(lights.location) - pts
            else:
                d = pick(lights.direction).expand_as(pts)
            d = F.normalize(d, dim=-1, eps=1e-6)
            cos = (nrm_u * d).sum(-1)
            dif = pick(lights.diffuse_color) * F.relu(cos)[..., None]
            v = F.normalize(pick(cam_centers) - pts, dim=-1, eps=1e-6)
            r = -d + 2 * cos[..., None] * nrm_u
            a = F.relu((v * r).sum(-1)) * (cos > 0).to(pts.dtype)
            spe = pick(lights.specular_color) * torch.pow(a, pick(materials.shininess))[..., None]
        amb = pick(materials.ambient_color) * pick(lights.ambient_color)
        out.append((amb, pick(materials.diffuse_color) * dif, pick(materials.specular_color) * spe))
    return out


def _ref_phong(meshes, frags, lights, cams, materials, texels):
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    pts = _ref_interp(frags.pix_to_face, frags.bary_coords, verts[faces])
    nrm = _ref_interp(frags.pix_to_face, frags.bary_coords, meshes.verts_normals_packed()[faces])
    res = _ref_lighting(pts, nrm, lights, cams.get_camera_center(), materials)
    cols = torch.stack([(a + d) * texels[b] + s for b, (a, d, s) in enumerate(res)])
    return torch.where((frags.pix_to_face < 0)[..., None], torch.zeros_like(cols), cols)


def _ref_flat(meshes, frags, lights, cams, materials, texels):
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    fc = verts[faces].mean(1)
    fn = meshes.faces_normals_packed()
    idx = frags.pix_to_face.clamp(min=0)
    res = _ref_lighting(fc[idx], fn[idx], lights, cams.get_camera_center(), materials)
    cols = torch.stack([(a + d) * texels[b] + s for b, (a, d, s) in enumerate(res)])
    return torch.where((frags.pix_to_face < 0)[..., None], torch.zeros_like(cols), cols)


def _ref_gouraud(meshes, frags, lights, cams, materials):
    vn = meshes.verts_normals_list()
    cols = []
    for b, (v, f, c) in enumerate(zip(meshes.verts_list(), meshes.faces_list(),
                                      meshes.textures.verts_features_list())):
        sub_l = lights[b] if len(lights) > 1 else lights
        sub_m = materials[b] if len(materials) > 1 else materials
        cc = cams.get_camera_center()
        cc = cc[b:b + 1] if cc.shape[0] > 1 else cc
        a, d, s = _ref_lighting(v[None], vn[b][None], sub_l, cc, sub_m)[0]
        cols.append(c * (a + d) + s)
    shaded = torch.cat(cols)
    return _ref_interp(frags.pix_to_face, frags.bary_coords, shaded[meshes.faces_packed()])


def _ref_softmax(colors, frags, bp, znear, zfar):
    """SoftRas blending written per slot with explicit loops over K (slow, obvious)."""
    eps = 1e-10
    mask = (frags.pix_to_face >= 0).to(colors.dtype)
    k = colors.shape[3]
    probs = [torch.sigmoid(-frags.dists[..., i] / bp.sigma) * mask[..., i] for i in range(k)]
    zs = [(zfar - frags.zbuf[..., i]) / (zfar - znear) * mask[..., i] for i in range(k)]
    zmax = torch.stack(zs, -1).max(-1).values.clamp(min=eps)
    ws = [p * torch.exp((z - zmax) / bp.gamma) for p, z in zip(probs, zs)]
    delta = torch.exp((eps - zmax) / bp.gamma).clamp(min=eps)
    bg = torch.as_tensor(bp.background_color, dtype=colors.dtype)
    num = sum(w[..., None] * colors[..., i, :] for i, w in enumerate(ws)) + delta[..., None] * bg
    den = sum(ws) + delta
    alpha = torch.ones_like(zmax)
    for p in probs:
        alpha = alpha * (1 - p)
    return torch.cat([num / den[..., None], (1 - alpha)[..., None]], -1)


LIGHTS = {
    "point": lambda n: PointLights(location=torch.randn(n, 3, generator=torch.Generator().manual_seed(1)) * 3,
                                   diffuse_color=[[0.6, 0.5, 0.4]]),
    "point1": lambda n: PointLights(location=[[0.0, 0.0, -3.0]]),
    "directional": lambda n: DirectionalLights(direction=[[0.0, 1.0, -1.0]], specular_color=[[0.3, 0.4, 0.5]]),
    "ambient": lambda n: AmbientLights(ambient_color=[[0.3, 0.6, 0.9]]),
}
MATERIALS = {
    "default": lambda n: Materials(),
    "batched": lambda n: Materials(specular_color=torch.rand(n, 3, generator=torch.Generator().manual_seed(2)),
                                   shininess=torch.linspace(5.0, 20.0, n)),
}


# ------------------------------------------------------------------------------------------------
# Lights and materials
# ------------------------------------------------------------------------------------------------
def test_defaults_match_pytorch3d():
    pl, dl, al, m = PointLights(), DirectionalLights(), AmbientLights(), Materials()
    assert torch.equal(pl.location, torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(dl.direction, torch.tensor([[0.0, 1.0, 0.0]]))
    for lights in (pl, dl):
        assert torch.allclose(lights.ambient_color, torch.tensor([[0.5] * 3]))
        assert torch.allclose(lights.diffuse_color, torch.tensor([[0.3] * 3]))
        assert torch.allclose(lights.specular_color, torch.tensor([[0.2] * 3]))
    assert torch.equal(al.ambient_color, torch.ones(1, 3))
    assert torch.equal(m.ambient_color, torch.ones(1, 3)) and torch.equal(m.specular_color, torch.ones(1, 3))
    assert torch.equal(m.shininess, torch.tensor([64.0]))


def test_lights_batched_immutable_replace():
    lights = PointLights(location=torch.zeros(4, 3), diffuse_color=(0.1, 0.2, 0.3))
    assert len(lights) == 4 and lights.diffuse_color.shape == (4, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lights.location = torch.ones(1, 3)  # frozen
    moved = lights.replace(location=torch.ones(4, 3))
    assert torch.equal(moved.location, torch.ones(4, 3)) and torch.equal(lights.location, torch.zeros(4, 3))
    assert len(lights[1:3]) == 2 and len(lights[0]) == 1
    g = lights.gather_props(torch.tensor([0, 3, 3]))
    assert g.location.shape == (3, 3)
    assert lights.to(dtype=torch.float64).location.dtype == torch.float64


@pytest.mark.parametrize("bad", [
    dict(location=torch.zeros(2, 4)),
    dict(location=torch.zeros(2, 3), diffuse_color=torch.zeros(3, 3)),
    dict(location=torch.zeros(2, 2, 3)),
])
def test_lights_bad_input(bad):
    with pytest.raises(ValueError):
        PointLights(**bad)


def test_materials_bad_input():
    with pytest.raises(ValueError):
        Materials(shininess=torch.ones(2, 2))
    with pytest.raises(ValueError):
        Materials(ambient_color=torch.ones(2, 3), shininess=torch.ones(3))


def test_diffuse_specular_hand_computed():
    # Normal +Z, light at 45 degrees in the XZ plane: cos = 1/sqrt(2).
    n = torch.tensor([[0.0, 0.0, 2.0]])  # not unit: renormalised
    d = torch.tensor([[1.0, 0.0, 1.0]])
    out = diffuse(n, torch.tensor([[1.0, 0.5, 0.0]]), d)
    assert torch.allclose(out, torch.tensor([[1.0, 0.5, 0.0]]) / math.sqrt(2))
    # Light behind the surface: nothing.
    assert torch.equal(diffuse(n, torch.ones(1, 3), -d), torch.zeros(1, 3))
    # Mirror direction of d about +Z is (-1, 0, 1)/sqrt2; a camera exactly there sees alpha = 1.
    p = torch.zeros(1, 3)
    cam = torch.tensor([[-3.0, 0.0, 3.0]])
    assert torch.allclose(specular(p, n, d, cam, 10.0, torch.ones(1, 3)), torch.ones(1, 3))
    # Camera on the normal: cos(angle(v, r)) = 1/sqrt2, so alpha^2 = 1/2.
    cam = torch.tensor([[0.0, 0.0, 5.0]])
    assert torch.allclose(specular(p, n, d, cam, torch.tensor([2.0]), torch.ones(1, 3)), torch.full((1, 3), 0.5))
    # PyTorch3D: 0 ** 0 = 1, so shininess 0 gives the full colour even with the light behind.
    assert torch.allclose(specular(p, n, -d, cam, 0.0, torch.ones(1, 3)), torch.ones(1, 3))


def test_lighting_broadcasts_over_pixels():
    lights = PointLights(location=torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0]]))
    normals = torch.zeros(2, 4, 5, 1, 3)
    normals[..., 2] = 1.0
    points = torch.zeros(2, 4, 5, 1, 3)
    out = lights.diffuse(normals, points)
    assert out.shape == (2, 4, 5, 1, 3)
    assert torch.allclose(out[0], torch.full((4, 5, 1, 3), 0.3)) and torch.equal(out[1], torch.zeros(4, 5, 1, 3))
    spec = lights.specular(normals, points, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([64.0]))
    assert torch.allclose(spec[0], torch.full((4, 5, 1, 3), 0.2))


# ------------------------------------------------------------------------------------------------
# Shading vs slow references, forward and backward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("light", list(LIGHTS))
@pytest.mark.parametrize("material", list(MATERIALS))
@pytest.mark.parametrize("model", ["phong", "flat", "gouraud"])
def test_shading_matches_reference(model, light, material):
    meshes, frags, cams = _scene()
    n = len(meshes)
    lights, materials = LIGHTS[light](n), MATERIALS[material](n)
    verts = meshes.verts_packed().clone().requires_grad_(True)
    meshes = meshes.update_packed(verts)
    texels = torch.rand(frags.bary_coords.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    texels.requires_grad_(True)
    if model == "phong":
        out, ref = (phong_shading(meshes, frags, lights, cams, materials, texels),
                    _ref_phong(meshes, frags, lights, cams, materials, texels))
    elif model == "flat":
        out, ref = (flat_shading(meshes, frags, lights, cams, materials, texels),
                    _ref_flat(meshes, frags, lights, cams, materials, texels))
    else:
        out, ref = (gouraud_shading(meshes, frags, lights, cams, materials),
                    _ref_gouraud(meshes, frags, lights, cams, materials))
    assert out.shape == frags.bary_coords.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    if not out.requires_grad:  # gouraud under ambient light does not depend on the vertices
        return
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(4))
    inputs = [verts, texels] if model != "gouraud" else [verts]
    g_out = torch.autograd.grad((out * w).sum(), inputs, allow_unused=True, retain_graph=True)
    g_ref = torch.autograd.grad((ref * w).sum(), inputs, allow_unused=True)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_interpolate_face_attributes():
    _, frags, _ = _scene()
    attrs = torch.randn(18, 3, 4, dtype=torch.float64)
    out = interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, attrs)
    torch.testing.assert_close(out, _ref_interp(frags.pix_to_face, frags.bary_coords, attrs))


def test_phong_gradcheck():
    meshes, frags, cams = _scene(n=1, h=2, w=3, k=2)
    faces = meshes.faces_packed()
    lights = PointLights(location=[[0.3, 2.0, -2.0]])

    def fn(verts, texels, loc):
        m = Meshes([verts], [faces])
        return phong_shading(m, frags, lights.replace(location=loc), cams, Materials(shininess=3.0), texels)

    verts = meshes.verts_packed().clone().requires_grad_(True)
    texels = torch.rand(frags.bary_coords.shape, dtype=torch.float64, requires_grad=True)
    loc = torch.tensor([[0.3, 2.0, -2.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (verts, texels, loc))


# ------------------------------------------------------------------------------------------------
# Blending
# ------------------------------------------------------------------------------------------------
def test_hard_rgb_blend_hand_computed():
    p2f = torch.tensor([[[[3, 1], [-1, -1]]]])  # (1, 1, 2, 2)
    colors = torch.tensor([[[[[0.1, 0.2, 0.3], [0.9, 0.9, 0.9]], [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]]])
    frags = Frags(p2f, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, 3), torch.zeros(1, 1, 2, 2))
    out = hard_rgb_blend(colors, frags, BlendParams(background_color=(0.0, 1.0, 0.0)))
    expected = torch.tensor([[[[0.1, 0.2, 0.3, 1.0], [0.0, 1.0, 0.0, 0.0]]]])
    torch.testing.assert_close(out, expected)


def test_sigmoid_alpha_blend_hand_computed():
    # Two faces, dists -sigma*ln(3) (prob 3/4) and +sigma*ln(3) (prob 1/4): alpha = 1 - 1/4 * 3/4 = 13/16.
    s = 1e-4
    d = torch.tensor([[[[-s * math.log(3), s * math.log(3), -5.0]]]])
    p2f = torch.tensor([[[[0, 1, -1]]]])
    frags = Frags(p2f, torch.ones_like(d), torch.zeros(1, 1, 1, 3, 3), d)
    out = sigmoid_alpha_blend(torch.ones(1, 1, 1, 3, 3), frags, BlendParams(sigma=s))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 1.0, 1.0, 13 / 16]]]]))


@pytest.mark.parametrize("znear,zfar", [(1.0, 100.0), (0.5, 10.0)])
def test_softmax_rgb_blend_matches_reference(znear, zfar):
    _, frags, _ = _scene(k=4)
    colors = torch.rand(frags.bary_coords.shape, dtype=torch.float64, requires_grad=True)
    dists = frags.dists.clone().requires_grad_(True)
    frags = frags._replace(dists=dists)
    bp = BlendParams(sigma=1e-4, gamma=1e-2, background_color=(0.2, 0.3, 0.4))
    out = softmax_rgb_blend(colors, frags, bp, znear=znear, zfar=zfar)
    ref = _ref_softmax(colors, frags, bp, znear, zfar)
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, dtype=out.dtype)
    for a, b in zip(torch.autograd.grad((out * w).sum(), [colors, dists]),
                    torch.autograd.grad((ref * w).sum(), [colors, dists])):
        torch.testing.assert_close(a, b)


def test_softmax_rgb_blend_hand_computed():
    # One pixel fully inside one face (prob -> 1): rgb -> face colour, alpha -> 1; empty pixel -> background.
    p2f = torch.tensor([[[[0], [-1]]]])
    dists = torch.tensor([[[[-1.0], [-1.0]]]])
    zbuf = torch.tensor([[[[2.0], [-1.0]]]])
    colors = torch.tensor([[[[[0.25, 0.5, 0.75]], [[0.9, 0.9, 0.9]]]]])
    out = softmax_rgb_blend(colors, Frags(p2f, zbuf, torch.zeros(1, 1, 2, 1, 3), dists),
                            BlendParams(background_color=(0.0, 0.0, 0.0)))
    torch.testing.assert_close(out, torch.tensor([[[[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.0, 0.0]]]]))


def test_soft_blend_gradcheck():
    _, frags, _ = _scene(n=1, h=2, w=2, k=3)
    bp = BlendParams(sigma=1e-3, gamma=0.1, background_color=(0.1, 0.2, 0.3))
    colors = torch.rand(frags.bary_coords.shape, dtype=torch.float64, requires_grad=True)
    dists = (frags.dists * 1.0).requires_grad_(True)
    zbuf = frags.zbuf.clone().requires_grad_(True)

    def fn(c, d, z):
        f = frags._replace(dists=d, zbuf=z)
        return torch.cat([softmax_rgb_blend(c, f, bp, 0.5, 20.0), sigmoid_alpha_blend(c, f, bp)], -1)

    assert torch.autograd.gradcheck(fn, (colors, dists, zbuf))


def test_blend_bad_input():
    _, frags, _ = _scene(k=2)
    with pytest.raises(ValueError, match="colors"):
        softmax_rgb_blend(torch.rand(2, 5, 6, 3, 3, dtype=torch.float64), frags)
    with pytest.raises(ValueError, match="colors"):
        hard_rgb_blend(torch.rand(2, 4, 6, 2, 3), frags)
    with pytest.raises(TypeError, match="fragments"):
        sigmoid_alpha_blend(torch.rand(2, 5, 6, 2, 3), object())
    with pytest.raises(TypeError, match="pix_to_face"):
        sigmoid_alpha_blend(torch.rand(2, 5, 6, 2, 3), frags._replace(pix_to_face=frags.pix_to_face.float()))


def test_shade_bad_input():
    meshes, frags, cams = _scene()
    with pytest.raises(ValueError, match="shader"):
        shade(frags, meshes, "toon", cameras=cams)
    with pytest.raises(ValueError, match="cameras"):
        shade(frags, meshes, "hard_phong")
    with pytest.raises(ValueError, match="bary_coords"):
        phong_shading(meshes, frags._replace(bary_coords=frags.bary_coords[..., :2]), PointLights(), cams,
                      Materials(), None)
    with pytest.raises(ValueError, match="batch"):
        shade(frags, meshes, "hard_phong", cameras=cams, lights=PointLights(location=torch.zeros(5, 3)))
    with pytest.raises(TypeError, match="Meshes"):
        phong_shading(object(), frags, PointLights(), cams, Materials(), None)


def test_shader_modules_forward_kwargs_override():
    meshes, frags, cams = _scene()
    shader = HardPhongShader(cameras=cams)
    a = shader(frags, meshes)
    b = shader(frags, meshes, lights=PointLights(location=[[0.0, 0.0, -5.0]]))
    assert a.shape == (2, 5, 6, 4) and not torch.allclose(a, b)
    torch.testing.assert_close(a, shade(frags, meshes, "hard_phong", cameras=cams))
    sil = SoftSilhouetteShader()(frags, meshes)
    torch.testing.assert_close(sil[..., :3], torch.ones(2, 5, 6, 3, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# PyTorch3D parity: ../shared/golden/shading.safetensors (every case), MAE <= 1/255 hard, <= 2e-3 soft
# ------------------------------------------------------------------------------------------------
BLUR = math.log(1.0 / 1e-4 - 1.0) * 1e-4
_VIEW_GREEN = (2.7, 10.0, -150.0)
_LIGHT_222 = ((2.0, 2.0, -2.0),)
GOLDEN_CASES = {
    # case: (mesh, view (dist, elev, azim), lights, materials, (image_size, blur, K), shader, blend)
    "phong_front": ("raw", (2.7, 0.0, 180.0), ("point", ((0.0, 0.0, -3.0),)), {}, (128, 0.0, 1), "hard_phong"),
    "phong_back": ("raw", (2.7, 0.0, 180.0), ("point", ((0.0, 0.0, 1.0),)), {}, (128, 0.0, 1), "hard_phong"),
    "phong_dark": ("raw", (2.7, 0.0, 180.0), ("point", ((0.0, 0.0, 1.0),)),
                   dict(specular_color=[[0.0, 1.0, 0.0]], shininess=10.0, ambient_color=((0.01, 0.01, 0.01),)),
                   (128, 0.0, 1), "hard_phong"),
    "phong_green": ("raw", _VIEW_GREEN, ("point", _LIGHT_222), dict(specular_color=[[0.0, 1.0, 0.0]], shininess=10.0),
                    (128, 0.0, 1), "hard_phong"),
    "phong_red": ("raw", _VIEW_GREEN, ("point", _LIGHT_222), dict(specular_color=[[1.0, 0.0, 0.0]], shininess=20.0),
                  (128, 0.0, 1), "hard_phong"),
    "phong_nospec": ("raw", _VIEW_GREEN, ("point", _LIGHT_222),
                     dict(specular_color=[[0.0, 0.0, 0.0]], shininess=0.0), (128, 0.0, 1), "hard_phong"),
    "gouraud": ("raw_vc_clamped", _VIEW_GREEN, ("point", _LIGHT_222), {}, (128, 0.0, 1), "hard_gouraud"),
    "flat": ("raw", _VIEW_GREEN, ("point", _LIGHT_222), {}, (128, 0.0, 1), "hard_flat"),
    "phong_directional": ("raw", _VIEW_GREEN, ("directional", ((0.0, 1.0, -1.0),)), {}, (128, 0.0, 1),
                          "hard_phong"),
    "soft_silhouette": ("norm", (3.0, 50.0, 0.0), None, {}, (64, BLUR, 100), "soft_silhouette"),
    "soft_phong": ("norm", (3.0, 50.0, 0.0), ("point", _LIGHT_222), {}, (64, BLUR, 50), "soft_phong"),
    "vertex_colors": ("norm_vc", (3.0, 50.0, 0.0), ("point", _LIGHT_222), {}, (128, 0.0, 1), "hard_phong"),
}


@pytest.fixture(scope="module")
def cows():
    from lib3d.data.renders import normalize_mesh
    from lib3d.io import load_objs_as_meshes

    raw = load_objs_as_meshes([book_path("cow_mesh/cow.obj")])
    norm = normalize_mesh(raw)[0]
    v, f = raw.verts_packed(), raw.faces_packed()
    vn = norm.verts_packed()
    return {
        "raw": raw,
        "norm": norm,
        "raw_vc_clamped": Meshes([v], [f], textures=TexturesVertex([(0.5 * v + 0.5).clamp(0, 1)])),
        "norm_vc": Meshes([vn], [f], textures=TexturesVertex([0.5 * vn + 0.5])),
    }


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_golden_shading(case, cows):
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform
    from lib3d.render.mesh_rasterizer import RasterizationSettings
    from lib3d.render.shading import render_mesh

    tensors, cases = load_golden("shading")
    assert case in cases
    expected = golden_case(tensors, case)["image"]
    mesh_key, view, light, mat, (size, blur, k), shader = GOLDEN_CASES[case]
    R, T = look_at_view_transform(*view)
    lights = None
    if light is not None:
        kind, value = light
        lights = PointLights(location=value) if kind == "point" else DirectionalLights(direction=value)
    blend = BlendParams(sigma=1e-4, gamma=1e-4) if shader == "soft_silhouette" else None
    image = render_mesh(cows[mesh_key], FoVPerspectiveCameras(R=R, T=T), lights, Materials(**mat),
                        RasterizationSettings(image_size=size, blur_radius=blur, faces_per_pixel=k), shader=shader,
                        blend_params=blend)
    assert image.shape == expected.shape
    tol = 1.0 / 255 if shader.startswith("hard") else 2e-3
    mae = (image - expected).abs().mean(dim=(0, 1, 2))  # per channel
    assert float(mae.max()) <= tol, f"{case}: per-channel MAE {mae.tolist()}"


# ------------------------------------------------------------------------------------------------
# Soft silhouettes change smoothly as a vertex crosses a pixel centre (and their gradient is right)
# ------------------------------------------------------------------------------------------------
def _soft_silhouette_of_triangle(x: torch.Tensor, size: int = 12, sigma: float = 1e-4) -> torch.Tensor:
    """(size, size) soft silhouette of an NDC triangle whose third vertex is at (x, 0.1) (depth 2)."""
    from lib3d.render.mesh_rasterizer import rasterize_meshes

    z = torch.full((1,), 2.0, dtype=x.dtype)
    v = torch.stack([torch.tensor([-0.6, -0.5, 2.0], dtype=x.dtype), torch.tensor([-0.6, 0.6, 2.0], dtype=x.dtype),
                     torch.cat([x.reshape(1), torch.tensor([0.1], dtype=x.dtype), z])])
    mesh = Meshes([v], [torch.tensor([[0, 1, 2]])])
    blur = math.log(1.0 / 1e-4 - 1.0) * sigma
    frags = rasterize_meshes(mesh, image_size=size, blur_radius=blur, faces_per_pixel=2)
    return shade(frags, mesh, "soft_silhouette", blend_params=BlendParams(sigma=sigma))[0, ..., 3]


def test_soft_silhouette_is_smooth_across_an_edge():
    xs = torch.linspace(0.2, 0.45, 31, dtype=torch.float64)  # sweeps the apex across pixel centres
    sils = torch.stack([_soft_silhouette_of_triangle(x) for x in xs])  # (31, H, W)
    jumps = (sils[1:] - sils[:-1]).abs().amax(dim=(1, 2))
    total = (sils[-1] - sils[0]).abs().amax()
    assert float(total) > 0.9  # some pixel goes from outside to inside ...
    assert float(jumps.max()) < 0.35  # ... without jumping (a hard silhouette jumps by 1)
    area = sils.sum(dim=(1, 2))
    assert bool((area[1:] >= area[:-1] - 1e-9).all())  # growing the triangle grows the silhouette
    # The gradient with respect to the moving vertex matches central finite differences.
    x0 = torch.tensor(0.33, dtype=torch.float64, requires_grad=True)
    w = torch.rand(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((_soft_silhouette_of_triangle(x0) * w).sum(), x0)
    h = 1e-6
    fd = ((_soft_silhouette_of_triangle(x0.detach() + h) * w).sum()
          - (_soft_silhouette_of_triangle(x0.detach() - h) * w).sum()) / (2 * h)
    assert abs(float(grad)) > 1e-3
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shader", ["hard_phong", "soft_phong", "hard_flat", "soft_gouraud"])
def test_shade_packed_texels_match_full_grid(shader):
    """shade() samples textures on occupied slots only; same result as sampling the full (N, H, W, K) grid."""
    from lib3d.structures.textures import TexturesUV

    meshes, frags, cams = _scene(n=2, k=3)
    g = torch.Generator().manual_seed(5)
    if shader != "soft_gouraud":
        tex = TexturesUV(maps=torch.rand(2, 8, 10, 3, generator=g, dtype=torch.float64),
                         faces_uvs=[f for f in meshes.faces_list()],
                         verts_uvs=[torch.rand(7, 2, generator=g, dtype=torch.float64) for _ in range(2)])
        meshes = Meshes(meshes.verts_list(), meshes.faces_list(), textures=tex)
    lights, mats = LIGHTS["point"](2), MATERIALS["batched"](2)
    out = shade(frags, meshes, shader, cameras=cams, lights=lights, materials=mats)
    if shader == "soft_gouraud":
        colors = gouraud_shading(meshes, frags, lights, cams, mats)
    else:
        texels = meshes.textures.sample_textures(frags, meshes.faces_packed())
        fn = phong_shading if "phong" in shader else flat_shading
        colors = fn(meshes, frags, lights, cams, mats, texels)
    if shader.startswith("hard"):
        ref = hard_rgb_blend(colors, frags)
    else:
        ref = softmax_rgb_blend(colors, frags, BlendParams(), znear=1.0, zfar=100.0)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("shader", ["soft_phong", "soft_silhouette", "soft_gouraud"])
def test_soft_shaders_ignore_trailing_empty_slots(shader):
    """shade() drops trailing empty slots before soft blending; the result (and gradient) is unchanged."""
    from lib3d.render.blending import softmax_rgb_blend as smb

    meshes, frags, cams = _scene(n=2, k=3)
    # Nearest-first filling with many trailing empty slots: pad K=3 -> 9.
    order = torch.argsort((frags.pix_to_face < 0).to(torch.int8), dim=-1, stable=True)
    p2f = frags.pix_to_face.gather(-1, order)
    pad = lambda t, v: torch.cat([t, torch.full(t.shape[:3] + (6,) + t.shape[4:], v, dtype=t.dtype)], 3)
    zbuf = torch.where(p2f >= 0, frags.zbuf.gather(-1, order), -1.0)
    dists = torch.where(p2f >= 0, frags.dists.gather(-1, order), -1.0).requires_grad_(True)
    bary = frags.bary_coords.gather(3, order[..., None].expand(-1, -1, -1, -1, 3))
    padded = Frags(pad(p2f, -1), pad(zbuf, -1.0), pad(bary, -1.0), pad(dists, -1.0))
    out = shade(padded, meshes, shader, cameras=cams)
    assert out.shape == (2, 5, 6, 4)
    if shader == "soft_silhouette":
        ref = sigmoid_alpha_blend(torch.ones(2, 5, 6, 9, 3, dtype=torch.float64), padded)
    else:
        colors = (phong_shading(meshes, padded, PointLights(), cams, Materials(),
                                meshes.textures.sample_textures(padded, meshes.faces_packed()))
                  if shader == "soft_phong" else gouraud_shading(meshes, padded, PointLights(), cams, Materials()))
        ref = smb(colors, padded, BlendParams(), znear=1.0, zfar=100.0)
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, dtype=out.dtype)
    (g1,) = torch.autograd.grad((out * w).sum(), dists, retain_graph=True)
    (g2,) = torch.autograd.grad((ref * w).sum(), dists)
    torch.testing.assert_close(g1, g2)
