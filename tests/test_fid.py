"""Frechet distance, streaming statistics, KID and statistics files (research/diffusion/fid.py)."""

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import special_ortho_group

from research.diffusion import fid
from research.errors import UserError


def _samples(rng, n, d, shift=0.0):
  """Correlated Gaussian samples with a random (non-diagonal) covariance."""
  return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + shift


def _fd(x, y):
  return fid.fd(fid.stats_of(x), fid.stats_of(y))


def _fd_sqrtm(mu1, s1, mu2, s2):
  root = scipy.linalg.sqrtm(s1 @ s2)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def test_fd_of_a_set_with_itself_is_zero():
  x = _samples(np.random.default_rng(0), 300, 16)
  s = fid.stats_of(x)
  assert abs(fid.fd(s, s)) < 1e-9 * np.trace(s.sigma)


def test_closed_form_diagonal_and_one_dimension():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
  v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  assert got == pytest.approx(expected, rel=1e-12)
  got_1d = fid.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]])
  assert got_1d == pytest.approx(3.0 ** 2 + (2.0 - 3.0) ** 2, rel=1e-12)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_agrees_with_scipy_sqrtm_on_non_commuting_covariances(d):
  rng = np.random.default_rng(d)
  a, b = fid.stats_of(_samples(rng, 4 * d, d)), fid.stats_of(_samples(rng, 4 * d, d, 0.5))
  assert np.abs(a.sigma @ b.sigma - b.sigma @ a.sigma).max() > 1e-3  # they do not commute
  ours = fid.fd(a, b)
  assert ours == pytest.approx(_fd_sqrtm(a.mu, a.sigma, b.mu, b.sigma), rel=1e-8)
  assert ours == pytest.approx(fid.frechet_distance_eigvals(a.mu, a.sigma, b.mu, b.sigma),
                               rel=1e-8)


def test_eigenvalues_match_those_of_the_product():
  rng = np.random.default_rng(3)
  a, b = fid.stats_of(_samples(rng, 100, 12)), fid.stats_of(_samples(rng, 100, 12))
  ours = np.sort(fid.sqrt_product_eigenvalues(a.sigma, b.sigma))
  direct = np.sort(np.linalg.eigvals(a.sigma @ b.sigma).real)
  np.testing.assert_allclose(ours, direct, rtol=1e-8, atol=1e-10 * direct.max())


def test_symmetry_rotation_translation_and_scaling():
  rng = np.random.default_rng(4)
  x, y = _samples(rng, 200, 10), _samples(rng, 200, 10, 1.0)
  base = _fd(x, y)
  assert _fd(y, x) == pytest.approx(base, rel=1e-10)
  rot = special_ortho_group.rvs(10, random_state=5)
  shift = rng.standard_normal(10) * 7
  assert _fd(x @ rot + shift, y @ rot + shift) == pytest.approx(base, rel=1e-9)
  assert _fd(3.5 * x, 3.5 * y) == pytest.approx(3.5 ** 2 * base, rel=1e-9)


def test_finite_with_fewer_samples_than_dimensions():
  rng = np.random.default_rng(6)
  x, y = rng.standard_normal((20, 64)), rng.standard_normal((30, 64)) + 0.2
  value = _fd(x, y)
  assert np.isfinite(value) and value > 0


def test_streaming_statistics_equal_numpy():
  rng = np.random.default_rng(7)
  x = _samples(rng, 1003, 24, 100.0)  # a large offset tests numerical stability
  running = fid.RunningStats(24)
  for start in range(0, 1003, 97):
    running.update(x[start:start + 97])
  s = running.stats()
  assert s.n == 1003
  np.testing.assert_allclose(s.mu, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_kid_matches_a_direct_quadratic_computation():
  rng = np.random.default_rng(8)
  x, y = rng.standard_normal((40, 6)), rng.standard_normal((50, 6)) + 0.3
  k = lambda a, b: (a @ b / 6 + 1) ** 3  # noqa: E731
  xx = sum(k(x[i], x[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
  yy = sum(k(y[i], y[j]) for i in range(50) for j in range(50) if i != j) / (50 * 49)
  xy = sum(k(x[i], y[j]) for i in range(40) for j in range(50)) / (40 * 50)
  direct = xx + yy - 2 * xy
  assert fid.mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-10)
  # one subset of every sample: a permutation, so the same value
  mean, std = fid.kid(x[:40], y[:40], n_subsets=1, subset_size=40)
  assert mean == pytest.approx(fid.mmd2_unbiased(x, y[:40]), rel=1e-10) and std == 0


def test_kid_near_zero_for_identical_distributions():
  rng = np.random.default_rng(9)
  x, y = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
  same, spread = fid.kid(x, y, n_subsets=20, subset_size=300)
  different, _ = fid.kid(x, y + 0.5, n_subsets=20, subset_size=300)
  assert abs(same) < 3 * spread + 1e-3
  assert different > 20 * abs(same)


def test_extrapolation_recovers_the_limit():
  counts = np.array([500, 1000, 2000, 5000])
  fd_inf, slope = fid.extrapolate(counts, 3.0 + 400.0 / counts)
  assert fd_inf == pytest.approx(3.0, rel=1e-10) and slope == pytest.approx(400.0, rel=1e-10)


def test_extrapolation_on_sampled_features_is_closer_to_truth():
  rng = np.random.default_rng(10)
  d = 8
  real = fid.Stats(mu=np.zeros(d), sigma=np.eye(d))
  fake = rng.standard_normal((4000, d)) * 1.1
  counts = [250, 500, 1000, 2000, 4000]
  values = [fid.fd(real, fid.stats_of(fake[:n])) for n in counts]
  fd_inf, _ = fid.extrapolate(counts, values)
  truth = d * (1.1 - 1.0) ** 2
  assert abs(fd_inf - truth) < abs(values[0] - truth)


def test_stats_file_round_trip_and_bad_shapes(tmp_path):
  s = fid.stats_of(np.random.default_rng(11).standard_normal((50, 4)), "digits")
  path = str(tmp_path / "stats.npz")
  fid.save_stats(path, s)
  back = fid.load_stats(path)
  np.testing.assert_array_equal(back.mu, s.mu)
  np.testing.assert_array_equal(back.sigma, s.sigma)
  assert (back.n, back.features) == (50, "digits") and fid.is_stats_file(path)
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, mu=np.zeros(4), sigma=np.zeros((3, 3)))
  with pytest.raises(UserError, match="sigma"):
    fid.load_stats(bad)
  np.savez(bad, mean=np.zeros(4))
  with pytest.raises(UserError, match="lacks"):
    fid.load_stats(bad)


def test_complex_square_root_is_an_error():
  sigma_bad = np.diag([1.0, -0.5, 2.0])  # not PSD: S1 S2 has a negative eigenvalue
  with pytest.raises(UserError, match="complex"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), sigma_bad)
  with pytest.raises(UserError, match="complex"):
    fid.frechet_distance(np.zeros(3), sigma_bad, np.zeros(3), np.eye(3))


def test_too_few_samples_is_an_error():
  with pytest.raises(UserError, match="at least 2"):
    fid.stats_of(np.zeros((1, 3)))


def test_statistics_at_several_counts_from_one_stream():
  x = np.random.default_rng(12).standard_normal((250, 5))
  batches = (x[i:i + 40] for i in range(0, 250, 40))
  stats, kept = fid.stats_at_counts(batches, [50, 130, 250], "f", keep=70)
  for s, n in zip(stats, [50, 130, 250]):
    assert s.n == n
    np.testing.assert_allclose(s.sigma, np.cov(x[:n], rowvar=False), rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(kept, x[:70])
  with pytest.raises(UserError, match="only 250"):
    fid.stats_at_counts(iter([x]), [300])
