"""Comparing two sets of samples: FD at several sample counts, its extrapolation, and KID.

A `Side` is one set, REAL or FAKE: images (a folder, an image `.npz` or an array) whose features
are streamed into statistics at one or more sample counts, or a statistics file read as it is.
`compare` gives the Frechet distance of REAL's statistics to FAKE's at each count, the Chong &
Forsyth (2020) extrapolation to infinitely many samples when there are several counts, and KID
when both sides kept features. Nothing here prints; `python -m launch fid` (launch/fid.py) is the
command around it. An extractor is any callable from images (B, H, W, C) in [0, 1] to features
(B, D) with a `dim` attribute, e.g. `research.models.digits.DigitsFeatures()`.
"""

import dataclasses
import os

from research.data import images as image_data
from research.diffusion import fid
from research.errors import UserError

METRIC_NAMES = {"inception": ("FID", "KID"), "digits": ("FD_digits", "KID_digits")}


def metric_names(features: str) -> tuple[str, str]:
  """(distance name, KID name) for an extractor: FID only with Inception features."""
  return METRIC_NAMES.get(features, (f"FD_{features}", f"KID_{features}"))


class Side:
  """One set of samples: statistics at its sample counts, and features kept for KID.

  Made from images or from loaded statistics (see `open` and `from_array`); `compute` fills
  `stats` (one `fid.Stats` per count, ascending), `counts` and, for images, `kept` (the first
  feature vectors, N x D).
  """

  def __init__(self, label: str, path: str, images: image_data.ImageSet | None = None,
               loaded: fid.Stats | None = None):
    self.label, self.path = label, path
    self.images, self.loaded = images, loaded
    self.stats, self.counts, self.kept = [], [], None
    self.name = os.path.basename(os.path.normpath(path)).removesuffix(".npz")

  @classmethod
  def open(cls, label: str, path: str) -> "Side":
    """A statistics `.npz` (`mu`, `sigma`), a folder of images or an `.npz` of images."""
    if fid.is_stats_file(path):
      return cls(label, path, loaded=fid.load_stats(path, f"{label} statistics file"))
    return cls(label, path, images=image_data.open_images(path, label))

  @classmethod
  def from_array(cls, label: str, images_NxHxWxC, name: str = "array") -> "Side":
    """Images in memory: uint8 0..255 or floats in [0, 1], (N, H, W) or (N, H, W, C)."""
    return cls(label, name, images=image_data.from_array(images_NxHxWxC, name))

  def check_counts(self, counts) -> None:
    """Raises UserError unless the images are at least 2 and at least max(counts)."""
    if self.images is None:
      return
    if self.images.n < 2:
      raise UserError(f"{self.label} {self.path!r} has {self.images.n} image(s); at least 2 "
                      "are needed")
    if counts and max(counts) > self.images.n:
      raise UserError(f"{self.label} {self.path!r} has {self.images.n} images; --n asks for "
                      f"{max(counts)}")

  def compute(self, extractor, features: str, counts=None, batch_size: int = 50,
              kid_max: int = 10000) -> None:
    """Statistics of the first n samples for each n in `counts` (default: all of them).

    Keeps the first `kid_max` feature vectors for KID. Loaded statistics are checked against
    `features` and the extractor's dimension (`extractor` may be None for them).
    """
    if self.loaded is not None:
      self._check_loaded(extractor, features)
      self.stats, self.counts = [self.loaded], [self.loaded.n]
      return
    counts = counts or [self.images.n]
    batches = (extractor(x) for x in self.images.batches(batch_size, max(counts)))
    self.stats, self.kept = fid.stats_at_counts(batches, counts, features, kid_max)
    self.counts = sorted(set(counts))

  def _check_loaded(self, extractor, features: str) -> None:
    """Raises UserError unless the statistics suit `features` and the extractor's dimension;
    with an extractor (the other side's features are to be computed, slowly), also unless their
    covariance is positive semi-definite, so that the distance cannot fail after that work."""
    s = self.loaded
    if s.features and s.features != features:
      raise UserError(f"{self.label} statistics {self.path!r} were computed with features "
                      f"{s.features!r}, not {features!r}")
    if extractor is not None and s.mu.shape[0] != extractor.dim:
      raise UserError(f"{self.label} statistics {self.path!r} have dimension {s.mu.shape[0]}; "
                      f"--features {features} gives {extractor.dim}")
    if extractor is not None:
      fid.check_covariance(s.sigma, f"{self.label} statistics {self.path!r}")

  def save(self, folder: str) -> str:
    """Writes the statistics of the most samples to folder/<name>_<features>_stats.npz."""
    path = os.path.join(folder, f"{self.name}_{self.stats[-1].features}_stats.npz")
    fid.save_stats(path, self.stats[-1])
    return path

  def describe(self) -> str:
    kind = "statistics file" if self.loaded is not None else self.images.source
    n = self.counts[-1] if self.counts and self.counts[-1] else "unknown number of"
    return f"{self.label}: {n} samples ({kind})"


@dataclasses.dataclass
class Comparison:
  """The numbers of one comparison; `as_dict()` is its JSON form.

  `distance[i]` compares all of REAL with the first `fake_n[i]` samples of FAKE; `distance_inf`
  and `slope` are the fit distance = distance_inf + slope / N; `kid` and `kid_std` are the mean
  and standard deviation over `kid_subsets` subsets of `kid_subset_size` samples per side.
  """

  features: str
  real_n: int
  fake_n: list[int]
  distance: list[float]
  distance_inf: float | None = None
  slope: float | None = None
  kid: float | None = None
  kid_std: float | None = None
  kid_subsets: int = 0
  kid_subset_size: int = 0

  @property
  def metric(self) -> str:
    return metric_names(self.features)[0]

  def as_dict(self) -> dict:
    result = {"features": self.features, "metric": self.metric, "real_n": self.real_n,
              "fake_n": self.fake_n, "distance": self.distance}
    if self.distance_inf is not None:
      result["distance_inf"] = self.distance_inf
    if self.kid is not None:
      result["kid"], result["kid_std"] = self.kid, self.kid_std
    return result


def compare(real: Side, fake: Side, features: str, kid_subsets: int = 100,
            kid_subset_size: int = 1000) -> Comparison:
  """FD of REAL's statistics (all its samples) to FAKE's at each count, extrapolated, and KID.

  Both sides must have been computed. The extrapolation needs two or more known counts; KID
  needs kept features on both sides (images, not statistics files).
  """
  result = Comparison(features, real.counts[-1], fake.counts,
                      [fid.fd(real.stats[-1], s) for s in fake.stats])
  if len(fake.counts) >= 2 and all(fake.counts):
    result.distance_inf, result.slope = fid.extrapolate(fake.counts, result.distance)
  if real.kept is not None and fake.kept is not None:
    result.kid, result.kid_std = fid.kid(real.kept, fake.kept, kid_subsets, kid_subset_size)
    result.kid_subsets = kid_subsets
    result.kid_subset_size = min(kid_subset_size, len(real.kept), len(fake.kept))
  return result
