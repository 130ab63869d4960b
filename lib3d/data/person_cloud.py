"""A sparse, noisy, person-shaped point cloud made procedurally (chapter 3's embedded fitting target).

The book fits a sphere to a scanned pedestrian (``pedestrian.ply``, a few hundred points); this module
builds a stand-in from simple parts: a head sphere, torso and pelvis ellipsoids, and capsule limbs
(upper/lower arms, thighs, shins, feet). Points are spread over the parts in proportion to their
approximate surface areas, jittered with Gaussian noise, then centred and scaled like the book's
normalisation (``(p - centre) / max |p - centre|``) so the cloud fits the unit sphere.

Convention: +Y up, the person faces +Z, units after normalisation (height about 2).
"""

from __future__ import annotations

import math

import torch

# (centre, radii) ellipsoids and (a, b, radius) capsules in metres before normalisation.
_ELLIPSOIDS = [
    ((0.0, 1.62, 0.0), (0.10, 0.12, 0.10)),   # head
    ((0.0, 1.22, 0.0), (0.18, 0.26, 0.11)),   # torso
    ((0.0, 0.92, 0.0), (0.16, 0.10, 0.10)),   # pelvis
]
_CAPSULES = []
for _s in (-1.0, 1.0):
    _CAPSULES += [
        ((_s * 0.22, 1.43, 0.0), (_s * 0.29, 1.13, 0.0), 0.045),    # upper arm
        ((_s * 0.29, 1.13, 0.0), (_s * 0.33, 0.86, 0.06), 0.038),   # forearm
        ((_s * 0.09, 0.90, 0.0), (_s * 0.11, 0.50, 0.0), 0.07),     # thigh
        ((_s * 0.11, 0.50, 0.0), (_s * 0.11, 0.08, 0.0), 0.05),     # shin
        ((_s * 0.11, 0.05, -0.03), (_s * 0.11, 0.05, 0.14), 0.04),  # foot
    ]


def _unit(n: int, generator, dtype) -> torch.Tensor:
    v = torch.randn(n, 3, generator=generator, dtype=dtype)
    return v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)


def person_cloud(num_points: int = 250, noise: float = 0.01, generator: torch.Generator | None = None,
                 device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sample a person-shaped cloud.

    Args:
        num_points: P, the number of points.
        noise: standard deviation of the Gaussian jitter, in normalised units (1 = half the height).
        generator: CPU random generator (reproducible clouds); the result is moved to ``device``.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        ``(P, 3)`` points, centred, with ``max |p| = 1`` before the noise.

    Raises:
        ValueError: ``num_points < 1`` or negative ``noise``.
    """
    if int(num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    areas = []
    for _, r in _ELLIPSOIDS:  # Knud Thomsen's approximation of the ellipsoid area
        p = 1.6075
        a, b, c = r
        areas.append(4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p))
    for a, b, rad in _CAPSULES:
        length = math.dist(a, b)
        areas.append(2 * math.pi * rad * length + 4 * math.pi * rad**2)
    weights = torch.tensor(areas, dtype=torch.float64)
    part = torch.multinomial(weights, int(num_points), replacement=True, generator=generator)
    counts = torch.bincount(part, minlength=len(areas)).tolist()
    chunks = []
    for (centre, radii), n in zip(_ELLIPSOIDS, counts[: len(_ELLIPSOIDS)]):
        chunks.append(torch.tensor(centre, dtype=dtype) + _unit(n, generator, dtype) * torch.tensor(radii, dtype=dtype))
    for (a, b, rad), n in zip(_CAPSULES, counts[len(_ELLIPSOIDS):]):
        a_t, b_t = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
        axis = b_t - a_t
        t = torch.rand(n, 1, generator=generator, dtype=dtype)
        d = _unit(n, generator, dtype)
        # project the direction off the axis: points on the capsule's cylindrical surface
        u = axis / axis.norm().clamp(min=1e-12)
        d = d - (d @ u)[:, None] * u
        d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-12)
        chunks.append(a_t + t * axis + rad * d)
    pts = torch.cat(chunks, 0)
    pts = pts[torch.randperm(pts.shape[0], generator=generator)]
    centre = (pts.max(0).values + pts.min(0).values) / 2
    pts = pts - centre
    pts = pts / pts.norm(dim=1).max()
    pts = pts + noise * torch.randn(pts.shape, generator=generator, dtype=dtype)
    return pts.to(device)
