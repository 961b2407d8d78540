"""Causal softmax attention over head-major [B, H, L, K], with a hand-written backward.

Queries are taken in `n_chunks` blocks of L / n_chunks rows. Block i attends to keys
[0, (i + 1) L / n_chunks) only, so the fully masked key blocks above the diagonal are never
computed: 2 blocks do 3/4 of the L x L work, 4 blocks 5/8. The softmax is kept unnormalized
(p = exp(s - max), l = sum p) and 1/l is applied to the [.., L, K] outputs instead of the
[.., L, L] probabilities. The backward uses the identity sum_j p_ij dp_ij = sum_k o_ik do_ik
(as FlashAttention does, Dao et al. 2022), so it makes one pass over each [.., L, L] block
where autodiff of the plain formula makes several.

On the 2-core CPU of benchmarks/train_throughput.py, forward + backward at [16, 4, 256, 64] is
1.3-1.7x faster with 128-query blocks than autodiff of the masked-softmax formula (`reference`),
and 1.14x with one block (benchmarks/step_parts.py; benchmarks/README.md).
The logits and the softmax are float32 whatever the compute dtype of q, k, v.

With `elementwise_scores`, the two products that contract over the head size K (q k^T forward,
dO v^T backward) are written as K broadcast multiply-adds instead of batched dots, so that XLA
fuses them with the mask and the softmax's element-wise passes. At the model ladder's head size
4 a batched dot per (batch, head) pair of a [Lc, K] x [K, S] product is mostly call overhead on
XLA CPU; as K multiply-adds the scores are never a separate pass (benchmarks/ladder_speed.py,
benchmarks/README.md). It only pays for small K, and the sums run in another order.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

_MASKED = float(np.finfo(np.float32).min)


def _blocks(L: int, n_chunks: int):
  """(query slice, number of keys, causal mask [Lc, keys]) for each query block."""
  if L % n_chunks:
    raise ValueError(f"sequence length {L} is not divisible by n_chunks={n_chunks}")
  Lc = L // n_chunks
  return [(slice(i * Lc, (i + 1) * Lc), (i + 1) * Lc,
           np.tril(np.ones((Lc, (i + 1) * Lc), bool), k=i * Lc)) for i in range(n_chunks)]


def _scores(a_BxHxQxK, b_BxHxSxK, elementwise: bool):
  """a b^T over the last axis, float32[B, H, Q, S]: a batched dot, or K multiply-adds."""
  if not elementwise:
    return jnp.einsum("bhqk,bhsk->bhqs", a_BxHxQxK, b_BxHxSxK, preferred_element_type=jnp.float32)
  a_BxHxQxK = a_BxHxQxK.astype(jnp.float32)
  b_BxHxKxS = jnp.swapaxes(b_BxHxSxK, -1, -2).astype(jnp.float32)
  s_BxHxQxS = a_BxHxQxK[..., 0:1] * b_BxHxKxS[..., 0:1, :]
  for i in range(1, a_BxHxQxK.shape[-1]):
    s_BxHxQxS = s_BxHxQxS + a_BxHxQxK[..., i:i + 1] * b_BxHxKxS[..., i:i + 1, :]
  return s_BxHxQxS


def _forward(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, n_chunks, elementwise):
  scale = q_BxHxLxK.shape[-1] ** -0.5
  outs, probs, sums = [], [], []
  for rows, n, mask_QxS in _blocks(q_BxHxLxK.shape[2], n_chunks):
    s_BxHxQxS = _scores(q_BxHxLxK[:, :, rows], k_BxHxLxK[:, :, :n], elementwise)
    s_BxHxQxS = jnp.where(mask_QxS, s_BxHxQxS * scale, _MASKED)
    p_BxHxQxS = jnp.exp(s_BxHxQxS - jnp.max(s_BxHxQxS, axis=-1, keepdims=True))
    l_BxHxQx1 = jnp.sum(p_BxHxQxS, axis=-1, keepdims=True)
    o_BxHxQxK = jnp.einsum("bhqs,bhsk->bhqk", p_BxHxQxS.astype(v_BxHxLxK.dtype),
                           v_BxHxLxK[:, :, :n], preferred_element_type=jnp.float32)
    outs.append(o_BxHxQxK / l_BxHxQx1)
    probs.append(p_BxHxQxS)
    sums.append(l_BxHxQx1)
  o_BxHxLxK = jnp.concatenate(outs, axis=2)
  return o_BxHxLxK.astype(q_BxHxLxK.dtype), (o_BxHxLxK, probs, sums)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def causal_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, n_chunks: int = 1,
                     elementwise_scores: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(K) + causal mask) v, in q's dtype; n_chunks must divide L."""
  return _forward(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, n_chunks, elementwise_scores)[0]


def _fwd(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, n_chunks, elementwise):
  out, (o_BxHxLxK, probs, sums) = _forward(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, n_chunks,
                                           elementwise)
  return out, (q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, o_BxHxLxK, probs, sums)


def _bwd(n_chunks, elementwise, residuals, do_BxHxLxK):
  q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, o_BxHxLxK, probs, sums = residuals
  dtype, scale = q_BxHxLxK.dtype, q_BxHxLxK.shape[-1] ** -0.5
  do_BxHxLxK = do_BxHxLxK.astype(jnp.float32)
  # sum_j p_ij dp_ij, with dp = do v^T, equals sum_k do_ik o_ik.
  delta_BxHxLx1 = jnp.sum(do_BxHxLxK * o_BxHxLxK, axis=-1, keepdims=True)
  dqs = []
  dk_BxHxLxK = jnp.zeros(k_BxHxLxK.shape, jnp.float32)
  dv_BxHxLxK = jnp.zeros(v_BxHxLxK.shape, jnp.float32)
  for (rows, n, _), p_BxHxQxS, l_BxHxQx1 in zip(_blocks(q_BxHxLxK.shape[2], n_chunks), probs, sums):
    do_BxHxQxK = do_BxHxLxK[:, :, rows]
    dv = jnp.einsum("bhqs,bhqk->bhsk", p_BxHxQxS.astype(dtype),
                    (do_BxHxQxK / l_BxHxQx1).astype(dtype), preferred_element_type=jnp.float32)
    dp_BxHxQxS = _scores(do_BxHxQxK.astype(dtype), v_BxHxLxK[:, :, :n], elementwise)
    ds_BxHxQxS = (p_BxHxQxS * ((dp_BxHxQxS - delta_BxHxLx1[:, :, rows]) * (scale / l_BxHxQx1))
                  ).astype(dtype)
    dqs.append(jnp.einsum("bhqs,bhsk->bhqk", ds_BxHxQxS, k_BxHxLxK[:, :, :n],
                          preferred_element_type=jnp.float32))
    dk = jnp.einsum("bhqs,bhqk->bhsk", ds_BxHxQxS, q_BxHxLxK[:, :, rows],
                    preferred_element_type=jnp.float32)
    dk_BxHxLxK = dk_BxHxLxK.at[:, :, :n].add(dk)
    dv_BxHxLxK = dv_BxHxLxK.at[:, :, :n].add(dv)
  dq_BxHxLxK = jnp.concatenate(dqs, axis=2)
  return (dq_BxHxLxK.astype(dtype), dk_BxHxLxK.astype(k_BxHxLxK.dtype),
          dv_BxHxLxK.astype(v_BxHxLxK.dtype))


causal_attention.defvjp(_fwd, _bwd)


def reference(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK) -> jax.Array:
  """The plain masked-softmax formula, differentiated by autodiff: the tests' oracle and the
  benchmarks' baseline."""
  L = q_BxHxLxK.shape[2]
  s_BxHxLxL = jnp.einsum("bhqk,bhsk->bhqs", q_BxHxLxK, k_BxHxLxK).astype(jnp.float32)
  s_BxHxLxL = jnp.where(np.tril(np.ones((L, L), bool)), s_BxHxLxL * q_BxHxLxK.shape[-1] ** -0.5,
                        _MASKED)
  p_BxHxLxL = jax.nn.softmax(s_BxHxLxL, axis=-1).astype(v_BxHxLxK.dtype)
  return jnp.einsum("bhqs,bhsk->bhqk", p_BxHxLxL, v_BxHxLxK)
