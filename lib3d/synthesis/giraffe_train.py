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

from collections.abc import Callable
from typing import NamedTuple

import torch

from lib3d.nn.gan import ema_update, nonsaturating_g_loss, r1_penalty

__all__ = ["DiscriminatorLosses", "discriminator_losses", "generator_loss", "train_iteration"]


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
