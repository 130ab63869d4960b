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
- ``lib3d.nn``          shared networks (ResNet + FPN, VGG, AlexNet, FID Inception, UNet), GAN parts, weight files.
- ``lib3d.metrics``     PSNR, SSIM, FID/KID, perceptual similarity and LPIPS, COCO AP, mesh metrics.
- ``lib3d.synthesis``   GIRAFFE and SynSin (the book's chapters 7 and 9).
- ``lib3d.detect``      boxes, NMS, RoIAlign, RPN, ROI heads and Mesh R-CNN (chapter 10).
- ``lib3d.systems``     every book system as a training recipe for ``lib3d.runtime.train``.
- ``lib3d.runtime``     what jobs share: the training contract and its one loop, run directories,
  checkpoints, Ray Train, Ray Data evaluation.

Conventions (PyTorch3D's): row-vector transforms ``points @ R + T``; view space +X left, +Y up,
+Z into the scene; NDC with +X left and +Y up; quaternions real part first (w, x, y, z).
"""

__version__ = "0.1.0"
