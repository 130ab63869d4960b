"""Point-cloud normals from local covariances (PyTorch3D's ``estimate_pointcloud_normals``).

For each point p of a cloud, take its K nearest neighbours (p included), form their covariance around the
neighbourhood mean ``C = 1/K sum_k (q_k - mean)(q_k - mean)^T`` and take the eigenvector of its smallest
eigenvalue as the normal. Its sign is fixed as in PyTorch3D (after Tombari et al., "Unique Signatures of
Histograms for Local Surface Description", ECCV 2010): flipped when fewer than half of the offsets
``q_k - p`` have a positive projection on it.

Dimension names: N clouds, P points per cloud (padded), K neighbours.
"""

from __future__ import annotations

import torch

from lib3d._checks import check_shape
from lib3d.ops.knn import knn_points


def _padded_and_lengths(pointclouds) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pointclouds, torch.Tensor):
        check_shape("pointclouds", pointclouds, ("N", "P", 3), dtype="float")
        n, p = pointclouds.shape[:2]
        return pointclouds, torch.full((n,), p, dtype=torch.int64, device=pointclouds.device)
    if hasattr(pointclouds, "points_padded") and hasattr(pointclouds, "num_points_per_cloud"):
        return pointclouds.points_padded(), pointclouds.num_points_per_cloud()
    raise TypeError(f"pointclouds must be a (N, P, 3) tensor or a Pointclouds, got {type(pointclouds).__name__}")


def estimate_pointcloud_normals(pointclouds, neighborhood_size: int = 50, disambiguate_directions: bool = True,
                                *, use_symeig_workaround: bool = True) -> torch.Tensor:
    """Unit normals of every point from the covariance of its ``neighborhood_size`` nearest neighbours.

    Args:
        pointclouds: ``(N, P, 3)`` float, or a ``Pointclouds`` (padded; padding gets zero normals).
        neighborhood_size: K >= 3 neighbours (the point itself included); must not exceed the smallest
            non-empty cloud.
        disambiguate_directions: orient each normal toward the side where most of its neighbours lie
            (PyTorch3D's rule, see the module docstring); False leaves the eigensolver's sign.
        use_symeig_workaround: PyTorch3D's switch between its own closed-form 3x3 eigensolver and
            ``torch.linalg.eigh``. lib3d always uses ``torch.linalg.eigh`` (both give the same eigenvectors up
            to sign, which ``disambiguate_directions`` fixes); the argument is accepted for ported code.

    Returns:
        ``(N, P, 3)`` float normals (zero rows past each cloud's length).

    Raises:
        ValueError: for K < 3 or K larger than a non-empty cloud.
    """
    del use_symeig_workaround  # documented above: one eigensolver, same result
    points, lengths = _padded_and_lengths(pointclouds)
    k = int(neighborhood_size)
    nonempty = lengths[lengths > 0]
    if k < 3 or (nonempty.numel() and k > int(nonempty.min())):
        raise ValueError(f"estimate_pointcloud_normals: neighborhood_size must be in [3, smallest cloud size "
                         f"{int(nonempty.min()) if nonempty.numel() else 0}], got {neighborhood_size}")
    n, p = points.shape[:2]
    if n == 0 or p == 0:
        return points.new_zeros(points.shape)
    # PyTorch3D centres each cloud first (better conditioned covariances for far-away clouds)
    valid = torch.arange(p, device=points.device)[None] < lengths[:, None]  # (N, P)
    mean = (points * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(points.dtype)
    centered = (points - mean[:, None]) * valid[..., None]
    knns = knn_points(centered, centered, lengths1=lengths, lengths2=lengths, K=k, return_nn=True).knn  # (N, P, K, 3)
    diff = knns - knns.mean(2, keepdim=True)
    cov = torch.einsum("npki,npkj->npij", diff, diff) / k  # cov[n, p] = 1/K sum_k d_k d_k^T
    cov = torch.where(valid[..., None, None], cov, torch.eye(3, dtype=cov.dtype, device=cov.device))
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    normals = vecs[..., 0]  # (N, P, 3)
    if disambiguate_directions:
        proj = ((knns - centered[:, :, None]) * normals[:, :, None]).sum(-1)  # (N, P, K)
        flip = (proj > 0).sum(-1, keepdim=True).to(points.dtype) < 0.5 * k
        normals = torch.where(flip, -normals, normals)
    return normals * valid[..., None]
