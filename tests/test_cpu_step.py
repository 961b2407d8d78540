"""The CPU step settings (research.train.loop.cpu_slices, the recipe's compiler options, the
"auto" attention's 32-query blocks and element-wise scores) change the order of float sums, not
the model: 100 steps of a model-ladder rung give the same losses and parameters as the step
without them (benchmarks/ladder_speed.py's "today")."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config as config_lib
from research.models import attention
from research.recipes import lm
from research.train import loop
from research.train import run as run_lib

# A ladder rung's shape (head size 4, context 128, batch 16) on one device of the fake eight.
RUNG = ["model.d_model=16", "model.n_heads=4", "model.d_ff=64", "model.n_layers=1",
        "model.context=128", "train.seq_len=128", "train.batch_size=16", "mesh.data=1",
        "train.tokens=204800"]


def _train(overrides, cpu_tuned):
  cfg, study = config_lib.load("experiments/lm.py:smoke", RUNG + overrides)
  recipe, spec = run_lib.prepare(cfg, study)
  s = loop.setup(recipe, spec, cpu_tuned=cpu_tuned)
  losses = []
  with jax.set_mesh(s.mesh):
    state = jax.jit(s.make_state, out_shardings=s.state_sharding)()
    for step, lr in enumerate(loop.learning_rates(recipe)):
      state, metrics = s.step(state, loop.put_batch(recipe.train_batch(step), s.batch_sharding),
                              lr)
      losses.append(metrics["loss"])
  return np.asarray(jax.device_get(losses)), jax.device_get(state.params), s, cfg


def test_the_tuned_cpu_step_trains_the_same_model_as_the_plain_one():
  plain, plain_params, s_plain, _ = _train(["model.attention=blocked"], cpu_tuned=False)
  tuned, tuned_params, s_tuned, cfg = _train([], cpu_tuned=True)
  assert len(tuned) == 100
  # slices of 2 x 128 tokens on one thread, 8 x 128 on two (this process's cores)
  threads = len(os.sched_getaffinity(0))
  assert s_plain.microbatches == 1
  assert s_tuned.microbatches == {1: 8, 2: 2}.get(threads, 1)
  assert lm.transformer.blocked_plan(lm.model_config(cfg), 128) == (4, True)
  np.testing.assert_allclose(tuned, plain, rtol=1e-5)
  assert plain[-1] < plain[0] - 1.0  # it trained
  for got, want in zip(jax.tree.leaves(tuned_params), jax.tree.leaves(plain_params)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_chunks", [1, 4])
def test_elementwise_scores_equal_the_batched_dots(n_chunks):
  keys = jax.random.split(jax.random.key(1), 4)
  q, k, v, w = (jax.random.normal(key, (2, 3, 32, 4)) for key in keys)

  def value_and_grads(elementwise):
    f = functools.partial(attention.causal_attention, n_chunks=n_chunks,
                          elementwise_scores=elementwise)
    return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(f(q, k, v) * w),
                                      argnums=(0, 1, 2)))(q, k, v)

  (value, grads), (ref_value, ref_grads) = value_and_grads(True), value_and_grads(False)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cpu_slices_divide_each_devices_rows():
  recipe = type("R", (), {"slice_rows": 2})()
  assert loop.cpu_slices(recipe, 16, "cpu") == 8
  assert loop.cpu_slices(recipe, 6, "cpu") == 3
  assert loop.cpu_slices(recipe, 3, "cpu") == 1     # no divisor leaves slices of >= 2 rows
  assert loop.cpu_slices(recipe, 16, "gpu") == 1
  assert loop.cpu_slices(type("R", (), {"slice_rows": 0})(), 16, "cpu") == 1
  assert loop.cpu_slices(recipe, 16, "cpu", threads=2) == 2  # slices of >= 2 x 2^2 rows
  assert loop.cpu_slices(recipe, 16, "cpu", threads=4) == 1
