"""Minimising a Huber objective on log L from many starts: batched L-BFGS in JAX, SciPy reference.

The objective (Hoffmann et al. 2022, App. D.2; Besiroglu et al. 2024) is

    sum_i w_i Huber_delta(log L_hat(theta; x_i) - log L_i)

with per-point weights w (bootstrap resamples are multinomial counts, so a resample never changes
array shapes) and `reduce="mean"` dividing by sum(w) instead. `likelihood=True` is Epoch's variant:
the negative log-likelihood of residuals under a Huber density with a fitted scale sigma (theta
gains a last entry, log sigma).

`lbfgs_jax` runs every start at once: one L-BFGS per start with an Armijo backtracking line
search, vmapped, float64, jitted; a start that has converged stops moving. Stopping follows SciPy's
L-BFGS-B: max|g| <= gtol, or f_k - f_k+1 <= ftol * max(|f_k|, |f_k+1|, 1). `lbfgs_scipy` is the
straightforward reference (one start after another, analytic gradient).
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


def _lbfgs_one(fun, x0, maxiter, gtol, ftol, memory, max_backtracks=30):
  """One L-BFGS run; fun(x) -> (f, g). Returns (x, f, status, iterations)."""
  value_and_grad = lambda x: _finite(*fun(x))
  f0, g0 = value_and_grad(x0)
  p = x0.shape[0]
  init = dict(x=x0, f=f0, g=g0, s=jnp.zeros((memory, p), x0.dtype),
              y=jnp.zeros((memory, p), x0.dtype), rho=jnp.zeros((memory,), x0.dtype),
              head=0, n_mem=0, k=0,
              status=jnp.where(jnp.max(jnp.abs(g0)) <= gtol, 1, jnp.where(maxiter <= 0, 3, 0)))

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
    small_change = f - f_new <= ftol * jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f_new)), 1.0)
    stuck_but_flat = jnp.max(jnp.abs(g)) <= 1e-6 * jnp.maximum(jnp.abs(f), 1.0)
    status = jnp.select([~ok & stuck_but_flat, ~ok, jnp.max(jnp.abs(g_new)) <= gtol, small_change,
                         k >= maxiter], [5, 4, 1, 2, 3], 0)
    return dict(
        x=x_new, f=f_new, g=g_new,
        s=jnp.where(store, st["s"].at[head].set(s), st["s"]),
        y=jnp.where(store, st["y"].at[head].set(y), st["y"]),
        rho=jnp.where(store, st["rho"].at[head].set(1.0 / jnp.where(store, sy, 1.0)), st["rho"]),
        head=jnp.where(store, (head + 1) % memory, head),
        n_mem=jnp.where(store, jnp.minimum(st["n_mem"] + 1, memory), st["n_mem"]),
        k=k, status=status)

  out = jax.lax.while_loop(lambda st: st["status"] == 0, body, init)
  return out["x"], out["f"], out["status"], out["k"]


def _finite(f, g):
  """An overflowing or undefined point reads as +inf with zero gradient: line search backs off."""
  bad = ~jnp.isfinite(f) | ~jnp.all(jnp.isfinite(g))
  return jnp.where(bad, jnp.inf, f), jnp.where(bad, 0.0, g)


@functools.partial(jax.jit, static_argnames=("obj", "maxiter", "gtol", "ftol", "memory"))
def _run_batch(x0_SxP, weights_SxN, inputs, log_l, *, obj, maxiter, gtol, ftol, memory):
  def one(x0, w):
    fun = jax.value_and_grad(lambda th: objective_value(jnp, obj, th, inputs, log_l, w))
    return _lbfgs_one(fun, x0, maxiter, gtol, ftol, memory)
  return jax.vmap(one)(x0_SxP, weights_SxN)


def lbfgs_jax(obj: Objective, starts, inputs: dict, loss, weights=None, *, maxiter: int = 1000,
              gtol: float = 1e-8, ftol: float = 1e-13, memory: int = 10) -> Result:
  """L-BFGS from every start at once (float64). weights: (n,) shared or (S, n) per start."""
  starts = np.atleast_2d(np.asarray(starts, np.float64))
  n = len(np.asarray(loss))
  weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
  weights = np.broadcast_to(weights, (len(starts), n))
  # Pad the points to a power of two with weight 0, so tables of similar size share one compile.
  pad = max(64, 1 << (n - 1).bit_length()) - n
  padded = lambda v: np.concatenate([np.asarray(v, np.float64), np.ones(pad)])
  weights = np.concatenate([weights, np.zeros((len(starts), pad))], axis=1)
  with jax.enable_x64(True):
    out = _run_batch(jnp.asarray(starts), jnp.asarray(weights),
                     {k: jnp.asarray(padded(v)) for k, v in inputs.items()},
                     jnp.log(jnp.asarray(padded(loss))),
                     obj=obj, maxiter=int(maxiter), gtol=float(gtol), ftol=float(ftol),
                     memory=int(memory))
    theta, value, status, iters = (np.asarray(v) for v in jax.block_until_ready(out))
  return Result(theta, np.where(np.isfinite(value), value, np.inf), status, iters)


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
