"""Sample image-aligned features at vertex positions (PyTorch3D's ``vert_align``, Mesh R-CNN)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def vert_align(feats, verts, return_packed: bool = False,
               interp_mode: Literal["bilinear", "nearest"] = "bilinear",
               padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
               align_corners: bool = True) -> torch.Tensor:
    """Bilinearly sample feature maps at the (x, y) of each vertex (``F.grid_sample`` convention).

    The vertex's x and y are normalised image coordinates in [-1, 1] (x along W, y along H, -1 the
    left/top edge as in ``grid_sample``); z is ignored.

    Args:
        feats: ``(N, C, H, W) float`` feature map or a list of them (concatenated along channels).
        verts: ``(N, V, 3) float`` tensor, or a ``Meshes`` / ``Pointclouds`` (their padded vertices).
        return_packed: return ``(sum V, C)`` packed features (for ``Meshes``/``Pointclouds``).
        interp_mode: "bilinear" or "nearest".
        padding_mode: "zeros", "border" or "reflection".
        align_corners: ``grid_sample``'s ``align_corners``.

    Returns:
        ``(N, V, sum C)`` sampled features, or ``(sum V, sum C)`` when ``return_packed``.

    Raises:
        ValueError: wrong dimensionality or batch sizes.
    """
    if torch.is_tensor(verts):
        if verts.dim() != 3:
            raise ValueError(f"verts must have shape (N, V, 3), got {tuple(verts.shape)}")
        grid = verts
    elif hasattr(verts, "verts_padded"):
        grid = verts.verts_padded()
    elif hasattr(verts, "points_padded"):
        grid = verts.points_padded()
    else:
        raise ValueError("verts must be a tensor, a Meshes or a Pointclouds")
    grid = grid[:, None, :, :2]  # (N, 1, V, 2)
    if torch.is_tensor(feats):
        feats = [feats]
    for i, f in enumerate(feats):
        if f.dim() != 4:
            raise ValueError(f"feats[{i}] must have shape (N, C, H, W), got {tuple(f.shape)}")
        if f.shape[0] != grid.shape[0]:
            raise ValueError(f"feats[{i}] must have batch size {grid.shape[0]} (from verts), got {f.shape[0]}")
    out = torch.cat([F.grid_sample(f, grid.to(f.dtype), mode=interp_mode, padding_mode=padding_mode,
                                   align_corners=align_corners)[:, :, 0].transpose(1, 2) for f in feats], 2)
    if return_packed:
        out = out.reshape(-1, out.shape[-1])
        if hasattr(verts, "verts_padded_to_packed_idx"):
            out = out.index_select(0, verts.verts_padded_to_packed_idx())
        elif hasattr(verts, "padded_to_packed_idx"):
            out = out.index_select(0, verts.padded_to_packed_idx())
    return out
