"""VGG16/19 feature extractor with named taps (perceptual losses, LPIPS, SynSin), torchvision's layout.

Dimension names: N batch, H/W image height/width. Layers are named by block ``b`` (1..5) and position
``i`` in the block: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``. ``features`` is an ``nn.Sequential``
indexed exactly as torchvision's ``vgg16().features`` / ``vgg19().features`` (conv1_1 is ``features.0``,
relu1_2 is ``features.3``, relu5_3 of VGG16 is ``features.29``), so ``vgg16-*.pth`` / ``vgg19-*.pth``
load with :func:`lib3d.nn.load_vgg`. Only the layers up to the last requested tap are built.

Common tap sets: LPIPS / SynSin-style ``("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")`` on
VGG16; pix2pixHD / SPADE / SynSin's perceptual loss ``("relu1_1", "relu2_1", "relu3_1", "relu4_1",
"relu5_1")`` on VGG19. ReLUs are not in-place, so a tapped tensor is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lib3d._checks import check_choice, check_shape

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VGGFeatures", "vgg_layer_names", "vgg_official_shapes"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# convolutions per block
_BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)


def _vgg_layers(depth: int) -> list[tuple[str, tuple]]:
    """``[(name, spec)]`` in torchvision's order; spec ``("conv", cin, cout)``, ``("relu",)``, ``("pool",)``."""
    layers: list[tuple[str, tuple]] = []
    cin = 3
    for b, (n, w) in enumerate(zip(_BLOCKS[depth], _WIDTHS), start=1):
        for i in range(1, n + 1):
            layers.append((f"conv{b}_{i}", ("conv", cin, w)))
            layers.append((f"relu{b}_{i}", ("relu",)))
            cin = w
        layers.append((f"pool{b}", ("pool",)))
    return layers


def vgg_layer_names(depth: Literal[16, 19] = 16) -> tuple[str, ...]:
    """Names of ``features[0], features[1], ...`` (``"conv1_1", "relu1_1", "conv1_2", ...``)."""
    check_choice("depth", depth, (16, 19))
    return tuple(name for name, _ in _vgg_layers(depth))


def vgg_official_shapes(depth: Literal[16, 19] = 16) -> dict[str, tuple[int, ...]]:
    """The key -> shape table of torchvision's ``vgg16()`` / ``vgg19()`` state dict (1000 classes)."""
    check_choice("depth", depth, (16, 19))
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, (_, spec) in enumerate(_vgg_layers(depth)):
        if spec[0] == "conv":
            shapes[f"features.{idx}.weight"] = (spec[2], spec[1], 3, 3)
            shapes[f"features.{idx}.bias"] = (spec[2],)
    for idx, (cin, cout) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000))):
        shapes[f"classifier.{idx}.weight"] = (cout, cin)
        shapes[f"classifier.{idx}.bias"] = (cout,)
    return shapes


def _build(layers: Sequence[tuple[str, tuple]], upto: int) -> nn.Sequential:
    mods = []
    for _, spec in layers[: upto + 1]:
        if spec[0] == "conv":
            mods.append(nn.Conv2d(spec[1], spec[2], spec[3] if len(spec) > 3 else 3,
                                  stride=spec[4] if len(spec) > 4 else 1,
                                  padding=spec[5] if len(spec) > 5 else 1))
        elif spec[0] == "relu":
            mods.append(nn.ReLU())
        else:
            k, s = (spec[1], spec[2]) if len(spec) > 1 else (2, 2)
            mods.append(nn.MaxPool2d(kernel_size=k, stride=s))
    return nn.Sequential(*mods)


def _check_taps(taps: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(taps, str):
        taps = (taps,)
    taps = tuple(taps)
    if not taps:
        raise ValueError("taps must name at least one layer")
    for t in taps:
        if t not in names:
            raise ValueError(f"taps must be layer names from {list(names)}, got {t!r}")
    if len(set(taps)) != len(taps):
        raise ValueError(f"taps must not repeat, got {taps}")
    return taps


def _tapped_forward(features: nn.Sequential, names: Sequence[str], taps: Sequence[str],
                    x: torch.Tensor) -> dict[str, torch.Tensor]:
    wanted = set(taps)
    out: dict[str, torch.Tensor] = {}
    for name, layer in zip(names, features):
        x = layer(x)
        if name in wanted:
            out[name] = x
    return {t: out[t] for t in taps}


class _TapNet(nn.Module):
    """Shared body of the VGG / AlexNet feature extractors."""

    def _setup(self, layers, taps, normalize_input: bool, requires_grad: bool) -> None:
        names = [n for n, _ in layers]
        self.taps = _check_taps(taps, names)
        last = max(names.index(t) for t in self.taps)
        self.layer_names = tuple(names[: last + 1])
        self.features = _build(layers, last)
        self.normalize_input = bool(normalize_input)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(bool(requires_grad))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features at the taps.

        Args:
            x: ``(N, 3, H, W) float`` images in [0, 1] when ``normalize_input`` (ImageNet mean/std are
                then applied), else already normalised as the weights expect.

        Returns:
            ``{tap: (N, C_tap, H_tap, W_tap)}`` in the order of ``taps``.
        """
        check_shape("x", x, (None, 3, None, None), dtype="float")
        if self.normalize_input:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return _tapped_forward(self.features, self.layer_names, self.taps, x)


class VGGFeatures(_TapNet):
    """Frozen (by default) VGG16/19 convolutional features at named taps.

    Args:
        depth: 16 or 19.
        taps: layer names (see :func:`vgg_layer_names`), returned in this order.
        normalize_input: apply ImageNet mean/std to ``[0, 1]`` inputs.
        requires_grad: whether the parameters train (gradients reach the input either way).

    Attributes:
        out_channels: ``{tap: channels}``.
    """

    def __init__(self, depth: Literal[16, 19] = 16,
                 taps: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
                 normalize_input: bool = True, requires_grad: bool = False):
        super().__init__()
        check_choice("depth", depth, (16, 19))
        self.depth = depth
        layers = _vgg_layers(depth)
        self._setup(layers, taps, normalize_input, requires_grad)
        width = {n: _WIDTHS[int(n[-3 if "_" in n else -1]) - 1] for n, _ in layers}
        self.out_channels = {t: width[t] for t in self.taps}
