"""GAN parts: discriminator layouts and shapes, losses against hand-computed values, R1, EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib3d.nn import (
    EMA,
    DCGANDiscriminator,
    MultiscaleDiscriminator,
    ema_copy,
    ema_update,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
    remap_keys,
    spectral_norm_rules,
    strict_load,
)


def test_dcgan_matches_giraffe_layout():
    """GIRAFFE's DCDiscriminator(in_dim=3, n_feat=512, img_size=64): 4 convs 3->64->128->256->512 (4x4/2,
    no bias) and conv_out 512->1 (4x4/1, valid)."""
    official = {"blocks.0.weight": (64, 3, 4, 4), "blocks.1.weight": (128, 64, 4, 4),
                "blocks.2.weight": (256, 128, 4, 4), "blocks.3.weight": (512, 256, 4, 4),
                "conv_out.weight": (1, 512, 4, 4)}
    d = DCGANDiscriminator(3, 64)
    strict_load(d, {k: torch.randn(s) for k, s in official.items()}, "GIRAFFE DCDiscriminator")
    assert d(torch.rand(5, 3, 64, 64)).shape == (5, 1)
    d256 = DCGANDiscriminator(3, 256)  # GIRAFFE at 256 px: 6 layers, first 16 channels
    assert [b.weight.shape[0] for b in d256.blocks] == [16, 32, 64, 128, 256, 512]
    assert DCGANDiscriminator(3, 32, base_channels=64).conv_out.weight.shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="image_size"):
        DCGANDiscriminator(3, 48)
    with pytest.raises(ValueError, match="x must have shape"):
        d(torch.rand(1, 3, 32, 32))


def test_multiscale_discriminator_layout_and_shapes():
    d = MultiscaleDiscriminator(3, num_scales=2, num_layers=3, spectral=True)
    out = d(torch.rand(2, 3, 64, 48))
    assert len(out) == 2 and all(len(s) == 5 for s in out)
    assert [t.shape[1] for t in out[0]] == [64, 128, 256, 512, 1]
    # padding 2 with 4x4 kernels: n -> n // 2 + 1 (stride 2), n -> n + 1 (stride 1)
    assert out[0][0].shape[-2:] == (33, 25) and out[0][-1].shape[-2:] == (11, 9)
    assert out[1][0].shape[-2:] == (17, 13)
    # SPADE / SynSin key layout (old-style spectral-norm names) maps with spectral_norm_rules
    spade = {}
    for i in range(2):
        p = f"discriminator_{i}."
        spade[p + "model0.0.weight"] = (64, 3, 4, 4)
        spade[p + "model0.0.bias"] = (64,)
        for j, (ci, co) in enumerate([(64, 128), (128, 256), (256, 512)], start=1):
            spade[p + f"model{j}.0.0.weight_orig"] = (co, ci, 4, 4)
            spade[p + f"model{j}.0.0.weight_u"] = (co,)
            spade[p + f"model{j}.0.0.weight_v"] = (ci * 16,)
        spade[p + "model4.0.weight"] = (1, 512, 4, 4)
        spade[p + "model4.0.bias"] = (1,)
    sd = remap_keys({k: torch.randn(s) for k, s in spade.items()}, spectral_norm_rules())
    strict_load(d, sd, "SynSin MultiscaleDiscriminator")


def test_multiscale_feature_gradients():
    d = MultiscaleDiscriminator(3, num_scales=3, num_layers=2, norm="batch")
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = d(x)
    assert len(out) == 3 and all(len(s) == 4 for s in out)
    hinge_g_loss(out).backward()
    assert x.grad.abs().sum() > 0 and d.discriminator_2.model0[0].weight.grad is not None


def test_losses_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    sp = lambda t: math.log1p(math.exp(t))
    nd = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    torch.testing.assert_close(nonsaturating_d_loss(real, fake), torch.tensor(nd))
    torch.testing.assert_close(nonsaturating_g_loss(fake), torch.tensor((sp(-0.5) + sp(3.0)) / 2))
    # hinge: relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(1.0 + 0.75))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1.25))
    # multiscale: mean over scales of the last entry of each scale
    ms_real = [[torch.zeros(1), real], [torch.zeros(1), real * 0 + 3.0]]
    ms_fake = [[torch.zeros(1), fake], [torch.zeros(1), fake * 0 - 2.0]]
    torch.testing.assert_close(hinge_d_loss(ms_real, ms_fake), torch.tensor((1.75 + 0.0) / 2))
    # the GIRAFFE form: BCE with targets 1 / 0
    bce = nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(nonsaturating_d_loss(real, fake),
                               bce(real, torch.ones(2)) + bce(fake, torch.zeros(2)))


def test_feature_matching_by_hand():
    fake = [[torch.tensor([1.0, 2.0]), torch.tensor([5.0])], [torch.tensor([0.0]), torch.tensor([9.0])]]
    real = [[torch.tensor([0.0, 0.0]), torch.tensor([0.0])], [torch.tensor([3.0]), torch.tensor([0.0])]]
    # scale 0: mean |[1, 2]| = 1.5; scale 1: 3; logits skipped; / 2 scales
    torch.testing.assert_close(feature_matching_loss(fake, real), torch.tensor((1.5 + 3.0) / 2))
    r = torch.tensor([1.0], requires_grad=True)
    loss = feature_matching_loss([[torch.tensor([0.0], requires_grad=True), torch.zeros(1)]], [[r * 2, r]])
    loss.backward()
    assert r.grad is None  # reals are detached


def test_r1_against_hand_autograd():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.Flatten(), nn.LazyLinear(1))
    x = torch.rand(3, 3, 6, 6, requires_grad=True)
    d(x)
    logits = d(x)
    got = r1_penalty(logits, x, gamma=10.0)
    # reference: per-sample gradient of its own logit, squared and summed, mean over the batch, * gamma
    per = []
    for i in range(3):
        xi = x[i:i + 1].detach().requires_grad_()
        (g,) = torch.autograd.grad(d(xi).sum(), xi)
        per.append((g ** 2).sum())
    torch.testing.assert_close(got, 10.0 * torch.stack(per).mean())
    got.backward()  # create_graph: the penalty trains the discriminator
    assert d[0].weight.grad is not None


def test_r1_linear_discriminator_closed_form():
    w = torch.tensor([1.0, -2.0, 3.0])
    x = torch.rand(4, 3, requires_grad=True)
    torch.testing.assert_close(r1_penalty(x @ w, x, gamma=0.5), torch.tensor(0.5 * 14.0))
    with pytest.raises(ValueError, match="require gradients"):
        r1_penalty(x.detach() @ w, x.detach())


def test_ema_update_math_parameters_and_buffers():
    src, tgt = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        src.weight.fill_(2.0)
        tgt.weight.fill_(1.0)
        src.running_mean.fill_(4.0)
        tgt.running_mean.fill_(0.0)
        src.num_batches_tracked.fill_(5)
    ema_update(tgt, src, decay=0.9, buffers="average")
    torch.testing.assert_close(tgt.weight, torch.full((3,), 0.9 * 1.0 + 0.1 * 2.0))
    torch.testing.assert_close(tgt.running_mean, torch.full((3,), 0.4))
    assert int(tgt.num_batches_tracked) == 5  # integer buffers are copied
    ema_update(tgt, src, decay=0.9)  # default: buffers copied
    torch.testing.assert_close(tgt.running_mean, torch.full((3,), 4.0))
    ema_update(tgt, src, decay=0.0)
    torch.testing.assert_close(tgt.weight, src.weight)
    with pytest.raises(ValueError, match="decay"):
        ema_update(tgt, src, decay=1.5)
    with pytest.raises(ValueError, match="same parameter"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.5)


def test_ema_copy_and_module():
    src = nn.Linear(2, 2)
    frozen = ema_copy(src)
    assert all(not p.requires_grad for p in frozen.parameters()) and src.weight.requires_grad
    ema = EMA(src, decay=0.5)
    with torch.no_grad():
        old = ema.module.weight.clone()
        src.weight.add_(1.0)
    ema.update(src)
    torch.testing.assert_close(ema.module.weight, 0.5 * old + 0.5 * src.weight)
    x = torch.rand(1, 2)
    torch.testing.assert_close(ema(x), ema.module(x))
