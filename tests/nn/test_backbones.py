"""ResNet / FPN / VGG / AlexNet / Inception: shapes, gradients, frozen batch norm, freezing, key rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib3d.nn import (
    FPN,
    AlexNetFeatures,
    FIDInceptionV3,
    FrozenBatchNorm2d,
    ResNetFPN,
    VGGFeatures,
    detectron2_resnet_fpn_rules,
    detectron2_resnet_rules,
    remap_keys,
    resnet,
    strict_load,
)

# channels of c2..c5
CHANNELS = {18: (64, 128, 256, 512), 50: (256, 512, 1024, 2048)}


@pytest.mark.parametrize("depth,hw,n", [(18, (64, 64), 2), (18, (33, 47), 3), (50, (33, 47), 1)])
def test_resnet_stage_shapes(depth, hw, n):
    m = resnet(depth).eval()
    out = m(torch.rand(n, 3, *hw))
    assert list(out) == ["c2", "c3", "c4", "c5"]
    h, w = hw
    for (name, t), c in zip(out.items(), CHANNELS[depth]):
        s = m.strides[name]
        assert m.out_channels[name] == c
        # every stride-2 step maps n -> ceil(n / 2)
        eh, ew = h, w
        for _ in range(int(s).bit_length() - 1):
            eh, ew = (eh + 1) // 2, (ew + 1) // 2
        assert t.shape == (n, c, eh, ew)


def test_resnet_input_checks():
    with pytest.raises(ValueError, match="x must have shape"):
        resnet(18)(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="depth"):
        resnet(20)
    with pytest.raises(ValueError, match="freeze_at"):
        resnet(18, freeze_at=7)


def test_frozen_batchnorm_equals_eval_batchnorm():
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5, generator=g))
        bn.bias.copy_(torch.randn(5, generator=g))
        bn.running_mean.copy_(torch.randn(5, generator=g))
        bn.running_var.copy_(torch.rand(5, generator=g) + 0.1)
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is ignored
    x = torch.randn(3, 5, 4, 6, generator=g)
    torch.testing.assert_close(frozen(x), bn.eval()(x))
    torch.testing.assert_close(FrozenBatchNorm2d.from_batch_norm(bn)(x), bn(x))
    assert not any(True for _ in frozen.parameters())


def test_frozen_bn_resnet_equals_eval_bn_resnet():
    a, b = resnet(18, "bn"), resnet(18, "frozen_bn")
    with torch.no_grad():
        for m in a.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
    strict_load(b, a.state_dict(), "resnet18")
    x = torch.rand(1, 3, 32, 32)
    for k, v in a.eval()(x).items():
        torch.testing.assert_close(b(x)[k], v)


def test_freeze_at_and_gradients():
    m = resnet(18, freeze_at=2)
    assert isinstance(m.bn1, FrozenBatchNorm2d) and isinstance(m.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(m.layer2[0].bn1, nn.BatchNorm2d)
    assert not m.conv1.weight.requires_grad and not m.layer1[0].conv1.weight.requires_grad
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = m(x)
    sum(v.sum() for v in out.values()).backward()
    assert m.layer2[0].conv1.weight.grad is not None and m.layer4[1].conv2.weight.grad.abs().sum() > 0
    assert m.layer1[0].conv1.weight.grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_stride_in_1x1():
    m = resnet(50, stride_in_1x1=True)
    assert m.layer2[0].conv1.stride == (2, 2) and m.layer2[0].conv2.stride == (1, 1)
    m = resnet(50)
    assert m.layer2[0].conv1.stride == (1, 1) and m.layer2[0].conv2.stride == (2, 2)


def test_fpn_levels_and_p6():
    m = ResNetFPN(18)
    out = m(torch.rand(2, 3, 64, 128))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name, t in out.items():
        assert t.shape == (2, 256, 64 // m.strides[name], 128 // m.strides[name])
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])
    assert m.fpn.fpn_lateral2.weight.shape == (256, 64, 1, 1)
    assert m.fpn.fpn_output5.weight.shape == (256, 256, 3, 3)
    odd = m(torch.rand(1, 3, 50, 70))  # not divisible by 32: nearest upsampling to the lateral's size
    assert odd["p2"].shape[-2:] == (13, 18)


def test_fpn_top_down_by_hand():
    """One-channel FPN with identity-like convs: p_l = lateral_l + upsampled merged map of level l+1."""
    fpn = FPN({"c2": 1, "c3": 1}, out_channels=1, top_block=None)
    with torch.no_grad():
        for m in fpn.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                m.weight[0, 0, m.weight.shape[2] // 2, m.weight.shape[3] // 2] = 1.0
    c2, c3 = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 2, 2)
    out = fpn({"c2": c2, "c3": c3})
    torch.testing.assert_close(out["p3"], c3)
    torch.testing.assert_close(out["p2"], c2 + c3.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_detectron2_rules_map_a_resnet_fpn_checkpoint():
    ref = ResNetFPN(50, stride_in_1x1=True)
    d2 = {}
    for k, v in ref.state_dict().items():  # write the model's tensors under detectron2's names
        if k.startswith("fpn."):
            d2["backbone." + k[4:]] = v
            continue
        k = k[len("bottom_up."):]
        if k.startswith("conv1."):
            name = "stem.conv1." + k[6:]
        elif k.startswith("bn1."):
            name = "stem.conv1.norm." + k[4:]
        else:
            layer, block, rest = k.split(".", 2)
            stage = f"res{int(layer[5:]) + 1}.{block}."
            rest = (rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
                    .replace("bn1.", "conv1.norm.").replace("bn2.", "conv2.norm.").replace("bn3.", "conv3.norm."))
            name = stage + rest
        d2["backbone.bottom_up." + name] = v
    assert "backbone.bottom_up.res5.2.conv3.norm.running_var" in d2
    assert "backbone.bottom_up.res2.0.shortcut.norm.weight" in d2
    mapped = remap_keys(d2, detectron2_resnet_fpn_rules())
    strict_load(ResNetFPN(50, stride_in_1x1=True), mapped, "detectron2 R50-FPN")
    assert detectron2_resnet_rules("")[0] == (r"stem\.conv1\.norm\.", "bn1.")


def test_vgg_taps_match_a_manual_forward():
    m = VGGFeatures(16, taps=("conv1_1", "relu2_2", "pool3"), normalize_input=True)
    x = torch.rand(2, 3, 32, 24)
    out = m(x)
    assert list(out) == ["conv1_1", "relu2_2", "pool3"]
    xn = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    f = m.features
    c11 = f[0](xn)
    torch.testing.assert_close(out["conv1_1"], c11)
    h = F.relu(f[2](F.relu(c11)))
    h = F.max_pool2d(h, 2)
    h = F.relu(f[7](F.relu(f[5](h))))
    torch.testing.assert_close(out["relu2_2"], h)
    assert out["pool3"].shape == (2, 256, 4, 3)
    assert len(m.features) == 17 and m.out_channels == {"conv1_1": 64, "relu2_2": 128, "pool3": 256}
    with pytest.raises(ValueError, match="taps"):
        VGGFeatures(16, taps=("relu6_1",))


def test_vgg_gradients_reach_input_but_not_frozen_weights():
    m = VGGFeatures(16, taps=("relu3_3",))
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    m(x)["relu3_3"].sum().backward()
    assert x.grad.abs().sum() > 0 and m.features[0].weight.grad is None
    m = VGGFeatures(19, taps=("relu1_1",), requires_grad=True)
    m(torch.rand(1, 3, 8, 8))["relu1_1"].sum().backward()
    assert m.features[0].weight.grad is not None


def test_alexnet_shapes():
    m = AlexNetFeatures(normalize_input=False)
    out = m(torch.rand(2, 3, 64, 64))
    assert [t.shape[1] for t in out.values()] == [64, 192, 384, 256, 256]
    assert out["relu1"].shape[-2:] == (15, 15) and out["relu5"].shape[-2:] == (3, 3)
    assert len(m.features) == 12


def test_fid_inception_forward_batch1():
    m = FIDInceptionV3()
    m.train()
    assert not m.training  # always evaluation mode
    with torch.no_grad():
        out = m(torch.rand(1, 3, 40, 56))
    assert out.shape == (1, 2048) and torch.isfinite(out).all()
    assert (out >= 0).all()  # a mean of ReLU outputs


def test_fid_inception_pools_exclude_padding():
    """FIDInceptionA's pool branch: 3x3 average that ignores the zero padding (TF's behaviour)."""
    from lib3d.nn.inception import _avg3, _BlockE

    x = torch.ones(1, 1, 3, 3)
    torch.testing.assert_close(_avg3(x), x)  # with padding counted, the corners would be 4/9
    e1, e2 = _BlockE(4, "avg"), _BlockE(4, "max")
    assert e1.pool == "avg" and e2.pool == "max"


def test_vgg_and_alexnet_tap_indices_match_lpips_and_pix2pixhd_slices():
    from lib3d.nn import alexnet_layer_names, vgg_layer_names

    v16, v19 = vgg_layer_names(16), vgg_layer_names(19)
    # LPIPS vgg16 slices end after features 3, 8, 15, 22, 29
    assert [v16[i] for i in (3, 8, 15, 22, 29)] == ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    # pix2pixHD / SynSin VGG19 slices end after features 1, 6, 11, 20, 29
    assert [v19[i] for i in (1, 6, 11, 20, 29)] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    # LPIPS alexnet slices end after features 1, 4, 7, 9, 11
    a = alexnet_layer_names()
    assert [a[i] for i in (1, 4, 7, 9, 11)] == ["relu1", "relu2", "relu3", "relu4", "relu5"]


def test_fid_inception_input_is_resized_and_scaled():
    """pytorch-fid: bilinear resize to 299 (align_corners=False), then 2x - 1 (stopped at the first conv)."""

    class Stop(Exception):
        pass

    seen = {}

    def hook(module, args):
        seen["x"] = args[0]
        raise Stop

    m = FIDInceptionV3()
    m.Conv2d_1a_3x3.register_forward_pre_hook(hook)
    x = torch.rand(2, 3, 37, 50)
    with pytest.raises(Stop):
        m(x)
    ref = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(seen["x"], ref)
    with pytest.raises(ValueError, match="images must have shape"):
        m(torch.rand(1, 1, 299, 299))
