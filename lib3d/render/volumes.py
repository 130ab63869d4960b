"""Dense volumes and their sampling (PyTorch3D's ``Volumes`` and ``VolumeSampler``).

Dimension names: ``N`` volumes (one per camera); ``D_d`` density channels; ``C`` feature channels;
``D, H, W`` volume depth, height, width (voxels); ``...`` the spatial shape of the rays or points of one
volume; ``S`` samples per ray.

Volume local coordinates are ``grid_sample``'s (``align_corners=True``): (-1, -1, -1) is the centre of voxel
(0, 0, 0), x indexes W, y indexes H and z indexes D.

One grid seen by every camera of a batch (the book's chapter-5 ``VolumeModel``) is said so explicitly with
``Volumes.from_shared_grid``: such volumes are sampled along the rays without materialising the points
(``lib3d.render.trilinear``); ``compiled=True`` on ``sample_volume`` / ``VolumeSampler`` /
``VolumeRenderer`` picks the compiled CPU kernels for large inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lib3d._checks import check_choice, check_shape
from lib3d.render.raysampling import RayBundle, _check_rays, ray_bundle_to_ray_points
from lib3d.render.trilinear import sample_grid_along_rays, trilinear_sample

__all__ = ["VolumeSampler", "Volumes", "sample_volume"]


def _as_per_volume(value, n: int, ref: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a scalar / (3,) / (N, 3) / (N, 1) value to ``(N, 3)``."""
    v = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if v.ndim == 0:
        v = v.expand(3)
    if v.ndim == 1:
        if v.shape[0] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3); got {tuple(v.shape)}")
        v = v.expand(3)[None].expand(n, 3)
    elif v.ndim == 2:
        if v.shape[0] != n or v.shape[1] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3) with N={n}; got {tuple(v.shape)}")
        v = v.expand(n, 3)
    else:
        raise ValueError(f"{name} must be a scalar, (3,), (N, 1) or (N, 3); got {tuple(v.shape)}")
    return v


class Volumes:
    """A batch of dense volumes of the same size (PyTorch3D's ``Volumes``, padded representation).

    Coordinates:

    - local: ``grid_sample``'s normalised coordinates with ``align_corners=True``: (-1, -1, -1) and
      (1, 1, 1) are the centres of the corner voxels; x indexes W, y indexes H, z indexes D.
    - world: ``world = local * 0.5 * (size_xyz - 1) * voxel_size - volume_translation``
      with ``size_xyz = (W, H, D)``: the volume centre sits at ``-volume_translation``.

    Args:
        densities: ``(N, D_d, D, H, W)`` float (or a list of ``(D_d, D, H, W)`` of equal size).
        features: optional ``(N, C, D, H, W)`` float (or a list).
        voxel_size: scalar, ``(3,)`` or ``(N, 3)`` world size of a voxel along x, y, z.
        volume_translation: ``(3,)`` or ``(N, 3)``.
    """

    def __init__(self, densities, features=None, voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0)) -> None:
        if isinstance(densities, (list, tuple)):
            densities = torch.stack(list(densities))
        if isinstance(features, (list, tuple)):
            features = torch.stack(list(features))
        check_shape("densities", densities, ("N", None, "D", "H", "W"), dtype="float")
        if features is not None:
            sizes = check_shape("densities", densities, ("N", None, "D", "H", "W"))
            check_shape("features", features, ("N", None, "D", "H", "W"), sizes, dtype="float")
        self._densities = densities
        self._features = features
        n = densities.shape[0]
        self._voxel_size = _as_per_volume(voxel_size, n, densities, "voxel_size")
        self._volume_translation = _as_per_volume(volume_translation, n, densities, "volume_translation")
        self._shared = False

    @classmethod
    def from_shared_grid(cls, densities: torch.Tensor, features: torch.Tensor | None = None, batch_size: int = 1,
                         voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0)) -> Volumes:
        """``batch_size`` copies of one volume (no memory copied): one grid seen by every camera of a batch.

        Such volumes know they share one grid, so ``sample_volume`` and ``VolumeSampler`` sample it once
        for the whole batch (along the rays, without materialising the points); the values equal those of
        ``Volumes(densities[None].expand(N, ...), ...)``.

        Args:
            densities: ``(D_d, D, H, W)`` float.
            features: optional ``(C, D, H, W)`` float.
            batch_size: ``N``.
            voxel_size: scalar or ``(3,)``.
            volume_translation: ``(3,)``.
        """
        check_shape("densities", densities, (None, "D", "H", "W"), dtype="float")
        if features is not None:
            sizes = check_shape("densities", densities, (None, "D", "H", "W"))
            check_shape("features", features, (None, "D", "H", "W"), sizes, dtype="float")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for name, v in (("voxel_size", voxel_size), ("volume_translation", volume_translation)):
            if torch.as_tensor(v).ndim > 1:
                raise ValueError(f"{name} of a shared grid must be a scalar or (3,), got {tuple(torch.as_tensor(v).shape)}")
        vol = cls(densities[None].expand(batch_size, *densities.shape),
                  None if features is None else features[None].expand(batch_size, *features.shape),
                  voxel_size, volume_translation)
        vol._shared = True
        return vol

    @property
    def is_shared(self) -> bool:
        """True for volumes made by ``from_shared_grid`` (one grid and locator for the whole batch)."""
        return self._shared

    def _with_shared(self, other: Volumes) -> Volumes:
        other._shared = self._shared
        return other

    def densities(self) -> torch.Tensor:
        """``(N, D_d, D, H, W)`` densities."""
        return self._densities

    def features(self) -> torch.Tensor | None:
        """``(N, C, D, H, W)`` features or ``None``."""
        return self._features

    def get_grid_sizes(self) -> torch.Tensor:
        """``(N, 3)`` long: ``(D, H, W)`` of each volume."""
        d, h, w = self._densities.shape[-3:]
        return torch.tensor([[d, h, w]], dtype=torch.long, device=self.device).expand(len(self), 3)

    @property
    def device(self) -> torch.device:
        return self._densities.device

    def __len__(self) -> int:
        return self._densities.shape[0]

    def __getitem__(self, index) -> Volumes:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        feats = None if self._features is None else self._features[index]
        return self._with_shared(Volumes(self._densities[index], feats, self._voxel_size[index],
                                         self._volume_translation[index]))

    def _scale(self) -> torch.Tensor:
        size_xyz = torch.tensor(self._densities.shape[-3:][::-1], dtype=self._densities.dtype, device=self.device)
        return 0.5 * (size_xyz - 1) * self._voxel_size  # (N, 3)

    def local_to_world_coords(self, points_3d_local: torch.Tensor) -> torch.Tensor:
        """Local ``(N, ..., 3)`` -> world ``(N, ..., 3)`` (see the class docstring)."""
        if points_3d_local.ndim < 2 or points_3d_local.shape[0] != len(self) or points_3d_local.shape[-1] != 3:
            raise ValueError(f"points_3d_local must have shape ({len(self)}, ..., 3), got "
                             f"{tuple(points_3d_local.shape)}")
        shape = (len(self),) + (1,) * (points_3d_local.ndim - 2) + (3,)
        return points_3d_local * self._scale().view(shape) - self._volume_translation.view(shape)

    def world_to_local_coords(self, points_3d_world: torch.Tensor) -> torch.Tensor:
        """World ``(N, ..., 3)`` -> local ``(N, ..., 3)`` (inverse of ``local_to_world_coords``)."""
        if points_3d_world.ndim < 2 or points_3d_world.shape[0] != len(self) or points_3d_world.shape[-1] != 3:
            raise ValueError(f"points_3d_world must have shape ({len(self)}, ..., 3), got "
                             f"{tuple(points_3d_world.shape)}")
        shape = (len(self),) + (1,) * (points_3d_world.ndim - 2) + (3,)
        return (points_3d_world + self._volume_translation.view(shape)) / self._scale().view(shape)

    def get_coord_grid(self, world_coordinates: bool = True) -> torch.Tensor:
        """``(N, D, H, W, 3)`` coordinates of the voxel centres (world or local)."""
        d, h, w = self._densities.shape[-3:]
        axes = [torch.linspace(-1.0, 1.0, r, dtype=self._densities.dtype, device=self.device) for r in (d, h, w)]
        Z, Y, X = torch.meshgrid(*axes, indexing="ij")
        local = torch.stack((X, Y, Z), dim=3)[None].expand(len(self), d, h, w, 3)
        return self.local_to_world_coords(local) if world_coordinates else local

    def get_local_to_world_coords_transform(self):
        """The local-to-world map as a ``lib3d.geometry.Transform3d`` (needs ``lib3d.geometry``)."""
        from lib3d.geometry import Scale, Translate
        return Scale(self._scale(), device=self.device).compose(
            Translate(-self._volume_translation, device=self.device))

    def get_voxel_size(self) -> torch.Tensor:
        return self._voxel_size

    def get_volume_translation(self) -> torch.Tensor:
        return self._volume_translation

    def update_padded(self, new_densities: torch.Tensor, new_features: torch.Tensor | None = None) -> Volumes:
        """A new ``Volumes`` with the same locator and new densities (and features)."""
        return Volumes(new_densities, new_features if new_features is not None else self._features,
                       self._voxel_size, self._volume_translation)

    def to(self, device) -> Volumes:
        f = None if self._features is None else self._features.to(device)
        return self._with_shared(Volumes(self._densities.to(device), f, self._voxel_size.to(device),
                                         self._volume_translation.to(device)))

    def clone(self) -> Volumes:
        f = None if self._features is None else self._features.clone()
        return Volumes(self._densities.clone(), f, self._voxel_size.clone(), self._volume_translation.clone())

    def detach(self) -> Volumes:
        f = None if self._features is None else self._features.detach()
        return self._with_shared(Volumes(self._densities.detach(), f, self._voxel_size, self._volume_translation))


def _shared_grid(volumes: Volumes, sample_mode: str, padding_mode: str
                 ) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor, torch.Tensor] | None:
    """For volumes made by ``Volumes.from_shared_grid`` (or a batch of one) sampled bilinearly with zero
    padding: the one ``(C, D, H, W)`` grid (densities then features), its channel groups (``(D_d,)`` or
    ``(D_d, C_f)``) and the common ``(translation (3,), scale (3,))``; else None."""
    if sample_mode != "bilinear" or padding_mode != "zeros" or not (volumes.is_shared or len(volumes) == 1):
        return None
    grids = [g for g in (volumes.densities(), volumes.features()) if g is not None]
    grid = torch.cat([g[0] for g in grids], dim=0) if len(grids) > 1 else grids[0][0]
    groups = tuple(g.shape[1] for g in grids)
    return grid, groups, volumes._volume_translation[0], volumes._scale()[0]


def _densities_features(groups: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    return groups[0], (groups[1] if len(groups) > 1 else None)


def sample_volume(volumes: Volumes, points_world: torch.Tensor, sample_mode: str = "bilinear",
                  padding_mode: str = "zeros", compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the densities and features of ``volumes`` at world points.

    Args:
        volumes: ``N`` volumes.
        points_world: ``(N, ..., 3)`` float world points.
        sample_mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.
        padding_mode: ``grid_sample`` padding mode outside the volume.
        compiled: sample a shared grid with the compiled CPU kernels of ``lib3d.render.trilinear`` (for
            large inputs; see ``trilinear_sample``).

    Returns:
        ``(densities (N, ..., D_d), features (N, ..., C) or None)``.

    When the points require grad (e.g. cameras optimised through the renderer) every volume is sampled
    with ``grid_sample`` so that the gradient reaches the points; otherwise volumes made by
    ``Volumes.from_shared_grid`` (or a batch of one) are sampled in one call (``trilinear_sample``).
    """
    check_choice("sample_mode", sample_mode, ("bilinear", "nearest"))
    check_shape("points_world", points_world, (..., 3), dtype="float")
    local = volumes.world_to_local_coords(points_world)
    n = local.shape[0]
    lead = local.shape[:-1]
    shared = None if local.requires_grad else _shared_grid(volumes, sample_mode, padding_mode)
    if shared is not None:
        # One grid shared by the batch: one sampling call for densities and features together.
        grid, groups = shared[0], shared[1]
        vals = trilinear_sample(grid, local.reshape(-1, 3), compiled=compiled).view(*lead, grid.shape[0])
        # split, not slices: its backward concatenates the gradients instead of zero-filling one per slice
        return _densities_features(torch.split(vals, list(groups), dim=-1))
    outs = []
    for grid in (volumes.densities(), volumes.features()):
        if grid is None:
            outs.append(None)
            continue
        vals = F.grid_sample(grid, local.reshape(n, -1, 1, 1, 3), mode=sample_mode, padding_mode=padding_mode,
                             align_corners=True)
        outs.append(vals.reshape(n, grid.shape[1], -1).permute(0, 2, 1).reshape(*lead, grid.shape[1]))
    return outs[0], outs[1]


class VolumeSampler(torch.nn.Module):
    """Samples a ``Volumes`` at the points of a ray bundle (PyTorch3D's ``VolumeSampler``).

    Args:
        volumes: the volumes (one per camera).
        sample_mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``grid_sample`` padding.
        compiled: use the compiled CPU kernels of ``lib3d.render.trilinear`` for large shared grids.

    Returns (forward(ray_bundle)):
        ``(rays_densities (N, ..., S, D_d), rays_features (N, ..., S, C))``.

    When every camera sees the same grid (``Volumes.from_shared_grid``, as the book's ``VolumeModel``
    builds them) and the rays are constants, the grid is sampled along the rays without materialising the
    points (``sample_grid_along_rays``); the outputs are then channel-first tensors seen as
    ``(N, ..., S, c)``. Otherwise the points go through ``sample_volume``.
    """

    def __init__(self, volumes: Volumes, sample_mode: str = "bilinear", padding_mode: str = "zeros",
                 compiled: bool = False) -> None:
        super().__init__()
        check_choice("sample_mode", sample_mode, ("bilinear", "nearest"))
        self._volumes = volumes
        self._sample_mode = sample_mode
        self._padding_mode = padding_mode
        self._compiled = bool(compiled)

    def forward(self, ray_bundle: RayBundle, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = ray_bundle
        shared = None
        if not any(x.requires_grad for x in (b.origins, b.directions, b.lengths)):
            shared = _shared_grid(self._volumes, self._sample_mode, self._padding_mode)
        if shared is not None and b.origins.shape[0] == len(self._volumes):
            # one grid for the batch and constant rays: sample along the rays without materialising points
            grid, groups, translation, scale = shared
            S = b.lengths.shape[-1]
            _check_rays(b.origins, b.directions, b.lengths)
            vals = sample_grid_along_rays(grid, b.origins.reshape(-1, 3), b.directions.reshape(-1, 3),
                                          b.lengths.reshape(-1, S), translation, scale, groups,
                                          compiled=self._compiled)
            return _densities_features([v.view(*b.lengths.shape, v.shape[-1]) for v in vals])
        points = ray_bundle_to_ray_points(ray_bundle)
        return sample_volume(self._volumes, points, self._sample_mode, self._padding_mode, self._compiled)

