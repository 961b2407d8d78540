"""Approach 3 on Epoch's 240 Chinchilla points: SciPy one-start-at-a-time against ours.

    python benchmarks/fit_speed.py [--rounds 3] [--subset 15] [--full] [--boot 200]

Baseline: NumPy objective with an analytic gradient, SciPy L-BFGS-B (default tolerances) from each
of Hoffmann's 4,500 starts in turn. With --subset K only every K-th start runs and its time is
multiplied by K (said so in the output); --full runs all 4,500. Ours: `research.scaling.fit.fit_law`
(one vectorised pass over all 4,500 starts, then the best 32 refined together by a jitted, vmapped
float64 L-BFGS), timed after compilation; compilation is reported separately. A third contender,
SciPy from the same 32 pruned starts, separates the gain of vectorising from that of pruning.
The contenders alternate over rounds; medians and their ratio are printed with both optima.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd
import scipy.optimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from research.scaling.fit import bootstrap_law, fit_law  # noqa: E402
from research.scaling.forms import FORMS  # noqa: E402
from research.scaling.optimize import Objective, prescreen  # noqa: E402

DATA = os.path.join("..", "shared", "data", "scaling", "epoch_chinchilla", "svg_extracted_data.csv")
NAMES = ("A", "B", "E", "alpha", "beta")


def load_points(path: str):
  df = pd.read_csv(path)
  df = df.loc[df["loss"].rank(method="first", ascending=False) > 5]
  n, c, loss = (df[k].to_numpy(np.float64) for k in ("Model Size", "Training FLOP", "loss"))
  return n, c / (6 * n), loss


def numpy_objective(log_n, log_d, log_l, delta=1e-3):
  """Summed Huber on log L and its analytic gradient, NumPy: the straightforward baseline."""
  def value_and_grad(theta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    expd = np.exp(terms - top)
    total = expd.sum(axis=0)
    r = top + np.log(total) - log_l
    soft = expd / total
    dh = np.clip(r, -delta, delta)
    h = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    g = np.array([dh @ soft[0], dh @ soft[1], dh @ soft[2],
                  -(dh * soft[0]) @ log_n, -(dh * soft[1]) @ log_d])
    return h.sum(), g
  return value_and_grad


def scipy_baseline(starts, fun):
  best = (np.inf, None)
  for x0 in starts:
    with np.errstate(all="ignore"):
      r = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
    if np.isfinite(r.fun) and r.fun < best[0]:
      best = (float(r.fun), r.x)
  return best


def describe(theta) -> str:
  nat = FORMS["hoffmann"].natural(theta)
  return ", ".join(f"{k} {nat[k]:.6g}" for k in NAMES)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--subset", type=int, default=15,
                 help="baseline runs every K-th start, its time scaled by K")
  p.add_argument("--full", action="store_true", help="baseline runs all 4,500 starts")
  p.add_argument("--boot", type=int, default=200, help="bootstrap refits to time (0: skip)")
  p.add_argument("--data", default=DATA, help="Epoch's svg_extracted_data.csv")
  args = p.parse_args()
  n, d, loss = load_points(args.data)
  grid = FORMS["hoffmann"].grid()
  step = 1 if args.full else args.subset
  fun = numpy_objective(np.log(n), np.log(d), np.log(loss))
  print(f"{len(loss)} points, {len(grid)} starts; baseline runs "
        + ("all starts" if step == 1 else f"every {step}th start ({len(grid[::step])} starts) and "
           f"its time is multiplied by {step} to estimate the full 4,500-start run"))

  t0 = time.perf_counter()
  fit_law("hoffmann", dict(N=n, D=d), loss)
  print(f"ours, first call (includes jit compilation): {time.perf_counter() - t0:.2f} s")
  pruned = grid[np.argsort(prescreen(Objective(FORMS["hoffmann"]), grid, dict(N=n, D=d), loss),
                           kind="stable")[:32]]
  base_times, our_times, pruned_times = [], [], []
  for i in range(args.rounds):
    t0 = time.perf_counter()
    pruned_value, _ = scipy_baseline(pruned, fun)
    pruned_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    base_value, base_theta = scipy_baseline(grid[::step], fun)
    base_times.append((time.perf_counter() - t0) * step)
    t0 = time.perf_counter()
    fit = fit_law("hoffmann", dict(N=n, D=d), loss)
    our_times.append(time.perf_counter() - t0)
    print(f"round {i + 1}: baseline {base_times[-1]:.2f} s"
          f"{'' if step == 1 else ' (full-grid estimate)'}, "
          f"ours {our_times[-1]:.3f} s, SciPy from our 32 pruned starts {pruned_times[-1]:.2f} s")
  base, ours = statistics.median(base_times), statistics.median(our_times)
  print(f"\nmedian baseline (SciPy L-BFGS-B, 4,500 starts{'' if step == 1 else ', scaled'}): "
        f"{base:.2f} s")
  print(f"median ours (prune + vmapped jitted L-BFGS, warm): {ours:.3f} s")
  print(f"speed-up: {base / ours:.1f}x")
  pruned_median = statistics.median(pruned_times)
  print(f"of which vectorisation alone (SciPy one at a time from the same 32 pruned starts, "
        f"median {pruned_median:.2f} s, best objective {pruned_value:.10g}): "
        f"{pruned_median / ours:.1f}x; the rest is the pruning")
  print(f"baseline optimum: objective {base_value:.10g}; {describe(base_theta)}")
  print(f"our optimum:      objective {fit.value:.10g}; {describe(fit.theta)} "
        f"({fit.status}; {fit.n_good}/{fit.n_refined} refined starts agree)")
  diff = np.abs(np.array(list(FORMS['hoffmann'].natural(fit.theta).values()))
                / np.array(list(FORMS['hoffmann'].natural(base_theta).values())) - 1)
  print(f"largest relative difference in A, B, E, alpha, beta: {diff.max():.2e}; "
        f"objective difference (ours - baseline): {fit.value - base_value:+.3e}")
  if args.boot:
    bootstrap_law(fit, dict(N=n, D=d), loss, n_boot=args.boot)  # compile for this batch shape
    t0 = time.perf_counter()
    boot = bootstrap_law(fit, dict(N=n, D=d), loss, n_boot=args.boot, seed=1)
    took = time.perf_counter() - t0
    print(f"bootstrap: {args.boot} refits in {took:.2f} s ({boot['n_converged']} converged, each "
          f"from the full-data optimum); the baseline would take about "
          f"{base * args.boot / 3600:.1f} h refitting the 4,500-start grid each time, or "
          f"{base / len(grid) * args.boot:.1f} s from one start each")


if __name__ == "__main__":
  main()
