"""Feature pyramid network (Lin et al. 2017) as Mask R-CNN / detectron2 build it: P2-P6 from C2-C5.

Dimension names: N batch, H/W image height/width, C channels. For each input level ``l`` (2..5) a 1x1
lateral convolution maps ``c{l}`` to ``out_channels``; going top-down, the coarser merged map is
upsampled (nearest, to the lateral's size: exactly x2 when the input is divisible by 32) and added;
a 3x3 output convolution then gives ``p{l}``. ``p6`` is ``p5`` subsampled by a stride-2 max pool with a
1x1 kernel (detectron2's ``LastLevelMaxPool``), used by the RPN only.

Attribute names are detectron2's (``fpn_lateral2`` .. ``fpn_lateral5``, ``fpn_output2`` .. ``fpn_output5``),
so a detectron2 / Mesh R-CNN checkpoint maps with one prefix rule (``backbone.fpn_`` -> ``fpn.fpn_`` for
:class:`ResNetFPN`). Initialisation is detectron2's ``c2_xavier_fill`` (Kaiming-uniform with ``a=1``,
zero bias).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_shape
from lib3d.nn.resnet import ResNet, detectron2_resnet_rules

__all__ = ["FPN", "ResNetFPN", "detectron2_resnet_fpn_rules"]


def _c2_xavier_fill(conv: nn.Conv2d) -> None:
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)


class FPN(nn.Module):
    """Top-down feature pyramid over ``c2..c5`` (or any contiguous ``c{a}..c{b}``), plus ``p6``.

    Args:
        in_channels: ``{"c2": C2, ..., "c5": C5}`` channels of the backbone levels (``ResNet.out_channels``);
            keys ``"c{l}"`` with consecutive ``l``.
        out_channels: channels of every pyramid level (256 in Mask R-CNN).
        top_block: ``"maxpool"`` adds ``p{last+1}`` = stride-2 subsampling of the last level; ``None``
            adds nothing.

    Attributes:
        out_channels: ``{"p2": 256, ..., "p6": 256}``.
        strides: ``{"p2": 4, ..., "p6": 64}`` assuming ``c{l}`` has stride ``2**l``.
    """

    def __init__(self, in_channels: Mapping[str, int], out_channels: int = 256,
                 top_block: Literal["maxpool"] | None = "maxpool"):
        super().__init__()
        if not isinstance(in_channels, Mapping) or not in_channels:
            raise TypeError("in_channels must be a non-empty mapping like {'c2': 256, ..., 'c5': 2048}")
        levels = []
        for k in in_channels:
            if not (isinstance(k, str) and k.startswith("c") and k[1:].isdigit()):
                raise ValueError(f"in_channels keys must look like 'c2'..'c5', got {k!r}")
            levels.append(int(k[1:]))
        levels.sort()
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"in_channels levels must be consecutive, got {sorted(in_channels)}")
        if top_block not in ("maxpool", None):
            raise ValueError(f"top_block must be 'maxpool' or None, got {top_block!r}")
        self.levels = tuple(levels)
        self.top_block = top_block
        for lvl in levels:
            lateral = nn.Conv2d(int(in_channels[f"c{lvl}"]), out_channels, 1)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            _c2_xavier_fill(lateral)
            _c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{lvl}", lateral)
            self.add_module(f"fpn_output{lvl}", output)
        names = [f"p{lvl}" for lvl in levels] + ([f"p{levels[-1] + 1}"] if top_block else [])
        self.out_channels = {n: out_channels for n in names}
        self.strides = {n: 2 ** int(n[1:]) for n in names}

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pyramid levels.

        Args:
            features: ``{"c2": (N, C2, H2, W2), ..., "c5": (N, C5, H5, W5)}``; extra keys are ignored.

        Returns:
            ``{"p2": (N, out, H2, W2), ..., "p5": (N, out, H5, W5), "p6": (N, out, ceil(H5/2), ceil(W5/2))}``.
        """
        sizes: dict = {}
        for lvl in self.levels:
            name = f"c{lvl}"
            if name not in features:
                raise ValueError(f"features must hold {name!r}, got keys {sorted(features)}")
            check_shape(f"features[{name!r}]", features[name], ("N", None, None, None), sizes, dtype="float")
        out: dict[str, torch.Tensor] = {}
        prev = None
        for lvl in reversed(self.levels):
            lateral = getattr(self, f"fpn_lateral{lvl}")(features[f"c{lvl}"])
            if prev is not None:
                lateral = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            prev = lateral
            out[f"p{lvl}"] = getattr(self, f"fpn_output{lvl}")(lateral)
        if self.top_block == "maxpool":
            top = self.levels[-1]
            out[f"p{top + 1}"] = F.max_pool2d(out[f"p{top}"], kernel_size=1, stride=2, padding=0)
        return {k: out[k] for k in self.out_channels}


class ResNetFPN(nn.Module):
    """A :class:`ResNet` (``bottom_up``) followed by an :class:`FPN` (``fpn``): images -> ``p2..p6``.

    Args:
        depth, norm, freeze_at, stride_in_1x1: passed to :class:`ResNet`.
        out_channels: FPN channels (256).

    Attributes:
        out_channels, strides: the FPN's.
    """

    def __init__(self, depth: Literal[18, 34, 50, 101] = 50, norm: Literal["bn", "frozen_bn"] = "frozen_bn",
                 freeze_at: int = 0, stride_in_1x1: bool = False, out_channels: int = 256):
        super().__init__()
        self.bottom_up = ResNet(depth, norm, freeze_at=freeze_at, stride_in_1x1=stride_in_1x1)
        self.fpn = FPN(self.bottom_up.out_channels, out_channels)
        self.out_channels = dict(self.fpn.out_channels)
        self.strides = dict(self.fpn.strides)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images: (N, 3, H, W) float`` -> ``{"p2": (N, 256, H/4, W/4), ..., "p6": (N, 256, H/64, W/64)}``."""
        return self.fpn(self.bottom_up(images))


def detectron2_resnet_fpn_rules(prefix: str = "backbone.") -> tuple[tuple[str, str], ...]:
    """:func:`lib3d.nn.remap_keys` rules from a detectron2 ResNet-FPN checkpoint onto :class:`ResNetFPN`.

    ``{prefix}fpn_lateral2.weight`` -> ``fpn.fpn_lateral2.weight``; the bottom-up keys as
    :func:`lib3d.nn.detectron2_resnet_rules` with ``bottom_up.`` in front. Other keys (heads) are kept.
    """
    p = prefix.replace(".", r"\.")
    rules = [(p + r"fpn_", "fpn.fpn_")]
    for pat, rep in detectron2_resnet_rules(prefix + "bottom_up."):
        rules.append((pat, "bottom_up." + rep))
    return tuple(rules)
