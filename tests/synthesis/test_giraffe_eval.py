"""GIRAFFE evaluation and training pieces: Spearman, centroids, controllability on a hand-built scene, the
training iteration (R1 against autograd, 2 workers x B/2 = 1 x B), the domain feature extractor."""

import copy

import pytest
import torch
from scipy.stats import spearmanr

from lib3d.nn import DCGANDiscriminator, ema_copy
from lib3d.synthesis.giraffe import BoxRanges, CameraRanges, GiraffeGenerator
from lib3d.synthesis.giraffe_eval import (
    DomainFeatureNet,
    controllability,
    mask_centroid,
    spearman,
    train_domain_features,
)
from lib3d.synthesis.giraffe_train import discriminator_losses, generator_loss, train_iteration


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one torch thread (two spin against each other on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (5, 9), generator=g).double()
    y = torch.randn(5, 9, generator=g, dtype=torch.float64)
    ours = spearman(x, y)
    ref = torch.tensor([spearmanr(a, b).statistic for a, b in zip(x.numpy(), y.numpy())])
    torch.testing.assert_close(ours, ref.to(ours.dtype))


def test_mask_centroid_hand_case():
    a = torch.zeros(2, 4, 5)
    a[0, 1, 3] = 1.0
    a[1, 0, 0], a[1, 2, 4] = 1.0, 3.0  # weighted: row (0 + 6) / 4, col (0 + 12) / 4
    torch.testing.assert_close(mask_centroid(a), torch.tensor([[1.0, 3.0], [1.5, 3.0]]))


def _hand_built_generator():
    """Constant opaque object in its box; a background whose colour follows its appearance code; a neural
    renderer that maps feature channels 0..2 to RGB."""
    g = GiraffeGenerator(z_dim=4, z_dim_bg=4, img_size=32, feature_dim=8, hidden_size=8, n_blocks=2, skips=(),
                         bg_hidden_size=8, bg_n_blocks=2, resolution_vol=16, n_ray_samples=32,
                         boxes=BoxRanges(n_boxes=1, scale_min=(0.3, 0.3, 0.3), scale_max=(0.3, 0.3, 0.3)),
                         camera=CameraRanges(range_v=(0.3, 0.3)))
    with torch.no_grad():
        for p in g.parameters():
            p.zero_()
        g.object_field.sigma_out.bias.fill_(20.0)
        g.object_field.feat_out.bias[:3] = torch.tensor([3.0, -3.0, -3.0])  # red object
        g.background_field.sigma_out.bias.fill_(0.02)  # faint in front of the object, opaque at infinity
        g.background_field.fc_z_view.weight[:3, :3] = torch.eye(3) * 2  # hidden = relu(2 z_app[:3])
        g.background_field.fc_z_view.bias[:3] = 1.0
        g.background_field.feat_out.weight[:3, :3] = torch.eye(3) * 2
        g.neural_renderer.conv_rgb[0].weight[:, :3, 1, 1] = torch.eye(3)
    return g


def test_controllability_on_hand_built_scene():
    c = controllability(_hand_built_generator(), n_scenes=6, n_steps=6, rng=torch.Generator().manual_seed(0))
    assert c["translation_spearman"] == pytest.approx(1.0) and c["translation_monotone_fraction"] == 1.0
    assert c["app_change_iou"] == pytest.approx(1.0)  # density does not depend on the appearance code
    assert c["bg_change_in_background"] > 0.05
    # opacity-weighted: the soft mask edges (bilinear upsampling, blur) let some background through
    assert c["bg_change_in_object"] < 0.4 * c["bg_change_in_background"]
    assert c["rotation_change_in_background"] < 1e-6  # a box-symmetric object: nothing outside it moves
    assert 0.01 < c["object_coverage"] < 0.9


def _tiny():
    return GiraffeGenerator(z_dim=8, z_dim_bg=4, img_size=32, feature_dim=16, hidden_size=16, n_blocks=3, skips=(1,),
                            bg_hidden_size=8, bg_n_blocks=2, resolution_vol=8, n_ray_samples=8)


def test_r1_penalty_against_autograd_float64():
    d = DCGANDiscriminator(3, 16, final_channels=16).double()
    real = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    fake = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    losses = discriminator_losses(d, real, fake, r1_gamma=10.0)
    # reference: per-sample input gradient by a separate autograd call on each sample
    ref = 0.0
    for i in range(3):  # loop over the 3 samples of the reference
        x = real[i:i + 1].clone().requires_grad_()
        (gx,) = torch.autograd.grad(d(x).sum(), x)
        ref += gx.square().sum() / 3
    torch.testing.assert_close(losses.r1, 10.0 * ref)
    softplus = torch.nn.functional.softplus
    torch.testing.assert_close(losses.real, softplus(-d(real)).mean())
    torch.testing.assert_close(losses.fake, softplus(d(fake)).mean())


def test_two_workers_half_batches_give_the_one_worker_gradients():
    torch.manual_seed(0)
    gen, disc = _tiny(), DCGANDiscriminator(3, 32, final_channels=32)
    rng = torch.Generator().manual_seed(0)
    n = 4
    lat, cams, boxes, bg = gen.sample_latents(n, rng), gen.sample_cameras(n, rng), gen.sample_boxes(n, rng), \
        gen.sample_bg_rotation(n, rng)
    real = torch.rand(n, 3, 32, 32, generator=rng)

    def grads(sl):
        gen.zero_grad(), disc.zero_grad()
        sub = type(lat)(*(x[sl] for x in lat))
        fake = gen(sub, cams[sl], type(boxes)(*(x[sl] for x in boxes)), bg[sl])
        generator_loss(disc, fake).backward()
        g_grads = [p.grad.clone() for p in gen.parameters()]
        disc.zero_grad()
        discriminator_losses(disc, real[sl], fake.detach(), 10.0).total.backward()
        return g_grads + [p.grad.clone() for p in disc.parameters()]

    full = grads(slice(0, 4))
    halves = [grads(slice(0, 2)), grads(slice(2, 4))]
    for a, b, c in zip(full, *halves):
        torch.testing.assert_close(a, (b + c) / 2, atol=1e-6, rtol=1e-4)


def test_train_iteration_updates_g_d_and_ema():
    torch.manual_seed(0)
    gen, disc = _tiny(), DCGANDiscriminator(3, 32, final_channels=32)
    ema = ema_copy(gen)
    before_g, before_d, before_e = (copy.deepcopy(m.state_dict()) for m in (gen, disc, ema))
    og = torch.optim.RMSprop(gen.parameters(), lr=5e-4)
    od = torch.optim.RMSprop(disc.parameters(), lr=1e-4)
    out = train_iteration(gen, ema, disc, og, od, torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    assert set(out) == {"loss_g", "loss_d", "loss_d_real", "loss_d_fake", "r1"}
    assert all(torch.isfinite(v) for v in out.values())
    k = "object_field.fc_in.weight"
    delta_g = gen.state_dict()[k] - before_g[k]
    assert delta_g.abs().max() > 0
    torch.testing.assert_close(ema.state_dict()[k] - before_e[k], 0.001 * delta_g)  # EMA 0.999
    assert (disc.state_dict()["conv_out.weight"] - before_d["conv_out.weight"]).abs().max() > 0
    assert all(p.requires_grad for p in gen.parameters()) and all(p.requires_grad for p in disc.parameters())


def test_domain_features_learn_counts():
    # synthetic labelled images: the count is the number of bright quadrants
    g = torch.Generator().manual_seed(0)
    n = 256
    counts = torch.randint(0, 4, (n,), generator=g)
    img = torch.zeros(n, 3, 8, 8)
    for q in range(3):  # loop over 3 quadrants
        on = counts > q
        img[on, :, (q // 2) * 4:(q // 2) * 4 + 4, (q % 2) * 4:(q % 2) * 4 + 4] = 1.0
    shapes = torch.full((n, 3), -1)
    net = train_domain_features(img, counts, shapes, shapes, max_objects=3, steps=80, batch_size=32)
    assert isinstance(net, DomainFeatureNet)
    with torch.no_grad():
        acc = (net(img)[0].argmax(1) == counts).float().mean()
        assert net.features(img).shape == (n, 128)
    assert acc > 0.9


def test_generator2d_shapes_and_checks():
    from lib3d.synthesis.giraffe_train import Generator2D

    g = Generator2D(z_dim=16, img_size=32, base_channels=32)
    x = g.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and float(x.detach().min()) >= 0 and float(x.detach().max()) <= 1
    with pytest.raises(ValueError, match="power of two"):
        Generator2D(img_size=48)
