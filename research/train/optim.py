"""Optimizers and learning-rate schedules (optax).

Schedules, each after a linear warmup from 0 to the peak `lr` over `warmup_steps`:
  * constant: the peak until the end.
  * cosine:   cosine decay from the peak to `final_lr_fraction * lr` at the last step.
  * wsd:      warmup-stable-decay (Hu et al. 2024, MiniCPM): the peak, then a cooldown over the
              last `cooldown_fraction` of training shaped 1 - sqrt(t) (Hägele et al. 2024), down to
              `final_lr_fraction * lr`.
"""

import math

import jax
import jax.numpy as jnp
import optax

from research.errors import require

SCHEDULES = ("constant", "cosine", "wsd")


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def validate(train_cfg, num_steps: int) -> None:
  """Every optimizer field in its domain; NaN and infinities never pass."""
  t = train_cfg
  require(t.schedule in SCHEDULES, "train.schedule", t.schedule,
          f"allowed: {', '.join(SCHEDULES)}")
  require(_finite(t.lr) and t.lr > 0, "train.lr", t.lr, "must be a finite number > 0")
  require(0 <= t.warmup_steps <= num_steps, "train.warmup_steps", t.warmup_steps,
          f"must be in [0, number of steps = {num_steps}]")
  require(_finite(t.final_lr_fraction) and 0 <= t.final_lr_fraction <= 1,
          "train.final_lr_fraction", t.final_lr_fraction, "must be in [0, 1]")
  require(_finite(t.cooldown_fraction) and 0 < t.cooldown_fraction <= 1,
          "train.cooldown_fraction", t.cooldown_fraction, "must be in (0, 1]")
  require(_finite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay", t.weight_decay,
          "must be a finite number >= 0")
  require(_finite(t.grad_clip) and t.grad_clip >= 0, "train.grad_clip", t.grad_clip,
          "must be a finite number >= 0 (0 turns clipping off)")
  for name in ("b1", "b2"):  # Adam's moment decays: 1 would never forget, above 1 diverges
    value = t.get(name)
    require(value is None or (_finite(value) and 0 <= value < 1), f"train.{name}", value,
            "must be in [0, 1)")
  eps = t.get("eps")
  require(eps is None or (_finite(eps) and eps > 0), "train.eps", eps,
          "must be a finite number > 0")


def schedule(train_cfg, num_steps: int) -> optax.Schedule:
  peak, warmup = train_cfg.lr, train_cfg.warmup_steps
  floor = peak * train_cfg.final_lr_fraction
  rest = num_steps - warmup
  if train_cfg.schedule == "constant":
    tail = optax.constant_schedule(peak)
  elif train_cfg.schedule == "cosine":
    tail = optax.cosine_decay_schedule(peak, max(rest, 1), alpha=train_cfg.final_lr_fraction)
  else:
    cooldown = max(1, round(train_cfg.cooldown_fraction * num_steps))
    stable = max(rest - cooldown, 0)

    def tail(step):
      t = jnp.clip((step - stable) / cooldown, 0.0, 1.0)
      return floor + (peak - floor) * (1.0 - jnp.sqrt(t))

  if warmup == 0:
    return tail
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), tail], [warmup])


def decay_mask(params):
  """Weight decay on matrices (kernels and embeddings), not on norm scales or biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def path_name(path) -> str:
  """'block_0/mlp/up/kernel' for a pytree key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def scale_by_path(multiplier) -> optax.GradientTransformation:
  """Multiply each parameter's update by `multiplier(path_name)` (per-parameter learning rates,
  e.g. muP's): an optax partition with one `optax.scale` per distinct multiplier."""

  def labels(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: repr(float(multiplier(path_name(p)))),
                                            params)

  def transforms(params):
    return {label: optax.scale(float(label)) for label in set(jax.tree.leaves(labels(params)))}

  def init(params):
    return optax.multi_transform(transforms(params), labels).init(params)

  def update(updates, state, params=None):
    return optax.multi_transform(transforms(updates), labels).update(updates, state, params)

  return optax.GradientTransformation(init, update)


def optimizer(train_cfg, lr_multiplier=None) -> optax.GradientTransformation:
  """AdamW (decoupled weight decay on matrices) with clipping, for a learning rate of 1.

  The loop multiplies its updates by `schedule(...)(step)` (see research.train.step.train_step),
  which is AdamW with that learning rate: -lr (adam + wd p). `lr_multiplier(path)` scales each
  parameter's rate (decay included, as in mup's MuAdamW); None: 1 for every parameter.
  """
  adamw = optax.adamw(1.0, b1=train_cfg.b1, b2=train_cfg.b2,
                      eps=train_cfg.eps, weight_decay=train_cfg.weight_decay, mask=decay_mask)
  parts = [adamw]
  if train_cfg.grad_clip > 0:
    parts.insert(0, optax.clip_by_global_norm(train_cfg.grad_clip))
  if lr_multiplier is not None:
    parts.append(scale_by_path(lr_multiplier))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)
