"""Strict loading of state dicts with exactly the official key names and shapes (see official_layouts.py)."""

from __future__ import annotations

import pytest
import torch

from lib3d.nn import (
    AlexNetFeatures,
    FIDInceptionV3,
    VGGFeatures,
    WeightFileError,
    load_alexnet,
    load_inception,
    load_resnet,
    load_vgg,
    resnet,
)
from tests.nn.official_layouts import (
    PARAMS,
    alexnet_layout,
    inception_layout,
    num_params,
    random_state_dict,
    resnet_layout,
    vgg_layout,
)


@pytest.mark.parametrize("name,layout", [
    ("resnet18", resnet_layout(18)), ("resnet34", resnet_layout(34)), ("resnet50", resnet_layout(50)),
    ("resnet101", resnet_layout(101)), ("vgg16", vgg_layout(16)), ("vgg19", vgg_layout(19)),
    ("alexnet", alexnet_layout()), ("fid_inception", inception_layout())])
def test_tables_match_published_parameter_counts(name, layout):
    assert num_params(layout) == PARAMS[name]


@pytest.mark.parametrize("depth,norm", [(18, "bn"), (34, "frozen_bn"), (50, "bn"), (50, "frozen_bn"),
                                        (101, "frozen_bn")])
def test_resnet_loads_torchvision_layout(depth, norm):
    layout = resnet_layout(depth)
    sd = random_state_dict(layout, seed=depth)
    model = resnet(depth, norm)
    load_resnet(sd, model)
    own = model.state_dict()
    for k in ("conv1.weight", "layer1.0.bn1.running_mean", "layer4.0.downsample.1.running_var",
              f"layer3.{len(model.layer3) - 1}.conv2.weight"):
        torch.testing.assert_close(own[k], sd[k])
    # every official key except the classifier lands in the model (counters are dropped by frozen BN)
    dropped = {k for k in layout if k.startswith("fc.")}
    if norm == "frozen_bn":
        dropped |= {k for k in layout if k.endswith("num_batches_tracked")}
    assert set(own) == set(layout) - dropped


def test_resnet_file_roundtrip_and_errors(tmp_path):
    sd = random_state_dict(resnet_layout(18))
    torch.save(sd, tmp_path / "resnet18-f37072fd.pth")
    model = resnet(18)
    load_resnet(tmp_path / "resnet18-f37072fd.pth", model)
    torch.testing.assert_close(model.layer2[0].downsample[0].weight, sd["layer2.0.downsample.0.weight"])
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # pre-0.4 files lack them
    load_resnet(old, resnet(18))
    with pytest.raises(WeightFileError) as e:  # a ResNet-18 file into a ResNet-34
        load_resnet(sd, resnet(34))
    assert "missing key(s): layer1.2.conv1.weight" in str(e.value)
    with pytest.raises(WeightFileError, match="shape mismatch"):  # basic blocks into bottlenecks
        load_resnet(random_state_dict(resnet_layout(34)), resnet(50))
    bad = dict(sd)
    bad["layer1.0.conv1.weight"] = bad["layer1.0.conv1.weight"][:, :32]
    with pytest.raises(WeightFileError, match=r"layer1\.0\.conv1\.weight: file \(64, 32, 3, 3\) vs module \(64, 64, 3, 3\)"):
        load_resnet(bad, resnet(18))


@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_loads_torchvision_layout(depth):
    sd = random_state_dict(vgg_layout(depth), seed=depth)
    taps = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3") if depth == 16 else (
        "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    model = VGGFeatures(depth, taps)
    load_vgg(sd, model)
    last = 29
    assert len(model.features) == last + 1
    torch.testing.assert_close(model.features[0].weight, sd["features.0.weight"])
    conv_idx = max(int(k.split(".")[1]) for k in model.state_dict())
    torch.testing.assert_close(model.features[conv_idx].bias, sd[f"features.{conv_idx}.bias"])


def test_vgg_truncated_and_wrong_depth():
    sd16 = random_state_dict(vgg_layout(16))
    model = VGGFeatures(16, taps=("relu2_2",))
    load_vgg(sd16, model)
    assert len(model.features) == 9 and set(model.state_dict()) == {
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
        "features.5.weight", "features.5.bias", "features.7.weight", "features.7.bias"}
    with pytest.raises(WeightFileError, match="VGG16"):  # a VGG19 file is not a VGG16 file
        load_vgg(random_state_dict(vgg_layout(19)), VGGFeatures(16))
    sd = dict(sd16)
    del sd["classifier.6.bias"]
    with pytest.raises(WeightFileError, match="missing key.*classifier.6.bias"):
        load_vgg(sd, VGGFeatures(16))


def test_alexnet_loads_torchvision_layout():
    sd = random_state_dict(alexnet_layout())
    model = AlexNetFeatures()
    load_alexnet(sd, model)
    for i in (0, 3, 6, 8, 10):
        torch.testing.assert_close(model.features[i].weight, sd[f"features.{i}.weight"])
    sd["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    with pytest.raises(WeightFileError, match=r"features\.3\.weight: file \(192, 64, 3, 3\)"):
        load_alexnet(sd, AlexNetFeatures())


def test_inception_loads_pytorch_fid_layout(tmp_path):
    layout = inception_layout()
    sd = random_state_dict(layout)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    model = FIDInceptionV3()
    load_inception(path, model)
    own = model.state_dict()
    assert {k for k in own if not k.endswith("num_batches_tracked")} == {
        k for k in layout if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    for k in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_var", "Mixed_6e.branch7x7dbl_5.conv.weight"):
        torch.testing.assert_close(own[k], sd[k])
    del sd["Mixed_5b.branch_pool.conv.weight"]
    with pytest.raises(WeightFileError, match="Mixed_5b.branch_pool.conv.weight"):
        load_inception(sd, FIDInceptionV3())
