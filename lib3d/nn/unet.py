"""UNet with a configurable number of levels (SynSin's depth regressor is 8 levels of 32 filters).

Dimension names: N batch, H/W height/width. With ``L = levels`` and channels ``c_i = min(base * 2**(i-1),
max_channels)`` (i = 1..L), following SynSin's ``Unet``:

- encoder: ``e_1 = conv1(x)``; ``e_i = enc_norm{i}(conv{i}(LeakyReLU_0.2(e_{i-1})))`` for 1 < i < L;
  ``e_L = conv{L}(LeakyReLU_0.2(e_{L-1}))`` (no norm on the first and the innermost level); every
  ``conv{i}`` is 4x4, stride 2, padding 1, so ``e_i`` has size ``H / 2**i``;
- decoder: ``d_1 = e_L``; for j = 1..L-1: ``d_{j+1} = cat(dec_norm{j}(dconv{j}(up(ReLU(d_j)))), e_{L-j})``;
  the output is ``dconv{L}(up(ReLU(d_L)))`` with no norm or activation; every ``dconv{j}`` is 3x3,
  stride 1, padding 1 and ``up`` is x2 bilinear (``align_corners=False``).

Mapping a SynSin ``Unet`` (``num_filters=32``, 8 levels: ``UNet(3, 1, levels=8, base_channels=32,
max_channels=256, spectral=True)``): ``conv1..conv8`` and ``dconv1..dconv8`` keep their names;
:func:`synsin_unet_rules` renames SynSin's norms (``batch_norm2_0`` -> ``enc_norm2``, ``batch_norm4_0`` ->
``enc_norm3``, ``batch_norm8_0..3`` -> ``enc_norm4..7``, ``batch_norm8_4..7`` -> ``dec_norm1..4``,
``batch_norm4_1`` -> ``dec_norm5``, ``batch_norm2_1`` -> ``dec_norm6``, ``batch_norm`` -> ``dec_norm7``), and
:func:`lib3d.nn.spectral_norm_rules` its old-style spectral-norm keys.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_choice, check_shape
from lib3d.nn.blocks import spectral_norm

__all__ = ["UNet", "synsin_unet_rules"]


class UNet(nn.Module):
    """Encoder-decoder with skip connections, ``levels`` stride-2 steps down and up.

    Args:
        in_channels, out_channels: image channels in and out.
        levels: L >= 1; inputs must have H and W divisible by ``2**L``.
        base_channels: channels of the first level.
        max_channels: cap on the channels of deeper levels.
        norm: ``"batch"``, ``"instance"`` (no affine) or ``"none"``.
        spectral: spectral-normalise every convolution (SynSin's ``norm_G`` with "spectral").

    Attributes:
        channels: ``(c_1, ..., c_L)``.
    """

    def __init__(self, in_channels: int, out_channels: int, levels: int, base_channels: int = 32,
                 max_channels: int = 512, norm: Literal["batch", "instance", "none"] = "batch",
                 spectral: bool = False):
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an int >= 1, got {levels!r}")
        check_choice("norm", norm, ("batch", "instance", "none"))
        self.levels = levels
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        c = [min(base_channels * 2 ** i, max_channels) for i in range(levels)]
        self.channels = tuple(c)

        def conv(cin, cout, k, s, p):
            m = nn.Conv2d(cin, cout, k, s, p)
            return spectral_norm(m) if spectral else m

        def make_norm(ch):
            if norm == "batch":
                return nn.BatchNorm2d(ch)
            if norm == "instance":
                return nn.InstanceNorm2d(ch)
            return nn.Identity()

        L = levels
        for i in range(1, L + 1):
            self.add_module(f"conv{i}", conv(in_channels if i == 1 else c[i - 2], c[i - 1], 4, 2, 1))
        for i in range(2, L):
            self.add_module(f"enc_norm{i}", make_norm(c[i - 1]))
        for j in range(1, L + 1):
            cin = c[L - 1] if j == 1 else 2 * c[L - j]
            cout = out_channels if j == L else c[L - j - 1]
            self.add_module(f"dconv{j}", conv(cin, cout, 3, 1, 1))
            if j < L:
                self.add_module(f"dec_norm{j}", make_norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, in_channels, H, W) float`` with ``H, W`` divisible by ``2**levels`` ->
        ``(N, out_channels, H, W)``.

        Raises:
            ValueError: wrong channels, or H / W not divisible by ``2**levels``.
        """
        check_shape("x", x, (None, self.in_channels, None, None), dtype="float")
        L, step = self.levels, 2 ** self.levels
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(f"x must have height and width divisible by 2**levels = {step} (levels={L}), "
                             f"got {tuple(x.shape[-2:])}")
        enc = [self.conv1(x)]
        for i in range(2, L + 1):
            e = getattr(self, f"conv{i}")(F.leaky_relu(enc[-1], 0.2))
            enc.append(getattr(self, f"enc_norm{i}")(e) if i < L else e)
        d = enc[-1]
        for j in range(1, L + 1):
            up = F.interpolate(F.relu(d), scale_factor=2.0, mode="bilinear", align_corners=False)
            y = getattr(self, f"dconv{j}")(up)
            if j == L:
                return y
            d = torch.cat((getattr(self, f"dec_norm{j}")(y), enc[L - j - 1]), dim=1)
        raise AssertionError("unreachable")  # pragma: no cover


def synsin_unet_rules(prefix: str = "") -> tuple[tuple[str, str], ...]:
    """:func:`lib3d.nn.remap_keys` rules renaming SynSin's 8-level ``Unet`` norms onto :class:`UNet`'s
    (``{prefix}batch_norm8_4.*`` -> ``{prefix}dec_norm1.*``, ...; see the module docstring)."""
    p = prefix.replace(".", r"\.")
    table = {"batch_norm2_0": "enc_norm2", "batch_norm4_0": "enc_norm3", "batch_norm8_0": "enc_norm4",
             "batch_norm8_1": "enc_norm5", "batch_norm8_2": "enc_norm6", "batch_norm8_3": "enc_norm7",
             "batch_norm8_4": "dec_norm1", "batch_norm8_5": "dec_norm2", "batch_norm8_6": "dec_norm3",
             "batch_norm8_7": "dec_norm4", "batch_norm4_1": "dec_norm5", "batch_norm2_1": "dec_norm6",
             "batch_norm": "dec_norm7"}
    return tuple((p + old + r"\.", prefix + new + ".") for old, new in table.items())
