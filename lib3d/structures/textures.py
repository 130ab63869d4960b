"""Mesh textures (PyTorch3D semantics): per-vertex colours, UV maps and per-face atlases.

Dimension names: N meshes; V_i, F_i, T_i vertices, faces, UV vertices of mesh i; C channels; H/W a texture
map's size (texture space) and the image's size (in fragments); K faces per pixel; R atlas resolution.

Each texture class stores its data for a batch of N meshes and samples colours for rasterized fragments
with ``sample_textures(fragments, faces_packed) -> (N, H, W, K, C)``, where ``fragments`` carries
``pix_to_face (N, H, W, K)`` (indices of packed faces, -1 for empty slots) and
``bary_coords (N, H, W, K, 3)``.

UV convention (PyTorch3D's): ``u`` runs left to right across the map's width, ``v`` runs bottom to top
(``v = 0`` is the last image row); sampling is ``grid_sample`` on the vertically flipped map with
``align_corners`` and ``padding_mode`` as given.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, check_tensor
from lib3d.structures import packing


def interpolate_face_attributes(pix_to_face: torch.Tensor, bary_coords: torch.Tensor,
                                face_attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-face-vertex attributes at rasterized fragments.

    ``out[n, y, x, k] = sum_j bary[n, y, x, k, j] * attrs[pix_to_face[n, y, x, k], j]``, zero where
    ``pix_to_face < 0``. Differentiable w.r.t. ``bary_coords`` and ``face_attributes``.

    Args:
        pix_to_face: ``(N, H, W, K) int64`` packed face per slot, -1 when empty.
        bary_coords: ``(N, H, W, K, 3) float``.
        face_attributes: ``(F, 3, D) float`` attribute of each face's three vertices.

    Returns:
        ``(N, H, W, K, D) float``.
    """
    sizes = check_shapes(pix_to_face=(pix_to_face, ("N", "H", "W", "K")),
                         bary_coords=(bary_coords, ("N", "H", "W", "K", 3)))
    del sizes
    check_shape("face_attributes", face_attributes, (None, 3, None), dtype="float")
    # Only occupied slots are computed: soft rasterization leaves most of the K slots empty.
    flat_p2f = pix_to_face.reshape(-1)
    occupied = (flat_p2f >= 0).nonzero().squeeze(1)
    d = face_attributes.shape[-1]
    attrs = face_attributes[flat_p2f[occupied]]  # (M, 3, D)
    bary = bary_coords.reshape(-1, 3)[occupied].to(attrs.dtype)  # (M, 3)
    vals = torch.einsum("mj,mjd->md", bary, attrs)
    out = vals.new_zeros(flat_p2f.shape[0], d).index_copy(0, occupied, vals)
    return out.view(*pix_to_face.shape, d)


def _select(xs: list, ids: Sequence[int]) -> list:
    return [xs[i] for i in ids]


def _normalise_ids(index, n: int) -> list[int]:
    if isinstance(index, int):
        return [index % n]
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return [int(i) for i in index.tolist()]
    return [int(i) for i in index]


class TexturesVertex:
    """Per-vertex features (usually RGB colours) interpolated with barycentric coordinates.

    Args:
        verts_features: list of ``(V_i, C)`` float tensors, or padded ``(N, V, C)`` float.
    """

    def __init__(self, verts_features):
        if isinstance(verts_features, torch.Tensor):
            check_shape("verts_features", verts_features, (None, None, None), dtype="float")
            self._list = list(verts_features.unbind(0))
        elif isinstance(verts_features, (list, tuple)):
            for i, t in enumerate(verts_features):
                check_shape(f"verts_features[{i}]", t, (None, None), dtype="float")
            self._list = list(verts_features)
        else:
            raise TypeError("verts_features must be a list of (V_i, C) tensors or a (N, V, C) tensor")
        self._N = len(self._list)

    def __len__(self) -> int:
        return self._N

    def verts_features_list(self) -> list[torch.Tensor]:
        """``[(V_i, C) float]``."""
        return list(self._list)

    def verts_features_packed(self) -> torch.Tensor:
        """``(sum V, C) float``."""
        return torch.cat(self._list, 0)

    def verts_features_padded(self) -> torch.Tensor:
        """``(N, V, C) float`` padded with zeros."""
        return packing.list_to_padded(self._list)

    def sample_textures(self, fragments, faces_packed: torch.Tensor) -> torch.Tensor:
        """Colours at fragments: ``(N, H, W, K, C) float`` (zeros at empty slots).

        Args:
            fragments: has ``pix_to_face (N, H, W, K)`` and ``bary_coords (N, H, W, K, 3)``.
            faces_packed: ``(sum F, 3) int64`` the meshes' packed faces.
        """
        feats = self.verts_features_packed()
        check_shape("faces_packed", faces_packed, (None, 3), dtype="int")
        return interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, feats[faces_packed])

    def faces_verts_textures_packed(self, faces_packed: torch.Tensor) -> torch.Tensor:
        """``(sum F, 3, C)`` the features of each face's vertices."""
        return self.verts_features_packed()[faces_packed]

    def __getitem__(self, index) -> "TexturesVertex":
        return TexturesVertex(_select(self._list, _normalise_ids(index, self._N)))

    def extend(self, n: int) -> "TexturesVertex":
        return self[[i for i in range(self._N) for _ in range(n)]]

    def clone(self) -> "TexturesVertex":
        return TexturesVertex([t.clone() for t in self._list])

    def detach(self) -> "TexturesVertex":
        return TexturesVertex([t.detach() for t in self._list])

    def to(self, device=None, dtype=None) -> "TexturesVertex":
        return TexturesVertex([t.to(device=device, dtype=dtype or t.dtype) for t in self._list])

    @staticmethod
    def join_batch(textures: Sequence["TexturesVertex"]) -> "TexturesVertex":
        return TexturesVertex([t for tex in textures for t in tex._list])

    def join_scene(self) -> "TexturesVertex":
        return TexturesVertex([self.verts_features_packed()])


class TexturesUV:
    """UV texture maps sampled bilinearly (PyTorch3D's ``TexturesUV``).

    Args:
        maps: ``(N, H, W, C) float`` or a list of ``(H_i, W_i, C)`` (maps of other sizes are resized to
            the largest, as PyTorch3D does).
        faces_uvs: list of ``(F_i, 3) int64`` or padded ``(N, F, 3)``: each face's three UV-vertex indices.
        verts_uvs: list of ``(T_i, 2) float`` or padded ``(N, T, 2)``: UV coordinates in [0, 1].
        padding_mode: ``grid_sample`` padding for UVs outside [0, 1].
        align_corners: ``grid_sample`` corner alignment (PyTorch3D's default True).
        sampling_mode: ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(self, maps, faces_uvs, verts_uvs,
                 padding_mode: Literal["zeros", "border", "reflection"] = "border",
                 align_corners: bool = True, sampling_mode: Literal["bilinear", "nearest"] = "bilinear"):
        if isinstance(maps, torch.Tensor):
            check_shape("maps", maps, (None, None, None, None), dtype="float")
            maps_list = list(maps.unbind(0))
        elif isinstance(maps, (list, tuple)):
            for i, m in enumerate(maps):
                check_shape(f"maps[{i}]", m, (None, None, None), dtype="float")
            maps_list = list(maps)
        else:
            raise TypeError("maps must be a (N, H, W, C) tensor or a list of (H, W, C) tensors")
        self._N = len(maps_list)
        self._faces_uvs = self._as_list("faces_uvs", faces_uvs, integer=True)
        self._verts_uvs = self._as_list("verts_uvs", verts_uvs, integer=False)
        if not (len(self._faces_uvs) == len(self._verts_uvs) == self._N):
            raise ValueError(f"maps, faces_uvs and verts_uvs must have the same batch size, got {self._N}, "
                             f"{len(self._faces_uvs)} and {len(self._verts_uvs)}")
        for i, (f, v) in enumerate(zip(self._faces_uvs, self._verts_uvs)):
            if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
                raise ValueError(f"faces_uvs[{i}] must index into [0, {v.shape[0]}) (verts_uvs[{i}] rows), "
                                 f"got values in [{int(f.min())}, {int(f.max())}]")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be zeros, border or reflection, got {padding_mode!r}")
        if sampling_mode not in ("bilinear", "nearest"):
            raise ValueError(f"sampling_mode must be bilinear or nearest, got {sampling_mode!r}")
        self._maps_list = maps_list
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.sampling_mode = sampling_mode

    @staticmethod
    def _as_list(name: str, x, integer: bool) -> list[torch.Tensor]:
        width = 3 if integer else 2
        if isinstance(x, torch.Tensor):
            check_shape(name, x, (None, None, width), dtype="int" if integer else "float")
            return list(x.unbind(0))
        if isinstance(x, (list, tuple)):
            for i, t in enumerate(x):
                check_shape(f"{name}[{i}]", t, (None, width), dtype="int" if integer else "float")
            return list(x)
        raise TypeError(f"{name} must be a list of tensors or a padded tensor")

    def _kw(self) -> dict:
        return dict(padding_mode=self.padding_mode, align_corners=self.align_corners,
                    sampling_mode=self.sampling_mode)

    def __len__(self) -> int:
        return self._N

    def maps_list(self) -> list[torch.Tensor]:
        """``[(H_i, W_i, C) float]`` the maps as given."""
        return list(self._maps_list)

    def maps_padded(self) -> torch.Tensor:
        """``(N, H, W, C) float``: maps of other sizes resized (bilinear) to the largest H and W."""
        h = max(m.shape[0] for m in self._maps_list)
        w = max(m.shape[1] for m in self._maps_list)
        out = []
        for m in self._maps_list:  # loop over the batch
            if m.shape[:2] != (h, w):
                m = F.interpolate(m.permute(2, 0, 1)[None], size=(h, w), mode="bilinear",
                                  align_corners=True)[0].permute(1, 2, 0)
            out.append(m)
        return torch.stack(out, 0)

    def faces_uvs_list(self) -> list[torch.Tensor]:
        """``[(F_i, 3) int64]``."""
        return list(self._faces_uvs)

    def verts_uvs_list(self) -> list[torch.Tensor]:
        """``[(T_i, 2) float]``."""
        return list(self._verts_uvs)

    def faces_uvs_padded(self) -> torch.Tensor:
        """``(N, F, 3) int64`` padded with -1."""
        return packing.list_to_padded(self._faces_uvs, pad_value=-1)

    def verts_uvs_padded(self) -> torch.Tensor:
        """``(N, T, 2) float`` padded with zeros."""
        return packing.list_to_padded(self._verts_uvs)

    def faces_verts_uvs_packed(self) -> torch.Tensor:
        """``(sum F, 3, 2) float`` UV coordinates of each packed face's three corners."""
        return torch.cat([v[f] for v, f in zip(self._verts_uvs, self._faces_uvs)], 0)

    def sample_textures(self, fragments, faces_packed: torch.Tensor | None = None) -> torch.Tensor:
        """Texels at fragments: ``(N, H, W, K, C) float``.

        PyTorch3D's recipe: interpolate each fragment's UV, map to ``[-1, 1]``, flip the map vertically,
        ``grid_sample``. All K slots of a mesh are sampled in one ``grid_sample`` call (the map is not
        copied K times). ``faces_packed`` is accepted for a uniform signature and unused.
        """
        pix_to_face = fragments.pix_to_face
        check_tensor("fragments.pix_to_face", pix_to_face, dtype="int")
        n, h, w, k = pix_to_face.shape
        if n != self._N:
            raise ValueError(f"fragments have batch size {n} but the textures {self._N}")
        maps = self.maps_padded()  # (N, Hm, Wm, C)
        maps = torch.flip(maps.permute(0, 3, 1, 2), [2])  # (N, C, Hm, Wm), v up
        c = maps.shape[1]
        # Sample only the occupied slots (soft rasterization leaves most of K empty); empty slots get the
        # texel at uv = (0, 0) as in PyTorch3D, whose interpolated UV there is 0.
        face_uvs = self.faces_verts_uvs_packed()
        flat_p2f = pix_to_face.reshape(n, -1)
        bary = fragments.bary_coords.reshape(n, -1, 3)
        corner = F.grid_sample(maps, maps.new_full((n, 1, 1, 2), -1.0), mode=self.sampling_mode,
                               padding_mode=self.padding_mode, align_corners=self.align_corners)  # (N,C,1,1)
        slots = flat_p2f.shape[1]
        rows, vals = [], []
        for i in range(n):  # loop over the batch: each mesh's occupied slots in one grid_sample call
            occupied = (flat_p2f[i] >= 0).nonzero().squeeze(1)
            if occupied.numel() == 0:
                continue
            uv = torch.einsum("mj,mjd->md", bary[i, occupied].to(face_uvs.dtype), face_uvs[flat_p2f[i, occupied]])
            grid = (uv * 2.0 - 1.0).view(1, 1, -1, 2).to(maps.dtype)
            texels = F.grid_sample(maps[i:i + 1], grid, mode=self.sampling_mode, padding_mode=self.padding_mode,
                                   align_corners=self.align_corners)  # (1, C, 1, M)
            rows.append(occupied + i * slots)
            vals.append(texels[0, :, 0].t())
        out = corner.reshape(n, 1, c).expand(n, slots, c).reshape(n * slots, c)
        if rows:
            out = out.index_copy(0, torch.cat(rows), torch.cat(vals).to(out.dtype))
        return out.view(n, h, w, k, c)

    def __getitem__(self, index) -> "TexturesUV":
        ids = _normalise_ids(index, self._N)
        return TexturesUV(_select(self._maps_list, ids), _select(self._faces_uvs, ids),
                          _select(self._verts_uvs, ids), **self._kw())

    def extend(self, n: int) -> "TexturesUV":
        return self[[i for i in range(self._N) for _ in range(n)]]

    def clone(self) -> "TexturesUV":
        return TexturesUV([m.clone() for m in self._maps_list], [f.clone() for f in self._faces_uvs],
                          [v.clone() for v in self._verts_uvs], **self._kw())

    def detach(self) -> "TexturesUV":
        return TexturesUV([m.detach() for m in self._maps_list], self._faces_uvs,
                          [v.detach() for v in self._verts_uvs], **self._kw())

    def to(self, device=None, dtype=None) -> "TexturesUV":
        return TexturesUV([m.to(device=device, dtype=dtype or m.dtype) for m in self._maps_list],
                          [f.to(device) for f in self._faces_uvs],
                          [v.to(device=device, dtype=dtype or v.dtype) for v in self._verts_uvs], **self._kw())

    @staticmethod
    def join_batch(textures: Sequence["TexturesUV"]) -> "TexturesUV":
        first = textures[0]
        return TexturesUV([m for t in textures for m in t._maps_list],
                          [f for t in textures for f in t._faces_uvs],
                          [v for t in textures for v in t._verts_uvs], **first._kw())

    def join_scene(self) -> "TexturesUV":
        """One map: the N maps side by side (top-aligned), UVs remapped into it."""
        maps = self._maps_list
        hmax = max(m.shape[0] for m in maps)
        wtot = sum(m.shape[1] for m in maps)
        canvas = maps[0].new_zeros(hmax, wtot, maps[0].shape[2])
        new_uvs, new_faces, x0, t0 = [], [], 0, 0
        for m, v, f in zip(maps, self._verts_uvs, self._faces_uvs):  # loop over the batch
            hi, wi = m.shape[:2]
            canvas[:hi, x0:x0 + wi] = m
            if self.align_corners:
                u = (x0 + v[:, 0] * (wi - 1)) / max(wtot - 1, 1)
                vv = 1 - (1 - v[:, 1]) * (hi - 1) / max(hmax - 1, 1)
            else:
                u = (x0 + v[:, 0] * wi) / wtot
                vv = 1 - (1 - v[:, 1]) * hi / hmax
            new_uvs.append(torch.stack([u, vv], 1))
            new_faces.append(f + t0)
            x0 += wi
            t0 += v.shape[0]
        return TexturesUV([canvas], [torch.cat(new_faces, 0)], [torch.cat(new_uvs, 0)], **self._kw())


class TexturesAtlas:
    """Per-face texture atlases of R x R texels; ``R = 1`` gives one colour per face.

    Args:
        atlas: list of ``(F_i, R, R, C) float`` or ``(N, F, R, R, C) float``.

    Sampling follows PyTorch3D: the texel of face f at a point with barycentrics ``(w0, w1, w2)`` is
    ``atlas[f, int(w0 * R), int(w1 * R)]`` (indices clamped to ``R - 1``).
    """

    def __init__(self, atlas):
        if isinstance(atlas, torch.Tensor):
            check_shape("atlas", atlas, (None, None, "R", "R", None), dtype="float")
            self._list = list(atlas.unbind(0))
        elif isinstance(atlas, (list, tuple)):
            sizes: dict = {}
            for i, t in enumerate(atlas):
                check_shape(f"atlas[{i}]", t, (None, "R", "R", None), sizes, dtype="float")
            self._list = list(atlas)
        else:
            raise TypeError("atlas must be a list of (F_i, R, R, C) tensors or a (N, F, R, R, C) tensor")
        self._N = len(self._list)

    def __len__(self) -> int:
        return self._N

    def atlas_list(self) -> list[torch.Tensor]:
        return list(self._list)

    def atlas_packed(self) -> torch.Tensor:
        """``(sum F, R, R, C) float``."""
        return torch.cat(self._list, 0)

    def atlas_padded(self) -> torch.Tensor:
        """``(N, F, R, R, C) float`` padded with zeros."""
        return packing.list_to_padded(self._list)

    def sample_textures(self, fragments, faces_packed: torch.Tensor | None = None) -> torch.Tensor:
        """Texels at fragments: ``(N, H, W, K, C) float`` (zeros at empty slots)."""
        atlas = self.atlas_packed()
        r = atlas.shape[1]
        p2f = fragments.pix_to_face
        w = (fragments.bary_coords[..., :2] * r).long().clamp(0, r - 1)
        texels = atlas[p2f.clamp(min=0), w[..., 0], w[..., 1]]
        return texels * (p2f >= 0).unsqueeze(-1).to(texels.dtype)

    def __getitem__(self, index) -> "TexturesAtlas":
        return TexturesAtlas(_select(self._list, _normalise_ids(index, self._N)))

    def extend(self, n: int) -> "TexturesAtlas":
        return self[[i for i in range(self._N) for _ in range(n)]]

    def clone(self) -> "TexturesAtlas":
        return TexturesAtlas([t.clone() for t in self._list])

    def detach(self) -> "TexturesAtlas":
        return TexturesAtlas([t.detach() for t in self._list])

    def to(self, device=None, dtype=None) -> "TexturesAtlas":
        return TexturesAtlas([t.to(device=device, dtype=dtype or t.dtype) for t in self._list])

    @staticmethod
    def join_batch(textures: Sequence["TexturesAtlas"]) -> "TexturesAtlas":
        return TexturesAtlas([t for tex in textures for t in tex._list])

    def join_scene(self) -> "TexturesAtlas":
        return TexturesAtlas([self.atlas_packed()])
