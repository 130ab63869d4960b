"""GIRAFFE's training iteration (the official ``Trainer.train_step``), as functions over explicit modules.

One iteration is (Niemeyer & Geiger 2021, official ``im2scene/giraffe/training.py``):

1. generator step: ``fake = G.sample(B)`` (training mode: jittered depths, density noise);
   ``L_G = mean softplus(-D(fake))`` (non-saturating); step G's optimizer (RMSprop, 5e-4); then
   ``G_ema <- 0.999 G_ema + 0.001 G``;
2. discriminator step: ``L_D = mean softplus(-D(real)) + mean softplus(D(fake')) + R1``, with a fresh
   ``fake'`` drawn without gradients and ``R1 = gamma * mean_n |d sum D(real) / d real_n|^2`` (gamma 10);
   step D's optimizer (RMSprop, 1e-4).

Losses are means over the batch, so averaging the gradients of ``W`` workers that each hold ``B / W``
samples gives the gradients of one worker holding ``B`` (pass ``reduce_gradients`` to average them).

Images are ``(B, 3, S, S)`` in [0, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from lib3d.nn.gan import ema_update, nonsaturating_g_loss, r1_penalty

__all__ = ["DiscriminatorLosses", "Generator2D", "discriminator_losses", "generator_loss", "train_iteration"]


def generator_loss(discriminator: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean softplus(-D(fake))`` (GIRAFFE's ``compute_bce(d_fake, 1)``)."""
    return nonsaturating_g_loss(discriminator(fake))


class DiscriminatorLosses(NamedTuple):
    """Terms of the discriminator loss (scalars): ``total = real + fake + r1``."""

    total: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    r1: torch.Tensor


def discriminator_losses(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                         r1_gamma: float = 10.0) -> DiscriminatorLosses:
    """``mean softplus(-D(real)) + mean softplus(D(fake)) + r1_gamma * R1(real)`` (fake is detached).

    Args:
        discriminator: D.
        real: ``(B, 3, S, S)`` real images.
        fake: ``(B', 3, S, S)`` generated images.
        r1_gamma: weight of the R1 penalty (0: none).

    Returns:
        ``DiscriminatorLosses``.
    """
    real = real.detach().requires_grad_(r1_gamma > 0)
    d_real = discriminator(real)
    loss_real = torch.nn.functional.softplus(-d_real).mean()
    r1 = r1_penalty(d_real, real, r1_gamma) if r1_gamma > 0 else d_real.new_zeros(())
    loss_fake = torch.nn.functional.softplus(discriminator(fake.detach())).mean()
    return DiscriminatorLosses(loss_real + loss_fake + r1, loss_real, loss_fake, r1)


def train_iteration(generator: torch.nn.Module, generator_ema: torch.nn.Module | None,
                    discriminator: torch.nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    real: torch.Tensor, rng: torch.Generator | None = None, *, r1_gamma: float = 10.0,
                    ema_decay: float = 0.999,
                    reduce_gradients: Callable[[torch.nn.Module], None] | None = None) -> dict[str, torch.Tensor]:
    """One GIRAFFE iteration (generator step, EMA update, discriminator step); see the module docstring.

    Args:
        generator: a ``GiraffeGenerator`` (anything with ``sample(n, generator, mode)``).
        generator_ema: its EMA copy (None: no EMA).
        discriminator: D.
        opt_g, opt_d: the optimizers of G and D.
        real: ``(B, 3, S, S)`` real images of this worker; B fakes are drawn for each step.
        rng: random generator of the latents, poses and rendering noise.
        r1_gamma: R1 weight.
        ema_decay: EMA decay.
        reduce_gradients: called on G and on D after each backward (data-parallel gradient averaging).

    Returns:
        ``{"loss_g", "loss_d", "loss_d_real", "loss_d_fake", "r1"}`` detached scalars.
    """
    n = real.shape[0]
    # 1. generator step (D's parameters frozen so that no gradients are accumulated for them)
    discriminator.requires_grad_(False)
    generator.requires_grad_(True)
    opt_g.zero_grad(set_to_none=True)
    loss_g = generator_loss(discriminator, generator.sample(n, rng, mode="training"))
    loss_g.backward()
    if reduce_gradients is not None:
        reduce_gradients(generator)
    opt_g.step()
    if generator_ema is not None:
        ema_update(generator_ema, generator, ema_decay)
    # 2. discriminator step
    generator.requires_grad_(False)
    discriminator.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = generator.sample(n, rng, mode="training")
    d = discriminator_losses(discriminator, real, fake, r1_gamma)
    d.total.backward()
    if reduce_gradients is not None:
        reduce_gradients(discriminator)
    opt_d.step()
    generator.requires_grad_(True)
    return {"loss_g": loss_g.detach(), "loss_d": (d.real + d.fake).detach(), "loss_d_real": d.real.detach(),
            "loss_d_fake": d.fake.detach(), "r1": d.r1.detach()}


class Generator2D(torch.nn.Module):
    """The 2D GAN baseline of the paper's comparison: a convolutional generator trained with the same
    discriminator, losses and budget as GIRAFFE (no 3D structure, no controllability).

    ``z (N, Z) -> Linear -> (N, C0, 4, 4)``, then ``log2(S / 4)`` blocks of nearest x2 upsampling + 3x3 conv +
    LeakyReLU(0.2) halving the channels (at least ``min_channels``), a 3x3 conv to RGB and a sigmoid.

    Args:
        z_dim: Z.
        img_size: S (a power of two >= 8).
        base_channels: C0.
        min_channels: fewest channels of a block.
    """

    def __init__(self, z_dim: int = 256, img_size: int = 64, base_channels: int = 256, min_channels: int = 32):
        super().__init__()
        n_up = int(math.log2(img_size)) - 2
        if img_size < 8 or 2 ** (n_up + 2) != img_size:
            raise ValueError(f"img_size must be a power of two >= 8, got {img_size}")
        self.z_dim, self.img_size = z_dim, img_size
        widths = [max(base_channels // 2 ** i, min_channels) for i in range(n_up + 1)]
        self.fc = torch.nn.Linear(z_dim, widths[0] * 16)
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(a, b, 3, 1, 1) for a, b in itertools.pairwise(widths))
        self.conv_img = torch.nn.Conv2d(widths[-1], 3, 3, 1, 1)

    def _device(self) -> torch.device:
        return self.fc.weight.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, Z)`` codes -> ``(N, 3, S, S)`` images in [0, 1]."""
        x = torch.nn.functional.leaky_relu(self.fc(z), 0.2).reshape(z.shape[0], -1, 4, 4)
        for conv in self.convs:
            x = torch.nn.functional.leaky_relu(conv(torch.nn.functional.interpolate(x, scale_factor=2.0)), 0.2)
        return torch.sigmoid(self.conv_img(x))

    def sample(self, n: int, generator: torch.Generator | None = None, mode: str = "training",
               temperature: float = 1.0) -> torch.Tensor:
        """``n`` images from ``N(0, temperature^2)`` codes (``mode`` is accepted for GIRAFFE's signature)."""
        del mode
        return self(torch.randn(n, self.z_dim, generator=generator, device=self._device()) * temperature)
