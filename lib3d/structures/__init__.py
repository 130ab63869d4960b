"""Batched heterogeneous 3D data: ``Meshes``, ``Pointclouds`` and mesh textures.

Dimension names used throughout: N batch elements (meshes, clouds); V_i, F_i, E_i, P_i vertices, faces,
unique edges and points of element i; V, F, P their padded maxima; ``sum V`` etc. the packed sizes;
C channels; H/W image or texture size; K per-pixel slots; R atlas resolution.

Everything is immutable (operations return new objects), autograd-, device- and dtype-friendly, and
follows PyTorch3D's method names and list / padded / packed semantics.
"""

from lib3d.structures.meshes import Meshes, join_meshes_as_batch, join_meshes_as_scene
from lib3d.structures.packing import (
    list_to_packed,
    list_to_padded,
    packed_to_padded,
    padded_to_list,
    padded_to_packed,
)
from lib3d.structures.pointclouds import Pointclouds, join_pointclouds_as_batch, join_pointclouds_as_scene
from lib3d.structures.textures import TexturesAtlas, TexturesUV, TexturesVertex, interpolate_face_attributes

__all__ = [
    "Meshes", "join_meshes_as_batch", "join_meshes_as_scene",
    "Pointclouds", "join_pointclouds_as_batch", "join_pointclouds_as_scene",
    "TexturesVertex", "TexturesUV", "TexturesAtlas", "interpolate_face_attributes",
    "list_to_packed", "list_to_padded", "packed_to_padded", "padded_to_list", "padded_to_packed",
]
