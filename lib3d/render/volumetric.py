"""Volumetric rendering (PyTorch3D's ``pytorch3d.renderer.implicit`` and ``Volumes``): this module gathers
the names of its three parts, which hold the code:

- ``lib3d.render.raysampling``  ray bundles, ray samplers, hierarchical sampling, depths along rays;
- ``lib3d.render.volumes``      ``Volumes``, ``sample_volume``, ``VolumeSampler``;
- ``lib3d.render.raymarching``  compositing weights (one routine), PyTorch3D's ray marchers and renderers,
  NeRF's compositing and the packed ray marcher with empty-space skipping.

``from lib3d.render.volumetric import X`` and ``from lib3d.render import X`` keep working for every name.
"""

from lib3d.render import raymarching, raysampling, volumes
from lib3d.render.raymarching import *  # noqa: F401,F403
from lib3d.render.raysampling import *  # noqa: F401,F403
from lib3d.render.volumes import *  # noqa: F401,F403

__all__ = sorted(set(raysampling.__all__) | set(volumes.__all__) | set(raymarching.__all__))
