"""Voxel grids to watertight cube meshes (PyTorch3D's ``cubify``).

Every occupied voxel contributes the square faces (two triangles each) that border an empty voxel or the
grid boundary; interior faces are dropped and coincident corners are merged, so the result has shared
vertices and no internal faces. Axes: voxels are ``(N, D, H, W)``; vertex x runs along W, y along H and z
along D, in ``[-1, 1]`` according to ``align``:

- ``"topleft"``: corner ``i`` of the grid (between voxels ``i - 1`` and ``i``) sits at ``2 i / (W - 1) - 1``,
  so voxel i's top-left corner lands where a voxel centre would be for ``align_corners=True`` sampling;
- ``"corner"``: the grid's outer corners are at -1 and 1: corner ``i`` at ``2 i / W - 1``;
- ``"center"``: voxel centres sit at ``2 i / (W - 1) - 1``: corner ``i`` at ``2 (i - 0.5) / (W - 1) - 1``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lib3d._checks import check_choice, check_tensor

# Corners of the unit cube as (x, y, z) offsets and its 12 triangles (PyTorch3D's tables).
_UNIT_CUBE_VERTS = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]]
_CUBE_FACES = [
    [0, 1, 2], [1, 3, 2],  # left (x = 0)
    [2, 3, 6], [3, 7, 6],  # bottom (y = 1)
    [0, 2, 6], [0, 6, 4],  # front (z = 0)
    [0, 5, 1], [0, 4, 5],  # up (y = 0)
    [6, 7, 5], [6, 5, 4],  # right (x = 1)
    [1, 7, 3], [1, 5, 7],  # back (z = 1)
]


def cubify(voxels: torch.Tensor, thresh: float, *, feats: torch.Tensor | None = None, device=None,
           align: Literal["topleft", "corner", "center"] = "topleft"):
    """Convert voxel occupancies into a batch of cube meshes (PyTorch3D's ``cubify``).

    Args:
        voxels: ``(N, D, H, W) float`` occupancy probabilities.
        thresh: a voxel is occupied when ``voxels >= thresh``.
        feats: optional ``(N, C, D, H, W) float`` per-voxel features (colours); as PyTorch3D, only with
            ``align="center"``: every face takes its voxel's feature and the meshes get a
            ``TexturesAtlas`` of ``(F_i, 1, 1, C)`` (one colour per face). Another ``align`` raises (PyTorch3D
            silently drops ``feats`` there).
        device: device of the output (default: the voxels' device).
        align: ``"topleft"``, ``"corner"`` or ``"center"`` (see the module docstring).

    Returns:
        ``Meshes`` of N meshes (empty meshes for empty grids).

    Raises:
        ValueError: wrong shape or ``align``, or ``feats`` of the wrong shape or with ``align != "center"``.
    """
    from lib3d.structures import Meshes

    check_tensor("voxels", voxels)
    if voxels.dim() != 4:
        raise ValueError(f"voxels must have shape (N, D, H, W), got {tuple(voxels.shape)}")
    check_choice("align", align, ("topleft", "corner", "center"))
    n, d, h, w = voxels.shape
    if feats is not None:
        check_tensor("feats", feats, dtype="float")
        if feats.dim() != 5 or feats.shape[0] != n or tuple(feats.shape[2:]) != (d, h, w):
            raise ValueError(f"feats must have shape ({n}, C, {d}, {h}, {w}), got {tuple(feats.shape)}")
        if align != "center":
            raise ValueError(f"feats needs align='center' (each face takes its voxel's feature), got {align!r}")
    device = voxels.device if device is None else torch.device(device)
    voxels = voxels.to(device)
    occ = (voxels >= thresh).to(torch.float32).view(n, 1, d, h, w)
    # Neighbour occupancy along each axis: both voxels of a pair occupied -> the face between is interior.
    pair_x = (F.conv3d(occ, occ.new_full((1, 1, 1, 1, 2), 0.5)) > 0.5).float()
    pair_y = (F.conv3d(occ, occ.new_full((1, 1, 1, 2, 1), 0.5)) > 0.5).float()
    pair_z = (F.conv3d(occ, occ.new_full((1, 1, 2, 1, 1), 0.5)) > 0.5).float()
    keep = torch.ones((12, n, 1, d, h, w), device=device)
    keep[0:2, ..., 1:] = 1 - pair_x          # left: neighbour at x - 1
    keep[2:4, ..., :-1, :] = 1 - pair_y      # bottom: neighbour at y + 1
    keep[4:6, :, :, 1:] = 1 - pair_z         # front: neighbour at z - 1
    keep[6:8, ..., 1:, :] = 1 - pair_y       # up: neighbour at y - 1
    keep[8:10, ..., :-1] = 1 - pair_x        # right: neighbour at x + 1
    keep[10:12, :, :, :-1] = 1 - pair_z      # back: neighbour at z + 1
    keep = keep * occ
    keep = keep[:, :, 0].permute(1, 3, 4, 2, 0).reshape(-1, 12)  # (N*H*W*D, 12)
    lin = torch.nonzero(keep)  # (NF, 2): voxel, face type
    vox, ftype = lin[:, 0], lin[:, 1]
    zi = vox % d
    xi = (vox // d) % w
    yi = (vox // (d * w)) % h
    ni = vox // (d * w * h)
    cube_verts = torch.tensor(_UNIT_CUBE_VERTS, dtype=torch.int64, device=device)
    cube_faces = torch.tensor(_CUBE_FACES, dtype=torch.int64, device=device)
    corner = cube_verts[cube_faces[ftype]]  # (NF, 3, 3) xyz offsets
    gy = corner[..., 1] + yi[:, None]
    gx = corner[..., 0] + xi[:, None]
    gz = corner[..., 2] + zi[:, None]
    grid_faces = (gy * (w + 1) + gx) * (d + 1) + gz  # index into the (H+1, W+1, D+1) corner grid

    ys, xs, zs = torch.meshgrid(torch.arange(h + 1, device=device), torch.arange(w + 1, device=device),
                                torch.arange(d + 1, device=device), indexing="ij")
    ys, xs, zs = ys.float(), xs.float(), zs.float()
    if align == "center":
        xs, ys, zs = xs - 0.5, ys - 0.5, zs - 0.5
    margin = 0.0 if align == "corner" else 1.0
    xs = xs * 2.0 / (w - margin) - 1.0
    ys = ys * 2.0 / (h - margin) - 1.0
    zs = zs * 2.0 / (d - margin) - 1.0
    grid_verts = torch.stack([xs, ys, zs], 3).view(-1, 3)
    num_grid = grid_verts.shape[0]

    # Keep the used corners of each mesh and renumber them compactly (merging shared corners).
    used = torch.zeros((n, num_grid), dtype=torch.bool, device=device)
    used[ni[:, None].expand_as(grid_faces), grid_faces] = True
    new_id = torch.cumsum(used, 1) - 1  # (N, num_grid) compact index of each used corner in its mesh
    verts_packed = grid_verts[torch.nonzero(used)[:, 1]]  # grouped by mesh (row-major nonzero)
    faces_local = new_id[ni[:, None], grid_faces]  # faces come grouped by mesh (voxel order starts with n)
    counts_v = used.sum(1).tolist()
    counts_f = torch.bincount(ni, minlength=n).tolist()
    verts_list = list(torch.split(verts_packed, counts_v))
    faces_list = list(torch.split(faces_local, counts_f))
    textures = None
    if feats is not None:
        from lib3d.structures import TexturesAtlas

        per_voxel = feats.to(device).permute(0, 3, 4, 2, 1).reshape(-1, feats.shape[1])  # (N*H*W*D, C)
        face_feats = per_voxel[vox].reshape(-1, 1, 1, feats.shape[1])  # (NF, 1, 1, C), faces grouped by mesh
        textures = TexturesAtlas(list(torch.split(face_feats, counts_f)))
    return Meshes(verts=verts_list, faces=faces_list, textures=textures)
