"""UNet levels and size checks, SynSin's UNet / ResNet_Block key layouts, the noise batch norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib3d.nn import (
    NoiseBatchNorm2d,
    ResBlock,
    UNet,
    noise_batch_norm,
    remap_keys,
    spectral_norm,
    spectral_norm_rules,
    strict_load,
    synsin_unet_rules,
)


@pytest.mark.parametrize("levels", [1, 2, 3, 5])
def test_unet_levels_and_shapes(levels):
    u = UNet(3, 2, levels, base_channels=4, max_channels=16)
    convs = [n for n, m in u.named_modules() if isinstance(m, nn.Conv2d)]
    assert sum(n.startswith("conv") for n in convs) == levels and sum(n.startswith("dconv") for n in convs) == levels
    assert u.channels == tuple(min(4 * 2 ** i, 16) for i in range(levels))
    x = torch.rand(2, 3, 2 ** levels * 3, 2 ** levels, requires_grad=True)
    y = u(x)
    assert y.shape == (2, 2, x.shape[2], x.shape[3])
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_unet_size_and_argument_errors():
    u = UNet(3, 1, 3)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*levels = 8"):
        u(torch.rand(1, 3, 20, 16))
    with pytest.raises(ValueError, match="x must have shape"):
        u(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="levels"):
        UNet(3, 1, 0)
    with pytest.raises(ValueError, match="norm"):
        UNet(3, 1, 2, norm="group")


def _synsin_unet_layout(nf: int = 32, cin: int = 3, cout: int = 1) -> dict:
    """SynSin ``Unet(num_filters=32, channels_in=3, channels_out=1)`` with ``norm_G`` spectral + batch:
    convs are old-style spectral-normalised (weight_orig / weight_u / weight_v, bias), norms BatchNorm2d."""
    enc = [(cin, nf), (nf, 2 * nf), (2 * nf, 4 * nf), (4 * nf, 8 * nf)] + [(8 * nf, 8 * nf)] * 4
    dec = [(8 * nf, 8 * nf), (16 * nf, 8 * nf), (16 * nf, 8 * nf), (16 * nf, 8 * nf), (16 * nf, 4 * nf),
           (8 * nf, 2 * nf), (4 * nf, nf), (2 * nf, cout)]
    sd = {}
    for prefix, table, k in (("conv", enc, 4), ("dconv", dec, 3)):
        for i, (ci, co) in enumerate(table, start=1):
            sd[f"{prefix}{i}.bias"] = (co,)
            sd[f"{prefix}{i}.weight_orig"] = (co, ci, k, k)
            sd[f"{prefix}{i}.weight_u"] = (co,)
            sd[f"{prefix}{i}.weight_v"] = (ci * k * k,)
    norms = {"batch_norm": nf, "batch_norm2_0": 2 * nf, "batch_norm2_1": 2 * nf, "batch_norm4_0": 4 * nf,
             "batch_norm4_1": 4 * nf, **{f"batch_norm8_{i}": 8 * nf for i in range(8)}}
    for n, c in norms.items():
        for s in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{n}.{s}"] = (c,)
        sd[f"{n}.num_batches_tracked"] = ()
    return sd


def test_synsin_unet_state_dict_maps():
    layout = _synsin_unet_layout()
    sd = {k: (torch.tensor(3) if s == () else torch.rand(s) + 0.5) for k, s in layout.items()}
    mapped = remap_keys(remap_keys(sd, synsin_unet_rules()), spectral_norm_rules())
    u = UNet(3, 1, levels=8, base_channels=32, max_channels=256, spectral=True)
    strict_load(u, mapped, "SynSin depth Unet")
    torch.testing.assert_close(u.dec_norm7.running_mean, sd["batch_norm.running_mean"])
    torch.testing.assert_close(u.enc_norm3.weight, sd["batch_norm4_0.weight"])
    torch.testing.assert_close(u.conv8.parametrizations.weight.original, sd["conv8.weight_orig"])


def test_spectral_norm_rules_match_old_style_semantics():
    """An old-style spectral-norm conv's state dict, remapped, gives the same eval-mode weight."""
    old = nn.utils.spectral_norm(nn.Conv2d(3, 5, 3))
    old.train()
    old(torch.rand(1, 3, 8, 8))  # one power iteration
    old.eval()
    new = spectral_norm(nn.Conv2d(3, 5, 3)).eval()
    strict_load(new, remap_keys(old.state_dict(), spectral_norm_rules()), "spectral conv")
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(new(x), old(x))


def test_noise_batch_norm_formula_and_stats():
    g = torch.Generator().manual_seed(0)
    m = NoiseBatchNorm2d(4, noise_dim=3)
    x = torch.randn(5, 4, 3, 2, generator=g) * 2 + 1
    z = torch.randn(5, 3, generator=g)
    y = m(x, noise=z)
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    gain = 1 + z @ m.gain.weight.T
    bias = z @ m.bias.weight.T
    ref = (x - mean[None, :, None, None]) / torch.sqrt(var + 1e-5)[None, :, None, None] * gain[..., None, None] \
        + bias[..., None, None]
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(m.bn.stored_mean, 0.1 * mean)
    torch.testing.assert_close(m.bn.stored_var, 0.9 + 0.1 * var)
    m.eval()
    torch.testing.assert_close(m(x, noise=z), noise_batch_norm(x, m.bn.stored_mean, m.bn.stored_var, gain, bias))
    # noise drawn from the generator: reproducible, and different per call
    a = m(x, generator=torch.Generator().manual_seed(1))
    b = m(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, m(x, generator=torch.Generator().manual_seed(2)))
    assert set(m.state_dict()) == {"gain.weight", "bias.weight", "bn.stored_mean", "bn.stored_var",
                                   "bn.accumulation_counter"}


@pytest.mark.parametrize("resample,size", [("none", 9), ("down", 5), ("up", 18)])
@pytest.mark.parametrize("norm", ["batch", "instance", "noise_batch", "none"])
def test_resblock_shapes_and_gradients(resample, size, norm):
    b = ResBlock(4, 6, resample, norm)
    x = torch.rand(2, 4, 9, 9, requires_grad=True)
    y = b(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 6, size, size)
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_resblock_identity_shortcut_and_synsin_layout():
    assert isinstance(ResBlock(4, 4, "none", "batch").ch_b, nn.Identity)
    b = ResBlock(8, 16, "down", "noise_batch", spectral=True)
    # SynSin ResNet_Block(8, 16, opt with spectral norm_G, "Down"), old-style spectral names
    synsin = {}
    for idx, c in ((0, 8), (3, 16)):
        for lin in ("gain", "bias"):
            synsin[f"ch_a.{idx}.{lin}.weight_orig"] = (c, 20)
            synsin[f"ch_a.{idx}.{lin}.weight_u"] = (c,)
            synsin[f"ch_a.{idx}.{lin}.weight_v"] = (20,)
        synsin[f"ch_a.{idx}.bn.stored_mean"] = (c,)
        synsin[f"ch_a.{idx}.bn.stored_var"] = (c,)
        synsin[f"ch_a.{idx}.bn.accumulation_counter"] = (1,)
    for name, (co, ci, k) in (("ch_a.2", (16, 8, 3)), ("ch_a.5", (16, 16, 3)), ("ch_b.0", (16, 8, 1))):
        synsin[f"{name}.weight_orig"] = (co, ci, k, k)
        synsin[f"{name}.weight_u"] = (co,)
        synsin[f"{name}.weight_v"] = (ci * k * k,)
        synsin[f"{name}.bias"] = (co,)
    sd = remap_keys({k: torch.rand(s) for k, s in synsin.items()}, spectral_norm_rules())
    strict_load(b, sd, "SynSin ResNet_Block")


def test_gradcheck_pure_norm_functions():
    from lib3d.nn import frozen_batch_norm

    g = torch.Generator().manual_seed(0)
    d = {"dtype": torch.float64}
    x = torch.randn(2, 3, 2, 2, generator=g, **d).requires_grad_()
    mean, var = torch.randn(3, generator=g, **d), torch.rand(3, generator=g, **d) + 0.5
    gain = torch.randn(2, 3, generator=g, **d).requires_grad_()
    bias = torch.randn(2, 3, generator=g, **d).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: noise_batch_norm(a, mean, var, b, c), (x, gain, bias))
    w = torch.randn(3, generator=g, **d).requires_grad_()
    b = torch.randn(3, generator=g, **d).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, ww, bb: frozen_batch_norm(a, ww, bb, mean, var, 1e-5), (x, w, b))
