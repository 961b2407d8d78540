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
parameters are fitted by least squares (scipy) from several starts; `chance=None` or `upper=None`
fits that end too (Bhagia et al. fit both). `link_rows=None` fits step 1 alone.

The bootstrap resamples runs (seeds) with replacement within each design point (`design`: the
runs that differ only in their seed, as `fit.resample_weights`), so every resample keeps the whole
design; a design point with one run keeps it, and then contributes no spread. Both steps are
refitted on each resample with the same run counts. Failed resamples are counted by cause
(step 1 did not converge, with SciPy's L-BFGS-B as a second try; step 2 did not), never dropped
silently; a resample whose chain never
reaches the level has its crossing at infinity (counted, and kept in the interval). Where every
design point has one run (the OLMo ladder), drawing runs within points gives no spread, and
`resample="residuals"` draws each step's residuals instead, the design kept.
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


def fit_link(loss, metric, *, chance: float | None = 0.0, upper: float | None = 1.0,
             weights=None, start: dict | None = None) -> dict:
  """Weighted least squares of the link: {"L0", "k", "chance", "upper", "converged", "rmse"}.
  Starts: L0 at five quantiles of the loss, k such that the sigmoid spans the loss range, a quarter
  of it, or 4x it. `chance` or `upper` None: that end is fitted too (Bhagia et al. 2024 fit both),
  bounded to [min(0, lowest metric), max(1, highest metric)] and started at the metric's extremes
  (or, for a refit, from `start`: a fit_link result)."""
  loss, metric = np.asarray(loss, np.float64), np.asarray(metric, np.float64)
  w = np.ones_like(loss) if weights is None else np.asarray(weights, np.float64)
  keep = w > 0
  free = [name for name, v in (("chance", chance), ("upper", upper)) if v is None]
  if keep.sum() < 3 + len(free):
    raise UserError(f"step 2 (loss -> metric): {int(keep.sum())} points; the sigmoid's "
                    f"{2 + len(free)} parameters need at least {3 + len(free)}")
  loss, metric, w = loss[keep], metric[keep], np.sqrt(w[keep])
  span = max(float(np.ptp(loss)), 1e-6)
  if free:
    return _fit_link_free(loss, metric, w, span, chance, upper, start)

  def residual(theta):
    return w * (link(loss, theta[0], math.exp(theta[1]), chance, upper) - metric)

  def jacobian(theta):  # d/dL0 and d/dlog k of the residuals, with s = 1 / (1 + exp(z))
    k = math.exp(theta[1])
    s = 1.0 / (1.0 + np.exp(np.clip(k * (loss - theta[0]), -500, 500)))
    slope = w * (upper - chance) * s * (1 - s) * k
    return np.stack([slope, -slope * (loss - theta[0])], axis=1)

  best = None
  for start in _link_starts(loss, span):
    result = sp_optimize.least_squares(residual, start, jac=jacobian, method="lm", max_nfev=2000)
    if best is None or result.cost < best.cost:
      best = result
  rmse = float(np.sqrt(np.sum(best.fun ** 2) / np.sum(w ** 2)))
  return {"L0": float(best.x[0]), "k": float(math.exp(best.x[1])), "chance": chance,
          "upper": upper, "converged": bool(best.success and np.all(np.isfinite(best.x))),
          "rmse": rmse}


def _link_starts(loss, span):
  return [np.array([np.quantile(loss, q), math.log(scale / span)])
          for q in (0.1, 0.3, 0.5, 0.7, 0.9) for scale in (1.0, 4.0, 16.0)]


def _fit_link_free(loss, metric, w, span, chance, upper, start=None) -> dict:
  """fit_link with one or both ends fitted (bounded trust-region least squares), from the grid
  of starts or from one fit's parameters."""
  low, high = min(0.0, float(metric.min())), max(1.0, float(metric.max()))

  def ends(theta):
    c = theta[2] if chance is None else chance
    u = theta[-1] if upper is None else upper
    return c, u

  def residual(theta):
    c, u = ends(theta)
    return w * (link(loss, theta[0], math.exp(theta[1]), c, u) - metric)

  extra = ([float(metric.min())] if chance is None else []) + (
      [float(metric.max())] if upper is None else [])
  n_free = len(extra)
  lower_b = [-np.inf, -np.inf] + [low] * n_free
  upper_b = [np.inf, np.inf] + [high] * n_free
  starts = [np.concatenate([s, extra]) for s in _link_starts(loss, span)]
  if start is not None:
    starts = [np.array([start["L0"], math.log(start["k"])]
                       + ([start["chance"]] if chance is None else [])
                       + ([start["upper"]] if upper is None else []))]
  best = None
  for x0 in starts:
    x0 = np.clip(x0, np.array(lower_b) + 1e-9, np.array(upper_b) - 1e-9)
    result = sp_optimize.least_squares(residual, x0, bounds=(lower_b, upper_b), method="trf",
                                       max_nfev=4000)
    if best is None or result.cost < best.cost:
      best = result
  c, u = ends(best.x)
  rmse = float(np.sqrt(np.sum(best.fun ** 2) / np.sum(w ** 2)))
  return {"L0": float(best.x[0]), "k": float(math.exp(best.x[1])), "chance": float(c),
          "upper": float(u), "converged": bool(best.success and np.all(np.isfinite(best.x))
                                               and u > c),
          "rmse": rmse}


@dataclasses.dataclass
class TwoStep:
  """A fitted chain: step 1's law (a `fit.LawFit`) and step 2's link. `chance` and `upper` are
  the link's ends (given, or fitted when named in `fitted_ends`)."""
  law: fit_lib.LawFit
  link: dict | None
  chance: float
  upper: float
  inputs: dict  # the law's input -> the column it was read from
  fitted_ends: tuple = ()
  maxiter: int = 300  # L-BFGS iterations of step 1's fit and of every refit

  def ends(self, link_params=None) -> tuple:
    """(chance, upper) of these link parameters (a resample's fitted ends, or the chain's)."""
    lp = self.link if link_params is None else link_params
    return lp.get("chance", self.chance), lp.get("upper", self.upper)

  def given_ends(self) -> dict:
    """fit_link's chance and upper arguments: None for a fitted end."""
    return {end: None if end in self.fitted_ends else getattr(self, end)
            for end in ("chance", "upper")}

  def predict(self, inputs: dict, theta=None, link_params=None):
    """(task loss, metric) at the law's inputs ({"X": [...]} or {"N": ..., "D": ...})."""
    theta = self.law.theta if theta is None else theta
    lp = self.link if link_params is None else link_params
    x = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    loss = self.law.form.loss(np.asarray(theta)[:len(self.law.form.params)], x)
    if lp is None:  # step 1 only
      return loss, np.full_like(loss, math.nan)
    return loss, link(loss, lp["L0"], lp["k"], *self.ends(lp))

  def crossing(self, level: float = 0.5, theta=None, link_params=None) -> float | None:
    """The X at which the chain reaches `level`, for a one-input law with a floor ("saturating":
    L = E + A X^-alpha; "power": L = A X^-alpha); None when the level is never reached (the
    required loss is at or below the law's floor, or outside the link's range)."""
    lp = self.link if link_params is None else link_params
    target = None if lp is None else loss_at(level, lp["L0"], lp["k"], *self.ends(lp))
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
    return dict(law=self.law.summary(), link=self.link and dict(
        self.link, formula=LINK_FORMULA, fitted_ends=list(self.fitted_ends)), inputs=self.inputs)


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


def fit_two_step(law_rows: pd.DataFrame, link_rows: pd.DataFrame | None, *,
                 law: str = "saturating", inputs: dict | None = None,
                 chance: float | None = 0.0, upper: float | None = 1.0, law_weights=None,
                 link_weights=None, maxiter: int = 300) -> TwoStep:
  """Step 1 on law_rows (columns run, design, the law's input columns, loss), step 2 on
  link_rows (columns run, loss, metric; None: step 1 only); chance or upper None: fitted
  (fit_link)."""
  inputs = inputs or {"X": "N"}
  if chance is not None and upper is not None and not chance < upper:
    raise UserError(f"step 2: chance {chance} must be below upper {upper}")
  _check(law_rows, ("run", "loss", *inputs.values()), "step 1 (scale -> loss)")
  law_fit = fit_lib.fit_law(law, _law_inputs(law_rows, inputs), law_rows.loss.to_numpy(),
                            weights=law_weights, maxiter=maxiter)
  if link_rows is None:
    return TwoStep(law_fit, None, chance, upper, dict(inputs), maxiter=maxiter)
  _check(link_rows, ("run", "loss", "metric"), "step 2 (loss -> metric)")
  link_fit = fit_link(link_rows.loss, link_rows.metric, chance=chance, upper=upper,
                      weights=link_weights)
  fitted = tuple(end for end, v in (("chance", chance), ("upper", upper)) if v is None)
  return TwoStep(law_fit, link_fit, link_fit["chance"], link_fit["upper"], dict(inputs), fitted,
                 maxiter)


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


def _resample_runs(chain: TwoStep, law_rows, link_rows, n_boot: int, seed: int):
  """Runs (seeds) drawn within design points: per resample, step 1's (theta, converged) and
  step 2's metric and weights."""
  runs = pd.Index(pd.unique(pd.concat([law_rows.run] + (
      [] if link_rows is None else [link_rows.run]))))
  design = (law_rows.groupby("run").design.first() if "design" in law_rows
            else pd.Series(runs, index=runs))
  design = design.reindex(runs)
  design = design.where(design.notna(), pd.Series(runs, index=runs))  # link-only runs
  counts = fit_lib.resample_weights(np.arange(len(runs)), n_boot, seed,
                                    within=design.astype(str).to_numpy())
  law_idx = runs.get_indexer(law_rows.run)
  x = _law_inputs(law_rows, chain.inputs)
  loss = law_rows.loss.to_numpy(np.float64)
  starts = np.repeat(chain.law.theta[None], n_boot, axis=0)
  refit = optimize.lbfgs_jax(chain.law.objective, starts, x, loss, counts[:, law_idx],
                             maxiter=chain.maxiter)
  law_ok = np.isin(refit.status, optimize.CONVERGED)
  thetas = np.array(refit.theta)
  for b in np.flatnonzero(~law_ok):  # a second optimizer before a resample counts as failed
    thetas[b], law_ok[b] = _refit_scipy(chain.law.objective, chain.law.theta, x, loss,
                                        counts[b, law_idx])
  if link_rows is None:
    return thetas, law_ok, [None] * n_boot
  link_idx = runs.get_indexer(link_rows.run)
  metric = link_rows.metric.to_numpy(np.float64)
  return thetas, law_ok, [(metric, counts[b, link_idx]) for b in range(n_boot)]


def _resample_residuals(chain: TwoStep, law_rows, link_rows, n_boot: int, seed: int):
  """Residuals drawn with replacement, the design kept: step 1's log-loss residuals added back
  to its fitted log losses, step 2's metric residuals to its fitted metrics. For designs with one
  run per point, where drawing runs within points would give no spread."""
  rng = np.random.default_rng(seed)
  x = _law_inputs(law_rows, chain.inputs)
  log_fit = np.log(chain.law.form.loss(chain.law.theta[:len(chain.law.form.params)], x))
  log_res = np.log(law_rows.loss.to_numpy(np.float64)) - log_fit
  if link_rows is not None:
    metric_fit = link(link_rows.loss.to_numpy(np.float64), chain.link["L0"], chain.link["k"],
                      *chain.ends())
    metric_res = link_rows.metric.to_numpy(np.float64) - metric_fit
  thetas = np.repeat(chain.law.theta[None], n_boot, axis=0)
  law_ok = np.zeros(n_boot, bool)
  links = []
  for b in range(n_boot):
    loss_b = np.exp(log_fit + log_res[rng.integers(len(log_res), size=len(log_res))])
    refit = optimize.lbfgs_jax(chain.law.objective, chain.law.theta[None], x, loss_b,
                               maxiter=chain.maxiter)
    thetas[b], law_ok[b] = refit.theta[0], bool(np.isin(refit.status[0], optimize.CONVERGED))
    if not law_ok[b]:
      thetas[b], law_ok[b] = _refit_scipy(chain.law.objective, chain.law.theta, x, loss_b,
                                          np.ones_like(loss_b))
    links.append(None if link_rows is None else (
        metric_fit + metric_res[rng.integers(len(metric_res), size=len(metric_res))], None))
  return thetas, law_ok, links


RESAMPLERS = {"runs": _resample_runs, "residuals": _resample_residuals}


def bootstrap_two_step(chain: TwoStep, law_rows: pd.DataFrame, link_rows: pd.DataFrame,
                       targets: dict, *, level: float = 0.5, n_boot: int = 200, seed: int = 0,
                       ci: float = 0.95, resample: str = "runs") -> dict:
  """Both steps refitted on resamples; the chain's loss and metric at `targets` (the law's
  inputs) and its `level` crossing, as point values, intervals and samples.

  resample "runs": runs drawn within design points (law_rows' `design` column names them,
  default one per run; link rows take the count of their run). "residuals": each step's
  residuals drawn with replacement, the design kept (`_resample_residuals`)."""
  if resample not in RESAMPLERS:
    raise UserError(f"resample {resample!r}: choose one of {', '.join(RESAMPLERS)}")
  thetas, law_ok, links = RESAMPLERS[resample](chain, law_rows, link_rows, n_boot, seed)
  failures = {"step 1 did not converge": 0, "step 2 did not converge": 0}
  target_x = {k: np.asarray(v, np.float64) for k, v in targets.items()}
  losses, metrics, crossings = [], [], []
  for b in range(n_boot):
    if not law_ok[b]:
      failures["step 1 did not converge"] += 1
      continue
    # A fitted end makes the link's refit a 3-4 parameter search: start it from the full fit.
    lp = None if links[b] is None else fit_link(
        link_rows.loss, links[b][0], weights=links[b][1], **chain.given_ends(),
        start=chain.link if chain.fitted_ends else None)
    if lp is not None and not lp["converged"]:
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
      n_boot=n_boot, seed=seed, ci=ci, resample=resample, n_used=len(losses),
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
