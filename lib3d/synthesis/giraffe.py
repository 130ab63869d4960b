"""GIRAFFE: compositional generative neural feature fields (Niemeyer & Geiger, CVPR 2021; book ch. 7).

A scene is ``K`` objects and a background, each a neural *feature field* ``h(x, d, z_shape, z_app) ->
(sigma, f)`` (density and a ``C``-dim feature). Each object lives in its own box (scale, translation,
rotation about the up axis); the fields are composed (densities summed, features averaged by density),
volume-rendered into a small feature image and upsampled to RGB by a 2D neural renderer.

Dimension names used below:

- ``N``: batch (scenes); ``K``: objects (boxes) per scene;
- ``H, W``: feature-image height and width (``res`` x ``res``, 16 in the paper); ``R = H * W`` rays;
- ``S``: samples per ray (64 in the paper); ``M``: packed samples (those inside an object's box);
- ``C``: feature channels (128); ``Z``: latent-code size; ``E``: positional-encoding width;
- ``Ho, Wo``: output image size.

Conventions (the official code's, so that official checkpoints render the same images):

- world coordinates are z-up; a camera sits at ``radius * (sin(phi) cos(theta), sin(phi) sin(theta),
  cos(phi))`` with ``theta = 2 pi u``, ``phi = arccos(1 - 2 v)`` and looks at the origin; ``cam2world``
  is ``(N, 4, 4)`` with columns ``x, y, z, position`` and the camera looks along its ``-z`` (OpenGL);
- pixel ``(row, col)`` of a ``res`` x ``res`` image is the image-plane point ``x = -1 + 2 col / (res - 1)``,
  ``y = 1 - 2 row / (res - 1)`` at view depth 1 (the corners, not the centres, sit at +-1), with focal
  length ``1 / tan(fov / 2)``; ray directions are not normalised (their view-space depth is 1), so sample
  depths ``t`` in ``depth_range`` are view depths and intervals are scaled by ``|d|``;
- a box maps world points to its local coordinates as ``p_box = R (p - t) / s`` (R a rotation by
  ``2 pi r`` about z); points with any ``|p_box| > 1.1`` have zero object density;
- images are channel-first ``(N, 3, Ho, Wo)`` in [0, 1] (the GAN side), latent codes ``N(0, 1)``.

Composition (paper eq. 6): ``sigma = sum_k sigma_k``, ``f = sum_k sigma_k f_k / sigma`` (``sigma = 0``
counts as ``1e-4``); volume rendering (eq. 7-8) uses ``lib3d.render.render_weight_from_density``:
``alpha_s = 1 - exp(-sigma_s delta_s)``, ``w_s = alpha_s prod_{j<s} (1 - alpha_j)``, ``f = sum_s w_s f_s``,
the last interval ``1e10`` long.

Cameras, boxes and latent codes live in ``lib3d.synthesis.giraffe_scene`` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from lib3d._checks import check_shape, check_shapes, check_tensor
from lib3d.render import accumulate_along_rays, jiggle_within_stratas, render_weight_from_density
from lib3d.synthesis.giraffe_scene import (
    Boxes,
    BoxRanges,
    CameraRanges,
    Latents,
    _lerp_range,
    boxes_from_values,
    camera_poses,
    camera_rays,
    interpolate_sphere,
    sample_boxes,
    sample_camera_poses,
    sample_latents,
    sample_object_existence,
    world_to_box,
    z_rotation,
)

__all__ = [
    "BoxRanges",
    "Boxes",
    "CameraRanges",
    "FeatureField",
    "FeatureRender",
    "GiraffeGenerator",
    "Latents",
    "NeuralRenderer",
    "blur_121",
    "boxes_from_values",
    "camera_poses",
    "camera_rays",
    "composite",
    "interpolate_sphere",
    "positional_encoding",
    "render_feature_image",
    "sample_boxes",
    "sample_camera_poses",
    "sample_latents",
    "sample_object_existence",
    "world_to_box",
    "z_rotation",
]

# Points up to this far outside a box's [-1, 1]^3 still get object density (the official padding, 0.1).
BOX_PADDING = 0.1
# Stand-in for the infinite last interval of each ray.
LAST_INTERVAL = 1e10


# ----------------------------------------------------------------------------------------------------
# Encodings and small pieces
# ----------------------------------------------------------------------------------------------------
def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """GIRAFFE's positional encoding ``[sin(2^0 pi x), cos(2^0 pi x), sin(2^1 pi x), cos(2^1 pi x), ...]``.

    Layout (the official one, which official weights expect): per frequency ``l`` a block
    ``[sin(2^l pi x_0..x_{D-1}), cos(2^l pi x_0..x_{D-1})]``; blocks in increasing ``l``.

    Args:
        x: ``(..., D)`` float.
        n_freqs: number of frequencies ``L``.

    Returns:
        ``(..., 2 D L)`` float.

    Example:
        >>> positional_encoding(torch.tensor([[0.5]]), 2)   # [sin(pi/2), cos(pi/2), sin(pi), cos(pi)]
        tensor([[ 1.0000e+00, -4.3711e-08, -8.7423e-08, -1.0000e+00]])
    """
    check_shape("x", x, (..., None), dtype="float")
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
    arg = x[..., None, :] * freqs[:, None]  # (..., L, D)
    return torch.cat((arg.sin(), arg.cos()), dim=-1).reshape(*x.shape[:-1], 2 * n_freqs * x.shape[-1])


def blur_121(x: torch.Tensor) -> torch.Tensor:
    """The ``[1, 2, 1] x [1, 2, 1] / 16`` blur of each channel with reflected borders (official ``Blur``).

    Args:
        x: ``(N, C, H, W)`` float.

    Returns:
        ``(N, C, H, W)`` float.
    """
    check_shape("x", x, (None, None, None, None), dtype="float")
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])


# ----------------------------------------------------------------------------------------------------
# Feature fields
# ----------------------------------------------------------------------------------------------------
class FeatureField(torch.nn.Module):
    """An object or background feature field (the official ``Decoder``; same parameter names).

    ``h = relu(fc_in(enc(p / downscale)) + fc_z(z_shape))``, then ``n_blocks - 1`` layers
    ``h = relu(blocks[i](h))`` (after layer ``i`` with ``i + 1`` in ``skips``:
    ``h += fc_z_skips(z_shape) + fc_p_skips(enc(p))``); ``sigma = sigma_out(h)``;
    ``f = feat_out(relu(feat_view(h) + fc_z_view(z_app) + fc_view(enc_d(d / |d|))))``.

    Args:
        z_dim: latent size ``Z`` (shape and appearance codes each).
        hidden_size: width (128 objects, 64 background in the paper).
        n_blocks: linear layers before the density head (8 objects, 4 background).
        skips: layers after which the latent code and the encoded point are added again ((4,); () for bg).
        n_freq_posenc: frequencies of the point encoding (10).
        n_freq_posenc_views: frequencies of the direction encoding (4).
        rgb_out_dim: feature channels ``C`` (128; 256 for the 256-px presets).
        downscale_p_by: points are divided by this before encoding (2 objects, 12 background).
        final_sigmoid_activation: sigmoid on the features.

    Example:
        >>> field = FeatureField(z_dim=256)
        >>> feats, sigma = field(torch.rand(2, 100, 3), torch.randn(2, 100, 3), torch.randn(2, 256),
        ...                      torch.randn(2, 256))   # (2, 100, 128), (2, 100)
    """

    def __init__(self, z_dim: int = 64, hidden_size: int = 128, n_blocks: int = 8, skips: Sequence[int] = (4,),
                 n_freq_posenc: int = 10, n_freq_posenc_views: int = 4, rgb_out_dim: int = 128,
                 downscale_p_by: float = 2.0, final_sigmoid_activation: bool = False) -> None:
        super().__init__()
        if z_dim <= 0 or n_blocks < 1:
            raise ValueError(f"z_dim and n_blocks must be positive, got {z_dim} and {n_blocks}")
        self.z_dim, self.n_blocks, self.skips = z_dim, n_blocks, tuple(skips)
        self.n_freq_posenc, self.n_freq_posenc_views = n_freq_posenc, n_freq_posenc_views
        self.downscale_p_by, self.final_sigmoid_activation = downscale_p_by, final_sigmoid_activation
        dim_embed, dim_embed_view = 6 * n_freq_posenc, 6 * n_freq_posenc_views
        lin = torch.nn.Linear
        self.fc_in = lin(dim_embed, hidden_size)
        self.fc_z = lin(z_dim, hidden_size)
        self.blocks = torch.nn.ModuleList([lin(hidden_size, hidden_size) for _ in range(n_blocks - 1)])
        # the official code adds a skip after layer i when i + 1 is in skips and i is not the last layer
        self._skip_after = [i for i in range(n_blocks - 1) if (i + 1) in self.skips and i < n_blocks - 2]
        n_skips = sum(i in self.skips for i in range(n_blocks - 1))
        if n_skips > 0:
            self.fc_z_skips = torch.nn.ModuleList([lin(z_dim, hidden_size) for _ in range(n_skips)])
            self.fc_p_skips = torch.nn.ModuleList([lin(dim_embed, hidden_size) for _ in range(n_skips)])
        self.sigma_out = lin(hidden_size, 1)
        self.fc_z_view = lin(z_dim, hidden_size)
        self.feat_view = lin(hidden_size, hidden_size)
        self.fc_view = lin(dim_embed_view, hidden_size)
        self.feat_out = lin(hidden_size, rgb_out_dim)

    @property
    def out_dim(self) -> int:
        """Feature channels ``C``."""
        return self.feat_out.out_features

    def latent_terms(self, z_shape: torch.Tensor, z_app: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-scene additive terms ``(fc_z(z_shape), fc_z_skips[i](z_shape)..., fc_z_view(z_app))``, each (N, hidden)."""
        skips = tuple(self.fc_z_skips[i](z_shape) for i in range(len(self._skip_after)))
        return (self.fc_z(z_shape),) + skips + (self.fc_z_view(z_app),)

    def view_term(self, directions: torch.Tensor) -> torch.Tensor:
        """``fc_view(enc_d(d / |d|))``: ``(..., 3)`` -> ``(..., hidden)`` (constant along a ray)."""
        d = directions / torch.linalg.norm(directions, dim=-1, keepdim=True)
        return self.fc_view(positional_encoding(d, self.n_freq_posenc_views))

    def evaluate(self, points: torch.Tensor, terms: Sequence[torch.Tensor], view: torch.Tensor,
                 project: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The field at points, given precomputed latent and view terms broadcastable to ``(..., hidden)``.

        Args:
            points: ``(..., 3)`` float in the field's frame (before ``downscale_p_by``).
            terms: ``latent_terms(...)``, each broadcastable to ``(..., hidden)``.
            view: ``view_term(...)`` broadcastable to ``(..., hidden)``.
            project: apply the last linear layer ``feat_out``; when False the features are the ``(..., hidden)``
                activations before it (weighted sums of them can be projected later with :meth:`project`,
                since ``feat_out`` is affine; not with ``final_sigmoid_activation``).

        Returns:
            ``(features (..., C) or (..., hidden), sigma (...))``, sigma before any activation.
        """
        enc = positional_encoding(points / self.downscale_p_by, self.n_freq_posenc)
        net = F.relu(self.fc_in(enc) + terms[0])
        skip = 0
        for i, layer in enumerate(self.blocks):
            net = F.relu(layer(net))
            if skip < len(self._skip_after) and i == self._skip_after[skip]:
                net = net + terms[1 + skip] + self.fc_p_skips[skip](enc)
                skip += 1
        sigma = self.sigma_out(net)[..., 0]
        net = F.relu(self.feat_view(net) + terms[-1] + view)
        if not project:
            return net, sigma
        feat = self.feat_out(net)
        return (torch.sigmoid(feat) if self.final_sigmoid_activation else feat), sigma

    def project(self, hidden_sum: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
        """``sum_s c_s feat_out(h_s) = W (sum_s c_s h_s) + b sum_s c_s``: ``(..., hidden)``, ``(..., 1)`` -> ``(..., C)``."""
        if self.final_sigmoid_activation:
            raise ValueError("project needs an affine last layer (final_sigmoid_activation=False)")
        return F.linear(hidden_sum, self.feat_out.weight) + weight_sum * self.feat_out.bias

    def forward(self, points: torch.Tensor, directions: torch.Tensor, z_shape: torch.Tensor,
                z_app: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official decoder call: ``points (N, P, 3)``, ``directions (N, P, 3)``, codes ``(N, Z)`` ->
        ``(features (N, P, C), sigma (N, P))``."""
        check_shapes(points=(points, ("N", "P", 3)), directions=(directions, ("N", "P", 3)),
                     z_shape=(z_shape, ("N", self.z_dim)), z_app=(z_app, ("N", self.z_dim)), dtype="float")
        terms = [t[:, None] for t in self.latent_terms(z_shape, z_app)]
        return self.evaluate(points, terms, self.view_term(directions))


# ----------------------------------------------------------------------------------------------------
# Composition and feature volume rendering
# ----------------------------------------------------------------------------------------------------
def composite(sigmas: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The composition operator: densities summed, features averaged by density (paper eq. 6).

    ``sigma = sum_k sigma_k``; ``f = sum_k sigma_k f_k / sigma`` (where ``sigma == 0`` the denominator is
    ``1e-4``, so ``f = 0`` there, as in the official code).

    Args:
        sigmas: ``(K, ...)`` float non-negative densities of the ``K`` fields.
        features: ``(K, ..., C)`` float.

    Returns:
        ``(sigma (...), features (..., C))``.

    Example:
        >>> composite(torch.tensor([[1.0], [3.0]]), torch.tensor([[[4.0]], [[8.0]]]))   # 4, (1*4 + 3*8)/4 = 7
        (tensor([4.]), tensor([[7.]]))
    """
    check_tensor("sigmas", sigmas, dtype="float")
    check_shape("features", features, tuple(sigmas.shape) + (None,), dtype="float")
    total = sigmas.sum(0)
    denom = torch.where(total == 0, torch.full_like(total, 1e-4), total)
    return total, (features * (sigmas / denom)[..., None]).sum(0)


class FeatureRender(NamedTuple):
    """Result of :func:`render_feature_image`.

    Attributes:
        features: ``(N, C, H, W)`` float feature image.
        alpha: ``(N, K, H, W)`` float per-object opacity (each object rendered alone, last interval 0),
            or None when not asked for.
    """

    features: torch.Tensor
    alpha: torch.Tensor | None


def render_feature_image(object_field: FeatureField, background_field: FeatureField | None, latents: Latents,
                         cam2world: torch.Tensor, boxes: Boxes, bg_rotation: torch.Tensor, *, fov: float,
                         resolution: int = 16, n_samples: int = 64, depth_range: Sequence[float] = (0.5, 6.0),
                         training: bool = False, existence: torch.Tensor | None = None,
                         render_objects: bool = True, render_background: bool = True, return_alpha: bool = False,
                         sparse: bool = True, generator: torch.Generator | None = None) -> FeatureRender:
    """Volume-render the composed feature fields of ``N`` scenes into ``res`` x ``res`` feature images.

    Samples ``t`` are ``S`` evenly spaced view depths in ``depth_range`` (jittered within their strata when
    ``training``, and unit Gaussian noise is added to every density, as the official code does). The
    background field sees points rotated by ``bg_rotation``; object ``k`` sees ``world_to_box(p, boxes, k)``
    and has zero density outside its padded box. Densities pass a ReLU, are composed with
    :func:`composite` and rendered with ``render_weight_from_density`` / ``accumulate_along_rays``.

    ``sparse=True`` (the default) evaluates each object field only at the samples inside its box and
    accumulates ``w_s sigma_k,s / sigma_s f_k,s`` straight into the rays (the same numbers as composing
    dense tensors, without materialising ``(K, N, R, S, C)``); ``sparse=False`` is the dense reference.

    Args:
        object_field: field of the objects (shared by all ``K``).
        background_field: field of the background, or None.
        latents: codes with ``shape_obj/app_obj (N, K, Z)``, ``shape_bg/app_bg (N, Zb)``.
        cam2world: ``(N, 4, 4)`` float camera poses.
        boxes: ``K`` boxes per scene.
        bg_rotation: ``(N, 3, 3)`` float.
        fov: field of view (degrees).
        resolution: ``res``.
        n_samples: ``S``.
        depth_range: ``(near, far)`` view depths.
        training: jitter depths and add density noise.
        existence: ``(N, K)`` bool, objects absent where False (None: all present).
        render_objects / render_background: leave out the objects or the background.
        return_alpha: also return each object's opacity map.
        sparse: evaluate objects only inside their boxes (see above).
        generator: random generator of the jitter and noise.

    Returns:
        ``FeatureRender(features (N, C, H, W), alpha (N, K, H, W) or None)``.
    """
    sizes = check_shapes(cam2world=(cam2world, ("N", 4, 4)), bg_rotation=(bg_rotation, ("N", 3, 3)),
                         shape_obj=(latents.shape_obj, ("N", "K", None)), app_obj=(latents.app_obj, ("N", "K", None)),
                         scale=(boxes.scale, ("N", "K", 3)), translation=(boxes.translation, ("N", "K", 3)),
                         rotation=(boxes.rotation, ("N", "K", 3, 3)), dtype="float")
    if existence is not None:
        check_shape("existence", existence, (sizes["N"], sizes["K"]), dtype="bool")
    if not (render_objects or render_background) or (render_background and background_field is None):
        raise ValueError("render_feature_image needs the objects or a background field to render")
    n, k_boxes = sizes["N"], sizes["K"]
    dev, dt = cam2world.device, cam2world.dtype
    s, r = n_samples, resolution * resolution
    origins, dirs = camera_rays(cam2world, fov, resolution)  # (N, R, 3)
    t = torch.linspace(depth_range[0], depth_range[1], s, device=dev, dtype=dt).expand(n, r, s)
    if training:
        t = jiggle_within_stratas(t, generator=generator)
    ray_len = torch.linalg.norm(dirs, dim=-1, keepdim=True)  # (N, R, 1)
    t_last = t[..., -1:]
    t_ends = torch.cat((t[..., 1:], t_last + LAST_INTERVAL), dim=-1)

    def noise(x):
        return x + torch.randn(x.shape, generator=generator, device=dev, dtype=dt) if training else x

    # Background: dense over every sample
    sig_list, feat_list = [], []
    if render_background:
        bg_o = origins @ bg_rotation.transpose(1, 2)
        bg_d = dirs @ bg_rotation.transpose(1, 2)
        pts = bg_o[:, :, None] + t[..., None] * bg_d[:, :, None]  # (N, R, S, 3)
        terms = [x[:, None, None] for x in background_field.latent_terms(latents.shape_bg, latents.app_bg)]
        feat_bg, sig_bg = background_field.evaluate(pts, terms, background_field.view_term(bg_d)[:, :, None],
                                                    project=not sparse)
        sig_list.append(F.relu(noise(sig_bg)))
        feat_list.append(feat_bg)

    # Objects: points inside the padded box only
    packed = []  # per object: (flat sample index (M,), ray index (M,), features (M, C)) for the sparse path
    if render_objects:
        terms_all = object_field.latent_terms(latents.shape_obj.reshape(n * k_boxes, -1),
                                              latents.app_obj.reshape(n * k_boxes, -1))
        terms_all = [x.reshape(n, k_boxes, -1) for x in terms_all]
        for k in range(k_boxes):
            o_k = world_to_box(origins, boxes, k)
            d_k = world_to_box(origins + dirs, boxes, k) - o_k  # box-frame directions (N, R, 3)
            pts = o_k[:, :, None] + t[..., None] * d_k[:, :, None]  # (N, R, S, 3)
            inside = (pts.abs() <= 1.0 + BOX_PADDING).all(-1)
            if existence is not None:
                inside = inside & existence[:, k, None, None]
            view = object_field.view_term(d_k)  # (N, R, hidden)
            if sparse:
                idx = inside.reshape(-1).nonzero()[:, 0]  # (M,)
                batch_idx, ray_idx = idx // (r * s), idx // s
                terms = [x[:, k][batch_idx] for x in terms_all]
                feat_k, sig_k = object_field.evaluate(pts.reshape(-1, 3)[idx], terms, view.reshape(n * r, -1)[ray_idx],
                                                      project=False)
                sig_k = F.relu(noise(sig_k))
                sig_dense = torch.zeros(n * r * s, device=dev, dtype=sig_k.dtype).index_put((idx,), sig_k)
                sig_list.append(sig_dense.reshape(n, r, s))
                packed.append((idx, ray_idx, feat_k))
            else:
                terms = [x[:, k, None, None] for x in terms_all]
                feat_k, sig_k = object_field.evaluate(pts, terms, view[:, :, None])
                sig_list.append(F.relu(noise(sig_k)) * inside)
                feat_list.append(feat_k)

    sigmas = torch.stack(sig_list)  # (F, N, R, S): background first, then objects
    if sparse:
        total = sigmas.sum(0)
    else:
        total, feat = composite(sigmas, torch.stack(feat_list))
    weights, _, _ = render_weight_from_density(t * ray_len, t_ends * ray_len, total)
    if sparse:
        # sum_s w_s sum_k (sigma_k,s / sigma_s) feat_out_k(h_k,s): accumulate each field's last hidden layer
        # along the rays with the weights c_k,s = w_s sigma_k,s / sigma_s, then project once per ray
        denom = torch.where(total == 0, torch.full_like(total, 1e-4), total)
        coef = weights / denom  # w_s / sigma_s
        feat_rays = 0.0
        if render_background:
            c_bg = coef * sigmas[0]
            feat_rays = background_field.project(accumulate_along_rays(c_bg, feat_list[0]), accumulate_along_rays(c_bg))
        if packed:
            h_sum = torch.zeros(n * r, packed[0][2].shape[-1], device=dev, dtype=dt)
            c_sum = torch.zeros(n * r, device=dev, dtype=dt)
            for j, (idx, ray_idx, hid_k) in enumerate(packed):
                c_k = coef.reshape(-1)[idx] * sigmas[j + int(render_background)].reshape(-1)[idx]
                h_sum = h_sum.index_add(0, ray_idx, c_k[:, None] * hid_k)
                c_sum = c_sum.index_add(0, ray_idx, c_k)
            feat_rays = feat_rays + object_field.project(h_sum, c_sum[:, None]).reshape(n, r, -1)
    else:
        feat_rays = accumulate_along_rays(weights, feat)
    features = feat_rays.transpose(1, 2).reshape(n, -1, resolution, resolution)

    alpha = None
    if return_alpha and render_objects:
        obj = sigmas[int(render_background):]  # (K, N, R, S)
        t_ends0 = torch.cat((t[..., 1:], t_last), dim=-1)
        w_obj, _, _ = render_weight_from_density((t * ray_len).expand_as(obj), (t_ends0 * ray_len).expand_as(obj), obj)
        alpha = accumulate_along_rays(w_obj)[..., 0].permute(1, 0, 2).reshape(n, k_boxes, resolution, resolution)
    return FeatureRender(features, alpha)


# ----------------------------------------------------------------------------------------------------
# Neural renderer
# ----------------------------------------------------------------------------------------------------
class NeuralRenderer(torch.nn.Module):
    """2D neural renderer: feature image -> RGB image (the official ``NeuralRenderer``; same names).

    ``log2(img_size) - 4`` blocks of nearest-neighbour x2 upsampling + 3x3 conv + LeakyReLU(0.2), halving
    the channels down to ``min_feat``; RGB skips: ``rgb = up(conv_rgb[0](x))``, after block ``i``
    ``rgb += conv_rgb[i + 1](h)`` and, except after the last block, ``rgb = up(rgb)`` where ``up`` is
    bilinear x2 followed by :func:`blur_121`; a final sigmoid.

    Args:
        n_feat: channels after ``conv_in`` (a 1x1 conv, identity when ``n_feat == input_dim``).
        input_dim: feature channels ``C`` of the input.
        out_dim: output channels (3).
        min_feat: fewest channels of a block.
        img_size: output size (64 or 256); the input is 16 x 16.
        final_actvn: apply the sigmoid.
    """

    def __init__(self, n_feat: int = 128, input_dim: int = 128, out_dim: int = 3, min_feat: int = 32,
                 img_size: int = 64, final_actvn: bool = True) -> None:
        super().__init__()
        n_blocks = int(math.log2(img_size) - 4)
        if n_blocks < 1 or 2 ** (n_blocks + 4) != img_size:
            raise ValueError(f"img_size must be a power of two >= 32, got {img_size}")
        self.final_actvn = final_actvn
        self.conv_in = torch.nn.Identity() if n_feat == input_dim else torch.nn.Conv2d(input_dim, n_feat, 1)
        widths = [n_feat] + [max(n_feat // 2 ** (i + 1), min_feat) for i in range(n_blocks)]
        self.conv_layers = torch.nn.ModuleList(
            [torch.nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1) for i in range(n_blocks)])
        self.conv_rgb = torch.nn.ModuleList([torch.nn.Conv2d(input_dim, out_dim, 3, 1, 1)]
                                            + [torch.nn.Conv2d(widths[i + 1], out_dim, 3, 1, 1) for i in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` features -> ``(N, out_dim, H * 2^blocks, W * 2^blocks)`` images."""
        check_shape("x", x, (None, self.conv_rgb[0].in_channels, None, None), dtype="float")

        def up_rgb(y):
            return blur_121(F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False))

        net = self.conv_in(x)
        rgb = up_rgb(self.conv_rgb[0](x))
        for i, layer in enumerate(self.conv_layers):
            net = F.leaky_relu(layer(F.interpolate(net, scale_factor=2.0, mode="nearest")), 0.2)
            rgb = rgb + self.conv_rgb[i + 1](net)
            if i < len(self.conv_layers) - 1:
                rgb = up_rgb(rgb)
        return torch.sigmoid(rgb) if self.final_actvn else rgb


# ----------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------
class GiraffeGenerator(torch.nn.Module):
    """The GIRAFFE generator: object and background feature fields, boxes, cameras and neural renderer.

    Holds the parameters (``object_field``, ``background_field``, ``neural_renderer``; the official
    ``decoder``, ``background_generator``, ``neural_renderer``) and the sampling ranges; ``forward`` renders
    one batch with :func:`render_feature_image` and the neural renderer.

    Args:
        z_dim: object code size (256 in the paper's 64-px presets).
        z_dim_bg: background code size (128).
        img_size: output image size.
        feature_dim: ``C`` (128; 256 at 256 px).
        hidden_size / n_blocks / skips: object field (128, 8, (4,)).
        bg_hidden_size / bg_n_blocks / bg_skips: background field (64, 4, ()).
        bg_downscale: background points are divided by this (12).
        resolution_vol: feature-image size (16).
        n_ray_samples: samples per ray (64).
        camera: the camera distribution (default ``CameraRanges()``).
        boxes: the box distribution (default ``BoxRanges()``).
        bg_rotation_range: background rotation range in turns ((0, 0): none).
        object_count_probs: when given, scenes hold ``object_count_min + i`` objects with these
            probabilities (the official ``sample_object_existance``; None: all ``n_boxes`` objects).
        object_count_min: fewest objects when ``object_count_probs`` is given.
        neural_renderer_min_feat: fewest channels in the neural renderer (32).
    """

    def __init__(self, z_dim: int = 256, z_dim_bg: int = 128, img_size: int = 64, feature_dim: int = 128,
                 hidden_size: int = 128, n_blocks: int = 8, skips: Sequence[int] = (4,),
                 bg_hidden_size: int = 64, bg_n_blocks: int = 4, bg_skips: Sequence[int] = (),
                 bg_downscale: float = 12.0, resolution_vol: int = 16, n_ray_samples: int = 64,
                 camera: CameraRanges | None = None, boxes: BoxRanges | None = None,
                 bg_rotation_range: tuple[float, float] = (0.0, 0.0),
                 object_count_probs: Sequence[float] | None = None, object_count_min: int = 1,
                 neural_renderer_min_feat: int = 32) -> None:
        super().__init__()
        self.z_dim, self.z_dim_bg, self.img_size = z_dim, z_dim_bg, img_size
        self.resolution_vol, self.n_ray_samples = resolution_vol, n_ray_samples
        camera = CameraRanges() if camera is None else camera
        boxes = BoxRanges() if boxes is None else boxes
        self.camera, self.boxes, self.bg_rotation_range = camera, boxes, tuple(bg_rotation_range)
        self.object_count_probs = None if object_count_probs is None else tuple(object_count_probs)
        self.object_count_min = object_count_min
        self.object_field = FeatureField(z_dim, hidden_size, n_blocks, skips, rgb_out_dim=feature_dim,
                                         downscale_p_by=2.0)
        self.background_field = FeatureField(z_dim_bg, bg_hidden_size, bg_n_blocks, bg_skips,
                                             rgb_out_dim=feature_dim, downscale_p_by=bg_downscale)
        up = int(math.log2(img_size // resolution_vol))
        if resolution_vol * 2 ** up != img_size:
            raise ValueError(f"img_size / resolution_vol must be a power of two, got {img_size} / {resolution_vol}")
        self.neural_renderer = NeuralRenderer(feature_dim, feature_dim, 3, neural_renderer_min_feat, 16 * 2 ** up)

    @property
    def n_boxes(self) -> int:
        """``K``."""
        return self.boxes.n_boxes

    def sample_latents(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
                       n_boxes: int | None = None) -> Latents:
        """Codes for ``n`` scenes (``n_boxes`` objects, default ``K``)."""
        return sample_latents(n, self.n_boxes if n_boxes is None else n_boxes, self.z_dim, self.z_dim_bg,
                              generator, self._device(), temperature)

    def sample_cameras(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 4, 4)`` random camera poses."""
        return sample_camera_poses(n, self.camera, generator, self._device())

    def sample_boxes(self, n: int, generator: torch.Generator | None = None) -> Boxes:
        """Random boxes of ``n`` scenes."""
        return sample_boxes(n, self.boxes, generator, self._device())

    def sample_bg_rotation(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 3, 3)`` background rotations (one value for the whole batch, as the official code)."""
        u = torch.rand((), generator=generator, device=self._device())
        return z_rotation(_lerp_range(self.bg_rotation_range, u).expand(n))

    def sample_existence(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``(n, K)`` bool object existence, or None when every object is always present."""
        if self.object_count_probs is None:
            return None
        return sample_object_existence(n, self.n_boxes, self.object_count_probs, self.object_count_min,
                                       generator, self._device())

    def _device(self) -> torch.device:
        return self.neural_renderer.conv_rgb[0].weight.device

    def render_features(self, latents: Latents, cam2world: torch.Tensor, boxes: Boxes, bg_rotation: torch.Tensor,
                        *, training: bool = False, existence: torch.Tensor | None = None,
                        render_objects: bool = True, render_background: bool = True, return_alpha: bool = False,
                        generator: torch.Generator | None = None) -> FeatureRender:
        """:func:`render_feature_image` with this generator's fields and settings."""
        return render_feature_image(
            self.object_field, self.background_field, latents, cam2world, boxes, bg_rotation, fov=self.camera.fov,
            resolution=self.resolution_vol, n_samples=self.n_ray_samples, depth_range=self.camera.depth_range,
            training=training, existence=existence, render_objects=render_objects,
            render_background=render_background, return_alpha=return_alpha, generator=generator)

    def forward(self, latents: Latents, cam2world: torch.Tensor, boxes: Boxes, bg_rotation: torch.Tensor,
                mode: Literal["training", "eval"] = "eval", existence: torch.Tensor | None = None,
                render_objects: bool = True, render_background: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(N, 3, img_size, img_size)`` in [0, 1] of the given scenes ("training": jitter + noise)."""
        feats = self.render_features(latents, cam2world, boxes, bg_rotation, training=(mode == "training"),
                                     existence=existence, render_objects=render_objects,
                                     render_background=render_background, generator=generator).features
        return self.neural_renderer(feats)

    def sample(self, n: int, generator: torch.Generator | None = None, mode: Literal["training", "eval"] = "training",
               temperature: float = 1.0) -> torch.Tensor:
        """Random scenes rendered to ``(n, 3, img_size, img_size)`` images (the official ``generator()``)."""
        latents = self.sample_latents(n, generator, temperature)
        cams = self.sample_cameras(n, generator)
        boxes = self.sample_boxes(n, generator)
        bg = self.sample_bg_rotation(n, generator)
        existence = self.sample_existence(n, generator)
        return self(latents, cams, boxes, bg, mode=mode, existence=existence, generator=generator)
