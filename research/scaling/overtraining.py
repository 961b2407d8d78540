"""The over-training law of Gadre et al. 2024 and its link from loss to downstream error.

Gadre et al. 2024 ("Language models scale reliably with over-training and on downstream tasks",
arXiv 2403.08540) fit the loss of a model of N parameters trained on D = M N tokens (M the token
multiplier) and then the average top-1 error of downstream tasks as a function of that loss:

    L(N, M) = a N^eta + b 6^(eta/2) (M N)^eta + E        (the parametrisation of their code)
    Err(L)  = epsilon - k exp(-gamma L)                   (downstream average top-1 error)

With C = 6 N D = 6 M N^2 the loss law reads L = E + (a (6 M)^(-eta/2) + b M^(eta/2)) C^(eta/2).
Both fits are least squares on the raw loss and error with scipy's `curve_fit` (Levenberg-
Marquardt, 10,000 evaluations at most), as their released code does: the loss law from each of
the 128 starts of LOSS_STARTS, keeping the one with the smallest squared residuals; the error
link from the single start k = gamma = epsilon = 1. A prediction chains the two: the error is
predicted from the *predicted* loss, as their Fig. 1 does.

    loss_fit = fit_loss(n, m, loss)        # the loss rows' N, M = D / N and loss
    error_fit = fit_error(loss_e, error_e)  # the error rows' actual loss and top-1 error
    loss_fit["params"]                      # {"a": ..., "b": ..., "eta": ..., "E": ...}
    p = predict(loss_fit["params"], 1.44e9, 640.0, error_fit["params"])  # {"loss", "error"}
    relative_error(p["loss"], 2.502)        # a fraction: 0.0071 is 0.71%
"""

import itertools
import warnings

import numpy as np
from scipy import optimize as sp_optimize

from research.errors import UserError

LOSS_FORMULA = "L = a N^eta + b 6^(eta/2) (M N)^eta + E"
ERROR_FORMULA = "Err = epsilon - k exp(-gamma L)"
LOSS_PARAMS = ("a", "b", "eta", "E")
ERROR_PARAMS = ("k", "gamma", "epsilon")

# The starts of Gadre et al.'s code: a and b in {1e2, 3e2, 1e3, 3e3}, eta in {-0.1, -0.3},
# E in {0, 1, 2, 10}; every combination (128).
LOSS_STARTS = tuple(itertools.product((1e2, 3e2, 1e3, 3e3), (1e2, 3e2, 1e3, 3e3),
                                      (-0.1, -0.3), (0.0, 1.0, 2.0, 10.0)))
ERROR_START = (1.0, 1.0, 1.0)  # curve_fit's default start, which their code uses
MAXFEV = 10_000


def loss_law(n, m, a: float, b: float, eta: float, e: float) -> np.ndarray:
  """L(N, M) in nats per token for parameters `n` and token multipliers `m` (broadcast)."""
  n, m = np.asarray(n, np.float64), np.asarray(m, np.float64)
  return a * n ** eta + b * 6.0 ** (eta / 2) * (m * n) ** eta + e


def error_law(loss, k: float, gamma: float, epsilon: float) -> np.ndarray:
  """Average top-1 error (a fraction) at `loss`."""
  return epsilon - k * np.exp(-gamma * np.asarray(loss, np.float64))


def _curve_fit(f, x, y, start, maxfev: int):
  """One curve_fit from `start`: (params, sum of squared residuals), or None when scipy gives up
  or the result is not finite."""
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore", sp_optimize.OptimizeWarning)
    try:
      params, _ = sp_optimize.curve_fit(f, x, y, p0=start, maxfev=maxfev)
    except RuntimeError:  # "Optimal parameters not found": the evaluation limit was reached
      return None
    ssr = float(np.sum((y - f(x, *params)) ** 2))
  return (params, ssr) if np.all(np.isfinite(params)) and np.isfinite(ssr) else None


def _points(what: str, names: tuple, *columns) -> list[np.ndarray]:
  arrays = [np.asarray(c, np.float64).ravel() for c in columns]
  if len({a.size for a in arrays}) != 1:
    raise UserError(f"{what}: the inputs have different lengths {[a.size for a in arrays]}")
  if not all(np.all(np.isfinite(a)) for a in arrays):
    raise UserError(f"{what}: some points are not finite (NaN or infinite)")
  if arrays[0].size <= len(names):
    raise UserError(f"{what}: {arrays[0].size} points; its {len(names)} constants "
                    f"({', '.join(names)}) need at least {len(names) + 1}")
  return arrays


def _result(names: tuple, best, rows: int, starts: int, converged_starts: int) -> dict:
  if best is None:
    return dict(params=None, converged=False, rows=rows, starts=starts, converged_starts=0,
                rmse=None)
  params, ssr = best
  return dict(params=dict(zip(names, map(float, params))), converged=True, rows=rows,
              starts=starts, converged_starts=converged_starts, rmse=float(np.sqrt(ssr / rows)))


def fit_loss(n, m, loss, *, starts=LOSS_STARTS, maxfev: int = MAXFEV) -> dict:
  """Least squares of `loss_law` on the raw loss from each start; the best start is kept.
  Returns {"params": {a, b, eta, E} or None, "converged", "rows", "starts", "converged_starts",
  "rmse"}; "converged" is False when no start converged."""
  n, m, loss = _points("the loss law", LOSS_PARAMS, n, m, loss)
  if np.any(n <= 0) or np.any(m <= 0):
    raise UserError("the loss law: N and M must be positive")
  x = np.stack([n, m])

  def law(x, a, b, eta, e):
    return loss_law(x[0], x[1], a, b, eta, e)

  best, converged = None, 0
  for start in starts:
    found = _curve_fit(law, x, loss, start, maxfev)
    if found is not None:
      converged += 1
      if best is None or found[1] < best[1]:
        best = found
  return _result(LOSS_PARAMS, best, loss.size, len(starts), converged)


def fit_error(loss, error, *, start=ERROR_START, maxfev: int = MAXFEV) -> dict:
  """Least squares of `error_law` on the raw error at the rows' actual losses, from one start.
  Returns the same keys as `fit_loss` with params {k, gamma, epsilon}."""
  loss, error = _points("the error law", ERROR_PARAMS, loss, error)
  found = _curve_fit(error_law, loss, error, start, maxfev)
  return _result(ERROR_PARAMS, found, loss.size, 1, int(found is not None))


def predict(loss_params: dict, n, m, error_params: dict | None = None) -> dict:
  """{"loss": L(N, M)} and, given the error link, {"error": Err(L(N, M))}: the error of the
  predicted loss."""
  loss = loss_law(n, m, *(loss_params[k] for k in LOSS_PARAMS))
  out = dict(loss=loss)
  if error_params is not None:
    out["error"] = error_law(loss, *(error_params[k] for k in ERROR_PARAMS))
  return out


def relative_error(predicted, actual) -> np.ndarray:
  """|predicted - actual| / |actual|, the figure Gadre et al. report (as a fraction)."""
  actual = np.asarray(actual, np.float64)
  return np.abs(np.asarray(predicted, np.float64) - actual) / np.abs(actual)
