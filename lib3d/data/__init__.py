"""Datasets and scenes made by lib3d itself, and loaders for real formats.

Dimension names: N views or meshes; V vertices; F faces; H/W image size.

- ``lib3d.data.primitives``  closed primitive meshes (cube, octahedron, dodecahedron, tetrahedron).
- ``lib3d.data.scenes``      procedural textured meshes (the embedded default scenes).
- ``lib3d.data.renders``     rendered multi-view datasets (the book's ``generate_cow_renders``).
- ``lib3d.data.blender``     the NeRF Blender format (``transforms_*.json`` + PNGs).
- ``lib3d.data.person_cloud`` a procedural person-shaped point cloud (chapter 3's target).

Submodules are imported on demand so that each stays light.
"""
