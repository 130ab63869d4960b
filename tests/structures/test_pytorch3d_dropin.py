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


# ------------------------------------------------------------------------------------------------------
# Exception types where PyTorch3D code can depend on them (issue 14): a wrong type raises an error that is
# both lib3d's TypeError and the ValueError / IndexError PyTorch3D raises.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Meshes(verts="abc", faces=[torch.zeros(0, 3, dtype=torch.long)]),
                                  lambda: Pointclouds(points="abc")])
def test_non_list_non_tensor_input_raises_value_error(make):
    """PyTorch3D: ``ValueError("... must be either a list or a tensor ...")``."""
    with pytest.raises(ValueError, match="list of tensors or a padded tensor"):
        make()
    with pytest.raises(TypeError):
        make()


def test_meshes_textures_of_the_wrong_kind_raise_value_error():
    """PyTorch3D: ``ValueError("Expected textures to be an instance of type TexturesBase; ...")``."""
    v, f = _tet()
    with pytest.raises(ValueError, match="textures"):
        Meshes([v], [f], textures=torch.ones(1, 4, 3))


@pytest.mark.parametrize("index", ["a", 0.5, torch.tensor([0.0]), torch.tensor([[0]])])
def test_meshes_and_pointclouds_bad_index_raise_index_error(index):
    """PyTorch3D's ``Meshes/Pointclouds.__getitem__``: ``IndexError`` for any other kind of index (float
    tensors and tensors that are not 1-D included)."""
    v, f = _tet()
    for batch in (Meshes([v, v], [f, f]), Pointclouds([v, v])):
        with pytest.raises(IndexError):
            batch[index]
        with pytest.raises(TypeError):
            batch[index]
    m = Meshes([v, v * 2], [f, f])
    assert torch.equal(m[torch.tensor([1])].verts_packed(), v * 2)
    assert torch.equal(m[[-1]].verts_packed(), v * 2) and len(m[torch.tensor([True, False])]) == 1


def test_transform_compose_with_a_non_transform_raises_value_error():
    """PyTorch3D: ``ValueError("Only possible to compose Transform3d objects; got ...")``."""
    from lib3d.geometry import Transform3d

    with pytest.raises(ValueError, match="Transform3d"):
        Transform3d().compose(torch.eye(4))


@pytest.mark.parametrize("index", ["a", 0.5, torch.tensor([0.0])])
def test_cameras_bad_index_raise_value_error(index):
    """PyTorch3D's ``CamerasBase.__getitem__``: ``ValueError("Invalid index type ...")``, a bool mask of the
    wrong length ``ValueError``, an index out of range ``IndexError``."""
    from lib3d.geometry import FoVPerspectiveCameras

    cams = FoVPerspectiveCameras(R=torch.eye(3).expand(2, 3, 3), T=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="index"):
        cams[index]
    with pytest.raises(ValueError, match="boolean"):
        cams[torch.tensor([True, False, True])]
    with pytest.raises(IndexError):
        cams[2]
    assert len(cams[torch.tensor([True, False])]) == 1 and len(cams[[0, 1]]) == 2 and len(cams[1:]) == 1


# ------------------------------------------------------------------------------------------------------
# TorchScript (issue 14): the functions PyTorch3D users script compile and give the eager numbers
# ------------------------------------------------------------------------------------------------------
def _script_cases():
    import lib3d.geometry as G

    g = torch.Generator().manual_seed(0)
    R = G.random_rotations(4, generator=g, dtype=torch.float64)
    q = G.matrix_to_quaternion(R)
    x = torch.rand(4, 3, generator=g, dtype=torch.float64)
    return [
        ("quaternion_multiply", (q, q.flip(0))),
        ("quaternion_invert", (q,)),
        ("quaternion_apply", (q, x)),
        ("so3_exp_map", (x,)),
        ("so3_log_map", (R,)),
        ("se3_exp_map", (torch.rand(4, 6, generator=g, dtype=torch.float64),)),
        ("se3_log_map", (G.se3_exp_map(torch.rand(4, 6, generator=g, dtype=torch.float64)),)),
        ("acos_linear_extrapolation", (torch.linspace(-1.0, 1.0, 9, dtype=torch.float64),)),
        ("world_to_view_matrix", (R, x)),
        ("sfm_projection_matrix", (x[:, :2] + 1.0, x[:, 1:])),
    ]


@pytest.mark.parametrize("case", range(10))
def test_torchscript_geometry_functions(case):
    import lib3d.geometry as G

    name, args = _script_cases()[case]
    fn = getattr(G, name)
    scripted = torch.jit.script(fn)
    torch.testing.assert_close(scripted(*args), fn(*args), rtol=0, atol=0)


def test_scripted_function_inside_a_scripted_module():
    """A user's ``torch.jit.script``-ed module calling lib3d functions (the PyTorch3D usage pattern)."""
    from lib3d.geometry import quaternion_to_matrix, so3_exp_map, world_to_view_matrix

    class Pose(torch.nn.Module):
        def forward(self, log_rot: torch.Tensor, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return world_to_view_matrix(so3_exp_map(log_rot) @ quaternion_to_matrix(q), t)

    m = torch.jit.script(Pose())
    args = (torch.rand(3, 3), torch.nn.functional.normalize(torch.rand(3, 4), dim=1), torch.rand(3, 3))
    torch.testing.assert_close(m(*args), Pose()(*args))
    with pytest.raises(ValueError, match="T"):  # eager calls still check their input
        world_to_view_matrix(torch.eye(3)[None], torch.zeros(2, 3))
