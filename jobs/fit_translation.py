"""Chapter 2: recover the translation of a heterogeneous mesh batch from noisy points by Chamfer distance.

    python -m jobs.fit_translation                 # lib3d's embedded cube / octahedron / dodecahedron
    python -m jobs.fit_translation book            # the book's OBJ files (../shared/data/book/obj)
    python -m jobs.fit_translation --mesh-dir DIR  # any folder with cube.obj, diamond.obj, dodecahedron.obj
    python -m jobs.fit_translation ddp             # 2 Ray workers, the mesh batch split between them
    python -m jobs.fit_translation smoke           # a quick bounded run

Writes ``results/fit_translation/<run>/``: config, TensorBoard scalars (chamfer, translation, error),
checkpoints of the translation (resumable) and ``metrics.json`` (recovered translation, max error).
"""

from __future__ import annotations

from configs.fit_translation import PRESETS
from lib3d import runtime
from lib3d.systems.mesh_fitting import TranslationFitSystem


def main(args: list[str] | None = None) -> runtime.FitResult:
    config = runtime.cli(PRESETS, description=__doc__, args=args)
    return runtime.train(TranslationFitSystem(), config)


if __name__ == "__main__":
    runtime.run_main(main)
