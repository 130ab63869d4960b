"""The ShapeNet Mesh R-CNN model: forward shapes and the official voxmesh key layout (torchvision ResNet-50
wrapped as stem / stage1..4, VoxelHead, MeshRefinementHead with ``vert_offset``)."""

import torch

from lib3d.detect.voxmesh import VoxMesh, load_official_voxmesh, voxel_to_world


def _official_voxmesh_keys(model: VoxMesh) -> dict:
    """Official names, built from torchvision's ResNet-50 keys and meshrcnn's head names."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = {}
    for k, s in ours.items():
        if k.startswith("backbone."):
            rest = k[len("backbone."):]
            if rest.endswith("num_batches_tracked"):
                pass
            rest = rest.replace("conv1.", "stem.0.", 1) if rest.startswith("conv1.") else rest
            rest = rest.replace("bn1.", "stem.1.", 1) if rest.startswith("bn1.") else rest
            for i in range(1, 5):
                if rest.startswith(f"layer{i}."):
                    rest = f"stage{i}." + rest[len(f"layer{i}."):]
            out["backbone." + rest] = s
        else:
            out[k.replace("verts_offset", "vert_offset")] = s
    out["K"] = (4, 4)
    return out


def test_official_layout_and_forward():
    torch.manual_seed(0)
    m = VoxMesh("voxmesh", depth=50)
    keys = _official_voxmesh_keys(m)
    # spot checks of the official shapes: 3840 = 256 + 512 + 1024 + 2048 image channels, 48 voxel depths
    assert keys["mesh_head.stages.0.bottleneck.weight"] == (128, 3840)
    assert keys["mesh_head.stages.1.gconvs.0.w0.weight"] == (128, 259)
    assert keys["mesh_head.stages.2.vert_offset.weight"] == (3, 131)
    assert keys["voxel_head.predictor.weight"] == (48, 256, 1, 1)
    assert keys["backbone.stage4.2.conv3.weight"] == (2048, 512, 1, 1)
    sd = {k: torch.randn(s) if not k.endswith("num_batches_tracked") else torch.tensor(0) for k, s in keys.items()}
    load_official_voxmesh({"model": {"module." + k: v for k, v in sd.items()}}, m)
    assert torch.equal(m.backbone.conv1.weight, sd["backbone.stem.0.weight"])
    assert torch.equal(m.mesh_head.stages[2].verts_offset.weight, sd["mesh_head.stages.2.vert_offset.weight"])
    small = VoxMesh("voxmesh", depth=18, voxel_size=8, hidden_dim=8, num_graph_convs=1).eval()
    with torch.no_grad():
        vox, meshes = small(torch.rand(2, 3, 64, 64))
    assert vox.shape == (2, 8, 8, 8) and len(meshes) == 3 and len(meshes[-1]) == 2


def test_voxel_to_world_inverts_blender_projection():
    from lib3d.detect.voxmesh import BLENDER_K, project_verts

    p = torch.tensor([[[0.1, -0.05, -0.8], [0.0, 0.1, -0.75]]])
    ndc = project_verts(p, torch.tensor(BLENDER_K)[None])[0]
    zmin, zmax = 0.67, 0.92
    vox = torch.stack([ndc[:, 0], -ndc[:, 1], ndc[:, 2] * 2 / (zmax - zmin) - 2 * zmin / (zmax - zmin) - 1], 1)
    assert torch.allclose(voxel_to_world(vox), p[0], atol=1e-5)
