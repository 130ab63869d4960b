"""``Pointclouds``: an immutable batch of point clouds of different sizes (PyTorch3D's ``Pointclouds``).

Dimension names: N clouds; P_i points of cloud i; P = max P_i (padded size); C feature channels.
List, padded (zeros past P_i) and packed views as for ``Meshes``; operations return new objects.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lib3d._checks import check_finite, check_shape, check_tensor
from lib3d.structures import packing


class Pointclouds:
    """A batch of N point clouds, each with optional normals and features.

    Args:
        points: list of ``(P_i, 3)`` float or padded ``(N, P, 3)`` float (all P points valid).
        normals: optional, same layout with 3 channels.
        features: optional, list of ``(P_i, C)`` or padded ``(N, P, C)``.

    Raises:
        ValueError: sizes that disagree with ``points`` or non-finite points.
    """

    __slots__ = ("_points", "_normals", "_features", "_num", "_cache")

    def __init__(self, points, normals=None, features=None):
        pts, num = self._pack("points", points, 3, None)
        check_finite("points", pts)
        nrm = self._pack("normals", normals, 3, num)[0] if normals is not None else None
        feat = self._pack("features", features, None, num)[0] if features is not None else None
        self._init(pts, nrm, feat, num)

    def _init(self, points, normals, features, num):
        self._points, self._normals, self._features, self._num = points, normals, features, list(num)
        self._cache = {}

    @staticmethod
    def _pack(name, x, width, num):
        if isinstance(x, torch.Tensor):
            check_shape(name, x, (None, None, width), dtype="float")
            sizes = [x.shape[1]] * x.shape[0]
            packed = x.reshape(-1, x.shape[2])
        elif isinstance(x, (list, tuple)):
            for i, t in enumerate(x):
                check_shape(f"{name}[{i}]", t, (None, width), dtype="float")
            sizes = [int(t.shape[0]) for t in x]
            packed = torch.cat(list(x), 0) if x else torch.zeros(0, 3 if width is None else width)
        else:
            raise TypeError(f"{name} must be a list of tensors or a padded tensor, got {type(x).__name__}")
        if num is not None and sizes != num:
            raise ValueError(f"{name} must have the same number of points per cloud as points ({num}), "
                             f"got {sizes}")
        return packed, sizes

    @classmethod
    def _from_packed(cls, points, normals, features, num) -> "Pointclouds":
        p = cls.__new__(cls)
        p._init(points, normals, features, num)
        return p

    def __len__(self) -> int:
        return len(self._num)

    def __repr__(self) -> str:
        return (f"Pointclouds(N={len(self)}, points={self._num}, normals={self._normals is not None}, "
                f"features={None if self._features is None else self._features.shape[1]}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return self._points.device

    @property
    def dtype(self) -> torch.dtype:
        return self._points.dtype

    def isempty(self) -> bool:
        return len(self) == 0 or sum(self._num) == 0

    def _c(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def num_points_per_cloud(self) -> torch.Tensor:
        """``(N,) int64``."""
        return self._c("num", lambda: torch.tensor(self._num, device=self.device, dtype=torch.int64))

    def cloud_to_packed_first_idx(self) -> torch.Tensor:
        """``(N,) int64`` first packed point of each cloud."""
        return self._c("first", lambda: packing.counts_to_first_idx(self.num_points_per_cloud()))

    def packed_to_cloud_idx(self) -> torch.Tensor:
        """``(sum P,) int64`` cloud of each packed point."""
        return self._c("p2c", lambda: packing.packed_to_element_idx(self.num_points_per_cloud(),
                                                                    self._points.shape[0]))

    def padded_to_packed_idx(self) -> torch.Tensor:
        """``(sum P,) int64`` row of each packed point in ``points_padded().view(-1, 3)``."""
        return self._c("pad2pack", lambda: packing.padded_to_packed_index(
            self.num_points_per_cloud(), max(self._num + [0]), self._points.shape[0]))

    def points_packed(self) -> torch.Tensor:
        """``(sum P, 3) float``."""
        return self._points

    def points_list(self) -> list[torch.Tensor]:
        """``[(P_i, 3) float]``."""
        return list(torch.split(self._points, self._num, 0))

    def points_padded(self) -> torch.Tensor:
        """``(N, P, 3) float`` padded with zeros."""
        return self._c("pts_pad", lambda: packing.packed_to_padded(self._points, self.num_points_per_cloud(),
                                                                   self._num))

    def normals_packed(self) -> torch.Tensor | None:
        """``(sum P, 3) float`` or None."""
        return self._normals

    def normals_list(self) -> list[torch.Tensor] | None:
        return None if self._normals is None else list(torch.split(self._normals, self._num, 0))

    def normals_padded(self) -> torch.Tensor | None:
        """``(N, P, 3) float`` or None."""
        if self._normals is None:
            return None
        return packing.packed_to_padded(self._normals, self.num_points_per_cloud(), self._num)

    def features_packed(self) -> torch.Tensor | None:
        """``(sum P, C) float`` or None."""
        return self._features

    def features_list(self) -> list[torch.Tensor] | None:
        return None if self._features is None else list(torch.split(self._features, self._num, 0))

    def features_padded(self) -> torch.Tensor | None:
        """``(N, P, C) float`` or None."""
        if self._features is None:
            return None
        return packing.packed_to_padded(self._features, self.num_points_per_cloud(), self._num)

    def get_bounding_boxes(self) -> torch.Tensor:
        """``(N, 3, 2) float`` per cloud and axis ``[min, max]``."""
        idx = self.packed_to_cloud_idx()[:, None].expand(-1, 3)
        p = self._points
        mins = p.new_full((len(self), 3), float("inf")).scatter_reduce(0, idx, p, reduce="amin")
        maxs = p.new_full((len(self), 3), float("-inf")).scatter_reduce(0, idx, p, reduce="amax")
        return torch.stack([mins, maxs], 2)

    def _with_points(self, points):
        return Pointclouds._from_packed(points, self._normals, self._features, self._num)

    def offset(self, offsets_packed: torch.Tensor) -> "Pointclouds":
        """Points moved by ``offsets_packed`` ``(sum P, 3)`` or ``(3,)`` float."""
        check_tensor("offsets_packed", offsets_packed, dtype="float")
        if offsets_packed.shape not in ((3,), self._points.shape):
            raise ValueError(f"offsets_packed must have shape (3,) or {tuple(self._points.shape)}, "
                             f"got {tuple(offsets_packed.shape)}")
        return self._with_points(self._points + offsets_packed)

    def scale(self, scale) -> "Pointclouds":
        """Points scaled by a float or per-cloud ``(N,)`` float tensor."""
        if not torch.is_tensor(scale):
            scale = torch.full((len(self),), float(scale), device=self.device, dtype=self.dtype)
        check_shape("scale", scale, (len(self),), dtype="float")
        return self._with_points(self._points * scale[self.packed_to_cloud_idx()][:, None])

    def update_padded(self, new_points_padded: torch.Tensor) -> "Pointclouds":
        """Same clouds with points ``new_points_padded (N, P, 3)`` float."""
        check_shape("new_points_padded", new_points_padded, (len(self), max(self._num + [0]), 3), dtype="float")
        return self._with_points(packing.padded_to_packed(new_points_padded, self.num_points_per_cloud(),
                                                          self._points.shape[0]))

    def __getitem__(self, index) -> "Pointclouds":
        n = len(self)
        if isinstance(index, int):
            ids = [index % n]
        elif isinstance(index, slice):
            ids = list(range(n))[index]
        elif isinstance(index, torch.Tensor):
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            ids = [int(i) for i in index.tolist()]
        else:
            ids = [int(i) for i in index]
        for i in ids:
            if not 0 <= i < n:
                raise IndexError(f"cloud index {i} out of range for {n} clouds")
        pl, nl, fl = self.points_list(), self.normals_list(), self.features_list()
        return Pointclouds([pl[i] for i in ids], None if nl is None else [nl[i] for i in ids],
                           None if fl is None else [fl[i] for i in ids])

    def extend(self, n: int) -> "Pointclouds":
        """Each cloud repeated ``n`` times in a row."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        return self[[i for i in range(len(self)) for _ in range(n)]]

    def clone(self) -> "Pointclouds":
        c = lambda t: None if t is None else t.clone()  # noqa: E731
        return Pointclouds._from_packed(self._points.clone(), c(self._normals), c(self._features), self._num)

    def detach(self) -> "Pointclouds":
        d = lambda t: None if t is None else t.detach()  # noqa: E731
        return Pointclouds._from_packed(self._points.detach(), d(self._normals), d(self._features), self._num)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Pointclouds":
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)
        return Pointclouds._from_packed(mv(self._points), mv(self._normals), mv(self._features), self._num)

    def cpu(self) -> "Pointclouds":
        return self.to("cpu")

    def cuda(self) -> "Pointclouds":
        return self.to("cuda")


def join_pointclouds_as_batch(pointclouds: Sequence[Pointclouds]) -> Pointclouds:
    """Concatenate batches of point clouds; normals/features are kept when every input has them."""
    pcs = list(pointclouds)
    if not pcs or not all(isinstance(p, Pointclouds) for p in pcs):
        raise ValueError("join_pointclouds_as_batch needs a non-empty list of Pointclouds")
    pts = [x for p in pcs for x in p.points_list()]
    nrm = [x for p in pcs for x in p.normals_list()] if all(p._normals is not None for p in pcs) else None
    feat = [x for p in pcs for x in p.features_list()] if all(p._features is not None for p in pcs) else None
    return Pointclouds(pts, nrm, feat)


def join_pointclouds_as_scene(pointclouds: Pointclouds | Sequence[Pointclouds]) -> Pointclouds:
    """Merge every cloud into a single cloud."""
    if not isinstance(pointclouds, Pointclouds):
        pointclouds = join_pointclouds_as_batch(pointclouds)
    p = pointclouds
    return Pointclouds._from_packed(p._points, p._normals, p._features, [sum(p._num)])
