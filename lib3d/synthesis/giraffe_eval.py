"""GIRAFFE evaluation: controllability measured from per-object opacity, and a domain feature extractor for FID.

Controllability (all from :func:`lib3d.synthesis.giraffe.render_feature_image`'s per-object opacity maps
``alpha (N, K, H, W)``, rendered without training noise):

- ``translation_spearman``: an object's horizontal translation value is swept over [0, 1] (camera, codes and
  the other objects fixed); the Spearman rank correlation between the sweep value and the column of the
  object's opacity centroid is computed per scene (1: the mask moves monotonically to one side);
- ``bg_change_in_object``: changing the background codes, the mean absolute RGB change (in [0, 1] units)
  over the objects, weighted by their opacity ``a`` (upsampled to the image; ``sum a |d| / sum a``), and
  ``bg_change_in_background`` weighted by ``1 - a`` for reference;
- ``app_change_iou``: changing an object's appearance code, the soft IoU ``sum min(a, a') / sum max(a, a')``
  of its opacity maps before and after;
- ``rotation_change_in_background``: rotating an object by a quarter turn, the mean absolute RGB change
  over pixels that no object covers (opacity < 0.1 in both renders).

Domain FID: a small CNN (:class:`DomainFeatureNet`) is trained on the embedded CLEVR-like scenes' labels
(object count, presence of each shape and colour); its penultimate features replace Inception's. A domain
FID is only comparable with other domain FIDs of the same extractor, never with published FIDs.

Dimension names: N scenes / images, K objects, T sweep steps, H/W image size, D feature size.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes
from lib3d.synthesis.giraffe import GiraffeGenerator, boxes_from_values

__all__ = ["DomainFeatureNet", "controllability", "load_domain_features", "mask_centroid", "spearman",
           "train_domain_features"]


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension (average ranks for ties; NaN for constant input).

    Args:
        x, y: ``(..., T)`` float.

    Returns:
        ``(...)`` float.
    """
    check_shapes(x=(x, (..., "T")), y=(y, (..., "T")), dtype="float")

    def ranks(v):
        # average ranks: rank of each value = mean position of the values equal to it
        less = (v[..., None, :] < v[..., :, None]).sum(-1).to(v.dtype)
        equal = (v[..., None, :] == v[..., :, None]).sum(-1).to(v.dtype)
        return less + (equal - 1) / 2

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    return (rx * ry).sum(-1) / (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()


def mask_centroid(alpha: torch.Tensor) -> torch.Tensor:
    """Opacity-weighted centroid ``(row, col)`` in pixels of ``(..., H, W)`` maps -> ``(..., 2)`` (NaN if empty)."""
    check_shape("alpha", alpha, (..., None, None), dtype="float")
    h, w = alpha.shape[-2:]
    rows = torch.arange(h, dtype=alpha.dtype, device=alpha.device)
    cols = torch.arange(w, dtype=alpha.dtype, device=alpha.device)
    total = alpha.sum((-1, -2))
    r = (alpha.sum(-1) * rows).sum(-1) / total
    c = (alpha.sum(-2) * cols).sum(-1) / total
    return torch.stack((r, c), dim=-1)


def _upsample(alpha: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def controllability(generator: GiraffeGenerator, n_scenes: int = 16, n_steps: int = 8,
                    rng: torch.Generator | None = None, temperature: float = 0.65) -> dict[str, float]:
    """The controllability figures of the module docstring for object 0 of ``n_scenes`` random scenes.

    Args:
        generator: the (EMA) generator to measure.
        n_scenes: scenes per measure.
        n_steps: T, values of the translation sweep.
        rng: random generator of the scenes.
        temperature: latent-code scale (the official renders use 0.65).

    Returns:
        ``translation_spearman`` (mean over scenes of the per-scene correlation), ``translation_spearman_min``,
        ``translation_monotone_fraction`` (share of scenes with |rho| >= 0.95), ``bg_change_in_object``,
        ``bg_change_in_background``, ``app_change_iou``, ``rotation_change_in_background``,
        ``object_coverage`` (mean opacity of object 0).
    """
    g = generator
    n, k, dev = n_scenes, g.n_boxes, g._device()
    lat = g.sample_latents(n, rng, temperature)
    cams = g.sample_cameras(n, rng)
    bg = g.sample_bg_rotation(n, rng)
    # a fixed middle box for every object (the official renders' get_transformations(0.5 ...)); object 0 moves
    base_t = torch.rand(n, k, 3, generator=rng, device=dev)
    base_t[:, 0] = 0.5
    half = torch.full((n, k, 3), 0.5, device=dev)
    rot = torch.full((n, k), 0.5, device=dev)
    ex = None if g.object_count_probs is None else torch.ones(n, k, dtype=torch.bool, device=dev)
    size = g.img_size

    # 1. horizontal translation sweep: value of the second translation axis (the render script's)
    cols = []
    vals = torch.linspace(0.0, 1.0, n_steps, device=dev)
    for v in vals:  # loop over the T sweep steps (each a batched render)
        t = base_t.clone()
        t[:, 0, 1] = v
        out = g.render_features(lat, cams, boxes_from_values(g.boxes, half, t, rot), bg, return_alpha=True,
                                existence=ex)
        cols.append(mask_centroid(out.alpha[:, 0])[:, 1])
    cols = torch.stack(cols, dim=-1)  # (N, T)
    rho = spearman(vals.expand(n, n_steps).to(cols.dtype), cols)
    rho = torch.nan_to_num(rho, nan=0.0).abs()

    boxes = boxes_from_values(g.boxes, half, base_t, rot)

    def render(latents, bx):
        f = g.render_features(latents, cams, bx, bg, return_alpha=True, existence=ex)
        return g.neural_renderer(f.features), f.alpha

    img0, alpha0 = render(lat, boxes)
    cover = _upsample(alpha0, size)  # (N, K, S, S)
    any_obj = cover.amax(1)

    # 2. background code change
    lat_bg = lat._replace(shape_bg=torch.randn(lat.shape_bg.shape, generator=rng, device=dev) * temperature,
                          app_bg=torch.randn(lat.app_bg.shape, generator=rng, device=dev) * temperature)
    img_bg, _ = render(lat_bg, boxes)
    diff = (img_bg - img0).abs().mean(1)  # (N, S, S)
    a = any_obj.clamp(0, 1)
    bg_in_obj = float((a * diff).sum() / a.sum()) if float(a.sum()) > 0 else float("nan")
    bg_in_bg = float(((1 - a) * diff).sum() / (1 - a).sum())

    # 3. appearance code change of object 0
    app = lat.app_obj.clone()
    app[:, 0] = torch.randn(app[:, 0].shape, generator=rng, device=dev) * temperature
    _, alpha_app = render(lat._replace(app_obj=app), boxes)
    a0, a1 = alpha0[:, 0], alpha_app[:, 0]
    union = torch.maximum(a0, a1).sum((-1, -2))
    iou = torch.where(union > 0, torch.minimum(a0, a1).sum((-1, -2)) / union.clamp_min(1e-12), torch.ones_like(union))

    # 4. rotation of object 0 by a quarter turn
    rot2 = rot.clone()
    rot2[:, 0] = 0.75
    img_rot, alpha_rot = render(lat, boxes_from_values(g.boxes, half, base_t, rot2))
    free = (any_obj < 0.1) & (_upsample(alpha_rot, size).amax(1) < 0.1)
    rot_bg = float((img_rot - img0).abs().mean(1)[free].mean()) if bool(free.any()) else float("nan")
    return {
        "translation_spearman": float(rho.mean()),
        "translation_spearman_min": float(rho.min()),
        "translation_monotone_fraction": float((rho >= 0.95).float().mean()),
        "bg_change_in_object": bg_in_obj,
        "bg_change_in_background": bg_in_bg,
        "app_change_iou": float(iou.mean()),
        "rotation_change_in_background": rot_bg,
        "object_coverage": float(alpha0[:, 0].mean()),
    }


# ---------------------------------------------------------------------------------------------------
# Domain feature extractor
# ---------------------------------------------------------------------------------------------------
class DomainFeatureNet(torch.nn.Module):
    """A small CNN trained on the embedded scenes' labels; ``features`` are its D-dim penultimate activations.

    Four 3x3 stride-2 conv + LeakyReLU layers (32, 64, 128, 128 channels), global average pooling, a linear
    layer to D = 128 (the features), and heads for the object count and the presence of each shape / colour.

    Args:
        max_objects: largest object count (count classes 0..max_objects).
        n_shapes, n_colors: label sizes.
    """

    def __init__(self, max_objects: int = 3, n_shapes: int = 3, n_colors: int = 8, dim: int = 128) -> None:
        super().__init__()
        chans = [3, 32, 64, 128, 128]
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(a, b, 3, 2, 1) for a, b in itertools.pairwise(chans))
        self.fc = torch.nn.Linear(chans[-1], dim)
        self.count_head = torch.nn.Linear(dim, max_objects + 1)
        self.attr_head = torch.nn.Linear(dim, n_shapes + n_colors)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, D)``."""
        x = images * 2 - 1
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return F.leaky_relu(self.fc(x.mean((-1, -2))), 0.2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Count logits ``(N, max_objects + 1)`` and attribute logits ``(N, n_shapes + n_colors)``."""
        f = self.features(images)
        return self.count_head(f), self.attr_head(f)


def train_domain_features(images: torch.Tensor, counts: torch.Tensor, shapes: torch.Tensor, colors: torch.Tensor,
                          max_objects: int, steps: int = 400, batch_size: int = 64, seed: int = 0) -> DomainFeatureNet:
    """Train :class:`DomainFeatureNet` on labelled scenes (Adam 2e-3, cross-entropy + BCE).

    Args:
        images: ``(N, 3, H, W)`` float in [0, 1].
        counts: ``(N,)`` int64; shapes / colors: ``(N, K)`` int64 with -1 for empty slots.
        max_objects: K.
        steps, batch_size, seed: training schedule.

    Returns:
        the trained network in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DomainFeatureNet(max_objects)
    n_shapes, n_colors = 3, net.attr_head.out_features - 3
    attrs = torch.zeros(images.shape[0], n_shapes + n_colors)
    rows = torch.arange(images.shape[0])[:, None].expand_as(shapes)
    ok = shapes >= 0
    attrs[rows[ok], shapes[ok]] = 1.0
    attrs[rows[ok], n_shapes + colors[ok]] = 1.0
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):  # loop over optimisation steps
        idx = torch.randint(images.shape[0], (batch_size,), generator=g)
        x = images[idx]
        flip = torch.rand(batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        c_logits, a_logits = net(x)
        loss = F.cross_entropy(c_logits, counts[idx]) + F.binary_cross_entropy_with_logits(a_logits, attrs[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def load_domain_features(scenes, max_objects: int, steps: int = 400, seed: int = 0,
                         cache_dir: str | os.PathLike | None = None, tag: str = "") -> DomainFeatureNet:
    """:func:`train_domain_features` on ``scenes`` (a ``ClevrScenes``), cached under ``~/.cache/lib3d/clevr``.

    ``tag`` names the scenes (their cache key); the network is retrained when no file matches.
    """
    from safetensors.torch import load_file, save_file

    root = Path(cache_dir) if cache_dir is not None else Path(os.path.expanduser("~")) / ".cache" / "lib3d" / "clevr"
    path = root / f"domain_features_{tag}_k{max_objects}_s{steps}_seed{seed}.safetensors"
    net = DomainFeatureNet(max_objects)
    if path.exists():
        try:
            net.load_state_dict(load_file(str(path)))
            return net.eval().requires_grad_(False)
        except Exception:  # noqa: BLE001, S110 - a damaged cache file is retrained
            pass
    net = train_domain_features(scenes.image_tensor(), scenes.counts, scenes.shapes, scenes.colors, max_objects,
                                steps=steps, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return net
