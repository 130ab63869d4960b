"""FID / KID: scipy.linalg.sqrtm reference (pytorch-fid's formula), streaming statistics vs numpy, npz files,
KID vs a direct numpy implementation of the unbiased MMD estimator."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from lib3d.metrics import (
    FeatureStatistics,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_fid_stats,
    save_fid_stats,
)


def _fid_scipy(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, restated with scipy.linalg.sqrtm."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            off = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + off).dot(sigma2 + off))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _random_stats(rng, d, n):
    """Mean and covariance of n correlated samples in d dims (singular when n <= d)."""
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d,n1,n2", [(64, 500, 400), (128, 1000, 300), (64, 20, 30), (96, 50, 500), (32, 2, 200)])
def test_frechet_distance_matches_scipy(d, n1, n2):
    rng = np.random.default_rng(d + n1 + n2)
    mu1, s1 = _random_stats(rng, d, n1)
    mu2, s2 = _random_stats(rng, d, n2)
    ref = _fid_scipy(mu1, s1, mu2, s2)
    got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2)  # tensors or arrays
    assert abs(got - ref) <= 1e-6 * abs(ref), (got, ref)
    # identical statistics: zero (up to round-off)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)


def test_frechet_distance_float32_inputs_computed_in_float64():
    rng = np.random.default_rng(1)
    mu1, s1 = _random_stats(rng, 48, 200)
    mu2, s2 = _random_stats(rng, 48, 100)
    s1 = 0.5 * (s1 + s1.T).astype(np.float32)
    s2 = 0.5 * (s2 + s2.T).astype(np.float32)
    mu1, mu2 = mu1.astype(np.float32), mu2.astype(np.float32)
    ref = _fid_scipy(mu1.astype(np.float64), s1.astype(np.float64), mu2.astype(np.float64), s2.astype(np.float64))
    got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2))
    assert abs(got - ref) <= 1e-6 * abs(ref)


def test_frechet_distance_errors():
    mu, s = torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu, s, torch.zeros(5, dtype=torch.float64), s)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, s, mu, torch.eye(5, dtype=torch.float64))
    bad = s.clone()
    bad[0, 1] = 1.0
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, bad, mu, s)
    with pytest.raises(TypeError, match="mu1"):
        frechet_distance(torch.zeros(4, dtype=torch.long), s, mu, s)
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(mu, s, mu * float("nan"), s)


def test_streaming_statistics_equal_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1001, 33, generator=g) * 3 + 100.0  # large mean: the update must not cancel
    stats = FeatureStatistics(chunk_rows=200)  # folds after the 3rd and 5th batch, the rest at the end
    for chunk in torch.split(x, [1, 100, 0, 457, 443]):
        stats.update(chunk)
    xn = x.double().numpy()
    assert stats.count == 1001
    np.testing.assert_allclose(stats.mu.numpy(), xn.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(xn, rowvar=False), rtol=1e-10, atol=1e-10)
    assert stats.mu.dtype == torch.float64 and stats.sigma.dtype == torch.float64
    # merging two accumulators equals one pass
    a = FeatureStatistics().update(x[:300])
    b = FeatureStatistics(chunk_rows=50).update(x[300:])
    a.merge(b)
    torch.testing.assert_close(a.sigma, stats.sigma)
    torch.testing.assert_close(a.mu, stats.mu)
    one_by_one = FeatureStatistics(chunk_rows=1)
    for row in x[:50]:
        one_by_one.update(row[None])
    np.testing.assert_allclose(one_by_one.sigma.numpy(), np.cov(xn[:50], rowvar=False), rtol=1e-10, atol=1e-10)
    # fid_from_features is the one-shot route
    y = torch.randn(500, 33, generator=g)
    ref = _fid_scipy(xn.mean(0), np.cov(xn, rowvar=False), y.double().numpy().mean(0),
                     np.cov(y.double().numpy(), rowvar=False))
    assert abs(fid_from_features(x, y) - ref) <= 1e-6 * ref


def test_streaming_statistics_errors():
    stats = FeatureStatistics()
    with pytest.raises(ValueError, match="empty"):
        _ = stats.mu
    stats.update(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.sigma
    with pytest.raises(ValueError, match="features"):
        stats.update(torch.zeros(3, 6))
    with pytest.raises(TypeError, match="features"):
        stats.update(torch.zeros(3, 5, dtype=torch.int64))


def test_npz_round_trip_and_official_layout(tmp_path):
    rng = np.random.default_rng(0)
    mu, sigma = _random_stats(rng, 16, 40)
    p = save_fid_stats(tmp_path / "stats.npz", torch.from_numpy(mu), sigma)
    with np.load(p) as f:  # the official layout: exactly mu and sigma
        assert sorted(f.files) == ["mu", "sigma"]
    m2, s2 = load_fid_stats(p)
    np.testing.assert_array_equal(m2.numpy(), mu)
    np.testing.assert_array_equal(s2.numpy(), sigma)
    # a file written the way pytorch-fid / clean-fid write theirs (float32 arrays)
    q = tmp_path / "official.npz"
    np.savez_compressed(q, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    m3, s3 = load_fid_stats(q)
    assert m3.dtype == torch.float64 and s3.shape == (16, 16)


def test_npz_malformed_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_fid_stats(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load_fid_stats(junk)
    nomu = tmp_path / "nomu.npz"
    np.savez(nomu, mean=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match=r"nomu\.npz.*\['mu'\]"):
        load_fid_stats(nomu)
    shape = tmp_path / "shape.npz"
    np.savez(shape, mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="shape.npz"):
        load_fid_stats(shape)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="single.npz"):
        load_fid_stats(npy)
    ints = tmp_path / "ints.npz"
    np.savez(ints, mu=np.zeros(3, dtype=np.int64), sigma=np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="ints.npz"):
        load_fid_stats(ints)


def _mmd_unbiased_numpy(x, y):
    d = x.shape[1]
    m = x.shape[0]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_matches_numpy_estimator():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 20, generator=g)
    y = torch.rand(45, 20, generator=g) + 0.1
    _, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=100)
    assert std == 0.0  # one subset
    # subsets of 30 rows: replay the generator's draws in the reference
    g1 = torch.Generator().manual_seed(7)
    mean, std = kernel_inception_distance(x, y, num_subsets=5, subset_size=30, generator=g1)
    g2 = torch.Generator().manual_seed(7)
    vals = []
    for _ in range(5):
        ix = torch.randperm(60, generator=g2)[:30].numpy()
        iy = torch.randperm(45, generator=g2)[:30].numpy()
        vals.append(_mmd_unbiased_numpy(x.double().numpy()[ix], y.double().numpy()[iy]))
    assert mean == pytest.approx(np.mean(vals), rel=1e-12)
    assert std == pytest.approx(np.std(vals), rel=1e-9)
    # full-size sets of equal size: the subset is all rows in a shuffled order, which the estimator ignores
    y2 = y[:45]
    x2 = x[:45]
    mean_full, _ = kernel_inception_distance(x2, y2, num_subsets=2, subset_size=1000)
    ref = _mmd_unbiased_numpy(x2.double().numpy(), y2.double().numpy())
    assert mean_full == pytest.approx(ref, rel=1e-12)
    # same distribution: close to zero; shifted: clearly positive
    assert abs(kernel_inception_distance(x, x, num_subsets=3, subset_size=50, generator=g1)[0]) < 0.05
    assert kernel_inception_distance(x, x + 1, num_subsets=3, subset_size=50, generator=g1)[0] > 0.5


def test_kid_errors():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(torch.rand(1, 4), torch.rand(5, 4))
    with pytest.raises(ValueError, match="features2"):
        kernel_inception_distance(torch.rand(5, 4), torch.rand(5, 3))
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(torch.rand(5, 4), torch.rand(5, 4), num_subsets=0)
