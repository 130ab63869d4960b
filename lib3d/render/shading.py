"""Mesh shading and the composed mesh renderer, with PyTorch3D's formulas and names.

Dimension names (see ``lib3d.render``): N batch, H/W image, K per-pixel face slots (nearest first),
V vertices and F faces of the packed batch, P occupied pixel slots, C colour channels (3).

Pipeline (the book's ``MeshRenderer``)::

    fragments = MeshRasterizer(cameras, raster_settings)(meshes_world)      # pix_to_face, zbuf, bary, dists
    colors    = phong_shading(meshes_world, fragments, lights, cameras, materials, texels)  # (N,H,W,K,3)
    images    = hard_rgb_blend(colors, fragments, blend_params)            # (N,H,W,4) RGBA

Shading happens in world space: surface points and normals are interpolated from the world mesh with the
barycentric coordinates, and the specular term looks from ``cameras.get_camera_center()``. Three models:

- Phong (per-pixel lighting of interpolated normals), Gouraud (lighting at the vertices, colours
  interpolated; needs ``TexturesVertex``), flat (one normal and the centroid per face);
- ``colors = (ambient + diffuse) * texels + specular`` with ``ambient = materials.ambient_color *
  lights.ambient_color``, ``diffuse = materials.diffuse_color * lights.diffuse(...)`` and
  ``specular = materials.specular_color * lights.specular(...)`` (PyTorch3D's ``_apply_lighting``).

Performance: the lighting is evaluated only on occupied slots (``pix_to_face >= 0``), gathered into a
packed (P, ...) list and scattered back, so empty pixels and empty soft slots cost nothing; hard shaders
read only the nearest slot (K=1). Everything is out-of-place and differentiable with respect to vertex
positions, texture values, lights, materials and cameras.

Deviation: a mesh without textures is shaded as white (PyTorch3D raises).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from lib3d._checks import check_choice, check_shape, is_tracing
from lib3d.structures.textures import interpolate_face_attributes  # re-exported: PyTorch3D's ops name
from lib3d.render.blending import BlendParams, hard_rgb_blend, sigmoid_alpha_blend, softmax_rgb_blend
from lib3d.render.lighting import (
    AmbientLights,
    DirectionalLights,
    Materials,
    PointLights,
    diffuse,
    specular,
)

__all__ = [
    "AmbientLights",
    "BlendParams",
    "DirectionalLights",
    "HardFlatShader",
    "HardGouraudShader",
    "HardPhongShader",
    "HardSilhouetteShader",
    "Materials",
    "MeshRenderer",
    "MeshRendererWithFragments",
    "PointLights",
    "ShaderName",
    "SoftGouraudShader",
    "SoftPhongShader",
    "SoftSilhouetteShader",
    "diffuse",
    "flat_shading",
    "gouraud_shading",
    "hard_rgb_blend",
    "interpolate_face_attributes",
    "phong_shading",
    "render_mesh",
    "shade",
    "sigmoid_alpha_blend",
    "softmax_rgb_blend",
    "specular",
]

ShaderName = Literal["hard_phong", "soft_phong", "hard_gouraud", "soft_gouraud", "hard_flat",
                     "soft_silhouette", "hard_silhouette"]
SHADERS: tuple[str, ...] = ("hard_phong", "soft_phong", "hard_gouraud", "soft_gouraud", "hard_flat",
                            "soft_silhouette", "hard_silhouette")


# ----------------------------------------------------------------------------------------------
# Packed slots: gather the occupied (pixel, slot) pairs, compute on them, scatter back
# ----------------------------------------------------------------------------------------------
class _Slots(NamedTuple):
    """Occupied pixel slots of a fragments grid, packed.

    sel: (P,) long flat index into N*H*W*K; face: (P,) long packed face; bary: (P, 3); batch: (P,) long.
    """

    sel: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    batch: torch.Tensor
    shape: tuple[int, int, int, int]


def _check_fragments(fragments) -> tuple[int, int, int, int]:
    for name in ("pix_to_face", "bary_coords"):
        if not hasattr(fragments, name):
            raise TypeError(f"fragments must have a '{name}' field (a Fragments), got {type(fragments).__name__}")
    sizes = check_shape("fragments.pix_to_face", fragments.pix_to_face, ("N", "H", "W", "K"), dtype="int")
    check_shape("fragments.bary_coords", fragments.bary_coords, ("N", "H", "W", "K", 3), sizes, dtype="float")
    return sizes["N"], sizes["H"], sizes["W"], sizes["K"]


def _slots(pix_to_face: torch.Tensor, bary_coords: torch.Tensor) -> _Slots:
    n, h, w, k = pix_to_face.shape
    flat = pix_to_face.reshape(-1)
    sel = torch.nonzero(flat >= 0).squeeze(1)
    return _Slots(sel, flat[sel], bary_coords.reshape(-1, 3)[sel], torch.div(sel, h * w * k, rounding_mode="floor"),
                  (n, h, w, k))


def _scatter(slots: _Slots, values: torch.Tensor) -> torch.Tensor:
    """(P, D) values -> (N, H, W, K, D) with zeros on empty slots (out-of-place, differentiable)."""
    n, h, w, k = slots.shape
    out = values.new_zeros((n * h * w * k, values.shape[-1]))
    return out.index_copy(0, slots.sel, values).reshape(n, h, w, k, values.shape[-1])


def _interp(slots: _Slots, face_attributes: torch.Tensor) -> torch.Tensor:
    """(F, 3, D) per-face-vertex attributes -> (P, D) barycentric interpolation on the slots."""
    vals = face_attributes[slots.face]  # (P, 3, D)
    return (slots.bary.to(vals.dtype)[..., None] * vals).sum(dim=-2)


# ----------------------------------------------------------------------------------------------
# Lighting on packed points
# ----------------------------------------------------------------------------------------------
def _per_point(props, batch: torch.Tensor | None, n: int):
    """Lights/materials broadcast to packed points: batch size 1 stays, batch N is gathered by ``batch``."""
    if len(props) == 1:
        return props
    if len(props) != n:
        raise ValueError(f"{type(props).__name__} has batch size {len(props)}; expected 1 or the batch size "
                         f"of the fragments/meshes ({n})")
    return props.gather_props(batch)


def _camera_centers(cameras, like: torch.Tensor, batch: torch.Tensor | None, n: int) -> torch.Tensor:
    if cameras is None:
        raise ValueError("cameras must be given (at the shader's construction or in the forward call)")
    center = cameras.get_camera_center().to(device=like.device, dtype=like.dtype)
    center = center.reshape(-1, 3)
    if center.shape[0] == 1:
        return center
    if center.shape[0] != n:
        raise ValueError(f"cameras have batch size {center.shape[0]}; expected 1 or the batch size of the "
                         f"fragments/meshes ({n})")
    return center[batch]


def _apply_lighting(points: torch.Tensor, normals: torch.Tensor, lights, camera_position: torch.Tensor,
                    materials: Materials) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch3D's ``_apply_lighting`` on packed (P, 3) points/normals with (P or 1, ...) properties.

    Returns:
        ambient (P or 1, C), diffuse (P, C), specular (P, C) colours.
    """
    materials = materials.to(device=points.device, dtype=points.dtype)
    lights = lights.to(device=points.device, dtype=points.dtype)
    light_diffuse = lights.diffuse(normals=normals, points=points)
    light_specular = lights.specular(normals=normals, points=points, camera_position=camera_position,
                                     shininess=materials.shininess)
    ambient = materials.ambient_color * lights.ambient_color
    return ambient, materials.diffuse_color * light_diffuse, materials.specular_color * light_specular


def _shade_packed(points, normals, texels, lights, cameras, materials, batch, n: int) -> torch.Tensor:
    """colors = (ambient + diffuse) * texels + specular on packed points (P, 3) -> (P, C).

    ``batch`` (P,) is each point's batch element among ``n``; properties of batch 1 broadcast.
    """
    lights_p = _per_point(lights, batch, n)
    materials_p = _per_point(materials, batch, n)
    cam = _camera_centers(cameras, points, batch, n)
    ambient, diff, spec = _apply_lighting(points, normals, lights_p, cam, materials_p)
    if texels is None:
        return ambient + diff + spec
    return (ambient + diff) * texels + spec


def _check_meshes(meshes) -> None:
    for name in ("verts_packed", "faces_packed"):
        if not hasattr(meshes, name):
            raise TypeError(f"meshes must be a Meshes, got {type(meshes).__name__}")


def _sample_texels(meshes, fragments) -> torch.Tensor | None:
    """(N, H, W, K, C) texture colours from the mesh's textures; None when the mesh has none (white)."""
    textures = getattr(meshes, "textures", None)
    if textures is None:
        return None
    if hasattr(meshes, "sample_textures"):
        return meshes.sample_textures(fragments)
    return textures.sample_textures(fragments, faces_packed=meshes.faces_packed())


class _PackedFragments(NamedTuple):
    """Occupied slots laid out as fragments of shape (N, 1, P_max, 1) for the textures' ``sample_textures``."""

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor


def _sample_texels_packed(meshes, slots: _Slots) -> torch.Tensor | None:
    """(P, C) texture colours of the occupied slots only (None when the mesh has no textures: white).

    The slots of batch element n are laid out as a 1 x P_n "image" of batch element n (padded with empty
    slots to the longest), so any texture type samples exactly what it would on the full grid, at the cost
    of the occupied slots instead of all N*H*W*K.
    """
    textures = getattr(meshes, "textures", None)
    if textures is None:
        return None
    n = slots.shape[0]
    p = slots.sel.numel()
    counts = torch.bincount(slots.batch, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(p, device=slots.sel.device) - first[slots.batch]
    p_max = max(int(counts.max()) if p else 0, 1)
    p2f = slots.face.new_full((n, p_max), -1).index_put((slots.batch, pos), slots.face)
    bary = slots.bary.new_zeros((n, p_max, 3)).index_put((slots.batch, pos), slots.bary)
    zeros = bary.new_zeros((n, 1, p_max, 1))
    frags = _PackedFragments(p2f.reshape(n, 1, p_max, 1), bary.reshape(n, 1, p_max, 1, 3), zeros, zeros)
    texels = _sample_texels(meshes, frags)  # (N, 1, P_max, 1, C)
    return texels.reshape(n, p_max, -1)[slots.batch, pos]


def _packed_texels(texels: torch.Tensor | None, slots: _Slots, like: torch.Tensor) -> torch.Tensor | None:
    if texels is None:
        return None
    n, h, w, k = slots.shape
    if texels.dim() != 5 or tuple(texels.shape[:4]) != (n, h, w, k):
        raise ValueError(f"texels must have shape (N, H, W, K, C) = ({n}, {h}, {w}, {k}, C), "
                         f"got {tuple(texels.shape)}")
    return texels.reshape(-1, texels.shape[-1])[slots.sel].to(like.dtype)


def phong_shading(meshes, fragments, lights, cameras, materials: Materials,
                  texels: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel Phong shading (``pytorch3d.renderer.mesh.shading.phong_shading``).

    The world position and vertex normal are interpolated with the barycentric coordinates of each slot,
    then ``colors = (ambient + diffuse) * texels + specular`` (Phong 1975, "Illumination for computer
    generated pictures").

    Args:
        meshes: world-space ``Meshes`` (``verts_packed``, ``faces_packed``, ``verts_normals_packed``).
        fragments: rasterizer output: ``pix_to_face`` (N, H, W, K), ``bary_coords`` (N, H, W, K, 3).
        lights: ``PointLights`` / ``DirectionalLights`` / ``AmbientLights`` of batch 1 or N.
        cameras: cameras of batch 1 or N (``get_camera_center()`` -> (N, 3)).
        materials: ``Materials`` of batch 1 or N.
        texels: (N, H, W, K, C) float surface colours (``meshes.sample_textures(fragments)``) or None (white).

    Returns:
        (N, H, W, K, C) float colours, 0 on empty slots.
    """
    _check_meshes(meshes)
    _check_fragments(fragments)
    slots = _slots(fragments.pix_to_face, fragments.bary_coords)
    texels_p = _packed_texels(texels, slots, meshes.verts_packed())
    return _scatter(slots, _phong_packed(meshes, slots, texels_p, lights, cameras, materials))


def _phong_packed(meshes, slots: _Slots, texels_p, lights, cameras, materials) -> torch.Tensor:
    """Phong colours (P, C) of the occupied slots."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    points = _interp(slots, verts[faces])
    normals = _interp(slots, meshes.verts_normals_packed()[faces])
    return _shade_packed(points, normals, texels_p, lights, cameras, materials, slots.batch, slots.shape[0])


def gouraud_shading(meshes, fragments, lights, cameras, materials: Materials) -> torch.Tensor:
    """Gouraud shading (``pytorch3d.renderer.mesh.shading.gouraud_shading``).

    Lighting is evaluated at the vertices with the vertex normals and vertex colours
    (``c_v = colour_v * (ambient + diffuse_v) + specular_v``), then interpolated with the barycentric
    coordinates (Gouraud 1971). For a batch of several meshes the lights, materials and cameras of mesh n
    light the vertices of mesh n.

    Args:
        meshes: world-space ``Meshes`` with ``TexturesVertex`` (or no textures: white).
        fragments: rasterizer output: ``pix_to_face`` (N, H, W, K), ``bary_coords`` (N, H, W, K, 3).
        lights, cameras, materials: as ``phong_shading``.

    Returns:
        (N, H, W, K, C) float colours, 0 on empty slots.

    Raises:
        ValueError: if the mesh textures are not per-vertex colours.
    """
    _check_meshes(meshes)
    _check_fragments(fragments)
    slots = _slots(fragments.pix_to_face, fragments.bary_coords)
    return _scatter(slots, _gouraud_packed(meshes, slots, lights, cameras, materials))


def _gouraud_packed(meshes, slots: _Slots, lights, cameras, materials) -> torch.Tensor:
    """Gouraud colours (P, C) of the occupied slots."""
    textures = getattr(meshes, "textures", None)
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    if textures is not None and not hasattr(textures, "verts_features_packed"):
        raise ValueError(f"gouraud_shading needs TexturesVertex, got {type(textures).__name__}")
    colors_v = None if textures is None else textures.verts_features_packed().to(verts.dtype)
    shaded = _shade_packed(verts, meshes.verts_normals_packed(), colors_v, lights, cameras, materials,
                           meshes.verts_packed_to_mesh_idx(), len(meshes))
    return _interp(slots, shaded[faces])


def flat_shading(meshes, fragments, lights, cameras, materials: Materials,
                 texels: torch.Tensor | None) -> torch.Tensor:
    """Flat shading (``pytorch3d.renderer.mesh.shading.flat_shading``).

    Each slot is lit with its face's normal at the face centroid (mean of its three vertices);
    ``colors = (ambient + diffuse) * texels + specular``.

    Args:
        meshes, fragments, lights, cameras, materials, texels: as ``phong_shading``.

    Returns:
        (N, H, W, K, C) float colours, 0 on empty slots.
    """
    _check_meshes(meshes)
    _check_fragments(fragments)
    slots = _slots(fragments.pix_to_face, fragments.bary_coords)
    texels_p = _packed_texels(texels, slots, meshes.verts_packed())
    return _scatter(slots, _flat_packed(meshes, slots, texels_p, lights, cameras, materials))


def _flat_packed(meshes, slots: _Slots, texels_p, lights, cameras, materials) -> torch.Tensor:
    """Flat colours (P, C) of the occupied slots."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    points = verts[faces].mean(dim=-2)[slots.face]
    normals = meshes.faces_normals_packed()[slots.face].to(points.dtype)
    return _shade_packed(points, normals, texels_p, lights, cameras, materials, slots.batch, slots.shape[0])


# ----------------------------------------------------------------------------------------------
# The composed shader function
# ----------------------------------------------------------------------------------------------
def _first_slot(fragments):
    """Fragments restricted to the nearest slot (hard shaders read only K=0)."""
    if fragments.pix_to_face.shape[-1] == 1 or not hasattr(fragments, "_replace"):
        return fragments
    changes = {"pix_to_face": fragments.pix_to_face[..., :1], "bary_coords": fragments.bary_coords[..., :1, :]}
    for name in ("zbuf", "dists"):
        val = getattr(fragments, name, None)
        if val is not None:
            changes[name] = val[..., :1]
    return fragments._replace(**changes)


def _occupied_prefix(fragments):
    """Fragments truncated to the slots any pixel uses (+1 empty slot), when slots fill nearest-first.

    Soft blending over K slots costs O(N H W K); most soft slots are empty (e.g. ~90% for the book's
    K=50 cow at 256 px). Empty slots contribute nothing (probability 0, weight 0, masked depth 0), so
    dropping the trailing ones is exact; one empty slot is kept wherever the original had one so that the
    masked ``z_inv = 0`` still takes part in the softmax's max, as in PyTorch3D.
    """
    if is_tracing() or not hasattr(fragments, "_replace"):
        return fragments
    p2f = fragments.pix_to_face
    k = p2f.shape[-1]
    occupied = p2f >= 0
    counts = occupied.sum(-1)
    k_eff = int(counts.max()) + 1 if counts.numel() else 1
    if k_eff >= k:
        return fragments
    if not bool((occupied[..., :k_eff].sum(-1) == counts).all()):  # not a prefix: keep everything
        return fragments
    changes = {"pix_to_face": p2f[..., :k_eff], "bary_coords": fragments.bary_coords[..., :k_eff, :]}
    for name in ("zbuf", "dists"):
        val = getattr(fragments, name, None)
        if val is not None:
            changes[name] = val[..., :k_eff]
    return fragments._replace(**changes)


def _clip_range(cameras, znear, zfar):
    znear = getattr(cameras, "znear", 1.0) if znear is None else znear
    zfar = getattr(cameras, "zfar", 100.0) if zfar is None else zfar
    return znear, zfar


def shade(fragments, meshes, shader: ShaderName = "hard_phong", *, cameras=None, lights=None,
          materials: Materials | None = None, blend_params: BlendParams | None = None,
          znear: float | torch.Tensor | None = None, zfar: float | torch.Tensor | None = None) -> torch.Tensor:
    """Shade and blend rasterized fragments into RGBA images: the body of every shader module.

    ``hard_*`` shaders blend with ``hard_rgb_blend`` (nearest face, background elsewhere), ``soft_*`` with
    ``softmax_rgb_blend`` (znear/zfar default to the cameras' ``znear``/``zfar`` or 1/100 as in PyTorch3D),
    ``soft_silhouette`` is ``sigmoid_alpha_blend`` of white, ``hard_silhouette`` is the coverage mask.

    Args:
        fragments: rasterizer output for ``meshes`` (``pix_to_face`` (N, H, W, K), ``bary_coords``, ``zbuf``,
            ``dists``).
        meshes: the world-space ``Meshes`` that was rasterized.
        shader: one of ``SHADERS``.
        cameras: the cameras (needed by all but the silhouette shaders).
        lights: default ``PointLights()`` (PyTorch3D's default: white-ish light at (0, 1, 0)).
        materials: default ``Materials()``.
        blend_params: default ``BlendParams()`` (sigma = gamma = 1e-4, white background).
        znear, zfar: override the soft blend's depth range.

    Returns:
        (N, H, W, 4) float RGBA images.
    """
    check_choice("shader", shader, SHADERS)
    blend_params = BlendParams() if blend_params is None else blend_params
    lights = PointLights() if lights is None else lights
    materials = Materials() if materials is None else materials
    _check_fragments(fragments)
    fragments = _first_slot(fragments) if shader.startswith("hard") else _occupied_prefix(fragments)
    n, h, w, _ = _check_fragments(fragments)
    dtype = fragments.bary_coords.dtype
    if shader == "soft_silhouette":
        ones = fragments.bary_coords.new_ones(()).expand(n, h, w, 1, 3)
        return sigmoid_alpha_blend(ones, fragments, blend_params)
    if shader == "hard_silhouette":
        ones = fragments.bary_coords.new_ones(()).expand(n, h, w, 1, 3)
        return hard_rgb_blend(ones, fragments, blend_params._replace(background_color=(1.0, 1.0, 1.0)))
    _check_meshes(meshes)
    slots = _slots(fragments.pix_to_face, fragments.bary_coords)
    if shader.endswith("gouraud"):
        colors = _gouraud_packed(meshes, slots, lights, cameras, materials)
    else:
        # Texture colours of the occupied slots only (not of all N*H*W*K).
        texels = _sample_texels_packed(meshes, slots)
        texels = None if texels is None else texels.to(meshes.verts_packed().dtype)
        fn = _phong_packed if shader.endswith("phong") else _flat_packed
        colors = fn(meshes, slots, texels, lights, cameras, materials)
    colors = _scatter(slots, colors.to(dtype))
    if shader.startswith("hard"):
        return hard_rgb_blend(colors, fragments, blend_params)
    znear, zfar = _clip_range(cameras, znear, zfar)
    return softmax_rgb_blend(colors, fragments, blend_params, znear=znear, zfar=zfar)


# ----------------------------------------------------------------------------------------------
# Modules with PyTorch3D's names (the book's API); forward makes one call to ``shade``
# ----------------------------------------------------------------------------------------------
class _ShaderBase(nn.Module):
    """Holds cameras, lights, materials and blend params; forward kwargs override them (PyTorch3D's API)."""

    kind: str = "hard_phong"

    def __init__(self, device: Any = None, cameras=None, lights=None, materials: Materials | None = None,
                 blend_params: BlendParams | None = None) -> None:
        super().__init__()
        self.cameras = cameras
        self.lights = lights if lights is not None else PointLights(device=device)
        self.materials = materials if materials is not None else Materials(device=device)
        self.blend_params = blend_params if blend_params is not None else BlendParams()

    def to(self, device):
        """Move the held cameras, lights and materials to ``device``."""
        super().to(device)
        if self.cameras is not None and hasattr(self.cameras, "to"):
            self.cameras = self.cameras.to(device)
        self.lights = self.lights.to(device)
        self.materials = self.materials.to(device)
        return self

    def forward(self, fragments, meshes, **kwargs) -> torch.Tensor:
        """(N, H, W, 4) RGBA; kwargs ``cameras``, ``lights``, ``materials``, ``blend_params``, ``znear``,
        ``zfar`` override the held values."""
        return shade(fragments, meshes, self.kind, cameras=kwargs.get("cameras", self.cameras),
                     lights=kwargs.get("lights", self.lights), materials=kwargs.get("materials", self.materials),
                     blend_params=kwargs.get("blend_params", self.blend_params), znear=kwargs.get("znear"),
                     zfar=kwargs.get("zfar"))


class HardPhongShader(_ShaderBase):
    """Phong shading + ``hard_rgb_blend`` (``pytorch3d.renderer.HardPhongShader``)."""

    kind = "hard_phong"


class SoftPhongShader(_ShaderBase):
    """Phong shading + ``softmax_rgb_blend`` (``pytorch3d.renderer.SoftPhongShader``)."""

    kind = "soft_phong"


class HardGouraudShader(_ShaderBase):
    """Gouraud shading + ``hard_rgb_blend`` (``pytorch3d.renderer.HardGouraudShader``)."""

    kind = "hard_gouraud"


class SoftGouraudShader(_ShaderBase):
    """Gouraud shading + ``softmax_rgb_blend`` (``pytorch3d.renderer.SoftGouraudShader``)."""

    kind = "soft_gouraud"


class HardFlatShader(_ShaderBase):
    """Flat shading + ``hard_rgb_blend`` (``pytorch3d.renderer.HardFlatShader``)."""

    kind = "hard_flat"


class SoftSilhouetteShader(_ShaderBase):
    """SoftRas silhouette: ``sigmoid_alpha_blend`` of white (``pytorch3d.renderer.SoftSilhouetteShader``).

    The alpha channel of the output is the soft silhouette.
    """

    kind = "soft_silhouette"

    def __init__(self, blend_params: BlendParams | None = None, **kwargs) -> None:
        super().__init__(blend_params=blend_params, **kwargs)


class HardSilhouetteShader(_ShaderBase):
    """Hard silhouette: RGB white, alpha 1 where a face covers the pixel centre, else 0."""

    kind = "hard_silhouette"


class MeshRenderer(nn.Module):
    """Rasterizer + shader (``pytorch3d.renderer.MeshRenderer``): ``images = shader(rasterizer(meshes))``.

    Args:
        rasterizer: a ``MeshRasterizer`` (cameras + ``RasterizationSettings``).
        shader: a shader module (``HardPhongShader`` ...).

    Forward kwargs (``cameras``, ``lights``, ``materials``, ``blend_params``, ...) go to both.
    """

    def __init__(self, rasterizer: nn.Module, shader: nn.Module) -> None:
        super().__init__()
        self.rasterizer = rasterizer
        self.shader = shader

    def to(self, device):
        self.rasterizer = self.rasterizer.to(device)
        self.shader = self.shader.to(device)
        return self

    def forward(self, meshes_world, **kwargs) -> torch.Tensor:
        """(N, H, W, 4) RGBA images of ``meshes_world``."""
        fragments = self.rasterizer(meshes_world, **kwargs)
        return self.shader(fragments, meshes_world, **kwargs)


class MeshRendererWithFragments(MeshRenderer):
    """As ``MeshRenderer`` but returns ``(images, fragments)`` (``pytorch3d.renderer.MeshRendererWithFragments``)."""

    def forward(self, meshes_world, **kwargs):
        fragments = self.rasterizer(meshes_world, **kwargs)
        return self.shader(fragments, meshes_world, **kwargs), fragments


def render_mesh(meshes, cameras, lights=None, materials: Materials | None = None, raster_settings=None,
                shader: ShaderName = "hard_phong", blend_params: BlendParams | None = None) -> torch.Tensor:
    """Render world-space meshes to RGBA images in one call (the book's ``MeshRenderer`` pipeline).

    Args:
        meshes: world-space ``Meshes`` of batch N (or 1 with N cameras: extend it first, as in PyTorch3D).
        cameras: cameras of batch N.
        lights: default ``PointLights()``.
        materials: default ``Materials()``.
        raster_settings: ``RasterizationSettings`` (default: PyTorch3D's, 256x256, K=1, no blur).
        shader: one of ``"hard_phong"``, ``"soft_phong"``, ``"hard_gouraud"``, ``"soft_gouraud"``,
            ``"hard_flat"``, ``"soft_silhouette"``, ``"hard_silhouette"``.
        blend_params: default ``BlendParams()``.

    Returns:
        (N, H, W, 4) float RGBA images.

    Example:
        >>> R, T = look_at_view_transform(2.7, 0, 180)
        >>> cams = FoVPerspectiveCameras(R=R, T=T)
        >>> img = render_mesh(mesh, cams, PointLights(location=[[0.0, 0.0, -3.0]]),
        ...                   raster_settings=RasterizationSettings(image_size=512))
    """
    from lib3d.render.mesh_rasterizer import rasterize_world_meshes

    check_choice("shader", shader, SHADERS)
    fragments = rasterize_world_meshes(meshes, cameras, raster_settings)
    return shade(fragments, meshes, shader, cameras=cameras, lights=lights, materials=materials,
                 blend_params=blend_params)
