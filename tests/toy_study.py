"""A study that is not a language model: linear regression through the same run / sweep path.

It proves that `launch` and `research/train` assume no model (the study contract), and it trains
in a fraction of a second, so the sweep's failure handling can be tested quickly. Environment
switches make chosen runs misbehave without changing their configs (so a later launch of the
same plan retries them): TOY_FAIL_WIDTH raises at step 3, TOY_DIE_WIDTH kills the process.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from research import config as config_lib
from research import store
from research.errors import require
from research.fileio import atomic_write_text
from research.train.recipe import Recipe, Report

PRESETS = ("one", "sweep", "sweep-dup")


def get_config(preset: str = "one") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(width=8))
  c.train = ml_collections.ConfigDict(dict(batch_size=8, steps=20, lr=0.05))
  config_lib.run_groups(c, log_every=1, eval_every=1000, checkpoint_every=5, keep_checkpoints=2)
  c.loop.async_checkpoints = False
  c.tracking.update(progress=False, flop_convention="6N", peak_flops=1e11)
  if preset in ("sweep", "sweep-dup"):
    c.sweep = ml_collections.ConfigDict(dict(widths=(4, 8, 16), duplicate=preset == "sweep-dup"))
  return c


def validate(c) -> None:
  require(c.model.width >= 1, "model.width", c.model.width, "must be a positive integer")
  require(c.train.steps >= 1, "train.steps", c.train.steps, "must be a positive integer")


def _batch(width: int, step: int, batch_size: int) -> dict:
  rng = np.random.default_rng([width, step])
  x = rng.standard_normal((batch_size, width)).astype(np.float32)
  w_true = np.linspace(-1.0, 1.0, width, dtype=np.float32)
  return {"x": x, "y": x @ w_true}


def recipe(c) -> Recipe:
  width, steps, batch_size = c.model.width, c.train.steps, c.train.batch_size

  def train_batch(step: int) -> dict:
    if step == 3 and os.environ.get("TOY_FAIL_WIDTH") == str(width):
      raise RuntimeError(f"toy failure at step {step}")
    if step == 3 and os.environ.get("TOY_DIE_WIDTH") == str(width):
      os._exit(9)
    return _batch(width, step, batch_size)

  def loss(params, batch, rng):
    del rng
    err = batch["x"] @ params["w"] - batch["y"]
    return jnp.mean(err ** 2), {"units": jnp.asarray(batch["x"].shape[0], jnp.float32)}

  val = _batch(width, 10**6, 64)  # a held-out batch: no training step has this index
  val_loss = jax.jit(lambda p: loss(p, val, None)[0])
  return Recipe(
      init=lambda rng: {"w": jnp.zeros((width,), jnp.float32)},
      loss=loss, train_batch=train_batch, num_steps=steps, batch_size=batch_size,
      optimizer=optax.sgd(c.train.lr), flops_per_unit=6.0 * width,
      evaluators=[lambda params: {"val_loss": float(val_loss(params))}],
      facts={"params_total": width, "params_non_embedding": width, "flop_convention": "6N"},
      report=Report(metrics=(("final_val_loss", "val mse   ", ""),), curves=("val_loss",),
                    unit="examples", loss_label="mse"))


def plan(c) -> list[ml_collections.ConfigDict]:
  widths = list(c.sweep.widths) + ([c.sweep.widths[0]] if c.sweep.duplicate else [])
  runs = []
  for width in widths:
    run = config_lib.from_dict({k: v for k, v in config_lib.to_dict(c).items() if k != "sweep"})
    with run.unlocked():
      run.model.width = width
    runs.append(run)
  return runs


def size(c) -> dict:
  d = c.train.steps * c.train.batch_size
  return dict(N=c.model.width, N_nonemb=c.model.width, D=d, C=6.0 * c.model.width * d,
              flop_convention="6N", steps=c.train.steps)


def analyze(workdir: str) -> dict:
  path = os.path.join(workdir, store.RUNS_CSV)
  atomic_write_text(path, store.table(workdir).to_csv(index=False))
  return {"runs.csv": path}
