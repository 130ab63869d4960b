"""Official GIRAFFE checkpoints: every official key and shape, weights_only reading, clear mismatch errors."""

import math

import numpy as np
import pytest
import torch

from lib3d.nn import DCGANDiscriminator
from lib3d.nn.weights import WeightFileError
from lib3d.synthesis.giraffe import BoxRanges, CameraRanges, GiraffeGenerator
from lib3d.synthesis.giraffe_weights import load_official_giraffe


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one torch thread (two spin against each other on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _official_decoder_shapes(prefix, z_dim, hidden, n_blocks, skips, rgb_out, n_freq=10, n_freq_v=4):
    """The official Decoder's state dict layout, written from im2scene/giraffe/models/decoder.py."""
    e, ev = 3 * n_freq * 2, 3 * n_freq_v * 2
    out = {"fc_in.weight": (hidden, e), "fc_in.bias": (hidden,), "fc_z.weight": (hidden, z_dim), "fc_z.bias": (hidden,)}
    for i in range(n_blocks - 1):
        out[f"blocks.{i}.weight"], out[f"blocks.{i}.bias"] = (hidden, hidden), (hidden,)
    n_skips = sum(i in skips for i in range(n_blocks - 1))
    for i in range(n_skips):
        out[f"fc_z_skips.{i}.weight"], out[f"fc_z_skips.{i}.bias"] = (hidden, z_dim), (hidden,)
        out[f"fc_p_skips.{i}.weight"], out[f"fc_p_skips.{i}.bias"] = (hidden, e), (hidden,)
    out.update({"sigma_out.weight": (1, hidden), "sigma_out.bias": (1,),
                "fc_z_view.weight": (hidden, z_dim), "fc_z_view.bias": (hidden,),
                "feat_view.weight": (hidden, hidden), "feat_view.bias": (hidden,),
                "fc_view.weight": (hidden, ev), "fc_view.bias": (hidden,),
                "feat_out.weight": (rgb_out, hidden), "feat_out.bias": (rgb_out,)})
    return {prefix + k: v for k, v in out.items()}


def _official_renderer_shapes(n_feat, img_size, min_feat=32, out_dim=3):
    n_blocks = int(math.log2(img_size) - 4)
    out = {"neural_renderer.conv_layers.0.weight": (n_feat // 2, n_feat, 3, 3),
           "neural_renderer.conv_layers.0.bias": (n_feat // 2,)}
    for i in range(n_blocks - 1):
        cin, cout = max(n_feat // 2 ** (i + 1), min_feat), max(n_feat // 2 ** (i + 2), min_feat)
        out[f"neural_renderer.conv_layers.{i + 1}.weight"] = (cout, cin, 3, 3)
        out[f"neural_renderer.conv_layers.{i + 1}.bias"] = (cout,)
    out["neural_renderer.conv_rgb.0.weight"], out["neural_renderer.conv_rgb.0.bias"] = (out_dim, n_feat, 3, 3), (out_dim,)
    for i in range(n_blocks):
        cin = max(n_feat // 2 ** (i + 1), min_feat)
        out[f"neural_renderer.conv_rgb.{i + 1}.weight"] = (out_dim, cin, 3, 3)
        out[f"neural_renderer.conv_rgb.{i + 1}.bias"] = (out_dim,)
    out["neural_renderer.upsample_rgb.1.f"] = (3,)
    return out


def _official_discriminator_shapes(img_size, n_feat=512):
    n_layers = int(math.log2(img_size) - 2)
    out = {"blocks.0.weight": (n_feat // 2 ** (n_layers - 1), 3, 4, 4)}
    for i in range(1, n_layers):
        out[f"blocks.{i}.weight"] = (n_feat // 2 ** (n_layers - 1 - i), n_feat // 2 ** (n_layers - i), 4, 4)
    out["conv_out.weight"] = (1, n_feat, 4, 4)
    return out


def _official_model_state_dict(img_size=64, feat=128, z_dim=256, z_bg=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    gen = {**_official_decoder_shapes("decoder.", z_dim, 128, 8, [4], feat),
           **_official_decoder_shapes("background_generator.", z_bg, 64, 4, [], feat),
           **_official_renderer_shapes(feat, img_size)}
    sd = {}
    for prefix in ("generator.", "generator_test."):
        for k, shape in gen.items():
            sd[prefix + k] = torch.tensor([1.0, 2.0, 1.0]) if k.endswith(".f") else torch.randn(shape, generator=g)
    for k, shape in _official_discriminator_shapes(img_size).items():
        sd["discriminator." + k] = torch.randn(shape, generator=g)
    return sd


def _cars(img_size=64, feat=128):
    return GiraffeGenerator(img_size=img_size, feature_dim=feat,
                            boxes=BoxRanges(scale_min=(0.2, 0.16, 0.16), scale_max=(0.25, 0.2, 0.2)),
                            camera=CameraRanges(range_v=(0.41667, 0.5), fov=10.0))


@pytest.mark.parametrize("img_size,feat", [(64, 128), (256, 256)])
def test_every_official_key_and_shape_loads(tmp_path, img_size, feat):
    sd = _official_model_state_dict(img_size, feat)
    path = tmp_path / "model.pt"
    torch.save({"model": sd, "optimizer": {}, "it": 1000, "epoch_it": 3, "loss_val_best": np.float64(12.5)}, path)
    gen, ema, disc = _cars(img_size, feat), _cars(img_size, feat), DCGANDiscriminator(3, img_size)
    meta = load_official_giraffe(path, gen, ema, disc)
    assert meta["it"] == 1000 and float(meta["loss_val_best"]) == 12.5
    torch.testing.assert_close(gen.object_field.fc_in.weight, sd["generator.decoder.fc_in.weight"])
    torch.testing.assert_close(ema.object_field.fc_z_skips[0].weight, sd["generator_test.decoder.fc_z_skips.0.weight"])
    torch.testing.assert_close(ema.background_field.feat_out.bias, sd["generator_test.background_generator.feat_out.bias"])
    torch.testing.assert_close(ema.neural_renderer.conv_rgb[2].weight, sd["generator_test.neural_renderer.conv_rgb.2.weight"])
    torch.testing.assert_close(disc.conv_out.weight, sd["discriminator.conv_out.weight"])
    # every official tensor went somewhere (all but the blur buffer)
    n_official = sum(v.numel() for k, v in sd.items() if k.startswith("generator.") and not k.endswith(".f"))
    assert n_official == sum(p.numel() for p in gen.parameters())
    n_d = sum(v.numel() for k, v in sd.items() if k.startswith("discriminator."))
    assert n_d == sum(p.numel() for p in disc.parameters())
    if img_size == 64:
        assert n_official == 411595 and n_d == 2763776  # ../shared/anchors/giraffe.json
    # the loaded EMA generator renders
    with torch.no_grad():
        x = ema.sample(1, torch.Generator().manual_seed(0), mode="eval")
    assert x.shape == (1, 3, img_size, img_size)


def test_other_preset_named_keys_and_shapes(tmp_path):
    sd = _official_model_state_dict(256, 256)
    path = tmp_path / "model.pt"
    torch.save({"model": sd}, path)
    gen = _cars(64, 128)
    before = gen.object_field.fc_in.weight.clone()
    with pytest.raises(WeightFileError) as e:
        load_official_giraffe(path, gen)
    msg = str(e.value)
    assert "unexpected key(s): neural_renderer.conv_layers.2.weight" in msg
    assert "object_field.feat_out.weight: file (256, 128) vs module (128, 128)" in msg
    torch.testing.assert_close(gen.object_field.fc_in.weight, before)  # nothing loaded


def test_not_giraffe_and_hostile_files(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, p)
    with pytest.raises(WeightFileError, match="not a GIRAFFE checkpoint"):
        load_official_giraffe(p, _cars())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    q = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, q)
    with pytest.raises(WeightFileError, match="refused"):
        load_official_giraffe(q, _cars())
    with pytest.raises(WeightFileError, match="no such weight file"):
        load_official_giraffe(tmp_path / "missing.pt", _cars())


def test_bad_blur_buffer_refused():
    sd = _official_model_state_dict()
    sd["generator.neural_renderer.upsample_rgb.1.f"] = torch.tensor([1.0, 1.0, 1.0])
    with pytest.raises(WeightFileError, match="blur kernel"):
        load_official_giraffe({"model": sd}, _cars())
