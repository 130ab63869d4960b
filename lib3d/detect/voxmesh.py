"""Mesh R-CNN's ShapeNet models (``VoxMeshHead`` and ``SphereInitHead`` of ``shapenet/modeling/mesh_arch.py``):
one object per image, no detection. A ResNet backbone (torchvision layout), a voxel head on the last stage,
cubify, and mesh refinement whose vertices read every stage's features at their Blender-camera projection.

Dimension names: N images; C channels; H/W image size; V voxel size (48); V_n / F_n vertices / faces.

Coordinates (``shapenet/utils/coords.py``): meshes are predicted in the camera's world space (Blender's
``K`` maps them to NDC); voxels live in ``[-1, 1]^3`` of NDC with y flipped and z rescaled so the dataset's
depth range ``[0.67, 0.92]`` maps to ``[-1, 1]``; :func:`voxel_to_world` undoes this.

Official keys (``voxmesh`` checkpoints): ``backbone.stem.0`` / ``backbone.stem.1`` / ``backbone.stage1..4``
-> this module's ``backbone.conv1`` / ``backbone.bn1`` / ``backbone.layer1..4``; ``voxel_head.*`` unchanged;
``mesh_head.stages.<i>.vert_offset`` -> ``verts_offset`` (the rest unchanged); the buffer ``K`` is dropped
(a constant here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lib3d.detect.mesh_head import MeshRefinementStage, VoxelHead

__all__ = ["BLENDER_K", "VoxMesh", "load_official_voxmesh", "official_voxmesh_rules", "project_verts",
           "voxel_to_world"]

BLENDER_K = ((2.1875, 0.0, 0.0, 0.0), (0.0, 2.1875, 0.0, 0.0), (0.0, 0.0, -1.002002, -0.2002002), (0.0, 0.0, -1.0, 0.0))
"""Blender's default camera-to-NDC matrix used by the R2N2 renders."""
SHAPENET_Z_RANGE = (0.67, 0.92)


def project_verts(verts: torch.Tensor, P: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """``(N, V, 3)`` points through ``(N, 4, 4)`` projections, dividing by ``w`` (``|w|`` clamped to ``eps``)."""
    hom = torch.cat([verts, torch.ones_like(verts[..., :1])], -1) @ P.transpose(1, 2)
    w = hom[..., 3:]
    w = torch.where(w == 0, torch.ones_like(w), w.sign()) * w.abs().clamp(min=eps)
    return hom[..., :3] / w


def voxel_to_world(verts: torch.Tensor) -> torch.Tensor:
    """``(P, 3)`` voxel-space points to world space (flip y, undo the z rescaling, invert Blender's ``K``)."""
    x, y, z = verts.unbind(-1)
    zmin, zmax = SHAPENET_Z_RANGE
    m = 2.0 / (zmax - zmin)
    b = -2.0 * zmin / (zmax - zmin) - 1
    y, z = -y, (z - b) / m
    a1, a3, b1, b2 = 2.1875, -1.002002, -0.2002002, -1.0
    zw = b1 / (b2 * z - a3)
    return torch.stack([(b2 / a1) * (zw * x), (b2 / a1) * (zw * y), zw], -1)


class ShapeNetRefinementStage(MeshRefinementStage):
    """The ShapeNet refinement stage: the same parameters as Pix3D's, but vertices are projected with ``P``
    and y-flipped before ``vert_align`` over every backbone stage, and the first graph conv reads
    ``[image features, positions, previous features]``."""

    def forward(self, feats, meshes, vert_feats=None, P=None):  # type: ignore[override]
        from lib3d.ops import vert_align

        pos = meshes.verts_packed()
        padded = meshes.verts_padded()
        proj = project_verts(padded, P) if P is not None else padded
        proj = proj * torch.tensor([1.0, -1.0, 1.0], dtype=proj.dtype, device=proj.device)
        img = vert_align(list(feats), proj).reshape(-1, sum(f.shape[1] for f in feats))
        img = img.index_select(0, meshes.verts_padded_to_packed_idx())
        img = F.relu(self.bottleneck(img))
        x = torch.cat([img, pos] + ([vert_feats] if vert_feats is not None else []), 1)
        nopos = x
        for gconv in self.gconvs:
            nopos = F.relu(gconv(x, meshes.edges_packed()))
            x = torch.cat([nopos, pos], 1)
        return meshes.offset_verts(torch.tanh(self.verts_offset(x))), nopos


class VoxMesh(nn.Module):
    """Mesh R-CNN's ShapeNet model: ``"voxmesh"`` (voxel head + cubify + refinement) or ``"sphere"``
    (refinement of an icosphere).

    Args:
        arch: ``"voxmesh"`` or ``"sphere"``.
        depth: ResNet depth (50).
        voxel_size: V (48).
        cubify_thresh: 0.2.
        num_stages, num_graph_convs, hidden_dim: refinement (3, 3, 128).
        ico_sphere_level: for ``"sphere"`` (4).
    """

    def __init__(self, arch: Literal["voxmesh", "sphere"] = "voxmesh", depth: int = 50, voxel_size: int = 48,
                 cubify_thresh: float = 0.2, num_stages: int = 3, num_graph_convs: int = 3, hidden_dim: int = 128,
                 ico_sphere_level: int = 4):
        super().__init__()
        from lib3d.nn.resnet import ResNet

        self.arch = arch
        self.voxel_size = voxel_size
        self.cubify_thresh = cubify_thresh
        self.ico_sphere_level = ico_sphere_level
        self.backbone = ResNet(depth, "bn")
        dims = [self.backbone.out_channels[k] for k in ("c2", "c3", "c4", "c5")]
        if arch == "voxmesh":
            self.voxel_head = VoxelHead(dims[-1], voxel_size, 256, 4, 1)
        self.mesh_head = nn.Module()
        self.mesh_head.stages = nn.ModuleList(
            ShapeNetRefinementStage(sum(dims), 0 if i == 0 else hidden_dim, hidden_dim, num_graph_convs)
            for i in range(num_stages))

    def forward(self, images: torch.Tensor):
        """``(N, 3, H, W)`` normalised images -> ``(voxel logits (N, V, V, V) or None, [Meshes per stage])``."""
        from lib3d.ops import cubify, ico_sphere
        from lib3d.structures import Meshes

        feats = list(self.backbone(images).values())
        n = images.shape[0]
        P = torch.tensor(BLENDER_K, dtype=images.dtype, device=images.device).expand(n, 4, 4)
        voxels = None
        if self.arch == "voxmesh":
            x = F.interpolate(feats[-1], size=self.voxel_size // 2, mode="bilinear", align_corners=False)
            voxels = self.voxel_head(x)[:, 0]
            with torch.no_grad():
                m = cubify(voxels.sigmoid(), self.cubify_thresh)
            verts = [voxel_to_world(v) for v in m.verts_list()]
            meshes = Meshes(verts, m.faces_list())
        else:
            meshes = ico_sphere(self.ico_sphere_level, images.device).extend(n)
        out, vf = [], None
        for stage in self.mesh_head.stages:
            meshes, vf = stage(feats, meshes, vf, P)
            out.append(meshes)
        return voxels, out


def official_voxmesh_rules() -> tuple[tuple[str, str | None], ...]:
    """:func:`lib3d.nn.remap_keys` rules from a ShapeNet ``voxmesh`` / ``sphereinit`` checkpoint to :class:`VoxMesh`."""
    return ((r"K$", None), (r"backbone\.stem\.0\.", "backbone.conv1."), (r"backbone\.stem\.1\.", "backbone.bn1."),
            (r"backbone\.stage(\d)\.", r"backbone.layer\1."),
            (r"mesh_head\.stages\.(\d+)\.vert_offset\.", r"mesh_head.stages.\1.verts_offset."))


def load_official_voxmesh(path_or_state_dict: str | Mapping[str, Any], model: VoxMesh) -> None:
    """Load an official ShapeNet checkpoint (``weights_only``; the state dict or a dict holding it under
    ``"model"`` / ``"state_dict"``; a ``module.`` DDP prefix is stripped) into ``model`` strictly."""
    from lib3d.nn import read_weight_file, remap_keys, strict_load

    sd = read_weight_file(path_or_state_dict) if not isinstance(path_or_state_dict, Mapping) else path_or_state_dict
    for key in ("model", "state_dict"):
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    strict_load(model, remap_keys(sd, official_voxmesh_rules()), f"Mesh R-CNN ShapeNet {model.arch}")
