"""Minimising a Huber objective on log L from many starts: batched L-BFGS in JAX, SciPy reference.

The objective (Hoffmann et al. 2022, App. D.2; Besiroglu et al. 2024) is

    sum_i w_i Huber_delta(log L_hat(theta; x_i) - log L_i)

with per-point weights w (bootstrap resamples are multinomial counts, so a resample never changes
array shapes) and `reduce="mean"` dividing by sum(w) instead. `likelihood=True` is Epoch's variant:
the negative log-likelihood of residuals under a Huber density with a fitted scale sigma (theta
gains a last entry, log sigma).

`lbfgs_jax` runs every start at once: one `optax.lbfgs` per start (its zoom line search, Wolfe
conditions), in a `lax.while_loop`, vmapped, float64, jitted; a start that has converged stops
moving. Stopping follows SciPy's L-BFGS-B: max|g| <= gtol, or f_k - f_k+1 <= ftol * max(|f_k|,
|f_k+1|, 1), or the iteration limit. It replaced a hand-written L-BFGS with Armijo backtracking,
as fast on the bootstrap's refits and to the same optima (benchmarks/fit_optimizer.py, which
keeps the old one as its baseline). `lbfgs_scipy` is the straightforward reference (one start
after another, analytic gradient).
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
import scipy.special

from research.scaling.forms import Form

STATUS = {0: "running", 1: "converged (gradient)", 2: "converged (objective change)",
          3: "iteration limit", 4: "line search found no decrease",
          5: "converged (no decrease possible at float64 precision, small gradient)"}
CONVERGED = (1, 2, 5)


@dataclasses.dataclass(frozen=True)
class Objective:
  """What is minimised: a form, the Huber delta, sum or mean, plain Huber or Epoch's likelihood."""
  form: Form
  delta: float = 1e-3
  reduce: str = "sum"
  likelihood: bool = False

  @property
  def n_params(self) -> int:
    return len(self.form.params) + int(self.likelihood)


def huber(xp, r, delta):
  """Huber loss: quadratic within delta, linear outside."""
  absr = xp.abs(r)
  return xp.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))


def _log_normaliser(delta: float) -> float:
  """log of the integral of exp(-Huber_delta(z)) dz over the real line."""
  z = np.sqrt(2 * np.pi) * scipy.special.erf(delta / np.sqrt(2)) + 2 * np.exp(-delta**2 / 2) / delta
  return float(np.log(z))


def objective_value(xp, obj: Objective, theta, inputs: dict, log_l, weights):
  """The objective for theta (P,), or a batch (S, 1, P) giving (S,); xp is numpy or jax.numpy."""
  n_form = len(obj.form.params)
  resid = obj.form.log_loss(theta[..., :n_form], inputs, xp) - log_l
  if obj.likelihood:
    log_sigma = theta[..., n_form]
    terms = (huber(xp, resid * xp.exp(-log_sigma), obj.delta) + log_sigma
             + _log_normaliser(obj.delta))
  else:
    terms = huber(xp, resid, obj.delta)
  total = xp.sum(weights * terms, axis=-1)
  return total / xp.sum(weights) if obj.reduce == "mean" else total


class Result(NamedTuple):
  """Per start: final theta (S, P), objective (S,), status code (S,), iterations (S,)."""
  theta: np.ndarray
  value: np.ndarray
  status: np.ndarray
  iterations: np.ndarray


def _finite(f, g):
  """An overflowing or undefined point reads as +inf with zero gradient: line search backs off."""
  bad = ~jnp.isfinite(f) | ~jnp.all(jnp.isfinite(g))
  return jnp.where(bad, jnp.inf, f), jnp.where(bad, 0.0, g)


def first_status(g0, maxiter, gtol):
  """The status before the first iteration: 1 at a stationary start, 3 with no iterations."""
  return jnp.where(jnp.max(jnp.abs(g0)) <= gtol, 1, jnp.where(maxiter <= 0, 3, 0))


def step_status(ok, f, f_new, g, g_new, k, maxiter, gtol, ftol):
  """The status after iteration k (0: go on); ok: the line search found a sufficient decrease.

  SciPy L-BFGS-B's tests: max|g| <= gtol, f_k - f_k+1 <= ftol * max(|f_k|, |f_k+1|, 1), the
  iteration limit; a failed line search where max|g| <= 1e-6 max(|f|, 1) reads as converged (5)."""
  small_change = f - f_new <= ftol * jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f_new)), 1.0)
  stuck_but_flat = jnp.max(jnp.abs(g)) <= 1e-6 * jnp.maximum(jnp.abs(f), 1.0)
  return jnp.select([~ok & stuck_but_flat, ~ok, jnp.max(jnp.abs(g_new)) <= gtol, small_change,
                     k >= maxiter], [5, 4, 1, 2, 3], 0)


def _lbfgs_one(fun, x0, maxiter, gtol, ftol, memory):
  """One run of `optax.lbfgs` (zoom line search); fun(x) -> f. Returns (x, f, status, iterations).

  A line search that ends without a sufficient decrease (or at a non-finite point) leaves x where
  it was, with status 4 (or 5, `step_status`)."""
  opt = optax.lbfgs(memory_size=memory, linesearch=optax.scale_by_zoom_linesearch(
      max_linesearch_steps=20, initial_guess_strategy="one", approx_dec_rtol=None))
  value_and_grad = optax.value_and_grad_from_state(fun)
  f0, g0 = _finite(*jax.value_and_grad(fun)(x0))

  def body(c):
    x, state, f, g, k, status = c
    # Under vmap a finished run still goes through the body (its result is discarded): a zero
    # gradient ends its line search at the first trial instead of after max_linesearch_steps.
    g_step = jnp.where(status == 0, g, 0.0)
    updates, state = opt.update(g_step, state, x, value=f, grad=g_step, value_fn=fun)
    x_new = optax.apply_updates(x, updates)
    f_new, g_new = value_and_grad(x_new, state=state)
    ok = ((optax.tree.get(state, "info").decrease_error <= 0) & jnp.isfinite(f_new)
          & jnp.all(jnp.isfinite(g_new)))
    x_new, f_new, g_new = (jnp.where(ok, a, b) for a, b in ((x_new, x), (f_new, f), (g_new, g)))
    return (x_new, state, f_new, g_new, k + 1,
            step_status(ok, f, f_new, g, g_new, k + 1, maxiter, gtol, ftol))

  x, _, f, _, k, status = jax.lax.while_loop(
      lambda c: c[5] == 0, body, (x0, opt.init(x0), f0, g0, 0, first_status(g0, maxiter, gtol)))
  return x, f, status, k


@functools.partial(jax.jit, static_argnames=("obj", "maxiter", "gtol", "ftol", "memory"))
def _run_batch(x0_SxP, weights_SxN, inputs, log_l, *, obj, maxiter, gtol, ftol, memory):
  def one(x0, w):
    fun = lambda th: objective_value(jnp, obj, th, inputs, log_l, w)
    return _lbfgs_one(fun, x0, maxiter, gtol, ftol, memory)
  return jax.vmap(one)(x0_SxP, weights_SxN)


def batched(run, obj: Objective, starts, inputs: dict, loss, weights=None, **options) -> Result:
  """run(x0 (S, P), weights (S, n'), inputs, log L, obj=obj, **options) in float64, as a Result.

  The points are padded to a power of two with weight 0, so tables of similar size share one
  compile; weights: (n,) shared or (S, n) per start."""
  starts = np.atleast_2d(np.asarray(starts, np.float64))
  n = len(np.asarray(loss))
  weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
  weights = np.broadcast_to(weights, (len(starts), n))
  pad = max(64, 1 << (n - 1).bit_length()) - n
  padded = lambda v: np.concatenate([np.asarray(v, np.float64), np.ones(pad)])
  weights = np.concatenate([weights, np.zeros((len(starts), pad))], axis=1)
  with jax.enable_x64(True):
    out = run(jnp.asarray(starts), jnp.asarray(weights),
              {k: jnp.asarray(padded(v)) for k, v in inputs.items()},
              jnp.log(jnp.asarray(padded(loss))), obj=obj, **options)
    theta, value, status, iters = (np.asarray(v) for v in jax.block_until_ready(out))
  return Result(theta, np.where(np.isfinite(value), value, np.inf), status, iters)


def lbfgs_jax(obj: Objective, starts, inputs: dict, loss, weights=None, *, maxiter: int = 1000,
              gtol: float = 1e-8, ftol: float = 1e-13, memory: int = 10) -> Result:
  """L-BFGS (`optax.lbfgs`) from every start at once (float64). weights: (n,) or (S, n)."""
  return batched(_run_batch, obj, starts, inputs, loss, weights, maxiter=int(maxiter),
                 gtol=float(gtol), ftol=float(ftol), memory=int(memory))


def prescreen(obj: Objective, starts, inputs: dict, loss, weights=None) -> np.ndarray:
  """The objective at every start, in one vectorised NumPy pass (inf where undefined)."""
  starts = np.atleast_2d(np.asarray(starts, np.float64))
  loss = np.asarray(loss, np.float64)
  weights = np.ones(len(loss)) if weights is None else np.asarray(weights, np.float64)
  inputs = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
  with np.errstate(all="ignore"):
    values = objective_value(np, obj, starts[:, None, :], inputs, np.log(loss), weights)
  return np.where(np.isfinite(values), values, np.inf)


def lbfgs_scipy(obj: Objective, starts, inputs: dict, loss, weights=None, *,
                gradient=None, **options) -> Result:
  """The reference: SciPy L-BFGS-B from each start in turn (default SciPy tolerances).

  gradient(theta) -> (f, g) in NumPy; when None, the value and gradient come from a jitted JAX
  function (float64), which is exact but not what a plain NumPy implementation would pay.
  """
  starts = np.atleast_2d(np.asarray(starts, np.float64))
  loss = np.asarray(loss, np.float64)
  weights = np.ones(len(loss)) if weights is None else np.asarray(weights, np.float64)
  if gradient is None:
    gradient = _jax_value_and_grad(obj, inputs, loss, weights)
  thetas, values, status, iters = [], [], [], []
  for x0 in starts:
    with np.errstate(all="ignore"):
      r = scipy.optimize.minimize(gradient, x0, jac=True, method="L-BFGS-B", options=options)
    thetas.append(r.x)
    values.append(r.fun if np.isfinite(r.fun) else np.inf)
    status.append(1 if r.success else 3)
    iters.append(r.nit)
  return Result(np.array(thetas), np.array(values), np.array(status), np.array(iters))


def _jax_value_and_grad(obj, inputs, loss, weights):
  with jax.enable_x64(True):
    data = {k: jnp.asarray(v, jnp.float64) for k, v in inputs.items()}
    fun = jax.jit(jax.value_and_grad(
        lambda th: objective_value(jnp, obj, th, data, jnp.log(jnp.asarray(loss)),
                                   jnp.asarray(weights))))

  def value_and_grad(theta):
    with jax.enable_x64(True):
      f, g = fun(jnp.asarray(theta, jnp.float64))
    return float(f), np.asarray(g, np.float64)
  return value_and_grad
