"""PyTorch3D names and behaviours of Meshes / Pointclouds / packed ops that ported code relies on (issue 14),
written from PyTorch3D's documented behaviour."""

import pytest
import torch

from lib3d.ops import packed_to_padded
from lib3d.ops.points_normals import estimate_pointcloud_normals
from lib3d.structures import Meshes, Pointclouds


def _tet(dtype=torch.float32):
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=dtype)
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def test_empty_meshes_and_members():
    m = Meshes(verts=[], faces=[])
    assert len(m) == 0 and m.isempty() and m.valid.shape == (0,)
    assert m.verts_padded().shape == (0, 0, 3) and m.faces_padded().shape == (0, 0, 3)
    v, f = _tet()
    m = Meshes([v, torch.zeros(0, 3)], [f, torch.zeros(0, 3, dtype=torch.int64)])
    assert m.valid.tolist() == [True, False]
    assert m.verts_padded().shape == (2, 4, 3) and m.num_faces_per_mesh().tolist() == [4, 0]
    assert m.verts_normals_packed().shape == (4, 3) and m.edges_packed().shape == (6, 2)


def test_verts_list_returns_the_given_leaves():
    v, f = _tet()
    v = v.clone().requires_grad_(True)
    m = Meshes([v], [f])
    assert m.verts_list()[0] is v
    (m.verts_packed() ** 2).sum().backward()
    torch.testing.assert_close(v.grad, 2 * v.detach())
    v2 = v.detach().clone().requires_grad_(True)
    m = Meshes([v2], [f])
    m.verts_list()[0].sum().backward()
    assert v2.grad is not None


def test_verts_normals_argument_and_has_verts_normals():
    v, f = _tet()
    m = Meshes([v], [f])
    assert not m.has_verts_normals()
    m.verts_normals_packed()
    assert m.has_verts_normals()
    given = torch.nn.functional.normalize(torch.ones(4, 3), dim=1)
    m = Meshes([v], [f], verts_normals=[given])
    assert m.has_verts_normals() and torch.equal(m.verts_normals_packed(), given)
    assert torch.equal(Meshes(v[None], f[None], verts_normals=given[None]).verts_normals_padded(), given[None])
    with pytest.raises(ValueError, match="verts_normals"):
        Meshes([v], [f], verts_normals=[given[:3]])


def test_meshes_split_and_laplacian_packed():
    v, f = _tet()
    m = Meshes([v, v * 2, v + 1], [f, f, f[:2]])
    parts = m.split([1, 2])
    assert [len(p) for p in parts] == [1, 2]
    assert parts[1].num_faces_per_mesh().tolist() == [4, 2]
    torch.testing.assert_close(parts[1].verts_packed(), torch.cat([v * 2, v + 1]))
    with pytest.raises(ValueError, match="split_sizes"):
        m.split([1, 1])
    lap = m.laplacian_packed().to_dense()
    assert lap.shape == (12, 12)
    torch.testing.assert_close(lap.diagonal(), -torch.ones(12))
    # every vertex of the tetrahedron has 3 neighbours: off-diagonal weights 1/3, rows sum to 0
    torch.testing.assert_close(lap[:4, :4], (torch.ones(4, 4) - torch.eye(4)) / 3 - torch.eye(4))
    torch.testing.assert_close(lap.sum(1)[:8], torch.zeros(8), atol=1e-6, rtol=0)


def test_empty_pointclouds_and_list_identity():
    assert len(Pointclouds([])) == 0
    p = torch.rand(5, 3, requires_grad=True)
    pc = Pointclouds([p, torch.zeros(0, 3)])
    assert pc.valid.tolist() == [True, False] and pc.points_padded().shape == (2, 5, 3)
    assert pc.points_list()[0] is p and pc.normals_list() is None and pc.features_list() is None
    pts, nrm, feat = pc.get_cloud(0)
    assert pts is p and nrm is None and feat is None
    with pytest.raises(IndexError):
        pc.get_cloud(2)


def test_pointclouds_split_subsample_inside_box_update_padded():
    g = torch.Generator().manual_seed(0)
    clouds = [torch.rand(n, 3, generator=g) for n in (10, 3, 7)]
    feats = [torch.rand(n, 2, generator=g) for n in (10, 3, 7)]
    pc = Pointclouds(clouds, features=feats)
    a, b = pc.split([2, 1])
    assert len(a) == 2 and torch.equal(b.points_packed(), clouds[2])
    sub = pc.subsample(4, generator=g)
    assert sub.num_points_per_cloud().tolist() == [4, 3, 4]
    for orig, s_pts, s_feat, f in zip(clouds, sub.points_list(), sub.features_list(), feats):
        # each kept point is one of the cloud's points, with its own features
        match = (s_pts[:, None] == orig[None]).all(-1)
        assert match.any(1).all()
        torch.testing.assert_close(s_feat, f[match.float().argmax(1)])
    assert pc.subsample([100, 100, 100]) is pc
    box = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    inside = pc.inside_box(box)
    torch.testing.assert_close(inside, ((pc.points_packed() >= 0) & (pc.points_packed() <= 0.5)).all(1))
    per_cloud = torch.stack([box, box * 2, box * 0])
    assert pc.inside_box(per_cloud).shape == (20,)
    with pytest.raises(ValueError, match="box"):
        pc.inside_box(torch.zeros(3, 3))
    new = pc.update_padded(pc.points_padded() + 1, new_normals_padded=torch.ones(3, 10, 3),
                           new_features_padded=torch.zeros(3, 10, 5))
    torch.testing.assert_close(new.points_packed(), pc.points_packed() + 1)
    assert new.normals_packed().shape == (20, 3) and new.features_packed().shape == (20, 5)


def test_estimate_normals_plane_and_sphere():
    g = torch.Generator().manual_seed(1)
    plane = torch.rand(300, 3, generator=g, dtype=torch.float64)
    plane[:, 2] = 0.25
    sphere = torch.nn.functional.normalize(torch.randn(400, 3, generator=g, dtype=torch.float64), dim=1)
    pc = Pointclouds([plane, sphere])
    n = pc.estimate_normals(neighborhood_size=20)
    assert n.shape == (2, 400, 3)
    torch.testing.assert_close(n[0, :300, 2].abs(), torch.ones(300, dtype=torch.float64))
    assert n[0, 300:].abs().sum() == 0  # padding
    # on the sphere the normal is radial; the disambiguation points it to the side most neighbours lie on
    assert (n[1] * sphere).sum(-1).abs().min() > 0.95
    # a bare tensor works too, and the disambiguation rule holds for every point
    nt = estimate_pointcloud_normals(sphere[None], 20)
    torch.testing.assert_close(nt, n[1:, :400])
    with pytest.raises(ValueError, match="neighborhood_size"):
        pc.estimate_normals(neighborhood_size=2)
    with pytest.raises(ValueError, match="immutable"):
        pc.estimate_normals(assign_to_self=True)


def test_packed_to_padded_of_meshes_features():
    v, f = _tet()
    m = Meshes([v, v], [f, f[:3]])
    feats = torch.rand(7, 2, 4)  # any trailing shape per face
    pad = packed_to_padded(feats, m.mesh_to_faces_packed_first_idx(), 4)
    assert pad.shape == (2, 4, 2, 4) and pad[1, 3].abs().sum() == 0
