"""SynSin model: geometry (lifting, reprojection, splatting), networks, losses and official checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch

from lib3d.render import pixel_centers_ndc
from lib3d.synthesis.synsin import (
    ResNetBlock,
    SynSinDiscriminator,
    SynSinGenerator,
    SynSinModelConfig,
    SynSinUNet,
    alphas_from_dists,
    config_from_official_opts,
    depth_from_logits,
    discriminator_loss,
    feature_matching_loss,
    generator_hinge_loss,
    lift_pixels,
    load_official_checkpoint,
    official_intrinsics,
    official_state_dict_to_lib3d,
    pixel_grid,
    project_to_ndc,
    reproject_points,
    splat_features,
    synsin_pose_to_opencv,
    transform_points,
)

SMALL = SynSinModelConfig(image_size=32, ngf=8, depth_filters=4, depth_levels=4, encoder_blocks=2,
                          radius_px=1.5, points_per_pixel=8, min_z=1.0, max_z=4.0)


def _eye(n, dtype=torch.float32):
    return torch.eye(4, dtype=dtype).expand(n, 4, 4).clone()


def test_pixel_grid_conventions():
    g = pixel_grid(2, 4)
    assert torch.allclose(g[:4, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(g[::4, 1], torch.tensor([0.25, 0.75]))
    c = pixel_grid(2, 4, align_corners=True)
    assert torch.allclose(c[:4, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_identity_pose_returns_source_pixel_centres():
    H, W = 6, 8
    depth = torch.rand(2, 1, H, W) * 3 + 1
    K = torch.tensor([[0.7, 0.0, 0.45], [0.0, 0.9, 0.55], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    pts = reproject_points(depth, K, _eye(2))
    xs, ys = pixel_centers_ndc((H, W))
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    assert torch.allclose(pts[..., 0], gx.reshape(1, -1).expand(2, -1), atol=1e-5)
    assert torch.allclose(pts[..., 1], gy.reshape(1, -1).expand(2, -1), atol=1e-5)
    assert torch.allclose(pts[..., 2], depth.reshape(2, -1))


def test_lift_hand_computed():
    # Pixel (row 0, col 1) of a 2x2 image: u = 0.75, v = 0.25; K fx=fy=0.5, c=0.5, depth 2.
    depth = torch.full((1, 1, 2, 2), 2.0)
    p = lift_pixels(depth, official_intrinsics())
    assert torch.allclose(p[0, 1], torch.tensor([2 * 0.25 / 0.5, 2 * -0.25 / 0.5, 2.0]))


def test_translation_moves_by_expected_disparity():
    # fx = 0.5 (normalised), W = 32, depth 2, camera points shifted by +0.25 in x:
    # du = fx * 0.25 / 2 = 0.0625 -> 2 pixels to the right, NDC x decreases by 2 * 0.0625.
    H = W = 32
    depth = torch.full((1, 1, H, W), 2.0)
    K = official_intrinsics()
    RT = _eye(1)
    RT[0, 0, 3] = 0.25
    p0 = reproject_points(depth, K, _eye(1))
    p1 = reproject_points(depth, K, RT)
    assert torch.allclose(p1[..., 0] - p0[..., 0], torch.full_like(p0[..., 0], -0.125), atol=1e-6)
    assert torch.allclose(p1[..., 1:], p0[..., 1:])
    # The splatted image is the source moved right by 2 pixels (columns 2.. see columns ..-2).
    img = torch.rand(1, 3, H, W)
    out = splat_features(p1, img.reshape(1, 3, -1), (H, W), radius_px=0.4, points_per_pixel=1,
                         accumulation="wsumnorm")
    assert torch.allclose(out[..., 2:], img[..., :-2], atol=1e-6)
    assert torch.all(out[..., :2] == 0)


def test_splat_identity_small_radius_returns_source():
    H, W = 8, 8
    img = torch.rand(2, 5, H, W)
    pts = reproject_points(torch.rand(2, 1, H, W) + 1, official_intrinsics(2), _eye(2))
    out = splat_features(pts, img.reshape(2, 5, -1), (H, W), radius_px=0.45, points_per_pixel=4)
    a = alphas_from_dists(torch.zeros(()), 1.0)  # the point sits at the pixel centre: max alpha
    assert torch.allclose(out, img * a, atol=1e-6)


def test_alphas_formula():
    r = 0.1
    d = torch.tensor([0.0, 0.25 * r * r, r * r, 2 * r * r])
    a = alphas_from_dists(d, r, tau=2.0)
    exp = torch.tensor([(1 - 1e-3 ** 0.5) ** 2, 0.25, 0.0, 0.0])
    assert torch.allclose(a, exp, atol=1e-6)


def test_project_drops_points_behind_camera():
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.001]]])
    out = project_to_ndc(pts, official_intrinsics(), (4, 4))
    assert out[0, 0, 2] == 1.0 and out[0, 1, 2] < 0 and out[0, 2, 2] < 0
    assert torch.isfinite(out).all()


def test_splat_matches_brute_force_alpha_composite():
    torch.manual_seed(1)
    H, W, P, C, K = 6, 7, 30, 3, 5
    pts = torch.rand(1, P, 3) * 2 - 1
    pts[..., 2] = torch.rand(1, P) + 0.5
    f = torch.rand(1, C, P)
    out = splat_features(pts, f, (H, W), radius_px=1.5, points_per_pixel=K)
    # Brute force: every pixel against every point, sorted by z, front-to-back compositing.
    r = 2 * 1.5 / min(H, W)
    xs, ys = pixel_centers_ndc((H, W))
    ref = torch.zeros(C, H, W)
    for i in range(H):
        for j in range(W):
            d2 = (pts[0, :, 0] - xs[j]) ** 2 + (pts[0, :, 1] - ys[i]) ** 2
            hit = torch.nonzero(d2 < r * r).squeeze(1)
            hit = hit[torch.argsort(pts[0, hit, 2], stable=True)][:K]
            T = 1.0
            for p in hit.tolist():
                a = float(alphas_from_dists(d2[p], r))
                ref[:, i, j] += a * T * f[0, :, p]
                T *= 1 - a
    assert torch.allclose(out[0], ref, atol=1e-5)


def test_splat_gradcheck_float64():
    torch.manual_seed(2)
    P = 6
    pts = torch.rand(1, P, 3, dtype=torch.float64) * 1.2 - 0.6
    pts[..., 2] = torch.rand(1, P, dtype=torch.float64) + 0.5
    f = torch.rand(1, 2, P, dtype=torch.float64)
    pts.requires_grad_(True)
    f.requires_grad_(True)
    fn = lambda p, x: splat_features(p, x, (4, 4), radius_px=1.2, points_per_pixel=3, tau=2.0)
    assert torch.autograd.gradcheck(fn, (pts, f), eps=1e-6, atol=1e-5)


def test_gradients_reach_depth_and_features():
    torch.manual_seed(0)
    depth = (torch.rand(1, 1, 8, 8) + 1).requires_grad_(True)
    feats = torch.rand(1, 4, 8, 8, requires_grad=True)
    RT = _eye(1)
    RT[0, :3, :3] = torch.tensor([[0.995, 0.0, 0.0998], [0.0, 1.0, 0.0], [-0.0998, 0.0, 0.995]])
    RT[0, 0, 3] = 0.1
    pts = reproject_points(depth, official_intrinsics(), RT)
    out = splat_features(pts, feats.reshape(1, 4, -1), (8, 8), radius_px=2.0, points_per_pixel=8)
    (out * torch.rand_like(out)).sum().backward()
    assert depth.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0


def test_transform_points_matches_homogeneous():
    torch.manual_seed(3)
    RT = _eye(2)
    RT[:, :3, :3] = torch.linalg.qr(torch.randn(2, 3, 3)).Q
    RT[:, :3, 3] = torch.randn(2, 3)
    p = torch.randn(2, 5, 3)
    h = torch.cat((p, torch.ones(2, 5, 1)), -1) @ RT.transpose(1, 2)
    assert torch.allclose(transform_points(p, RT), h[..., :3], atol=1e-6)


def test_synsin_pose_to_opencv():
    # An OpenGL +z (backward) translation is an OpenCV -z translation; y rotations flip sign.
    RT = _eye(1)
    RT[0, 2, 3] = 0.3
    assert torch.allclose(synsin_pose_to_opencv(RT)[0, :3, 3], torch.tensor([0.0, 0.0, -0.3]))
    assert torch.allclose(synsin_pose_to_opencv(synsin_pose_to_opencv(RT)), RT)


def test_depth_from_logits():
    x = torch.tensor([0.0, 100.0, -100.0]).view(1, 1, 1, 3)
    assert torch.allclose(depth_from_logits(x, 1.0, 5.0).flatten(), torch.tensor([3.0, 5.0, 1.0]))
    assert torch.allclose(depth_from_logits(x, 1, 5, inverse=True).flatten(),
                          torch.tensor([1 / 5.01, 1 / 10.01, 1 / 0.01]))


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="K"):
        lift_pixels(torch.rand(1, 1, 4, 4), torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="accumulation"):
        splat_features(torch.rand(1, 4, 3), torch.rand(1, 2, 4), (2, 2), accumulation="max")
    with pytest.raises(ValueError, match="divisible"):
        SynSinGenerator(SynSinModelConfig(image_size=48, depth_levels=5))
    g = SynSinGenerator(SMALL)
    with pytest.raises(ValueError, match="image"):
        g(torch.rand(1, 4, 32, 32), official_intrinsics(), _eye(1))


def test_unet_shapes_and_names():
    u = SynSinUNet(3, 1, 4, levels=4)
    assert u(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)
    names = {k.split(".")[0] for k in u.state_dict()}
    assert names == {"conv1", "conv2", "conv3", "conv4", "dconv1", "dconv2", "dconv3", "dconv4",
                     "batch_norm", "batch_norm2_0", "batch_norm2_1", "batch_norm4_0", "batch_norm4_1"}


def test_resnet_block_resampling():
    x = torch.rand(2, 4, 8, 8)
    assert ResNetBlock(4, 6, "down")(x).shape == (2, 6, 4, 4)
    assert ResNetBlock(4, 6, "up")(x).shape == (2, 6, 16, 16)
    assert ResNetBlock(4, 4)(x).shape == (2, 4, 8, 8)
    assert ResNetBlock(4, 4).ch_b is None


def test_generator_forward_backward_and_noise_generator():
    torch.manual_seed(0)
    g = SynSinGenerator(SMALL)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    RT = _eye(2)
    RT[:, 0, 3] = 0.1
    out = g(x, official_intrinsics(2), RT, generator=torch.Generator().manual_seed(5))
    assert out.image.shape == (2, 3, 32, 32) and out.depth.shape == (2, 1, 32, 32)
    assert out.features.shape == (2, 64, 32, 32)
    assert out.image.abs().max() <= 1 and out.depth.min() >= 1 and out.depth.max() <= 4
    out.image.sum().backward()
    for name in ("depth_net.conv1.weight_orig", "feature_net.gblocks.0.ch_a.2.weight_orig",
                 "refine_net.eblocks.7.ch_a.5.weight_orig"):
        assert dict(g.named_parameters())[name].grad.abs().sum() > 0, name
    g.eval()
    a = g(x, official_intrinsics(2), RT, generator=torch.Generator().manual_seed(5)).image
    b = g(x, official_intrinsics(2), RT, generator=torch.Generator().manual_seed(5)).image
    assert torch.equal(a, b)


def test_gan_losses_hand_computed():
    fake = [[torch.zeros(1, 2, 2, 2), torch.full((1, 1, 2, 2), 0.5)]]
    real = [[torch.ones(1, 2, 2, 2), torch.full((1, 1, 2, 2), 2.0)]]
    assert torch.isclose(discriminator_loss(fake, real), torch.tensor(1.5))  # relu(1.5) + relu(-1)
    assert torch.isclose(generator_hinge_loss(fake), torch.tensor(-0.5))
    assert torch.isclose(feature_matching_loss(fake, real, weight=10.0), torch.tensor(10.0))
    d = SynSinDiscriminator(ndf=8)
    outs = d(torch.rand(2, 3, 32, 32))
    assert len(outs) == 2 and len(outs[0]) == 5 and outs[1][-1].shape[0] == 2


# ---------------------------------------------------------------------------------------------------------
# Official checkpoints: the key list below is written from the official code (models/*.py), independently
# of lib3d's modules, for the RealEstate10K model (train.sh: resnet_256W8UpDown64, sync:spectral_batch).
# ---------------------------------------------------------------------------------------------------------


def _sn(shape):
    out, rest = shape[0], 1
    for s in shape[1:]:
        rest *= s
    return {"weight_orig": shape, "weight_u": (out,), "weight_v": (rest,)}


def _official_keys(ngf=64, W=256):
    keys = {}
    g = "model.module."

    def block(prefix, cin, cout, has_b):
        for idx, c in ((0, cin), (3, cout)):
            for lin in ("gain", "bias"):
                for k, s in _sn((c, 20)).items():
                    keys[f"{prefix}.ch_a.{idx}.{lin}.{k}"] = s
            keys[f"{prefix}.ch_a.{idx}.bn.stored_mean"] = (c,)
            keys[f"{prefix}.ch_a.{idx}.bn.stored_var"] = (c,)
            keys[f"{prefix}.ch_a.{idx}.bn.accumulation_counter"] = (1,)
        for idx, ci in ((2, cin), (5, cout)):
            for k, s in _sn((cout, ci, 3, 3)).items():
                keys[f"{prefix}.ch_a.{idx}.{k}"] = s
            keys[f"{prefix}.ch_a.{idx}.bias"] = (cout,)
        if has_b:
            for k, s in _sn((cout, cin, 1, 1)).items():
                keys[f"{prefix}.ch_b.0.{k}"] = s
            keys[f"{prefix}.ch_b.0.bias"] = (cout,)

    enc = [3, ngf // 2, ngf // 2, ngf // 2, ngf, ngf, ngf, ngf, 64]
    for i in range(8):
        block(f"{g}encoder.gblocks.{i}", enc[i], enc[i + 1], enc[i] != enc[i + 1])
    dec = [64, ngf, ngf * 2, ngf * 4, ngf * 4, ngf * 2, ngf * 2, ngf * 2, 3]
    ups = [False, "Down", "Down", False, "Up", "Up", False, False]
    for i in range(8):
        block(f"{g}projector.eblocks.{i}", dec[i], dec[i + 1], bool(ups[i]) or dec[i] != dec[i + 1])
    f = 32
    convs = {"conv1": (f, 3, 4, 4), "conv2": (2 * f, f, 4, 4), "conv3": (4 * f, 2 * f, 4, 4),
             "conv4": (8 * f, 4 * f, 4, 4), "conv5": (8 * f, 8 * f, 4, 4), "conv6": (8 * f, 8 * f, 4, 4),
             "conv7": (8 * f, 8 * f, 4, 4), "conv8": (8 * f, 8 * f, 4, 4),
             "dconv1": (8 * f, 8 * f, 3, 3), "dconv2": (8 * f, 16 * f, 3, 3), "dconv3": (8 * f, 16 * f, 3, 3),
             "dconv4": (8 * f, 16 * f, 3, 3), "dconv5": (4 * f, 16 * f, 3, 3), "dconv6": (2 * f, 8 * f, 3, 3),
             "dconv7": (f, 4 * f, 3, 3), "dconv8": (1, 2 * f, 3, 3)}
    for name, s in convs.items():
        for k, v in _sn(s).items():
            keys[f"{g}pts_regressor.{name}.{k}"] = v
        keys[f"{g}pts_regressor.{name}.bias"] = (s[0],)
    bns = {"batch_norm": f, "batch_norm2_0": 2 * f, "batch_norm2_1": 2 * f, "batch_norm4_0": 4 * f,
           "batch_norm4_1": 4 * f, **{f"batch_norm8_{i}": 8 * f for i in range(8)}}
    for name, c in bns.items():
        for k in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{g}pts_regressor.{name}.{k}"] = (c,)
        keys[f"{g}pts_regressor.{name}.num_batches_tracked"] = ()
    keys[f"{g}pts_transformer.xyzs"] = (1, 4, W * W)
    keys[f"{g}pts_transformer.splatter.default_feature"] = (1, 64, 1)
    keys[f"{g}min_z"] = (1,)
    keys[f"{g}max_z"] = (1,)
    keys[f"{g}discretized_zs"] = (64,)
    vgg = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
           14: (256, 256), 16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
           28: (512, 512)}
    for idx, (o, i) in vgg.items():
        sl = 1 if idx < 2 else 2 if idx < 7 else 3 if idx < 12 else 4 if idx < 21 else 5
        keys[f"{g}loss_function.losses.1.model.slice{sl}.{idx}.weight"] = (o, i, 3, 3)
        keys[f"{g}loss_function.losses.1.model.slice{sl}.{idx}.bias"] = (o,)
    d = "netD.netD.netD."
    for s in range(2):
        p = f"{d}discriminator_{s}."
        keys[p + "model0.0.weight"] = (64, 3, 4, 4)
        keys[p + "model0.0.bias"] = (64,)
        for n, (o, i) in enumerate(((128, 64), (256, 128), (512, 256)), start=1):
            for k, v in _sn((o, i, 4, 4)).items():
                keys[p + f"model{n}.0.0.{k}"] = v
        keys[p + "model4.0.weight"] = (1, 512, 4, 4)
        keys[p + "model4.0.bias"] = (1,)
    return keys


def _official_opts(**kw):
    o = {"model_type": "zbuffer_pts", "refine_model_type": "resnet_256W8UpDown64", "norm_G": "sync:spectral_batch",
         "depth_predictor_type": "unet", "use_rgb_features": False, "W": 256, "ngf": 64, "min_z": 1.0,
         "max_z": 100.0, "use_inverse_depth": False, "radius": 4.0, "pp_pixel": 128, "tau": 1.0, "rad_pow": 2,
         "accumulation": "alphacomposite", "ndf": 64, "gpu_ids": "0,1"}
    o.update(kw)
    return argparse.Namespace(**o)


def _official_state_dict(**kw):
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randn(s, generator=g) if s else torch.tensor(3)) for k, s in _official_keys(**kw).items()}


def test_official_state_dict_loads_strictly():
    sd = _official_state_dict()
    parts = official_state_dict_to_lib3d(sd)
    cfg = config_from_official_opts(_official_opts())
    assert cfg.norm == "spectral_batch" and cfg.accumulation == "alphacomposite" and cfg.max_z == 100.0
    gen = SynSinGenerator(cfg)
    assert set(gen.state_dict()) == set(parts["generator"])
    gen.load_state_dict(parts["generator"], strict=True)
    assert torch.equal(gen.state_dict()["depth_net.batch_norm8_7.running_var"],
                       sd["model.module.pts_regressor.batch_norm8_7.running_var"])
    disc = SynSinDiscriminator()
    disc.load_state_dict(parts["discriminator"], strict=True)
    assert len(parts["vgg"]) == 26
    from lib3d.nn.vgg import VGGFeatures
    from lib3d.nn.weights import strict_load

    strict_load(VGGFeatures(19, taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                            normalize_input=False), parts["vgg"], "SynSin's VGG19")


def test_official_checkpoint_file_roundtrip_and_errors(tmp_path):
    sd = _official_state_dict()
    path = tmp_path / "synsin.pth"
    torch.save({"state_dict": sd, "opts": _official_opts(), "epoch": 3}, path)
    gen, disc, cfg = load_official_checkpoint(path, load_discriminator=True)
    assert not gen.training and disc is not None and cfg.image_size == 256
    # Another architecture: a checkpoint of ngf=32 read with the options of ngf=64 names the shapes.
    small = tmp_path / "other.pth"
    torch.save({"state_dict": _official_state_dict(ngf=32), "opts": _official_opts()}, small)
    with pytest.raises(ValueError, match="shape mismatch.*feature_net"):
        load_official_checkpoint(small)
    with pytest.raises(ValueError, match="refine_model_type"):
        config_from_official_opts(_official_opts(refine_model_type="unet"))
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_official_checkpoint(bad)


class _Evil:
    pass


def test_official_checkpoint_rejects_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "opts": _official_opts(), "x": _Evil()}, path)
    with pytest.raises(ValueError, match="not a readable"):
        load_official_checkpoint(path)
