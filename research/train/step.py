"""Pure train and eval steps over a train state; jitted with shardings by `compile_steps`."""

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


def train_step(state: TrainState, batch: dict, lr=1.0, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One optimizer step; the optimizer's updates are multiplied by `lr`.

  The loop passes the step's learning rate as an argument (the optimizer is built for a rate of
  1), so the compiled step does not depend on the schedule or the number of steps: runs of one
  model at several token budgets share one compiled step (and the persistent cache entry).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: u * jnp.asarray(lr, u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
