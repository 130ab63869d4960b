"""Dense volumes and their sampling (PyTorch3D's ``Volumes`` and ``VolumeSampler``).

Dimension names: ``N`` volumes (one per camera); ``D_d`` density channels; ``C`` feature channels;
``D, H, W`` volume depth, height, width (voxels); ``...`` the spatial shape of the rays or points of one
volume; ``S`` samples per ray.

Volume local coordinates are ``grid_sample``'s with the volumes' ``align_corners`` (default True:
(-1, -1, -1) is the centre of voxel (0, 0, 0); False: its outer corner), x indexes W, y indexes H and z
indexes D. ``VolumeLocator`` holds the grid sizes and the local <-> world maps (``Volumes.locator``);
batches of differently sized volumes are padded and keep each volume's size.

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

__all__ = ["VolumeLocator", "VolumeSampler", "Volumes", "sample_volume"]


def _as_per_volume(value, n: int, dtype: torch.dtype, device, name: str) -> torch.Tensor:
    """Broadcast a scalar / (1,) / (3,) / (1, 3) / (N, 3) / (N, 1) value to ``(N, 3)``."""
    if isinstance(value, (list, tuple)) and len(value) != 3:
        raise ValueError(f"{name} must be a scalar, a 3-sequence or a tensor of shape (1,), (3,), (1, 3), (N, 1) "
                         f"or (N, 3); got a sequence of length {len(value)}")
    try:
        v = torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be a scalar, a 3-sequence or a tensor, got {type(value).__name__}") from e
    if v.ndim == 0:
        v = v.expand(3)
    if v.ndim == 1:
        if v.shape[0] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (1,), (3,), (1, 3), (N, 1) or (N, 3); got {tuple(v.shape)}")
        v = v.expand(3)[None].expand(n, 3)
    elif v.ndim == 2:
        if v.shape[0] not in (1, n) or v.shape[1] not in (1, 3):
            raise ValueError(f"{name} must be a scalar, (1,), (3,), (1, 3), (N, 1) or (N, 3) with N={n}; got "
                             f"{tuple(v.shape)}")
        v = v.expand(n, 3)
    else:
        raise ValueError(f"{name} must be a scalar, (1,), (3,), (1, 3), (N, 1) or (N, 3); got {tuple(v.shape)}")
    return v


def _grid_sizes_tensor(grid_sizes, batch_size: int, device) -> torch.Tensor:
    """PyTorch3D's ``grid_sizes`` forms -> ``(N, 3)`` long: ``(D, H, W)`` for all / per volume, or a tensor."""
    if isinstance(grid_sizes, torch.Tensor):
        if grid_sizes.ndim == 1 and grid_sizes.shape[0] == 3:
            grid_sizes = grid_sizes[None].expand(batch_size, 3)
        if grid_sizes.ndim != 2 or grid_sizes.shape != (batch_size, 3):
            raise ValueError(f"grid_sizes must have shape ({batch_size}, 3), got {tuple(grid_sizes.shape)}")
        if grid_sizes.is_floating_point() or grid_sizes.is_complex():
            raise TypeError(f"grid_sizes must have an integer dtype, got {grid_sizes.dtype}")
        out = grid_sizes.to(device=device, dtype=torch.long)
    elif isinstance(grid_sizes, (list, tuple)) and len(grid_sizes) > 0:
        if all(isinstance(g, int) for g in grid_sizes):
            if len(grid_sizes) != 3:
                raise ValueError(f"grid_sizes must be (D, H, W), got {tuple(grid_sizes)}")
            rows = [list(grid_sizes)] * batch_size
        else:
            if len(grid_sizes) != batch_size:
                raise ValueError(f"grid_sizes must hold {batch_size} (D, H, W) sizes, got {len(grid_sizes)}")
            rows = [[int(x) for x in g] for g in grid_sizes]
            if any(len(r) != 3 for r in rows):
                raise ValueError("every entry of grid_sizes must be (D, H, W)")
        out = torch.tensor(rows, dtype=torch.long, device=device).reshape(batch_size, 3)
    else:
        raise ValueError("grid_sizes must be a (D, H, W) tuple, a list of N of them or an (N, 3) tensor, got "
                         f"{type(grid_sizes).__name__}")
    if out.numel() and int(out.min()) < 1:
        raise ValueError(f"grid_sizes must be positive, got a minimum of {int(out.min())}")
    return out


class VolumeLocator:
    """Where the voxels of a batch of grids lie: local and world coordinates (PyTorch3D's ``VolumeLocator``).

    Coordinates (PyTorch3D's conventions):

    - local: ``grid_sample``'s normalised coordinates called with the same ``align_corners``; x indexes W,
      y indexes H, z indexes D. With ``align_corners=True`` (default) (-1, -1, -1) and (1, 1, 1) are the
      centres of the corner voxels: voxel ``k`` of an axis of ``r`` voxels is at ``2 k / (r - 1) - 1``;
      with ``align_corners=False`` they are the outer edges of the corner voxels: voxel ``k`` is at
      ``(2 k + 1) / r - 1``.
    - world: ``world = local * 0.5 * (size_xyz - 1) * voxel_size - volume_translation`` with ``size_xyz``
      the volume's own ``(W, H, D)``, whatever ``align_corners`` (as PyTorch3D: the flag moves the voxel
      centres within local space, not the local-to-world map).

    Every volume keeps its own grid size (``get_grid_sizes``): a batch built from differently sized grids
    is stored padded to the largest, and the voxels of the padding continue the smaller volume's lattice.

    Args:
        batch_size: ``N``.
        grid_sizes: ``(D, H, W)`` of every volume, a list of ``N`` such triples, or an ``(N, 3)`` integer
            tensor.
        device: device of the locator's tensors.
        voxel_size: scalar, ``(1,)``, ``(3,)``, ``(1, 3)``, ``(N, 1)`` or ``(N, 3)``: world size of a voxel
            along x, y, z.
        volume_translation: ``(3,)``, ``(1, 3)`` or ``(N, 3)``: the volume centre sits at
            ``-volume_translation``.
        align_corners: see above (``grid_sample``'s namesake argument).
        dtype: floating dtype of the coordinates (lib3d addition; PyTorch3D always uses float32).

    Example:
        >>> loc = VolumeLocator(1, (5, 5, 5), "cpu", voxel_size=1.0)
        >>> loc.world_to_local_coords(torch.tensor([[[-2.0, 0.0, 2.0]]]))   # [[[-1, 0, 1]]]
    """

    def __init__(self, batch_size: int, grid_sizes, device, voxel_size=1.0,
                 volume_translation=(0.0, 0.0, 0.0), align_corners: bool = True, *,
                 dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        if not isinstance(align_corners, bool):
            raise TypeError(f"align_corners must be a bool, got {type(align_corners).__name__}")
        self.device = torch.device(device)
        self._batch_size = batch_size
        self._grid_sizes = _grid_sizes_tensor(grid_sizes, batch_size, self.device)
        self._align_corners = align_corners
        self._voxel_size = _as_per_volume(voxel_size, batch_size, dtype, self.device, "voxel_size")
        self._volume_translation = _as_per_volume(volume_translation, batch_size, dtype, self.device,
                                                  "volume_translation")

    @classmethod
    def _from_parts(cls, grid_sizes: torch.Tensor, voxel_size: torch.Tensor, volume_translation: torch.Tensor,
                    align_corners: bool) -> VolumeLocator:
        out = cls.__new__(cls)
        out.device = grid_sizes.device
        out._batch_size = grid_sizes.shape[0]
        out._grid_sizes = grid_sizes
        out._align_corners = align_corners
        out._voxel_size = voxel_size
        out._volume_translation = volume_translation
        return out

    def __len__(self) -> int:
        return self._batch_size

    def __getitem__(self, index) -> VolumeLocator:
        """The locators of the selected volumes (int, slice, list, bool or long tensor; batch dim kept)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} volumes")
            index = slice(index % len(self), index % len(self) + 1)  # a view, batch dimension kept
        return VolumeLocator._from_parts(self._grid_sizes[index], self._voxel_size[index],
                                         self._volume_translation[index], self._align_corners)

    def get_grid_sizes(self) -> torch.Tensor:
        """``(N, 3)`` long: ``(D, H, W)`` of each volume."""
        return self._grid_sizes

    def get_voxel_size(self) -> torch.Tensor:
        """``(N, 3)`` float: world size of a voxel along x, y, z."""
        return self._voxel_size

    def get_volume_translation(self) -> torch.Tensor:
        """``(N, 3)`` float ``volume_translation`` (the volume centre is at its negative)."""
        return self._volume_translation

    get_translation = get_volume_translation

    def get_align_corners(self) -> bool:
        """The ``align_corners`` convention of the local coordinates."""
        return self._align_corners

    def _scale(self) -> torch.Tensor:
        """``(N, 3)``: ``0.5 * (size_xyz - 1) * voxel_size``, world units per local unit."""
        size_xyz = self._grid_sizes.flip(-1).to(self._voxel_size.dtype)
        return 0.5 * (size_xyz - 1) * self._voxel_size

    def _check_points(self, name: str, points: torch.Tensor) -> tuple[int, ...]:
        check_shape(name, points, (..., 3), dtype="float")
        if points.ndim < 2 or points.shape[0] != len(self):
            raise ValueError(f"{name} must have shape ({len(self)}, ..., 3), got {tuple(points.shape)}")
        return (len(self),) + (1,) * (points.ndim - 2) + (3,)

    def local_to_world_coords(self, points_3d_local: torch.Tensor) -> torch.Tensor:
        """Local ``(N, ..., 3)`` float -> world ``(N, ..., 3)`` (see the class docstring)."""
        shape = self._check_points("points_3d_local", points_3d_local)
        return points_3d_local * self._scale().view(shape) - self._volume_translation.view(shape)

    def world_to_local_coords(self, points_3d_world: torch.Tensor) -> torch.Tensor:
        """World ``(N, ..., 3)`` float -> local ``(N, ..., 3)`` (inverse of ``local_to_world_coords``)."""
        shape = self._check_points("points_3d_world", points_3d_world)
        return (points_3d_world + self._volume_translation.view(shape)) / self._scale().view(shape)

    def get_local_to_world_coords_transform(self):
        """The local-to-world map as an ``(N)`` ``lib3d.geometry.Transform3d`` (scale, then translate)."""
        from lib3d.geometry import Scale, Translate
        return Scale(self._scale(), device=self.device).compose(
            Translate(-self._volume_translation, device=self.device))

    def get_world_to_local_coords_transform(self):
        """The world-to-local map as an ``(N)`` ``lib3d.geometry.Transform3d``."""
        return self.get_local_to_world_coords_transform().inverse()

    def _axis_coords(self, axis: int, r_pad: int) -> torch.Tensor:
        """``(N, r_pad)`` local coordinates of the voxels of one axis (0: D, 1: H, 2: W) of each volume."""
        dtype, dev = self._voxel_size.dtype, self.device
        sizes = self._grid_sizes[:, axis]
        n = len(self)
        if n == 0 or bool((sizes == r_pad).all()):  # every volume fills the grid: PyTorch3D's linspace
            adj = 0.0 if self._align_corners else 1.0 / r_pad
            return torch.linspace(-1.0 + adj, 1.0 - adj, r_pad, dtype=dtype, device=dev)[None].expand(n, r_pad)
        k = torch.arange(r_pad, dtype=dtype, device=dev)[None]
        r = sizes.to(dtype)[:, None]
        if self._align_corners:
            return 2.0 * k / (r - 1).clamp_min(1.0) - 1.0
        return (2.0 * k + 1.0) / r - 1.0

    def _coord_grid(self, resolution: Sequence[int], world_coordinates: bool) -> torch.Tensor:
        d, h, w = (int(x) for x in resolution)
        n = len(self)
        z = self._axis_coords(0, d).view(n, d, 1, 1).expand(n, d, h, w)
        y = self._axis_coords(1, h).view(n, 1, h, 1).expand(n, d, h, w)
        x = self._axis_coords(2, w).view(n, 1, 1, w).expand(n, d, h, w)
        local = torch.stack((x, y, z), dim=-1)
        return self.local_to_world_coords(local) if world_coordinates else local

    def get_coord_grid(self, world_coordinates: bool = True) -> torch.Tensor:
        """``(N, D, H, W, 3)`` coordinates (world or local) of the voxel centres.

        ``D, H, W`` are the largest grid sizes of the batch; voxels past a smaller volume's size continue
        its lattice. ``grid_sample(densities, get_coord_grid(False), align_corners=align_corners)`` gives
        back the densities of a batch of equally sized volumes.
        """
        res = self._grid_sizes.amax(dim=0).tolist() if len(self) else [0, 0, 0]
        return self._coord_grid(res, world_coordinates)

    def _to_padded_local(self, local: torch.Tensor, resolution: Sequence[int]) -> torch.Tensor:
        """Each volume's local coordinates ``(N, ..., 3)`` -> those of the padded ``resolution`` grid (the
        same voxel), for sampling a padded tensor with ``grid_sample``; unchanged when no volume is padded."""
        pad = torch.tensor(list(resolution), dtype=torch.long, device=self.device)
        if len(self) == 0 or bool((self._grid_sizes == pad).all()):
            return local
        r = self._grid_sizes.flip(-1).to(local.dtype)  # (N, 3) as x, y, z
        big = pad.flip(-1).to(local.dtype)[None]
        if self._align_corners:
            factor = (r - 1) / (big - 1).clamp_min(1.0)
        else:
            factor = r / big
        shape = (len(self),) + (1,) * (local.ndim - 2) + (3,)
        return (local + 1.0) * factor.view(shape) - 1.0

    def to(self, device, copy: bool = False) -> VolumeLocator:
        """The locator on ``device`` (``self`` when already there and ``copy`` is False)."""
        device = torch.device(device)
        if not copy and device == self.device:
            return self
        return VolumeLocator._from_parts(self._grid_sizes.to(device, copy=copy),
                                         self._voxel_size.to(device, copy=copy),
                                         self._volume_translation.to(device, copy=copy), self._align_corners)

    def cpu(self) -> VolumeLocator:
        return self.to("cpu")

    def clone(self) -> VolumeLocator:
        return VolumeLocator._from_parts(self._grid_sizes.clone(), self._voxel_size.clone(),
                                         self._volume_translation.clone(), self._align_corners)


def _batch_to_padded(x, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``densities`` / ``features`` as a padded ``(N, C, D, H, W)`` tensor, plus ``(N, 3)`` grid sizes for a
    list of differently sized ``(C, D_i, H_i, W_i)`` grids (``None`` for a 5-D tensor)."""
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError(f"{name} must hold at least one volume")
        for i, g in enumerate(x):
            check_shape(f"{name}[{i}]", g, (None, None, None, None), dtype="float")
        if any(g.shape[0] != x[0].shape[0] for g in x):
            raise ValueError(f"every entry of {name} must have the same number of channels, got "
                             f"{[int(g.shape[0]) for g in x]}")
        sizes = torch.tensor([list(g.shape[1:]) for g in x], dtype=torch.long)
        d, h, w = sizes.amax(dim=0).tolist()
        padded = torch.stack([F.pad(g, (0, w - g.shape[3], 0, h - g.shape[2], 0, d - g.shape[1])) for g in x])
        return padded, sizes.to(padded.device)
    check_shape(name, x, (None, None, None, None, None), dtype="float")
    return x, None


class Volumes:
    """A batch of dense volumes (PyTorch3D's ``Volumes``, padded representation).

    Coordinates are those of the ``VolumeLocator`` (``self.locator``): local coordinates are
    ``grid_sample``'s with ``align_corners`` (default True: (-1, -1, -1) and (1, 1, 1) are the centres of
    the corner voxels; False: their outer edges), x indexes W, y indexes H, z indexes D; world coordinates
    are ``world = local * 0.5 * (size_xyz - 1) * voxel_size - volume_translation`` with ``size_xyz`` each
    volume's own ``(W, H, D)``: the volume centre sits at ``-volume_translation``.

    Differently sized volumes (a list of ``(C, D_i, H_i, W_i)`` grids) are zero-padded to the largest
    size; each keeps its grid size (``get_grid_sizes``), local and world coordinates, and ``sample_volume``
    samples each one's own voxels (PyTorch3D's ``VolumeSampler`` reads the padded grid as if it had each
    volume's size; outside a padded volume the samples are zero whatever ``padding_mode``).

    Args:
        densities: ``(N, D_d, D, H, W)`` float, or a list of ``N`` ``(D_d, D_i, H_i, W_i)`` float grids.
        features: optional ``(N, C, D, H, W)`` float, or a list of ``(C, D_i, H_i, W_i)`` (the sizes of
            ``densities``).
        voxel_size: scalar, ``(1,)``, ``(3,)``, ``(1, 3)``, ``(N, 1)`` or ``(N, 3)`` world size of a voxel
            along x, y, z.
        volume_translation: ``(3,)``, ``(1, 3)`` or ``(N, 3)``.
        align_corners: the local-coordinate convention, also used by ``sample_volume`` (default True, as
            PyTorch3D).

    Raises:
        ValueError: a shape that is none of the above; TypeError: a non-float grid.
    """

    def __init__(self, densities, features=None, voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0),
                 align_corners: bool = True) -> None:
        densities, sizes = _batch_to_padded(densities, "densities")
        n = densities.shape[0]
        if sizes is None:
            sizes = torch.tensor(list(densities.shape[2:]), dtype=torch.long, device=densities.device)
            sizes = sizes[None].expand(n, 3)
        if features is not None:
            features, f_sizes = _batch_to_padded(features, "features")
            if f_sizes is None:
                f_sizes = torch.tensor(list(features.shape[2:]), dtype=torch.long, device=features.device)
                f_sizes = f_sizes[None].expand(features.shape[0], 3)
            if features.shape[0] != n or not torch.equal(f_sizes.cpu(), sizes.cpu()) \
                    or features.shape[2:] != densities.shape[2:]:
                raise ValueError(f"features must have the grid sizes of densities ({sizes.tolist()}), got "
                                 f"{f_sizes.tolist()}")
            if features.device != densities.device:
                raise ValueError(f"features must be on the device of densities ({densities.device}), got "
                                 f"{features.device}")
        self._densities = densities
        self._features = features
        self.locator = VolumeLocator(n, sizes, densities.device, voxel_size, volume_translation, align_corners,
                                     dtype=densities.dtype)
        self._shared = False

    @classmethod
    def _from_parts(cls, densities: torch.Tensor, features: torch.Tensor | None, locator: VolumeLocator,
                    shared: bool) -> Volumes:
        out = cls.__new__(cls)
        out._densities = densities
        out._features = features
        out.locator = locator
        out._shared = shared
        return out

    @classmethod
    def from_shared_grid(cls, densities: torch.Tensor, features: torch.Tensor | None = None, batch_size: int = 1,
                         voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0), align_corners: bool = True) -> Volumes:
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
            align_corners: the local-coordinate convention (see ``Volumes``).
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
                  voxel_size, volume_translation, align_corners)
        vol._shared = True
        return vol

    @property
    def is_shared(self) -> bool:
        """True for volumes made by ``from_shared_grid`` (one grid and locator for the whole batch)."""
        return self._shared

    @property
    def device(self) -> torch.device:
        return self._densities.device

    def __len__(self) -> int:
        return self._densities.shape[0]

    def densities(self) -> torch.Tensor:
        """``(N, D_d, D, H, W)`` densities (padded with zeros past each volume's grid size)."""
        return self._densities

    def features(self) -> torch.Tensor | None:
        """``(N, C, D, H, W)`` features (padded) or ``None``."""
        return self._features

    def _unpad(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[i, :, :d, :h, :w] for i, (d, h, w) in enumerate(self.get_grid_sizes().tolist())]

    def densities_list(self) -> list[torch.Tensor]:
        """The densities as a list of ``N`` ``(D_d, D_i, H_i, W_i)`` grids (views, padding removed)."""
        return self._unpad(self._densities)

    def features_list(self) -> list[torch.Tensor] | None:
        """The features as a list of ``N`` ``(C, D_i, H_i, W_i)`` grids, or ``None`` without features."""
        return None if self._features is None else self._unpad(self._features)

    def get_grid_sizes(self) -> torch.Tensor:
        """``(N, 3)`` long: ``(D_i, H_i, W_i)`` of each volume."""
        return self.locator.get_grid_sizes()

    def get_align_corners(self) -> bool:
        """The ``align_corners`` convention of the local coordinates (and of ``sample_volume``)."""
        return self.locator.get_align_corners()

    def get_voxel_size(self) -> torch.Tensor:
        """``(N, 3)`` world size of a voxel along x, y, z."""
        return self.locator.get_voxel_size()

    def get_volume_translation(self) -> torch.Tensor:
        """``(N, 3)`` ``volume_translation``."""
        return self.locator.get_volume_translation()

    def _is_padded(self) -> bool:
        pad = torch.tensor(list(self._densities.shape[2:]), dtype=torch.long, device=self.device)
        return len(self) > 0 and not bool((self.get_grid_sizes() == pad).all())

    def _scale(self) -> torch.Tensor:
        return self.locator._scale()

    @property
    def _volume_translation(self) -> torch.Tensor:
        return self.locator.get_volume_translation()

    def __getitem__(self, index) -> Volumes:
        """The selected volumes (int, slice, list, bool or long tensor; the batch dimension is kept)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} volumes")
            index = slice(index % len(self), index % len(self) + 1)  # views, batch dimension kept
        feats = None if self._features is None else self._features[index]
        return Volumes._from_parts(self._densities[index], feats, self.locator[index], self._shared)

    def local_to_world_coords(self, points_3d_local: torch.Tensor) -> torch.Tensor:
        """Local ``(N, ..., 3)`` -> world ``(N, ..., 3)`` (see the class docstring)."""
        return self.locator.local_to_world_coords(points_3d_local)

    def world_to_local_coords(self, points_3d_world: torch.Tensor) -> torch.Tensor:
        """World ``(N, ..., 3)`` -> local ``(N, ..., 3)`` (inverse of ``local_to_world_coords``)."""
        return self.locator.world_to_local_coords(points_3d_world)

    def get_coord_grid(self, world_coordinates: bool = True) -> torch.Tensor:
        """``(N, D, H, W, 3)`` coordinates of the voxel centres (world or local) of the padded grid."""
        return self.locator._coord_grid(self._densities.shape[2:], world_coordinates)

    def get_local_to_world_coords_transform(self):
        """The local-to-world map as a ``lib3d.geometry.Transform3d``."""
        return self.locator.get_local_to_world_coords_transform()

    def get_world_to_local_coords_transform(self):
        """The world-to-local map as a ``lib3d.geometry.Transform3d``."""
        return self.locator.get_world_to_local_coords_transform()

    def update_padded(self, new_densities: torch.Tensor, new_features: torch.Tensor | None = None) -> Volumes:
        """A new ``Volumes`` with the same locator and new padded densities and features (as PyTorch3D,
        ``new_features=None`` gives volumes without features).

        Args:
            new_densities: ``(N, D_d', D, H, W)`` float, the padded spatial shape of ``densities()``.
            new_features: optional ``(N, C', D, H, W)`` float.
        """
        spatial = (len(self),) + tuple(self._densities.shape[2:])
        for name, x in (("new_densities", new_densities), ("new_features", new_features)):
            if x is None:
                continue
            check_shape(name, x, (None, None, None, None, None), dtype="float")
            if (x.shape[0],) + tuple(x.shape[2:]) != spatial:
                raise ValueError(f"{name} must have shape ({spatial[0]}, *, {spatial[1]}, {spatial[2]}, "
                                 f"{spatial[3]}), got {tuple(x.shape)}")
            if x.device != self.device:
                raise ValueError(f"{name} must be on {self.device}, got {x.device}")
        return Volumes._from_parts(new_densities, new_features, self.locator, self._shared)

    def to(self, device, copy: bool = False) -> Volumes:
        """The volumes on ``device`` (``self`` when already there and ``copy`` is False)."""
        device = torch.device(device)
        if not copy and device == self.device:
            return self
        f = None if self._features is None else self._features.to(device, copy=copy)
        return Volumes._from_parts(self._densities.to(device, copy=copy), f, self.locator.to(device, copy=copy),
                                   self._shared)

    def cpu(self) -> Volumes:
        return self.to("cpu")

    def clone(self) -> Volumes:
        f = None if self._features is None else self._features.clone()
        return Volumes._from_parts(self._densities.clone(), f, self.locator.clone(), False)

    def detach(self) -> Volumes:
        f = None if self._features is None else self._features.detach()
        return Volumes._from_parts(self._densities.detach(), f, self.locator, self._shared)


def _shared_grid(volumes: Volumes, sample_mode: str, padding_mode: str
                 ) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor, torch.Tensor] | None:
    """For volumes made by ``Volumes.from_shared_grid`` (or a batch of one) sampled bilinearly with zero
    padding: the one ``(C, D, H, W)`` grid (densities then features), its channel groups (``(D_d,)`` or
    ``(D_d, C_f)``) and the common ``(translation (3,), scale (3,))``; else None."""
    if sample_mode != "bilinear" or padding_mode != "zeros" or not (volumes.is_shared or len(volumes) == 1):
        return None
    if not volumes.get_align_corners() or volumes._is_padded():  # the kernels use align_corners=True
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
    local = volumes.locator._to_padded_local(local, volumes.densities().shape[2:])
    outs = []
    for grid in (volumes.densities(), volumes.features()):
        if grid is None:
            outs.append(None)
            continue
        vals = F.grid_sample(grid, local.reshape(n, -1, 1, 1, 3), mode=sample_mode, padding_mode=padding_mode,
                             align_corners=volumes.get_align_corners())
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

