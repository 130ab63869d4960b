"""Positional encodings (dimension names in ``lib3d.fields``)."""

from __future__ import annotations

import math

import torch

from lib3d._checks import check_shape

__all__ = ["HarmonicEmbedding", "harmonic_embedding"]


def harmonic_embedding(x: torch.Tensor, frequencies: torch.Tensor, append_input: bool,
                       diag_cov: torch.Tensor | None = None) -> torch.Tensor:
    """NeRF's positional encoding ``[sin(f_k x_d), cos(f_k x_d), x]`` (Mildenhall et al. 2020, eq. 4), or
    MipNeRF's integrated positional encoding when ``diag_cov`` is given.

    Layout (PyTorch3D's): ``[sin(x_0 f_0) .. sin(x_0 f_{K-1}), sin(x_1 f_0), ..., cos(x_0 f_0), ...]``
    then ``x`` when ``append_input``; ``cos(t)`` is computed as ``sin(t + pi/2)`` as PyTorch3D does.
    With ``diag_cov`` (the per-coordinate variances of a Gaussian around ``x``), each term is the expected
    value of the encoding under that Gaussian (Barron et al. 2021, eq. 14):
    ``E[sin(f_k x_d)] = exp(-f_k^2 var_d / 2) sin(f_k x_d)``, likewise for the cosines.

    Args:
        x: ``(..., dim)`` float.
        frequencies: ``(K,)`` float.
        append_input: append ``x`` itself.
        diag_cov: optional ``(..., dim)`` float non-negative variances (broadcast against ``x``).

    Returns:
        ``(..., dim * (2 K + append_input))`` float.
    """
    check_shape("x", x, (..., None), dtype="float")
    embed = x[..., None] * frequencies
    shift = torch.tensor([0.0, 0.5 * math.pi], dtype=x.dtype, device=x.device)
    embed = (embed[..., None, :, :] + shift[:, None, None]).sin()  # (..., 2, dim, K)
    if diag_cov is not None:
        check_shape("diag_cov", diag_cov, (..., x.shape[-1]), dtype="float")
        damping = torch.exp(-0.5 * diag_cov[..., None] * frequencies**2)  # (..., dim, K)
        embed = embed * damping[..., None, :, :]
    embed = embed.reshape(*embed.shape[:-3], -1)
    return torch.cat([embed, x.expand(*embed.shape[:-1], x.shape[-1])], dim=-1) if append_input else embed


class HarmonicEmbedding(torch.nn.Module):
    """PyTorch3D's ``HarmonicEmbedding``: frequencies ``omega_0 * 2^k`` (logspace) or a linspace.

    Args:
        n_harmonic_functions: ``K``.
        omega_0: base frequency (the book's chapter 6 uses 60 functions with ``omega_0 = 0.1``).
        logspace: ``omega_0 * 2^k`` for k < K; else ``omega_0 * linspace(1, 2^(K-1), K)``.
        append_input: append the input to the embedding.

    Example:
        >>> emb = HarmonicEmbedding(n_harmonic_functions=6, append_input=True)
        >>> emb(torch.zeros(5, 3)).shape   # (5, 3 * (2 * 6 + 1))
    """

    def __init__(self, n_harmonic_functions: int = 6, omega_0: float = 1.0, logspace: bool = True,
                 append_input: bool = True) -> None:
        super().__init__()
        if logspace:
            freqs = 2.0 ** torch.arange(n_harmonic_functions, dtype=torch.float32)
        else:
            freqs = torch.linspace(1.0, 2.0 ** (n_harmonic_functions - 1), n_harmonic_functions, dtype=torch.float32)
        self.register_buffer("_frequencies", freqs * omega_0, persistent=False)
        self.append_input = append_input

    @staticmethod
    def get_output_dim_static(input_dims: int, n_harmonic_functions: int, append_input: bool) -> int:
        """``input_dims * (2 K + append_input)``."""
        return input_dims * (2 * n_harmonic_functions + int(append_input))

    def get_output_dim(self, input_dims: int = 3) -> int:
        """Output width for ``input_dims`` inputs."""
        return self.get_output_dim_static(input_dims, len(self._frequencies), self.append_input)

    def forward(self, x: torch.Tensor, diag_cov: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., dim)`` -> ``(..., dim * (2 K + append_input))`` (see ``harmonic_embedding``); with
        ``diag_cov (..., dim)`` MipNeRF's integrated positional encoding, as PyTorch3D's ``diag_cov``."""
        return harmonic_embedding(x, self._frequencies.to(x.dtype), self.append_input, diag_cov)
