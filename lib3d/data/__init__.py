"""Datasets and scenes made by lib3d itself, and loaders for real formats.

Dimension names: N views or meshes; V vertices; F faces; H/W image size.

- ``lib3d.data.primitives``  closed primitive meshes (cube, octahedron, dodecahedron, tetrahedron).
- ``lib3d.data.scenes``      procedural textured meshes (the embedded default scenes).
- ``lib3d.data.renders``     rendered multi-view datasets (the book's ``generate_cow_renders``).
- ``lib3d.data.blender``     the NeRF Blender format (``transforms_*.json`` + PNGs).
- ``lib3d.data.person_cloud`` a procedural person-shaped point cloud (chapter 3's target).
- ``lib3d.data.posed_images`` posed images for NeRF and chapter 5 from one spec (embedded scene, the book's cow
  rendered from its mesh, a Blender folder).
- ``lib3d.data.clevr``        CLEVR-like scenes rendered by lib3d, with per-object masks (GIRAFFE, ch. 7).
- ``lib3d.data.image_folder`` an ``images:DIR/*.jpg`` folder of real images (GIRAFFE's loader and crops).
- ``lib3d.data.indoor``       procedural rooms seen along short camera walks (SynSin, ch. 9).
- ``lib3d.data.realestate``   RealEstate10K camera files and KITTI odometry poses + calibration.
- ``lib3d.data.furniture``    Pix3D-like furniture in rooms with boxes, masks, meshes, voxels (Mesh R-CNN, ch. 10).
- ``lib3d.data.pix3d``        Pix3D json, ShapeNet R2N2 renders and ``.binvox``, COCO-format json.
- ``lib3d.data.pix3d_items``  real Pix3D as Mesh R-CNN training / evaluation items, read lazily.

Submodules are imported on demand so that each stays light.
"""
