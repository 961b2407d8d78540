"""The model ladder: one rule from a target non-embedding N to a transformer shape.

Scaling studies compare models of one family, so every size comes from the same rule:

  * aspect ratio: d_model / n_layers stays near `aspect` (Kaplan et al. 2020, Fig. 5, find the
    loss nearly flat for aspect ratios of 20-200 at fixed N; small ladders sit at the low end);
  * head size fixed (`head_size`), so n_heads = d_model / head_size;
  * d_ff = `ff_ratio` x d_model.

With d_model = aspect x n_layers, N_nonemb ~ (4 + 2 ff_ratio) d_model^2 n_layers, so
n_layers = round((N / ((4 + 2 ff_ratio) aspect^2))^(1/3)) (at least 1): depth and width both grow
monotonically with N. d_model is then the multiple of head_size, at that depth, whose exact count
(`transformer.param_counts`) lies nearest to N in log, so the aspect ratio stays near `aspect`
up to that rounding. The achieved N is returned with the shape: a
study plans with it, never with the target. A target that no shape reaches within `tolerance`
(relative) is an error, e.g. one below the smallest model (1 layer, d_model = head_size); small
models come in coarse steps, so a finer ladder there needs a smaller head_size.
"""

import dataclasses
import math

from research.errors import UserError
from research.models import transformer


@dataclasses.dataclass(frozen=True)
class Rung:
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  n_nonemb: int      # exact non-embedding parameters of this shape

  def model_fields(self) -> dict:
    return dict(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                d_ff=self.d_ff)


def _count(d_model: int, n_layers: int, head_size: int, ff_ratio: int, norm: str) -> int:
  cfg = transformer.TransformerConfig(d_model=d_model, n_layers=n_layers,
                                      n_heads=d_model // head_size, d_ff=ff_ratio * d_model,
                                      norm=norm)
  return transformer.param_counts(cfg).non_embedding


def rung(n_target: float, *, aspect: float = 32.0, head_size: int = 16, ff_ratio: int = 4,
         norm: str = "rmsnorm", tolerance: float = 0.2) -> Rung:
  """The ladder's shape for a target non-embedding parameter count."""
  if not (aspect > 0 and head_size >= 1 and ff_ratio >= 1 and n_target > 0):
    raise UserError(f"model ladder: aspect {aspect}, head_size {head_size}, ff_ratio {ff_ratio} "
                    f"and the target N {n_target} must all be positive")
  smallest = _count(head_size, 1, head_size, ff_ratio, norm)
  if n_target < smallest * (1 - tolerance):
    raise UserError(f"model ladder: N = {n_target:,.0f} non-embedding parameters is below the "
                    f"smallest shape of this rule (1 layer, d_model {head_size}: {smallest:,}); "
                    "lower head_size or raise N")
  per_layer = 4 + 2 * ff_ratio
  layers = max(1, round((n_target / (per_layer * aspect ** 2)) ** (1 / 3)))
  units = max(1, round(math.sqrt(n_target / (per_layer * layers)) / head_size))
  candidates = [u * head_size for u in range(max(1, units - 2), units + 3)]
  d_model = min(candidates, key=lambda d: abs(math.log(
      _count(d, layers, head_size, ff_ratio, norm) / n_target)))
  n = _count(d_model, layers, head_size, ff_ratio, norm)
  if abs(n / n_target - 1) > tolerance:
    raise UserError(f"model ladder: N = {n_target:,.0f} is not reachable within {tolerance:.0%}: "
                    f"the nearest shape ({layers} layers, d_model {d_model}) has {n:,}; lower "
                    "head_size for a finer ladder")
  return Rung(d_model, layers, d_model // head_size, ff_ratio * d_model, n)


def ladder(n_min: float, n_max: float, count: int, **rule) -> list[Rung]:
  """`count` rungs spaced evenly in log N from n_min to n_max (distinct shapes only)."""
  if count < 1 or n_max < n_min:
    raise UserError(f"model ladder: {count} rungs from N = {n_min:,.0f} to {n_max:,.0f}: need "
                    "count >= 1 and n_max >= n_min")
  if count == 1:
    targets = [n_min]
  else:
    step = math.log(n_max / n_min) / (count - 1)
    targets = [n_min * math.exp(i * step) for i in range(count)]
  rungs = []
  for target in targets:
    r = rung(target, **rule)
    if r not in rungs:
      rungs.append(r)
  return rungs
