"""Language-model losses and evaluation: nats per token and bits per byte."""

import math

import jax
import jax.numpy as jnp


def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """Negative log-likelihood (nats) of each target token, float32[B, L]."""
  logz_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  picked_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  return logz_BxL - picked_BxL


def lm_loss(apply_fn):
  """loss(params, batch, rng) -> (weighted mean nats/token, {"units": weight sum}): the loop's
  units are tokens."""

  def loss(params, batch, rng):
    del rng
    nll_BxL = token_nll(apply_fn(params, batch["inputs"]), batch["targets"])
    weights_BxL = batch["weights"]
    tokens = jnp.sum(weights_BxL)
    return jnp.sum(nll_BxL * weights_BxL) / jnp.maximum(tokens, 1.0), {"units": tokens}

  return loss


def loss_evaluator(apply_fn, batches: list[dict], bytes_per_token: float, prefix: str = "val"):
  """An evaluator params -> {prefix_loss (nats/token), prefix_bpb (bits per byte)} on fixed batches."""

  @jax.jit
  def sums(params, batch):
    nll_BxL = token_nll(apply_fn(params, batch["inputs"]), batch["targets"])
    return jnp.sum(nll_BxL * batch["weights"]), jnp.sum(batch["weights"])

  def evaluate(params) -> dict:
    total, count = 0.0, 0.0
    for batch in batches:
      s, c = jax.device_get(sums(params, batch))
      total, count = total + float(s), count + float(c)
    nats = total / max(count, 1.0)
    return {f"{prefix}_loss": nats, f"{prefix}_bpb": nats / math.log(2) / bytes_per_token,
            f"{prefix}_tokens": count}

  return evaluate
