"""Surface sampling, mesh regularisers, Laplacians, packing, icospheres, subdivision, cubify, vert_align,
GraphConv: slow references, gradients, properties and errors."""

import math

import pytest
import torch

from lib3d.ops import (
    GraphConv,
    cot_laplacian,
    cubify,
    gather_rows,
    gather_scatter,
    ico_sphere,
    laplacian,
    mesh_edge_loss,
    mesh_laplacian_smoothing,
    mesh_normal_consistency,
    norm_laplacian,
    packed_to_padded,
    padded_to_packed,
    sample_points_from_meshes,
    subdivide_meshes,
    vert_align,
)
from lib3d.ops.mesh_losses import (
    edge_length_loss,
    face_pairs,
    faces_to_edges,
    laplacian_smoothing_loss,
    normal_consistency_loss,
)
from lib3d.structures import Meshes, Pointclouds, TexturesVertex


def _batch(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = ico_sphere(1), ico_sphere(2)
    va = (a.verts_packed() + 0.05 * torch.randn(a.verts_packed().shape, generator=g)).to(dtype)
    vb = (b.verts_packed() * 1.5 + 0.05 * torch.randn(b.verts_packed().shape, generator=g)).to(dtype)
    return Meshes(verts=[va, vb], faces=[a.faces_packed(), b.faces_packed()])


# ------------------------------------------------------------------------------ slow references
def _normal_consistency_reference(meshes):
    """PyTorch3D's algorithm verbatim (Python lists over edges)."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    edges, f2e = meshes.edges_packed(), meshes.faces_packed_to_edges_packed()
    n_f = faces.shape[0]
    edge_idx = f2e.reshape(-1)
    vert_idx = faces.view(1, n_f, 3).expand(3, n_f, 3).transpose(0, 1).reshape(3 * n_f, 3)
    edge_idx, order = edge_idx.sort()
    vert_idx = vert_idx[order]
    counts = edge_idx.bincount(minlength=edges.shape[0]).tolist()
    groups, start = [], 0
    for c in counts:
        groups.append(list(range(start, start + c)))
        start += c
    pairs = torch.tensor([[e[i], e[j]] for e in groups for i in range(len(e) - 1) for j in range(1, len(e)) if i < j])
    v0 = verts[edges[edge_idx, 0]]
    v1 = verts[edges[edge_idx, 1]]
    n = sum(torch.linalg.cross(v1 - v0, verts[vert_idx[:, k]] - v0, dim=1) for k in range(3))
    loss = 1 - torch.cosine_similarity(n[pairs[:, 0]], -n[pairs[:, 1]], dim=1)
    mesh = meshes.verts_packed_to_mesh_idx()[vert_idx[:, 0]][pairs[:, 0]]
    num = mesh.bincount(minlength=len(meshes))
    return (loss / num[mesh].to(loss.dtype)).sum() / len(meshes)


def _laplacian_reference(meshes, method):
    """PyTorch3D's algorithm with its sparse matrices."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    w = 1.0 / meshes.num_verts_per_mesh()[meshes.verts_packed_to_mesh_idx()].to(verts.dtype)
    with torch.no_grad():
        if method == "uniform":
            lap = laplacian(verts, meshes.edges_packed())
        else:
            lap, inv_areas = cot_laplacian(verts, faces)
            row = torch.sparse.sum(lap, dim=1).to_dense().view(-1, 1)
    if method == "uniform":
        lv = lap.mm(verts)
    elif method == "cot":
        lv = lap.mm(verts) / row - verts
    else:
        lv = (lap.mm(verts) - row * verts) * 0.25 * inv_areas
    return (lv.norm(dim=1) * w).sum() / len(meshes)


def test_normal_consistency_matches_reference():
    m = _batch()
    torch.testing.assert_close(mesh_normal_consistency(m), _normal_consistency_reference(m))


def test_normal_consistency_non_manifold_edge():
    # three faces on one edge (0, 1): all three pairs count
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0.3], [0, 0.2, 1]])
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    m = Meshes([verts], [faces])
    pairs = face_pairs(faces, m.edges_packed(), m.faces_packed_to_edges_packed(), m.faces_packed_to_mesh_idx())
    assert pairs.v0.shape[0] == 3
    torch.testing.assert_close(mesh_normal_consistency(m), _normal_consistency_reference(m))


@pytest.mark.parametrize("method", ["uniform", "cot", "cotcurv"])
def test_laplacian_smoothing_matches_reference(method):
    m = _batch(torch.float64)
    v = m.verts_packed().clone().requires_grad_(True)
    m = m.update_packed(v)
    a = mesh_laplacian_smoothing(m, method)
    b = _laplacian_reference(m, method)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, v)[0], torch.autograd.grad(b, v)[0])


def test_flat_plane_laplacian_is_zero_inside():
    # regular grid in the plane: interior uniform Laplacian vanishes, normal consistency is 0
    xs, ys = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    verts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.zeros(16)], 1)
    faces = []
    for i in range(3):
        for j in range(3):
            a, b, c, d = i * 4 + j, i * 4 + j + 1, (i + 1) * 4 + j, (i + 1) * 4 + j + 1
            faces += [[a, c, b], [b, c, d]]
    m = Meshes([verts], [torch.tensor(faces)])
    assert float(mesh_normal_consistency(m)) < 1e-6
    # edge loss by hand: 12 + 12 unit edges and 9 diagonals sqrt(2): mean of squares = (24 + 18) / 33
    torch.testing.assert_close(mesh_edge_loss(m), torch.tensor(42.0 / 33.0))


def test_mesh_losses_gradcheck():
    a = ico_sphere(0)
    g = torch.Generator().manual_seed(0)
    v = (a.verts_packed().double() + 0.1 * torch.randn(12, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    f = a.faces_packed()
    edges, f2e = faces_to_edges(f, 12)
    e2m = torch.zeros(edges.shape[0], dtype=torch.int64)
    pairs = face_pairs(f, edges, f2e, torch.zeros(20, dtype=torch.int64))
    v2m = torch.zeros(12, dtype=torch.int64)
    assert torch.autograd.gradcheck(lambda v: edge_length_loss(v, edges, e2m, 1, 0.3), (v,))
    assert torch.autograd.gradcheck(lambda v: normal_consistency_loss(v, pairs, 1), (v,))
    # uniform: L is constant; cot/cotcurv treat their weights as constants (PyTorch3D), so their
    # gradients are checked against the sparse-matrix reference in test_laplacian_smoothing_matches_reference
    assert torch.autograd.gradcheck(lambda v: laplacian_smoothing_loss(v, f, v2m, 1, "uniform"), (v,))


def test_mesh_losses_per_mesh_weighting():
    # a batch of the same mesh twice equals the single mesh (mean of per-mesh means)
    m = ico_sphere(1).scale_verts(1.3)
    two = Meshes([m.verts_packed()] * 2, [m.faces_packed()] * 2)
    for fn in [mesh_edge_loss, mesh_normal_consistency, lambda x: mesh_laplacian_smoothing(x, "cot")]:
        torch.testing.assert_close(fn(two), fn(m))


def test_mesh_losses_errors_and_empty():
    with pytest.raises(ValueError, match="method"):
        mesh_laplacian_smoothing(ico_sphere(0), "harmonic")
    empty = Meshes(verts=[torch.zeros(0, 3)], faces=[torch.zeros(0, 3, dtype=torch.int64)])
    assert float(mesh_edge_loss(empty).detach()) == 0 and float(mesh_normal_consistency(empty).detach()) == 0


def test_laplacian_matrices():
    m = ico_sphere(1)
    v, e = m.verts_packed(), m.edges_packed()
    lap = laplacian(v, e).to_dense()
    torch.testing.assert_close(lap.sum(1), torch.zeros(v.shape[0]), atol=1e-6, rtol=0)
    nl = norm_laplacian(v, e).to_dense()
    torch.testing.assert_close(nl, nl.t())
    i, j = e[0].tolist()
    torch.testing.assert_close(nl[i, j], 1 / (v[i] - v[j]).norm())
    cl, inv_areas = cot_laplacian(v, m.faces_packed())
    cl = cl.to_dense()
    torch.testing.assert_close(cl, cl.t())
    assert inv_areas.shape == (v.shape[0], 1) and (inv_areas > 0).all()
    # equilateral triangle: one face, L[0, 1] = cot 60 = 1/sqrt(3); inverse area 1 / (sqrt(3)/4)
    tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, math.sqrt(3) / 2, 0]])
    cl1, inv1 = cot_laplacian(tri, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(cl1.to_dense()[0, 1], torch.tensor(1 / math.sqrt(3)))
    torch.testing.assert_close(inv1[0, 0], torch.tensor(4 / math.sqrt(3)))


# ------------------------------------------------------------------------------------ sampling
def test_sample_points_on_surface_and_reproducible():
    m = _batch()
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    a, na = sample_points_from_meshes(m, 500, return_normals=True, generator=g1)
    b, nb = sample_points_from_meshes(m, 500, return_normals=True, generator=g2)
    assert a.shape == (2, 500, 3) and torch.equal(a, b) and torch.equal(na, nb)
    torch.testing.assert_close(na.norm(dim=-1), torch.ones(2, 500))
    # sphere-ish: radii between the inscribed and circumscribed bounds
    r = a.norm(dim=-1)
    assert (r[0] > 0.7).all() and (r[0] < 1.2).all()


def test_sample_points_area_weighting():
    # two triangles, areas 1 and 3 (scaled copy): about 1/4 of the points fall on the first
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 0, 0], [5 + math.sqrt(3), 0, 0],
                          [5, 2 * math.sqrt(3), 0]])
    m = Meshes([verts], [torch.tensor([[0, 1, 2], [3, 4, 5]])])
    pts = sample_points_from_meshes(m, 20000, generator=torch.Generator().manual_seed(0))
    frac = (pts[0, :, 0] < 2.5).float().mean()
    assert abs(float(frac) - 0.25) < 0.02
    # uniform inside the triangle: mean is the centroid
    first = pts[0][pts[0, :, 0] < 2.5]
    torch.testing.assert_close(first.mean(0), torch.tensor([1 / 3, 2 / 3, 0.0]), atol=0.02, rtol=0)


def test_sample_points_gradcheck_and_textures():
    m = ico_sphere(0)
    v = m.verts_packed().double().requires_grad_(True)

    def f(v):
        g = torch.Generator().manual_seed(1)
        s, n = sample_points_from_meshes(Meshes([v], [m.faces_packed()]), 20, return_normals=True, generator=g)
        return s.sum(-1) + n.sum(-1)

    assert torch.autograd.gradcheck(f, (v,))
    colors = torch.rand(1, 12, 3)
    mt = Meshes([m.verts_packed()], [m.faces_packed()], textures=TexturesVertex(colors))
    g = torch.Generator().manual_seed(2)
    pts, tex = sample_points_from_meshes(mt, 50, return_textures=True, generator=g)
    assert tex.shape == (1, 50, 3)
    assert (tex >= colors.min() - 1e-6).all() and (tex <= colors.max() + 1e-6).all()
    # xyz textures reproduce the sample positions (linear interpolation)
    mx = Meshes([m.verts_packed()], [m.faces_packed()], textures=TexturesVertex(m.verts_packed()[None]))
    pts, tex = sample_points_from_meshes(mx, 50, return_textures=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(tex, pts)


def test_sample_points_errors():
    with pytest.raises(ValueError, match="textures"):
        sample_points_from_meshes(ico_sphere(0), 10, return_textures=True)
    with pytest.raises(ValueError, match="empty"):
        sample_points_from_meshes(Meshes(verts=[torch.zeros(0, 3)], faces=[torch.zeros(0, 3, dtype=torch.int64)]))


# ------------------------------------------------------------------------------------- packing
def test_packed_padded_roundtrip():
    x = torch.randn(9, 4, requires_grad=True)
    first = torch.tensor([0, 2, 2, 7])
    pad = packed_to_padded(x, first, 5)
    assert pad.shape == (4, 5, 4)
    torch.testing.assert_close(pad[2], x[2:7])  # element 1 is empty (first 2 -> 2)
    torch.testing.assert_close(pad[3, :2], x[7:])
    assert pad[1].abs().sum() == 0 and pad[0, 2:].abs().sum() == 0
    back = padded_to_packed(pad, first, 9)
    torch.testing.assert_close(back, x)
    back.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    flat = packed_to_padded(x[:, 0], first, 5)
    assert flat.shape == (4, 5)
    with pytest.raises(ValueError, match="inputs"):
        packed_to_padded(torch.zeros(()), first, 3)


def test_gather_rows_is_advanced_indexing():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 7, (5, 4, 3), generator=g)  # repeated rows: their gradients add up
    out = gather_rows(x, idx)
    ref = x[idx]
    assert out.shape == ref.shape == (5, 4, 3, 3, 2)
    assert torch.equal(out, ref)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((out * w).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)
    assert gather_rows(x, torch.zeros(0, 2, dtype=torch.int64)).shape == (0, 2, 3, 2)
    with pytest.raises(IndexError):
        gather_rows(x, torch.tensor([7]))


def test_packed_padded_any_trailing_dims_and_max_size_dim():
    """As PyTorch3D: any trailing feature shape; padded_to_packed packs along ``max_size_dim``."""
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    first = torch.tensor([0, 2, 2, 7])
    pad = packed_to_padded(x, first, 5)
    assert pad.shape == (4, 5, 2, 3)
    for n, (a, b) in enumerate([(0, 2), (2, 2), (2, 7), (7, 9)]):
        torch.testing.assert_close(pad[n, : b - a], x[a:b])
    torch.testing.assert_close(padded_to_packed(pad, first, 9), x)
    channels_first = pad.permute(0, 2, 3, 1)  # (N, 2, 3, M)
    torch.testing.assert_close(padded_to_packed(channels_first, first, 9, max_size_dim=3), x)
    torch.testing.assert_close(padded_to_packed(pad.movedim(1, 2), first, 9, max_size_dim=2),
                               x.movedim(1, 1))  # (N, 2, M, 3) -> (F, 2, 3)
    with pytest.raises(ValueError, match="max_size_dim"):
        padded_to_packed(pad, first, 9, max_size_dim=0)


# ------------------------------------------------------------------------- construction ops
@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_ico_sphere_counts(level):
    m = ico_sphere(level)
    assert m.verts_packed().shape[0] == 10 * 4**level + 2
    assert m.faces_packed().shape[0] == 20 * 4**level
    if level:
        torch.testing.assert_close(m.verts_packed().norm(dim=1), torch.ones(m.verts_packed().shape[0]))
    # outward orientation: normals point away from the origin
    n = m.faces_normals_packed()
    c = m.verts_packed()[m.faces_packed()].mean(1)
    assert ((n * c).sum(1) > 0).all()


def test_subdivide_batch_and_feats():
    m = _batch()
    out, feats = subdivide_meshes(m, feats=m.verts_packed() * 2)
    assert out.num_faces_per_mesh().tolist() == [4 * 80, 4 * 320]
    assert out.num_verts_per_mesh().tolist() == [42 + 120, 162 + 480]
    torch.testing.assert_close(feats, out.verts_packed() * 2)
    # each mesh's surface area is preserved by midpoint subdivision
    for i in range(2):
        torch.testing.assert_close(out[i].faces_areas_packed().sum(), m[i].faces_areas_packed().sum())


def _is_watertight(faces):
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    directed = {tuple(e) for e in edges.tolist()}
    # every directed edge has its reverse exactly once (closed, consistently oriented)
    return len(directed) == edges.shape[0] and all((b, a) in directed for a, b in directed)


def test_cubify_properties():
    vox = torch.zeros(1, 3, 3, 3)
    vox[0, 1, 1, 1] = 1.0
    m = cubify(vox, 0.5)
    assert m.verts_packed().shape[0] == 8 and m.faces_packed().shape[0] == 12
    vox2 = torch.zeros(1, 2, 2, 3)
    vox2[0, :, :, :2] = 1.0  # a 2x2x2 block: no interior faces, shared vertices merged
    m2 = cubify(vox2, 0.5)
    assert m2.faces_packed().shape[0] == 6 * 4 * 2
    assert m2.verts_packed().shape[0] == 26
    assert _is_watertight(m2.faces_packed())
    # outward normals
    n = m2.faces_normals_packed()
    c = m2.verts_packed()[m2.faces_packed()].mean(1) - m2.verts_packed().mean(0)
    assert ((n * c).sum(1) > 0).all()
    empty = cubify(torch.zeros(2, 2, 2, 2), 0.5)
    assert len(empty) == 2 and empty.isempty()
    with pytest.raises(ValueError, match="align"):
        cubify(vox, 0.5, align="middle")
    with pytest.raises(ValueError, match="voxels"):
        cubify(torch.zeros(3, 3, 3), 0.5)


def test_vert_align_reference_and_packed():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    verts = torch.rand(2, 7, 3, generator=g, dtype=torch.float64) * 2 - 1
    out = vert_align(feats, verts)
    # bilinear by hand, align_corners=True: pixel coords ((x+1)/2 (W-1), (y+1)/2 (H-1))
    px = (verts[..., 0] + 1) / 2 * 5
    py = (verts[..., 1] + 1) / 2 * 4
    x0, y0 = px.floor().long().clamp(max=4), py.floor().long().clamp(max=3)
    fx, fy = px - x0, py - y0
    b = torch.arange(2)[:, None]
    f = feats.permute(0, 2, 3, 1)
    ref = (f[b, y0, x0] * ((1 - fx) * (1 - fy))[..., None] + f[b, y0, x0 + 1] * (fx * (1 - fy))[..., None]
           + f[b, y0 + 1, x0] * ((1 - fx) * fy)[..., None] + f[b, y0 + 1, x0 + 1] * (fx * fy)[..., None])
    torch.testing.assert_close(out, ref)
    assert torch.autograd.gradcheck(lambda f: vert_align(f, verts), (feats,))
    m = _batch()
    packed = vert_align([feats.float(), feats.float()[:, :2]], m, return_packed=True)
    assert packed.shape == (m.verts_packed().shape[0], 6)
    pc = Pointclouds([m.verts_list()[0], m.verts_list()[1]])
    torch.testing.assert_close(vert_align(feats.float(), pc, return_packed=True), packed[:, :4])
    with pytest.raises(ValueError, match="feats"):
        vert_align(torch.rand(2, 3, 4), verts)
    with pytest.raises(ValueError, match="batch"):
        vert_align(torch.rand(3, 3, 4, 4), verts)


def test_graph_conv_reference_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([[0, 1], [1, 2], [3, 4], [0, 4]])
    conv = GraphConv(3, 2).double()
    out = conv(x, edges)
    ref = conv.w0(x).clone()
    for a, b in edges.tolist():  # slow reference: loop over edges
        ref[a] = ref[a] + conv.w1(x[b])
        ref[b] = ref[b] + conv.w1(x[a])
    torch.testing.assert_close(out, ref)
    assert torch.autograd.gradcheck(lambda x: conv(x, edges), (x,))
    d = gather_scatter(torch.eye(5, dtype=torch.float64), edges, directed=True)
    assert d[0].tolist() == [0, 1, 0, 0, 1] and d[4].sum() == 0
    with pytest.raises(ValueError, match="init"):
        GraphConv(3, 2, init="xavier")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    from lib3d.ops import chamfer_distance, knn_points

    m = _batch()
    mc = m.to("cuda")
    for fn in [mesh_edge_loss, mesh_normal_consistency, lambda x: mesh_laplacian_smoothing(x, "cot")]:
        torch.testing.assert_close(fn(mc).cpu(), fn(m), atol=1e-5, rtol=1e-5)
    g = torch.Generator(device="cuda").manual_seed(0)
    pts = sample_points_from_meshes(mc, 1000, generator=g)
    assert pts.device.type == "cuda"
    x, y = torch.rand(2, 3000, 3), torch.rand(2, 2000, 3)
    torch.testing.assert_close(knn_points(x.cuda(), y.cuda(), K=5).dists.cpu(), knn_points(x, y, K=5).dists)
    torch.testing.assert_close(chamfer_distance(x.cuda(), y.cuda())[0].cpu(), chamfer_distance(x, y)[0])
    assert cubify(torch.ones(1, 2, 2, 2, device="cuda"), 0.5).device.type == "cuda"


def test_gather_scatter_matches_python_reference():
    from lib3d.ops.graph_conv import gather_scatter, gather_scatter_python

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    edges = torch.randint(0, 7, (15, 2), generator=g)
    for directed in (False, True):
        torch.testing.assert_close(gather_scatter(x, edges, directed), gather_scatter_python(x, edges, directed))
        assert torch.autograd.gradcheck(lambda t: gather_scatter(t, edges, directed), (x,))


def test_cubify_feats_colour_each_face_with_its_voxel():
    """PyTorch3D's cubify(feats=) with align='center': a TexturesAtlas with one colour per face, that of the
    voxel the face belongs to; other aligns raise instead of silently dropping feats."""
    vox = torch.zeros(1, 2, 2, 2)
    vox[0, 0, 0, 0] = vox[0, 1, 1, 1] = 1.0
    feats = torch.zeros(1, 3, 2, 2, 2)
    feats[0, :, 0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    feats[0, :, 1, 1, 1] = torch.tensor([0.0, 0.0, 1.0])
    m = cubify(vox, 0.5, feats=feats, align="center")
    atlas = m.textures.atlas_packed() if hasattr(m.textures, "atlas_packed") else m.textures._list[0]
    atlas = atlas.reshape(-1, 3)
    assert atlas.shape == (24, 3)  # two separate cubes, 12 triangles each
    verts, faces = m.verts_packed(), m.faces_packed()
    centroid = verts[faces].mean(1)
    first_voxel = centroid.sum(1) < 0  # voxel (0, 0, 0) spans [-2, 0]^3 with align center
    torch.testing.assert_close(atlas[first_voxel], torch.tensor([[1.0, 0.0, 0.0]]).expand(12, 3))
    torch.testing.assert_close(atlas[~first_voxel], torch.tensor([[0.0, 0.0, 1.0]]).expand(12, 3))
    with pytest.raises(ValueError, match="align='center'"):
        cubify(vox, 0.5, feats=feats, align="topleft")
    with pytest.raises(ValueError, match="feats must have shape"):
        cubify(vox, 0.5, feats=feats[:, :, :1], align="center")
