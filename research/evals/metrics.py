"""Task metrics, pure numpy: edit distance, multiple choice (grade, probabilities, Brier),
calibration (ECE, reliability diagram), BIG-bench's linearity and breakthroughness, bootstrap
intervals.

Linearity and breakthroughness (Srivastava et al. 2022, "Beyond the Imitation Game", Appendix B,
"Definitions of linearity and breakthroughness"): for a task's scores y_1..y_n at increasing
model scales x_1 < ... < x_n, with Delta y_i = y_{i+1} - y_i,

    I(y) = sign(argmax_i y_i - argmin_i y_i) * (max_i y_i - min_i y_i)
    linearity        L(y) = I(y) / sqrt(mean_i (Delta y_i)^2)      root mean square step
    breakthroughness B(y) = I(y) / sqrt(median_i (Delta y_i)^2)    root median square step

I(y) is the total change, positive when the best score comes at a larger scale than the worst.
Steady improvement spreads it over many small steps (L large); a jump puts it into a few steps,
so that the typical (median) step is small and B is large. The scales enter only through the
order of the points. The breakthroughness formula was checked against a public reimplementation
(its "legacy" mode: sign(argmax - argmin)(max - min) / sqrt(median(diff(y)^2))); the
linearity's root-mean-square denominator is as we read the paper's appendix, which we could not
re-open from here: check it against the paper before quoting absolute values of L.
Where the denominator is 0 (more than half the steps exactly flat for B) the value is
+-inf for a nonzero I(y), 0 for a flat curve.
"""

import dataclasses

import numpy as np
import scipy.stats

from research.errors import UserError


# ---------------------------------------------------------------------------------------------
# Edit distance
# ---------------------------------------------------------------------------------------------

def edit_distance(a, b) -> int:
  """Levenshtein distance between two sequences (token ids, characters of strings, any items
  compared with ==): the fewest insertions, deletions and substitutions turning a into b."""
  a, b = list(a), list(b)
  if len(a) < len(b):
    a, b = b, a
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class MultipleChoice:
  """One multiple-choice example scored from its choices' log-likelihoods.

  grade: BIG-bench's multiple_choice_grade, the target score of the highest-scoring choice (1 or
    0 with correct indices: the argmax, first on ties, is a correct choice).
  probs: the choices' normalised probabilities, softmax of the log-likelihoods.
  brier: sum over choices of (p_i - t_i)^2, t the target distribution (one-hot for one correct
    choice), in [0, 2]: the same definition as the per-token Brier score of
    `research.evals.generate.score`.
  brier_bigbench: BIG-bench's calibration_multiple_choice_brier_score for this example, the mean
    over choices of the same terms (brier / n_choices), with t the normalised target scores.
  confidence: max_i p_i (what ECE and reliability diagrams bin); correct: grade > 0.
  """
  grade: float
  probs: np.ndarray
  brier: float
  brier_bigbench: float
  confidence: float
  correct: bool


def multiple_choice(logprobs_per_choice, correct_index=None, target_scores=None
                    ) -> MultipleChoice:
  """Grade, choice probabilities and Brier score of one example. Give either `correct_index`
  (an int, or a sequence of ints when several choices are correct) or BIG-bench's
  `target_scores` (one float per choice, in the order of the log-likelihoods)."""
  logp = np.asarray(logprobs_per_choice, np.float64)
  if logp.ndim != 1 or logp.size == 0:
    raise UserError(f"multiple_choice: logprobs_per_choice must be a non-empty 1-D list, got "
                    f"shape {logp.shape}")
  n = logp.size
  if (correct_index is None) == (target_scores is None):
    raise UserError("multiple_choice: give exactly one of correct_index and target_scores")
  if target_scores is None:
    indices = np.atleast_1d(np.asarray(correct_index))
    if (indices.size == 0 or not np.issubdtype(indices.dtype, np.integer)
        or indices.min() < 0 or indices.max() >= n):
      raise UserError(f"multiple_choice: correct_index {correct_index!r} is not a choice index "
                      f"in [0, {n})")
    scores = np.zeros(n)
    scores[indices] = 1.0
  else:
    scores = np.asarray(target_scores, np.float64)
    if scores.shape != (n,):
      raise UserError(f"multiple_choice: {scores.size} target_scores for {n} choices")
  probs = np.exp(logp - logp.max())
  probs /= probs.sum()
  choice = int(np.argmax(logp))
  total = scores.sum()
  target = scores / total if total > 0 else np.zeros(n)
  brier = float(np.sum((probs - target) ** 2))
  grade = float(scores[choice])
  return MultipleChoice(grade=grade, probs=probs, brier=brier, brier_bigbench=brier / n,
                        confidence=float(probs.max()), correct=grade > 0)


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Reliability:
  """Per equal-width confidence bin ((m-1)/M, m/M] (the first also takes 0): edges [M + 1], mean
  confidence [M], accuracy [M] (NaN in an empty bin) and count [M]."""
  edges: np.ndarray
  confidence: np.ndarray
  accuracy: np.ndarray
  count: np.ndarray


def _calibration_inputs(confidence, correct):
  conf = np.asarray(confidence, np.float64).ravel()
  hits = np.asarray(correct, np.float64).ravel()
  if conf.shape != hits.shape:
    raise UserError(f"calibration: {conf.size} confidences for {hits.size} correctness values")
  if conf.size and (conf.min() < 0 or conf.max() > 1):
    raise UserError("calibration: confidences must lie in [0, 1]")
  return conf, hits


def reliability(confidence, correct, bins: int = 10) -> Reliability:
  """Reliability diagram data: confidences binned into `bins` equal-width bins on [0, 1]."""
  if int(bins) < 1:
    raise UserError(f"reliability: bins = {bins}, must be at least 1")
  conf, hits = _calibration_inputs(confidence, correct)
  index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(index, minlength=bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_conf = np.bincount(index, weights=conf, minlength=bins) / count
    accuracy = np.bincount(index, weights=hits, minlength=bins) / count
  return Reliability(np.linspace(0.0, 1.0, bins + 1), mean_conf, accuracy, count)


def ece(confidence, correct, bins: int = 10) -> float:
  """Expected calibration error (Guo et al. 2017, Eq. 3; Naeini et al. 2015):
  sum over equal-width bins B_m of |B_m| / n * |acc(B_m) - conf(B_m)|. 0 for no samples.
  (BIG-bench's expected_calibration_error is the same sum with 15 bins that are closed on the
  left instead of the right.)"""
  table = reliability(confidence, correct, bins)
  n = table.count.sum()
  if n == 0:
    return 0.0
  filled = table.count > 0
  gaps = np.abs(table.accuracy[filled] - table.confidence[filled])
  return float(np.sum(table.count[filled] / n * gaps))


# ---------------------------------------------------------------------------------------------
# Linearity and breakthroughness (BIG-bench, Appendix B; see the module docstring)
# ---------------------------------------------------------------------------------------------

def _ordered(scales, values) -> np.ndarray:
  x = np.asarray(scales, np.float64).ravel()
  y = np.asarray(values, np.float64).ravel()
  if x.shape != y.shape or y.size < 2:
    raise UserError(f"need matching scales and values with at least 2 points, got {x.size} "
                    f"scales and {y.size} values")
  if not np.all(np.isfinite(y)):
    raise UserError("values must be finite")
  return y[np.argsort(x, kind="stable")]


def _total_change(y: np.ndarray) -> float:
  """I(y) = sign(argmax y - argmin y) (max y - min y)."""
  return float(np.sign(np.argmax(y) - np.argmin(y)) * (y.max() - y.min()))


def _ratio(numerator: float, denominator: float) -> float:
  if denominator > 0:
    return numerator / denominator
  return 0.0 if numerator == 0 else float(np.sign(numerator) * np.inf)


def linearity(scales, values) -> float:
  """BIG-bench's linearity L = I(y) / sqrt(mean_i (y_{i+1} - y_i)^2), the points ordered by
  scale (Srivastava et al. 2022, App. B; see the module docstring)."""
  y = _ordered(scales, values)
  return _ratio(_total_change(y), float(np.sqrt(np.mean(np.diff(y) ** 2))))


def breakthroughness(scales, values) -> float:
  """BIG-bench's breakthroughness B = I(y) / sqrt(median_i (y_{i+1} - y_i)^2), the points
  ordered by scale (Srivastava et al. 2022, App. B; see the module docstring)."""
  y = _ordered(scales, values)
  return _ratio(_total_change(y), float(np.sqrt(np.median(np.diff(y) ** 2))))


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------

def bootstrap_interval(values, statistic=np.mean, n: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
  """(low, high) percentile-bootstrap interval of statistic(values) at `level`
  (scipy.stats.bootstrap, method "percentile": unlike BCa it is defined when every value is the
  same, e.g. an exact match of 0 on every example, where it gives (v, v))."""
  data = np.asarray(values, np.float64).ravel()
  if data.size == 0:
    raise UserError("bootstrap_interval: no values")
  if not 0 < level < 1:
    raise UserError(f"bootstrap_interval: level = {level}, must be in (0, 1)")
  if data.size == 1 or np.all(data == data[0]):
    value = float(statistic(data))
    return value, value
  result = scipy.stats.bootstrap((data,), statistic, n_resamples=int(n), confidence_level=level,
                                 method="percentile", rng=np.random.default_rng(seed))
  return float(result.confidence_interval.low), float(result.confidence_interval.high)
