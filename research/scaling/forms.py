"""Scaling-law forms, each written once in log space for NumPy and jax.numpy alike.

A form maps a parameter vector `theta` (log-parametrised where a constant is positive) and a
dict of inputs (`N` parameters, `D` tokens, `X` a generic scale, `U` unique tokens) to log L.
Writing log L as a log-sum-exp of its terms keeps the Huber-on-log-loss objective smooth and
finite for any start (Hoffmann et al. 2022, App. D.2).

Forms:
  power        L = A X^-alpha                                   theta = (a, alpha)
  saturating   L = E + A X^-alpha                               theta = (a, e, alpha)
  kaplan       L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D   theta = (n_c, d_c, alpha_N,
                                                                   alpha_D)
  hoffmann     L = E + A/N^alpha + B/D^beta                     theta = (a, b, e, alpha, beta)
  muennighoff  hoffmann with N', D' for repeated data            theta = hoffmann + (r_n, r_d)
Lower-case a, b, e, n_c, d_c, r_n, r_d are natural logs of A, B, E, N_c, D_c, R_N*, R_D*.
"""

import dataclasses
import itertools
from typing import Any, Callable

import numpy as np


def lse(xp, *terms):
  """log(sum(exp(terms))) for broadcastable arrays, stable for any magnitudes."""
  terms = xp.broadcast_arrays(*terms)
  m = terms[0]
  for t in terms[1:]:
    m = xp.maximum(m, t)
  return m + xp.log(sum(xp.exp(t - m) for t in terms))


def _power(xp, theta, x):
  return theta[..., 0] - theta[..., 1] * xp.log(x["X"])


def _saturating(xp, theta, x):
  a, e, alpha = theta[..., 0], theta[..., 1], theta[..., 2]
  return lse(xp, a - alpha * xp.log(x["X"]), e)


def _kaplan(xp, theta, x):
  n_c, d_c, alpha_n, alpha_d = (theta[..., i] for i in range(4))
  inner = lse(xp, alpha_n / alpha_d * (n_c - xp.log(x["N"])), d_c - xp.log(x["D"]))
  return alpha_d * inner


def _hoffmann_logs(xp, theta, log_n, log_d):
  a, b, e, alpha, beta = (theta[..., i] for i in range(5))
  return lse(xp, a - alpha * log_n, b - beta * log_d, e)


def _hoffmann(xp, theta, x):
  return _hoffmann_logs(xp, theta, xp.log(x["N"]), xp.log(x["D"]))


def _effective(xp, unique, total, log_r_star):
  """U + U R* (1 - exp(-R / R*)) with R = total / U - 1 (Muennighoff et al. 2023, eq. 5)."""
  r_star = xp.exp(log_r_star)
  repeats = total / unique - 1.0
  return unique + unique * r_star * (1.0 - xp.exp(-repeats / r_star))


def _muennighoff(xp, theta, x):
  a, b, alpha, beta = theta[..., 0], theta[..., 1], theta[..., 3], theta[..., 4]
  n, d, u_d = x["N"], x["D"], x["U"]
  u_d = xp.minimum(u_d, d)
  d_eff = _effective(xp, u_d, d, theta[..., 6])
  # U_N: the compute-optimal size for U_D tokens on the Hoffmann frontier, capped at N.
  log_g = (xp.log(alpha) + a - xp.log(beta) - b) / (alpha + beta)
  log_n_opt = log_g + (beta / alpha) * (log_g + xp.log(u_d))
  u_n = xp.minimum(n, xp.exp(log_n_opt))
  n_eff = _effective(xp, u_n, n, theta[..., 5])
  return _hoffmann_logs(xp, theta, xp.log(n_eff), xp.log(d_eff))


def _grid(*axes) -> np.ndarray:
  return np.array(list(itertools.product(*axes)), dtype=np.float64)


HOFFMANN_GRID = dict(
    a=np.arange(0.0, 30.0, 5.0), b=np.arange(0.0, 30.0, 5.0), e=np.arange(-1.0, 1.5, 0.5),
    alpha=np.arange(0.0, 2.5, 0.5), beta=np.arange(0.0, 2.5, 0.5))


@dataclasses.dataclass(frozen=True, eq=False)
class Form:
  """A law: parameter names, the inputs it reads, log L, and a default grid of starts.

  theta's last axis holds the parameters; theta (S, 1, P) against inputs (n,) gives (S, n).
  """
  name: str
  params: tuple[str, ...]
  inputs: tuple[str, ...]
  log_loss_fn: Callable[..., Any]
  grid_axes: dict
  formula: str

  def log_loss(self, theta, inputs: dict, xp=np):
    """log L for theta (..., P) broadcast against inputs; xp is numpy or jax.numpy."""
    return self.log_loss_fn(xp, theta, inputs)

  def loss(self, theta, inputs: dict) -> np.ndarray:
    return np.exp(self.log_loss_fn(np, np.asarray(theta, np.float64),
                                   {k: np.asarray(v, np.float64) for k, v in inputs.items()}))

  def grid(self) -> np.ndarray:
    """(starts, P) initial points: the product of the per-parameter axes."""
    return _grid(*(self.grid_axes[p] for p in self.params))

  def natural(self, theta) -> dict:
    """Named constants: log-parametrised ones (a, b, e, ...) exponentiated to A, B, E, ..."""
    out = {}
    for name, value in zip(self.params, np.asarray(theta, np.float64)):
      out[NATURAL_NAMES.get(name, name)] = float(np.exp(value) if name in NATURAL_NAMES else value)
    return out


NATURAL_NAMES = {"a": "A", "b": "B", "e": "E", "n_c": "N_c", "d_c": "D_c",
                 "r_n": "R_N*", "r_d": "R_D*"}

FORMS = {
    "power": Form("power", ("a", "alpha"), ("X",), _power,
                  dict(a=np.arange(0.0, 30.0, 5.0), alpha=np.arange(0.0, 2.5, 0.5)),
                  "L = A X^-alpha"),
    "saturating": Form("saturating", ("a", "e", "alpha"), ("X",), _saturating,
                       dict(a=np.arange(0.0, 30.0, 5.0), e=np.arange(-1.0, 1.5, 0.5),
                            alpha=np.arange(0.0, 2.5, 0.5)),
                       "L = E + A X^-alpha"),
    "kaplan": Form("kaplan", ("n_c", "d_c", "alpha_n", "alpha_d"), ("N", "D"), _kaplan,
                   dict(n_c=np.arange(15.0, 40.0, 5.0), d_c=np.arange(15.0, 40.0, 5.0),
                        alpha_n=np.array([0.05, 0.1, 0.2, 0.4, 0.8]),
                        alpha_d=np.array([0.05, 0.1, 0.2, 0.4, 0.8])),
                   "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"),
    "hoffmann": Form("hoffmann", ("a", "b", "e", "alpha", "beta"), ("N", "D"), _hoffmann,
                     HOFFMANN_GRID, "L = E + A/N^alpha + B/D^beta"),
    "muennighoff": Form("muennighoff", ("a", "b", "e", "alpha", "beta", "r_n", "r_d"),
                        ("N", "D", "U"), _muennighoff,
                        dict(HOFFMANN_GRID, alpha=np.arange(0.5, 2.5, 0.5),
                             beta=np.arange(0.5, 2.5, 0.5), r_n=np.array([0.0, 1.5, 3.0]),
                             r_d=np.array([0.0, 1.5, 3.0])),
                        "L = E + A/N'^alpha + B/D'^beta, D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*))"),
}


def get_form(name: str) -> Form:
  from research.errors import UserError
  if name not in FORMS:
    raise UserError(f"law form {name!r} is unknown: choose one of {', '.join(FORMS)}")
  return FORMS[name]


def hoffmann_frontier(theta, flops, flops_per_param_token: float = 6.0) -> dict:
  """Compute-optimal N, D on L = E + A/N^alpha + B/D^beta under C = k N D (k = 6 by default).

  N_opt = G (C/k)^a_exp, D_opt = G^-1 (C/k)^b_exp, G = (alpha A / (beta B))^(1/(alpha+beta)),
  a_exp = beta/(alpha+beta), b_exp = alpha/(alpha+beta) (Hoffmann et al. 2022, eq. 4).
  """
  a, b, _, alpha, beta = (float(v) for v in np.asarray(theta)[:5])
  with np.errstate(invalid="ignore", divide="ignore"):  # no frontier unless alpha, beta > 0
    log_g = (np.log(alpha) + a - np.log(beta) - b) / (alpha + beta)
  a_exp, b_exp = beta / (alpha + beta), alpha / (alpha + beta)
  log_c = np.log(np.asarray(flops, np.float64) / flops_per_param_token)
  n_opt = np.exp(log_g + a_exp * log_c)
  d_opt = np.exp(-log_g + b_exp * log_c)
  return dict(G=float(np.exp(log_g)), a=a_exp, b=b_exp, N_opt=n_opt, D_opt=d_opt,
              tokens_per_param=d_opt / n_opt)
