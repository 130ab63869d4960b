"""Lights and materials with PyTorch3D's semantics (``pytorch3d.renderer.lighting`` / ``materials``).

Dimension names (see ``lib3d.render``): N batch, P points, C colour channels. "Batched" means every
property has a leading batch dimension of size 1 or N; size-1 properties broadcast over the batch.

Conventions (PyTorch3D's, so the book's code ports line by line):

- lights and materials are immutable; ``lights.replace(location=...)`` returns a changed copy where the
  book mutates in place (``lights.location = ...``);
- ``PointLights.location`` is in world space and the light direction at a point is ``location - point``;
  ``DirectionalLights.direction`` points *towards* the light;
- Lambertian diffuse ``color * relu(<n, l>)``; Phong specular ``color * relu(<v, r>)^shininess`` with
  ``r = -l + 2 <n, l> n``, ``v`` the unit vector from the point to the camera centre, and no highlight where
  ``<n, l> <= 0``. Normals and directions are renormalised with ``eps=1e-6`` as PyTorch3D does.

Lights and materials keep their own dtype/device; shading casts them to the dtype/device of the points at
use, so one ``PointLights()`` serves CPU and CUDA, float32 and float64.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_tensor

__all__ = [
    "AmbientLights",
    "DirectionalLights",
    "Materials",
    "PointLights",
    "diffuse",
    "specular",
]


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------
def _match_batch(name: str, x: torch.Tensor, ref: torch.Tensor, trailing: int) -> torch.Tensor:
    """Reshape a batched property ``x`` ((B, *t), (*t) or ref-shaped) to broadcast against ``ref``.

    ``trailing`` is the number of trailing property dims (1 for colours/directions, 0 for scalars). A
    property of the same rank as ``ref`` is used as is; otherwise its leading dim is the batch and singleton
    dims are inserted between batch and trailing dims (PyTorch3D's ``view(-1, 1, ..., 1, 3)``).
    """
    x = x.to(device=ref.device, dtype=ref.dtype)
    ref_rank = ref.dim() - (1 if trailing == 0 else 0)  # scalars compare against ref without its last dim
    if x.dim() == ref_rank:
        return x
    if x.dim() == trailing:
        x = x.unsqueeze(0)
    if x.dim() != trailing + 1:
        raise ValueError(f"{name} must have shape (B{', C' if trailing else ''}) or match the points, "
                         f"got {tuple(x.shape)}")
    b = x.shape[0]
    if b not in (1, ref.shape[0]):
        raise ValueError(f"{name} has batch size {b}, expected 1 or {ref.shape[0]} (the points' batch)")
    mid = (1,) * (ref_rank - 1 - trailing)
    return x.reshape((b,) + mid + tuple(x.shape[1:]))


def diffuse(normals: torch.Tensor, color: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Lambertian diffuse term, as ``pytorch3d.renderer.lighting.diffuse``.

    ``diffuse = color * max(0, <normalize(n), normalize(l)>)``

    Args:
        normals: (N, ..., 3) float surface normals (need not be unit; renormalised with eps 1e-6).
        color: (N, C), (1, C), (C,) or normals-shaped (N, ..., C) diffuse light colour.
        direction: (N, 3), (1, 3), (3,) or (N, ..., 3) direction from the point towards the light.

    Returns:
        (N, ..., C) diffuse colour.
    """
    check_tensor("normals", normals, dtype="float")
    if normals.dim() < 2 or normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (N, ..., 3), got {tuple(normals.shape)}")
    color = _match_batch("color", torch.as_tensor(color), normals, 1)
    direction = _match_batch("direction", torch.as_tensor(direction), normals, 1)
    normals = F.normalize(normals, p=2, dim=-1, eps=1e-6)
    direction = F.normalize(direction, p=2, dim=-1, eps=1e-6)
    angle = F.relu(torch.sum(normals * direction, dim=-1))
    return color * angle[..., None]


def specular(points: torch.Tensor, normals: torch.Tensor, direction: torch.Tensor,
             camera_position: torch.Tensor, shininess: torch.Tensor | float,
             color: torch.Tensor) -> torch.Tensor:
    """Phong specular term, as ``pytorch3d.renderer.lighting.specular``.

    ``r = -l + 2 <n, l> n``, ``v = normalize(camera_position - p)``,
    ``specular = color * (relu(<v, r>) * [<n, l> > 0]) ** shininess`` (Phong 1975). As in PyTorch3D,
    ``0 ** 0 = 1``: with ``shininess = 0`` every point gets the full specular colour.

    Args:
        points: (N, ..., 3) float world positions.
        normals: (N, ..., 3) float normals (renormalised with eps 1e-6).
        direction: (N, 3), (1, 3) or (N, ..., 3) direction from the point towards the light.
        camera_position: (N, 3), (1, 3) or (N, ..., 3) camera centre in world space.
        shininess: float, (N,), (1,) or (N, ...) Phong exponent.
        color: (N, C), (1, C) or (N, ..., C) specular light colour.

    Returns:
        (N, ..., C) specular colour.
    """
    check_tensor("points", points, dtype="float")
    check_tensor("normals", normals, dtype="float")
    if points.dim() < 2 or points.shape[-1] != 3 or normals.shape != points.shape:
        raise ValueError(f"points and normals must both have shape (N, ..., 3), got {tuple(points.shape)} "
                         f"and {tuple(normals.shape)}")
    direction = _match_batch("direction", torch.as_tensor(direction), points, 1)
    camera_position = _match_batch("camera_position", torch.as_tensor(camera_position), points, 1)
    color = _match_batch("color", torch.as_tensor(color), points, 1)
    shininess = _match_batch("shininess", torch.as_tensor(shininess), points, 0)

    normals = F.normalize(normals, p=2, dim=-1, eps=1e-6)
    direction = F.normalize(direction, p=2, dim=-1, eps=1e-6)
    cos_angle = torch.sum(normals * direction, dim=-1)
    # No specular highlights where the light is behind the surface.
    mask = (cos_angle > 0).to(points.dtype)
    view_direction = F.normalize(camera_position - points, p=2, dim=-1, eps=1e-6)
    reflect_direction = -direction + 2 * (cos_angle[..., None] * normals)
    alpha = F.relu(torch.sum(view_direction * reflect_direction, dim=-1)) * mask
    return color * torch.pow(alpha, shininess)[..., None]


# ----------------------------------------------------------------------------------------------
# Batched immutable property containers
# ----------------------------------------------------------------------------------------------
def _to_tensor(name: str, value: Any, device, trailing: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value if device is None else value.to(device)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    else:
        t = torch.as_tensor(value, dtype=torch.get_default_dtype(), device=device)
    if trailing == 1:
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (N, C) or (C,), got {tuple(t.shape)}")
    else:
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1:
            raise ValueError(f"{name} must be a float or have shape (N,), got {tuple(t.shape)}")
    return t


class _Batched:
    """Mixin for frozen dataclasses whose tensor fields share a broadcast batch dimension."""

    _TRAILING: ClassVar[dict[str, int]] = {}  # field name -> number of trailing dims (1 vector, 0 scalar)
    _VEC3: ClassVar[tuple[str, ...]] = ()  # fields whose last dim must be 3

    def _setup(self, device) -> None:
        tensors = {k: _to_tensor(k, getattr(self, k), device, t) for k, t in self._TRAILING.items()}
        if device is None:  # follow the first tensor argument's device
            dev = next(iter(tensors.values())).device
            tensors = {k: v.to(dev) for k, v in tensors.items()}
        for k in self._VEC3:
            if tensors[k].shape[-1] != 3:
                raise ValueError(f"{k} must have shape (N, 3), got {tuple(tensors[k].shape)}")
        sizes = {v.shape[0] for v in tensors.values()} - {1}
        if len(sizes) > 1:
            raise ValueError(f"{type(self).__name__} properties must have batch size 1 or a common N, got "
                             + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items()))
        n = sizes.pop() if sizes else 1
        for k, v in tensors.items():
            if v.shape[0] != n:
                v = v.expand((n,) + tuple(v.shape[1:]))
            object.__setattr__(self, k, v)

    # -- PyTorch3D's TensorProperties API -----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return getattr(self, next(iter(self._TRAILING))).device

    def __len__(self) -> int:
        return getattr(self, next(iter(self._TRAILING))).shape[0]

    def _map(self, fn):
        return dataclasses.replace(self, **{k: fn(getattr(self, k)) for k in self._TRAILING})

    def replace(self, **changes):
        """A copy with some properties changed (the immutable form of ``lights.location = ...``)."""
        return dataclasses.replace(self, **changes)

    def to(self, device=None, dtype=None):
        """A copy on ``device`` / in ``dtype``."""
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def clone(self):
        return self._map(lambda t: t.clone())

    def detach(self):
        return self._map(lambda t: t.detach())

    def __getitem__(self, index):
        """Select batch elements (int, slice, list or index tensor)."""
        if isinstance(index, int):
            index = [index]
        return self._map(lambda t: t[index])

    def gather_props(self, batch_idx: torch.Tensor):
        """Properties gathered per element: ``prop[batch_idx]`` (size-1 batches are broadcast).

        Args:
            batch_idx: (P,) long index into the batch (e.g. ``verts_packed_to_mesh_idx``).

        Returns:
            The same kind of object with batch size P.
        """
        check_shape("batch_idx", batch_idx, (None,), dtype="int")
        return self._map(lambda t: t[batch_idx.to(t.device) if t.shape[0] > 1
                                     else torch.zeros_like(batch_idx, device=t.device)])


_COLOR3 = ((0.5, 0.5, 0.5),)


@dataclass(frozen=True, eq=False)
class DirectionalLights(_Batched):
    """Directional lights (``pytorch3d.renderer.DirectionalLights``), batched and immutable.

    Args:
        ambient_color: (N, C) or (C,) ambient colour; default 0.5 grey.
        diffuse_color: (N, C) or (C,) diffuse colour; default 0.3 grey.
        specular_color: (N, C) or (C,) specular colour; default 0.2 grey.
        direction: (N, 3) or (3,) direction *towards* the light in world space; default +Y.
        device: where the properties live (default: the device of tensor arguments, else CPU).

    Example:
        >>> lights = DirectionalLights(direction=[[0.0, 1.0, -1.0]])
    """

    ambient_color: Any = _COLOR3
    diffuse_color: Any = ((0.3, 0.3, 0.3),)
    specular_color: Any = ((0.2, 0.2, 0.2),)
    direction: Any = ((0.0, 1.0, 0.0),)

    _TRAILING: ClassVar[dict[str, int]] = {"ambient_color": 1, "diffuse_color": 1, "specular_color": 1, "direction": 1}
    _VEC3: ClassVar[tuple[str, ...]] = ("direction",)

    def __init__(self, ambient_color=_COLOR3, diffuse_color=((0.3, 0.3, 0.3),),
                 specular_color=((0.2, 0.2, 0.2),), direction=((0.0, 1.0, 0.0),), device=None):
        object.__setattr__(self, "ambient_color", ambient_color)
        object.__setattr__(self, "diffuse_color", diffuse_color)
        object.__setattr__(self, "specular_color", specular_color)
        object.__setattr__(self, "direction", direction)
        self._setup(device)

    def get_direction(self, points: torch.Tensor) -> torch.Tensor:
        """(N, ..., 3) direction towards the light, broadcastable against ``points`` (N, ..., 3)."""
        return _match_batch("direction", self.direction, points, 1)

    def diffuse(self, normals: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """(N, ..., C) diffuse colour at ``normals`` (N, ..., 3)."""
        return diffuse(normals, self.diffuse_color, self.direction)

    def specular(self, normals: torch.Tensor, points: torch.Tensor, camera_position: torch.Tensor,
                 shininess) -> torch.Tensor:
        """(N, ..., C) specular colour at ``points``/``normals`` (N, ..., 3) seen from ``camera_position``."""
        return specular(points, normals, self.direction, camera_position, shininess, self.specular_color)


@dataclass(frozen=True, eq=False)
class PointLights(_Batched):
    """Point lights (``pytorch3d.renderer.PointLights``), batched and immutable.

    Args:
        ambient_color: (N, C) or (C,) ambient colour; default 0.5 grey.
        diffuse_color: (N, C) or (C,) diffuse colour; default 0.3 grey.
        specular_color: (N, C) or (C,) specular colour; default 0.2 grey.
        location: (N, 3) or (3,) light position in world space; default (0, 1, 0). No attenuation.
        device: where the properties live (default: the device of tensor arguments, else CPU).

    Example:
        >>> lights = PointLights(location=[[0.0, 0.0, -3.0]])
        >>> lights = lights.replace(location=torch.tensor([[0.0, 0.0, 1.0]]))  # book: lights.location = ...
    """

    ambient_color: Any = _COLOR3
    diffuse_color: Any = ((0.3, 0.3, 0.3),)
    specular_color: Any = ((0.2, 0.2, 0.2),)
    location: Any = ((0.0, 1.0, 0.0),)

    _TRAILING: ClassVar[dict[str, int]] = {"ambient_color": 1, "diffuse_color": 1, "specular_color": 1, "location": 1}
    _VEC3: ClassVar[tuple[str, ...]] = ("location",)

    def __init__(self, ambient_color=_COLOR3, diffuse_color=((0.3, 0.3, 0.3),),
                 specular_color=((0.2, 0.2, 0.2),), location=((0.0, 1.0, 0.0),), device=None):
        object.__setattr__(self, "ambient_color", ambient_color)
        object.__setattr__(self, "diffuse_color", diffuse_color)
        object.__setattr__(self, "specular_color", specular_color)
        object.__setattr__(self, "location", location)
        self._setup(device)

    def get_direction(self, points: torch.Tensor) -> torch.Tensor:
        """(N, ..., 3) un-normalised direction ``location - points`` for ``points`` (N, ..., 3)."""
        return _match_batch("location", self.location, points, 1) - points

    def diffuse(self, normals: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(N, ..., C) diffuse colour at ``points``/``normals`` (N, ..., 3)."""
        return diffuse(normals, self.diffuse_color, self.get_direction(points))

    def specular(self, normals: torch.Tensor, points: torch.Tensor, camera_position: torch.Tensor,
                 shininess) -> torch.Tensor:
        """(N, ..., C) specular colour at ``points``/``normals`` (N, ..., 3) seen from ``camera_position``."""
        return specular(points, normals, self.get_direction(points), camera_position, shininess,
                        self.specular_color)


@dataclass(frozen=True, eq=False)
class AmbientLights(_Batched):
    """Ambient-only lighting (``pytorch3d.renderer.AmbientLights``): no diffuse or specular term.

    Args:
        ambient_color: (N, C) or (C,) ambient colour; default white (1, 1, 1).
        device: where the properties live.
    """

    ambient_color: Any = ((1.0, 1.0, 1.0),)

    _TRAILING: ClassVar[dict[str, int]] = {"ambient_color": 1}

    def __init__(self, ambient_color=None, device=None):
        object.__setattr__(self, "ambient_color", ((1.0, 1.0, 1.0),) if ambient_color is None else ambient_color)
        self._setup(device)

    def _zeros(self, points: torch.Tensor) -> torch.Tensor:
        return points.new_zeros(tuple(points.shape[:-1]) + (self.ambient_color.shape[-1],))

    def diffuse(self, normals: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Zeros of shape (N, ..., C)."""
        return self._zeros(points)

    def specular(self, normals: torch.Tensor, points: torch.Tensor, camera_position: torch.Tensor,
                 shininess) -> torch.Tensor:
        """Zeros of shape (N, ..., C)."""
        return self._zeros(points)


@dataclass(frozen=True, eq=False)
class Materials(_Batched):
    """Phong material (``pytorch3d.renderer.Materials``), batched and immutable.

    Args:
        ambient_color: (N, C) or (C,) ambient reflectance; default white.
        diffuse_color: (N, C) or (C,) diffuse reflectance; default white.
        specular_color: (N, C) or (C,) specular reflectance; default white.
        shininess: float or (N,) Phong exponent; default 64.
        device: where the properties live.

    Example:
        >>> materials = Materials(specular_color=[[0.0, 1.0, 0.0]], shininess=10.0)
    """

    ambient_color: Any = ((1.0, 1.0, 1.0),)
    diffuse_color: Any = ((1.0, 1.0, 1.0),)
    specular_color: Any = ((1.0, 1.0, 1.0),)
    shininess: Any = 64

    _TRAILING: ClassVar[dict[str, int]] = {"ambient_color": 1, "diffuse_color": 1, "specular_color": 1, "shininess": 0}

    def __init__(self, ambient_color=((1.0, 1.0, 1.0),), diffuse_color=((1.0, 1.0, 1.0),),
                 specular_color=((1.0, 1.0, 1.0),), shininess=64, device=None):
        object.__setattr__(self, "ambient_color", ambient_color)
        object.__setattr__(self, "diffuse_color", diffuse_color)
        object.__setattr__(self, "specular_color", specular_color)
        object.__setattr__(self, "shininess", shininess)
        self._setup(device)


Lights = AmbientLights | PointLights | DirectionalLights
