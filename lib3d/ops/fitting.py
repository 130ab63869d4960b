"""The losses of the book's chapter 2-3 fitting examples as functions (the jobs only loop and log).

- Chapter 2: a heterogeneous batch of meshes translated by an unknown offset is recovered by minimising
  the Chamfer distance between surface samples of the translated meshes and the observed points.
- Chapter 3: a sphere is deformed towards a point cloud with
  ``w_c chamfer + w_e edge + w_n normal_consistency + w_l laplacian`` (Wang et al., Pixel2Mesh, 2018).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from lib3d.ops.chamfer import chamfer_distance
from lib3d.ops.mesh_losses import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from lib3d.ops.sample_points import sample_points_from_meshes


def translation_fitting_loss(meshes, translation: torch.Tensor, target_points: torch.Tensor,
                             num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Chamfer distance between samples of ``meshes`` moved by ``translation`` and ``target_points``.

    Args:
        meshes: ``Meshes`` of N meshes.
        translation: ``(3,) float`` offset applied to every vertex (the parameter).
        target_points: ``(N, P, 3) float`` observed points of each mesh.
        num_samples: samples S per mesh.
        generator: random generator for the surface samples.

    Returns:
        ``() float`` batch-mean Chamfer distance.
    """
    samples = sample_points_from_meshes(meshes.offset_verts(translation), num_samples, generator=generator)
    return chamfer_distance(samples, target_points)[0]


class MeshFitLosses(NamedTuple):
    """Terms of the chapter-3 objective (each a ``() float`` tensor); ``total`` is their weighted sum."""

    chamfer: torch.Tensor
    edge: torch.Tensor
    normal: torch.Tensor
    laplacian: torch.Tensor
    total: torch.Tensor


def mesh_fitting_loss(meshes, target_points: torch.Tensor, num_samples: int, w_chamfer: float = 1.0,
                      w_edge: float = 1.0, w_normal: float = 0.01, w_laplacian: float = 0.1,
                      laplacian_method: Literal["uniform", "cot", "cotcurv"] = "uniform",
                      generator: torch.Generator | None = None) -> MeshFitLosses:
    """The book's chapter-3 mesh-fitting objective.

    ``total = w_chamfer CD(samples, target) + w_edge E + w_normal NC + w_laplacian L`` with surface
    samples of ``meshes``; regulariser terms with zero weight are still reported (computed without
    gradient cost only when their weight is non-zero).

    Args:
        meshes: ``Meshes`` being deformed (N meshes).
        target_points: ``(N, P, 3) float`` target clouds.
        num_samples: samples S per mesh.
        w_chamfer, w_edge, w_normal, w_laplacian: the weights.
        laplacian_method: the Laplacian of the smoothing term.
        generator: random generator for the surface samples.

    Returns:
        :class:`MeshFitLosses`.
    """
    samples = sample_points_from_meshes(meshes, num_samples, generator=generator)
    chamfer = chamfer_distance(samples, target_points)[0]

    def term(w, fn):
        if w == 0:
            with torch.no_grad():
                return fn().reshape(())
        return fn().reshape(())

    edge = term(w_edge, lambda: mesh_edge_loss(meshes))
    normal = term(w_normal, lambda: mesh_normal_consistency(meshes))
    lap = term(w_laplacian, lambda: mesh_laplacian_smoothing(meshes, method=laplacian_method))
    total = w_chamfer * chamfer + w_edge * edge + w_normal * normal + w_laplacian * lap
    return MeshFitLosses(chamfer, edge, normal, lap, total)
