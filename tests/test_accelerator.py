"""Accelerator options are the same model: XLA's attention equals the blocked one, microbatches
the whole batch, rematerialisation the plain backward (same parameter paths); tensor-parallel
partition rules split whole heads; the memory estimate is printed, counts what autodiff saves,
and warns when the device is too small."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lm_helpers import run_tiny
from research import accounting, parallel
from research.errors import ConfigError
from research.evals import lm as lm_evals
from research.models import transformer
from research.train import step as step_lib

BASE = transformer.TransformerConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=32,
                                     attention_block=16)


def _variant(**fields) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(**{**BASE.__dict__, **fields})


def _batch(rows: int = 4) -> dict:
  tokens = jax.random.randint(jax.random.key(1), (rows, BASE.context + 1), 0, BASE.vocab_size)
  # Uneven weights (a padded last row), so that microbatches count different numbers of tokens.
  weights = jnp.ones((rows, BASE.context), jnp.float32).at[-1, 10:].set(0.0)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}


@functools.lru_cache
def _params():
  return transformer.init_params(BASE, jax.random.key(0))


def _loss_aux_grads(cfg, microbatches: int = 1):
  loss_fn = lm_evals.lm_loss(functools.partial(transformer.apply, cfg))
  fn = functools.partial(step_lib.loss_and_grads, loss_fn, microbatches=microbatches)
  return jax.jit(fn)(_params(), _batch(), jax.random.key(0))


def _assert_same(got, want, rtol=1e-5):
  (loss, aux, grads), (ref_loss, ref_aux, ref_grads) = got, want
  np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
  assert float(aux["units"]) == float(ref_aux["units"])
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(r))))


def test_xla_attention_equals_the_blocked_attention_in_values_and_gradients():
  assert transformer.attention_implementation(BASE, "cpu") == "blocked"
  logits = transformer.apply(BASE, _params(), _batch()["inputs"])
  xla = _variant(attention="xla")
  np.testing.assert_allclose(transformer.apply(xla, _params(), _batch()["inputs"]), logits,
                             rtol=1e-5, atol=1e-5)
  _assert_same(_loss_aux_grads(xla), _loss_aux_grads(BASE))


def test_attention_auto_is_cudnn_on_a_gpu_where_it_can_and_cudnn_elsewhere_is_an_error():
  bf16 = _variant(dtype="bfloat16")
  assert transformer.attention_implementation(bf16, "gpu") == "cudnn"
  assert transformer.attention_implementation(BASE, "gpu") == "blocked"  # float32: not cuDNN
  assert transformer.attention_implementation(bf16, "tpu") == "blocked"
  with pytest.raises(ConfigError, match="cuDNN attention needs a GPU"):
    transformer.attention_implementation(_variant(attention="cudnn", dtype="bfloat16"), "cpu")
  assert "bfloat16" in transformer.cudnn_problem(BASE)


@pytest.mark.parametrize("microbatches", [2, 4])
def test_microbatches_give_the_whole_batch_loss_and_gradients(microbatches):
  _assert_same(_loss_aux_grads(BASE, microbatches), _loss_aux_grads(BASE))


@pytest.mark.parametrize("remat", ["block", "dots"])
def test_remat_keeps_parameter_paths_and_gradients(remat):
  cfg = _variant(remat=remat)
  paths = lambda params: [parallel.leaf_path(p) for p, _ in  # noqa: E731
                          jax.tree_util.tree_leaves_with_path(params)]
  assert paths(transformer.init_params(cfg, jax.random.key(0))) == paths(_params())
  _assert_same(_loss_aux_grads(cfg), _loss_aux_grads(BASE))


def test_tensor_parallel_rules_split_whole_heads_and_hidden_units():
  mesh = parallel.make_mesh(ml_collections.ConfigDict(
      dict(data=2, fsdp=2, model=2, axis_names=("data", "fsdp", "model"))))
  cfg = _variant(n_heads=4, d_ff=128)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  state = {"params": params, "opt_state": {"mu": params}}
  specs = jax.tree.map(lambda s: s.spec, parallel.state_sharding(
      mesh, state, transformer.TENSOR_PARALLEL_RULES))
  for tree in (specs["params"], specs["opt_state"]["mu"]):
    block = tree["block_0"]
    assert block["attn"]["qkv"]["kernel"] == P("fsdp", "model")
    assert block["attn"]["out"]["kernel"] == P("model", "fsdp")
    assert block["mlp"]["up"]["kernel"] == P("fsdp", "model")
    assert block["mlp"]["down"]["kernel"] == P("model", "fsdp")
    assert tree["embed"]["embedding"] == P("fsdp", None)


def test_a_contiguous_share_of_the_qkv_output_is_whole_heads():
  """The columns that device 0 of a 2-way model axis holds carry head 0's q, k and v: with the
  other half zeroed, head 0 still attends and head 1 outputs nothing."""
  kernel = np.random.default_rng(0).standard_normal((32, 96)).astype(np.float32)
  kernel[:, 48:] = 0.0
  params = {"qkv": {"kernel": kernel}, "out": {"kernel": np.eye(32, dtype=np.float32)}}
  out = transformer.Attention(BASE).apply({"params": params},
                                          jax.random.normal(jax.random.key(0), (1, 8, 32)))
  heads = np.asarray(out).reshape(1, 8, 2, 16)
  assert np.all(heads[:, :, 1] == 0) and np.all(np.abs(heads[:, 1:, 0]).sum(-1) > 0)


def test_memory_estimate_counts_what_autodiff_saves():
  saved_residuals = getattr(pytest.importorskip("jax._src.ad_checkpoint"), "saved_residuals",
                            None)  # private in jax 0.10; public print_saved_residuals prints it
  if saved_residuals is None:
    pytest.skip("this jax has no jax._src.ad_checkpoint.saved_residuals")
  B, L = 4, 64
  for implementation in ("blocked", "xla"):
    cfg = transformer.TransformerConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256, context=L,
                                        attention=implementation, attention_block=32)
    params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
    loss_fn = lm_evals.lm_loss(functools.partial(transformer.apply, cfg))
    batch = {"inputs": jnp.zeros((B, L), jnp.int32), "targets": jnp.zeros((B, L), jnp.int32),
             "weights": jnp.ones((B, L), jnp.float32)}
    saved = sum(np.prod(x.shape) * x.dtype.itemsize for x, why in
                saved_residuals(lambda p: loss_fn(p, batch, None)[0], params)
                if "argument" not in why)
    ours = transformer.activation_bytes(cfg, B, L, 1, implementation)
    assert 0.85 < ours / saved < 1.15, (implementation, ours, saved)


def test_memory_lines_say_when_the_limit_is_unknown_or_too_small():
  estimate = accounting.MemoryEstimate(params=4e6, gradients=4e6, optimizer=8e6, activations=2e9)
  assert "limit is unknown" in accounting.memory_lines(estimate, None)[0]
  assert len(accounting.memory_lines(estimate, 80e9)) == 1
  lines = accounting.memory_lines(estimate, 1e9)
  assert "2.02 GB" in lines[0] and lines[1].startswith("warning: the memory estimate (2.02 GB)")


def test_memory_estimate_is_printed_before_compiling_and_warns(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(accounting, "device_memory_bytes", lambda: 1000)
  assert run_tiny(tmp_path, 2, "mesh.data=2", "mesh.fsdp=2", "mesh.model=2",
                  "train.microbatches=2") == 0
  err = capsys.readouterr().err
  assert "memory per device (estimate, before compiling):" in err
  assert "activations (one microbatch)" in err and "of the device's 1 kB" in err
  assert "warning: the memory estimate" in err and "train.microbatches" in err
