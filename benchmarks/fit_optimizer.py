"""Our batched L-BFGS against `optax.lbfgs` on Epoch's 240 Chinchilla points, two workloads.

    python benchmarks/fit_optimizer.py [--rounds 7] [--boot 200] [--keep 32] [--data PATH]

Both contenders are one L-BFGS per start in a `lax.while_loop`, vmapped, jitted, float64, behind
the same padding (`optimize.batched`), with the same stopping rules (`optimize.first_status`,
`optimize.step_status`: max|g| <= gtol, the objective-change test, the iteration limit):
* ours: the hand-written L-BFGS with an Armijo backtracking line search that
  `optimize.lbfgs_jax` ran before this benchmark's decision, kept here as the baseline;
* optax: `optimize.lbfgs_jax` as it is now: `optax.lbfgs()` with its zoom line search
  (`optax.value_and_grad_from_state`).
The workloads, on Epoch's points less the 5 highest losses with Hoffmann's objective (as
tests/test_fit_published.py):
* bootstrap: the refits of `fit.bootstrap_law`: `--boot` resamples (`fit.resample_weights`, seed
  0), all from the full fit's winner, in one batch with per-resample weights;
* multi-start: the `--keep` starts `fit.fit_law` keeps from Hoffmann's 4,500 after its first pass.
Each contender is called once per workload before timing (compilation; reported apart), then
the contenders alternate, their order swapped every round. Printed: median seconds, the median
and range of the per-round ratio optax / ours, status counts (non-converged runs), iterations, and
the same-optimum check per resample (or start): the largest relative difference of objective and
of parameters between the contenders, at the tolerances the fits use and, as a reference, with
both run to the gradient alone (ftol 0, gtol 1e-12, 3,000 iterations).
"""

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from research.scaling import optimize, table  # noqa: E402
from research.scaling.fit import fit_law, resample_weights  # noqa: E402
from research.scaling.forms import FORMS  # noqa: E402

DATA = os.path.join("..", "shared", "data", "scaling", "epoch_chinchilla", "svg_extracted_data.csv")
CONTENDERS = ("ours", "optax")
TIGHT = dict(maxiter=3000, ftol=0.0, gtol=1e-12)


def _two_loop(g, s_mem, y_mem, rho, head, n_mem, memory):
  """L-BFGS direction -H g from a circular memory whose newest pair sits at head - 1."""
  def newest_first(i, carry):
    q, alphas = carry
    idx = (head - 1 - i) % memory
    alpha = jnp.where(i < n_mem, rho[idx] * jnp.dot(s_mem[idx], q), 0.0)
    return q - alpha * y_mem[idx], alphas.at[i].set(alpha)

  q, alphas = jax.lax.fori_loop(0, memory, newest_first, (g, jnp.zeros((memory,), g.dtype)))
  newest = (head - 1) % memory
  yy = jnp.dot(y_mem[newest], y_mem[newest])
  gamma = jnp.where(n_mem > 0, jnp.dot(s_mem[newest], y_mem[newest]) / jnp.where(yy > 0, yy, 1.0),
                    1.0)

  def oldest_first(j, r):
    i = memory - 1 - j
    idx = (head - 1 - i) % memory
    beta = rho[idx] * jnp.dot(y_mem[idx], r)
    return r + jnp.where(i < n_mem, alphas[i] - beta, 0.0) * s_mem[idx]

  return -jax.lax.fori_loop(0, memory, oldest_first, gamma * q)


def _armijo_lbfgs_one(fun, x0, maxiter, gtol, ftol, memory, max_backtracks=30):
  """The baseline: one L-BFGS run with Armijo backtracking; fun(x) -> (f, g)."""
  value_and_grad = lambda x: optimize._finite(*fun(x))
  f0, g0 = value_and_grad(x0)
  p = x0.shape[0]
  init = dict(x=x0, f=f0, g=g0, s=jnp.zeros((memory, p), x0.dtype),
              y=jnp.zeros((memory, p), x0.dtype), rho=jnp.zeros((memory,), x0.dtype),
              head=0, n_mem=0, k=0, status=optimize.first_status(g0, maxiter, gtol))

  def body(st):
    x, f, g = st["x"], st["f"], st["g"]
    d = _two_loop(g, st["s"], st["y"], st["rho"], st["head"], st["n_mem"], memory)
    gd = jnp.dot(g, d)
    d = jnp.where(gd < 0, d, -g)
    gd = jnp.where(gd < 0, gd, -jnp.dot(g, g))
    t0 = jnp.where(st["n_mem"] == 0, jnp.minimum(1.0, 1.0 / jnp.sqrt(jnp.dot(g, g))), 1.0)

    def backtrack(c):  # Armijo backtracking; the first pass evaluates the full step t0
      t, _, _, i = c
      fn, gn = value_and_grad(x + 0.5 * t * d)
      return 0.5 * t, fn, gn, i + 1

    t, fn, gn, _ = jax.lax.while_loop(
        lambda c: (c[1] > f + 1e-4 * c[0] * gd) & (c[3] < max_backtracks), backtrack,
        (2.0 * t0, jnp.inf, g, 0))
    ok = fn <= f + 1e-4 * t * gd
    x_new = jnp.where(ok, x + t * d, x)
    f_new = jnp.where(ok, fn, f)
    g_new = jnp.where(ok, gn, g)
    s, y = x_new - x, g_new - g
    sy = jnp.dot(s, y)
    store = ok & (sy > 1e-10 * jnp.dot(y, y))
    head = st["head"]
    k = st["k"] + 1
    return dict(
        x=x_new, f=f_new, g=g_new,
        s=jnp.where(store, st["s"].at[head].set(s), st["s"]),
        y=jnp.where(store, st["y"].at[head].set(y), st["y"]),
        rho=jnp.where(store, st["rho"].at[head].set(1.0 / jnp.where(store, sy, 1.0)), st["rho"]),
        head=jnp.where(store, (head + 1) % memory, head),
        n_mem=jnp.where(store, jnp.minimum(st["n_mem"] + 1, memory), st["n_mem"]),
        k=k, status=optimize.step_status(ok, f, f_new, g, g_new, k, maxiter, gtol, ftol))

  out = jax.lax.while_loop(lambda st: st["status"] == 0, body, init)
  return out["x"], out["f"], out["status"], out["k"]


@functools.partial(jax.jit, static_argnames=("obj", "maxiter", "gtol", "ftol", "memory"))
def _armijo_batch(x0_SxP, weights_SxN, inputs, log_l, *, obj, maxiter, gtol, ftol, memory):
  def one(x0, w):
    fun = jax.value_and_grad(lambda th: optimize.objective_value(jnp, obj, th, inputs, log_l, w))
    return _armijo_lbfgs_one(fun, x0, maxiter, gtol, ftol, memory)
  return jax.vmap(one)(x0_SxP, weights_SxN)


def lbfgs(method: str, obj, starts, inputs, loss, weights, *, maxiter: int, gtol: float = 1e-8,
          ftol: float = 1e-13, memory: int = 10) -> optimize.Result:
  """A contender by name, with `optimize.lbfgs_jax`'s defaults."""
  if method == "optax":
    return optimize.lbfgs_jax(obj, starts, inputs, loss, weights, maxiter=maxiter, gtol=gtol,
                              ftol=ftol, memory=memory)
  return optimize.batched(_armijo_batch, obj, starts, inputs, loss, weights, maxiter=maxiter,
                          gtol=gtol, ftol=ftol, memory=memory)


def cpu_name() -> str:
  """`lscpu`'s model name (and the core count), or what is known without it."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    name = "unknown"
  return f"{name}, {os.cpu_count()} cores"


def epoch_points(path: str):
  """Epoch's points less the 5 highest losses (tests/test_fit_published.py `_epoch`)."""
  df = table.read_table(path)
  df = df.loc[df["loss"].rank(method="first", ascending=False) > 5].reset_index(drop=True)
  runs = table.runs_from_table(df, n="Model Size", c="Training FLOP", loss="loss")
  return runs.inputs(), runs.L


def workloads(inputs, loss, n_boot: int, keep: int):
  """{name: (starts, weights)}: the bootstrap's refits and the multi-start fit's kept starts."""
  fit = fit_law("hoffmann", inputs, loss, keep=keep)
  weights = resample_weights(np.arange(len(loss)), n_boot, seed=0)
  grid = FORMS["hoffmann"].grid()
  first_pass = optimize.prescreen(fit.objective, grid, inputs, loss)
  kept = grid[np.argsort(first_pass, kind="stable")[:keep]]
  return fit, {f"bootstrap ({n_boot} refits)": (np.repeat(fit.theta[None], n_boot, 0), weights),
               f"multi-start ({keep} starts)": (kept, None)}


def relative(a, b) -> np.ndarray:
  """Per run, |a / b - 1|: of values (S,), or its largest entry over the parameters of (S, P)."""
  d = np.abs(np.asarray(a) / np.asarray(b) - 1)
  return d.max(axis=-1) if d.ndim == 2 else d


def agreement(x: optimize.Result, y: optimize.Result, both_converged: bool = True) -> str:
  """The largest relative difference of objective and of theta, over the runs both finished."""
  ok = np.isin(x.status, optimize.CONVERGED) & np.isin(y.status, optimize.CONVERGED)
  ok = ok if both_converged else np.ones_like(ok)
  ok &= np.isfinite(x.value) & np.isfinite(y.value)
  f, th = relative(x.value[ok], y.value[ok]), relative(x.theta[ok], y.theta[ok])
  return (f"objective max {f.max():.1e} (median {np.median(f):.1e}, {(f > 1e-8).sum()} above "
          f"1e-8), theta max {th.max():.1e} (median {np.median(th):.1e}) over {ok.sum()} runs")


def describe(r: optimize.Result) -> str:
  codes, counts = np.unique(r.status, return_counts=True)
  failed = int((~np.isin(r.status, optimize.CONVERGED)).sum())
  return (f"{failed} not converged; status {dict(zip(codes.tolist(), counts.tolist()))}; "
          f"iterations median {np.median(r.iterations):.0f}, max {r.iterations.max()}; "
          f"best objective {np.min(r.value):.12g}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--boot", type=int, default=200, help="bootstrap resamples")
  p.add_argument("--keep", type=int, default=32, help="starts kept by the multi-start fit")
  p.add_argument("--maxiter", type=int, default=300, help="as fit_law and bootstrap_law")
  p.add_argument("--data", default=DATA, help="Epoch's svg_extracted_data.csv")
  args = p.parse_args()
  print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.2f}")
  inputs, loss = epoch_points(args.data)
  fit, work = workloads(inputs, loss, args.boot, args.keep)
  print(f"{len(loss)} points; full fit objective {fit.value:.12g} ({fit.status})")

  def run(name, method, **options):
    starts, weights = work[name]
    t0 = time.perf_counter()
    result = lbfgs(method, fit.objective, starts, inputs, loss, weights,
                   **(options or dict(maxiter=args.maxiter)))
    return result, time.perf_counter() - t0

  results, times = {}, {(w, c): [] for w in work for c in CONTENDERS}
  for w in work:
    for c in CONTENDERS:
      results[w, c], took = run(w, c)
      print(f"{w}, {c}: first call (includes compilation) {took:.2f} s")
  for i in range(args.rounds):
    order = CONTENDERS if i % 2 == 0 else CONTENDERS[::-1]
    line = []
    for w in work:
      for c in order:
        times[w, c].append(run(w, c)[1])
      line.append(f"{w}: ours {times[w, 'ours'][-1]:.3f} s, optax {times[w, 'optax'][-1]:.3f} s")
    print(f"round {i + 1}: " + "; ".join(line))
  print(f"load average after: {os.getloadavg()[0]:.2f}")

  for w in work:
    ratios = [b / a for a, b in zip(times[w, "ours"], times[w, "optax"])]
    print(f"\n{w}:")
    for c in CONTENDERS:
      print(f"  {c:5s} median {statistics.median(times[w, c]):.3f} s; {describe(results[w, c])}")
    print(f"  optax / ours: median {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}) over {args.rounds} rounds")
    x, y = (results[w, c] for c in CONTENDERS)
    print(f"  optax vs ours, fits' tolerances: {agreement(y, x)}")
    if work[w][1] is None:  # one data set, many starts: the fit is the winner
      best = {c: int(np.argmin(results[w, c].value)) for c in CONTENDERS}
      f, th = (float(relative(getattr(y, k)[[best["optax"]]], getattr(x, k)[[best["ours"]]])[0])
               for k in ("value", "theta"))
      print(f"  winners: objective differs by {f:.1e}, theta by {th:.1e} (relative)")
    tight = {c: run(w, c, **TIGHT)[0] for c in CONTENDERS}
    print(f"  optax vs ours, to the gradient: {agreement(tight['optax'], tight['ours'])}")
    for c in CONTENDERS:
      print(f"  {c:5s} at the fits' tolerances vs to the gradient: "
            f"{agreement(results[w, c], tight[c], both_converged=False)}")


if __name__ == "__main__":
  main()
