"""Uniform sampling of points on mesh surfaces (PyTorch3D's ``sample_points_from_meshes``).

A face is drawn with probability proportional to its area, then a point uniformly inside it with
barycentric weights ``w0 = 1 - sqrt(u)``, ``w1 = sqrt(u) (1 - v)``, ``w2 = sqrt(u) v`` for ``u, v ~ U(0, 1)``
(Osada et al., "Shape distributions", 2002, eq. 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lib3d._checks import check_shapes
from lib3d.ops.packed import gather_rows


class _SampleFragments(NamedTuple):
    """Fragment-shaped view of the samples, fed to ``textures.sample_textures``."""

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor
    dists: torch.Tensor


def rand_barycentric_coords(size1: int, size2: int, dtype: torch.dtype, device,
                            generator: torch.Generator | None = None):
    """Uniform barycentric coordinates ``(w0, w1, w2)``, each ``(size1, size2)``, summing to one."""
    uv = torch.rand((2, size1, size2), dtype=dtype, device=device, generator=generator)
    u_sqrt = uv[0].sqrt()
    return 1.0 - u_sqrt, u_sqrt * (1.0 - uv[1]), u_sqrt * uv[1]


def sample_points_from_faces(verts: torch.Tensor, faces: torch.Tensor, mesh_to_face: torch.Tensor,
                             num_faces: torch.Tensor, num_samples: int,
                             generator: torch.Generator | None = None):
    """Area-weighted surface samples from packed meshes (the tensor-level core).

    Args:
        verts: ``(V, 3) float`` packed vertices.
        faces: ``(F, 3) int64`` packed faces.
        mesh_to_face: ``(N,) int64`` first packed face of each mesh.
        num_faces: ``(N,) int64`` faces per mesh (meshes with none get zero samples).
        num_samples: samples S per mesh.
        generator: random generator (on ``verts.device``) for reproducible samples.

    Returns:
        ``(samples (N, S, 3), normals (N, S, 3), face_idx (N, S) int64 packed faces, bary (N, S, 3))``;
        ``samples`` and ``normals`` are differentiable w.r.t. ``verts`` (face choice and barycentrics are
        constants). Rows of meshes without faces are zero (``face_idx`` 0).
    """
    check_shapes(verts=(verts, ("V", 3)), faces=(faces, ("F", 3)))
    n = num_faces.shape[0]
    s = int(num_samples)
    valid = num_faces > 0
    with torch.no_grad():
        fv = verts.detach()[faces]
        areas = torch.linalg.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=1).norm(dim=1) / 2
        max_f = int(num_faces.max()) if n else 0
        local = torch.arange(max_f, device=verts.device)
        gidx = (mesh_to_face[:, None] + local[None]).clamp(max=max(faces.shape[0] - 1, 0))
        areas_padded = torch.where(local[None] < num_faces[:, None], areas[gidx] if faces.shape[0] else
                                   areas.new_zeros((n, max_f)), areas.new_zeros(()))
        areas_padded = areas_padded[valid]
        # All-zero areas (degenerate mesh): sample faces uniformly instead of failing.
        degenerate = areas_padded.sum(1) <= 0
        if bool(degenerate.any()):
            fallback = (local[None] < num_faces[valid][:, None]).to(areas.dtype)
            areas_padded = torch.where(degenerate[:, None], fallback, areas_padded)
        face_idx = torch.zeros((n, s), dtype=torch.int64, device=verts.device)
        if int(valid.sum()) and s:
            picked = torch.multinomial(areas_padded, s, replacement=True, generator=generator)
            face_idx[valid] = picked + mesh_to_face[valid][:, None]
    w0, w1, w2 = rand_barycentric_coords(n, s, verts.dtype, verts.device, generator)
    tri = faces[face_idx]  # (N, S, 3)
    a, b, c = gather_rows(verts, tri).unbind(-2)
    samples = w0[..., None] * a + w1[..., None] * b + w2[..., None] * c
    nrm = torch.linalg.cross(b - a, c - b, dim=-1)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).eps)
    vmask = valid[:, None, None].to(verts.dtype)
    return samples * vmask, nrm * vmask, face_idx, torch.stack([w0, w1, w2], -1)


def sample_points_from_meshes(meshes, num_samples: int = 10000, return_normals: bool = False,
                              return_textures: bool = False, generator: torch.Generator | None = None):
    """Sample points uniformly on the surface of each mesh (PyTorch3D's ``sample_points_from_meshes``).

    Args:
        meshes: ``Meshes`` batch of N meshes.
        num_samples: points S per mesh.
        return_normals: also return the unit normals of the sampled faces
            (``(v1 - v0) x (v2 - v1)`` normalised).
        return_textures: also return the texture colours at the samples (needs ``meshes.textures``).
        generator: random generator on the meshes' device (reproducible sampling).

    Returns:
        ``samples (N, S, 3)``, plus ``normals (N, S, 3)`` and/or ``textures (N, S, C)`` when requested
        (a tuple in that order). Meshes without faces get zeros. Differentiable w.r.t. the vertices.

    Raises:
        ValueError: empty batch, non-finite vertices or ``return_textures`` without textures.
    """
    if meshes.isempty():
        raise ValueError("Meshes are empty.")
    verts = meshes.verts_packed()
    if not bool(torch.isfinite(verts).all()):
        raise ValueError("Meshes contain nan or inf.")
    if return_textures and meshes.textures is None:
        raise ValueError("Meshes do not contain textures.")
    faces = meshes.faces_packed()
    samples, normals, face_idx, bary = sample_points_from_faces(
        verts, faces, meshes.mesh_to_faces_packed_first_idx(), meshes.num_faces_per_mesh(), num_samples,
        generator)
    out = [samples]
    if return_normals:
        out.append(normals)
    if return_textures:
        n, s = face_idx.shape
        valid = (meshes.num_faces_per_mesh() > 0)[:, None].expand(n, s)
        p2f = torch.where(valid, face_idx, torch.full_like(face_idx, -1)).view(n, s, 1, 1)
        dummy = verts.new_zeros((n, s, 1, 1))
        frags = _SampleFragments(p2f, dummy, bary.view(n, s, 1, 1, 3), dummy)
        tex = meshes.textures.sample_textures(frags, faces_packed=faces)
        out.append(tex[:, :, 0, 0, :])
    return out[0] if len(out) == 1 else tuple(out)
