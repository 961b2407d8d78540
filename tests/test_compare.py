"""Two sample sets compared in memory (research/diffusion/compare.py), against fid.py directly."""

import numpy as np
import pytest

from research.diffusion import compare
from research.diffusion import fid

COUNTS = [40, 80, 120]


class _Pixels:
  """A stand-in extractor: the 16 pixels of a 4x4 grey image as its features."""
  dim = 16

  def __call__(self, x_BxHxWxC):
    return np.asarray(x_BxHxWxC, np.float64).reshape(len(x_BxHxWxC), self.dim)


@pytest.fixture
def images():
  rng = np.random.default_rng(0)
  real_Nx4x4 = rng.uniform(0, 1, (120, 4, 4)).astype(np.float32)
  fake_Nx4x4 = np.clip(real_Nx4x4[::-1] ** 2 + 0.05 * rng.standard_normal((120, 4, 4)), 0, 1)
  return real_Nx4x4, fake_Nx4x4.astype(np.float32)


def test_compare_equals_the_fid_functions(images, tmp_path):
  real_x, fake_x = images
  real, fake = compare.Side.from_array("REAL", real_x), compare.Side.from_array("FAKE", fake_x)
  real.compute(_Pixels(), "pixels", batch_size=32)
  fake.compute(_Pixels(), "pixels", counts=COUNTS, batch_size=32, kid_max=100)
  result = compare.compare(real, fake, "pixels", kid_subsets=5, kid_subset_size=50)
  real_f, fake_f = real_x.reshape(120, 16), fake_x.reshape(120, 16)
  want = [fid.fd(fid.stats_of(real_f), fid.stats_of(fake_f[:n])) for n in COUNTS]
  np.testing.assert_allclose(result.distance, want, rtol=1e-9)
  assert (result.distance_inf, result.slope) == pytest.approx(fid.extrapolate(COUNTS, want))
  assert (result.kid, result.kid_std) == pytest.approx(fid.kid(real_f, fake_f[:100], 5, 50))
  assert result.as_dict() == {"features": "pixels", "metric": "FD_pixels", "real_n": 120,
                              "fake_n": COUNTS, "distance": result.distance,
                              "distance_inf": result.distance_inf, "kid": result.kid,
                              "kid_std": result.kid_std}
  saved = compare.Side.open("REAL", real.save(str(tmp_path)))
  assert saved.path.endswith("array_pixels_stats.npz")
  saved.compute(None, "pixels")
  again = compare.compare(saved, fake, "pixels")
  assert again.distance == pytest.approx(result.distance) and again.kid is None
  assert "kid" not in again.as_dict() and saved.describe() == "REAL: 120 samples (statistics file)"
