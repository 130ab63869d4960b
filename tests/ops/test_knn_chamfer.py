"""knn_points / knn_gather / chamfer_distance against slow references; gradients; properties; errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib3d.ops import chamfer_distance, knn_gather, knn_points
from lib3d.ops.chamfer import chamfer_distance_naive
from lib3d.ops.knn import knn_points_naive
from lib3d.structures import Pointclouds

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _clouds(n, p1, p2, d=3, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p1, d, generator=g, dtype=dtype).to(device)
    y = torch.randn(n, p2, d, generator=g, dtype=dtype).to(device)
    lx = torch.randint(1, p1 + 1, (n,), generator=g).to(device)
    ly = torch.randint(1, p2 + 1, (n,), generator=g).to(device)
    return x, y, lx, ly


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("K", [1, 3, 8])
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_matches_naive_forward_backward(device, K, norm):
    x, y, lx, ly = _clouds(3, 40, 30, device=device, dtype=torch.float64)
    ly[0] = 2  # fewer points than K in one cloud
    x.requires_grad_(True)
    y.requires_grad_(True)
    fast = knn_points(x, y, lx, ly, norm=norm, K=K, return_nn=True, chunk_size=7)
    ref = knn_points_naive(x, y, lx, ly, norm=norm, K=K)
    torch.testing.assert_close(fast.dists, ref.dists)
    assert torch.equal(fast.idx, ref.idx)
    w = torch.randn_like(fast.dists)
    gx, gy = torch.autograd.grad((fast.dists * w).sum(), [x, y])
    rx, ry = torch.autograd.grad((ref.dists * w).sum(), [x, y])
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)


def test_knn_padding_semantics():
    x, y, _, _ = _clouds(2, 6, 5)
    lx, ly = torch.tensor([4, 6]), torch.tensor([2, 5])
    out = knn_points(x, y, lx, ly, K=3, return_nn=True)
    assert (out.dists[0, 4:] == 0).all() and (out.idx[0, 4:] == 0).all()  # rows past lengths1
    assert (out.dists[0, :, 2] == 0).all() and (out.idx[0, :, 2] == 0).all()  # slots past lengths2
    assert (out.knn[0, :, 2] == 0).all()
    assert (out.dists[:, :, 1:] >= out.dists[:, :, :-1]).logical_or(out.dists[:, :, 1:] == 0).all()


def test_knn_hand_computed():
    # 1D-like example on the x axis: nearest of 0.9 among {0, 1, 3} is 1 (d^2 = 0.01), then 0 (0.81)
    x = torch.tensor([[[0.9, 0.0, 0.0]]])
    y = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    out = knn_points(x, y, K=2)
    assert out.idx.tolist() == [[[1, 0]]]
    torch.testing.assert_close(out.dists, torch.tensor([[[0.01, 0.81]]]))


def test_knn_large_chunked_equals_unchunked():
    x, y, _, _ = _clouds(2, 3000, 2000, seed=3)
    a = knn_points(x, y, K=4)
    b = knn_points(x, y, K=4, chunk_size=10**6)
    torch.testing.assert_close(a.dists, b.dists)


def test_knn_gather():
    x = torch.arange(12.0).view(1, 4, 3)
    idx = torch.tensor([[[3, 0], [1, 2]]])
    out = knn_gather(x, idx, torch.tensor([1]))
    assert out[0, 0, 0].tolist() == [9.0, 10.0, 11.0]
    assert out[0, :, 1].abs().sum() == 0  # slot 1 >= lengths


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), p1=st.integers(1, 20), p2=st.integers(1, 20), k=st.integers(1, 5),
       seed=st.integers(0, 1000))
def test_knn_property_distances_are_minimal(n, p1, p2, k, seed):
    x, y, lx, ly = _clouds(n, p1, p2, seed=seed, dtype=torch.float64)
    out = knn_points(x, y, lx, ly, K=k)
    ref = knn_points_naive(x, y, lx, ly, K=k)
    torch.testing.assert_close(out.dists, ref.dists)


def test_knn_errors():
    x = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="p2"):
        knn_points(x, torch.rand(3, 5, 3))
    with pytest.raises(ValueError, match="p1"):
        knn_points(torch.rand(5, 3), x)
    with pytest.raises(ValueError, match="K"):
        knn_points(x, x, K=0)
    with pytest.raises(ValueError, match="norm"):
        knn_points(x, x, norm=3)
    with pytest.raises(ValueError, match="lengths1"):
        knn_points(x, x, lengths1=torch.tensor([6, 1]))
    with pytest.raises(TypeError, match="p1"):
        knn_points(x.long(), x)
    with pytest.raises(TypeError, match="p2"):
        knn_points(x, x.double())


VARIANTS = [
    {},
    {"point_reduction": "sum"},
    {"point_reduction": "max"},
    {"batch_reduction": "sum"},
    {"batch_reduction": None},
    {"batch_reduction": None, "point_reduction": None},
    {"batch_reduction": None, "point_reduction": None, "single_directional": True},
    {"single_directional": True},
    {"norm": 1},
    {"normals": True},
    {"normals": True, "abs_cosine": False},
    {"normals": True, "point_reduction": "sum", "batch_reduction": None},
    {"weights": True},
    {"weights": True, "normals": True, "batch_reduction": "sum"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) or "default")
@pytest.mark.parametrize("lengths", [False, True])
def test_chamfer_matches_naive(variant, lengths):
    kw = dict(variant)
    x, y, lx, ly = _clouds(3, 25, 17, dtype=torch.float64, seed=1)
    if lengths:
        kw.update(x_lengths=lx, y_lengths=ly)
    if kw.pop("normals", False):
        kw.update(x_normals=torch.randn_like(x), y_normals=torch.randn_like(y))
    if kw.pop("weights", False):
        kw["weights"] = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    x.requires_grad_(True)
    y.requires_grad_(True)
    fast = chamfer_distance(x, y, **kw)
    ref = chamfer_distance_naive(x, y, **kw)

    def flat(t):
        if t is None:
            return []
        if isinstance(t, tuple):
            return [u for v in t for u in flat(v)]
        return [t]

    f, r = flat(fast), flat(ref)
    assert len(f) == len(r)
    for a, b in zip(f, r):
        torch.testing.assert_close(a, b)
    total_f = sum((a * torch.linspace(0.5, 1.5, a.numel(), dtype=a.dtype).view_as(a)).sum() for a in f)
    total_r = sum((a * torch.linspace(0.5, 1.5, a.numel(), dtype=a.dtype).view_as(a)).sum() for a in r)
    gf = torch.autograd.grad(total_f, [x, y], allow_unused=True)
    gr = torch.autograd.grad(total_r, [x, y], allow_unused=True)
    for a, b in zip(gf, gr):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().sum() == 0
        else:
            torch.testing.assert_close(a, b)


def test_chamfer_gradcheck():
    x, y, lx, ly = _clouds(2, 6, 5, dtype=torch.float64, seed=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    nx = torch.randn_like(x, requires_grad=True)
    ny = torch.randn_like(y, requires_grad=True)

    def f(x, y, nx, ny):
        a, b = chamfer_distance(x, y, x_lengths=lx, y_lengths=ly, x_normals=nx, y_normals=ny)
        return a + b

    assert torch.autograd.gradcheck(f, (x, y, nx, ny), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x, y: chamfer_distance(x, y, norm=1)[0], (x, y), fast_mode=True)


def test_chamfer_hand_computed_and_identity():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    y = torch.tensor([[[0.0, 0, 0], [0, 2, 0], [1, 0, 0]]])
    loss, _ = chamfer_distance(x, y)
    # x->y: 0, 0 (mean 0); y->x: 0, |(0,2)-(0,0)|^2 = 4, 0 -> mean 4/3
    torch.testing.assert_close(loss, torch.tensor(4.0 / 3.0))
    assert chamfer_distance(y, y)[0] == 0


def test_chamfer_pointclouds_input():
    x, y, lx, ly = _clouds(2, 10, 8, seed=5)
    nx, ny = torch.randn_like(x), torch.randn_like(y)
    px = Pointclouds([x[i, :lx[i]] for i in range(2)], normals=[nx[i, :lx[i]] for i in range(2)])
    py = Pointclouds([y[i, :ly[i]] for i in range(2)], normals=[ny[i, :ly[i]] for i in range(2)])
    a = chamfer_distance(px, py)
    b = chamfer_distance(x, y, x_lengths=lx, y_lengths=ly, x_normals=nx, y_normals=ny)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_chamfer_errors():
    x = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="batch_reduction"):
        chamfer_distance(x, x, batch_reduction="max")
    with pytest.raises(ValueError, match="point_reduction"):
        chamfer_distance(x, x, point_reduction="median")
    with pytest.raises(ValueError, match="point_reduction is None"):
        chamfer_distance(x, x, point_reduction=None)
    with pytest.raises(ValueError, match="norm"):
        chamfer_distance(x, x, norm=3)
    with pytest.raises(ValueError, match="Normals"):
        chamfer_distance(x, x, x_normals=x, y_normals=x, point_reduction="max")
    with pytest.raises(ValueError, match="y"):
        chamfer_distance(x, torch.rand(3, 5, 3))
    with pytest.raises(ValueError, match="weights"):
        chamfer_distance(x, x, weights=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="x_normals"):
        chamfer_distance(x, x, x_normals=torch.rand(2, 4, 3))


def test_chamfer_zero_weights():
    x = torch.rand(2, 5, 3, requires_grad=True)
    loss, _ = chamfer_distance(x, x + 1, weights=torch.zeros(2))
    assert loss == 0
    loss.backward()


def test_knn_ignores_padding_values_and_far_clouds():
    x, y, lx, ly = _clouds(2, 50, 40, seed=9)
    y = y.clone()
    y[0, int(ly[0]):] = 1e6  # garbage in the padding must not matter
    ref = knn_points_naive(x, y, lx, ly, K=3)
    out = knn_points(x, y, lx, ly, K=3)
    torch.testing.assert_close(out.dists, ref.dists)
    # a query cloud far from the reference cloud: exact distances are recomputed
    far = knn_points(x + 100.0, y, lx, ly, K=1)
    torch.testing.assert_close(far.dists, knn_points_naive(x + 100.0, y, lx, ly, K=1).dists, rtol=1e-5, atol=1e-3)
