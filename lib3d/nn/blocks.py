"""Generator building blocks: spectral norm, SynSin's noise-conditioned batch norm, BigGAN-style residual
blocks.

Dimension names: N batch, C channels, H/W height/width, Z noise dimension.

``NoiseBatchNorm2d`` is SynSin's ``LinearNoiseLayer`` (after BigGAN's conditional batch norm): each call
draws ``z ~ N(0, I)`` of shape ``(N, Z)`` (in training and in evaluation alike) and normalises

    y = (x - mean) / sqrt(var + eps) * (1 + z @ W_gain^T) + z @ W_bias^T

per sample and channel, with two bias-free linear maps ``gain``, ``bias`` (``(C, Z)`` weights). In
training ``mean``/``var`` are the batch's (biased variance) and the stored statistics follow them with
``momentum``; in evaluation the stored statistics are used (divided by ``accumulation_counter`` when
standing statistics are accumulated). Attribute names are SynSin's (``gain.weight``, ``bias.weight``,
``bn.stored_mean``, ``bn.stored_var``, ``bn.accumulation_counter``).

``ResBlock`` is SynSin's ``ResNet_Block``: ``ch_a = [norm, ReLU, conv3x3, norm, ReLU, conv3x3, resample]``
plus a shortcut ``ch_b = [conv1x1, resample]`` when the channels change or the block resamples, else the
identity; resampling comes last in both branches (``"down"``: 3x3 average pool, stride 2, padding 1;
``"up"``: x2 bilinear). ``ch_a`` / ``ch_b`` are ``nn.Sequential`` with SynSin's indices, so a SynSin
state dict maps key for key (old-style spectral-norm keys through :func:`spectral_norm_rules`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lib3d._checks import check_choice, check_shape

__all__ = ["NoiseBatchNorm2d", "ResBlock", "noise_batch_norm", "spectral_norm", "spectral_norm_rules"]


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of ``module.<name>`` via torch's parametrization.

    The weight becomes ``W / sigma(W)`` with ``sigma`` estimated by power iteration (one step per
    training-mode forward). State-dict keys become ``<name>`` -> ``parametrizations.<name>.original``,
    ``parametrizations.<name>.0._u``, ``parametrizations.<name>.0._v``; :func:`spectral_norm_rules`
    maps the old ``torch.nn.utils.spectral_norm`` keys (``weight_orig``, ``weight_u``, ``weight_v``) that
    SynSin and SPADE checkpoints hold.

    Returns:
        ``module`` (modified in place).
    """
    return nn.utils.parametrizations.spectral_norm(module, name, n_power_iterations=n_power_iterations, eps=eps)


def spectral_norm_rules(name: str = "weight") -> tuple[tuple[str, str], ...]:
    """:func:`lib3d.nn.remap_keys` rules from old-style spectral-norm keys to parametrization keys:
    ``*.weight_orig`` -> ``*.parametrizations.weight.original``, ``*.weight_u`` -> ``*.parametrizations.weight.0._u``,
    ``*.weight_v`` -> ``*.parametrizations.weight.0._v``."""
    return ((rf"(.*\.)?{name}_orig$", rf"\1parametrizations.{name}.original"),
            (rf"(.*\.)?{name}_u$", rf"\1parametrizations.{name}.0._u"),
            (rf"(.*\.)?{name}_v$", rf"\1parametrizations.{name}.0._v"))


def noise_batch_norm(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, gain: torch.Tensor,
                     bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(x - mean) * rsqrt(var + eps) * gain + bias``.

    Args:
        x: ``(N, C, H, W) float``.
        mean, var: ``(C,) float`` statistics.
        gain, bias: ``(N, C) float`` per-sample affine parameters.

    Returns:
        ``(N, C, H, W)``.
    """
    scale = torch.rsqrt(var + eps)[None, :, None, None] * gain[:, :, None, None]
    return (x - mean[None, :, None, None]) * scale + bias[:, :, None, None]


class _StandingBatchNorm(nn.Module):
    """Statistics of :class:`NoiseBatchNorm2d` (SynSin's ``bn``): ``stored_mean``, ``stored_var``,
    ``accumulation_counter`` buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.accumulate_standing = False
        self.register_buffer("stored_mean", torch.zeros(num_features))
        self.register_buffer("stored_var", torch.ones(num_features))
        self.register_buffer("accumulation_counter", torch.zeros(1))

    def forward(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)
            var, mean = var.to(x.dtype), mean.to(x.dtype)
            with torch.no_grad():
                if self.accumulate_standing:
                    self.stored_mean.add_(mean.detach())
                    self.stored_var.add_(var.detach())
                    self.accumulation_counter.add_(1.0)
                else:
                    self.stored_mean.lerp_(mean.detach().to(self.stored_mean.dtype), self.momentum)
                    self.stored_var.lerp_(var.detach().to(self.stored_var.dtype), self.momentum)
            return noise_batch_norm(x, mean, var, gain, bias, self.eps)
        mean, var = self.stored_mean, self.stored_var
        if self.accumulate_standing:
            mean = mean / self.accumulation_counter
            var = var / self.accumulation_counter
        return noise_batch_norm(x, mean.to(x.dtype), var.to(x.dtype), gain, bias, self.eps)


class NoiseBatchNorm2d(nn.Module):
    """SynSin's noise-conditioned batch norm (see the module docstring).

    Args:
        num_features: C.
        noise_dim: Z (SynSin: 20).
        eps, momentum: batch-norm constants.
        spectral: spectral-normalise the two linear maps (SynSin does when ``norm_G`` says "spectral").
    """

    def __init__(self, num_features: int, noise_dim: int = 20, eps: float = 1e-5, momentum: float = 0.1,
                 spectral: bool = False):
        super().__init__()
        self.num_features = int(num_features)
        self.noise_dim = int(noise_dim)
        self.gain = nn.Linear(noise_dim, num_features, bias=False)
        self.bias = nn.Linear(noise_dim, num_features, bias=False)
        if spectral:
            spectral_norm(self.gain)
            spectral_norm(self.bias)
        self.bn = _StandingBatchNorm(num_features, eps, momentum)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalise ``x`` with noise-predicted gains and biases.

        Args:
            x: ``(N, C, H, W) float``.
            noise: ``(N, Z) float``; drawn from ``N(0, I)`` with ``generator`` (on ``x``'s device) if None.
            generator: random generator for the noise.

        Returns:
            ``(N, C, H, W)``.
        """
        sizes = check_shape("x", x, ("N", self.num_features, None, None), dtype="float")
        if noise is None:
            noise = torch.randn(sizes["N"], self.noise_dim, generator=generator, device=x.device, dtype=x.dtype)
        else:
            check_shape("noise", noise, (sizes["N"], self.noise_dim), dtype="float")
        gain = 1.0 + self.gain(noise)
        bias = self.bias(noise)
        return self.bn(x, gain, bias)


def _norm(kind: str, channels: int, spectral: bool, noise_dim: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "noise_batch":
        return NoiseBatchNorm2d(channels, noise_dim, spectral=spectral)
    return nn.Identity()


def _resample(kind: str) -> nn.Module:
    if kind == "down":
        return nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
    if kind == "up":
        return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    return nn.Identity()


class ResBlock(nn.Module):
    """BigGAN / SynSin residual block: norm-ReLU-conv3x3-norm-ReLU-conv3x3-resample + (1x1 conv-resample).

    Args:
        in_channels, out_channels: channels in and out.
        resample: ``"none"``, ``"up"`` (x2 bilinear) or ``"down"`` (3x3 average pool, stride 2, pad 1;
            output ``ceil(H / 2)``).
        norm: ``"batch"``, ``"instance"``, ``"noise_batch"`` (:class:`NoiseBatchNorm2d`, SynSin) or ``"none"``.
        spectral: spectral-normalise every convolution (and the noise norms' linear maps).
        noise_dim: Z of the noise norms.
    """

    def __init__(self, in_channels: int, out_channels: int, resample: Literal["none", "up", "down"] = "none",
                 norm: Literal["batch", "instance", "noise_batch", "none"] = "noise_batch",
                 spectral: bool = False, noise_dim: int = 20):
        super().__init__()
        check_choice("resample", resample, ("none", "up", "down"))
        check_choice("norm", norm, ("batch", "instance", "noise_batch", "none"))
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.resample = resample

        def conv(cin, cout, k):
            c = nn.Conv2d(cin, cout, k, padding=k // 2)
            return spectral_norm(c) if spectral else c

        self.ch_a = nn.Sequential(
            _norm(norm, in_channels, spectral, noise_dim), nn.ReLU(), conv(in_channels, out_channels, 3),
            _norm(norm, out_channels, spectral, noise_dim), nn.ReLU(), conv(out_channels, out_channels, 3),
            _resample(resample))
        if resample != "none" or in_channels != out_channels:
            self.ch_b = nn.Sequential(conv(in_channels, out_channels, 1), _resample(resample))
        else:
            self.ch_b = nn.Identity()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x: (N, in, H, W) float`` -> ``(N, out, H', W')`` (``H' = 2H`` up, ``ceil(H/2)`` down, else H);
        ``generator`` draws the noise of noise norms."""
        check_shape("x", x, (None, self.in_channels, None, None), dtype="float")
        a = x
        for layer in self.ch_a:
            a = layer(a, generator=generator) if isinstance(layer, NoiseBatchNorm2d) else layer(a)
        return a + self.ch_b(x)
