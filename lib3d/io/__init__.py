"""Mesh file formats: PLY and Wavefront OBJ (+ MTL and textures), with PyTorch3D's names and results.

Dimension names used throughout ``lib3d.io``:

- V: vertices; F: faces (triangles, after fan triangulation of polygons); T: texture coordinates
  (OBJ ``vt``); Nn: normals (OBJ ``vn``); C: colour channels; H/W: texture image height/width;
  R: texture-atlas resolution; N: meshes in a batch.

Functions:

- ``load_ply(f) -> (verts (V, 3) float32, faces (F, 3) int64)``; ``load_ply_data(f) -> PlyData`` (normals,
  colours, every element); ``save_ply(f, verts, faces=None, verts_normals=None, verts_colors=None,
  ascii=False, decimal_places=None)``.
- ``load_obj(f, load_textures=True, create_texture_atlas=False, ...) -> (verts, Faces, Aux)``;
  ``save_obj(f, verts, faces, decimal_places=None, normals=None, faces_normals_idx=None, verts_uvs=None,
  faces_uvs=None, texture_map=None)``; ``load_mtl``; ``load_objs_as_meshes(files, device=None,
  load_textures=True) -> lib3d.structures.Meshes``.
- ``IO()``: ``load_mesh``/``save_mesh`` (.obj, .ply) and ``load_pointcloud``/``save_pointcloud`` (.ply), as
  ``pytorch3d.io.IO``.
- ``lib3d.io.images`` (re-exported): ``save_image``, ``save_gif``, ``image_grid``.
- ``FormatError(ValueError)``: any malformed, truncated or hostile file; the message names the file and
  the line (OBJ, MTL, PLY header and ascii body) or the element (binary PLY body).

Conventions: indices are 0-based int64; absent normal/texture indices are -1 (PyTorch3D's); colours are
float in [0, 1]; texture images (H, W, 3) float32 in [0, 1] with row 0 at the top of the image.
"""

from lib3d.io import images
from lib3d.io.errors import FormatError
from lib3d.io.images import image_grid, save_gif, save_image
from lib3d.io.obj import (
    Aux,
    Faces,
    load_mtl,
    load_obj,
    load_objs_as_meshes,
    make_mesh_texture_atlas,
    save_obj,
)
from lib3d.io.pluggable import IO
from lib3d.io.ply import (
    PlyData,
    PlyElement,
    PlyHeader,
    PlyList,
    PlyProperty,
    load_ply,
    load_ply_data,
    save_ply,
)

__all__ = [
    "IO",
    "Aux",
    "Faces",
    "FormatError",
    "PlyData",
    "PlyElement",
    "PlyHeader",
    "PlyList",
    "PlyProperty",
    "image_grid",
    "images",
    "load_mtl",
    "load_obj",
    "load_objs_as_meshes",
    "load_ply",
    "load_ply_data",
    "make_mesh_texture_atlas",
    "save_gif",
    "save_image",
    "save_obj",
    "save_ply",
]
