"""The blocked causal attention and the GELU with hand-written backward passes equal what
autodiff of the plain formulas gives, and the model wired to them is unchanged in value."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import attention, fused, transformer


def _qkvw(shape, dtype=jnp.float32, scale=1.0):
  keys = jax.random.split(jax.random.key(0), 4)
  return [(scale * jax.random.normal(key, shape)).astype(dtype) for key in keys]


def _value_and_grads(fn, q, k, v, w):
  return jax.jit(jax.value_and_grad(
      lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w), argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("n_chunks", [1, 2, 4, 8])
def test_causal_attention_matches_autodiff_of_the_masked_softmax(n_chunks):
  q, k, v, w = _qkvw((2, 3, 32, 16), scale=2.0)
  out = jax.jit(functools.partial(attention.causal_attention, n_chunks=n_chunks))(q, k, v)
  np.testing.assert_allclose(out, attention.reference(q, k, v), rtol=1e-5, atol=1e-6)
  value, grads = _value_and_grads(lambda q, k, v: attention.causal_attention(q, k, v, n_chunks),
                                  q, k, v, w)
  ref_value, ref_grads = _value_and_grads(attention.reference, q, k, v, w)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_causal_attention_is_causal_and_stable_for_large_logits():
  q, k, v, _ = _qkvw((1, 2, 16, 8), scale=30.0)   # logits in the hundreds: exp would overflow
  out = attention.causal_attention(q, k, v, 4)
  assert bool(jnp.all(jnp.isfinite(out)))
  # The first query sees only the first key: its output is that key's value.
  np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=1e-6)
  # Changing the last key and value changes nothing before the last position.
  out2 = attention.causal_attention(q, k.at[:, :, -1].add(5.0), v.at[:, :, -1].add(5.0), 4)
  np.testing.assert_array_equal(out[:, :, :-1], out2[:, :, :-1])


def test_causal_attention_bfloat16_keeps_dtype_and_float32_softmax():
  q, k, v, w = _qkvw((2, 2, 32, 16), dtype=jnp.bfloat16)
  out = attention.causal_attention(q, k, v, 2)
  assert out.dtype == jnp.bfloat16
  want = attention.reference(*(x.astype(jnp.float32) for x in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), want, atol=0.03)
  _, grads = _value_and_grads(lambda q, k, v: attention.causal_attention(q, k, v, 2), q, k, v, w)
  assert all(g.dtype == jnp.bfloat16 for g in grads)


def test_causal_attention_rejects_blocks_that_do_not_divide_the_sequence():
  q, k, v, _ = _qkvw((1, 1, 10, 4))
  with pytest.raises(ValueError, match="not divisible by n_chunks=3"):
    attention.causal_attention(q, k, v, 3)


def test_fused_gelu_forward_is_jax_gelu_and_backward_is_its_derivative():
  x = jnp.linspace(-12.0, 12.0, 4001, dtype=jnp.float32)
  np.testing.assert_array_equal(jax.jit(fused.gelu)(x), jax.jit(jax.nn.gelu)(x))
  got = jax.jit(jax.vmap(jax.grad(fused.gelu)))(x)
  want = jax.jit(jax.vmap(jax.grad(lambda x: jax.nn.gelu(x, approximate=True))))(x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_model_logits_and_gradients_do_not_depend_on_the_attention_block():
  base = transformer.TransformerConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=32,
                                       attention_block=0)
  tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, 256)
  params = transformer.init_params(base, jax.random.key(0))

  def loss(cfg, params):
    return jnp.mean(jax.nn.log_softmax(transformer.apply(cfg, params, tokens))[..., 0])

  ref_loss, ref_grads = jax.value_and_grad(functools.partial(loss, base))(params)
  for block in (8, 16, 12):   # 12 does not divide 32: one block
    cfg = transformer.TransformerConfig(**{**base.__dict__, "attention_block": block})
    got_loss, got_grads = jax.value_and_grad(functools.partial(loss, cfg))(params)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 got_grads, ref_grads)
