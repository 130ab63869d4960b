"""Differentiable rendering in pure PyTorch: mesh and point rasterization, shading, compositing, volumes.

Dimension names: N batch (meshes, clouds or cameras); H/W image height and width; K faces or points per
pixel; F faces; P points; C channels; S samples per ray.

Modules (PyTorch3D's names; import from here or from the module):

- ``mesh_rasterizer``  ``rasterize_meshes``, ``RasterizationSettings``, ``MeshRasterizer``, ``Fragments``,
  ``barycentric_coordinates``;
- ``point_rasterizer`` ``rasterize_points``, ``PointsRasterizationSettings``, ``PointsRasterizer``;
- ``compositing``      ``alpha_composite``, ``norm_weighted_sum``, ``weighted_sum``, ``PointsRenderer``;
- ``lighting``         ``AmbientLights``, ``PointLights``, ``DirectionalLights``, ``Materials``;
- ``blending``         ``BlendParams``, ``hard_rgb_blend``, ``sigmoid_alpha_blend``, ``softmax_rgb_blend``;
- ``shading``          Phong/Gouraud/flat shading, the shaders, ``MeshRenderer`` and ``render_mesh``;
- ``raysampling``      ray bundles and ray samplers, hierarchical sampling, depths along rays;
- ``volumes``          ``Volumes``, ``sample_volume``, ``VolumeSampler``;
- ``raymarching``      compositing weights (one routine), ray marchers, implicit/volume renderers, NeRF
  compositing, packed marching with empty-space skipping (``volumetric`` gathers the three);
- ``trilinear``        trilinear sampling of dense grids (``grid_sample`` semantics; compiled CPU kernels on
  request).

Conventions (PyTorch3D's): NDC +X left, +Y up, the shorter image side spans [-1, 1]; images are
``(N, H, W, C)``; ``pix_to_face`` indexes packed faces with -1 for empty slots.
"""

from lib3d.render.blending import *  # noqa: F401,F403
from lib3d.render.compositing import *  # noqa: F401,F403
from lib3d.render.lighting import *  # noqa: F401,F403
from lib3d.render.mesh_rasterizer import *  # noqa: F401,F403
from lib3d.render.point_rasterizer import *  # noqa: F401,F403
from lib3d.render.shading import *  # noqa: F401,F403
from lib3d.render.trilinear import *  # noqa: F401,F403
from lib3d.render.raysampling import *  # noqa: F401,F403
from lib3d.render.volumes import *  # noqa: F401,F403
from lib3d.render.raymarching import *  # noqa: F401,F403
from lib3d.render import (  # noqa: E402
    blending,
    compositing,
    lighting,
    mesh_rasterizer,
    point_rasterizer,
    raymarching,
    raysampling,
    shading,
    trilinear,
    volumes,
    volumetric,
)

__all__ = sorted(set(blending.__all__) | set(compositing.__all__) | set(lighting.__all__)
                 | set(mesh_rasterizer.__all__) | set(point_rasterizer.__all__) | set(shading.__all__)
                 | set(trilinear.__all__) | set(raysampling.__all__) | set(volumes.__all__)
                 | set(raymarching.__all__))
