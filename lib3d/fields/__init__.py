"""Neural and grid radiance fields: harmonic embedding, the book's NeRF, the original NeRF, voxel grids.

A field reaches the renderers of ``lib3d.render`` as a callback (``field(points, dirs) -> (rgb, density)``,
or a density and a colour callback for ``render_rays_in_box``); modules here only hold parameters (the math
is in functions).

Dimension names:

- ``P``: points (any leading shape ``...`` is allowed where stated);
- ``R``: rays; ``S``: samples per ray;
- ``C``: channels (features); ``D, H, W``: grid depth (z), height (y), width (x) in voxels;
- ``N``: cameras / batch.

Conventions: world coordinates as in ``lib3d.geometry`` (PyTorch3D's); densities ``sigma`` are per unit
world length (NeRF), or in [0, 1] per sample for PyTorch3D's emission-absorption ray marcher (the book).

Modules:

- ``lib3d.fields.encodings``: ``HarmonicEmbedding`` (PyTorch3D semantics).
- ``lib3d.fields.nerf``: ``BookNeuralRadianceField`` (the book's chapter-6 MLP), ``NeRFMLP`` and
  ``OriginalNeRF`` (Mildenhall et al. 2020: 8x256, skip at layer 4, view-dependent head, coarse + fine).
- ``lib3d.fields.voxel``: ``VolumeModel`` (the book's chapter-5 dense voxel grid) and ``GridRadianceField``
  with ``render_grid_field`` (the fast path: DVGO-style density + feature grids, a tiny MLP, an
  occupancy grid for empty-space skipping, early ray termination, coarse-to-fine upsampling).
- ``lib3d.fields.occupancy``: ``visual_hull`` (space carving from posed silhouettes), ``voxel_resolution``,
  ``hull_box``.
- ``lib3d.fields.losses``: ``huber`` (the book's, lib3d's one Huber loss), ``total_variation``.

The training science that uses them is in ``lib3d.systems.nerf`` and ``lib3d.systems.volume``; posed-image
datasets are in ``lib3d.data.posed_images``.
"""

from lib3d.fields.encodings import HarmonicEmbedding
from lib3d.fields.losses import huber, total_variation
from lib3d.fields.nerf import BookNeuralRadianceField, NeRFMLP, OriginalNeRF
from lib3d.fields.occupancy import hull_box, visual_hull, voxel_resolution
from lib3d.fields.voxel import GridRadianceField, VolumeModel, render_grid_field

__all__ = [
           "BookNeuralRadianceField",
           "GridRadianceField",
           "HarmonicEmbedding",
           "NeRFMLP",
           "OriginalNeRF",
           "VolumeModel",
           "huber",
           "hull_box",
           "render_grid_field",
           "total_variation",
           "visual_hull",
           "voxel_resolution",
]
