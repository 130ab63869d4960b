"""Perc Sim and LPIPS: identity, positivity, gradients, a restated reference pipeline, strict loading of
lpips' v0.1 linear layers with the official keys and shapes."""

import pytest
import torch

from lib3d.metrics import (
    LPIPS,
    PerceptualSimilarity,
    load_lpips_weights,
    lpips_official_shapes,
    perceptual_similarity,
)
from lib3d.nn import VGGFeatures, WeightFileError


def _seeded(module, seed=0):
    """Deterministic random weights (no weight files in tests)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(1, p[0].numel())) ** 0.5)
    return module


def _images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


def _manual_taps(features, names, x, taps):
    out = {}
    for name, layer in zip(names, features):
        x = layer(x)
        out[name] = x
    return [out[t] for t in taps]


def _scale(x):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    return ((x * 2 - 1) - shift) / scale


def _norm(f):
    return f / (torch.sqrt(torch.sum(f ** 2, dim=1)).view(f.shape[0], 1, f.shape[2], f.shape[3]) + 1e-10)


def test_perceptual_similarity_reference_identity_gradient():
    m = PerceptualSimilarity()
    _seeded(m.net)
    a, b = _images(2, 16, 0)  # relu5_3 at 1x1
    d = m(a, b)
    # SynSin's PNet restated: 1 - mean over positions of the channel dot product of normalised features
    taps = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    fa = _manual_taps(m.net.features, m.net.layer_names, _scale(a), taps)
    fb = _manual_taps(m.net.features, m.net.layer_names, _scale(b), taps)
    ref = sum(1.0 - (_norm(x) * _norm(y)).sum(1).mean(2).mean(1) for x, y in zip(fa, fb))
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-6)
    assert d.shape == (2,) and bool((d > 0.01).all())
    assert float(m(a, a).abs().max()) < 1e-5  # identical images
    x = a.clone().requires_grad_(True)
    perceptual_similarity(x, b, m.net).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_perceptual_similarity_errors():
    a, b = _images(1, 32, 1)
    with pytest.raises(ValueError, match="target"):
        perceptual_similarity(a, b[:, :, :16], VGGFeatures(normalize_input=False))
    with pytest.raises(ValueError, match="VGGFeatures"):
        perceptual_similarity(a, b, VGGFeatures(depth=19, normalize_input=False))
    with pytest.raises(ValueError, match="normalize_input"):
        perceptual_similarity(a, b, VGGFeatures(depth=16))


@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 16)])
def test_lpips_official_keys_strict_load_and_reference(net, size, tmp_path):
    m = LPIPS(net)
    _seeded(m.net, 1)
    shapes = lpips_official_shapes(net)
    assert sorted(shapes) == [f"lin{i}.model.1.weight" for i in range(5)]
    chans = (64, 192, 384, 256, 256) if net == "alex" else (64, 128, 256, 512, 512)
    assert [shapes[f"lin{i}.model.1.weight"] for i in range(5)] == [(1, c, 1, 1) for c in chans]
    g = torch.Generator().manual_seed(5)
    sd = {k: torch.rand(s, generator=g) for k, s in shapes.items()}
    path = tmp_path / f"{net}.pth"
    torch.save(sd, path)  # the official files are plain state dicts of these tensors
    load_lpips_weights(path, m)
    for i in range(5):
        torch.testing.assert_close(getattr(m.linear, f"lin{i}").model[1].weight, sd[f"lin{i}.model.1.weight"])
    a, b = _images(2, size, 2)
    d = m(a, b)
    taps = ("relu1", "relu2", "relu3", "relu4", "relu5") if net == "alex" else (
        "relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    fa = _manual_taps(m.net.features, m.net.layer_names, _scale(a), taps)
    fb = _manual_taps(m.net.features, m.net.layer_names, _scale(b), taps)
    ref = sum(torch.nn.functional.conv2d((_norm(x) - _norm(y)) ** 2, sd[f"lin{i}.model.1.weight"]).mean((2, 3))[:, 0]
              for i, (x, y) in enumerate(zip(fa, fb)))
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-7)
    assert bool((d > 0).all()) and float(m(a, a).abs().max()) < 1e-6
    m.train()  # dropout never applies: the metric stays deterministic
    torch.testing.assert_close(m(a, b), d)


def test_lpips_strict_loading_errors(tmp_path):
    m = LPIPS("alex")
    good = {k: torch.ones(s) for k, s in lpips_official_shapes("alex").items()}
    before = m.linear.lin0.model[1].weight.clone()
    renamed = {k.replace(".model.1.", "."): v for k, v in good.items()}  # lin0.weight: not the official names
    with pytest.raises(WeightFileError, match="missing key"):
        load_lpips_weights(renamed, m)
    with pytest.raises(WeightFileError, match="shape mismatch"):
        load_lpips_weights({k: torch.ones(s) for k, s in lpips_official_shapes("vgg").items()}, m)  # vgg into alex
    with pytest.raises(WeightFileError, match="unexpected key"):
        load_lpips_weights({**good, "net.features.0.weight": torch.ones(64, 3, 11, 11)}, m)
    torch.testing.assert_close(m.linear.lin0.model[1].weight, before)  # nothing was loaded
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"nope")
    with pytest.raises(WeightFileError, match="junk.pth"):
        load_lpips_weights(junk, m)
    with pytest.raises(ValueError, match="net"):
        LPIPS("squeeze")
