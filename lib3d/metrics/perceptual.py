"""Deep-feature image distances: SynSin's "Perc Sim" and LPIPS (Zhang et al., CVPR 2018), both differentiable.

Dimension names: N batch, H/W image height/width, C_l channels of feature layer l (5 layers). Unlike
:func:`lib3d.metrics.psnr` / :func:`lib3d.metrics.ssim` (channels last), these take network-layout images
``(N, 3, H, W)`` float RGB in [0, 1]; they are mapped to [-1, 1] and through LPIPS's scaling layer
``x' = (x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and ``scale = (0.458, 0.448, 0.450)``
(both metrics do this; not ImageNet's mean/std), then through a frozen backbone from :mod:`lib3d.nn`
(VGG16 taps ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3``; AlexNet taps ``relu1 .. relu5``). Features
are unit-normalised along channels, ``f_hat = f / (|f|_2 + 1e-10)``.

- Perc Sim (SynSin's ``PNet``, ``evaluation/metrics.py``):
  ``sum_l (1 - mean_{h,w} sum_c f_hat0 f_hat1)`` over the five VGG16 taps (1 - the mean cosine similarity).
- LPIPS v0.1: ``sum_l mean_{h,w} sum_c w_{l,c} (f_hat0 - f_hat1)^2`` with the learned non-negative 1x1
  "linear" weights ``w_l`` of lpips' ``weights/v0.1/{alex,vgg}.pth`` (keys ``lin{l}.model.1.weight``, shape
  ``(1, C_l, 1, 1)``; ``model.0`` is a dropout without parameters, inactive at evaluation).

Weights: nothing is downloaded. The backbone is torchvision's (``vgg16-397923af.pth`` /
``alexnet-owt-7be5be79.pth``, loaded with :func:`lib3d.nn.load_vgg` / :func:`lib3d.nn.load_alexnet` into
``.net``), the linear layers lpips' file (:func:`load_lpips_weights`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from lib3d._checks import check_choice, check_shapes
from lib3d.nn.alexnet import AlexNetFeatures
from lib3d.nn.vgg import VGGFeatures
from lib3d.nn.weights import check_state_dict, state_dict_from, strict_load

__all__ = [
    "ALEXNET_TAPS",
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "VGG16_TAPS",
    "PerceptualSimilarity",
    "load_lpips_weights",
    "lpips_distance",
    "lpips_official_shapes",
    "perceptual_similarity",
]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
VGG16_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
ALEXNET_TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5")
_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    check_shapes(pred=(pred, ("N", 3, "H", "W")), target=(target, ("N", 3, "H", "W")), dtype="float")


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [-1, 1] -> LPIPS's scaling layer."""
    shift = torch.tensor(LPIPS_SHIFT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (2.0 * x - 1.0 - shift) / scale


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def _features(backbone: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> tuple[list, list]:
    """Run both images through the backbone in one batch; lists of the tapped features."""
    if getattr(backbone, "normalize_input", False):
        raise ValueError("the backbone must be built with normalize_input=False (the LPIPS scaling layer is "
                         "applied here instead of ImageNet's mean/std)")
    n = pred.shape[0]
    feats = backbone(torch.cat([_scaled(pred), _scaled(target)], 0))
    f = list(feats.values())
    return [x[:n] for x in f], [x[n:] for x in f]


def perceptual_similarity(pred: torch.Tensor, target: torch.Tensor, vgg: VGGFeatures) -> torch.Tensor:
    """SynSin's "Perc Sim": summed over the VGG16 taps, 1 - mean cosine similarity of the features.

    Args:
        pred, target: ``(N, 3, H, W) float`` RGB in [0, 1].
        vgg: a ``VGGFeatures(depth=16, taps=VGG16_TAPS, normalize_input=False)`` holding torchvision's
            VGG16 weights (SynSin's evaluation).

    Returns:
        ``(N,)`` distance, 0 for identical images (up to the 1e-10 normalisation offset), at most 10.
        Differentiable w.r.t. both images.

    Raises:
        ValueError: shapes differ or are not ``(N, 3, H, W)``; a backbone that normalises its input.
    """
    _check_pair(pred, target)
    if not isinstance(vgg, VGGFeatures) or vgg.depth != 16 or tuple(vgg.taps) != VGG16_TAPS:
        raise ValueError(f"vgg must be a VGGFeatures(depth=16, taps={VGG16_TAPS}, normalize_input=False)")
    f0, f1 = _features(vgg, pred, target)
    total = pred.new_zeros(pred.shape[0])
    for a, b in zip(f0, f1):  # five layers
        total = total + (1.0 - (_unit(a) * _unit(b)).sum(1).mean((1, 2)))
    return total


class PerceptualSimilarity(nn.Module):
    """SynSin's "Perc Sim" as a module holding its VGG16 (``.net``; load torchvision weights into it with
    :func:`lib3d.nn.load_vgg`). ``forward(pred, target) -> (N,)`` calls :func:`perceptual_similarity`."""

    def __init__(self) -> None:
        super().__init__()
        self.net = VGGFeatures(depth=16, taps=VGG16_TAPS, normalize_input=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return perceptual_similarity(pred, target, self.net)


def lpips_distance(pred: torch.Tensor, target: torch.Tensor, backbone: nn.Module,
                   linear_weights: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """LPIPS: channel-weighted squared differences of unit-normalised features, averaged over space and
    summed over the layers.

    Args:
        pred, target: ``(N, 3, H, W) float`` RGB in [0, 1] (lpips' ``normalize=True``).
        backbone: a :mod:`lib3d.nn` tap network with ``normalize_input=False`` returning five layers.
        linear_weights: five ``(1, C_l, 1, 1)`` float weights, one per layer (lpips' ``lin{l}.model.1.weight``).

    Returns:
        ``(N,)`` distance (0 for identical images); differentiable w.r.t. both images and the weights.
    """
    _check_pair(pred, target)
    f0, f1 = _features(backbone, pred, target)
    if len(linear_weights) != len(f0):
        raise ValueError(f"linear_weights must hold {len(f0)} tensors (one per layer), got {len(linear_weights)}")
    total = pred.new_zeros(pred.shape[0])
    for a, b, w in zip(f0, f1, linear_weights):
        if w.shape != (1, a.shape[1], 1, 1):
            raise ValueError(f"linear weight of a {a.shape[1]}-channel layer must have shape "
                             f"(1, {a.shape[1]}, 1, 1), got {tuple(w.shape)}")
        d = (_unit(a) - _unit(b)) ** 2  # (N, C_l, h, w)
        total = total + (d * w.view(1, -1, 1, 1).to(d.dtype)).sum(1).mean((1, 2))
    return total


class _NetLin(nn.Module):
    """lpips' ``NetLinLayer``: ``model = Sequential(Dropout(), Conv2d(C, 1, 1, bias=False))`` (key layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class _LPIPSLinear(nn.Module):
    """The five linear layers, named as in lpips' weight files (``lin0.model.1.weight`` ...)."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        for i, c in enumerate(channels):
            setattr(self, f"lin{i}", _NetLin(c))
        self.num_layers = len(channels)

    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"lin{i}").model[1].weight for i in range(self.num_layers)]


class LPIPS(nn.Module):
    """LPIPS v0.1 with the "vgg" (VGG16) or "alex" (AlexNet) backbone.

    Holds ``.net`` (the frozen backbone: load torchvision's weights with :func:`lib3d.nn.load_vgg` /
    :func:`lib3d.nn.load_alexnet`) and ``.linear`` (five 1x1 weights: load lpips' ``v0.1/{net}.pth`` with
    :func:`load_lpips_weights`). The linear weights start at 1 (the unweighted "baseline" LPIPS) until
    loaded. ``forward(pred, target) -> (N,)`` calls :func:`lpips_distance`; dropout is never applied.

    Args:
        net: ``"vgg"`` or ``"alex"``.

    Example:
        >>> m = LPIPS("alex")
        >>> load_alexnet("alexnet-owt-7be5be79.pth", m.net)
        >>> load_lpips_weights("lpips/weights/v0.1/alex.pth", m)
        >>> d = m(pred, target)   # (N,), images (N, 3, H, W) in [0, 1]
    """

    def __init__(self, net: Literal["vgg", "alex"] = "alex") -> None:
        super().__init__()
        check_choice("net", net, ("vgg", "alex"))
        self.net_type = net
        if net == "vgg":
            self.net = VGGFeatures(depth=16, taps=VGG16_TAPS, normalize_input=False)
        else:
            self.net = AlexNetFeatures(taps=ALEXNET_TAPS, normalize_input=False)
        self.linear = _LPIPSLinear(_CHANNELS[net])
        with torch.no_grad():
            for w in self.linear.weights():
                w.fill_(1.0)
        self.linear.requires_grad_(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lpips_distance(pred, target, self.net, self.linear.weights())


def lpips_official_shapes(net: Literal["vgg", "alex"]) -> dict[str, tuple[int, ...]]:
    """The key -> shape table of lpips' ``weights/v0.1/{net}.pth``."""
    check_choice("net", net, ("vgg", "alex"))
    return {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(_CHANNELS[net])}


def load_lpips_weights(path_or_state_dict: str | os.PathLike | Mapping[str, Any], lpips: LPIPS) -> None:
    """Load lpips' linear layers (``weights/v0.1/alex.pth`` or ``vgg.pth``) into ``lpips.linear``, strictly.

    The file is read with ``torch.load(weights_only=True)`` (:func:`lib3d.nn.read_weight_file`) and must
    hold exactly ``lin0.model.1.weight`` .. ``lin4.model.1.weight`` with lpips' shapes for ``lpips``'s
    backbone.

    Raises:
        WeightFileError: unreadable file, missing/unexpected keys or wrong shapes (e.g. the other net's file).
        TypeError: ``lpips`` is not an :class:`LPIPS`.
    """
    if not isinstance(lpips, LPIPS):
        raise TypeError(f"lpips must be a lib3d LPIPS module, got {type(lpips).__name__}")
    what = f"LPIPS v0.1 linear layers ({lpips.net_type})"
    sd = state_dict_from(path_or_state_dict)
    check_state_dict({k: torch.empty(s, device="meta") for k, s in lpips_official_shapes(lpips.net_type).items()},
                     sd, what)
    strict_load(lpips.linear, sd, what)
