"""Config of ``python -m jobs.tour_basics``: the book's chapter 1-2 tour of meshes, batches and cameras."""

from __future__ import annotations

import dataclasses

from lib3d.runtime import RunConfig


@dataclasses.dataclass(frozen=True)
class TourBasicsConfig:
    """Load three meshes as a heterogeneous batch, print its list/padded/packed views, and project a cube
    through a batch of 8 perspective cameras (the book's chapter-1 camera example)."""

    book_dir: str | None = None
    """The book's asset folder (with ``obj/cube.obj``, ``obj/diamond.obj``, ``obj/dodecahedron.obj``,
    ``obj/camera_cube.obj`` and ``ply/cube.ply``). None: lib3d's embedded primitives."""
    image_height: int = 512
    """Height of the chapter-1 camera's image in pixels (the book: 512)."""
    image_width: int = 1024
    """Width of the chapter-1 camera's image in pixels (the book: 1024)."""
    focal_length: tuple[float, float] = (1200.0, 300.0)
    """Focal lengths (fx, fy) in pixels (the book: 1200, 300)."""
    principal_point: tuple[float, float] = (512.0, 256.0)
    """Principal point (px, py) in pixels (the book: 512, 256)."""
    run: RunConfig = RunConfig(progress=False)
    """Run directory (the projected cubes are drawn into ``projections.png``)."""


PRESETS: dict[str, tuple[str, TourBasicsConfig]] = {
    "default": ("the embedded primitives (no files needed)", TourBasicsConfig()),
    "book": ("the book's files from ../shared/data/book", TourBasicsConfig(book_dir="../shared/data/book")),
}
