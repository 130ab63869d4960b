"""Graph convolution on mesh vertices (PyTorch3D's ``GraphConv``, Mesh R-CNN).

``out_i = W0 x_i + b0 + sum_{j in N(i)} (W1 x_j + b1)`` over the edge list (both directions unless
``directed``, then only ``j -> i`` for edges ``(i, j)``).
"""

from __future__ import annotations

import torch
from torch import nn

from lib3d._checks import check_shapes
from lib3d.ops.packed import gather_rows


def gather_scatter(x: torch.Tensor, edges: torch.Tensor, directed: bool = False) -> torch.Tensor:
    """``out[i] = sum_{(i, j) in edges} x[j]`` (+ the reverse direction unless ``directed``).

    Args:
        x: ``(V, D) float`` per-vertex features.
        edges: ``(E, 2) int64`` edges ``(i, j)``.
        directed: only accumulate ``x[j]`` into ``out[i]``.

    Returns:
        ``(V, D)`` neighbour sums (differentiable w.r.t. ``x``).
    """
    check_shapes(x=(x, ("V", "D")), edges=(edges, ("E", 2)))
    out = torch.zeros_like(x).index_add(0, edges[:, 0], gather_rows(x, edges[:, 1]))
    if not directed:
        out = out.index_add(0, edges[:, 1], gather_rows(x, edges[:, 0]))
    return out


def gather_scatter_python(x: torch.Tensor, edges: torch.Tensor, directed: bool = False) -> torch.Tensor:
    """Slow reference for :func:`gather_scatter` (PyTorch3D's ``gather_scatter_python``): the same sums as a
    product with the dense ``(V, V)`` adjacency matrix counting each edge (so repeated edges count twice).

    Args / Returns: as :func:`gather_scatter`.
    """
    check_shapes(x=(x, ("V", "D")), edges=(edges, ("E", 2)))
    v = x.shape[0]
    adj = torch.zeros(v, v, dtype=x.dtype, device=x.device)
    ones = torch.ones(edges.shape[0], dtype=x.dtype, device=x.device)
    adj = adj.index_put((edges[:, 0], edges[:, 1]), ones, accumulate=True)
    if not directed:
        adj = adj.index_put((edges[:, 1], edges[:, 0]), ones, accumulate=True)
    return adj @ x


def graph_conv(verts: torch.Tensor, edges: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor | None,
               w1: torch.Tensor, b1: torch.Tensor | None, directed: bool = False) -> torch.Tensor:
    """Functional graph convolution ``x W0^T + b0 + gather_scatter(x W1^T + b1)``.

    Args:
        verts: ``(V, C_in) float`` vertex features.
        edges: ``(E, 2) int64`` edges.
        w0, w1: ``(C_out, C_in) float`` weights of the self and neighbour terms; b0, b1 ``(C_out,)``.
        directed: see :func:`gather_scatter`.

    Returns:
        ``(V, C_out)`` features.
    """
    check_shapes(verts=(verts, ("V", "Ci")), edges=(edges, ("E", 2)), w0=(w0, ("Co", "Ci")),
                 w1=(w1, ("Co", "Ci")))
    if verts.shape[0] == 0:
        return verts.new_zeros((0, w0.shape[0])) * verts.sum()
    x0 = torch.nn.functional.linear(verts, w0, b0)
    x1 = torch.nn.functional.linear(verts, w1, b1)
    return x0 + gather_scatter(x1, edges, directed)


class GraphConv(nn.Module):
    """Graph convolution layer (PyTorch3D's ``GraphConv``).

    Args:
        input_dim: input feature size C_in.
        output_dim: output feature size C_out.
        init: "normal" (weights ~ N(0, 0.01), zero biases) or "zero".
        directed: see :func:`gather_scatter`.
    """

    def __init__(self, input_dim: int, output_dim: int, init: str = "normal", directed: bool = False):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.directed = directed
        self.w0 = nn.Linear(input_dim, output_dim)
        self.w1 = nn.Linear(input_dim, output_dim)
        if init == "normal":
            nn.init.normal_(self.w0.weight, mean=0, std=0.01)
            nn.init.normal_(self.w1.weight, mean=0, std=0.01)
            self.w0.bias.data.zero_()
            self.w1.bias.data.zero_()
        elif init == "zero":
            self.w0.weight.data.zero_()
            self.w1.weight.data.zero_()
        else:
            raise ValueError(f'init must be "normal" or "zero", got {init!r}')

    def forward(self, verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """``(V, C_in), (E, 2) -> (V, C_out)``; see :func:`graph_conv`."""
        return graph_conv(verts, edges, self.w0.weight, self.w0.bias, self.w1.weight, self.w1.bias,
                          self.directed)

    def __repr__(self) -> str:
        return f"GraphConv({self.input_dim} -> {self.output_dim}, directed={self.directed})"
