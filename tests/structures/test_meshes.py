"""Meshes / Pointclouds / textures: views, index maps, normals, immutability, errors."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.structures import (
    Meshes,
    Pointclouds,
    TexturesAtlas,
    TexturesUV,
    TexturesVertex,
    interpolate_face_attributes,
    join_meshes_as_batch,
    join_meshes_as_scene,
    join_pointclouds_as_batch,
)


def random_mesh(nv, nf, gen):
    verts = torch.rand(nv, 3, generator=gen)
    faces = torch.stack([torch.randperm(nv, generator=gen)[:3] for _ in range(nf)]) if nf else \
        torch.zeros(0, 3, dtype=torch.int64)
    return verts, faces


def batch(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    vs, fs = zip(*[random_mesh(nv, nf, g) for nv, nf in sizes])
    return list(vs), list(fs)


@given(st.lists(st.tuples(st.integers(3, 9), st.integers(0, 7)), min_size=1, max_size=4))
@settings(max_examples=40, deadline=None)
def test_views_round_trip(sizes):
    verts, faces = batch(sizes)
    m = Meshes(verts, faces)
    for a, b in zip(m.verts_list(), verts):
        assert torch.equal(a, b)
    for a, b in zip(m.faces_list(), faces):
        assert torch.equal(a, b)
    vp = m.verts_padded()
    fp = m.faces_padded()
    for i, (v, f) in enumerate(zip(verts, faces)):
        assert torch.equal(vp[i, : len(v)], v) and (vp[i, len(v):] == 0).all()
        assert torch.equal(fp[i, : len(f)], f) and (fp[i, len(f):] == -1).all()
    # packed faces index packed verts: same triangles as the list view
    assert torch.equal(m.verts_packed()[m.faces_packed()],
                       torch.cat([v[f] for v, f in zip(verts, faces)]))
    # index maps
    assert torch.equal(m.verts_packed(), vp.view(-1, 3)[m.verts_padded_to_packed_idx()])
    assert m.verts_packed_to_mesh_idx().tolist() == [i for i, (nv, _) in enumerate(sizes) for _ in range(nv)]
    assert m.faces_packed_to_mesh_idx().tolist() == [i for i, (_, nf) in enumerate(sizes) for _ in range(nf)]
    first = [sum(nv for nv, _ in sizes[:i]) for i in range(len(sizes))]
    assert m.mesh_to_verts_packed_first_idx().tolist() == first
    # a padded construction gives the same padded views
    m2 = Meshes(m.verts_padded(), m.faces_padded())
    assert torch.equal(m2.faces_padded(), fp)


def brute_edges(faces_list):
    out = []
    for f in faces_list:
        es = set()
        for a, b, c in f.tolist():
            for u, v in ((a, b), (b, c), (c, a)):
                es.add((min(u, v), max(u, v)))
        out.append(sorted(es))
    return out


def test_edges_against_brute_force():
    verts, faces = batch([(6, 5), (4, 3), (8, 9)], seed=3)
    m = Meshes(verts, faces)
    e = m.edges_packed()
    e2m = m.edges_packed_to_mesh_idx()
    first = m.mesh_to_verts_packed_first_idx()
    expected = brute_edges(faces)
    for i in range(len(m)):
        got = (e[e2m == i] - first[i]).tolist()
        assert sorted(map(tuple, got)) == expected[i]
    assert m.num_edges_per_mesh().tolist() == [len(x) for x in expected]
    # column k of faces_packed_to_edges_packed is the edge opposite vertex k
    f = m.faces_packed()
    f2e = m.faces_packed_to_edges_packed()
    for k in range(3):
        others = f[:, [j for j in range(3) if j != k]].sort(1).values
        assert torch.equal(e[f2e[:, k]], others)


def test_normals_and_areas():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 1]])
    m = Meshes([verts], [faces])
    assert torch.allclose(m.faces_normals_packed(), torch.tensor([[0.0, 0, 1], [0, 1, 0]]))
    assert torch.allclose(m.faces_areas_packed(), torch.tensor([0.5, 0.5]))
    n = m.verts_normals_packed()
    s = 1 / 2 ** 0.5
    assert torch.allclose(n[0], torch.tensor([0, s, s]), atol=1e-6)
    assert torch.allclose(n[2], torch.tensor([0.0, 0, 1]))
    assert torch.allclose(n[3], torch.tensor([0.0, 1, 0]))


def test_vertex_normals_area_weighted_reference():
    verts, faces = batch([(10, 12)], seed=5)
    m = Meshes(verts, faces)
    v, f = verts[0], faces[0]
    acc = torch.zeros_like(v)
    for a, b, c in f.tolist():  # slow reference
        n = torch.linalg.cross(v[b] - v[a], v[c] - v[a])
        for i in (a, b, c):
            acc[i] += n
    ref = torch.nn.functional.normalize(acc, eps=1e-6, dim=1)
    assert torch.allclose(m.verts_normals_packed(), ref, atol=1e-5)


def test_immutable_updates_share_topology_and_carry_grad():
    verts, faces = batch([(5, 4), (6, 6)], seed=1)
    m = Meshes(verts, faces)
    e = m.edges_packed()
    offs = torch.zeros_like(m.verts_packed(), requires_grad=True)
    m2 = m.offset_verts(offs)
    assert m2.edges_packed() is e  # topology cache shared
    assert m.verts_packed() is not m2.verts_packed()
    m2.verts_padded().sum().backward()
    assert torch.equal(offs.grad, torch.ones_like(offs))
    m3 = m.scale_verts(torch.tensor([2.0, 3.0]))
    assert torch.allclose(m3.verts_list()[1], verts[1] * 3)
    m4 = m.update_padded(m.verts_padded() + 1)
    assert torch.allclose(m4.verts_packed(), m.verts_packed() + 1)


def test_getitem_extend_join():
    verts, faces = batch([(5, 4), (6, 6), (3, 1)], seed=2)
    cols = [torch.rand(len(v), 3) for v in verts]
    m = Meshes(verts, faces, textures=TexturesVertex(cols))
    sub = m[[2, 0]]
    assert sub.num_verts_per_mesh().tolist() == [3, 5]
    assert torch.equal(sub.textures.verts_features_list()[0], cols[2])
    ext = m.extend(2)
    assert ext.num_faces_per_mesh().tolist() == [4, 4, 6, 6, 1, 1]
    j = join_meshes_as_batch([m[0], m[1:]])
    assert torch.equal(j.faces_packed(), m.faces_packed())
    s = join_meshes_as_scene(m)
    assert len(s) == 1 and torch.equal(s.faces_packed(), m.faces_packed())
    assert torch.equal(s.textures.verts_features_packed(), torch.cat(cols))
    bb = m.get_bounding_boxes()
    assert torch.allclose(bb[1, :, 0], verts[1].min(0).values)
    assert m.to(dtype=torch.float64).verts_packed().dtype == torch.float64


def test_bad_input_errors():
    v = torch.rand(4, 3)
    with pytest.raises(ValueError, match="faces\\[0\\] must index"):
        Meshes([v], [torch.tensor([[0, 1, 4]])])
    with pytest.raises(ValueError, match="verts.*finite"):
        Meshes([torch.full((3, 3), float("nan"))], [torch.tensor([[0, 1, 2]])])
    with pytest.raises(ValueError, match="same number of meshes"):
        Meshes([v, v], [torch.tensor([[0, 1, 2]])])
    with pytest.raises(ValueError, match="verts\\[0\\] must have shape"):
        Meshes([torch.rand(4, 2)], [torch.tensor([[0, 1, 2]])])
    with pytest.raises(TypeError, match="faces\\[0\\] must have a int dtype"):
        Meshes([v], [torch.tensor([[0.0, 1, 2]])])
    with pytest.raises(ValueError, match="padding rows"):
        Meshes(v[None], torch.tensor([[[-1, -1, -1], [0, 1, 2]]]))
    with pytest.raises(ValueError, match="textures must have batch size"):
        Meshes([v], [torch.tensor([[0, 1, 2]])], textures=TexturesVertex([v, v]))


class Frag:
    def __init__(self, p2f, bary):
        self.pix_to_face, self.bary_coords = p2f, bary


def test_interpolate_face_attributes_hand_case():
    attrs = torch.tensor([[[1.0], [2.0], [4.0]]])  # one face, scalar per corner
    p2f = torch.tensor([0, -1]).view(1, 1, 2, 1)
    bary = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]).view(1, 1, 2, 1, 3)
    out = interpolate_face_attributes(p2f, bary, attrs)
    # 0.5*1 + 0.25*2 + 0.25*4 = 2.0 ; empty slot -> 0
    assert out.flatten().tolist() == [2.0, 0.0]


def test_textures_uv_convention():
    # 2x2 map, rows top to bottom: [red, green], [blue, white]. v = 0 is the bottom row.
    tex = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]])
    verts_uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    faces_uvs = torch.tensor([[0, 1, 2], [3, 2, 1]])
    t = TexturesUV([tex], [faces_uvs], [verts_uvs])
    p2f = torch.tensor([0, 0, 0, 1]).view(1, 1, 4, 1)
    bary = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]).view(1, 1, 4, 1, 3)
    out = t.sample_textures(Frag(p2f, bary)).view(4, 3)
    assert torch.allclose(out, torch.tensor([[0.0, 0, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0]]))
    # join_scene keeps the colours seen at texel centres
    t2 = TexturesUV([tex, tex.flip(0)], [faces_uvs, faces_uvs], [verts_uvs, verts_uvs]).join_scene()
    p2f2 = torch.tensor([0, 2]).view(1, 1, 2, 1)
    bary2 = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]).view(1, 1, 2, 1, 3)
    out2 = t2.sample_textures(Frag(p2f2, bary2)).view(2, 3)
    assert torch.allclose(out2, torch.tensor([[0.0, 0, 1], [1, 0, 0]]), atol=1e-6)


def test_textures_vertex_and_atlas_sampling():
    verts, faces = batch([(4, 2)], seed=4)
    cols = torch.rand(4, 3)
    m = Meshes(verts, faces, textures=TexturesVertex([cols]))
    p2f = torch.tensor([1]).view(1, 1, 1, 1)
    bary = torch.tensor([0.2, 0.3, 0.5]).view(1, 1, 1, 1, 3)
    out = m.textures.sample_textures(Frag(p2f, bary), m.faces_packed()).view(3)
    f = faces[0][1]
    assert torch.allclose(out, 0.2 * cols[f[0]] + 0.3 * cols[f[1]] + 0.5 * cols[f[2]])
    atlas = TexturesAtlas([torch.tensor([[[[1.0, 0, 0]]], [[[0.0, 1, 0]]]])])
    out = atlas.sample_textures(Frag(torch.tensor([1, -1]).view(1, 1, 2, 1), bary.expand(1, 1, 2, 1, 3)))
    assert out.view(2, 3).tolist() == [[0.0, 1, 0], [0, 0, 0]]


def test_pointclouds_views_and_ops():
    g = torch.Generator().manual_seed(0)
    pts = [torch.rand(n, 3, generator=g) for n in (5, 2, 7)]
    feats = [torch.rand(n, 4, generator=g) for n in (5, 2, 7)]
    pc = Pointclouds(pts, features=feats)
    assert pc.points_padded().shape == (3, 7, 3)
    assert torch.equal(pc.points_packed(), pc.points_padded().view(-1, 3)[pc.padded_to_packed_idx()])
    assert pc.packed_to_cloud_idx().tolist() == [0] * 5 + [1] * 2 + [2] * 7
    assert pc.cloud_to_packed_first_idx().tolist() == [0, 5, 7]
    assert torch.equal(pc.features_list()[2], feats[2])
    assert pc[1].num_points_per_cloud().tolist() == [2]
    assert pc.extend(2).num_points_per_cloud().tolist() == [5, 5, 2, 2, 7, 7]
    j = join_pointclouds_as_batch([pc[0], pc[1:]])
    assert torch.equal(j.features_packed(), pc.features_packed())
    s = pc.scale(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(s.points_list()[2], pts[2] * 3)
    with pytest.raises(ValueError, match="features must have the same number of points"):
        Pointclouds(pts, features=feats[:2] + [torch.rand(3, 4)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_inputs(dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev, in itertools.product(devices):
        verts, faces = batch([(5, 4)], seed=7)
        m = Meshes([verts[0].to(dev, dtype)], [faces[0].to(dev)])
        assert m.verts_normals_packed().dtype == dtype
        assert m.edges_packed().device.type == dev
