"""GAN parts: discriminators, adversarial losses, feature matching, the R1 penalty and EMA copies.

Dimension names: N batch, C channels, H/W height/width, S image size. Logits are raw discriminator
outputs (no sigmoid). Every loss takes either one logits tensor or the output of
:class:`MultiscaleDiscriminator` (a list per scale of feature lists whose last entry is the logits); with
several scales the loss is the mean over scales (SPADE / pix2pixHD).

Losses (``softplus(t) = log(1 + exp(t))``, means over all logits of a scale):

- non-saturating (Goodfellow et al. 2014; GIRAFFE's BCE): D: ``mean softplus(-real) + mean softplus(fake)``,
  G: ``mean softplus(-fake)``;
- hinge (Lim & Ye 2017; SPADE / SynSin): D: ``mean relu(1 - real) + mean relu(1 + fake)``, G: ``-mean fake``;
- feature matching (pix2pixHD): ``sum_scales sum_{layers but the last} mean |fake - real.detach()| / num_scales``;
- R1 (Mescheder et al. 2018): ``gamma * mean_n sum_{c,h,w} (d sum(real_logits) / d real_images)^2``: this
  is exactly GIRAFFE's ``reg = 10. * compute_grad2(d_real, x_real).mean()`` with ``gamma = 10``; the paper
  writes ``gamma_paper / 2 * E ||grad D||^2``, i.e. ``gamma = gamma_paper / 2``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_choice, check_shape, check_tensor
from lib3d.nn.blocks import spectral_norm

__all__ = [
    "EMA",
    "DCGANDiscriminator",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "ema_copy",
    "ema_update",
    "feature_matching_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
    "r1_penalty",
]

Logits = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


class DCGANDiscriminator(nn.Module):
    """GIRAFFE's ``DCDiscriminator``: ``log2(S) - 2`` 4x4 stride-2 convs (no bias, no norm, LeakyReLU 0.2)
    doubling the channels, then a 4x4 valid conv to one logit.

    Args:
        in_channels: image channels (3).
        image_size: S, a power of two >= 8.
        final_channels: channels of the last hidden layer (GIRAFFE's ``n_feat``, 512); the first layer
            has ``final_channels / 2**(n_layers - 1)``.
        base_channels: alternatively, the channels of the first layer (then ``final_channels`` is
            derived); give at most one of the two.

    Attributes ``blocks`` (``nn.ModuleList`` of the convs) and ``conv_out`` are GIRAFFE's names, so a
    GIRAFFE discriminator state dict loads unchanged.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, final_channels: int | None = None,
                 base_channels: int | None = None):
        super().__init__()
        if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size!r}")
        if final_channels is not None and base_channels is not None:
            raise ValueError("give final_channels or base_channels, not both")
        n_layers = int(math.log2(image_size)) - 2
        if base_channels is not None:
            final_channels = base_channels * 2 ** (n_layers - 1)
        final_channels = 512 if final_channels is None else final_channels
        if final_channels % 2 ** (n_layers - 1):
            raise ValueError(f"final_channels must be divisible by 2**(n_layers-1) = {2 ** (n_layers - 1)}, "
                             f"got {final_channels}")
        self.in_channels, self.image_size = int(in_channels), image_size
        widths = [final_channels // 2 ** (n_layers - 1 - i) for i in range(n_layers)]
        cins = [in_channels] + widths[:-1]
        self.blocks = nn.ModuleList(nn.Conv2d(ci, co, 4, 2, 1, bias=False) for ci, co in zip(cins, widths))
        self.conv_out = nn.Conv2d(final_channels, 1, 4, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, in_channels, S, S) float`` -> logits ``(N, 1)``."""
        check_shape("x", x, (None, self.in_channels, self.image_size, self.image_size), dtype="float")
        for conv in self.blocks:
            x = F.leaky_relu(conv(x), 0.2)
        return self.conv_out(x).reshape(x.shape[0], 1)


def _xavier_init(module: nn.Module, gain: float = 0.02) -> None:
    """SPADE / SynSin's ``init_weights("xavier", 0.02)``: conv weights xavier-normal with ``gain``, biases 0,
    batch-norm weights ``N(1, gain)``."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.xavier_normal_(w, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pixHD / SPADE) returning every intermediate feature map.

    ``model0`` = [conv 4x4/2 (bias), LeakyReLU 0.2]; ``model1 .. model{L}`` = [[conv 4x4 (stride 2, the
    last stride 1; no bias when normalised), norm], LeakyReLU 0.2] with channels doubling up to
    ``max_channels``; ``model{L+1}`` = [conv 4x4/1 to 1 channel]. Padding 2 throughout. Spectral norm
    (when asked) wraps the convolutions of ``model1 .. model{L}`` only, as in SPADE. SPADE / SynSin's
    ``n_layers_D`` is ``num_layers + 1``.

    Args:
        in_channels, num_layers (L, >= 1), base_channels, max_channels, norm (``"instance"`` without
        affine, ``"batch"``, ``"none"``), spectral.
    """

    def __init__(self, in_channels: int = 3, num_layers: int = 3, base_channels: int = 64,
                 norm: Literal["instance", "batch", "none"] = "instance", spectral: bool = False,
                 max_channels: int = 512):
        super().__init__()
        check_choice("norm", norm, ("instance", "batch", "none"))
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        self.in_channels = int(in_channels)
        nf = base_channels
        self.add_module("model0", nn.Sequential(nn.Conv2d(in_channels, nf, 4, 2, 2), nn.LeakyReLU(0.2)))
        for n in range(1, num_layers + 1):
            prev, nf = nf, min(nf * 2, max_channels)
            conv = nn.Conv2d(prev, nf, 4, 1 if n == num_layers else 2, 2, bias=(norm == "none"))
            if spectral:
                spectral_norm(conv)
            if norm == "none":
                layer = nn.Sequential(conv, nn.LeakyReLU(0.2))
            else:
                normed = nn.Sequential(conv, nn.InstanceNorm2d(nf) if norm == "instance" else nn.BatchNorm2d(nf))
                layer = nn.Sequential(normed, nn.LeakyReLU(0.2))
            self.add_module(f"model{n}", layer)
        self.add_module(f"model{num_layers + 1}", nn.Sequential(nn.Conv2d(nf, 1, 4, 1, 2)))
        self.num_layers = num_layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x: (N, in_channels, H, W) float`` -> ``[model0(x), model1(.), ..., logits (N, 1, h, w)]``."""
        check_shape("x", x, (None, self.in_channels, None, None), dtype="float")
        feats = []
        for layer in self.children():
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD / SPADE multiscale PatchGAN: ``discriminator_0`` sees the image, ``discriminator_i`` the
    image average-pooled ``i`` times (3x3, stride 2, padding 1, ``count_include_pad=False``).

    Args:
        in_channels, num_scales (>= 1), num_layers, base_channels, norm, spectral, max_channels: see
            :class:`NLayerDiscriminator`. SynSin: ``num_scales=2, num_layers=3, norm="instance",
            spectral=True``.

    Weights start as SPADE's ``init_weights("xavier", 0.02)``.
    """

    def __init__(self, in_channels: int = 3, num_scales: int = 2, num_layers: int = 3, base_channels: int = 64,
                 norm: Literal["instance", "batch", "none"] = "instance", spectral: bool = False,
                 max_channels: int = 512):
        super().__init__()
        if not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"num_scales must be an int >= 1, got {num_scales!r}")
        self.num_scales = num_scales
        for i in range(num_scales):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(in_channels, num_layers, base_channels,
                                                                      norm, spectral, max_channels))
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """``x: (N, C, H, W) float`` -> per scale (finest first) the list of features; the last is the logits."""
        out = []
        for i, d in enumerate(self.children()):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def _per_scale(logits: Logits, name: str) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    if not isinstance(logits, Sequence) or len(logits) == 0:
        raise TypeError(f"{name} must be a tensor or a non-empty list of tensors / feature lists")
    out = []
    for i, item in enumerate(logits):
        t = item[-1] if isinstance(item, Sequence) and not isinstance(item, torch.Tensor) else item
        check_tensor(f"{name}[{i}]", t, dtype="float")
        out.append(t)
    return out


def _scale_mean(fn, *groups: list[torch.Tensor]) -> torch.Tensor:
    terms = [fn(*ts) for ts in zip(*groups)]
    return torch.stack(terms).mean()


def nonsaturating_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator BCE: ``mean softplus(-real) + mean softplus(fake)`` (mean over scales).

    Args:
        real_logits, fake_logits: logits of any shape, or multiscale outputs with the same scales.

    Returns:
        scalar.
    """
    r, f = _per_scale(real_logits, "real_logits"), _per_scale(fake_logits, "fake_logits")
    if len(r) != len(f):
        raise ValueError(f"real_logits and fake_logits must have the same scales, got {len(r)} and {len(f)}")
    return _scale_mean(lambda a, b: F.softplus(-a).mean() + F.softplus(b).mean(), r, f)


def nonsaturating_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Generator non-saturating loss ``mean softplus(-fake)`` (mean over scales); scalar."""
    return _scale_mean(lambda a: F.softplus(-a).mean(), _per_scale(fake_logits, "fake_logits"))


def hinge_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss ``mean relu(1 - real) + mean relu(1 + fake)`` (mean over scales); scalar."""
    r, f = _per_scale(real_logits, "real_logits"), _per_scale(fake_logits, "fake_logits")
    if len(r) != len(f):
        raise ValueError(f"real_logits and fake_logits must have the same scales, got {len(r)} and {len(f)}")
    return _scale_mean(lambda a, b: F.relu(1 - a).mean() + F.relu(1 + b).mean(), r, f)


def hinge_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Generator hinge loss ``-mean fake`` (mean over scales); scalar."""
    return _scale_mean(lambda a: -a.mean(), _per_scale(fake_logits, "fake_logits"))


def feature_matching_loss(fake_features: Sequence, real_features: Sequence) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching: L1 between intermediate features, reals detached.

    ``sum_s sum_{j < last} mean |fake[s][j] - real[s][j].detach()| / num_scales`` (the logits, the last
    entry of each scale, are skipped; multiply by pix2pixHD / SPADE's ``lambda_feat`` = 10 yourself).

    Args:
        fake_features, real_features: :class:`MultiscaleDiscriminator` outputs (lists per scale of
            feature lists), or one scale's feature list.

    Returns:
        scalar.
    """
    def scales(x, name):
        if not isinstance(x, Sequence) or len(x) == 0:
            raise TypeError(f"{name} must be a non-empty list of feature lists")
        return [x] if isinstance(x[0], torch.Tensor) else list(x)

    fs, rs = scales(fake_features, "fake_features"), scales(real_features, "real_features")
    if len(fs) != len(rs) or any(len(a) != len(b) for a, b in zip(fs, rs)):
        raise ValueError("fake_features and real_features must have the same scales and layers")
    total = None
    for s, (fa, ra) in enumerate(zip(fs, rs)):
        for j, (a, b) in enumerate(zip(fa[:-1], ra[:-1])):
            check_shapes_equal = tuple(a.shape) == tuple(b.shape)
            if not check_shapes_equal:
                raise ValueError(f"fake_features[{s}][{j}] has shape {tuple(a.shape)} but real_features[{s}][{j}] "
                                 f"has {tuple(b.shape)}")
            term = (a - b.detach()).abs().mean()
            total = term if total is None else total + term
    if total is None:
        return fs[0][-1].new_zeros(())
    return total / len(fs)


def r1_penalty(real_logits: Logits, real_images: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """R1 gradient penalty on real data: ``gamma * mean_n sum_{c,h,w} g^2``, ``g = d sum(real_logits) / d x``.

    GIRAFFE's ``10. * compute_grad2(d_real, x_real).mean()`` is ``gamma = 10``; Mescheder et al.'s
    ``gamma_paper / 2 * E ||grad||^2`` is ``gamma = gamma_paper / 2``. The graph is kept
    (``create_graph=True``) so the penalty trains the discriminator.

    Args:
        real_logits: discriminator outputs on ``real_images`` (a tensor, or multiscale outputs: the logits
            of all scales are summed).
        real_images: ``(N, ...) float`` with ``requires_grad=True``, the input the logits were computed from.
        gamma: weight.

    Returns:
        scalar.

    Raises:
        ValueError: ``real_images`` does not require gradients.
    """
    check_tensor("real_images", real_images, dtype="float")
    if not real_images.requires_grad:
        raise ValueError("real_images must require gradients (call real_images.requires_grad_() before the "
                         "discriminator)")
    total = sum(t.sum() for t in _per_scale(real_logits, "real_logits"))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return gamma * grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float,
               buffers: Literal["copy", "average"] = "copy") -> None:
    """Exponential moving average of ``source`` into ``target``: ``t <- decay * t + (1 - decay) * s``.

    Every parameter is averaged. Buffers are copied (``"copy"``, default: batch-norm statistics follow the
    source, and spectral-norm ``_u``/``_v`` vectors stay unit vectors) or, for floating buffers, averaged
    like the parameters (``"average"``; integer buffers are copied).

    Args:
        target: the EMA module (same structure as ``source``).
        source: the trained module.
        decay: in [0, 1]; 0 copies ``source``, 1 keeps ``target``.
        buffers: ``"copy"`` or ``"average"``.

    Raises:
        ValueError: a bad ``decay`` or mismatched parameter / buffer names.
    """
    if not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    check_choice("buffers", buffers, ("copy", "average"))
    tp, sp = dict(target.named_parameters()), dict(source.named_parameters())
    tb, sb = dict(target.named_buffers()), dict(source.named_buffers())
    if tp.keys() != sp.keys() or tb.keys() != sb.keys():
        raise ValueError("target and source must have the same parameter and buffer names")
    for k, t in tp.items():
        t.lerp_(sp[k].detach().to(t.dtype), 1.0 - float(decay))
    for k, t in tb.items():
        s = sb[k].detach()
        if buffers == "average" and t.is_floating_point():
            t.lerp_(s.to(t.dtype), 1.0 - float(decay))
        else:
            t.copy_(s)


def ema_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with ``requires_grad=False`` everywhere (the start of an EMA)."""
    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out


class EMA(nn.Module):
    """Holds a frozen EMA copy of a module (``self.module``) and updates it from the trained one.

    Args:
        source: the module to track (copied now).
        decay: EMA decay per :meth:`update` (GIRAFFE: 0.999).
        buffers: see :func:`ema_update`.
    """

    def __init__(self, source: nn.Module, decay: float = 0.999, buffers: Literal["copy", "average"] = "copy"):
        super().__init__()
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        check_choice("buffers", buffers, ("copy", "average"))
        self.module = ema_copy(source)
        self.decay = float(decay)
        self.buffers_mode = buffers

    def update(self, source: nn.Module) -> None:
        """``ema_update(self.module, source, self.decay)``."""
        ema_update(self.module, source, self.decay, self.buffers_mode)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
