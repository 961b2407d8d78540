"""Two-step forecasts of a downstream metric from a model ladder (Bhagia et al. 2024, the OLMo
ladder; Llama 3, Sec. 3.2.1): step 1 fits the task loss (e.g. nats of the answer, teacher-forced)
as a law of scale, step 2 maps the task loss to the metric by a sigmoid, and the chain predicts a
model's metric from its scale alone.

    law_rows = pd.DataFrame(dict(run=..., design=..., N=..., loss=...))      # step 1's points
    link_rows = pd.DataFrame(dict(run=..., loss=..., metric=...))            # step 2's points
    fit = fit_two_step(law_rows, link_rows, law="saturating", inputs={"X": "N"}, chance=0.0)
    fit.predict({"X": [1e6]})          # (loss, metric) at N = 1e6
    fit.crossing(0.5)                  # the X where the chain reaches 0.5 (one-input laws)
    boot = bootstrap_two_step(fit, law_rows, link_rows, {"X": [1e6]}, n_boot=200)

Step 1 is any law of `research.scaling.forms` fitted by `research.scaling.fit` (Huber on log L);
`inputs` maps the law's inputs to columns ("X" of the one-input laws to N or C; N and D of
Hoffmann's). Step 2 is metric = chance + (upper - chance) / (1 + exp(k (loss - L0))), k > 0:
the metric rises from chance towards `upper` as the loss falls, and is halfway at L0. Its two
parameters are fitted by least squares (scipy) from several starts.

The bootstrap resamples runs (seeds) with replacement within each design point (`design`: the
runs that differ only in their seed, as `fit.resample_weights`), so every resample keeps the whole
design; a design point with one run keeps it, and then contributes no spread. Both steps are
refitted on each resample with the same run counts. Failed resamples are counted by cause
(step 1 did not converge, with SciPy's L-BFGS-B as a second try; step 2 did not), never dropped
silently; a resample whose chain never
reaches the level has its crossing at infinity (counted, and kept in the interval).
"""

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import optimize as sp_optimize

from research.errors import UserError
from research.scaling import fit as fit_lib
from research.scaling import optimize

LINK_FORMULA = "metric = chance + (upper - chance) / (1 + exp(k (loss - L0)))"


def link(loss, l0: float, k: float, chance: float = 0.0, upper: float = 1.0) -> np.ndarray:
  """Step 2's sigmoid from task loss to the metric."""
  z = np.clip(k * (np.asarray(loss, np.float64) - l0), -500, 500)
  return chance + (upper - chance) / (1.0 + np.exp(z))


def loss_at(level: float, l0: float, k: float, chance: float = 0.0,
            upper: float = 1.0) -> float | None:
  """The task loss at which the link gives `level`; None when the level is outside (chance,
  upper)."""
  if not chance < level < upper:
    return None
  return float(l0 + math.log((upper - chance) / (level - chance) - 1.0) / k)


def fit_link(loss, metric, *, chance: float = 0.0, upper: float = 1.0,
             weights=None) -> dict:
  """Weighted least squares of the link: {"L0", "k", "converged", "rmse"}. Starts: L0 at five
  quantiles of the loss, k such that the sigmoid spans the loss range, a quarter of it, or 4x it."""
  loss, metric = np.asarray(loss, np.float64), np.asarray(metric, np.float64)
  w = np.ones_like(loss) if weights is None else np.asarray(weights, np.float64)
  keep = w > 0
  if keep.sum() < 3:
    raise UserError(f"step 2 (loss -> metric): {int(keep.sum())} points; the sigmoid's two "
                    "parameters need at least 3")
  loss, metric, w = loss[keep], metric[keep], np.sqrt(w[keep])
  span = max(float(np.ptp(loss)), 1e-6)

  def residual(theta):
    return w * (link(loss, theta[0], math.exp(theta[1]), chance, upper) - metric)

  def jacobian(theta):  # d/dL0 and d/dlog k of the residuals, with s = 1 / (1 + exp(z))
    k = math.exp(theta[1])
    s = 1.0 / (1.0 + np.exp(np.clip(k * (loss - theta[0]), -500, 500)))
    slope = w * (upper - chance) * s * (1 - s) * k
    return np.stack([slope, -slope * (loss - theta[0])], axis=1)

  best = None
  for q in (0.1, 0.3, 0.5, 0.7, 0.9):
    for scale in (1.0, 4.0, 16.0):
      start = np.array([np.quantile(loss, q), math.log(scale / span)])
      result = sp_optimize.least_squares(residual, start, jac=jacobian, method="lm",
                                         max_nfev=2000)
      if best is None or result.cost < best.cost:
        best = result
  rmse = float(np.sqrt(np.sum(best.fun ** 2) / np.sum(w ** 2)))
  return {"L0": float(best.x[0]), "k": float(math.exp(best.x[1])),
          "converged": bool(best.success and np.all(np.isfinite(best.x))), "rmse": rmse}


@dataclasses.dataclass
class TwoStep:
  """A fitted chain: step 1's law (a `fit.LawFit`) and step 2's link."""
  law: fit_lib.LawFit
  link: dict
  chance: float
  upper: float
  inputs: dict  # the law's input -> the column it was read from

  def predict(self, inputs: dict, theta=None, link_params=None):
    """(task loss, metric) at the law's inputs ({"X": [...]} or {"N": ..., "D": ...})."""
    theta = self.law.theta if theta is None else theta
    lp = self.link if link_params is None else link_params
    x = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    loss = self.law.form.loss(np.asarray(theta)[:len(self.law.form.params)], x)
    return loss, link(loss, lp["L0"], lp["k"], self.chance, self.upper)

  def crossing(self, level: float = 0.5, theta=None, link_params=None) -> float | None:
    """The X at which the chain reaches `level`, for a one-input law with a floor ("saturating":
    L = E + A X^-alpha; "power": L = A X^-alpha); None when the level is never reached (the
    required loss is at or below the law's floor, or outside the link's range)."""
    lp = self.link if link_params is None else link_params
    target = loss_at(level, lp["L0"], lp["k"], self.chance, self.upper)
    if target is None or self.law.form.inputs != ("X",):
      return None
    params = self.law.form.natural(
        (self.law.theta if theta is None else theta)[:len(self.law.form.params)])
    excess = target - params.get("E", 0.0)
    if excess <= 0 or params["alpha"] <= 0:
      return None
    log_x = (math.log(params["A"]) - math.log(excess)) / params["alpha"]
    return float(math.exp(log_x)) if log_x < 700 else None

  def summary(self) -> dict:
    return dict(law=self.law.summary(), link=dict(self.link, formula=LINK_FORMULA,
                                                  chance=self.chance, upper=self.upper),
                inputs=self.inputs)


def _law_inputs(rows: pd.DataFrame, inputs: dict) -> dict:
  missing = [c for c in inputs.values() if c not in rows]
  if missing:
    raise UserError(f"step 1: the points have no column(s) {missing}")
  return {k: rows[c].to_numpy(np.float64) for k, c in inputs.items()}


def _check(rows: pd.DataFrame, columns: tuple, what: str) -> None:
  missing = [c for c in columns if c not in rows]
  if missing:
    raise UserError(f"{what}: the points have no column(s) {missing}")
  values = rows[[c for c in columns if c not in ("run", "design")]].to_numpy(np.float64)
  if not np.all(np.isfinite(values)):
    raise UserError(f"{what}: {int((~np.isfinite(values)).any(axis=1).sum())} point(s) are not "
                    "finite (NaN or infinite); drop them and say so")


def fit_two_step(law_rows: pd.DataFrame, link_rows: pd.DataFrame, *, law: str = "saturating",
                 inputs: dict | None = None, chance: float = 0.0, upper: float = 1.0,
                 law_weights=None, link_weights=None) -> TwoStep:
  """Step 1 on law_rows (columns run, design, the law's input columns, loss), step 2 on
  link_rows (columns run, loss, metric)."""
  inputs = inputs or {"X": "N"}
  if not chance < upper:
    raise UserError(f"step 2: chance {chance} must be below upper {upper}")
  _check(law_rows, ("run", "loss", *inputs.values()), "step 1 (scale -> loss)")
  _check(link_rows, ("run", "loss", "metric"), "step 2 (loss -> metric)")
  law_fit = fit_lib.fit_law(law, _law_inputs(law_rows, inputs), law_rows.loss.to_numpy(),
                            weights=law_weights)
  link_fit = fit_link(link_rows.loss, link_rows.metric, chance=chance, upper=upper,
                      weights=link_weights)
  return TwoStep(law_fit, link_fit, chance, upper, dict(inputs))


def _refit_scipy(objective, start, inputs: dict, loss, weights):
  """SciPy's L-BFGS-B (numerical gradient) on one resample, from the full-data winner: (theta,
  converged). The batched L-BFGS can stop with "line search found no decrease" where the law is
  flat (E at its floor of 0, say); this second optimizer decides."""
  log_l = np.log(loss)

  def value(theta):
    with np.errstate(all="ignore"):
      v = optimize.objective_value(np, objective, theta, inputs, log_l, weights)
    return float(v) if np.isfinite(v) else 1e300

  result = sp_optimize.minimize(value, np.asarray(start, np.float64), method="L-BFGS-B")
  return result.x, bool(result.success and np.all(np.isfinite(result.x)))


def bootstrap_two_step(chain: TwoStep, law_rows: pd.DataFrame, link_rows: pd.DataFrame,
                       targets: dict, *, level: float = 0.5, n_boot: int = 200, seed: int = 0,
                       ci: float = 0.95) -> dict:
  """Both steps refitted on runs resampled within design points; the chain's loss and metric at
  `targets` (the law's inputs) and its `level` crossing, as point values, intervals and samples.
  law_rows' `design` column names the design points (default: one per run); link rows take the
  count of their run."""
  runs = pd.Index(pd.unique(pd.concat([law_rows.run, link_rows.run])))
  design = (law_rows.groupby("run").design.first() if "design" in law_rows
            else pd.Series(runs, index=runs))
  design = design.reindex(runs)
  design = design.where(design.notna(), pd.Series(runs, index=runs))  # link-only runs
  counts = fit_lib.resample_weights(np.arange(len(runs)), n_boot, seed,
                                    within=design.astype(str).to_numpy())
  law_idx = runs.get_indexer(law_rows.run)
  link_idx = runs.get_indexer(link_rows.run)
  x = _law_inputs(law_rows, chain.inputs)
  starts = np.repeat(chain.law.theta[None], n_boot, axis=0)
  refit = optimize.lbfgs_jax(chain.law.objective, starts, x, law_rows.loss.to_numpy(np.float64),
                             counts[:, law_idx], maxiter=300)
  law_ok = np.isin(refit.status, optimize.CONVERGED)
  thetas = np.array(refit.theta)
  for b in np.flatnonzero(~law_ok):  # a second optimizer before a resample counts as failed
    thetas[b], law_ok[b] = _refit_scipy(chain.law.objective, chain.law.theta, x,
                                        law_rows.loss.to_numpy(np.float64), counts[b, law_idx])
  failures = {"step 1 did not converge": 0, "step 2 did not converge": 0}
  target_x = {k: np.asarray(v, np.float64) for k, v in targets.items()}
  losses, metrics, crossings = [], [], []
  for b in range(n_boot):
    if not law_ok[b]:
      failures["step 1 did not converge"] += 1
      continue
    lp = fit_link(link_rows.loss, link_rows.metric, chance=chain.chance, upper=chain.upper,
                  weights=counts[b, link_idx])
    if not lp["converged"]:
      failures["step 2 did not converge"] += 1
      continue
    loss, metric = chain.predict(target_x, thetas[b], lp)
    losses.append(loss)
    metrics.append(metric)
    x50 = chain.crossing(level, thetas[b], lp)
    crossings.append(math.inf if x50 is None else x50)  # never reached: beyond any scale
  loss0, metric0 = chain.predict(target_x)
  losses, metrics = np.array(losses).reshape(-1, len(loss0)), np.array(metrics).reshape(
      -1, len(loss0))

  def band(samples):
    if len(samples) == 0:
      return [[math.nan, math.nan] for _ in range(len(loss0))]
    lo, hi = np.quantile(samples, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return [[float(a), float(b)] for a, b in zip(lo, hi)]

  crossings = np.array(crossings) if chain.law.form.inputs == ("X",) else np.array([])
  return dict(
      n_boot=n_boot, seed=seed, ci=ci, n_used=len(losses),
      n_failed=int(n_boot - len(losses)), failures={k: v for k, v in failures.items() if v},
      targets={k: v.tolist() for k, v in target_x.items()},
      loss=loss0.tolist(), loss_interval=band(losses),
      metric=metric0.tolist(), metric_interval=band(metrics),
      crossing=chain.crossing(level), level=level,
      crossing_interval=([float(q) for q in np.quantile(
          crossings, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")]
                         if len(crossings) else [math.nan, math.nan]),
      never_reached=int(np.isinf(crossings).sum()),
      metric_samples=metrics.tolist())
