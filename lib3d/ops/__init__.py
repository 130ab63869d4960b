"""Operators on point clouds and meshes: KNN, Chamfer, surface sampling, mesh regularisers, mesh
construction (icospheres, subdivision, cubify) and Mesh R-CNN layers (vert_align, GraphConv).

PyTorch3D's names, signatures and numbers, in pure PyTorch (CPU and CUDA, no custom kernels).

Dimension names: N batch (clouds or meshes); P, P1, P2 points per cloud (padded); D point dimension
(usually 3); K neighbours; V vertices, F faces, E unique edges (``sum V`` etc. when packed); S samples per
mesh; C channels (features); H/W feature-map size; D/H/W voxel grid depth/height/width in ``cubify``.
"""

from lib3d.ops.chamfer import chamfer_distance
from lib3d.ops.cubify import cubify
from lib3d.ops.graph_conv import GraphConv, gather_scatter, gather_scatter_python, graph_conv
from lib3d.ops.ico_sphere import ico_sphere
from lib3d.ops.knn import KNN, knn_gather, knn_points
from lib3d.ops.laplacian import cot_laplacian, laplacian, norm_laplacian
from lib3d.ops.mesh_losses import (
    mesh_edge_loss,
    mesh_laplacian_smoothing,
    mesh_normal_consistency,
)
from lib3d.ops.packed import gather_rows, packed_to_padded, padded_to_packed
from lib3d.ops.points_normals import estimate_pointcloud_normals
from lib3d.ops.sample_points import sample_points_from_meshes
from lib3d.ops.subdivide import SubdivideMeshes, subdivide_meshes
from lib3d.ops.vert_align import vert_align

__all__ = [
    "KNN",
    "GraphConv",
    "SubdivideMeshes",
    "chamfer_distance",
    "cot_laplacian",
    "cubify",
    "estimate_pointcloud_normals",
    "gather_rows",
    "gather_scatter",
    "gather_scatter_python",
    "graph_conv",
    "ico_sphere",
    "knn_gather",
    "knn_points",
    "laplacian",
    "mesh_edge_loss",
    "mesh_laplacian_smoothing",
    "mesh_normal_consistency",
    "norm_laplacian",
    "packed_to_padded",
    "padded_to_packed",
    "sample_points_from_meshes",
    "subdivide_meshes",
    "vert_align",
]
