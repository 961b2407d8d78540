"""Loss-to-loss prediction: a shifted power law between two losses of the same models.

Brandfonbrener et al. 2024 ("Loss-to-loss prediction: scaling laws for all datasets", arXiv
2411.12925) find that the losses of one set of models on two data sets x and y (train-to-train,
train-to-test) follow

    L_y = K (L_x - E_x)^kappa + E_y

with E_x, E_y the irreducible losses of the two data sets. In the paper E_x and E_y come from each
data set's own fitted scaling law; here they are given (`e_x`, `e_y`) or fitted jointly with K and
kappa. The fit is least squares on log L_y (relative error, as the house Huber-on-log-L) with
scipy.optimize.least_squares and an analytic Jacobian, in the parametrisation theta =
(log K, kappa, v_x, v_y), E = m sigmoid(v) with m the smallest loss of that data set (every E lies
in (0, min L): no bounds to hit, L - E > 0 always), from a grid of starts over the free E's.

    fit = fit_loss_to_loss(l_x, l_y)                     # E_x, E_y fitted jointly
    fit = fit_loss_to_loss(l_x, l_y, e_x=1.7, e_y=2.3)   # E's given: fits K, kappa only
    fit["params"]                                        # {"K", "kappa", "E_x", "E_y"}
    fit["identifiability"]["verdict"]                    # how well the data pin the four down
    boot = bootstrap_loss_to_loss(fit, l_x, l_y, n_boot=200, seed=0)
    translated_loss(theta, fit["params"], {"N": n, "D": d})   # L_y of a fitted Hoffmann law on x

Jointly fitted, E_x trades off against kappa and K (and E_y against the curve's offset): over a
narrow range of L_x the curve is nearly a straight line, and four parameters are not pinned down.
`identifiability` reports the correlations of the free parameters at the optimum (from the
Jacobian; per-parameter reparametrisations leave them unchanged) and the bootstrap intervals say
the rest. The bootstrap resamples the runs with replacement; resamples whose refit fails (too few
distinct runs, no convergence from the full-data winner nor from the grid) are counted by reason.
"""

import dataclasses
import warnings

import numpy as np
from scipy import optimize as sp_optimize
from scipy.special import expit, logit

from research.errors import UserError
from research.scaling import fit as fit_lib
from research.scaling.forms import hoffmann_frontier
from research.scaling.table import _rows_text

FORMULA = "L_y = K (L_x - E_x)^kappa + E_y"
PARAMS = ("K", "kappa", "E_x", "E_y")
START_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # E / min L of the free E's at the starts
CORRELATION_LEVELS = ((0.95, "well identified"), (0.999, "weakly identified: parameters trade "
                      "off; read the intervals"))
RTOL_GOOD = 1e-6
START_CLIP = 4.0  # |v| of a refit's start: E within 1.8% .. 98.2% of min L
AT_BOUND = 1e-3  # a fitted E / min L below this or above 1 - this is at its bound
MAX_NFEV = 2000


@dataclasses.dataclass(frozen=True)
class Spec:
  """Which E's are fixed (a value) or free (None), and the scale m of each E = m sigmoid(v)."""
  e_x: float | None
  e_y: float | None
  m_x: float
  m_y: float

  @property
  def free(self) -> tuple[str, ...]:
    return ("K", "kappa") + tuple(n for n, v in (("E_x", self.e_x), ("E_y", self.e_y))
                                  if v is None)


def predict_y(params: dict, l_x) -> np.ndarray:
  """K (L_x - E_x)^kappa + E_y; NaN where L_x <= E_x."""
  gap = np.asarray(l_x, np.float64) - params["E_x"]
  with np.errstate(invalid="ignore"):
    return np.where(gap > 0, params["K"] * np.abs(gap) ** params["kappa"], np.nan) + params["E_y"]


def unpack(theta, spec: Spec) -> dict:
  """Natural parameters {K, kappa, E_x, E_y} from theta (log K, kappa, then the free v's)."""
  theta = list(np.asarray(theta, np.float64))
  out = dict(K=float(np.exp(theta[0])), kappa=float(theta[1]))
  rest = iter(theta[2:])
  out["E_x"] = spec.e_x if spec.e_x is not None else float(spec.m_x * expit(next(rest)))
  out["E_y"] = spec.e_y if spec.e_y is not None else float(spec.m_y * expit(next(rest)))
  return out


def _residuals_and_jacobian(theta, spec: Spec, l_x, l_y, sqrt_w):
  """sqrt(w) (log pred - log L_y) and its Jacobian in theta."""
  p = unpack(theta, spec)
  gap = l_x - p["E_x"]
  power = p["K"] * gap ** p["kappa"]
  pred = power + p["E_y"]
  columns = [power, power * np.log(gap)]
  if spec.e_x is None:
    s = p["E_x"] / spec.m_x
    columns.append(-p["kappa"] * power / gap * spec.m_x * s * (1 - s))
  if spec.e_y is None:
    s = p["E_y"] / spec.m_y
    columns.append(np.full_like(gap, spec.m_y * s * (1 - s)))
  jac = np.stack(columns, axis=1) / pred[:, None] * sqrt_w[:, None]
  return sqrt_w * (np.log(pred) - np.log(l_y)), jac


def _linear_start(spec: Spec, e_x: float, e_y: float, l_x, l_y) -> list | None:
  """(log K, kappa) of the straight line log(L_y - E_y) = log K + kappa log(L_x - E_x)."""
  if np.any(l_y <= e_y) or np.any(l_x <= e_x):
    return None
  kappa, log_k = np.polyfit(np.log(l_x - e_x), np.log(l_y - e_y), 1)
  return [log_k, kappa]


def starts(spec: Spec, l_x, l_y) -> np.ndarray:
  """The grid of starts: each free E at START_FRACTIONS of its min L, K and kappa from the line
  through the points at those E's."""
  x_fracs = START_FRACTIONS if spec.e_x is None else (None,)
  y_fracs = START_FRACTIONS if spec.e_y is None else (None,)
  out = []
  for fx in x_fracs:
    for fy in y_fracs:
      e_x = spec.e_x if fx is None else fx * spec.m_x
      e_y = spec.e_y if fy is None else fy * spec.m_y
      line = _linear_start(spec, e_x, e_y, l_x, l_y)
      if line is not None:
        out.append(line + [logit(f) for f in (fx, fy) if f is not None])
  return np.array(out)


def _solve(theta0, spec: Spec, l_x, l_y, sqrt_w):
  """least_squares from theta0 (residuals and Jacobian computed once per theta); None when it
  fails or ends non-finite."""
  last = {}

  def both(th):
    key = th.tobytes()
    if last.get("key") != key:
      last.update(key=key, value=_residuals_and_jacobian(th, spec, l_x, l_y, sqrt_w))
    return last["value"]

  fun, jac = (lambda th: both(th)[0]), (lambda th: both(th)[1])
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")
    try:
      result = sp_optimize.least_squares(fun, theta0, jac=jac, method="trf", x_scale="jac",
                                         max_nfev=MAX_NFEV)
    except (ValueError, np.linalg.LinAlgError):
      return None
  if not (np.all(np.isfinite(result.x)) and np.isfinite(result.cost)):
    return None
  return result


def distinct_runs(l_x, l_y) -> int:
  """How many different (L_x, L_y) pairs there are (a resample repeats runs)."""
  return len(set(zip(np.asarray(l_x).tolist(), np.asarray(l_y).tolist())))


def check_losses(l_x, l_y, e_x=None, e_y=None, rows=None) -> None:
  """Positive finite losses, as many runs as there are parameters and one more, given E's below
  their losses; UserError names the rows."""
  l_x, l_y = np.asarray(l_x, np.float64), np.asarray(l_y, np.float64)
  rows = np.arange(1, len(l_x) + 1) if rows is None else np.asarray(rows)
  for name, values in (("L_x", l_x), ("L_y", l_y)):
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
      raise UserError(f"{name} is not a finite positive number at {_rows_text(rows[bad])}")
  n_free = 2 + (e_x is None) + (e_y is None)
  fit_lib.check_enough_points(distinct_runs(l_x, l_y), n_free, "loss-to-loss law (distinct runs)")
  for option, name, e, values in (("--ex", "x", e_x, l_x), ("--ey", "y", e_y, l_y)):
    if e is None:
      continue
    if not (np.isfinite(e) and e >= 0):
      raise UserError(f"{option} {e!r}: an irreducible loss is a finite number >= 0")
    bad = values <= e
    if bad.any():
      raise UserError(f"{option} {e:g} is not below L_{name} at {_rows_text(rows[bad])} "
                      f"(e.g. {values[bad][0]:.6g}); the law needs L_{name} > E_{name}")


def fit_loss_to_loss(l_x, l_y, e_x: float | None = None, e_y: float | None = None, *,
                     weights=None, rows=None) -> dict:
  """The law through the runs' (L_x, L_y), E's given or fitted; the best of the grid of starts."""
  l_x, l_y = np.asarray(l_x, np.float64), np.asarray(l_y, np.float64)
  check_losses(l_x, l_y, e_x, e_y, rows)
  spec = Spec(e_x, e_y, float(l_x.min()), float(l_y.min()))
  sqrt_w = np.ones_like(l_x) if weights is None else np.sqrt(np.asarray(weights, np.float64))
  grid = starts(spec, l_x, l_y)
  results = [r for r in (_solve(t, spec, l_x, l_y, sqrt_w) for t in grid) if r is not None]
  if not results:
    raise UserError("loss-to-loss law: no start gave a finite fit")
  best = min(results, key=lambda r: r.cost)
  good = [unpack(r.x, spec) for r in results
          if r.status > 0 and r.cost <= best.cost * (1 + RTOL_GOOD) + 1e-300]
  spread = {name: [min(g[name] for g in good), max(g[name] for g in good)]
            for name in spec.free} if good else {}
  return dict(formula=FORMULA, params=unpack(best.x, spec), theta=best.x.tolist(),
              spec=dataclasses.asdict(spec), free=list(spec.free),
              given={k: v for k, v in (("E_x", e_x), ("E_y", e_y)) if v is not None},
              converged=bool(best.status > 0), status=str(best.message), n_runs=len(l_x),
              rmse_log=float(np.sqrt(2 * best.cost / sqrt_w.dot(sqrt_w))),
              starts=len(grid), converged_starts=sum(r.status > 0 for r in results),
              good_starts=len(good), spread=spread,
              identifiability=identifiability(best.jac, spec, unpack(best.x, spec)))


def identifiability(jac, spec: Spec, params: dict) -> dict:
  """Correlations of the free parameters at the optimum, from (J^T J)^-1, and a verdict; a free
  E at its bound (0 or min L) is named and left out of the correlations (its column vanishes)."""
  names = list(spec.free)
  bounds = {n: params[n] / m for n, m in (("E_x", spec.m_x), ("E_y", spec.m_y)) if n in names}
  at_bound = [n for n, f in bounds.items() if f < AT_BOUND or f > 1 - AT_BOUND]
  keep = [i for i, n in enumerate(names) if n not in at_bound]
  names = [names[i] for i in keep]
  jtj = jac[:, keep].T @ jac[:, keep]
  cov = np.linalg.pinv(jtj)
  sd = np.sqrt(np.clip(np.diag(cov), 0, None))
  with np.errstate(invalid="ignore", divide="ignore"):
    corr = cov / np.outer(sd, sd)
    condition = float(np.linalg.cond(jtj))
  pairs = [(float(abs(corr[i, j])), names[i], names[j], float(corr[i, j]))
           for i in range(len(names)) for j in range(i + 1, len(names))]
  worst = max(pairs)
  verdict = next((text for level, text in CORRELATION_LEVELS if worst[0] < level),
                 "not identified: a ridge of equally good fits; give E_x, E_y (--ex, --ey) "
                 "from each data set's own law")
  if at_bound:
    verdict = (f"{' and '.join(at_bound)} at the bound of its range (0 or the smallest loss): "
               f"the data do not place it; {verdict}")
  return dict(correlations={f"{a}~{b}": signed for _, a, b, signed in pairs},
              max_abs_correlation=worst[0], worst_pair=[worst[1], worst[2]], at_bound=at_bound,
              condition_number=condition, verdict=verdict)


def _refit(fit: dict, spec: Spec, l_x, l_y, weights):
  """One resample's refit: from the full-data winner (its sigmoid arguments clipped to
  +-START_CLIP, where the gradient is not vanishing), then from the grid; None if both fail."""
  drawn = weights > 0
  sqrt_w = np.sqrt(weights)
  start = np.asarray(fit["theta"], np.float64).copy()
  start[2:] = np.clip(start[2:], -START_CLIP, START_CLIP)  # a winner at a bound pins no refit
  result = _solve(start, spec, l_x, l_y, sqrt_w)
  if result is not None and result.status > 0:
    return result
  tries = [_solve(t, spec, l_x, l_y, sqrt_w) for t in starts(spec, l_x[drawn], l_y[drawn])]
  tries = [r for r in tries if r is not None and r.status > 0]
  return min(tries, key=lambda r: r.cost) if tries else None


def bootstrap_loss_to_loss(fit: dict, l_x, l_y, *, n_boot: int = 200, seed: int = 0,
                           ci: float = 0.95, predict_x=(), groups=None) -> dict:
  """Refit on `n_boot` resamples of the runs (rows, or `groups` of rows) with replacement:
  intervals of K, kappa, E_x, E_y and of L_y at `predict_x`; failures counted by reason."""
  l_x, l_y = np.asarray(l_x, np.float64), np.asarray(l_y, np.float64)
  spec = Spec(**fit["spec"])
  groups = np.arange(len(l_x)) if groups is None else groups
  weights = fit_lib.resample_weights(groups, n_boot, seed)
  failures, samples = {}, {name: [] for name in PARAMS}
  n_free = len(spec.free)
  for w in weights:
    if distinct_runs(l_x[w > 0], l_y[w > 0]) <= n_free:
      reason = "no more distinct runs than parameters"
    else:
      result = _refit(fit, spec, l_x, l_y, w)
      reason = None if result is not None else "did not converge (from the winner nor the grid)"
    if reason:
      failures[reason] = failures.get(reason, 0) + 1
      continue
    for name, value in unpack(result.x, spec).items():
      samples[name].append(value)
  intervals = {name: fit_lib.interval(v, ci) if v else [np.nan, np.nan]
               for name, v in samples.items() if name in spec.free}
  predictions = [dict(L_x=float(x), interval=fit_lib.interval(_sample_predictions(samples, x), ci)
                      if samples["K"] else [np.nan, np.nan]) for x in predict_x]
  n_failed = sum(failures.values())
  return dict(n_boot=n_boot, n_failed=n_failed, failures=failures, ci=ci, seed=seed,
              resampled="the runs, with replacement", intervals=intervals,
              predictions=predictions, samples=samples)


def _sample_predictions(samples: dict, l_x: float) -> np.ndarray:
  params = {k: np.asarray(v) for k, v in samples.items()}
  return predict_y(params, l_x)


def translated_loss(theta, params: dict, inputs: dict) -> np.ndarray:
  """L_y(N, D) = K (L_x(N, D) - E)^kappa + E_y for a Hoffmann law on x, theta = (log A, log B,
  log E, alpha, beta) (forms "hoffmann"): E_x is the law's E, so L_x - E_x = A/N^alpha + B/D^beta
  (computed as that sum, without cancellation); `params` gives K, kappa, E_y."""
  a, b, _, alpha, beta = (float(v) for v in np.asarray(theta, np.float64)[:5])
  reducible = (np.exp(a - alpha * np.log(np.asarray(inputs["N"], np.float64)))
               + np.exp(b - beta * np.log(np.asarray(inputs["D"], np.float64))))
  return params["K"] * reducible ** params["kappa"] + params["E_y"]


def translated_frontier(theta, params: dict, flops, flops_per_param_token: float = 6.0) -> dict:
  """The compute-optimal frontier of the translated law: with K, kappa > 0, L_y increases with
  L_x, so the N_opt, D_opt of C = k N D are those of the law on x (hoffmann_frontier); returns
  them with L_x and L_y there."""
  if not (params["K"] > 0 and params["kappa"] > 0):
    raise UserError("the translated law's frontier needs K > 0 and kappa > 0")
  frontier = hoffmann_frontier(theta, flops, flops_per_param_token)
  at = dict(N=frontier["N_opt"], D=frontier["D_opt"])
  l_y = translated_loss(theta, params, at)
  l_x = translated_loss(theta, dict(K=1.0, kappa=1.0, E_y=float(np.exp(theta[2]))), at)
  return dict(frontier, L_x=l_x, L_y=l_y)
