"""Frechet and kernel distances between feature distributions (FID and KID, any feature extractor).

Dimension names: B a batch of feature vectors, N / M numbers of feature vectors of the two sets, D the feature
dimension (2048 for Inception-v3 pool3). With Inception-v3 pool features from a user-supplied weight file and
the official preprocessing these are the standard FID (Heusel et al. 2017) and KID (Binkowski et al. 2018);
with any other extractor they are the same distances over that extractor's features.

All statistics are accumulated and all distances computed in float64, whatever the feature dtype.

The standard FID (pytorch-fid's numbers) with the user's copy of pytorch-fid's Inception weights::

    net = lib3d.nn.FIDInceptionV3().eval()
    lib3d.nn.load_inception("pt_inception-2015-12-05-6726825d.pth", net)
    stats = FeatureStatistics()
    with torch.no_grad():
        for images in loader:                      # (B, 3, H, W) float in [0, 1]
            stats.update(net(images))              # (B, 2048)
    mu_ref, sigma_ref = load_fid_stats("fid_stats_cifar10_train.npz")
    fid = frechet_distance(stats.mu, stats.sigma, mu_ref, sigma_ref)

FID: ``d^2 = |mu_1 - mu_2|^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^(1/2))``. pytorch-fid and clean-fid take
``scipy.linalg.sqrtm`` of the non-symmetric product ``S_1 S_2`` (a Schur decomposition, ~10 s for D = 2048).
Here ``Tr((S_1 S_2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``S_1 S_2``, which are those
of the symmetric positive semi-definite ``L^T S_2 L`` for any factor ``S_1 = L L^T``: a Cholesky factor
when ``S_1`` (or ``S_2``, swapping the roles) is positive definite, otherwise ``L = U diag(sqrt(s))`` from
the symmetric eigendecomposition ``S_1 = U diag(s) U^T`` (exact for singular covariances, e.g. fewer
samples than dimensions). Eigenvalues below zero are round-off and are clamped to zero. As in pytorch-fid,
when the result is not finite the computation is repeated with ``eps`` added to both diagonals.

KID: the unbiased estimator of the squared MMD with the cubic polynomial kernel
``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets of ``m = min(N, M, subset_size)`` vectors drawn
without replacement from each set (clean-fid's ``kernel_distance``; torch-fidelity's defaults)::

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from lib3d._checks import check_shape, check_shapes, is_tracing

__all__ = [
    "FeatureStatistics",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_fid_stats",
    "save_fid_stats",
    "trace_sqrt_product",
]


class FeatureStatistics:
    """Streaming mean and covariance of feature vectors, accumulated in float64.

    Incoming batches are buffered (in float64, up to ``chunk_rows`` rows) and each full chunk is folded in
    with Chan et al.'s pairwise update (numerically stable: no ``E[x x^T] - mu mu^T`` cancellation), so the
    whole feature set never sits in memory and small batches do not each pay a ``D x D`` update.
    ``sigma`` is the unbiased covariance (``np.cov(features, rowvar=False)``), ``mu`` the mean
    (``np.mean(features, axis=0)``).

    Args:
        chunk_rows: rows buffered before they are folded into the running statistics.

    Example:
        >>> stats = FeatureStatistics()
        >>> for images in loader:
        ...     stats.update(extractor(images))          # (B, D)
        >>> fid = frechet_distance(stats.mu, stats.sigma, ref_mu, ref_sigma)
    """

    def __init__(self, chunk_rows: int = 2048) -> None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)
        self._n = 0  # rows folded into _mean / _m2
        self._dim: int | None = None
        self._mean: torch.Tensor | None = None  # (D,) float64
        self._m2: torch.Tensor | None = None  # (D, D) float64, sum of centred outer products
        self._pending: list[torch.Tensor] = []  # (B, D) float64 batches not yet folded in
        self._pending_rows = 0

    @property
    def count(self) -> int:
        """Number of feature vectors seen."""
        return self._n + self._pending_rows

    @property
    def dim(self) -> int | None:
        """D, or None before the first batch."""
        return self._dim

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of feature vectors.

        Args:
            features: ``(B, D) float`` (any float dtype; accumulated in float64 on its device).

        Returns:
            self (for chaining).

        Raises:
            TypeError: ``features`` not a float tensor.
            ValueError: not 2-D, or D differs from earlier batches.
        """
        check_shape("features", features, (None, self._dim), dtype="float")
        b = features.shape[0]
        self._dim = int(features.shape[1])
        if b == 0:
            return self
        device = self._mean.device if self._mean is not None else (
            self._pending[0].device if self._pending else features.device)
        self._pending.append(features.detach().to(device=device, dtype=torch.float64))
        self._pending_rows += b
        if self._pending_rows >= self.chunk_rows:
            self._flush()
        return self

    def _flush(self) -> None:
        if not self._pending:
            return
        x = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        mean_b = x.mean(0)
        xc = x - mean_b
        self._fold(mean_b, xc.T @ xc, x.shape[0])

    def _fold(self, mean_b: torch.Tensor, m2_b: torch.Tensor, b: int) -> None:
        if self._mean is None:
            self._mean, self._m2, self._n = mean_b.clone(), m2_b.clone(), b
            return
        n = self._n
        total = n + b
        delta = mean_b.to(self._mean.device) - self._mean
        # M2 = M2_a + M2_b + delta delta^T n_a n_b / (n_a + n_b);  mean = mean_a + delta n_b / (n_a + n_b)
        self._m2 = self._m2 + m2_b.to(self._m2.device) + torch.outer(delta, delta) * (n * b / total)
        self._mean = self._mean + delta * (b / total)
        self._n = total

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Fold another accumulator (e.g. from another worker) into this one; returns self."""
        if not isinstance(other, FeatureStatistics):
            raise TypeError(f"other must be a FeatureStatistics, got {type(other).__name__}")
        if other.count == 0:
            return self
        if self._dim is not None and other.dim != self._dim:
            raise ValueError(f"other has feature dimension {other.dim}, this accumulator {self._dim}")
        self._flush()
        other._flush()
        self._dim = other.dim
        self._fold(other._mean, other._m2, other._n)
        return self

    @property
    def mu(self) -> torch.Tensor:
        """``(D,) float64`` mean of all features seen."""
        self._flush()
        if self._mean is None:
            raise ValueError("FeatureStatistics is empty: call update() with at least one feature vector")
        return self._mean

    @property
    def sigma(self) -> torch.Tensor:
        """``(D, D) float64`` unbiased covariance (divides by ``count - 1``); needs ``count >= 2``."""
        self._flush()
        if self._m2 is None or self._n < 2:
            raise ValueError(f"the covariance needs at least 2 feature vectors, got {self.count}")
        return self._m2 / (self._n - 1)


def _as_float64(name: str, x, spec) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    check_shape(name, x, spec, dtype="float")
    return x.detach().to(torch.float64)


def _check_symmetric(name: str, s: torch.Tensor) -> None:
    if is_tracing():
        return
    scale = float(s.abs().max()) if s.numel() else 0.0
    asym = float((s - s.T).abs().max()) if s.numel() else 0.0
    if asym > 1e-6 * max(scale, 1e-300):
        raise ValueError(f"{name} must be a symmetric covariance matrix, got max |S - S^T| = {asym:.3g} "
                         f"(max |S| = {scale:.3g})")


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """``Tr((S_1 S_2)^(1/2))`` for symmetric positive semi-definite ``S_1, S_2`` via symmetric eigenvalues.

    Args:
        sigma1, sigma2: ``(D, D) float64`` symmetric PSD matrices.

    Returns:
        Scalar float64 tensor: the sum of the square roots of the (clamped non-negative) eigenvalues of
        ``L^T S_2 L`` with ``S_1 = L L^T`` (a Cholesky factor of ``S_1`` or ``S_2`` when one is positive
        definite, else the eigendecomposition square root of ``S_1``).
    """
    for a, b in ((sigma1, sigma2), (sigma2, sigma1)):
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            factor = chol
            other = b
            break
    else:
        s, u = torch.linalg.eigh(sigma1)
        factor = u * s.clamp_min(0).sqrt()  # S_1 = F F^T
        other = sigma2
    m = factor.T @ other @ factor
    m = 0.5 * (m + m.T)
    return torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians ``N(mu_1, S_1)`` and ``N(mu_2, S_2)`` (the FID formula).

    ``d^2 = |mu_1 - mu_2|^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^(1/2))``, computed in float64 with the
    symmetric-eigenvalue route of :func:`trace_sqrt_product` (same value as pytorch-fid's
    ``calculate_frechet_distance``, which uses ``scipy.linalg.sqrtm``; singular covariances are exact).
    If the trace is not finite, ``eps * I`` is added to both covariances and it is recomputed (pytorch-fid's
    fallback).

    Args:
        mu1, mu2: ``(D,) float`` means (tensors or numpy arrays).
        sigma1, sigma2: ``(D, D) float`` symmetric covariances (tensors or numpy arrays).
        eps: diagonal offset of the fallback.

    Returns:
        The squared Frechet distance as a Python float.

    Raises:
        TypeError: non-float inputs.
        ValueError: mismatched shapes, non-symmetric covariances or non-finite statistics.
    """
    mu1 = _as_float64("mu1", mu1, ("D",))
    mu2 = _as_float64("mu2", mu2, ("D",))
    sigma1 = _as_float64("sigma1", sigma1, ("D", "D"))
    sigma2 = _as_float64("sigma2", sigma2, ("D", "D"))
    check_shapes(mu1=(mu1, ("D",)), mu2=(mu2, ("D",)), sigma1=(sigma1, ("D", "D")), sigma2=(sigma2, ("D", "D")))
    device = mu1.device
    mu2, sigma1, sigma2 = mu2.to(device), sigma1.to(device), sigma2.to(device)
    for name, x in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
    _check_symmetric("sigma1", sigma1)
    _check_symmetric("sigma2", sigma2)
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    if not bool(torch.isfinite(tr_covmean)):
        offset = torch.eye(sigma1.shape[0], dtype=torch.float64, device=device) * eps
        tr_covmean = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """FID between two feature sets (clean-fid's ``fid_from_feats``).

    Args:
        features1: ``(N, D) float`` features of the first set (N >= 2).
        features2: ``(M, D) float`` features of the second set (M >= 2).

    Returns:
        :func:`frechet_distance` of their float64 means and unbiased covariances.
    """
    check_shapes(features1=(features1, (None, "D")), features2=(features2, (None, "D")), dtype="float")
    s1 = FeatureStatistics().update(features1)
    s2 = FeatureStatistics().update(features2)
    return frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)


def kernel_inception_distance(features1: torch.Tensor, features2: torch.Tensor, num_subsets: int = 100,
                              subset_size: int = 1000, generator: torch.Generator | None = None
                              ) -> tuple[float, float]:
    """KID: unbiased squared MMD with the cubic polynomial kernel, averaged over random subsets.

    Each subset draws ``m = min(N, M, subset_size)`` rows of each set without replacement; the estimator
    (module docstring) is evaluated in float64 per subset.

    Args:
        features1: ``(N, D) float`` features of the first set.
        features2: ``(M, D) float`` features of the second set (same device).
        num_subsets: number of random subsets.
        subset_size: largest subset size m.
        generator: random generator for the subsets (on the features' device); None uses the global one.

    Returns:
        ``(mean, std)`` over subsets of the per-subset ``MMD^2_u`` (std with ``ddof = 0``, as
        torch-fidelity / torchmetrics).

    Raises:
        ValueError: fewer than 2 rows in a set, mismatched D, or non-positive ``num_subsets``.
    """
    check_shapes(features1=(features1, (None, "D")), features2=(features2, (None, "D")), dtype="float")
    if int(num_subsets) < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    n1, n2 = features1.shape[0], features2.shape[0]
    m = min(n1, n2, int(subset_size))
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {n1} and {n2} "
                         f"(subset_size {subset_size})")
    d = features1.shape[1]
    x_all = features1.detach().to(torch.float64)
    y_all = features2.detach().to(torch.float64).to(x_all.device)
    values = []
    for _ in range(int(num_subsets)):  # loop over subsets (each one is batched matrix products)
        x = x_all[torch.randperm(n1, generator=generator, device=x_all.device)[:m]]
        y = y_all[torch.randperm(n2, generator=generator, device=x_all.device)[:m]]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        same = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(same - 2.0 * kxy.sum() / (m * m))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=False))


def save_fid_stats(path: str | os.PathLike, mu, sigma) -> Path:
    """Write FID statistics as a compressed ``.npz`` with the arrays ``mu`` and ``sigma`` (pytorch-fid's
    ``--save-stats`` / clean-fid's format), float64, to a temporary name then renamed.

    Args:
        path: destination (written exactly there; no ``.npz`` is appended).
        mu: ``(D,) float`` mean (tensor or numpy array).
        sigma: ``(D, D) float`` covariance.

    Returns:
        The path written.
    """
    mu_t = _as_float64("mu", mu, ("D",))
    sigma_t = _as_float64("sigma", sigma, ("D", "D"))
    check_shapes(mu=(mu_t, ("D",)), sigma=(sigma_t, ("D", "D")))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, mu=mu_t.cpu().numpy(), sigma=sigma_t.cpu().numpy())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_fid_stats(path: str | os.PathLike, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read FID statistics from an ``.npz`` holding ``mu`` (D,) and ``sigma`` (D, D) (the official repos'
    reference statistics, e.g. pytorch-fid's ``fid_stats_*.npz`` or clean-fid's ``stats/*.npz``).

    Args:
        path: the ``.npz`` file.
        device: where to put the tensors (default CPU).

    Returns:
        ``(mu (D,) float64, sigma (D, D) float64)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an npz archive, missing ``mu``/``sigma``, wrong shapes or non-float arrays; the
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file {str(path)!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"FID statistics file {str(path)!r} is not a readable .npz archive: {e}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"FID statistics file {str(path)!r} is a single .npy array, not an .npz archive "  # noqa: TRY004
                         f"with 'mu' and 'sigma'")
    with loaded as f:
        missing = [k for k in ("mu", "sigma") if k not in f.files]
        if missing:
            raise ValueError(f"FID statistics file {str(path)!r} lacks {missing}; it holds {sorted(f.files)}")
        try:
            mu, sigma = np.asarray(f["mu"]), np.asarray(f["sigma"])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ValueError(f"FID statistics file {str(path)!r}: cannot read 'mu'/'sigma': {e}") from e
    if mu.dtype.kind != "f" or sigma.dtype.kind != "f":
        raise ValueError(f"FID statistics file {str(path)!r}: 'mu' and 'sigma' must be float arrays, got "
                         f"{mu.dtype} and {sigma.dtype}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"FID statistics file {str(path)!r}: expected mu (D,) and sigma (D, D), got "
                         f"{mu.shape} and {sigma.shape}")
    mu_t = torch.from_numpy(mu.astype(np.float64)).to(device or "cpu")
    sigma_t = torch.from_numpy(sigma.astype(np.float64)).to(device or "cpu")
    return mu_t, sigma_t
