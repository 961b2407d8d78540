"""Analytic parameter and FLOP counts against the real parameter tree and XLA's own count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import accounting
from research.evals import lm as lm_evals
from research.models import transformer
from research.train.step import init_state, train_step

CONFIGS = [
    transformer.TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256, context=64),
    transformer.TransformerConfig(d_model=48, n_layers=3, n_heads=3, d_ff=100, context=32,
                                  positions="learned", norm="layernorm", tied_embeddings=False),
    transformer.TransformerConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=1, d_ff=32,
                                  context=16, tied_embeddings=False, dtype="bfloat16"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"d{c.d_model}-{c.positions}-{c.norm}")
def test_param_counts_match_the_tree(cfg):
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  flat = {"/".join(str(k.key) for k in path): int(np.prod(x.shape))
          for path, x in jax.tree_util.tree_leaves_with_path(params)}
  counts = transformer.param_counts(cfg)
  assert counts.total == sum(flat.values())
  embedding = sum(v for k, v in flat.items() if k.split("/")[0] in ("embed", "pos_embed", "unembed"))
  assert counts.embedding == embedding
  assert counts.non_embedding == counts.total - embedding
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_kaplan_convention_is_6n_plus_attention():
  cfg = CONFIGS[0]
  n = transformer.param_counts(cfg).non_embedding
  assert transformer.train_flops_per_token(cfg, 64, "6N") == 6 * n
  assert transformer.train_flops_per_token(cfg, 64, "kaplan") == 6 * n + 6 * 2 * 64 * 64


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=["rotary-rms", "learned-ln"])
def test_full_flop_count_within_10_percent_of_xla(cfg):
  B, L = 4, cfg.context
  optimizer = optax.adamw(1e-3)
  apply_fn = functools.partial(transformer.apply, cfg)
  state = jax.eval_shape(lambda: init_state(
      lambda rng: transformer.init_params(cfg, rng), optimizer, 0))
  batch = {"inputs": jax.ShapeDtypeStruct((B, L), jnp.int32),
           "targets": jax.ShapeDtypeStruct((B, L), jnp.int32),
           "weights": jax.ShapeDtypeStruct((B, L), jnp.float32)}
  step = jax.jit(functools.partial(train_step, loss_fn=lm_evals.lm_loss(apply_fn),
                                   optimizer=optimizer))
  cost = step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost["flops"])
  ours = transformer.train_flops_per_token(cfg, L, "full") * B * L
  print(f"analytic {ours:.4g} vs XLA {xla_flops:.4g}: ratio {ours / xla_flops:.3f}")
  assert abs(ours - xla_flops) / xla_flops < 0.10, (ours, xla_flops)


def test_unknown_convention_is_an_error():
  with pytest.raises(ValueError, match="allowed are"):
    transformer.train_flops_per_token(CONFIGS[0], 64, "chinchilla-ish")


def test_mfu_and_measured_peak():
  peak = accounting.measured_matmul_peak(n=256, repeats=2)
  assert peak > 1e8
  assert accounting.mfu(100.0, 10.0, 1000.0) == pytest.approx(1.0)
  assert accounting.table_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert accounting.table_peak_flops("cpu", "float32") is None


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(heads=st.integers(1, 4), d_head=st.sampled_from([2, 8, 16]), layers=st.integers(1, 3),
       d_ff=st.integers(1, 96), vocab=st.integers(2, 300), context=st.integers(1, 64),
       positions=st.sampled_from(["rotary", "learned"]),
       norm=st.sampled_from(["rmsnorm", "layernorm"]), tied=st.booleans())
def test_param_counts_match_the_tree_for_any_shape(heads, d_head, layers, d_ff, vocab, context,
                                                   positions, norm, tied):
  cfg = transformer.TransformerConfig(vocab_size=vocab, d_model=heads * d_head, n_layers=layers,
                                      n_heads=heads, d_ff=d_ff, context=context,
                                      positions=positions, norm=norm, tied_embeddings=tied)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  assert transformer.param_counts(cfg).total == sum(int(np.prod(x.shape))
                                                   for x in jax.tree.leaves(params))
