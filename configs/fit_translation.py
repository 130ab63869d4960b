"""Config of ``jobs.fit_translation``: the book's chapter-2 heterogeneous-batch example. A batch of three
meshes (cube, diamond, dodecahedron) is observed as noisy surface points shifted by an unknown offset; the
offset is recovered by SGD on the Chamfer distance between surface samples and the observations
(``lib3d.systems.mesh_fitting.TranslationFitSystem``)."""

from __future__ import annotations

import dataclasses

from lib3d.runtime import RayConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class FitTranslationConfig:
    """Recover a translation shared by a heterogeneous batch of meshes from noisy point observations."""

    mesh_dir: str | None = None
    """Folder holding the book's ``cube.obj``, ``diamond.obj`` and ``dodecahedron.obj``; None: lib3d's
    embedded primitives (cube, octahedron, dodecahedron)."""
    offset: tuple[float, float, float] = (3.0, 4.0, 5.0)
    """The unknown translation applied to the observations (the answer)."""
    noise: float = 0.01
    """Standard deviation of the Gaussian noise added to the observed points."""
    num_samples: int = 5000
    """Surface samples per mesh, both for the observations and at every step."""
    iterations: int = 200
    """SGD steps."""
    lr: float = 0.1
    """SGD learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    run: RunConfig = RunConfig(checkpoint_every=50, log_every=10)
    """Run directory, seed, checkpoints."""
    ray: RayConfig = RayConfig()
    """Ray cluster and training workers (``--ray.use-gpu`` runs on CUDA; 2+ workers split the mesh batch)."""


PRESETS: dict[str, tuple[str, FitTranslationConfig]] = {
    "default": ("the book's setting on lib3d's embedded meshes: 200 SGD steps, 5,000 samples per mesh",
                FitTranslationConfig()),
    "book": ("the book's OBJ files from ../shared/data/book/obj", FitTranslationConfig(mesh_dir="../shared/data/book/obj")),
    "smoke": ("a quick bounded run for CI: 1,000 samples per mesh, 150 steps",
              FitTranslationConfig(num_samples=1000, iterations=150,
                                   run=RunConfig(checkpoint_every=50, log_every=10, progress=False))),
    "ddp": ("the default on 2 Ray CPU workers (the mesh batch split between them)",
            FitTranslationConfig(ray=RayConfig(num_workers=2))),
}
