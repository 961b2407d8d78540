"""Fitting a law to runs: multi-start L-BFGS on Huber(log L), bootstrap intervals, a held-out check.

    fit = fit_law("hoffmann", {"N": n, "D": d}, loss)           # Hoffmann's objective and grid
    boot = bootstrap_law(fit, {"N": n, "D": d}, loss, n_boot=200)
    boot["intervals"]["alpha"]                                 # (low, high)

The grid of starts is pruned by a cheap first pass (the objective at every start, one vectorised
NumPy evaluation) and the best `keep` starts run to convergence together (`optimize.lbfgs_jax`);
`keep=None` runs every start. The result names the winner, whether it converged, and how many of
the finishing starts agree with it (the spread of good starts).
"""

import dataclasses

import numpy as np

from research.errors import UserError
from research.scaling import optimize
from research.scaling.forms import Form, get_form, hoffmann_frontier

LIKELIHOOD_LOG_SIGMA = np.log([0.01, 0.05])


@dataclasses.dataclass
class LawFit:
  """A fitted law: the winner, its objective and convergence, and the agreement among starts."""
  form: Form
  objective: optimize.Objective
  theta: np.ndarray
  value: float
  converged: bool
  status: str
  n_points: int
  n_starts: int
  n_refined: int
  n_good: int
  spread: dict
  start: np.ndarray

  @property
  def params(self) -> dict:
    return named_params(self.objective, self.theta)

  def derived(self) -> dict:
    return derived_quantities(self.form, self.theta)

  def summary(self) -> dict:
    return dict(form=self.form.name, formula=self.form.formula, params=self.params,
                derived=self.derived(), objective=self.value, converged=self.converged,
                status=self.status, n_points=self.n_points, starts=self.n_starts,
                starts_refined=self.n_refined, good_starts=self.n_good, spread=self.spread,
                huber_delta=self.objective.delta, reduce=self.objective.reduce,
                likelihood=self.objective.likelihood)


def named_params(obj: optimize.Objective, theta) -> dict:
  """Natural constants (A, B, E, ...) and exponents; sigma for the likelihood objective."""
  out = obj.form.natural(theta[:len(obj.form.params)])
  if obj.likelihood:
    out["sigma"] = float(np.exp(theta[-1]))
  return out


def derived_quantities(form: Form, theta) -> dict:
  """Exponents that follow from the constants: Hoffmann's a, b and G of the frontier."""
  if form.name not in ("hoffmann", "muennighoff"):
    return {}
  frontier = hoffmann_frontier(theta, 1.0)
  return dict(a=frontier["a"], b=frontier["b"], G=frontier["G"])


def starts_for(obj: optimize.Objective, grid=None) -> np.ndarray:
  grid = obj.form.grid() if grid is None else np.atleast_2d(np.asarray(grid, np.float64))
  if obj.likelihood and grid.shape[1] == len(obj.form.params):
    grid = np.array([np.append(g, s) for g in grid for s in LIKELIHOOD_LOG_SIGMA])
  return grid


def check_enough_points(n_points: int, n_params: int, what: str) -> None:
  if n_points <= n_params:
    raise UserError(f"{what}: {n_points} points for a law with {n_params} parameters; "
                    f"a fit needs more points than parameters")


def fit_law(form, inputs: dict, loss, *, weights=None, delta: float = 1e-3, reduce: str = "sum",
            likelihood: bool = False, grid=None, keep: int | None = 32, maxiter: int = 300,
            optimizer: str = "jax", rtol_good: float = 1e-6) -> LawFit:
  """Minimise the Huber objective from a grid of starts and report the winner."""
  form = get_form(form) if isinstance(form, str) else form
  obj = optimize.Objective(form, float(delta), reduce, bool(likelihood))
  loss = np.asarray(loss, np.float64)
  check_enough_points(len(loss), obj.n_params, f"law {form.name}")
  starts = starts_for(obj, grid)
  chosen = starts
  if keep is not None and keep < len(starts):
    first_pass = optimize.prescreen(obj, starts, inputs, loss, weights)
    chosen = starts[np.argsort(first_pass, kind="stable")[:keep]]
  run = optimize.lbfgs_jax if optimizer == "jax" else optimize.lbfgs_scipy
  options = dict(maxiter=maxiter) if optimizer == "jax" else {}
  result = run(obj, chosen, inputs, loss, weights, **options)
  return _summarise(form, obj, result, chosen, len(loss), len(starts), rtol_good)


def _summarise(form, obj, result, chosen, n_points, n_starts, rtol_good) -> LawFit:
  best = int(np.argmin(result.value))
  value = float(result.value[best])
  done = np.isin(result.status, optimize.CONVERGED)
  good = done & (result.value <= value + rtol_good * max(abs(value), 1e-12))
  names = list(form.params) + (["log_sigma"] if obj.likelihood else [])
  spread = {name: [float(result.theta[good, i].min()), float(result.theta[good, i].max())]
            for i, name in enumerate(names)} if good.any() else {}
  status = int(result.status[best])
  return LawFit(form, obj, result.theta[best], value, bool(status in optimize.CONVERGED),
                optimize.STATUS.get(status, str(status)), n_points, n_starts, len(chosen),
                int(good.sum()), spread, chosen[best])


def resample_weights(groups, n_boot: int, seed: int, within=None) -> np.ndarray:
  """(n_boot, n_points) weights: runs (groups) drawn with replacement, counts as weights.

  `within` (a design-point id per point, the same for every point of a run): each design point's
  runs (its replicate seeds) are drawn from among themselves, so every resample keeps the whole
  design; a point with one run keeps it. Without it the runs are drawn from all runs, which
  resamples the design too: with one seed per design point a resample drops each point with
  probability about 0.37."""
  _, inverse = np.unique(np.asarray(groups), return_inverse=True)
  n_groups = inverse.max() + 1
  rng = np.random.default_rng(seed)
  if within is None:
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, inverse].astype(np.float64)
  point_of_group = np.empty(n_groups, object)
  for g, p in zip(inverse, np.asarray(within)):
    if point_of_group[g] is not None and point_of_group[g] != p:
      raise UserError("a run's rows lie in different design points; a design point is a set of "
                      "whole runs that differ only in their seed")
    point_of_group[g] = p
  counts = np.zeros((n_boot, n_groups))
  for p in dict.fromkeys(point_of_group):  # in order of first appearance: reproducible
    members = np.flatnonzero(point_of_group == p)
    counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)),
                                         size=n_boot)
  return counts[:, inverse]


def interval(samples, ci: float) -> list:
  lo, hi = np.nanquantile(samples, [(1 - ci) / 2, (1 + ci) / 2])
  return [float(lo), float(hi)]


def bootstrap_law(fit: LawFit, inputs: dict, loss, *, n_boot: int = 200, groups=None,
                  seed: int = 0, ci: float = 0.95, maxiter: int = 300, within=None) -> dict:
  """Refit on resampled runs (all replicates at once, each from the full-data winner);
  `within`: design points whose replicate seeds are resampled among themselves
  (resample_weights). `n_failed` counts the refits that did not converge."""
  loss = np.asarray(loss, np.float64)
  groups = np.arange(len(loss)) if groups is None else groups
  weights = resample_weights(groups, n_boot, seed, within)
  starts = np.repeat(fit.theta[None], n_boot, axis=0)
  result = optimize.lbfgs_jax(fit.objective, starts, inputs, loss, weights, maxiter=maxiter)
  ok = np.isin(result.status, optimize.CONVERGED)
  samples = [dict(named_params(fit.objective, th), **derived_quantities(fit.form, th))
             for th in result.theta[ok]]
  names = list(samples[0]) if samples else []
  return dict(n_boot=n_boot, n_converged=int(ok.sum()), n_failed=int(n_boot - ok.sum()),
              failures={} if ok.all() else {"did not converge": int(n_boot - ok.sum())},
              ci=ci, seed=seed,
              intervals={k: interval([s[k] for s in samples], ci) for k in names},
              samples={k: [s[k] for s in samples] for k in names})
