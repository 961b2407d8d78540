"""Pure train steps over a train state, with gradient accumulation over microbatches; the loop
jits them with shardings (research/train/loop.py)."""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

# loss_fn(params, batch, rng) -> (mean loss, aux dict of scalars)
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array   # raw uint32 key data, so that checkpoints hold a plain array


def init_state(init_fn, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  init_rng, train_rng = jax.random.split(jax.random.key(seed))
  params = init_fn(init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=jax.random.key_data(train_rng))


def split_microbatches(batch: dict, microbatches: int) -> dict:
  """Every leaf [B, ...] -> [microbatches, B / microbatches, ...], microbatch m holding rows
  m, m + microbatches, m + 2 microbatches, ...: the batch is split over devices in contiguous
  rows, so every device keeps its share of every microbatch and nothing moves between them."""

  def split(x):
    return x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)

  return jax.tree.map(split, batch)


def loss_and_grads(loss_fn: LossFn, params, batch: dict, rng: jax.Array,
                   microbatches: int = 1) -> tuple[jax.Array, dict, Any]:
  """(loss, aux, gradients) of the whole batch, computed over `microbatches` slices of it in
  turn (gradient accumulation in a `lax.scan`), so that the activations kept for the backward
  are one slice's.

  The loss is a mean over the batch's units and aux["units"] counts them (the loop's
  convention; without it every slice counts the same). Slices are weighted by their count, so
  the result is the whole batch's even when the slices count differently (a padded last batch):
  the loss, its gradients and the other aux metrics are count-weighted means, aux["units"] the
  sum. Slice m's loss gets the rng fold_in(rng, m).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (loss, aux), grads = grad_fn(params, batch, rng)
    return loss, aux, grads
  slices = split_microbatches(batch, microbatches)

  def accumulate(carry, inputs):
    m, piece = inputs
    (loss, aux), grads = grad_fn(params, piece, jax.random.fold_in(rng, m))
    aux = dict(aux)
    count = jnp.asarray(aux.pop("units", 1.0), jnp.float32)
    sums = jax.tree.map(lambda x: x * count.astype(x.dtype), (loss, aux, grads))
    return jax.tree.map(jnp.add, carry, (count, sums)), None

  loss_shape, aux_shape = jax.eval_shape(loss_fn, params, jax.tree.map(lambda x: x[0], slices),
                                         rng)
  aux_shape = dict(aux_shape)
  counted = aux_shape.pop("units", None) is not None
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       (jax.ShapeDtypeStruct((), jnp.float32), (loss_shape, aux_shape, params)))
  (count, (loss, aux, grads)), _ = jax.lax.scan(
      accumulate, zeros, (jnp.arange(microbatches, dtype=jnp.int32), slices))
  scale = 1.0 / jnp.where(count > 0, count, 1.0)
  loss, aux, grads = jax.tree.map(lambda x: x * scale.astype(x.dtype), (loss, aux, grads))
  return loss, ({**aux, "units": count} if counted else aux), grads


def train_step(state: TrainState, batch: dict, lr=1.0, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation,
               microbatches: int = 1) -> tuple[TrainState, dict]:
  """One optimizer step over the batch, in `microbatches` slices (`loss_and_grads`); the
  optimizer's updates are multiplied by `lr`.

  The loop passes the step's learning rate as an argument (the optimizer is built for a rate of
  1), so the compiled step does not depend on the schedule or the number of steps: runs of one
  model at several token budgets share one compiled step (and the persistent cache entry).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  loss, aux, grads = loss_and_grads(loss_fn, state.params, batch, rng, microbatches)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: u * jnp.asarray(lr, u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
