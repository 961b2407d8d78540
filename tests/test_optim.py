"""Learning-rate schedules: warmup, then constant / cosine to a floor / WSD with a 1-sqrt cooldown."""

import ml_collections
import numpy as np
import pytest

from research.errors import ConfigError
from research.train import optim


def train_cfg(**kw):
  base = dict(lr=1.0, schedule="constant", warmup_steps=10, final_lr_fraction=0.1,
              cooldown_fraction=0.2, weight_decay=0.1, grad_clip=1.0, b1=0.9, b2=0.95, eps=1e-8)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def values(cfg, steps=100):
  fn = optim.schedule(cfg, steps)
  return np.array([float(fn(s)) for s in range(steps + 1)])


def test_linear_warmup_then_constant():
  lr = values(train_cfg())
  np.testing.assert_allclose(lr[:11], np.linspace(0, 1, 11), atol=1e-6)
  np.testing.assert_allclose(lr[10:], 1.0)


def test_cosine_decays_monotonically_to_the_floor():
  lr = values(train_cfg(schedule="cosine"))
  assert np.all(np.diff(lr[10:]) <= 1e-7)
  assert lr[100] == pytest.approx(0.1, abs=1e-6)
  assert lr[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-2)  # half way: half the range


def test_wsd_is_flat_then_cools_down_as_one_minus_sqrt():
  lr = values(train_cfg(schedule="wsd", cooldown_fraction=0.2))
  np.testing.assert_allclose(lr[10:81], 1.0, atol=1e-6)          # stable phase
  t = (np.arange(80, 101) - 80) / 20
  np.testing.assert_allclose(lr[80:], 0.1 + 0.9 * (1 - np.sqrt(t)), atol=1e-6)


def test_no_warmup():
  assert values(train_cfg(warmup_steps=0))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("field,value", [("schedule", "linear"), ("lr", -1.0),
                                          ("warmup_steps", 101), ("final_lr_fraction", 2.0)])
def test_bad_schedule_fields(field, value):
  with pytest.raises(ConfigError, match=f"train.{field}"):
    optim.validate(train_cfg(**{field: value}), 100)


def test_weight_decay_mask_spares_vectors():
  mask = optim.decay_mask({"kernel": np.zeros((2, 2)), "scale": np.zeros(2)})
  assert mask == {"kernel": True, "scale": False}


def _tiny_problem():
  import jax.numpy as jnp
  params = {"kernel": jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32),
            "scale": jnp.ones(3, jnp.float32)}

  def loss_fn(p, batch, rng):
    del rng
    return jnp.mean((batch["x"] @ p["kernel"] * p["scale"] - 1.0) ** 2), {}

  batch = {"x": jnp.asarray(np.random.default_rng(1).standard_normal((8, 4)), jnp.float32)}
  return params, loss_fn, batch


def test_host_learning_rate_equals_adamw_with_its_schedule():
  """optimizer() at rate 1, scaled by the host's schedule table, is optax AdamW with the
  schedule inside, bit for bit."""
  import functools
  import jax
  import optax
  from research.train import loop
  from research.train.recipe import Recipe
  from research.train.step import init_state, train_step
  cfg, steps = train_cfg(schedule="cosine", lr=3e-3, warmup_steps=3), 12
  params, loss_fn, batch = _tiny_problem()
  reference = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(
      optim.schedule(cfg, steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
      weight_decay=cfg.weight_decay, mask=optim.decay_mask))
  recipe = Recipe(init=lambda rng: params, loss=loss_fn, train_batch=None, num_steps=steps,
                  batch_size=8, optimizer=optim.optimizer(cfg), flops_per_unit=1.0,
                  lr_schedule=optim.schedule(cfg, steps))
  lrs = loop.learning_rates(recipe)
  ours = init_state(recipe.init, recipe.optimizer, 0)
  theirs = init_state(recipe.init, reference, 0)
  step_ours = jax.jit(functools.partial(train_step, loss_fn=loss_fn, optimizer=recipe.optimizer))
  step_theirs = jax.jit(functools.partial(train_step, loss_fn=loss_fn, optimizer=reference))
  for s in range(steps):
    ours, _ = step_ours(ours, batch, lrs[s])
    theirs, _ = step_theirs(theirs, batch)
  for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(lrs[[0, 3, 11]], [0.0, 3e-3, float(optim.schedule(cfg, steps)(11))])


def test_compiled_step_does_not_depend_on_the_schedule():
  """Two token budgets of one model in sweep-smoke lower to the same train step, so the sweep
  compiles it once (the persistent cache serves the other budget)."""
  import functools
  import os
  import jax
  import jax.numpy as jnp
  from research import config as config_lib
  from research.train.step import init_state, train_step
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sweep_cfg, lm = config_lib.load(os.path.join(repo, "experiments/lm.py:sweep-smoke"))
  runs = [r for r in lm.plan(sweep_cfg) if r.model.d_model == 16]
  assert len({r.train.tokens for r in runs}) == 2
  texts = []
  for run in runs:
    recipe = lm.recipe(run)
    state = jax.eval_shape(functools.partial(init_state, recipe.init, recipe.optimizer, 0))
    batch = jax.tree.map(jnp.asarray, recipe.train_batch(0))
    step = jax.jit(functools.partial(train_step, loss_fn=recipe.loss, optimizer=recipe.optimizer))
    texts.append(step.lower(state, batch, np.float32(0.5)).as_text())
  assert texts[0] == texts[1]


def test_the_loop_gets_one_rate_per_step_from_a_constant_schedule():
  """optax's constant schedule gives one scalar for any steps; the loop indexes a rate per step
  (a constant-rate run without warmup crashed at its first step before this)."""
  from research.train import loop
  from research.train.recipe import Recipe
  cfg = train_cfg(schedule="constant", warmup_steps=0, lr=0.5)
  recipe = Recipe(init=None, loss=None, train_batch=None, num_steps=7, batch_size=1,
                  optimizer=optim.optimizer(cfg), flops_per_unit=1.0,
                  lr_schedule=optim.schedule(cfg, 7))
  np.testing.assert_array_equal(loop.learning_rates(recipe), np.full(7, 0.5, np.float32))
