"""lib3d: 3D deep learning in pure PyTorch.

Subpackages (import them directly; this module imports nothing heavy so that a broken or slow
subpackage never slows the others down):

- ``lib3d.io``          PLY and OBJ+MTL reading and writing.
- ``lib3d.geometry``    rotations, rigid transforms (``Transform3d``) and cameras.
- ``lib3d.structures``  batched heterogeneous ``Meshes`` and ``Pointclouds``; textures.
- ``lib3d.ops``         KNN, chamfer, surface sampling, mesh losses, mesh operators, graph conv.
- ``lib3d.render``      mesh and point rasterizers, shading, compositing, volumetric rendering.
- ``lib3d.fields``      NeRF, voxel grids and their encodings.
- ``lib3d.bodies``      the SMPL body model and SMPLify.
- ``lib3d.data``        procedural scenes, rendered datasets and real-format loaders.
- ``lib3d.metrics``     image metrics (PSNR, SSIM).
- ``lib3d.runtime``     the machinery shared by jobs: run directories, checkpoints, Ray Train, batch eval.

Conventions (PyTorch3D's): row-vector transforms ``points @ R + T``; view space +X left, +Y up,
+Z into the scene; NDC with +X left and +Y up; quaternions real part first (w, x, y, z).
"""

__version__ = "0.1.0"
