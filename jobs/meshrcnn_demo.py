"""The book's Mesh R-CNN demo (``demo.py``) and its renders (``viz_demo_results.py``).

    python -m jobs.meshrcnn_demo --input appartement.JPG --output out --onlyhighest --model meshrcnn_R50.pth
    python -m jobs.meshrcnn_demo --input img.png --output out --model results/meshrcnn/<run>
    python -m jobs.meshrcnn_demo ... --dist 1.2 --elev 20 --azim 40      # the render's camera

For each kept detection ``i`` writes ``<output>/<stem>/<i>_mask_<class>_<score>.png`` (the image with the mask
and box), ``<i>_mesh_<class>_<score>.obj`` (the mesh in camera space: depth extent from the z head around
``max |dz| + 1``, the demo's convention, with ``K = (f W / 32, W / 2, H / 2)``) and
``<i>_render_<class>_<score>.png`` (soft silhouette beside soft Phong, the camera ``--dist`` (in mesh extents),
``--elev``, ``--azim`` around the mesh centre).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from configs.meshrcnn import DEMO_PRESETS, PRESETS, MeshRCNNDemoConfig
from lib3d import runtime

PIX3D_CLASSES = ("bed", "bookcase", "chair", "desk", "misc", "sofa", "table", "tool", "wardrobe")


def read_rgb(path: str) -> torch.Tensor:
    """``(3, H, W) uint8`` of an RGB image; one-line errors for a missing, unreadable, non-RGB or tiny image."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise runtime.UserError(f"--input {p}: no such file")
    try:
        with Image.open(p) as im:
            mode, size = im.mode, im.size
            arr = np.asarray(im.convert("RGB")) if mode == "RGB" else None
    except (UnidentifiedImageError, OSError) as e:
        raise runtime.UserError(f"--input {p}: not a readable image ({e})") from None
    if arr is None:
        raise runtime.UserError(f"--input {p}: expected an RGB image, got mode {mode}")
    if min(size) < 32:
        raise runtime.UserError(f"--input {p}: image of {size[0]}x{size[1]} pixels is too small (at least 32x32)")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def render_views(verts: torch.Tensor, faces: torch.Tensor, dist: float, elev: float, azim: float,
                 size: int) -> torch.Tensor:
    """Soft silhouette and soft Phong renders ``(size, 2 size, 3)`` of a mesh centred and scaled to unit extent."""
    from lib3d.geometry import FoVPerspectiveCameras, look_at_view_transform
    from lib3d.render import BlendParams, PointLights, RasterizationSettings, render_mesh
    from lib3d.structures import Meshes
    from lib3d.structures.textures import TexturesVertex

    v = verts - (verts.max(0).values + verts.min(0).values) / 2
    v = v / (v.max(0).values - v.min(0).values).max().clamp(min=1e-6)
    mesh = Meshes([v], [faces], textures=TexturesVertex([torch.full_like(v, 0.8)]))
    R, T = look_at_view_transform(dist * 2.0, elev, azim + 180.0)
    cams = FoVPerspectiveCameras(R=R, T=T)
    sigma = 1e-4
    sil = render_mesh(mesh, cams, raster_settings=RasterizationSettings(
        image_size=size, blur_radius=float(np.log(1.0 / 1e-4 - 1.0)) * sigma, faces_per_pixel=20),
        shader="soft_silhouette", blend_params=BlendParams(sigma=sigma))
    phong = render_mesh(mesh, cams, PointLights(location=[[0.0, 2.0, -3.0]]),
                        raster_settings=RasterizationSettings(image_size=size, faces_per_pixel=1), shader="soft_phong",
                        blend_params=BlendParams(sigma=1e-4, gamma=1e-4, background_color=(1.0, 1.0, 1.0)))
    return torch.cat([sil[0, ..., 3:].expand(-1, -1, 3), phong[0, ..., :3]], 1).clamp(0, 1)


def main(args: list[str] | None = None) -> list[str]:
    config: MeshRCNNDemoConfig = runtime.cli(DEMO_PRESETS, description=__doc__, args=args)
    from lib3d.data.furniture import CATEGORIES
    from lib3d.detect import predictions_to_camera
    from lib3d.io.images import save_image
    from lib3d.io.obj import save_obj
    from lib3d.systems.meshrcnn import draw_detections, model_from_run

    if not config.model:
        raise runtime.UserError("--model is required (a jobs.meshrcnn run directory or meshrcnn_R50.pth)")
    if config.preset not in PRESETS:
        raise runtime.UserError(f"--preset must be one of {sorted(PRESETS)}, got {config.preset!r}")
    image = read_rgb(config.input)
    device = torch.device("cuda" if config.use_gpu else "cpu")
    model, _ = model_from_run(config.model, PRESETS[config.preset][1].model, config.num_classes, device)
    names = config.class_names or (CATEGORIES if model.config.num_classes == len(CATEGORIES) else PIX3D_CLASSES)
    if len(names) != model.config.num_classes:
        raise runtime.UserError(f"--class-names must name {model.config.num_classes} classes, got {len(names)}")
    with torch.no_grad():
        pred = model((image.float() / 255.0)[None].to(device))[0]
    pred = type(pred)(*[(x.cpu() if torch.is_tensor(x) else x) for x in pred])
    if pred.meshes is not None:
        pred = pred._replace(meshes=[(v.cpu(), f.cpu()) for v, f in pred.meshes])
    h, w = image.shape[1:]
    focal = w / 32.0 * config.focal_length
    K = torch.tensor([focal, w / 2.0, h / 2.0])
    cam = predictions_to_camera(pred, K) if pred.meshes is not None and pred.z is not None else []
    if pred.scores.numel() == 0:
        ids = []
    elif config.onlyhighest:
        ids = [int(pred.scores.argmax())]
    else:
        ids = [int(i) for i in torch.nonzero(pred.scores >= config.score_thresh)[:, 0]]
    out = Path(config.output) / Path(config.input).stem
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in ids:
        name, score = names[int(pred.classes[i])], float(pred.scores[i])
        one = type(pred)(pred.boxes[i:i + 1], pred.scores[i:i + 1] * 0 + 1, pred.classes[i:i + 1],
                         None if pred.masks is None else pred.masks[i:i + 1])
        f = out / f"{i}_mask_{name}_{score:.3f}.png"
        save_image(f, draw_detections(image, one, 0.0))
        written.append(str(f))
        if cam:
            v, faces = cam[i]
            f = out / f"{i}_mesh_{name}_{score:.3f}.obj"
            save_obj(f, v, faces)
            written.append(str(f))
            f = out / f"{i}_render_{name}_{score:.3f}.png"
            save_image(f, render_views(v, faces, config.dist, config.elev, config.azim, config.render_size))
            written.append(str(f))
    print(f"[meshrcnn_demo] {len(ids)} detection(s); wrote {len(written)} files to {out}", flush=True)
    return written


if __name__ == "__main__":
    runtime.run_main(main)
