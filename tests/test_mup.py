"""muP (Yang et al. 2022): the coordinate check, per-parameter learning rates, base = standard."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from research.models import transformer
from research.train import optim

WIDTHS = (32, 64, 128, 256)
BASE = 32


def _config(width: int, parametrization: str) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(
      d_model=width, n_layers=2, n_heads=width // 16, d_ff=4 * width, context=16,
      tied_embeddings=False, parametrization=parametrization, mup_base_d_model=BASE,
      mup_base_d_head=16)


def _adam():
  return ml_collections.ConfigDict(dict(b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
                                        grad_clip=0.0))


def _coordinates(parametrization: str, steps: int = 5, lr: float = 1e-2) -> dict:
  """Per width: RMS of the change, after `steps` Adam steps, of the last block's output and of
  the logits. Two 16-token sequences: fewer tokens than the width, the regime muP's limit
  describes (with many more tokens than dimensions the updates of small models are not yet
  aligned with the activations, at either parametrization)."""
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 17)), jnp.int32)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  out = {}
  for width in WIDTHS:
    cfg = _config(width, parametrization)
    params = transformer.init_params(cfg, jax.random.key(0))
    opt = optim.optimizer(_adam(), transformer.lr_multiplier(cfg))
    state = opt.init(params)

    def loss(p):
      logits = transformer.apply(cfg, p, inputs)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def step(p, s):
      updates, s = opt.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, jax.tree.map(lambda u: -lr * u, updates)), s

    def activations(p):
      logits, inter = transformer.Transformer(cfg).apply({"params": p}, inputs,
                                                         capture_intermediates=True)
      return logits, inter["intermediates"][f"block_{cfg.n_layers - 1}"]["__call__"][0]

    logits0, h0 = activations(params)
    for _ in range(steps):
      params, state = step(params, state)
    logits, h = activations(params)
    rms = lambda x: float(jnp.sqrt(jnp.mean(x ** 2)))  # noqa: E731
    out[width] = dict(block=rms(h - h0), logits=rms(logits - logits0))
  return out


@pytest.fixture(scope="module")
def coordinates():
  return {p: _coordinates(p) for p in ("standard", "mup")}


def test_coordinate_check_flat_under_mup_growing_under_standard(coordinates):
  mup, sp = coordinates["mup"], coordinates["standard"]
  block = [mup[w]["block"] for w in WIDTHS]
  assert max(block) / min(block) < 1.3, mup
  # the readout: muP starts it smaller than the base (Table 8), then its updates are width-free
  logits = [mup[w]["logits"] for w in WIDTHS if w > BASE]
  assert max(logits) / min(logits) < 1.3, mup
  assert sp[256]["block"] / sp[32]["block"] > 3, sp
  assert sp[256]["logits"] / sp[64]["logits"] > 2, sp


def test_mup_at_its_base_shape_is_the_standard_parametrization():
  sp, mup = _config(BASE, "standard"), _config(BASE, "mup")
  params = transformer.init_params(sp, jax.random.key(1))
  tokens = jnp.arange(16, dtype=jnp.int32)[None] % 256
  np.testing.assert_array_equal(transformer.apply(sp, params, tokens),
                                transformer.apply(mup, params, tokens))
  assert all(transformer.lr_multiplier(mup)(p) == 1.0 for p in ("block_0/mlp/up/kernel",
                                                                 "embed/embedding"))


def test_learning_rate_multipliers_go_by_parameter_path():
  cfg = _config(4 * BASE, "mup")
  params = transformer.init_params(cfg, jax.random.key(0))
  opt = optim.optimizer(_adam(), transformer.lr_multiplier(cfg))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  flat = {optim.path_name(p): float(jnp.abs(u).mean())
          for p, u in jax.tree_util.tree_leaves_with_path(updates)}
  for path, value in flat.items():
    hidden = path.endswith(transformer.HIDDEN_KERNELS)
    assert value == pytest.approx(0.25 if hidden else 1.0, rel=1e-5), path
  assert sum(p.endswith(transformer.HIDDEN_KERNELS) for p in flat) == 4 * cfg.n_layers


def test_output_multiplier_scales_the_logits_and_embedding_rate_its_own_updates():
  """muP's two knobs that pilot P2 tunes (issue 20): the output multiplier multiplies the
  logits, and the embedding's rate multiplier scales only the input embedding's updates."""
  import dataclasses
  cfg = _config(2 * BASE, "mup")
  tuned = dataclasses.replace(cfg, mup_output_mult=2.0, mup_embed_lr=4.0)
  params = transformer.init_params(cfg, jax.random.key(2))
  tokens = jnp.arange(16, dtype=jnp.int32)[None] % 256
  np.testing.assert_allclose(transformer.apply(tuned, params, tokens),
                             2.0 * transformer.apply(cfg, params, tokens), rtol=1e-5, atol=1e-6)
  base, knob = transformer.lr_multiplier(cfg), transformer.lr_multiplier(tuned)
  assert knob("embed/embedding") == 4.0 * base("embed/embedding")
  for path in ("block_0/mlp/up/kernel", "unembed/kernel", "ln_final/scale"):
    assert knob(path) == base(path)
  sp = dataclasses.replace(_config(2 * BASE, "standard"), mup_embed_lr=4.0)
  assert transformer.lr_multiplier(sp)("embed/embedding") == 1.0  # a muP knob only
