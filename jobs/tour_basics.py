"""Chapter 1-2 tour: heterogeneous mesh batches and a batch of perspective cameras.

``python -m jobs.tour_basics`` (embedded primitives) or ``python -m jobs.tour_basics book`` (the book's files).
Prints what the book prints (the list, padded and packed views of a batch of three meshes; the world-to-view
and world-to-screen coordinates of a cube seen by 8 cameras) and draws the projected cubes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from configs.tour_basics import PRESETS, TourBasicsConfig
from lib3d import runtime
from lib3d.data import primitives
from lib3d.geometry import PerspectiveCameras, euler_angles_to_matrix
from lib3d.structures import Meshes


def load_batch(book_dir: str | None) -> tuple[Meshes, torch.Tensor]:
    """The chapter-2 batch (cube, diamond, dodecahedron) and the chapter-1 camera cube's vertices."""
    if book_dir is None:
        shapes = [primitives.cube(), primitives.octahedron(), primitives.dodecahedron()]
        cube_verts = primitives.cube(size=100.0)[0] + torch.tensor([0.0, 0.0, 15.0])
        cube_verts[:, 2] = torch.where(cube_verts[:, 2] > 15, 20.0, 10.0)  # the book's flat 100 x 100 x 10 box
        return Meshes([v for v, _ in shapes], [f for _, f in shapes]), cube_verts
    from lib3d.io import load_obj

    root = Path(book_dir)
    verts, faces = [], []
    for name in ("cube", "diamond", "dodecahedron"):
        v, f, _ = load_obj(root / "obj" / f"{name}.obj", load_textures=False)
        verts.append(v)
        faces.append(f.verts_idx)
    cube_verts, _, _ = load_obj(root / "obj" / "camera_cube.obj", load_textures=False)
    return Meshes(verts, faces), cube_verts


def book_cameras(config: TourBasicsConfig) -> PerspectiveCameras:
    """The chapter-1 cameras: R from extrinsic 'zyx' Euler angles (5n, n, n) degrees, T = (n, 0, 0), n = -4..3.

    SciPy's ``Rotation.from_euler('zyx', (a, b, c))`` is ``Rx(c) @ Ry(b) @ Rz(a)``, i.e. lib3d's
    ``euler_angles_to_matrix((c, b, a), "XYZ")``.
    """
    n = torch.arange(-4, 4, dtype=torch.float32)
    angles = torch.deg2rad(torch.stack([n, n, 5 * n], 1))
    R = euler_angles_to_matrix(angles, "XYZ")
    T = torch.stack([n, torch.zeros_like(n), torch.zeros_like(n)], 1)
    return PerspectiveCameras(
        focal_length=torch.tensor([config.focal_length]).expand(8, 2),
        principal_point=torch.tensor([config.principal_point]).expand(8, 2),
        in_ndc=False, image_size=torch.tensor([[config.image_height, config.image_width]]).expand(8, 2),
        R=R, T=T)


def draw_projections(points: torch.Tensor, height: int, width: int):
    """Draw each camera's projected cube vertices (C, P, 2 pixels) as coloured dots on one image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    colors = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (166, 86, 40),
              (247, 129, 191), (90, 90, 90)]
    for c, pts in enumerate(points.tolist()):
        for x, y in pts:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colors[c % len(colors)])
    return img


def main(config: TourBasicsConfig | None = None) -> dict:
    config = config or runtime.cli(PRESETS, description=__doc__)
    run = runtime.start_run("tour_basics", config)
    meshes, cube_verts = load_batch(config.book_dir)
    torch.set_printoptions(precision=3, sci_mode=False)
    print(f"\n{meshes}")
    print("verts_list shapes:   ", [tuple(v.shape) for v in meshes.verts_list()])
    print("verts_padded shape:  ", tuple(meshes.verts_padded().shape))
    print("verts_packed shape:  ", tuple(meshes.verts_packed().shape))
    print("faces_packed shape:  ", tuple(meshes.faces_packed().shape))
    print("num_verts_per_mesh:  ", meshes.num_verts_per_mesh().tolist())
    print("verts_packed_to_mesh_idx:", meshes.verts_packed_to_mesh_idx().tolist())

    cameras = book_cameras(config)
    world_to_view = cameras.get_world_to_view_transform().transform_points(cube_verts)
    world_to_ndc_or_screen = cameras.get_full_projection_transform().transform_points(cube_verts)
    world_to_screen = cameras.transform_points_screen(cube_verts)
    print(f"\ncamera centres (C, 3):\n{cameras.get_camera_center()}")
    print(f"cube in view space of camera 0 (P, 3):\n{world_to_view[0]}")
    print(f"cube after the full projection transform of camera 0 (the book's world_to_screen):\n"
          f"{world_to_ndc_or_screen[0]}")
    print(f"cube in screen pixels of camera 0 (transform_points_screen):\n{world_to_screen[0]}")
    path = run.dir / "projections.png"
    draw_projections(world_to_screen[..., :2], config.image_height, config.image_width).save(path)
    metrics = {
        "num_meshes": len(meshes),
        "verts_per_mesh": meshes.num_verts_per_mesh().tolist(),
        "screen_x_range": [float(world_to_screen[..., 0].min()), float(world_to_screen[..., 0].max())],
        "screen_y_range": [float(world_to_screen[..., 1].min()), float(world_to_screen[..., 1].max())],
    }
    run.write_metrics(metrics)
    print(f"\nwrote {path}")
    run.close()
    return metrics


if __name__ == "__main__":
    main()
