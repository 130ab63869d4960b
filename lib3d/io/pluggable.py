"""``IO``: PyTorch3D's suffix-dispatching loader/saver for meshes and point clouds (.obj, .ply).

Dimension names as in :mod:`lib3d.io` (V vertices, F faces, P points, C channels).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lib3d.io.obj import load_objs_as_meshes, save_obj
from lib3d.io.ply import load_ply_data, save_ply

__all__ = ["IO"]


def _suffix(path) -> str:
    return Path(os.fspath(path)).suffix.lower()


class IO:
    """Load and save ``Meshes`` and ``Pointclouds`` by file suffix, as ``pytorch3d.io.IO``.

    Supported: meshes from/to ``.obj`` (with ``TexturesUV``) and ``.ply`` (with per-vertex colours as
    ``TexturesVertex``); point clouds from/to ``.ply`` (normals and colour features).

    Example:
        >>> mesh = IO().load_mesh("cow.obj", device="cpu")
        >>> IO().save_mesh(mesh, "cow.ply")
    """

    def load_mesh(self, path, include_textures: bool = True, device: str | torch.device = "cpu"):
        """Read one mesh -> ``Meshes`` with one mesh.

        Args:
            path: an ``.obj`` or ``.ply`` file.
            include_textures: load OBJ materials/textures or PLY vertex colours.
            device: device of the result.

        Raises:
            ValueError: unknown suffix. FormatError: a malformed file.
        """
        from lib3d.structures import Meshes, TexturesVertex

        sfx = _suffix(path)
        if sfx == ".obj":
            return load_objs_as_meshes([path], device=device, load_textures=include_textures)
        if sfx == ".ply":
            d = load_ply_data(path)
            tex = None
            if include_textures and d.verts_colors is not None:
                tex = TexturesVertex(verts_features=[d.verts_colors[:, :3].to(device)])
            return Meshes(verts=[d.verts.to(device)], faces=[d.faces.to(device)], textures=tex)
        raise ValueError(f"path must end with .obj or .ply, got {os.fspath(path)!r}")

    def save_mesh(
        self,
        data,
        path,
        binary: bool | None = True,
        include_textures: bool = True,
        decimal_places: int | None = None,
    ) -> None:
        """Write the single mesh of ``data`` (a ``Meshes`` with one mesh) to ``.obj`` or ``.ply``.

        ``.obj`` keeps a ``TexturesUV`` (writes .mtl and .png beside it) when ``include_textures``;
        ``.ply`` keeps ``TexturesVertex`` colours; ``binary=False`` writes an ascii PLY.
        """
        if len(data) != 1:
            raise ValueError(f"save_mesh writes one mesh, got a batch of {len(data)}")
        verts, faces = data.verts_list()[0], data.faces_list()[0]
        tex = data.textures if include_textures else None
        sfx = _suffix(path)
        if sfx == ".obj":
            kw = {}
            if tex is not None and hasattr(tex, "maps_list") and hasattr(tex, "verts_uvs_list"):
                kw = {
                    "verts_uvs": tex.verts_uvs_list()[0],
                    "faces_uvs": tex.faces_uvs_list()[0],
                    "texture_map": tex.maps_list()[0],
                }
            save_obj(path, verts, faces, decimal_places=decimal_places, **kw)
            return
        if sfx == ".ply":
            colors = None
            if tex is not None and hasattr(tex, "verts_features_list"):
                feats = tex.verts_features_list()[0]
                colors = feats if feats.shape[-1] in (3, 4) else None
            save_ply(
                path, verts, faces, verts_colors=colors, ascii=binary is False, decimal_places=decimal_places
            )
            return
        raise ValueError(f"path must end with .obj or .ply, got {os.fspath(path)!r}")

    def load_pointcloud(self, path, device: str | torch.device = "cpu"):
        """Read a ``.ply`` point cloud -> ``Pointclouds`` with one cloud (normals; colours as features)."""
        from lib3d.structures import Pointclouds

        if _suffix(path) != ".ply":
            raise ValueError(f"path must end with .ply, got {os.fspath(path)!r}")
        d = load_ply_data(path)
        normals = [d.verts_normals.to(device)] if d.verts_normals is not None else None
        features = [d.verts_colors.to(device)] if d.verts_colors is not None else None
        return Pointclouds(points=[d.verts.to(device)], normals=normals, features=features)

    def save_pointcloud(
        self, data, path, binary: bool | None = True, decimal_places: int | None = None
    ) -> None:
        """Write the single cloud of ``data`` (``Pointclouds``) to ``.ply`` (normals, 3/4-channel features)."""
        if _suffix(path) != ".ply":
            raise ValueError(f"path must end with .ply, got {os.fspath(path)!r}")
        if len(data) != 1:
            raise ValueError(f"save_pointcloud writes one cloud, got a batch of {len(data)}")
        points = data.points_list()[0]
        normals = data.normals_list()[0] if data.normals_list() is not None else None
        feats = data.features_list()[0] if data.features_list() is not None else None
        colors = feats if feats is not None and feats.shape[-1] in (3, 4) else None
        save_ply(
            path,
            points,
            None,
            verts_normals=normals,
            verts_colors=colors,
            ascii=binary is False,
            decimal_places=decimal_places,
        )
