"""GELU with a hand-written backward that saves only its input.

Autodiff of the tanh-approximate GELU keeps tanh(...) as an extra [B*L, F] array: XLA CPU
writes it in one loop, the activation in a second loop, and reads it back in the backward.
On the 2-core CPU of benchmarks/train_throughput.py the backward recomputes tanh from the
input instead: one fused loop forward where XLA wrote two (about 30 ms less loop time per
d_model-256 train step in the profile), one loop backward, and one [B*L, F] activation fewer
kept for the backward. The forward is the formula of `jax.nn.gelu(approximate=True)`, bit for
bit.
"""

import math

import jax
import jax.numpy as jnp

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu_cdf(x):
  return 0.5 * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x ** 3))))


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """GELU, tanh approximation (Hendrycks & Gimpel 2016), as jax.nn.gelu(approximate=True)."""
  return x * _gelu_cdf(x)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, dy):
  x = jax.lax.optimization_barrier(x)  # else XLA CSEs this tanh with the forward's, keeping it
  t = jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x ** 3)))
  dt_dx = (1.0 - t * t) * (_SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x))
  return (dy * (0.5 * (1.0 + t) + 0.5 * x * dt_dx),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
