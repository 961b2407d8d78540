"""Feature statistics, Frechet distance, KID and FID extrapolation, all in float64.

The Frechet distance between Gaussians N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017):

  d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those of
the symmetric PSD matrix A^T S2 A for any factor S1 = A A^T. We take A from a Cholesky
factorisation (an eigendecomposition when S1 is singular, e.g. fewer samples than dimensions),
and the eigenvalues from a symmetric solver: no non-symmetric `sqrtm`, no complex arithmetic.
The result is cross-checked against Tr(S1 S2) = sum of the eigenvalues of S1 S2.

Statistics files use the layout of the published `fid_stats_*.npz` files (`mu`, `sigma`), plus
optional `n` (sample count) and `features` (the extractor's name).
Shape suffixes: N samples, D feature dimension.
"""

import dataclasses
import io
import os
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import threadpoolctl

from research.errors import UserError
from research.fileio import atomic_write_bytes, npz_names, read_npz

# Relative size of a negative eigenvalue of S1 S2 (a complex square root) that is an error.
NEGATIVE_EIGENVALUE_RTOL = 1e-6


class RunningStats:
  """Streaming mean and covariance (Chan et al.'s pairwise update), float64.

  `update` takes batches of features; only the D-vector mean and the DxD scatter are kept,
  so 50,000 samples never sit in memory at once. `cov()` equals `np.cov(all_rows, rowvar=False)`.
  """

  def __init__(self, dim: int):
    self.n = 0
    self.mean_D = np.zeros(dim, np.float64)
    self.scatter_DxD = np.zeros((dim, dim), np.float64)

  @property
  def dim(self) -> int:
    return self.mean_D.shape[0]

  def update(self, x_NxD) -> None:
    x_NxD = np.asarray(x_NxD, np.float64)
    if x_NxD.ndim != 2 or x_NxD.shape[1] != self.dim:
      raise ValueError(f"features of shape {x_NxD.shape}; expected (N, {self.dim})")
    m = x_NxD.shape[0]
    if m == 0:
      return
    batch_mean = x_NxD.mean(axis=0)
    centred = x_NxD - batch_mean
    delta = batch_mean - self.mean_D
    total = self.n + m
    self.scatter_DxD += centred.T @ centred + np.outer(delta, delta) * (self.n * m / total)
    self.mean_D += delta * (m / total)
    self.n = total

  def cov(self) -> np.ndarray:
    if self.n < 2:
      raise UserError(f"covariance needs at least 2 samples; got {self.n}")
    return self.scatter_DxD / (self.n - 1)

  def stats(self, features: str = "") -> "Stats":
    return Stats(mu=self.mean_D.copy(), sigma=self.cov(), n=self.n, features=features)


@dataclasses.dataclass
class Stats:
  """Gaussian summary of a feature set: mean (D,), covariance (D, D), sample count, extractor."""
  mu: np.ndarray
  sigma: np.ndarray
  n: int = 0
  features: str = ""


def stats_of(x_NxD, features: str = "") -> Stats:
  running = RunningStats(np.shape(x_NxD)[1])
  running.update(x_NxD)
  return running.stats(features)


def stats_at_counts(feature_batches: Iterable, counts: Sequence[int], features: str = "",
                    keep: int = 0) -> tuple[list[Stats], np.ndarray]:
  """Stream feature batches; statistics of the first n rows for each n in `counts` (sorted).

  Also returns the first `keep` rows (for KID). Prefixes of a stream of independent samples
  are nested random subsets, as the FID-at-several-counts extrapolation needs.
  """
  counts = sorted(set(int(c) for c in counts))
  running, snapshots, kept = None, [], []
  n_kept = 0
  for batch in feature_batches:
    batch = np.asarray(batch)
    running = running or RunningStats(batch.shape[1])
    if n_kept < keep:
      kept.append(batch[:keep - n_kept])
      n_kept += len(kept[-1])
    while len(batch) and len(snapshots) < len(counts):
      take = counts[len(snapshots)] - running.n
      running.update(batch[:take])
      batch = batch[take:]
      if running.n == counts[len(snapshots)]:
        snapshots.append(running.stats(features))
    if len(snapshots) == len(counts):
      break
  if len(snapshots) < len(counts):
    have = 0 if running is None else running.n
    raise UserError(f"asked for statistics of {counts[-1]} samples, but only {have} are there")
  return snapshots, (np.concatenate(kept) if kept else np.zeros((0, 0)))


def _check_stats(mu, sigma, where: str) -> tuple[np.ndarray, np.ndarray]:
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise UserError(f"{where}: mu has shape {mu.shape} and sigma {sigma.shape}; expected mu (D,) "
                    "and sigma (D, D)")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise UserError(f"{where}: mu or sigma holds NaN or infinity")
  scale = max(np.abs(sigma).max(), 1e-300)
  asym = np.abs(sigma - sigma.T).max() / scale
  if asym > 1e-6:
    raise UserError(f"{where}: sigma is not symmetric (relative asymmetry {asym:.2e}); a "
                    "covariance must be")
  return mu, (sigma + sigma.T) / 2


def check_covariance(sigma_DxD, where: str) -> None:
  """Raises UserError unless sigma is positive semi-definite up to rounding (its lowest
  eigenvalue at least -NEGATIVE_EIGENVALUE_RTOL times its largest), as the distance needs."""
  with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # see sqrt_product_eigenvalues
    w = scipy.linalg.eigh(np.asarray(sigma_DxD, np.float64), eigvals_only=True,
                          check_finite=False, driver="evd")
  top = max(w.max(initial=0.0), 1e-300)
  if w.min(initial=0.0) < -NEGATIVE_EIGENVALUE_RTOL * top:
    raise UserError(f"{where}: the covariance has eigenvalue {w.min():.3e} (largest {top:.3e}): "
                    "it is not positive semi-definite, so the Frechet distance is undefined")


def _congruence(sigma1_DxD: np.ndarray, sigma2_DxD: np.ndarray) -> np.ndarray:
  """A^T sigma2 A for a factor sigma1 = A A^T: symmetric, with the eigenvalues of sigma1 sigma2.

  A is the Cholesky factor (two triangular products) or, when sigma1 is singular, V sqrt(W)
  from its eigendecomposition.
  """
  try:
    low = scipy.linalg.cholesky(sigma1_DxD, lower=True, check_finite=False)
  except np.linalg.LinAlgError:
    w, v = scipy.linalg.eigh(sigma1_DxD, check_finite=False)
    top = max(w.max(initial=0.0), 1e-300)
    if w.min(initial=0.0) < -NEGATIVE_EIGENVALUE_RTOL * top:
      raise UserError(f"a covariance has eigenvalue {w.min():.3e} (largest {top:.3e}): it is not "
                      "positive semi-definite, so (S1 S2)^(1/2) would be complex") from None
    a = v * np.sqrt(np.clip(w, 0, None))
    return a.T @ sigma2_DxD @ a
  s2_l = scipy.linalg.blas.dtrmm(1.0, low, sigma2_DxD, side=1, lower=1)  # sigma2 @ L
  return scipy.linalg.blas.dtrmm(1.0, low, s2_l, side=0, lower=1, trans_a=1)  # L^T @ ...


def sqrt_product_eigenvalues(sigma1, sigma2) -> np.ndarray:
  """Eigenvalues of sigma1 @ sigma2 (real, >= 0 up to rounding), by a symmetric solver."""
  m = _congruence(np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64))
  # The tridiagonal reduction is memory-bound (BLAS-2) and OpenBLAS threads thrash on a busy
  # machine: at D = 2048 on a shared 2-core machine, 1.2 s with one thread against 4.7-9.6 s.
  with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
    return scipy.linalg.eigh((m + m.T) / 2, eigvals_only=True, check_finite=False,
                             driver="evd")


def _trace_sqrt(eigenvalues: np.ndarray, trace_product: float) -> float:
  """Tr((S1 S2)^(1/2)) from the eigenvalues of S1 S2, refusing a complex square root."""
  top = max(eigenvalues.max(initial=0.0), 1e-300)
  lowest = eigenvalues.min(initial=0.0)
  if lowest < -NEGATIVE_EIGENVALUE_RTOL * top:
    raise UserError(
        f"(S1 S2)^(1/2) is complex: S1 S2 has eigenvalue {lowest:.3e} (largest {top:.3e}), "
        f"an imaginary part of {np.sqrt(-lowest):.3e} in the square root; a covariance in the "
        "statistics is not positive semi-definite")
  total = eigenvalues.sum()
  if abs(total - trace_product) > 1e-8 * max(abs(trace_product), top):
    raise ArithmeticError(f"eigenvalues of S1 S2 sum to {total!r} but Tr(S1 S2) = "
                          f"{trace_product!r}: the eigen-solver lost accuracy")
  return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
  mu1, sigma1 = _check_stats(mu1, sigma1, "first statistics")
  mu2, sigma2 = _check_stats(mu2, sigma2, "second statistics")
  if mu1.shape != mu2.shape:
    raise UserError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]} (statistics "
                    "from different extractors?)")
  eig = sqrt_product_eigenvalues(sigma1, sigma2)
  tr_sqrt = _trace_sqrt(eig, float(np.sum(sigma1 * sigma2)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def frechet_distance_eigvals(mu1, sigma1, mu2, sigma2) -> float:
  """The same distance from the non-symmetric eigenvalues of sigma1 @ sigma2 (a cross-check)."""
  mu1, sigma1 = _check_stats(mu1, sigma1, "first statistics")
  mu2, sigma2 = _check_stats(mu2, sigma2, "second statistics")
  eig = np.linalg.eigvals(sigma1 @ sigma2)
  top = max(np.abs(eig).max(initial=0.0), 1e-300)
  if np.abs(eig.imag).max(initial=0.0) > 1e-6 * top:
    raise UserError(f"S1 S2 has complex eigenvalues (imaginary part up to "
                    f"{np.abs(eig.imag).max():.3e}, largest {top:.3e})")
  tr_sqrt = _trace_sqrt(eig.real, float(np.sum(sigma1 * sigma2)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def fd(a: Stats, b: Stats) -> float:
  return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# KID (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3, over subsets.


def polynomial_kernel(x_NxD, y_MxD) -> np.ndarray:
  d = x_NxD.shape[1]
  return (x_NxD @ y_MxD.T / d + 1.0) ** 3


def mmd2_unbiased(x_NxD, y_MxD) -> float:
  """Unbiased MMD^2 estimate with the cubic polynomial kernel."""
  x, y = np.asarray(x_NxD, np.float64), np.asarray(y_MxD, np.float64)
  n, m = x.shape[0], y.shape[0]
  k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  term_xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
  term_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(term_xx + term_yy - 2 * k_xy.mean())


def kid(x_NxD, y_MxD, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """KID: mean and standard deviation of the unbiased MMD^2 over random subsets."""
  n, m = len(x_NxD), len(y_MxD)
  if min(n, m) < 2:
    raise UserError(f"KID needs at least 2 samples on each side; got {n} and {m}")
  size = min(subset_size, n, m)
  rng = np.random.default_rng(seed)
  values = [mmd2_unbiased(x_NxD[rng.choice(n, size, replace=False)],
                          y_MxD[rng.choice(m, size, replace=False)])
            for _ in range(n_subsets)]
  return float(np.mean(values)), float(np.std(values))


# FID at several sample counts and its extrapolation (Chong & Forsyth 2020).


def extrapolate(counts, distances) -> tuple[float, float]:
  """Fit FD_N = FD_inf + slope / N by least squares; return (FD_inf, slope)."""
  counts = np.asarray(counts, np.float64)
  distances = np.asarray(distances, np.float64)
  if len(np.unique(counts)) < 2:
    raise UserError(f"extrapolation needs at least 2 different sample counts; got "
                    f"{counts.tolist()}")
  slope, intercept = np.polyfit(1.0 / counts, distances, 1)
  return float(intercept), float(slope)


# Statistics files.


def save_stats(path: str, stats: Stats) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n),
           features=np.array(stats.features))
  atomic_write_bytes(path, buffer.getvalue())


def load_stats(path: str, what: str = "statistics file") -> Stats:
  """Read `mu` and `sigma` (and `n`, `features` when present) from an `.npz` file; a UserError
  naming `what` and the path for a file that is missing, damaged or not statistics."""
  data = read_npz(path, what, keys=("mu", "sigma"), optional=("n", "features"))
  mu, sigma = _check_stats(data["mu"], data["sigma"], f"{what} {path!r}")
  try:
    n = int(data["n"]) if "n" in data else 0
    features = str(data["features"]) if "features" in data else ""
  except (TypeError, ValueError) as e:
    raise UserError(f"{what} {path!r}: 'n' or 'features' is not a single value: {e}") from e
  return Stats(mu=mu, sigma=sigma, n=n, features=features)


def is_stats_file(path: str) -> bool:
  """True when `path` is an .npz holding `mu` and `sigma` (not an array of images); False for
  anything else, unreadable files included (the image reader then names their problem)."""
  if not (os.path.isfile(path) and path.endswith(".npz")):
    return False
  try:
    return {"mu", "sigma"} <= set(npz_names(path))
  except UserError:
    return False
