"""Chinchilla's three approaches to the compute-optimal allocation (Hoffmann et al. 2022, sec. 3).

  approach1  lower envelope of training curves over compute, then N_opt(C), D_opt(C) power laws
  approach2  per IsoFLOP budget the minimum of L in log N (a parabola, or Porian et al.'s Akima
             spline), then the power laws
  approach3  the parametric law L = E + A/N^alpha + B/D^beta and its frontier (see fit.py)
All take `Runs` (table.py) and optional per-run weights, so a bootstrap is the same call with
resampled counts.
"""

import collections
import re

import numpy as np
from scipy import interpolate

from research.errors import UserError
from research.scaling import table
from research.scaling.fit import fit_law, interval, resample_weights


def power_law(flops, values, weights=None) -> dict:
  """values = k C^exponent by least squares in log-log space."""
  w = None if weights is None else np.sqrt(weights)
  slope, intercept = np.polyfit(np.log(flops), np.log(values), 1, w=w)
  return dict(exponent=float(slope), coefficient=float(np.exp(intercept)))


def _allocation_laws(flops, n_opt, d_opt) -> dict:
  if len(flops) < 2:
    raise UserError(f"{len(flops)} compute-optimal point(s): a power law in C needs at least two")
  n_law, d_law = power_law(flops, n_opt), power_law(flops, d_opt)
  return dict(a=n_law["exponent"], b=d_law["exponent"], n_law=n_law, d_law=d_law)


MINIMUM_METHODS = ("parabola", "akima")


def _parabola_minimum(log_n, loss, w, window: float | None, min_sizes: int) -> dict:
  """Hoffmann et al.: the vertex of a least-squares parabola in log N fitted to L.

  The parabola is fitted to the sizes within a factor `window` in N of the lowest-loss run, at
  least `min_sizes` of them (the nearest), or to every size of the budget (`window` None). A
  window suits wide sweeps of asymmetric curves (Porian et al.'s, where a 2x window beats all
  points); every size suits narrow, noisy ones (a study's own design says which). The vertex is
  the estimate only where it lies inside the budget's sampled sizes: a vertex outside them (an
  extrapolation, by decades when the curve is nearly flat) or no minimum at all (a parabola open
  downwards) leaves the budget out of the power law (`in_fit` False), and approach2 says so.
  `at_edge`: the lowest loss was at the smallest or largest size (the grid may be off-centre,
  even when the vertex lies inside it).
  """
  lowest = log_n[np.argmin(loss)]
  if window is None:
    near = np.ones(len(log_n), bool)
  else:
    near = np.abs(log_n - lowest) <= np.log(window) + 1e-9
    if len(np.unique(log_n[near])) < min_sizes:  # too few: the nearest sizes
      nearest = np.unique(log_n[np.argsort(np.abs(log_n - lowest))])
      near = np.isin(log_n, nearest[np.argsort(np.abs(nearest - lowest))][:min_sizes])
  c2, c1, c0 = np.polyfit(log_n[near], loss[near], 2, w=np.sqrt(w[near]))
  inside = bool(c2 > 0 and log_n.min() <= -c1 / (2 * c2) <= log_n.max())
  x_min = -c1 / (2 * c2) if c2 > 0 else lowest
  return dict(log_n_opt=float(x_min), L_opt=float(np.polyval([c2, c1, c0], x_min)),
              at_edge=bool(lowest in (log_n.min(), log_n.max())), inside_grid=inside,
              in_fit=inside, parabola=[float(c2), float(c1), float(c0)],
              n_sizes=int(len(np.unique(log_n[near]))),
              fit_range_N=[float(np.exp(log_n[near].min())), float(np.exp(log_n[near].max()))],
              grid_N=[float(np.exp(log_n.min())), float(np.exp(log_n.max()))])


def _akima_minimum(log_n, loss, w, n_curve: int = 60) -> dict:
  """Porian et al. 2024: the minimum of an Akima spline of log L in log N through every size.

  Repeated sizes are averaged first (weighted by run counts). The spline follows the asymmetry of
  an IsoFLOP curve (a parabola does not), but it passes through every point, so it suits clean,
  one-loss-per-size sweeps rather than noisy ones. A minimum at the smallest or largest size is
  only a bound on N_opt: such a budget is left out of the power law (as Porian et al. do).
  """
  sizes, index = np.unique(log_n, return_inverse=True)
  mean_loss = np.bincount(index, w * loss) / np.bincount(index, w)
  spline = interpolate.Akima1DInterpolator(sizes, np.log(mean_loss))
  roots = spline.derivative().roots(extrapolate=False)
  candidates = np.concatenate([sizes[[0, -1]], roots[np.isfinite(roots)]])
  best = int(np.argmin(spline(candidates)))
  x_min = float(candidates[best])
  at_edge = best < 2 or x_min in (sizes[0], sizes[-1])
  grid = np.linspace(sizes[0], sizes[-1], n_curve)
  with np.errstate(over="ignore"):  # noisy, nearly equal sizes can make the spline swing wildly
    curve = np.exp(spline(grid))
  return dict(log_n_opt=x_min, L_opt=float(np.exp(spline(x_min))), at_edge=bool(at_edge),
              inside_grid=not at_edge, in_fit=not at_edge, n_sizes=int(len(sizes)),
              curve_N=np.exp(grid).tolist(), curve_L=curve.tolist(),
              grid_N=[float(np.exp(sizes[0])), float(np.exp(sizes[-1]))])


def isoflop_minima(runs: table.Runs, budget_ids, weights=None, min_runs: int = 3,
                   drop_small: bool = False, window: float | None = 2.0,
                   minimum: str = "parabola", min_sizes: int = 3) -> list[dict]:
  """Per budget: the compute-optimal size N_opt, located on L against log N (weighted by runs).

  `minimum` picks how: "parabola" (Hoffmann et al., the default: a least-squares parabola within
  a factor `window` of the best run, at least `min_sizes` sizes, or through every size with
  `window` None; robust to noisy losses) or "akima"
  (Porian et al.: the minimum of an Akima spline through every size, for clean sweeps with one
  loss per size, where it follows asymmetric curves that bias the parabola). See
  _parabola_minimum, _akima_minimum. A budget whose minimum is not inside its sampled sizes has
  `in_fit` False.
  """
  if minimum not in MINIMUM_METHODS:
    raise UserError(f"minimum {minimum!r}: choose one of {', '.join(MINIMUM_METHODS)}")
  weights = np.ones(len(runs.L)) if weights is None else np.asarray(weights, np.float64)
  minima = []
  for budget in np.unique(budget_ids):
    here = (budget_ids == budget) & (weights > 0)
    flops = float(np.exp(np.mean(np.log(runs.C[budget_ids == budget]))))
    n_distinct = len(np.unique(runs.N[here]))
    if n_distinct < min_runs:
      if drop_small:
        continue
      rows = runs.rows[budget_ids == budget]
      raise UserError(f"IsoFLOP budget C = {flops:.3g} has {n_distinct} run(s) of distinct size "
                      f"(rows {', '.join(map(str, rows[:10]))}); Approach 2 needs at least "
                      f"{min_runs} per budget (drop such budgets with --drop-small-budgets)")
    log_n, loss, w = np.log(runs.N[here]), runs.L[here], weights[here]
    found = (_parabola_minimum(log_n, loss, w, window, min_sizes) if minimum == "parabola"
             else _akima_minimum(log_n, loss, w))
    n_opt = float(np.exp(found.pop("log_n_opt")))
    minima.append(dict(C=flops, N_opt=n_opt,
                       D_opt=flops / (runs.conventions.get("flops_per_param_token", 6.0) * n_opt),
                       n_runs=int(here.sum()), method=minimum, **found))
  return minima


def approach2(runs: table.Runs, budget_ids=None, weights=None, drop_small: bool = False,
              window: float | None = 2.0, minimum: str = "parabola", min_sizes: int = 3) -> dict:
  """IsoFLOP minima (see isoflop_minima), then N_opt = k C^a and D_opt = k C^b over the budgets
  whose minimum lies inside their sampled sizes; every other budget is named in `warnings`."""
  budget_ids = table.budgets(runs.C) if budget_ids is None else np.asarray(budget_ids)
  minima = isoflop_minima(runs, budget_ids, weights, drop_small=drop_small, window=window,
                          minimum=minimum, min_sizes=min_sizes)
  warnings = [_minimum_warning(m) for m in minima if m["at_edge"] or not m["in_fit"]]
  used = [m for m in minima if m["in_fit"]]
  if len(used) < 2:
    raise UserError(f"Approach 2: {len(used)} of {len(minima)} budgets have a minimum inside "
                    "their sampled sizes, and a power law in C needs two: "
                    + "; ".join(w for w in warnings if "left out" in w))
  laws = _allocation_laws(*(np.array([m[k] for m in used]) for k in ("C", "N_opt", "D_opt")))
  return dict(approach=2, minimum=minimum, window=window, min_sizes=min_sizes, minima=minima,
              warnings=warnings,
              n_budgets_used=len(used), n_budgets_left_out=len(minima) - len(used), **laws)


def _minimum_warning(m: dict) -> str:
  low, high = m["grid_N"]
  where = f"budget C = {m['C']:.3g} (sizes {low:.3g} to {high:.3g})"
  if not m["in_fit"]:
    found = ("has no minimum (the parabola opens downwards)" if m.get("parabola", [1])[0] <= 0
             else f"has its minimum at N = {m['N_opt']:.3g}, outside the sizes sampled")
    return f"{where} {found}: left out of the power law"
  return (f"{where}: the lowest loss is at the edge of the grid; the minimum, N = "
          f"{m['N_opt']:.3g}, lies inside it")


def lower_envelope(runs: table.Runs, weights=None, n_grid: int = 40) -> dict:
  """The lower envelope of training curves on `n_grid` compute values evenly spaced in log C: at
  each, the least loss of any run (group) there and that run's N.

  Each group of rows (a run id, or N to three significant figures when every run id is unique)
  is a training curve; its loss is interpolated in log C, and only compute values inside the
  curve's range count. `interior` marks the compute values where neither the smallest nor the
  largest size is the best (elsewhere the optimum may lie beyond the sizes tried, and the
  envelope's loss is only an upper bound on the frontier's)."""
  weights = np.ones(len(runs.L)) if weights is None else np.asarray(weights, np.float64)
  curves = runs.groups
  if len(np.unique(curves)) == len(curves):
    curves = np.array([f"{n:.3g}" for n in runs.N])
  keep = weights > 0
  log_c = np.log(runs.C)
  grid = np.linspace(log_c[keep].min(), log_c[keep].max(), n_grid)
  best_loss = np.full(n_grid, np.inf)
  best_n = np.full(n_grid, np.nan)
  for group in np.unique(curves[keep]):
    here = keep & (curves == group)
    order = np.argsort(log_c[here])
    x, y = log_c[here][order], runs.L[here][order]
    inside = (grid >= x[0]) & (grid <= x[-1])
    curve = np.interp(grid, x, y)
    better = inside & (curve < best_loss)
    best_loss[better] = curve[better]
    best_n[better] = np.exp(np.mean(np.log(runs.N[here])))
  interior = (best_n > np.exp(np.log(runs.N[keep]).min()) * (1 + 1e-9)) & (
      best_n < np.exp(np.log(runs.N[keep]).max()) * (1 - 1e-9))
  found = np.isfinite(best_loss)
  return dict(C=np.exp(grid[found]), L=best_loss[found], N=best_n[found],
              interior=interior[found])


def approach1(runs: table.Runs, weights=None, n_grid: int = 40) -> dict:
  """Approach 1: N_opt and D_opt along the lower envelope of the training curves
  (`lower_envelope`), at the compute values where an interior size is the best."""
  env = lower_envelope(runs, weights, n_grid)
  ok = env["interior"]
  flops = env["C"][ok]
  k = runs.conventions.get("flops_per_param_token", 6.0)
  envelope = dict(C=flops.tolist(), N_opt=env["N"][ok].tolist(),
                  D_opt=(flops / (k * env["N"][ok])).tolist(), L=env["L"][ok].tolist())
  laws = _allocation_laws(flops, env["N"][ok], flops / (k * env["N"][ok]))
  dropped = int((~ok).sum())
  warnings = [f"{dropped} of {n_grid} compute values dropped: the smallest or largest size was "
              "the best there"] if dropped else []
  return dict(approach=1, envelope=envelope, warnings=warnings, same_runs_as_approach2=True,
              **laws)


def bootstrap_allocation(run_approach, runs: table.Runs, n_boot: int, seed: int,
                         ci: float) -> dict:
  """Intervals on a and b by refitting an approach on resampled runs (fit.resample_weights: the
  seeds within each design point where runs.points says which runs are replicates, else the runs
  themselves, which resamples the design). Every resample is accounted for: `n_failed` with its
  reasons, and for Approach 2 how many budgets each resample left out of its power law."""
  samples = {"a": [], "b": []}
  failures, left_out = collections.Counter(), []
  for w in resample_weights(runs.groups, n_boot, seed, within=runs.bootstrap_points()):
    try:
      out = run_approach(runs, weights=w)
    except (UserError, np.linalg.LinAlgError, ValueError) as e:
      failures[_reason(e)] += 1
      continue
    samples["a"].append(out["a"])
    samples["b"].append(out["b"])
    if "n_budgets_left_out" in out:
      left_out.append(out["n_budgets_left_out"])
  out = dict(n_boot=n_boot, n_converged=len(samples["a"]), n_failed=sum(failures.values()),
             failures=dict(failures), resample=resample_kind(runs), ci=ci, seed=seed,
             intervals={k: interval(v, ci) for k, v in samples.items() if v}, samples=samples)
  if left_out:
    out["budgets_left_out"] = dict(resamples_with_any=int(np.sum(np.array(left_out) > 0)),
                                   most=int(max(left_out)))
  return out


def resample_kind(runs: table.Runs) -> str:
  """What a bootstrap of `runs` resamples, in words for reports."""
  info = runs.replicates()
  if info is None:
    return "runs (the design itself: no seed column given)"
  if info["seeds_max"] < 2:
    return "runs (the design itself: one seed per design point)"
  held = "" if info["seeds_min"] >= 2 else "; points with one seed are held fixed"
  seeds = (f"{info['seeds_max']}" if info["seeds_min"] == info["seeds_max"]
           else f"{info['seeds_min']}-{info['seeds_max']}")
  return f"seeds within design points ({info['design_points']} points, {seeds} seeds each{held})"


def _reason(e: Exception) -> str:
  """An exception as a failure reason, its numbers masked so that like failures count together."""
  return f"{type(e).__name__}: {re.sub(r'[0-9][0-9.e+-]*', '#', str(e))[:160]}"


def heldout_check(runs: table.Runs, budget_ids, n_held: int = 1, **fit_options) -> dict:
  """Hoffmann's law fitted without the largest n_held budgets; its error predicting them."""
  order = np.unique(budget_ids)
  if len(order) <= n_held:
    raise UserError(f"held-out check: {len(order)} budget(s), cannot hold out {n_held}")
  held = np.isin(budget_ids, order[-n_held:])
  train = runs.subset(~held)
  fit = fit_law("hoffmann", train.inputs(), train.L, **fit_options)
  test = runs.subset(held)
  predicted = fit.form.loss(fit.theta, test.inputs())
  error = predicted - test.L
  return dict(held_out_budgets=n_held, n_train=int((~held).sum()), n_test=int(held.sum()),
              min_flops_held=float(test.C.min()), train_converged=fit.converged,
              mean_abs_error=float(np.mean(np.abs(error))),
              rms_error=float(np.sqrt(np.mean(error**2))),
              mean_rel_error=float(np.mean(np.abs(error) / test.L)),
              mean_signed_error=float(np.mean(error)))
