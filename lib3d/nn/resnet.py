"""ResNet-18/34/50/101 backbones returning the stage features C2-C5 (torchvision's layout and init).

Dimension names: N batch, C channels, H/W image height/width. Input images are ``(N, 3, H, W)`` float
(normalised as the weights expect: torchvision's ImageNet mean/std for torchvision files, detectron2's
BGR pixel means for MSRA files); the stage features are

====  ==========  ============================  ======
name  module      channels (18/34 | 50/101)     stride
====  ==========  ============================  ======
c2    ``layer1``  64 | 256                      4
c3    ``layer2``  128 | 512                     8
c4    ``layer3``  256 | 1024                    16
c5    ``layer4``  512 | 2048                    32
====  ==========  ============================  ======

Attribute names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...),
so torchvision's ``resnet*.pth`` files load unchanged (``lib3d.nn.load_resnet`` drops ``fc.*``), and
:func:`detectron2_resnet_rules` renames detectron2 / Mesh R-CNN checkpoints
(``backbone.bottom_up.res2.0.conv1.norm.weight`` -> ``layer1.0.bn1.weight``). torchvision puts the stride
of a bottleneck in its 3x3 convolution (ResNet v1.5); MSRA's original weights, which detectron2 and Mesh
R-CNN use, put it in the first 1x1 (``stride_in_1x1=True``).

``FrozenBatchNorm2d`` (detectron2's) is a batch norm with fixed statistics and affine parameters, all
buffers: ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, the same function as an
eval-mode ``BatchNorm2d``; it loads the same keys (``num_batches_tracked`` is ignored).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_choice, check_shape

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "FrozenBatchNorm2d",
    "ResNet",
    "convert_frozen_batchnorm",
    "detectron2_resnet_rules",
    "frozen_batch_norm",
    "resnet",
]

# depth -> (block kind, blocks per stage)
_SPECS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
STAGES = ("c2", "c3", "c4", "c5")


def frozen_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                      running_var: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch norm with fixed statistics: ``(x - mean) * rsqrt(var + eps) * weight + bias`` per channel.

    Args:
        x: ``(N, C, ...) float``.
        weight, bias, running_mean, running_var: ``(C,) float``.
        eps: added to the variance.

    Returns:
        ``(N, C, ...)`` like ``x``.
    """
    scale = weight * torch.rsqrt(running_var + eps)
    shift = bias - running_mean * scale
    view = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(view).to(x.dtype) + shift.view(view).to(x.dtype)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm whose statistics and affine parameters are fixed buffers (detectron2 semantics).

    Loads ``weight``, ``bias``, ``running_mean``, ``running_var`` of a ``BatchNorm2d`` state dict and
    ignores ``num_batches_tracked``. Equal to ``BatchNorm2d(...).eval()`` with the same tensors.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frozen_batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d | nn.SyncBatchNorm) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn``'s current affine parameters and running statistics."""
        out = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                out.weight.copy_(bn.weight)
                out.bias.copy_(bn.bias)
            if bn.track_running_stats:
                out.running_mean.copy_(bn.running_mean)
                out.running_var.copy_(bn.running_var)
        return out.to(device=bn.running_mean.device if bn.running_mean is not None else None)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` (or ``module`` itself) by a
    ``FrozenBatchNorm2d``.

    Returns:
        ``module`` with its batch norms replaced in place, or a new ``FrozenBatchNorm2d`` if ``module``
        itself is a batch norm.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _norm(kind: str, channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind == "frozen_bn" else nn.BatchNorm2d(channels)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual (ResNet-18/34); ``downsample`` is a 1x1 conv + norm when
    the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "bn",
                 stride_in_1x1: bool = False):
        super().__init__()
        del stride_in_1x1  # only bottlenecks have a 1x1 convolution to place the stride in
        self.conv1 = _conv(in_channels, channels, 3, stride)
        self.bn1 = _norm(norm, channels)
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = _norm(norm, channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(_conv(in_channels, channels, 1, stride), _norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 bottleneck with a residual (ResNet-50/101); output ``4 * channels``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "bn",
                 stride_in_1x1: bool = False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 1, s1)
        self.bn1 = _norm(norm, channels)
        self.conv2 = _conv(channels, channels, 3, s3)
        self.bn2 = _norm(norm, channels)
        self.conv3 = _conv(channels, out, 1)
        self.bn3 = _norm(norm, out)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(_conv(in_channels, out, 1, stride), _norm(norm, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ResNet backbone: stem (7x7/2 conv, norm, ReLU, 3x3/2 max pool) and four stages.

    Args:
        depth: 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        norm: ``"bn"`` (trainable ``BatchNorm2d``) or ``"frozen_bn"`` (``FrozenBatchNorm2d`` everywhere,
            detectron2's default for detection).
        freeze_at: detectron2's ``FREEZE_AT``: 0 trains everything; 1 freezes the stem; k >= 2 freezes
            the stem and stages c2 .. c{k} (``requires_grad=False`` and their batch norms frozen).
        stride_in_1x1: put a bottleneck's stride in its first 1x1 conv (MSRA / detectron2 weights)
            instead of the 3x3 (torchvision).
        zero_init_residual: start the last norm of every block at zero (torchvision's option).
        out_features: which of ``"c2".."c5"`` ``forward`` returns; stages past the last are still built
            (so the state dict stays complete) but not run.

    Attributes:
        out_channels: ``{"c2": ..., "c5": ...}`` channels of each stage.
        strides: ``{"c2": 4, "c3": 8, "c4": 16, "c5": 32}``.
    """

    def __init__(self, depth: Literal[18, 34, 50, 101] = 50, norm: Literal["bn", "frozen_bn"] = "bn",
                 freeze_at: int = 0, stride_in_1x1: bool = False, zero_init_residual: bool = False,
                 out_features: tuple[str, ...] = STAGES):
        super().__init__()
        check_choice("depth", depth, tuple(_SPECS))
        check_choice("norm", norm, ("bn", "frozen_bn"))
        if not isinstance(freeze_at, int) or not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be an int in [0, 5], got {freeze_at!r}")
        out_features = tuple(out_features)
        if not out_features or any(f not in STAGES for f in out_features):
            raise ValueError(f"out_features must be a non-empty subset of {list(STAGES)}, got {out_features}")
        self.depth = depth
        self.freeze_at = freeze_at
        self.out_features = tuple(f for f in STAGES if f in out_features)
        kind, counts = _SPECS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(norm, 64)
        in_ch = 64
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        for i, (n, width) in enumerate(zip(counts, (64, 128, 256, 512))):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and i > 0) else 1
                blocks.append(block(in_ch, width, stride, norm, stride_in_1x1))
                in_ch = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels[STAGES[i]] = in_ch
            self.strides[STAGES[i]] = 4 * 2 ** i
        self._init(zero_init_residual)
        self._freeze(freeze_at)

    def _init(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if last is not None:
                    with torch.no_grad():
                        last.weight.zero_()

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at >= 1:
            for name in ("conv1", "bn1"):
                mod = getattr(self, name)
                mod.requires_grad_(False)
                setattr(self, name, convert_frozen_batchnorm(mod))
        for i in range(1, min(freeze_at, 5)):
            stage = getattr(self, f"layer{i}")
            stage.requires_grad_(False)
            convert_frozen_batchnorm(stage)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage features.

        Args:
            x: ``(N, 3, H, W) float`` images (any H, W >= 1; features are ``ceil``-halved per stride 2).

        Returns:
            ``{"c2": (N, C2, H/4, W/4), ..., "c5": (N, C5, H/32, W/32)}`` for the requested
            ``out_features``.
        """
        check_shape("x", x, (None, 3, None, None), dtype="float")
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        out = {}
        last = self.out_features[-1]
        for i, name in enumerate(STAGES):
            x = getattr(self, f"layer{i + 1}")(x)
            if name in self.out_features:
                out[name] = x
            if name == last:
                break
        return out


def resnet(depth: Literal[18, 34, 50, 101], norm: Literal["bn", "frozen_bn"] = "bn", **kwargs) -> ResNet:
    """Build a :class:`ResNet` (see its arguments); ``resnet(50)`` has torchvision ResNet-50's layout."""
    return ResNet(depth, norm, **kwargs)


def detectron2_resnet_rules(prefix: str = "backbone.bottom_up.") -> tuple[tuple[str, str], ...]:
    """:func:`lib3d.nn.remap_keys` rules from detectron2's ResNet keys to lib3d's (torchvision's).

    ``{prefix}stem.conv1.weight`` -> ``conv1.weight``, ``{prefix}stem.conv1.norm.*`` -> ``bn1.*``,
    ``{prefix}res{s}.{b}.conv{k}.norm.*`` -> ``layer{s-1}.{b}.bn{k}.*``,
    ``{prefix}res{s}.{b}.shortcut.weight`` -> ``layer{s-1}.{b}.downsample.0.weight``,
    ``{prefix}res{s}.{b}.shortcut.norm.*`` -> ``layer{s-1}.{b}.downsample.1.*``.
    Keys outside ``prefix`` are left alone (drop or rename them with further rules).
    """
    p = prefix.replace(".", r"\.")
    rules = [(p + r"stem\.conv1\.norm\.", "bn1."), (p + r"stem\.conv1\.", "conv1.")]
    for s in (2, 3, 4, 5):
        rules += [
            (p + rf"res{s}\.(\d+)\.shortcut\.norm\.", rf"layer{s - 1}.\1.downsample.1."),
            (p + rf"res{s}\.(\d+)\.shortcut\.", rf"layer{s - 1}.\1.downsample.0."),
            (p + rf"res{s}\.(\d+)\.conv(\d)\.norm\.", rf"layer{s - 1}.\1.bn\2."),
            (p + rf"res{s}\.(\d+)\.conv(\d)\.", rf"layer{s - 1}.\1.conv\2."),
        ]
    return tuple(rules)
