"""GIRAFFE model: encodings, cameras, boxes, composition, feature volume rendering, neural renderer."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from scipy.spatial.transform import Rotation

from lib3d.synthesis.giraffe import (
    Boxes,
    BoxRanges,
    CameraRanges,
    FeatureField,
    GiraffeGenerator,
    Latents,
    NeuralRenderer,
    blur_121,
    boxes_from_values,
    camera_poses,
    camera_rays,
    composite,
    interpolate_sphere,
    positional_encoding,
    render_feature_image,
    sample_boxes,
    sample_object_existence,
    world_to_box,
    z_rotation,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one torch thread (two spin against each other on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

CARS = {"boxes": BoxRanges(scale_min=(0.2, 0.16, 0.16), scale_max=(0.25, 0.2, 0.2),
                            translation_min=(-0.22, -0.12, 0.0), translation_max=(0.22, 0.12, 0.0)),
            "camera": CameraRanges(range_v=(0.41667, 0.5), fov=10.0)}


def _small_generator(**kw):
    args = {"z_dim": 8, "z_dim_bg": 4, "img_size": 32, "feature_dim": 16, "hidden_size": 16, "n_blocks": 3, "skips": (1,),
                "bg_hidden_size": 8, "bg_n_blocks": 2, "resolution_vol": 8, "n_ray_samples": 12,
                "boxes": BoxRanges(n_boxes=2, scale_min=(0.4, 0.4, 0.4), scale_max=(0.6, 0.6, 0.6))}
    args.update(kw)
    return GiraffeGenerator(**args)


# ---------------------------------------------------------------------------------------------- pieces
def test_positional_encoding_layout():
    x = torch.tensor([[0.25, -0.5, 0.125]])
    out = positional_encoding(x, 3)
    expected = []
    for i in range(3):  # the official layout: per frequency, sin of all coords then cos of all coords
        expected += [math.sin(2 ** i * math.pi * v) for v in x[0].tolist()]
        expected += [math.cos(2 ** i * math.pi * v) for v in x[0].tolist()]
    assert out.shape == (1, 18)
    torch.testing.assert_close(out[0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_z_rotation_matches_scipy():
    v = torch.tensor([0.0, 0.1, 0.37, -0.8], dtype=torch.float64)
    ref = Rotation.from_euler("z", (2 * np.pi * v).numpy()[:, None]).as_matrix()
    torch.testing.assert_close(z_rotation(v), torch.from_numpy(ref))


def test_camera_poses_look_at_origin_z_up():
    u = torch.tensor([0.0, 0.3, 0.77])
    v = torch.tensor([0.25, 0.5, 0.41])
    radius = torch.tensor([2.732, 1.0, 3.0])
    pose = camera_poses(u, v, radius)
    loc = pose[:, :3, 3]
    torch.testing.assert_close(loc.norm(dim=-1), radius)
    # v = 0.25: polar angle 60 degrees, so the height is r cos(60) = r / 2
    torch.testing.assert_close(loc[0, 2], torch.tensor(2.732 / 2), atol=1e-5, rtol=0)
    rot = pose[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(3, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3))
    torch.testing.assert_close(-rot[:, :, 2] * radius[:, None], -loc, atol=1e-5, rtol=0)  # -z looks at 0
    torch.testing.assert_close(rot[:, 2, 0], torch.zeros(3), atol=1e-6, rtol=0)  # x axis horizontal


def test_camera_rays_centre_and_corner():
    pose = camera_poses(torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([2.0]))
    origins, dirs = camera_rays(pose, fov=60.0, resolution=3)
    assert origins.shape == dirs.shape == (1, 9, 3)
    centre = dirs[0, 4]
    torch.testing.assert_close(centre, -pose[0, :3, 2])  # view depth 1 along -z
    # pixel (row 0, col 2): x = +1, y = +1 on the image plane, tan(fov / 2) = 1 / focal
    cam = dirs[0, 2] @ pose[0, :3, :3]
    t = math.tan(math.radians(30))
    torch.testing.assert_close(cam, torch.tensor([t, t, -1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(origins[0], pose[0, :3, 3].expand(9, 3))


def test_world_to_box_hand_case():
    boxes = Boxes(scale=torch.tensor([[[0.5, 0.5, 0.25]]]), translation=torch.tensor([[[1.0, 0.0, 0.0]]]),
                  rotation=z_rotation(torch.tensor([[0.25]])))  # 90 degrees: (x, y) -> (-y, x)
    p = torch.tensor([[[1.0, 0.5, 0.25], [1.5, 0.0, 0.0]]])
    out = world_to_box(p, boxes, 0)
    torch.testing.assert_close(out, torch.tensor([[[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]), atol=1e-6, rtol=0)


def test_boxes_from_values_ranges():
    r = CARS["boxes"]
    b = boxes_from_values(r, torch.tensor([[[1.0, 0.0, 0.0]]]), torch.tensor([[[0.0, 0.5, 1.0]]]),
                          torch.tensor([[0.5]]))
    torch.testing.assert_close(b.scale, torch.tensor([[[0.25, 0.2, 0.2]]]))  # fix_scale_ratio: first value
    torch.testing.assert_close(b.translation, torch.tensor([[[-0.22, 0.0, 0.0]]]))
    torch.testing.assert_close(b.rotation[0, 0], z_rotation(torch.tensor(0.5)))
    plane = BoxRanges(object_on_plane=True, z_level_plane=0.1665, translation_max=(0.7, 0.7, 1.0))
    b = sample_boxes(5, plane, torch.Generator().manual_seed(0))
    assert torch.all(b.translation[..., 2] == 0.1665)


def test_object_existence_counts():
    g = torch.Generator().manual_seed(0)
    e = sample_object_existence(4000, 5, (0.1, 0.2, 0.3, 0.4), min_count=2, generator=g)
    counts = e.sum(1)
    assert counts.min() >= 2 and counts.max() <= 5
    freq = torch.bincount(counts, minlength=6)[2:].float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="count_probs"):
        sample_object_existence(3, 2, (0.5, 0.5, 0.1), min_count=1)


def test_interpolate_sphere_endpoints():
    z1, z2 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(interpolate_sphere(z1, z2, 0.0), z1)
    torch.testing.assert_close(interpolate_sphere(z1, z2, 1.0), z2)


def test_blur_matches_scipy_mirror():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    ref = np.stack([[correlate(x[n, c].numpy(), k, mode="mirror") for c in range(3)] for n in range(2)])
    torch.testing.assert_close(blur_121(x), torch.from_numpy(ref))


# ------------------------------------------------------------------------------------------ composition
def test_composite_hand_case():
    sig = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # 2 fields, 2 samples
    feat = torch.tensor([[[4.0, 0.0], [5.0, 5.0]], [[8.0, 2.0], [7.0, 7.0]]])
    s, f = composite(sig, feat)
    torch.testing.assert_close(s, torch.tensor([4.0, 0.0]))
    # (1 * [4, 0] + 3 * [8, 2]) / 4 = [7, 1.5]; sigma 0 everywhere: 0 (denominator 1e-4)
    torch.testing.assert_close(f, torch.tensor([[7.0, 1.5], [0.0, 0.0]]))


def test_composite_gradcheck():
    sig = (torch.rand(3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    feat = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: composite(a, b), (sig, feat))


def test_composite_checks_shapes():
    with pytest.raises(ValueError, match="features"):
        composite(torch.rand(2, 3), torch.rand(2, 4, 5))


# ---------------------------------------------------------------------------------------------- fields
def test_feature_field_shapes_and_official_layer_names():
    f = FeatureField(z_dim=256)
    names = {k for k, _ in f.named_parameters()}
    assert {"fc_in.weight", "fc_z.weight", "blocks.6.weight", "fc_z_skips.0.weight", "fc_p_skips.0.weight",
            "sigma_out.weight", "fc_z_view.weight", "feat_view.weight", "fc_view.weight", "feat_out.weight"} <= names
    feat, sigma = f(torch.rand(2, 7, 3), torch.randn(2, 7, 3), torch.randn(2, 256), torch.randn(2, 256))
    assert feat.shape == (2, 7, 128) and sigma.shape == (2, 7)
    with pytest.raises(ValueError, match="z_shape"):
        f(torch.rand(2, 7, 3), torch.randn(2, 7, 3), torch.randn(2, 64), torch.randn(2, 256))


def _set_constant_field(field, sigma, feat):
    """Zero every weight, so the field is sigma (bias of sigma_out) and feat (bias of feat_out) everywhere."""
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
        field.sigma_out.bias.fill_(sigma)
        field.feat_out.bias.copy_(torch.as_tensor(feat, dtype=torch.float32))


def test_render_hand_computed_constant_fields():
    g = _small_generator(boxes=BoxRanges(n_boxes=1))
    c = 16
    f_bg, f_obj = torch.zeros(c), torch.zeros(c)
    f_bg[0], f_obj[1] = 1.0, 1.0
    f_bg64, f_obj64 = f_bg.double(), f_obj.double()
    _set_constant_field(g.background_field, 0.05, f_bg)
    _set_constant_field(g.object_field, 2.0, f_obj)
    pose = camera_poses(torch.tensor([0.0]), torch.tensor([0.25]), torch.tensor([2.732]))
    boxes = Boxes(torch.full((1, 1, 3), 0.5), torch.zeros(1, 1, 3), torch.eye(3).expand(1, 1, 3, 3))
    lat = g.sample_latents(1, torch.Generator().manual_seed(0))
    out = render_feature_image(g.object_field, g.background_field, lat, pose, boxes, torch.eye(3)[None],
                               fov=g.camera.fov, resolution=3, n_samples=16, return_alpha=True)
    feats, alpha = out.features[0], out.alpha[0, 0]  # (C, 3, 3), (3, 3)
    # reference for the centre ray, by explicit sums
    o, d = camera_rays(pose, g.camera.fov, 3)
    o, d = o[0, 4].double(), d[0, 4].double()
    t = torch.linspace(0.5, 6.0, 16, dtype=torch.float64)
    pts = o + t[:, None] * d
    inside = ((pts / 0.5).abs() <= 1.1).all(-1).double()
    assert 0 < inside.sum() < 16
    sig = 0.05 + 2.0 * inside
    delta = torch.cat((t[1:] - t[:-1], torch.tensor([1e10], dtype=torch.float64))) * d.norm()
    a = 1 - torch.exp(-sig * delta)
    trans = torch.cumprod(torch.cat((torch.ones(1, dtype=torch.float64), 1 - a[:-1])), 0)
    w = trans * a
    expected = (w * 0.05 / sig).sum() * f_bg64 + (w * 2.0 * inside / sig).sum() * f_obj64
    torch.testing.assert_close(feats[:, 1, 1].double(), expected, atol=1e-5, rtol=1e-5)
    a_obj = 1 - torch.exp(-2.0 * inside * torch.cat((t[1:] - t[:-1], torch.zeros(1, dtype=torch.float64))) * d.norm())
    torch.testing.assert_close(alpha[1, 1].double(), 1 - torch.prod(1 - a_obj), atol=1e-5, rtol=1e-5)
    # the corner rays miss the box: background only, all weight (infinite last interval)
    torch.testing.assert_close(feats[:, 0, 0], f_bg, atol=1e-5, rtol=0)
    assert float(alpha[0, 0].detach()) == 0.0


@pytest.mark.parametrize("training", [False, True])
def test_sparse_matches_dense_forward_and_backward(training):
    torch.manual_seed(0)
    gen = _small_generator(object_count_probs=(0.5, 0.5))
    g = torch.Generator().manual_seed(1)
    n = 3
    lat, cams, boxes = gen.sample_latents(n, g), gen.sample_cameras(n, g), gen.sample_boxes(n, g)
    bg = gen.sample_bg_rotation(n, g)
    existence = torch.tensor([[True, True], [True, False], [False, True]])
    outs = []
    for sparse in (True, False):
        gen.zero_grad()
        kw = {"fov": gen.camera.fov, "resolution": 8, "n_samples": 12, "existence": existence, "return_alpha": True,
                  "sparse": sparse, "training": False}
        r = render_feature_image(gen.object_field, gen.background_field, lat, cams, boxes, bg, **kw)
        (r.features.square().sum() + r.alpha.sum()).backward()
        outs.append((r, {k: p.grad.clone() for k, p in gen.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a.features, b.features, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.alpha, b.alpha)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-6, rtol=1e-4, msg=k)
    assert a.alpha[1, 1].abs().max() == 0 and a.alpha[2, 0].abs().max() == 0  # absent objects


def test_training_mode_is_random_and_seeded():
    gen = _small_generator()
    a = gen.sample(2, torch.Generator().manual_seed(3))
    b = gen.sample(2, torch.Generator().manual_seed(3))
    c = gen.sample(2, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (2, 3, 32, 32) and float(a.detach().min()) >= 0 and float(a.detach().max()) <= 1


def test_generator_gradients_reach_every_parameter():
    gen = _small_generator()
    gen.sample(2, torch.Generator().manual_seed(0)).mean().backward()
    missing = [k for k, p in gen.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_render_checks_inputs():
    gen = _small_generator()
    g = torch.Generator().manual_seed(0)
    lat, cams, boxes = gen.sample_latents(2, g), gen.sample_cameras(2, g), gen.sample_boxes(2, g)
    with pytest.raises(ValueError, match="N=1"):
        gen(lat, cams[:1], boxes, torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="existence"):
        gen.render_features(lat, cams, boxes, torch.eye(3).expand(2, 3, 3), existence=torch.ones(2, 3, dtype=bool))


# ------------------------------------------------------------------------------------ neural renderer
@pytest.mark.parametrize("img_size,n_feat", [(32, 16), (64, 128), (256, 256)])
def test_neural_renderer_shapes(img_size, n_feat):
    nr = NeuralRenderer(n_feat=n_feat, input_dim=n_feat, img_size=img_size)
    x = torch.randn(1, n_feat, 16, 16)
    with torch.no_grad():
        y = nr(x)
    assert y.shape == (1, 3, img_size, img_size) and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError):
        NeuralRenderer(img_size=48)


def test_neural_renderer_hand_case_rgb_skip():
    # all convs zero except conv_rgb[0] (bias 1 on red): rgb = sigmoid(upsampled constant 1) on red
    nr = NeuralRenderer(n_feat=8, input_dim=8, img_size=32, min_feat=4)
    with torch.no_grad():
        for p in nr.parameters():
            p.zero_()
        nr.conv_rgb[0].bias[0] = 1.0
    y = nr(torch.randn(2, 8, 16, 16))
    torch.testing.assert_close(y[:, 0], torch.full((2, 32, 32), torch.sigmoid(torch.tensor(1.0)).item()))
    torch.testing.assert_close(y[:, 1:], torch.full((2, 2, 32, 32), 0.5))


def test_paper_generator_parameter_count():
    # the official cars-64 generator has 411,595 parameters (../shared/anchors/giraffe.json: G_params)
    assert sum(p.numel() for p in GiraffeGenerator(**CARS).parameters()) == 411595


def test_latents_are_typed():
    gen = _small_generator()
    lat = gen.sample_latents(2, torch.Generator().manual_seed(0))
    assert isinstance(lat, Latents) and lat.shape_obj.shape == (2, 2, 8) and lat.app_bg.shape == (2, 4)
