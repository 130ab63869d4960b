"""Key -> shape tables of the official state dicts, written from the official model definitions.

torchvision ``models/resnet.py`` / ``vgg.py`` / ``alexnet.py`` and pytorch-fid's ``inception.py`` (which
builds torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` and loads
``pt_inception-2015-12-05-6726825d.pth``). The tables are built here independently of lib3d's modules, and
the parameter counts are checked against the published figures (torchvision's model docs), so a wrong
attribute name or shape in lib3d fails the strict loading tests.
"""

from __future__ import annotations

import torch

# Published parameter counts (torchvision docs "num_params"; the FID Inception is Inception3 without the
# auxiliary head, 1008 classes).
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "vgg16": 138_357_544, "vgg19": 143_667_240, "alexnet": 61_100_840,
    "fid_inception": 27_161_264 - 3_326_696 - 2_049_000 + 2_065_392,
}


def _bn(prefix: str, c: int, counters: bool = True) -> dict:
    out = {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
           f"{prefix}.running_var": (c,)}
    if counters:
        out[f"{prefix}.num_batches_tracked"] = ()
    return out


def resnet_layout(depth: int) -> dict:
    """torchvision ``resnet{depth}()`` state dict: conv1, bn1, layer1..4 (BasicBlock or Bottleneck), fc."""
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    bottleneck = depth >= 50
    exp = 4 if bottleneck else 1
    sd = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for li, (n, planes) in enumerate(zip(blocks, [64, 128, 256, 512]), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            stride = 2 if (b == 0 and li > 1) else 1
            if bottleneck:
                sd[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                sd.update(_bn(f"{p}.bn1", planes))
                sd[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                sd.update(_bn(f"{p}.bn2", planes))
                sd[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                sd.update(_bn(f"{p}.bn3", planes * 4))
            else:
                sd[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                sd.update(_bn(f"{p}.bn1", planes))
                sd[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                sd.update(_bn(f"{p}.bn2", planes))
            if stride != 1 or inplanes != planes * exp:
                sd[f"{p}.downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                sd.update(_bn(f"{p}.downsample.1", planes * exp))
            inplanes = planes * exp
    sd["fc.weight"] = (1000, 512 * exp)
    sd["fc.bias"] = (1000,)
    return sd


def vgg_layout(depth: int) -> dict:
    """torchvision ``vgg{depth}()``: ``features`` from cfgs "D" / "E" ("M" = max pool), classifier 0/3/6."""
    cfg = {16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
           19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"]}[depth]
    sd, idx, cin = {}, 0, 3
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = (v, cin, 3, 3)
        sd[f"features.{idx}.bias"] = (v,)
        cin, idx = v, idx + 2  # conv, ReLU(inplace)
    sd.update({"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
               "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
               "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)})
    return sd


def alexnet_layout() -> dict:
    """torchvision ``alexnet()``: convs at features 0, 3, 6, 8, 10; Linear at classifier 1, 4, 6."""
    return {"features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
            "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
            "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
            "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
            "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
            "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
            "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
            "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}


def _basic(sd: dict, prefix: str, cin: int, cout: int, k, counters: bool) -> None:
    kh, kw = (k, k) if isinstance(k, int) else k
    sd[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
    sd.update(_bn(f"{prefix}.bn", cout, counters))


def inception_layout(counters: bool = True) -> dict:
    """pytorch-fid's FID Inception file: torchvision Inception3 blocks (BasicConv2d = conv + bn), no
    AuxLogits, ``fc`` 2048 -> 1008."""
    sd: dict = {}
    for name, cin, cout, k in [("Conv2d_1a_3x3", 3, 32, 3), ("Conv2d_2a_3x3", 32, 32, 3),
                               ("Conv2d_2b_3x3", 32, 64, 3), ("Conv2d_3b_1x1", 64, 80, 1),
                               ("Conv2d_4a_3x3", 80, 192, 3)]:
        _basic(sd, name, cin, cout, k, counters)

    def a(p, cin, pool):  # InceptionA
        for n, ci, co, k in [("branch1x1", cin, 64, 1), ("branch5x5_1", cin, 48, 1), ("branch5x5_2", 48, 64, 5),
                             ("branch3x3dbl_1", cin, 64, 1), ("branch3x3dbl_2", 64, 96, 3),
                             ("branch3x3dbl_3", 96, 96, 3), ("branch_pool", cin, pool, 1)]:
            _basic(sd, f"{p}.{n}", ci, co, k, counters)

    def c(p, cin, c7):  # InceptionC
        for n, ci, co, k in [("branch1x1", cin, 192, 1), ("branch7x7_1", cin, c7, 1),
                             ("branch7x7_2", c7, c7, (1, 7)), ("branch7x7_3", c7, 192, (7, 1)),
                             ("branch7x7dbl_1", cin, c7, 1), ("branch7x7dbl_2", c7, c7, (7, 1)),
                             ("branch7x7dbl_3", c7, c7, (1, 7)), ("branch7x7dbl_4", c7, c7, (7, 1)),
                             ("branch7x7dbl_5", c7, 192, (1, 7)), ("branch_pool", cin, 192, 1)]:
            _basic(sd, f"{p}.{n}", ci, co, k, counters)

    def e(p, cin):  # InceptionE
        for n, ci, co, k in [("branch1x1", cin, 320, 1), ("branch3x3_1", cin, 384, 1),
                             ("branch3x3_2a", 384, 384, (1, 3)), ("branch3x3_2b", 384, 384, (3, 1)),
                             ("branch3x3dbl_1", cin, 448, 1), ("branch3x3dbl_2", 448, 384, 3),
                             ("branch3x3dbl_3a", 384, 384, (1, 3)), ("branch3x3dbl_3b", 384, 384, (3, 1)),
                             ("branch_pool", cin, 192, 1)]:
            _basic(sd, f"{p}.{n}", ci, co, k, counters)

    a("Mixed_5b", 192, 32)
    a("Mixed_5c", 256, 64)
    a("Mixed_5d", 288, 64)
    for n, ci, co, k in [("branch3x3", 288, 384, 3), ("branch3x3dbl_1", 288, 64, 1),
                         ("branch3x3dbl_2", 64, 96, 3), ("branch3x3dbl_3", 96, 96, 3)]:  # InceptionB
        _basic(sd, f"Mixed_6a.{n}", ci, co, k, counters)
    c("Mixed_6b", 768, 128)
    c("Mixed_6c", 768, 160)
    c("Mixed_6d", 768, 160)
    c("Mixed_6e", 768, 192)
    for n, ci, co, k in [("branch3x3_1", 768, 192, 1), ("branch3x3_2", 192, 320, 3),
                         ("branch7x7x3_1", 768, 192, 1), ("branch7x7x3_2", 192, 192, (1, 7)),
                         ("branch7x7x3_3", 192, 192, (7, 1)), ("branch7x7x3_4", 192, 192, 3)]:  # InceptionD
        _basic(sd, f"Mixed_7a.{n}", ci, co, k, counters)
    e("Mixed_7b", 1280)
    e("Mixed_7c", 2048)
    sd["fc.weight"] = (1008, 2048)
    sd["fc.bias"] = (1008,)
    return sd


def num_params(layout: dict) -> int:
    """Parameters (not running statistics / counters) in a layout table."""
    total = 0
    for k, s in layout.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        n = 1
        for d in s:
            n *= d
        total += n
    return total


def random_state_dict(layout: dict, seed: int = 0) -> dict:
    """Tensors with the layout's names and shapes (int64 counters; positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=g) + 0.5
        elif k.startswith(("fc.", "classifier.")) and len(s) == 2 and s[0] * s[1] > 1_000_000:
            sd[k] = torch.empty(s)  # dropped by the loaders: only the name and shape matter
        else:
            sd[k] = torch.randn(s, generator=g) * 0.05
    return sd
