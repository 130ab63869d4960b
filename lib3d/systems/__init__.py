"""The book's systems as training recipes on ``lib3d.runtime``: one module per system, each a class with
``init`` / ``train_step`` / ``evaluate`` that ``runtime.train`` runs (the contract is in
``lib3d/runtime/system.py``), or a predictor that ``runtime.evaluate`` maps over inputs. Import the modules
directly:

- ``rigid``        the platform's smoke fit (``jobs.fit_rigid``);
- ``mesh_fitting`` chapters 2-3: a mesh batch's translation, deforming a sphere into a cloud;
- ``camera_fit``   chapter 4: a camera position by differentiable rendering;
- ``volume``       chapter 5: a voxel volume fitted to posed images;
- ``nerf``         chapter 6: the fast grid NeRF and the book's NeRF;
- ``giraffe``      chapter 7: GIRAFFE (model in ``lib3d.synthesis.giraffe``);
- ``smplify``      chapter 8: SMPLify over many images (a Ray Data predictor);
- ``synsin``       chapter 9: SynSin (model in ``lib3d.synthesis.synsin``);
- ``meshrcnn``     chapter 10: Mesh R-CNN (model in ``lib3d.detect``).
"""
