"""``Pointclouds``: an immutable batch of point clouds of different sizes (PyTorch3D's ``Pointclouds``).

Dimension names: N clouds; P_i points of cloud i; P = max P_i (padded size); C feature channels.
List, padded (zeros past P_i) and packed views as for ``Meshes``; operations return new objects.
Empty clouds (``(0, 3)`` members) and empty batches (``Pointclouds(points=[])``) are supported as in
PyTorch3D. ``points_list()`` / ``normals_list()`` / ``features_list()`` return the very tensors a cloud
built from lists was given (so gradients reach the caller's leaf tensors exactly as in PyTorch3D).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lib3d._checks import TypeValueError, check_finite, check_shape, check_tensor
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

    __slots__ = ("_cache", "_features", "_lists", "_normals", "_num", "_points")

    def __init__(self, points, normals=None, features=None):
        pts, num = self._pack("points", points, 3, None)
        check_finite("points", pts)
        nrm = self._pack("normals", normals, 3, num)[0] if normals is not None else None
        feat = self._pack("features", features, None, num)[0] if features is not None else None
        self._init(pts, nrm, feat, num)
        for key, x in (("points", points), ("normals", normals), ("features", features)):
            if isinstance(x, (list, tuple)):
                self._lists[key] = list(x)

    def _init(self, points, normals, features, num):
        self._points, self._normals, self._features, self._num = points, normals, features, list(num)
        self._cache = {}
        self._lists: dict[str, list[torch.Tensor]] = {}

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
            if x:
                widths = {int(t.shape[1]) for t in x}
                if len(widths) > 1:
                    raise ValueError(f"{name}: every cloud needs the same number of channels, got {sorted(widths)}")
                packed = torch.cat(list(x), 0)
            else:
                packed = torch.zeros(0, 3 if width is None else width)
        else:
            raise TypeValueError(f"{name} must be a list of tensors or a padded tensor, got {type(x).__name__}")
        if num is not None and sizes != num:
            raise ValueError(f"{name} must have the same number of points per cloud as points ({num}), "
                             f"got {sizes}")
        return packed, sizes

    @classmethod
    def _from_packed(cls, points, normals, features, num) -> Pointclouds:
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
        """``[(P_i, 3) float]`` (the tensors given to the constructor, when it was given a list)."""
        if "points" in self._lists:
            return list(self._lists["points"])
        return list(torch.split(self._points, self._num, 0))

    def points_padded(self) -> torch.Tensor:
        """``(N, P, 3) float`` padded with zeros."""
        return self._c("pts_pad", lambda: packing.packed_to_padded(self._points, self.num_points_per_cloud(),
                                                                   self._num))

    def normals_packed(self) -> torch.Tensor | None:
        """``(sum P, 3) float`` or None."""
        return self._normals

    def normals_list(self) -> list[torch.Tensor] | None:
        """``[(P_i, 3) float]``, or None for clouds without normals."""
        if self._normals is None:
            return None
        if "normals" in self._lists:
            return list(self._lists["normals"])
        return list(torch.split(self._normals, self._num, 0))

    def normals_padded(self) -> torch.Tensor | None:
        """``(N, P, 3) float`` or None."""
        if self._normals is None:
            return None
        return packing.packed_to_padded(self._normals, self.num_points_per_cloud(), self._num)

    def features_packed(self) -> torch.Tensor | None:
        """``(sum P, C) float`` or None."""
        return self._features

    def features_list(self) -> list[torch.Tensor] | None:
        """``[(P_i, C) float]``, or None for clouds without features."""
        if self._features is None:
            return None
        if "features" in self._lists:
            return list(self._lists["features"])
        return list(torch.split(self._features, self._num, 0))

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

    def offset(self, offsets_packed: torch.Tensor) -> Pointclouds:
        """Points moved by ``offsets_packed`` ``(sum P, 3)`` or ``(3,)`` float."""
        check_tensor("offsets_packed", offsets_packed, dtype="float")
        if offsets_packed.shape not in ((3,), self._points.shape):
            raise ValueError(f"offsets_packed must have shape (3,) or {tuple(self._points.shape)}, "
                             f"got {tuple(offsets_packed.shape)}")
        return self._with_points(self._points + offsets_packed)

    def scale(self, scale) -> Pointclouds:
        """Points scaled by a float or per-cloud ``(N,)`` float tensor."""
        if not torch.is_tensor(scale):
            scale = torch.full((len(self),), float(scale), device=self.device, dtype=self.dtype)
        check_shape("scale", scale, (len(self),), dtype="float")
        return self._with_points(self._points * scale[self.packed_to_cloud_idx()][:, None])

    def update_padded(self, new_points_padded: torch.Tensor, new_normals_padded: torch.Tensor | None = None,
                      new_features_padded: torch.Tensor | None = None) -> Pointclouds:
        """Same clouds with new padded points (and optionally normals / features), as PyTorch3D.

        Args:
            new_points_padded: ``(N, P, 3)`` float.
            new_normals_padded: ``(N, P, 3)`` float or None (keep the current normals).
            new_features_padded: ``(N, P, C')`` float or None (keep the current features; C' may differ).
        """
        n, p = len(self), max(self._num + [0])
        counts, total = self.num_points_per_cloud(), self._points.shape[0]
        check_shape("new_points_padded", new_points_padded, (n, p, 3), dtype="float")
        normals, features = self._normals, self._features
        if new_normals_padded is not None:
            check_shape("new_normals_padded", new_normals_padded, (n, p, 3), dtype="float")
            normals = packing.padded_to_packed(new_normals_padded, counts, total)
        if new_features_padded is not None:
            check_shape("new_features_padded", new_features_padded, (n, p, None), dtype="float")
            features = packing.padded_to_packed(new_features_padded, counts, total)
        return Pointclouds._from_packed(packing.padded_to_packed(new_points_padded, counts, total), normals,
                                        features, self._num)

    # ------------------------------------------------------------------------ PyTorch3D's other helpers
    @property
    def valid(self) -> torch.Tensor:
        """``(N,) bool``: clouds with at least one point."""
        return self.num_points_per_cloud() > 0

    def get_cloud(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(points (P_i, 3), normals (P_i, 3) or None, features (P_i, C) or None)`` of cloud ``index``.

        Raises:
            IndexError: for an index outside ``[0, N)``.
        """
        if not isinstance(index, int):
            raise TypeError(f"get_cloud: index must be an int, got {type(index).__name__}")
        if not 0 <= index < len(self):
            raise IndexError(f"get_cloud: cloud index {index} out of range for {len(self)} clouds")
        nl, fl = self.normals_list(), self.features_list()
        return (self.points_list()[index], None if nl is None else nl[index], None if fl is None else fl[index])

    def split(self, split_sizes: Sequence[int]) -> list[Pointclouds]:
        """Consecutive groups of ``split_sizes[k]`` clouds (``sum(split_sizes)`` must be N), PyTorch3D's ``split``.

        Raises:
            ValueError: if the sizes are not non-negative ints summing to N.
        """
        return packing.split_batch(self, split_sizes)

    def subsample(self, max_points: int | Sequence[int], generator: torch.Generator | None = None
                  ) -> Pointclouds:
        """At most ``max_points`` points per cloud, drawn uniformly without replacement (PyTorch3D's
        ``subsample``); clouds already small enough are kept whole (same order).

        Args:
            max_points: one int for all clouds or one per cloud (each >= 1).
            generator: random source of the draw.
        """
        limits = [int(max_points)] * len(self) if isinstance(max_points, int) else [int(k) for k in max_points]
        if len(limits) != len(self) or any(k < 1 for k in limits):
            raise ValueError(f"subsample: max_points must be an int >= 1 or one per cloud ({len(self)}), "
                             f"got {max_points!r}")
        if all(n <= k for n, k in zip(self._num, limits)):
            return self
        counts = self.num_points_per_cloud()
        elem = self.packed_to_cloud_idx()
        keys = torch.rand(self._points.shape[0], generator=generator, device=self._points.device)
        # rank of each point's key within its cloud: sort by (cloud, key), then position minus cloud start
        order = torch.argsort(elem.to(torch.float64) * 2.0 + keys.to(torch.float64))
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.shape[0], device=order.device)
        rank = rank - self.cloud_to_packed_first_idx()[elem]
        keep = rank < torch.tensor(limits, device=counts.device)[elem]
        num = [min(n, k) for n, k in zip(self._num, limits)]
        sel = lambda t: None if t is None else t[keep]
        return Pointclouds._from_packed(self._points[keep], sel(self._normals), sel(self._features), num)

    def inside_box(self, box: torch.Tensor) -> torch.Tensor:
        """``(sum P_i,) bool``: packed points inside (or on) an axis-aligned box.

        Args:
            box: ``(2, 3)`` float (min corner, max corner) for every cloud, or ``(N, 2, 3)`` one per cloud.

        Raises:
            ValueError: for another shape, or a box whose min exceeds its max.
        """
        check_tensor("box", box, dtype="float")
        if box.shape == (2, 3):
            lo, hi = box[0], box[1]
        elif box.shape == (len(self), 2, 3):
            elem = self.packed_to_cloud_idx()
            lo, hi = box[elem, 0], box[elem, 1]
        else:
            raise ValueError(f"inside_box: box must have shape (2, 3) or ({len(self)}, 2, 3), got {tuple(box.shape)}")
        if bool((box[..., 0, :] > box[..., 1, :]).any()):
            raise ValueError("inside_box: a box's min corner exceeds its max corner")
        return ((self._points >= lo) & (self._points <= hi)).all(-1)

    def estimate_normals(self, neighborhood_size: int = 50, disambiguate_directions: bool = True,
                         assign_to_self: bool = False, use_symeig_workaround: bool = True) -> torch.Tensor:
        """Normals from the local covariance of each point's neighbourhood (PyTorch3D's
        ``Pointclouds.estimate_normals``; see ``lib3d.ops.estimate_pointcloud_normals``).

        Returns:
            ``(N, P, 3)`` float padded normals. lib3d's clouds are immutable, so ``assign_to_self=True`` raises
            (rather than being silently ignored): ``update_padded(points_padded(), normals)`` makes a cloud
            that carries them.
        """
        from lib3d.ops.points_normals import estimate_pointcloud_normals

        if assign_to_self:
            raise ValueError("estimate_normals(assign_to_self=True): lib3d's Pointclouds are immutable; use "
                             "clouds.update_padded(clouds.points_padded(), clouds.estimate_normals())")
        return estimate_pointcloud_normals(self, neighborhood_size, disambiguate_directions,
                                           use_symeig_workaround=use_symeig_workaround)

    def __getitem__(self, index) -> Pointclouds:
        ids = packing.batch_index_ids(index, len(self), "cloud")
        pl, nl, fl = self.points_list(), self.normals_list(), self.features_list()
        return Pointclouds([pl[i] for i in ids], None if nl is None else [nl[i] for i in ids],
                           None if fl is None else [fl[i] for i in ids])

    def extend(self, n: int) -> Pointclouds:
        """Each cloud repeated ``n`` times in a row."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        return self[[i for i in range(len(self)) for _ in range(n)]]

    def clone(self) -> Pointclouds:
        c = lambda t: None if t is None else t.clone()
        return Pointclouds._from_packed(self._points.clone(), c(self._normals), c(self._features), self._num)

    def detach(self) -> Pointclouds:
        d = lambda t: None if t is None else t.detach()
        return Pointclouds._from_packed(self._points.detach(), d(self._normals), d(self._features), self._num)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Pointclouds:
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)
        return Pointclouds._from_packed(mv(self._points), mv(self._normals), mv(self._features), self._num)

    def cpu(self) -> Pointclouds:
        return self.to("cpu")

    def cuda(self) -> Pointclouds:
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
