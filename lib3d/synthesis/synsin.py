"""SynSin: end-to-end view synthesis from a single image (Wiles et al., CVPR 2020; the book's chapter 9).

A depth network and a feature network lift one image to a point cloud of per-pixel features; the cloud
is moved by the relative camera pose and splatted into the target view with lib3d's differentiable point
rasterizer and alpha compositing; a refinement network turns the splatted features into an image and
fills what the source did not see.

Dimension names: N batch, C feature channels, H/W image height/width, P = H * W points (one per source
pixel), K points kept per pixel by the splatter.

Conventions (lib3d's SynSin):

- Images are ``(N, 3, H, W)`` float in [-1, 1] (SynSin's ``--normalize_image``); depth ``(N, 1, H, W)``
  is the camera-space z (distance along the optical axis), positive in front of the camera.
- Cameras are OpenCV's: +x right, +y down, +z forward. Intrinsics ``K (N, 3, 3)`` are *normalised*
  (RealEstate10K's format): a camera point (X, Y, Z) lands at ``u = fx X / Z + cx``, ``v = fy Y / Z + cy``
  with u, v in [0, 1] across the image width and height. ``RT (N, 4, 4)`` is the relative pose moving
  source-camera points into the target camera: ``X_tgt = R X_src + t`` (world-to-target times
  source-to-world).
- Pixel (row i, column j) is lifted from its centre ``u = (j + 0.5) / W`` (``align_corners=False``) or,
  as the official code does, from ``u = j / (W - 1)`` (``align_corners=True``).
- Projection to lib3d's (PyTorch3D's) NDC flips both axes: ``x_ndc = -(2 u - 1) W / S``,
  ``y_ndc = -(2 v - 1) H / S`` with S = min(H, W) (+X left, +Y up), and keeps z as the depth.

The official code's camera matrices: its ``P`` matrices merge the intrinsics with an OpenGL-style camera
(+x right, +y up, -z forward) and an NDC offset: ``P = [[2, 0, -1], [0, -2, 1], [0, 0, -1]] K_orig [R|t]``
with its ``K`` the identity. Its lifted pixel ``(x, y)`` with depth d is ``(x d, -y d, -d)`` in that
space, and after projection it negates x and y once more before calling PyTorch3D. In lib3d's terms the
official identity ``K`` is ``fx = fy = cx = cy = 0.5`` (a 90 degree field of view), and an official
relative pose ``RT_gl`` (as built by the demo's ``inference()``) is ``F RT_gl F`` here with
``F = diag(1, -1, -1, 1)`` (``synsin_pose_to_opencv``).

Official checkpoints (``synsin.pth``: a dict of ``opts``, an argparse Namespace, and ``state_dict``)
map onto ``SynSinGenerator`` / ``SynSinDiscriminator`` with ``official_state_dict_to_lib3d`` and
``config_from_official_opts``; ``load_official_checkpoint`` reads the file with a restricted unpickler.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lib3d._checks import check_choice, check_shape, check_shapes
from lib3d.nn.weights import WeightFileError, read_weight_file, strict_load
from lib3d.render import alpha_composite, norm_weighted_sum, weighted_sum
from lib3d.render.compositing import _pair_alpha_weights, _pair_norm_weights, _pair_weighted_sum
from lib3d.render.point_rasterizer import _DEFAULT_PAIRS_PER_CHUNK, _pair_z_dists, _select_hits

__all__ = [
    "NoiseBatchNorm",
    "ResNetBlock",
    "ResNetDecoder",
    "ResNetEncoder",
    "SynSinDiscriminator",
    "SynSinGenerator",
    "SynSinModelConfig",
    "SynSinOutput",
    "SynSinUNet",
    "alphas_from_dists",
    "config_from_official_opts",
    "depth_from_logits",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_hinge_loss",
    "lift_pixels",
    "load_official_checkpoint",
    "official_intrinsics",
    "official_state_dict_to_lib3d",
    "pixel_grid",
    "project_to_ndc",
    "reproject_points",
    "splat_features",
    "synsin_pose_to_opencv",
    "transform_points",
]

_EPS_Z = 1e-2  # official EPS: points with |z| below it are dropped
_NOISE_SIZE = 20  # official LinearNoiseLayer noise_sz


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SynSinModelConfig:
    """SynSin's architecture. Defaults are the official RealEstate10K model (``train.sh``)."""

    image_size: int = 256
    """Square image side W (the official ``--W``)."""
    ngf: int = 64
    """Width of the feature and refinement ResNets (official ``--ngf``)."""
    feature_channels: int = 64
    """Channels of the per-pixel features that are splatted (fixed to 64 by the official architectures)."""
    depth_filters: int = 32
    """Filters of the first level of the depth UNet."""
    depth_levels: int = 8
    """Down/up-sampling levels of the depth UNet (8 at 256x256; needs image_size >= 2**depth_levels)."""
    encoder_blocks: int = 8
    """Residual blocks of the feature network (official: 8, channels 3, ngf/2 x3, ngf x4, 64)."""
    norm: Literal["spectral_batch", "batch", "spectral_instance"] = "spectral_batch"
    """Generator normalisation (official ``--norm_G sync:spectral_batch``): spectral norm on convs."""
    noise: bool = True
    """Noise-conditioned batch norm in the ResNet blocks (BigGAN-style ``LinearNoiseLayer``)."""
    min_z: float = 1.0
    """Depth range start (official RealEstate10K: 1)."""
    max_z: float = 100.0
    """Depth range end (official RealEstate10K: 100)."""
    inverse_depth: bool = False
    """KITTI's setting: depth = 1 / (10 sigmoid(x) + 0.01) instead of the linear [min_z, max_z] map."""
    radius_px: float = 4.0
    """Splat radius in pixels (official ``--radius 4``)."""
    points_per_pixel: int = 128
    """K, points kept per pixel (official ``--pp_pixel 128``)."""
    tau: float = 1.0
    """gamma, alpha = (1 - sqrt(d / r^2)) ** tau (official ``--tau``)."""
    rad_pow: int = 2
    """Distance normaliser exponent: d / r ** rad_pow (official ``--rad_pow 2``)."""
    accumulation: Literal["alphacomposite", "wsum", "wsumnorm"] = "alphacomposite"
    """How the K splats of a pixel combine (official RealEstate10K: alpha compositing)."""
    align_corners: bool = True
    """Lift pixel j from u = j / (W - 1) as the official code does (False: pixel centres)."""
    ndf: int = 64
    """Filters of the first discriminator layer (official ``--ndf``)."""
    num_discriminators: int = 2
    """Scales of the multiscale discriminator (official: 2)."""
    discriminator_layers: int = 4
    """Strided layers of each PatchGAN discriminator (official ``n_layers_D = 4``)."""


def config_from_official_opts(opts) -> SynSinModelConfig:
    """The ``SynSinModelConfig`` of an official checkpoint's ``opts`` (argparse Namespace or dict).

    Raises:
        ValueError: when the options describe an architecture lib3d does not implement (another
            ``model_type``, ``refine_model_type``, depth predictor, splatter or RGB features).
    """
    o = vars(opts) if isinstance(opts, argparse.Namespace) else dict(opts)

    def get(name, default):
        return o.get(name, default)

    problems = []
    if get("model_type", "zbuffer_pts") != "zbuffer_pts":
        problems.append(f"model_type={get('model_type', None)!r} (only 'zbuffer_pts')")
    if get("refine_model_type", "unet") != "resnet_256W8UpDown64":
        problems.append(f"refine_model_type={get('refine_model_type', None)!r} (only 'resnet_256W8UpDown64')")
    if get("depth_predictor_type", "unet") != "unet":
        problems.append(f"depth_predictor_type={get('depth_predictor_type', None)!r} (only 'unet')")
    if get("use_rgb_features", False):
        problems.append("use_rgb_features=True")
    if problems:
        raise ValueError("unsupported SynSin checkpoint options: " + ", ".join(problems))
    norm_g = str(get("norm_G", "batch")).split(":")[-1]
    check_choice("opts.norm_G", norm_g, ("spectral_batch", "batch", "spectral_instance"))
    return SynSinModelConfig(
        image_size=int(get("W", 256)), ngf=int(get("ngf", 64)), norm=norm_g,
        noise=True, min_z=float(get("min_z", 0.5)), max_z=float(get("max_z", 10.0)),
        inverse_depth=bool(get("use_inverse_depth", False)), radius_px=float(get("radius", 4.0)),
        points_per_pixel=int(get("pp_pixel", 128)), tau=float(get("tau", 1.0)), rad_pow=int(get("rad_pow", 2)),
        accumulation=get("accumulation", "wsum"), align_corners=True, ndf=int(get("ndf", 64)))


# ---------------------------------------------------------------------------------------------------------
# Geometry: lifting, moving, projecting, splatting (pure functions)
# ---------------------------------------------------------------------------------------------------------


def pixel_grid(height: int, width: int, align_corners: bool = False, dtype=torch.float32,
               device=None) -> torch.Tensor:
    """Normalised image coordinates of every pixel, row-major.

    Args:
        height, width: H, W.
        align_corners: False: pixel centres ``u = (j + 0.5) / W``; True: the official SynSin grid
            ``u = j / (W - 1)`` (first and last pixels at the image borders).

    Returns:
        (H * W, 2) float (u, v) in [0, 1]; u along columns, v along rows.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}, {width}")

    def axis(n):
        if align_corners:
            return torch.linspace(0.0, 1.0, n, dtype=dtype, device=device) if n > 1 else \
                torch.full((1,), 0.5, dtype=dtype, device=device)
        return (torch.arange(n, dtype=dtype, device=device) + 0.5) / n

    v, u = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return torch.stack((u.reshape(-1), v.reshape(-1)), dim=-1)


def _check_K(K: torch.Tensor, sizes: dict) -> None:
    check_shape("K", K, ("N", 3, 3), sizes, dtype="float")


def lift_pixels(depth: torch.Tensor, K: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Lift every pixel to a camera-space point: ``X = d (u - cx) / fx, Y = d (v - cy) / fy, Z = d``.

    Args:
        depth: (N, 1, H, W) float camera-space z per pixel.
        K: (N, 3, 3) float normalised intrinsics (see the module docstring).
        align_corners: pixel grid convention (``pixel_grid``).

    Returns:
        (N, P, 3) float OpenCV camera-space points, P = H * W in row-major pixel order.
    """
    sizes = check_shape("depth", depth, ("N", 1, "H", "W"), dtype="float")
    _check_K(K, sizes)
    N, _, H, W = depth.shape
    uv = pixel_grid(H, W, align_corners, depth.dtype, depth.device)  # (P, 2)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    d = depth.reshape(N, H * W)
    x = d * (uv[None, :, 0] - cx) / fx
    y = d * (uv[None, :, 1] - cy) / fy
    return torch.stack((x, y, d), dim=-1)


def transform_points(points: torch.Tensor, RT: torch.Tensor) -> torch.Tensor:
    """Apply a rigid transform: ``X' = R X + t``.

    Args:
        points: (N, P, 3) float.
        RT: (N, 4, 4) (or (N, 3, 4)) float; only the top 3x4 block is used.

    Returns:
        (N, P, 3) float.
    """
    sizes = check_shape("points", points, ("N", None, 3), dtype="float")
    check_shape("RT", RT, ("N", None, 4), sizes, dtype="float")
    if RT.shape[1] not in (3, 4):
        raise ValueError(f"RT must have shape (N, 4, 4) or (N, 3, 4), got {tuple(RT.shape)}")
    return points @ RT[:, :3, :3].transpose(1, 2) + RT[:, None, :3, 3]


def project_to_ndc(points: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Project camera-space points to lib3d's NDC (+X left, +Y up) keeping z; drops points near z = 0.

    ``u = fx X / Z + cx``, ``x_ndc = -(2 u - 1) W / S`` (likewise y with H), S = min(H, W). Points with
    ``Z < 0.01`` (behind or at the camera, the official EPS) get z = -1 so the rasterizer skips them.

    Args:
        points: (N, P, 3) float OpenCV camera-space points.
        K: (N, 3, 3) float normalised intrinsics.
        image_size: (H, W) of the target image.

    Returns:
        (N, P, 3) float (x_ndc, y_ndc, z).
    """
    sizes = check_shape("points", points, ("N", None, 3), dtype="float")
    _check_K(K, sizes)
    H, W = int(image_size[0]), int(image_size[1])
    S = min(H, W)
    z = points[..., 2]
    ok = z >= _EPS_Z
    zs = torch.where(ok, z, torch.ones_like(z))
    u = K[:, 0, 0, None] * points[..., 0] / zs + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * points[..., 1] / zs + K[:, 1, 2, None]
    x_ndc = -(2 * u - 1) * (W / S)
    y_ndc = -(2 * v - 1) * (H / S)
    z_out = torch.where(ok, z, torch.full_like(z, -1.0))
    return torch.stack((torch.where(ok, x_ndc, torch.zeros_like(x_ndc)),
                        torch.where(ok, y_ndc, torch.zeros_like(y_ndc)), z_out), dim=-1)


def reproject_points(depth: torch.Tensor, K: torch.Tensor, RT: torch.Tensor, align_corners: bool = False,
                     K_target: torch.Tensor | None = None) -> torch.Tensor:
    """Lift the source pixels, move them by RT and project them into the target view's NDC.

    Args:
        depth: (N, 1, H, W) float source depth.
        K: (N, 3, 3) float source intrinsics (also the target's unless ``K_target`` is given).
        RT: (N, 4, 4) float relative pose, source camera -> target camera.
        align_corners: pixel grid convention.
        K_target: optional (N, 3, 3) float target intrinsics.

    Returns:
        (N, P, 3) float target NDC points (x, y, z), P = H * W.
    """
    pts = transform_points(lift_pixels(depth, K, align_corners), RT)
    return project_to_ndc(pts, K if K_target is None else K_target, depth.shape[-2:])


def alphas_from_dists(dists: torch.Tensor, radius: float, tau: float = 1.0, rad_pow: int = 2) -> torch.Tensor:
    """SynSin's splat opacity: ``alpha = (1 - sqrt(clamp(d / r ** rad_pow, 1e-3, 1))) ** tau``.

    Args:
        dists: (...) float squared NDC distances from the pixel centre (empty slots: any value).
        radius: NDC radius r.
        tau: gamma, the opacity exponent.
        rad_pow: exponent of r in the normaliser (2: Euclidean).

    Returns:
        (...) float alphas in [0, 1 - sqrt(1e-3)].
    """
    d = dists / (radius ** rad_pow)
    return (1 - d.clamp(min=1e-3, max=1.0).sqrt()).pow(tau)


def splat_features(points_ndc: torch.Tensor, features: torch.Tensor, image_size: tuple[int, int],
                   radius_px: float = 4.0, points_per_pixel: int = 128, tau: float = 1.0, rad_pow: int = 2,
                   accumulation: Literal["alphacomposite", "wsum", "wsumnorm"] = "alphacomposite"
                   ) -> torch.Tensor:
    """Splat per-point features into an image with ``rasterize_points`` and compositing (SynSin's splatter).

    The NDC radius is ``r = 2 radius_px / S`` (S = min(H, W), the official ``radius / size * 2``); each
    pixel keeps its K nearest points by z, weighted by ``alphas_from_dists`` and combined by
    ``accumulation``: front-to-back alpha compositing, a weighted sum or a normalised weighted sum.
    Differentiable w.r.t. the points (through the distances) and the features.

    Args:
        points_ndc: (N, P, 3) float, x/y in NDC (+X left, +Y up), z the depth (z < 0: skipped).
        features: (N, C, P) float.
        image_size: (H, W).
        radius_px: splat radius in pixels.
        points_per_pixel: K.
        tau, rad_pow: opacity parameters (``alphas_from_dists``).
        accumulation: "alphacomposite", "wsum" or "wsumnorm".

    Returns:
        (N, C, H, W) float splatted features (zero where no point lands).
    """
    check_shapes(points_ndc=(points_ndc, ("N", "P", 3)), features=(features, ("N", "C", "P")), dtype="float")
    composite = {"alphacomposite": alpha_composite, "wsum": weighted_sum, "wsumnorm": norm_weighted_sum}
    check_choice("accumulation", accumulation, tuple(composite))
    H, W = int(image_size[0]), int(image_size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive, got {(H, W)}")
    if int(points_per_pixel) < 1:
        raise ValueError(f"points_per_pixel must be >= 1, got {points_per_pixel}")
    radius = 2.0 * float(radius_px) / min(H, W)
    return _splat_pairs(points_ndc, features, H, W, radius, int(points_per_pixel), tau, rad_pow, accumulation)


def _splat_pairs(points_ndc: torch.Tensor, features: torch.Tensor, H: int, W: int, radius: float, K: int,
                 tau: float, rad_pow: int, accumulation: str) -> torch.Tensor:
    """``splat_features`` computed on the rasterizer's (pixel, point) pair list.

    The same numbers as ``rasterize_packed_points`` followed by the compositor on (N, K, H, W) fragments,
    without building them: the rasterizer's selection gives the M kept pairs pixel-major (nearest first),
    alphas and weights are computed per pair, and the weighted sum of features is one sparse matmul.

    Args:
        points_ndc: (N, P, 3) float; features: (N, C, P) float.
        H, W: image size; radius: NDC radius; K: points per pixel; tau, rad_pow, accumulation: as
            ``splat_features``.

    Returns:
        (N, C, H, W) float.
    """

    N, P, _ = points_ndc.shape
    C = features.shape[1]
    dev = points_ndc.device
    pts = points_ndc.reshape(N * P, 3)
    with torch.no_grad():
        cloud = torch.arange(N, device=dev).repeat_interleave(P)
        rad = torch.full((N * P,), radius, device=dev, dtype=pts.dtype)
        hits = _select_hits(pts.detach(), cloud, N, rad, H, W, K, _DEFAULT_PAIRS_PER_CHUNK)
    _, dists = _pair_z_dists(pts, hits.order[hits.j], hits.pix, H, W)
    alphas = alphas_from_dists(dists, radius, tau, rad_pow)
    if accumulation == "alphacomposite":
        w = _pair_alpha_weights(hits.pix, hits.rank, alphas, N * H * W)
    elif accumulation == "wsumnorm":
        w = _pair_norm_weights(hits.pix, alphas, N * H * W)
    else:
        w = alphas
    feats = features.permute(0, 2, 1).reshape(N * P, C).index_select(0, hits.order)  # (P_ok, C), depth order
    out = _pair_weighted_sum(hits.pix, hits.j, w, feats, N * H * W, by_col=hits.by_point)
    return out.view(N, H, W, C).permute(0, 3, 1, 2)


def depth_from_logits(logits: torch.Tensor, min_z: float, max_z: float, inverse: bool = False) -> torch.Tensor:
    """Map the depth network's output to depth.

    ``z = sigmoid(x) (max_z - min_z) + min_z``, or with ``inverse`` (KITTI) ``z = 1 / (10 sigmoid(x) + 0.01)``.

    Args:
        logits: (N, 1, H, W) float.

    Returns:
        (N, 1, H, W) float positive depth.
    """
    s = torch.sigmoid(logits)
    if inverse:
        return 1.0 / (s * 10.0 + 0.01)
    return s * (max_z - min_z) + min_z


def synsin_pose_to_opencv(RT: torch.Tensor) -> torch.Tensor:
    """Convert an official SynSin relative pose (OpenGL axes: +y up, -z forward) to lib3d's (OpenCV axes).

    ``RT_cv = F RT_gl F`` with ``F = diag(1, -1, -1, 1)`` (its own inverse).

    Args:
        RT: (..., 4, 4) float.

    Returns:
        (..., 4, 4) float.
    """
    check_shape("RT", RT, (..., 4, 4), dtype="float")
    f = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=RT.dtype, device=RT.device)
    return RT * f[:, None] * f[None, :]


# ---------------------------------------------------------------------------------------------------------
# Networks (thin modules whose parameter names follow the official code, so checkpoints map by prefix)
# ---------------------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, stride: int, pad: int, spectral: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad)
    return nn.utils.spectral_norm(conv) if spectral else conv


def _linear(cin: int, cout: int, spectral: bool) -> nn.Module:
    lin = nn.Linear(cin, cout, bias=False)
    return nn.utils.spectral_norm(lin) if spectral else lin


class _StandingBN(nn.Module):
    """Batch statistics with externally given gain and bias (official ``bn``; buffers only)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))
        self.register_buffer("accumulation_counter", torch.zeros(1))

    def forward(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = (x * x).mean(dim=(0, 2, 3)) - mean * mean  # biased, E[x^2] - E[x]^2 as in BigGAN
            with torch.no_grad():
                self.stored_mean.mul_(1 - self.momentum).add_(mean.detach() * self.momentum)
                self.stored_var.mul_(1 - self.momentum).add_(var.detach() * self.momentum)
        else:
            mean, var = self.stored_mean, self.stored_var
        scale = torch.rsqrt(var + self.eps)[None, :, None, None] * gain
        return x * scale - (mean[None, :, None, None] * scale - bias)


class NoiseBatchNorm(nn.Module):
    """Batch norm whose gain and bias are predicted from a random vector (official ``LinearNoiseLayer``).

    ``y = (x - mean) / sqrt(var + eps) * (1 + W_g z) + W_b z`` with ``z ~ N(0, I_20)`` drawn per sample
    (from ``generator`` when given, else torch's global generator).
    """

    def __init__(self, channels: int, spectral: bool = True, noise_size: int = _NOISE_SIZE):
        super().__init__()
        self.noise_size = noise_size
        self.gain = _linear(noise_size, channels, spectral)
        self.bias = _linear(noise_size, channels, spectral)
        self.bn = _StandingBN(channels)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, C, H, W) -> (N, C, H, W)."""
        z = torch.randn(x.shape[0], self.noise_size, generator=generator, device=x.device, dtype=x.dtype)
        gain = (1 + self.gain(z))[:, :, None, None]
        bias = self.bias(z)[:, :, None, None]
        return self.bn(x, gain, bias)


class _PlainBatchNorm(nn.Module):
    """``nn.BatchNorm2d`` with the ``forward(x, generator)`` signature (the ``noise=False`` variant)."""

    def __init__(self, channels: int, spectral: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x, generator=None):
        return self.bn(x)


class ResNetBlock(nn.Module):
    """SynSin's residual block (official ``ResNet_Block``).

    ``y = resample(conv_ab(relu(norm2(conv_aa(relu(norm1(x))))))) + resample(conv_b(x))`` (the shortcut is
    the identity when the block keeps size and channels); ``resample`` is a 3x3 stride-2 average pool
    ("down"), a bilinear 2x upsampling ("up") or nothing.
    """

    def __init__(self, cin: int, cout: int, resample: Literal["down", "up", "none"] = "none",
                 spectral: bool = True, noise: bool = True):
        super().__init__()
        check_choice("resample", resample, ("down", "up", "none"))
        norm = NoiseBatchNorm if noise else _PlainBatchNorm
        self.resample = resample
        # Indices follow the official nn.Sequential (norm, relu, conv, norm, relu, conv, resample).
        self.ch_a = nn.Sequential(norm(cin, spectral), nn.ReLU(), _conv(cin, cout, 3, 1, 1, spectral),
                                  norm(cout, spectral), nn.ReLU(), _conv(cout, cout, 3, 1, 1, spectral))
        self.ch_b = (nn.Sequential(_conv(cin, cout, 1, 1, 0, spectral))
                     if (resample != "none" or cin != cout) else None)

    def _resample(self, x):
        if self.resample == "down":
            return F.avg_pool2d(x, 3, 2, 1)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, cin, H, W) -> (N, cout, H', W')."""
        a = self.ch_a
        h = a[2](F.relu(a[0](x, generator)))
        h = self._resample(a[5](F.relu(a[3](h, generator))))
        skip = x if self.ch_b is None else self._resample(self.ch_b[0](x))
        return h + skip


class ResNetEncoder(nn.Module):
    """The feature network: residual blocks at full resolution, 3 -> C (official ``ResNetEncoder``).

    Channels (official ``256W8UpDown64``): 3, ngf/2, ngf/2, ngf/2, ngf, ngf, ngf, ngf, C for 8 blocks.
    """

    def __init__(self, ngf: int = 64, out_channels: int = 64, blocks: int = 8, spectral: bool = True,
                 noise: bool = True):
        super().__init__()
        if blocks < 2:
            raise ValueError(f"blocks must be >= 2, got {blocks}")
        n_half = (blocks - 1) * 3 // 7  # official 8 blocks: 3 of the 7 inner widths are ngf / 2
        widths = [3] + [ngf // 2] * n_half + [ngf] * (blocks - 1 - n_half) + [out_channels]
        self.gblocks = nn.Sequential(*[ResNetBlock(widths[i], widths[i + 1], "none", spectral, noise)
                                       for i in range(blocks)])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, 3, H, W) -> (N, C, H, W)."""
        for block in self.gblocks:
            x = block(x, generator)
        return x


class ResNetDecoder(nn.Module):
    """The refinement network (official ``ResNetDecoder``, ``256W8UpDown64``): C -> 3 with tanh.

    Channels C, ngf, 2ngf, 4ngf, 4ngf, 2ngf, 2ngf, 2ngf, 3; resampling none, down, down, none, up, up,
    none, none (so the input size must be divisible by 4).
    """

    _WIDTHS = (None, 1, 2, 4, 4, 2, 2, 2, None)
    _RESAMPLE = ("none", "down", "down", "none", "up", "up", "none", "none")

    def __init__(self, ngf: int = 64, in_channels: int = 64, spectral: bool = True, noise: bool = True):
        super().__init__()
        w = [in_channels] + [ngf * m for m in self._WIDTHS[1:-1]] + [3]
        self.eblocks = nn.Sequential(*[ResNetBlock(w[i], w[i + 1], self._RESAMPLE[i], spectral, noise)
                                       for i in range(8)])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, C, H, W) -> (N, 3, H, W) in [-1, 1]."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"the refinement network needs H and W divisible by 4, got {tuple(x.shape[-2:])}")
        for block in self.eblocks:
            x = block(x, generator)
        return torch.tanh(x)


def _unet_norm_names(levels: int) -> tuple[list[str], list[str]]:
    """Official UNet norm-layer names (``batch_norm``, ``batch_norm2_0``, ...) for any number of levels.

    Encoder convs 2..L-1 then decoder convs 1..L-1 are numbered per channel multiplier in that order;
    multiplier 1 is plain ``batch_norm``. At L = 8 this gives the official names exactly.
    """
    mult_enc = [min(2 ** (i - 1), 8) for i in range(1, levels + 1)]  # conv i (1-based) multiplier
    counters: dict[int, int] = {}

    def name(m):
        k = counters.get(m, 0)
        counters[m] = k + 1
        return "batch_norm" if m == 1 else f"batch_norm{m}_{k}"

    enc = [name(mult_enc[i - 1]) for i in range(2, levels)]
    dec = [name(mult_enc[levels - j - 1]) for j in range(1, levels)]
    return enc, dec


class SynSinUNet(nn.Module):
    """SynSin's depth UNet (official ``Unet``): L stride-2 4x4 convs down, L bilinear-up 3x3 convs up.

    Encoder conv i has ``f min(2^(i-1), 8)`` channels; decoder conv j mirrors encoder conv L-j and is
    concatenated with it (skip connections); leaky ReLU (0.2) down, ReLU up, no norm on the first and
    last encoder convs and the last decoder conv. Parameter names follow the official code (conv1..,
    dconv1.., batch_norm*), so an 8-level UNet loads the official weights.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, num_filters: int = 32, levels: int = 8,
                 spectral: bool = True, norm: Literal["batch", "instance"] = "batch"):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels = levels
        f = num_filters
        enc_ch = [f * min(2 ** (i - 1), 8) for i in range(1, levels + 1)]
        for i in range(1, levels + 1):
            cin = in_channels if i == 1 else enc_ch[i - 2]
            setattr(self, f"conv{i}", _conv(cin, enc_ch[i - 1], 4, 2, 1, spectral))
        for j in range(1, levels + 1):
            cin = enc_ch[-1] if j == 1 else 2 * enc_ch[levels - j]
            cout = out_channels if j == levels else enc_ch[levels - j - 1]
            setattr(self, f"dconv{j}", _conv(cin, cout, 3, 1, 1, spectral))
        norm_cls = nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d
        enc_names, dec_names = _unet_norm_names(levels)
        self._enc_norms, self._dec_norms = enc_names, dec_names
        for i, nm in zip(range(2, levels), enc_names):
            setattr(self, nm, norm_cls(enc_ch[i - 1]))
        for j, nm in zip(range(1, levels), dec_names):
            setattr(self, nm, norm_cls(enc_ch[levels - j - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C_in, H, W) with H, W divisible by 2**L -> (N, C_out, H, W)."""
        L = self.levels
        if x.shape[-1] % (2 ** L) or x.shape[-2] % (2 ** L):
            raise ValueError(f"SynSinUNet with {L} levels needs H and W divisible by {2 ** L}, "
                             f"got {tuple(x.shape[-2:])}")
        e = [self.conv1(x)]
        for i in range(2, L):
            e.append(getattr(self, self._enc_norms[i - 2])(getattr(self, f"conv{i}")(F.leaky_relu(e[-1], 0.2))))
        d = getattr(self, f"conv{L}")(F.leaky_relu(e[-1], 0.2))
        for j in range(1, L):
            up = F.interpolate(F.relu(d), scale_factor=2, mode="bilinear", align_corners=False)
            d = getattr(self, self._dec_norms[j - 1])(getattr(self, f"dconv{j}")(up))
            d = torch.cat((d, e[L - j - 1]), dim=1)
        up = F.interpolate(F.relu(d), scale_factor=2, mode="bilinear", align_corners=False)
        return getattr(self, f"dconv{L}")(up)


class SynSinOutput(NamedTuple):
    """What ``SynSinGenerator`` returns.

    Attributes:
        image: (N, 3, H, W) float predicted target view in [-1, 1].
        depth: (N, 1, H, W) float source depth (predicted, or the one given).
        features: (N, C, H, W) float splatted features in the target view (before refinement).
    """

    image: torch.Tensor
    depth: torch.Tensor
    features: torch.Tensor


class SynSinGenerator(nn.Module):
    """SynSin's generator: depth + feature networks, reprojection and splatting, refinement network.

    ``forward(image, K, RT)``: ``depth = depth_from_logits(depth_net(image))``, ``f = feature_net(image)``,
    ``points = reproject_points(depth, K, RT)``, ``g = splat_features(points, f)``,
    ``image_tgt = refine_net(g)``.
    """

    def __init__(self, config: SynSinModelConfig = SynSinModelConfig()):
        super().__init__()
        self.config = c = config
        spectral = c.norm.startswith("spectral")
        unet_norm = "instance" if c.norm == "spectral_instance" else "batch"
        if c.image_size % (2 ** c.depth_levels):
            raise ValueError(f"image_size {c.image_size} must be divisible by 2**depth_levels = "
                             f"{2 ** c.depth_levels}")
        self.feature_net = ResNetEncoder(c.ngf, c.feature_channels, c.encoder_blocks, spectral, c.noise)
        self.depth_net = SynSinUNet(3, 1, c.depth_filters, c.depth_levels, spectral, unet_norm)
        self.refine_net = ResNetDecoder(c.ngf, c.feature_channels, spectral, c.noise)
        # The official splatter's (unused) learnable default feature, kept so checkpoints round-trip.
        self.register_buffer("default_feature", torch.zeros(1, c.feature_channels, 1))

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """image (N, 3, H, W) in [-1, 1] -> depth (N, 1, H, W)."""
        c = self.config
        return depth_from_logits(self.depth_net(image), c.min_z, c.max_z, c.inverse_depth)

    def splat(self, features: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, RT: torch.Tensor
              ) -> torch.Tensor:
        """Reproject and splat (N, C, H, W) features with (N, 1, H, W) depth -> (N, C, H, W)."""
        c = self.config
        N, C, H, W = features.shape
        pts = reproject_points(depth, K, RT, c.align_corners)
        return splat_features(pts, features.reshape(N, C, H * W), (H, W), c.radius_px, c.points_per_pixel,
                              c.tau, c.rad_pow, c.accumulation)

    def forward(self, image: torch.Tensor, K: torch.Tensor, RT: torch.Tensor, depth: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> SynSinOutput:
        """Synthesise the target view.

        Args:
            image: (N, 3, H, W) float source image in [-1, 1].
            K: (N, 3, 3) float normalised intrinsics (source and target).
            RT: (N, 4, 4) float relative pose, source camera -> target camera.
            depth: optional (N, 1, H, W) float depth to use instead of the depth network's (``use_gt_depth``).
            generator: draws the noise of the noise-conditioned norms (default: torch's global RNG).

        Returns:
            ``SynSinOutput(image, depth, features)``.
        """
        sizes = check_shape("image", image, ("N", 3, "H", "W"), dtype="float")
        check_shape("K", K, ("N", 3, 3), sizes, dtype="float")
        check_shape("RT", RT, ("N", 4, 4), sizes, dtype="float")
        if depth is not None:
            check_shape("depth", depth, ("N", 1, "H", "W"), sizes, dtype="float")
        feats = self.feature_net(image, generator)
        z = self.predict_depth(image) if depth is None else depth
        splatted = self.splat(feats, z, K, RT)
        return SynSinOutput(self.refine_net(splatted, generator), z, splatted)


# ---------------------------------------------------------------------------------------------------------
# Discriminator and GAN losses (pix2pixHD's multiscale PatchGAN with feature matching, as SynSin uses)
# ---------------------------------------------------------------------------------------------------------


class _PatchDiscriminator(nn.Module):
    """PatchGAN (official ``NLayerDiscriminator``): layers ``model0..model{L}`` returning every output."""

    def __init__(self, ndf: int = 64, layers: int = 4, in_channels: int = 3):
        super().__init__()
        nf = ndf
        self.model0 = nn.Sequential(nn.Conv2d(in_channels, nf, 4, 2, 2), nn.LeakyReLU(0.2))
        for n in range(1, layers):
            prev, nf = nf, min(nf * 2, 512)
            conv = nn.utils.spectral_norm(nn.Conv2d(prev, nf, 4, 1 if n == layers - 1 else 2, 2, bias=False))
            # "spectralinstance": spectral conv without bias, then a non-affine instance norm.
            setattr(self, f"model{n}", nn.Sequential(nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False)),
                                                    nn.LeakyReLU(0.2)))
        setattr(self, f"model{layers}", nn.Sequential(nn.Conv2d(nf, 1, 4, 1, 2)))
        self.layers = layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for n in range(self.layers + 1):
            x = getattr(self, f"model{n}")(x)
            outs.append(x)
        return outs


class SynSinDiscriminator(nn.Module):
    """Multiscale discriminator (official ``MultiscaleDiscriminator``, pix2pixHD): ``discriminator_i``
    sees the image downsampled i times (3x3 stride-2 average pooling, padding not counted).

    ``forward(x)`` returns, per scale, the list of every layer's output (the last one the patch logits).
    """

    def __init__(self, ndf: int = 64, num_discriminators: int = 2, layers: int = 4):
        super().__init__()
        self.num = num_discriminators
        for i in range(num_discriminators):
            setattr(self, f"discriminator_{i}", _PatchDiscriminator(ndf, layers))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x (N, 3, H, W) -> [[(N, c_l, h_l, w_l) for each layer] for each scale]."""
        out = []
        for i in range(self.num):
            out.append(getattr(self, f"discriminator_{i}")(x))
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return out


def discriminator_loss(pred_fake: list[list[torch.Tensor]], pred_real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the discriminator averaged over scales: ``mean(relu(1 + D(fake))) + mean(relu(1 - D(real)))``."""
    fake = sum(F.relu(1 + p[-1]).mean() for p in pred_fake) / len(pred_fake)
    real = sum(F.relu(1 - p[-1]).mean() for p in pred_real) / len(pred_real)
    return fake + real


def generator_hinge_loss(pred_fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the generator: ``-mean(D(fake))`` averaged over scales."""
    return -sum(p[-1].mean() for p in pred_fake) / len(pred_fake)


def feature_matching_loss(pred_fake: list[list[torch.Tensor]], pred_real: list[list[torch.Tensor]],
                          weight: float = 10.0) -> torch.Tensor:
    """pix2pixHD feature matching: ``weight / num_D * sum_{scales, layers but last} L1(f_fake, f_real.detach())``."""
    total = pred_fake[0][0].new_zeros(())
    for pf, pr in zip(pred_fake, pred_real):
        for a, b in zip(pf[:-1], pr[:-1]):
            total = total + F.l1_loss(a, b.detach())
    return total * weight / len(pred_fake)


# ---------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------

_GEN_PREFIXES = (("encoder.", "feature_net."), ("pts_regressor.", "depth_net."), ("projector.", "refine_net."))
_IGNORED = re.compile(r"^(pts_transformer\.xyzs|min_z|max_z|discretized_zs|loss_function\..*)$")


def official_state_dict_to_lib3d(state_dict: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Rename an official SynSin ``state_dict`` onto lib3d's modules.

    Official keys look like ``model.module.encoder.gblocks.0.ch_a.0.gain.weight_orig`` (the generator,
    wrapped in ``BaseModel`` and ``DataParallel``) and ``netD.netD.netD.discriminator_0.model1.0.0.weight_orig``
    (the discriminator). The generator's ``encoder`` / ``pts_regressor`` / ``projector`` become
    ``feature_net`` / ``depth_net`` / ``refine_net``; ``pts_transformer.splatter.default_feature`` becomes
    ``default_feature``; the constant buffers (``xyzs``, ``min_z``, ``max_z``, ``discretized_zs``) and the
    frozen VGG19 copy of the loss goes to ``vgg`` with ``lib3d.nn.VGGFeatures`` keys (``features.{j}.weight``:
    the official ``slice{i}.{j}`` keep torchvision's layer indices).

    Returns:
        ``{"generator": ..., "discriminator": ..., "vgg": ...}`` state dicts.

    Raises:
        ValueError: naming the keys that belong to no known part.
    """
    gen, disc, vgg, unknown = {}, {}, {}, []
    for key, value in state_dict.items():
        k = key
        for p in ("model.module.", "model.", "module."):
            if k.startswith(p):
                k = k[len(p):]
                break
        if key.startswith("netD."):
            k = key
            while k.startswith("netD."):
                k = k[len("netD."):]
            disc[k] = value
            continue
        m = re.match(r"^loss_function\.losses\.\d+\.model\.slice\d+\.(.*)$", k)
        if m:  # the official VGG19 slices keep torchvision's layer indices
            vgg["features." + m.group(1)] = value
            continue
        if _IGNORED.match(k):
            continue
        if k == "pts_transformer.splatter.default_feature":
            gen["default_feature"] = value
            continue
        for old, new in _GEN_PREFIXES:
            if k.startswith(old):
                gen[new + k[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the SynSin state_dict: {unknown[:8]}"
                         f"{' ...' if len(unknown) > 8 else ''}")
    return {"generator": gen, "discriminator": disc, "vgg": vgg}


def load_official_checkpoint(path: str | Path, load_discriminator: bool = False
                             ) -> tuple[SynSinGenerator, SynSinDiscriminator | None, SynSinModelConfig]:
    """Build lib3d's SynSin from an official ``synsin.pth`` (RealEstate10K, KITTI or MP3D).

    The file is read with ``lib3d.nn.weights.read_weight_file`` (PyTorch's weights-only unpickler), which
    allows tensors and containers plus ``argparse.Namespace`` (the ``opts``) and nothing else; the
    networks are filled with ``strict_load``.

    Returns:
        ``(generator in eval mode, discriminator or None, config)``.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: an unreadable file, a file without ``state_dict`` / ``opts``, unsupported options, or
            (``WeightFileError``) keys and shapes that do not match (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SynSin checkpoint at {path}")
    try:
        ckpt = read_weight_file(path, allowed_globals=[argparse.Namespace])
    except WeightFileError as exc:
        raise ValueError(f"not a readable SynSin checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "opts" not in ckpt:
        raise ValueError(f"{path}: a SynSin checkpoint is a dict with 'state_dict' and 'opts'")
    config = config_from_official_opts(ckpt["opts"])
    parts = official_state_dict_to_lib3d(ckpt["state_dict"])
    gen = SynSinGenerator(config)
    strict_load(gen, parts["generator"], f"{path} (SynSin generator)")
    disc = None
    if load_discriminator:
        disc = SynSinDiscriminator(config.ndf, config.num_discriminators, config.discriminator_layers)
        strict_load(disc, parts["discriminator"], f"{path} (SynSin discriminator)")
    return gen.eval(), disc, config


def official_intrinsics(n: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n, 3, 3) normalised K equal to the official code's identity ``K`` (fx = fy = cx = cy = 0.5, 90 deg)."""
    K = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    return K.expand(n, 3, 3).clone()
