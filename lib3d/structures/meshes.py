"""``Meshes``: an immutable batch of triangle meshes of different sizes (PyTorch3D's ``Meshes``).

Dimension names: N meshes; V_i / F_i / E_i vertices, faces, unique edges of mesh i; V = max V_i and
F = max F_i (padded sizes); sum V, sum F, sum E the packed sizes.

Three views of the same data, as in PyTorch3D:

- list:   ``verts_list()[i] (V_i, 3)``, ``faces_list()[i] (F_i, 3)`` indexing mesh i's own vertices;
- padded: ``verts_padded() (N, V, 3)`` (zeros past V_i), ``faces_padded() (N, F, 3)`` (-1 past F_i);
- packed: ``verts_packed() (sum V, 3)``, ``faces_packed() (sum F, 3)`` indexing the packed vertices.

Immutability: every operation returns a new ``Meshes``; derived quantities (normals, areas, edges, index
maps) are computed on first use and cached. Topology-derived caches (edges, index maps) are shared by the
meshes that ``offset_verts``/``scale_verts``/``update_padded`` return, so an optimisation loop that moves
vertices pays for the topology once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lib3d._checks import TypeValueError, check_finite, check_shape, check_tensor
from lib3d.structures import packing


def _as_list_input(name: str, x, width: int, integer: bool):
    """Normalise list or padded input -> (list of tensors or None, padded tensor or None)."""
    if isinstance(x, (list, tuple)):
        for i, t in enumerate(x):
            check_shape(f"{name}[{i}]", t, (None, width), dtype="int" if integer else "float")
        return list(x), None
    if isinstance(x, torch.Tensor):
        check_shape(name, x, (None, None, width), dtype="int" if integer else "float")
        return None, x
    raise TypeValueError(f"{name} must be a list of tensors or a padded tensor, got {type(x).__name__}")


class Meshes:
    """A batch of N triangle meshes with per-mesh vertex and face counts.

    Args:
        verts: list of ``(V_i, 3)`` float tensors, or a padded ``(N, V, 3)`` tensor in which every mesh
            has all V vertices (PyTorch3D's rule).
        faces: list of ``(F_i, 3)`` integer tensors indexing each mesh's own vertices, or a padded
            ``(N, F, 3)`` tensor whose padding rows are -1 and come last.
        textures: optional ``TexturesVertex``, ``TexturesUV`` or ``TexturesAtlas`` of batch size N.
        verts_normals: optional vertex normals in the layout of ``verts`` (list of ``(V_i, 3)`` or padded
            ``(N, V, 3)``); used as given (not renormalised) instead of the area-weighted face normals.

    Empty meshes (``(0, 3)`` members) and empty batches (``Meshes(verts=[], faces=[])``) are supported as in
    PyTorch3D; ``valid`` tells which meshes have vertices and faces. A mesh built from lists returns the very
    tensors it was given from ``verts_list()``.

    Raises:
        ValueError: mismatched batch sizes, wrong shapes, NaN vertices or face indices out of range.
        TypeError: wrong argument types or dtypes.

    Example:
        >>> m = Meshes(verts=[v0, v1], faces=[f0, f1])
        >>> m.verts_packed().shape, m.faces_packed().max() < m.verts_packed().shape[0]
    """

    __slots__ = (
        "_faces_packed",
        "_geo",
        "_num_faces",
        "_num_verts",
        "_topo",
        "_verts_given",
        "_verts_packed",
        "textures",
    )

    def __init__(self, verts, faces, textures=None, verts_normals=None):
        v_list, v_pad = _as_list_input("verts", verts, 3, integer=False)
        f_list, f_pad = _as_list_input("faces", faces, 3, integer=True)
        n_v = len(v_list) if v_list is not None else v_pad.shape[0]
        n_f = len(f_list) if f_list is not None else f_pad.shape[0]
        if n_v != n_f:
            raise ValueError(f"verts and faces must describe the same number of meshes, got {n_v} and {n_f}")
        if v_list is not None:
            num_verts = [int(v.shape[0]) for v in v_list]
            verts_packed = torch.cat(v_list, 0) if v_list else torch.zeros(0, 3)
        else:
            num_verts = [int(v_pad.shape[1])] * n_v
            verts_packed = v_pad.reshape(-1, 3)
        if f_pad is not None:
            # Padding rows hold -1; PyTorch3D counts the rows whose three entries are all > -1.
            valid = (f_pad > -1).all(dim=2)
            num_faces = [int(c) for c in valid.sum(1).tolist()]
            f_list = [f_pad[i, :c] for i, c in enumerate(num_faces)]
            prefix = torch.arange(f_pad.shape[1], device=f_pad.device)[None] < valid.sum(1, keepdim=True)
            if bool((valid != prefix).any()):
                raise ValueError("faces padding rows (-1) must come after the valid faces of each mesh")
        num_faces = [int(f.shape[0]) for f in f_list]
        for i, (f, nv) in enumerate(zip(f_list, num_verts)):
            if f.numel() and (int(f.min()) < 0 or int(f.max()) >= nv):
                raise ValueError(f"faces[{i}] must index into [0, {nv}) (mesh {i} has {nv} vertices), "
                                 f"got values in [{int(f.min())}, {int(f.max())}]")
        check_finite("verts", verts_packed)
        device = verts_packed.device
        if f_list:
            offsets = torch.tensor(num_verts, device=device).cumsum(0) - torch.tensor(num_verts, device=device)
            counts = torch.tensor(num_faces, device=device)
            faces_packed = torch.cat([f.to(device=device, dtype=torch.int64) for f in f_list], 0)
            faces_packed = faces_packed + torch.repeat_interleave(offsets, counts,
                                                                  output_size=faces_packed.shape[0])[:, None]
        else:
            faces_packed = torch.zeros(0, 3, dtype=torch.int64, device=device)
        self._init(verts_packed, faces_packed, num_verts, num_faces, textures, {}, {})
        if v_list is not None:
            self._verts_given = list(v_list)
        if textures is not None and not hasattr(textures, "sample_textures"):  # PyTorch3D's check: ValueError
            raise TypeValueError(f"textures must be a TexturesVertex, TexturesUV or TexturesAtlas, got "
                                 f"{type(textures).__name__}")
        if textures is not None and hasattr(textures, "_N") and textures._N != n_v:
            raise ValueError(f"textures must have batch size {n_v}, got {textures._N}")
        if verts_normals is not None:
            n_list, n_pad = _as_list_input("verts_normals", verts_normals, 3, integer=False)
            if n_list is not None:
                sizes = [int(x.shape[0]) for x in n_list]
                normals = torch.cat(n_list, 0) if n_list else verts_packed.new_zeros(0, 3)
            else:
                sizes = [int(n_pad.shape[1])] * n_pad.shape[0]
                normals = n_pad.reshape(-1, 3) if sizes == num_verts else None
            if sizes != num_verts or normals is None:
                raise ValueError(f"verts_normals must have as many rows per mesh as verts ({num_verts}), got {sizes}")
            check_finite("verts_normals", normals)
            self._geo["v_normals"] = normals.to(device=device, dtype=verts_packed.dtype)

    def _init(self, verts_packed, faces_packed, num_verts, num_faces, textures, topo, geo):
        self._verts_given: list[torch.Tensor] | None = None
        self._verts_packed = verts_packed
        self._faces_packed = faces_packed
        self._num_verts = list(num_verts)
        self._num_faces = list(num_faces)
        self.textures = textures
        self._topo = topo  # faces-derived cache, shared between meshes of the same topology
        self._geo = geo    # verts-derived cache, private to this object

    @classmethod
    def _from_packed(cls, verts_packed, faces_packed, num_verts, num_faces, textures=None, topo=None):
        m = cls.__new__(cls)
        m._init(verts_packed, faces_packed, num_verts, num_faces, textures, {} if topo is None else topo, {})
        return m

    # ----------------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self._num_verts)

    def __repr__(self) -> str:
        return (f"Meshes(N={len(self)}, verts={self._num_verts}, faces={self._num_faces}, "
                f"textures={type(self.textures).__name__ if self.textures is not None else None}, "
                f"device={self.device}, dtype={self.dtype})")

    @property
    def device(self) -> torch.device:
        return self._verts_packed.device

    @property
    def dtype(self) -> torch.dtype:
        return self._verts_packed.dtype

    def isempty(self) -> bool:
        """True when the batch holds no mesh or no vertex at all."""
        return len(self) == 0 or sum(self._num_verts) == 0

    def _cached(self, cache: dict, key: str, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    def topology_cached(self, key: str, compute):
        """``compute()`` cached with the faces: computed once for all meshes sharing this topology.

        Meshes made by ``offset_verts``, ``scale_verts``, ``update_padded``, ``update_packed`` and
        ``detach`` share the cache, so ops that precompute index structures from the faces alone (face
        pairs, Laplacian neighbourhoods) pay for them once per optimisation. ``compute`` must depend on the
        faces only, never on vertex positions.
        """
        return self._cached(self._topo, "user." + key, compute)

    # --------------------------------------------------------------------------------- counts / idx
    def num_verts_per_mesh(self) -> torch.Tensor:
        """``(N,) int64`` number of vertices of each mesh."""
        return self._cached(self._topo, "nv", lambda: torch.tensor(self._num_verts, device=self.device,
                                                                   dtype=torch.int64))

    def num_faces_per_mesh(self) -> torch.Tensor:
        """``(N,) int64`` number of faces of each mesh."""
        return self._cached(self._topo, "nf", lambda: torch.tensor(self._num_faces, device=self.device,
                                                                   dtype=torch.int64))

    @property
    def valid(self) -> torch.Tensor:
        """``(N,) bool``: meshes with at least one vertex and one face (PyTorch3D's ``valid``)."""
        return (self.num_verts_per_mesh() > 0) & (self.num_faces_per_mesh() > 0)

    def has_verts_normals(self) -> bool:
        """True when vertex normals were given to the constructor or have been computed (and cached)."""
        return "v_normals" in self._geo

    def mesh_to_verts_packed_first_idx(self) -> torch.Tensor:
        """``(N,) int64`` first packed vertex of each mesh."""
        return self._cached(self._topo, "v_first", lambda: packing.counts_to_first_idx(self.num_verts_per_mesh()))

    def mesh_to_faces_packed_first_idx(self) -> torch.Tensor:
        """``(N,) int64`` first packed face of each mesh."""
        return self._cached(self._topo, "f_first", lambda: packing.counts_to_first_idx(self.num_faces_per_mesh()))

    def verts_packed_to_mesh_idx(self) -> torch.Tensor:
        """``(sum V,) int64`` mesh index of each packed vertex."""
        return self._cached(self._topo, "v2m", lambda: packing.packed_to_element_idx(
            self.num_verts_per_mesh(), self._verts_packed.shape[0]))

    def faces_packed_to_mesh_idx(self) -> torch.Tensor:
        """``(sum F,) int64`` mesh index of each packed face."""
        return self._cached(self._topo, "f2m", lambda: packing.packed_to_element_idx(
            self.num_faces_per_mesh(), self._faces_packed.shape[0]))

    def verts_padded_to_packed_idx(self) -> torch.Tensor:
        """``(sum V,) int64``: row of each packed vertex in ``verts_padded().view(-1, 3)``."""
        return self._cached(self._topo, "v_pad2pack", lambda: packing.padded_to_packed_index(
            self.num_verts_per_mesh(), max(self._num_verts + [0]), self._verts_packed.shape[0]))

    def faces_padded_to_packed_idx(self) -> torch.Tensor:
        """``(sum F,) int64``: row of each packed face in ``faces_padded().view(-1, 3)``."""
        return self._cached(self._topo, "f_pad2pack", lambda: packing.padded_to_packed_index(
            self.num_faces_per_mesh(), max(self._num_faces + [0]), self._faces_packed.shape[0]))

    # ---------------------------------------------------------------------------------------- verts
    def verts_packed(self) -> torch.Tensor:
        """``(sum V, 3) float`` all vertices, mesh after mesh."""
        return self._verts_packed

    def verts_list(self) -> list[torch.Tensor]:
        """``[(V_i, 3) float]`` vertices of each mesh: the tensors given to the constructor when it was given a
        list (as PyTorch3D, so ``.grad`` reaches them), else views of the packed tensor."""
        if self._verts_given is not None:
            return list(self._verts_given)
        return list(torch.split(self._verts_packed, self._num_verts, 0))

    def verts_padded(self) -> torch.Tensor:
        """``(N, V, 3) float`` vertices padded with zeros past ``V_i``."""
        return self._cached(self._geo, "v_pad", lambda: packing.packed_to_padded(
            self._verts_packed, self.num_verts_per_mesh(), self._num_verts, 0.0))

    # ---------------------------------------------------------------------------------------- faces
    def faces_packed(self) -> torch.Tensor:
        """``(sum F, 3) int64`` faces indexing ``verts_packed()``."""
        return self._faces_packed

    def faces_list(self) -> list[torch.Tensor]:
        """``[(F_i, 3) int64]`` faces of each mesh, indexing that mesh's own vertices."""
        return list(torch.split(self._local_faces_packed(), self._num_faces, 0))

    def faces_padded(self) -> torch.Tensor:
        """``(N, F, 3) int64`` per-mesh faces padded with -1 past ``F_i``."""
        return self._cached(self._topo, "f_pad", lambda: packing.packed_to_padded(
            self._local_faces_packed(), self.num_faces_per_mesh(), self._num_faces, -1))

    def _local_faces_packed(self) -> torch.Tensor:
        def compute():
            off = self.mesh_to_verts_packed_first_idx()[self.faces_packed_to_mesh_idx()]
            return self._faces_packed - off[:, None]
        return self._cached(self._topo, "f_local", compute)

    # ---------------------------------------------------------------------------------------- edges
    def _compute_edges(self) -> dict:
        # PyTorch3D's construction: per face the edges (v1,v2), (v2,v0), (v0,v1), i.e. column k of
        # faces_packed_to_edges_packed is the edge opposite vertex k.
        f = self._faces_packed
        nf = f.shape[0]
        v0, v1, v2 = f.unbind(1)
        edges = torch.cat([torch.stack([v1, v2], 1), torch.stack([v2, v0], 1), torch.stack([v0, v1], 1)], 0)
        edge_to_mesh = self.faces_packed_to_mesh_idx().repeat(3)
        edges, _ = edges.sort(dim=1)
        nv = max(self._verts_packed.shape[0], 1)
        edge_hash = nv * edges[:, 0] + edges[:, 1]
        unique_hash, inverse = torch.unique(edge_hash, return_inverse=True)
        # First occurrence of each unique edge -> its mesh index (all occurrences share one mesh).
        first = torch.full((unique_hash.shape[0],), 3 * nf, dtype=torch.int64, device=f.device)
        first = first.scatter_reduce(0, inverse, torch.arange(3 * nf, device=f.device), reduce="amin")
        edges_packed = torch.stack([unique_hash // nv, unique_hash % nv], 1)
        e2m = edge_to_mesh[first] if nf else torch.zeros(0, dtype=torch.int64, device=f.device)
        num_edges = torch.zeros(len(self), dtype=torch.int64, device=f.device).scatter_add_(
            0, e2m, torch.ones_like(e2m))
        return {
            "edges": edges_packed,
            "f2e": inverse.view(3, nf).t().contiguous(),
            "e2m": e2m,
            "ne": num_edges,
            "e_first": packing.counts_to_first_idx(num_edges),
        }

    def _edges(self) -> dict:
        return self._cached(self._topo, "edges", self._compute_edges)

    def edges_packed(self) -> torch.Tensor:
        """``(sum E, 2) int64`` unique undirected edges ``(a, b)`` with ``a < b``, sorted, packed vertices."""
        return self._edges()["edges"]

    def faces_packed_to_edges_packed(self) -> torch.Tensor:
        """``(sum F, 3) int64``: column k is the packed edge opposite vertex k of each face."""
        return self._edges()["f2e"]

    def edges_packed_to_mesh_idx(self) -> torch.Tensor:
        """``(sum E,) int64`` mesh index of each packed edge."""
        return self._edges()["e2m"]

    def num_edges_per_mesh(self) -> torch.Tensor:
        """``(N,) int64`` number of unique edges of each mesh."""
        return self._edges()["ne"]

    def mesh_to_edges_packed_first_idx(self) -> torch.Tensor:
        """``(N,) int64`` first packed edge of each mesh (edges are grouped by mesh)."""
        return self._edges()["e_first"]

    # ------------------------------------------------------------------------------ normals / areas
    def _face_areas_normals(self) -> tuple[torch.Tensor, torch.Tensor]:
        def compute():
            tri = self._verts_packed[self._faces_packed]  # (sum F, 3, 3)
            cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
            norm = cross.norm(dim=1)
            areas = norm / 2
            normals = cross / norm.clamp(min=1e-6)[:, None]  # PyTorch3D: max(|n|, 1e-6)
            return areas, normals
        return self._cached(self._geo, "f_area_normal", compute)

    def faces_areas_packed(self) -> torch.Tensor:
        """``(sum F,) float`` triangle areas."""
        return self._face_areas_normals()[0]

    def faces_normals_packed(self) -> torch.Tensor:
        """``(sum F, 3) float`` unit face normals ``(v1 - v0) x (v2 - v0)`` (right-hand rule)."""
        return self._face_areas_normals()[1]

    def faces_normals_list(self) -> list[torch.Tensor]:
        """``[(F_i, 3) float]`` unit face normals of each mesh."""
        return list(torch.split(self.faces_normals_packed(), self._num_faces, 0))

    def faces_normals_padded(self) -> torch.Tensor:
        """``(N, F, 3) float`` unit face normals padded with zeros."""
        return packing.packed_to_padded(self.faces_normals_packed(), self.num_faces_per_mesh(), self._num_faces)

    def verts_normals_packed(self) -> torch.Tensor:
        """``(sum V, 3) float`` unit vertex normals: area-weighted sums of the incident face normals."""
        def compute():
            f = self._faces_packed
            tri = self._verts_packed[f]
            # Same orientation as (v1 - v0) x (v2 - v0); its length is twice the area (area weighting).
            n = torch.linalg.cross(tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 1], dim=1)
            acc = torch.zeros_like(self._verts_packed)
            acc = acc.index_add(0, f.reshape(-1), n.repeat_interleave(3, dim=0))
            return torch.nn.functional.normalize(acc, eps=1e-6, dim=1)
        return self._cached(self._geo, "v_normals", compute)

    def verts_normals_list(self) -> list[torch.Tensor]:
        """``[(V_i, 3) float]`` unit vertex normals of each mesh."""
        return list(torch.split(self.verts_normals_packed(), self._num_verts, 0))

    def verts_normals_padded(self) -> torch.Tensor:
        """``(N, V, 3) float`` unit vertex normals padded with zeros."""
        return packing.packed_to_padded(self.verts_normals_packed(), self.num_verts_per_mesh(), self._num_verts)

    def get_bounding_boxes(self) -> torch.Tensor:
        """``(N, 3, 2) float``: per mesh and axis, ``[min, max]`` of the vertices."""
        if self.isempty():
            return self._verts_packed.new_zeros(len(self), 3, 2)
        idx = self.verts_packed_to_mesh_idx()[:, None].expand(-1, 3)
        v = self._verts_packed
        mins = v.new_full((len(self), 3), float("inf")).scatter_reduce(0, idx, v, reduce="amin")
        maxs = v.new_full((len(self), 3), float("-inf")).scatter_reduce(0, idx, v, reduce="amax")
        return torch.stack([mins, maxs], 2)

    def laplacian_packed(self) -> torch.Tensor:
        """``(sum V, sum V)`` sparse float uniform Laplacian of the packed vertices (PyTorch3D's
        ``laplacian_packed``): ``L[i, j] = 1 / deg(i)`` for each neighbour j of i, ``L[i, i] = -1`` (so an isolated
        vertex's row is ``-1`` on the diagonal only); see ``lib3d.ops.laplacian``. Cached with the topology."""
        from lib3d.ops.laplacian import laplacian

        return self._cached(self._topo, "laplacian", lambda: laplacian(self._verts_packed, self.edges_packed()))

    def split(self, split_sizes: Sequence[int]) -> list[Meshes]:
        """Consecutive groups of ``split_sizes[k]`` meshes (``sum(split_sizes)`` must be N), PyTorch3D's ``split``.

        Raises:
            ValueError: if the sizes are not non-negative ints summing to N.
        """
        return packing.split_batch(self, split_sizes)

    def get_mesh_verts_faces(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(verts (V_i, 3), faces (F_i, 3))`` of mesh ``index``."""
        if not 0 <= index < len(self):
            raise ValueError(f"index must be in [0, {len(self)}), got {index}")
        return self.verts_list()[index], self.faces_list()[index]

    # ------------------------------------------------------------------------- new meshes from this
    def _with_verts_packed(self, verts_packed: torch.Tensor) -> Meshes:
        return Meshes._from_packed(verts_packed, self._faces_packed, self._num_verts, self._num_faces,
                                   self.textures, self._topo)

    def offset_verts(self, vert_offsets_packed: torch.Tensor) -> Meshes:
        """New meshes with vertices moved by ``vert_offsets_packed`` ``(sum V, 3)`` or ``(3,)`` float."""
        check_tensor("vert_offsets_packed", vert_offsets_packed, dtype="float")
        if vert_offsets_packed.shape not in ((3,), self._verts_packed.shape):
            raise ValueError(f"vert_offsets_packed must have shape (3,) or {tuple(self._verts_packed.shape)}, "
                             f"got {tuple(vert_offsets_packed.shape)}")
        return self._with_verts_packed(self._verts_packed + vert_offsets_packed)

    def scale_verts(self, scale) -> Meshes:
        """New meshes with vertices scaled by a float or per-mesh ``(N,)`` float tensor."""
        if not torch.is_tensor(scale):
            scale = torch.full((len(self),), float(scale), device=self.device, dtype=self.dtype)
        check_shape("scale", scale, (len(self),), dtype="float")
        return self._with_verts_packed(self._verts_packed * scale[self.verts_packed_to_mesh_idx()][:, None])

    def update_padded(self, new_verts_padded: torch.Tensor) -> Meshes:
        """New meshes with the same faces and vertices ``new_verts_padded (N, V, 3)`` float."""
        check_shape("new_verts_padded", new_verts_padded, (len(self), max(self._num_verts + [0]), 3),
                    dtype="float")
        packed = packing.padded_to_packed(new_verts_padded, self.num_verts_per_mesh(),
                                          self._verts_packed.shape[0])
        return self._with_verts_packed(packed)

    def update_packed(self, new_verts_packed: torch.Tensor) -> Meshes:
        """New meshes with the same faces and vertices ``new_verts_packed (sum V, 3)`` float."""
        check_shape("new_verts_packed", new_verts_packed, tuple(self._verts_packed.shape), dtype="float")
        return self._with_verts_packed(new_verts_packed)

    def clone(self) -> Meshes:
        """A deep copy (tensors cloned; autograd history kept)."""
        tex = self.textures.clone() if self.textures is not None else None
        return Meshes._from_packed(self._verts_packed.clone(), self._faces_packed.clone(), self._num_verts,
                                   self._num_faces, tex)

    def detach(self) -> Meshes:
        """A copy whose tensors are detached from autograd."""
        tex = self.textures.detach() if self.textures is not None else None
        return Meshes._from_packed(self._verts_packed.detach(), self._faces_packed, self._num_verts,
                                   self._num_faces, tex, self._topo)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Meshes:
        """A copy on ``device`` (and with float ``dtype`` for vertices/texture data if given)."""
        device = torch.device(device) if device is not None else self.device
        if device == self.device and (dtype is None or dtype == self.dtype):
            return self
        tex = self.textures.to(device, dtype) if self.textures is not None else None
        return Meshes._from_packed(self._verts_packed.to(device=device, dtype=dtype or self.dtype),
                                   self._faces_packed.to(device), self._num_verts, self._num_faces, tex)

    def cpu(self) -> Meshes:
        return self.to("cpu")

    def cuda(self) -> Meshes:
        return self.to("cuda")

    def __getitem__(self, index) -> Meshes:
        """Select meshes by int, slice, list of ints, or a 1-D long/bool tensor."""
        ids = packing.batch_index_ids(index, len(self), "mesh")
        vl, fl = self.verts_list(), self.faces_list()
        tex = self.textures[ids] if self.textures is not None else None
        return Meshes([vl[i] for i in ids], [fl[i] for i in ids], textures=tex)

    def extend(self, n: int) -> Meshes:
        """Each mesh repeated ``n`` times in a row: ``[m0, m0, ..., m1, m1, ...]`` (PyTorch3D's order)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        ids = [i for i in range(len(self)) for _ in range(n)]
        return self[ids]


def join_meshes_as_batch(meshes: Sequence[Meshes], include_textures: bool = True) -> Meshes:
    """Concatenate batches of meshes into one batch (``len = sum len(m)``).

    Textures are joined when every input has textures of the same type and ``include_textures``.
    """
    meshes = list(meshes)
    if not meshes or not all(isinstance(m, Meshes) for m in meshes):
        raise ValueError("join_meshes_as_batch needs a non-empty list of Meshes")
    verts = [v for m in meshes for v in m.verts_list()]
    faces = [f for m in meshes for f in m.faces_list()]
    tex = None
    if include_textures and all(m.textures is not None for m in meshes):
        first = type(meshes[0].textures)
        if not all(type(m.textures) is first for m in meshes):
            raise ValueError("all meshes must have the same type of textures to join them")
        tex = first.join_batch([m.textures for m in meshes])
    return Meshes(verts, faces, textures=tex)


def join_meshes_as_scene(meshes: Meshes | Sequence[Meshes], include_textures: bool = True) -> Meshes:
    """Merge all meshes of a batch (or of a list of batches) into a single mesh."""
    if not isinstance(meshes, Meshes):
        meshes = join_meshes_as_batch(meshes, include_textures)
    faces = meshes.faces_packed()
    tex = None
    if include_textures and meshes.textures is not None:
        tex = meshes.textures.join_scene()
    return Meshes([meshes.verts_packed()], [faces], textures=tex)
