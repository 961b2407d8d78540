"""Greedy (or sampled) generation with a KV cache, and teacher-forced scoring of continuations.

Generation is a pure function over the parameter tree of `research.models.transformer`: it
applies that module's own submodules (`_norm`, `_dense`, `Mlp`, the token and position `nn.Embed`)
to the same parameters, and takes rotary's sin/cos tables from `transformer.rotary` itself; only
the attention core is written here, reading keys and values from a preallocated cache
k, v [layers, B, H, T, K] (T = cfg.context) instead of recomputing them. `transformer.py` is not
changed. Tests (tests/test_evals.py) check that every generated token and every step's logits
equal those of repeated full `transformer.apply` calls. `decode` samples at a temperature > 0
(the baseline of speculative decoding, research/evals/speculative.py, which also runs both of its
models through `forward_cached`).

Mixed prompt lengths are handled exactly, without position offsets: prompts are right-padded
into one prefill of a bucketed length P (a power of two), every row starting at position 0.
A row of length n takes its first new token from the prefill's logits at n - 1; each later step
feeds the previous token at the row's own position n + i - 1, writes its key and value there
and attends to keys at positions <= it. The pad keys a prefill wrote beyond n are therefore
overwritten before any query can see them. Prompts are sorted by length before batching (less
padding) and results come back in the caller's order; a batch's row count is padded to a power of
two up to `batch_size`, so a run compiles for few shapes: (rows, P, max_new_tokens).

Conventions:
- The stop token is included in the returned continuation (as the last token); nothing after it
  is returned. Without a stop token every continuation has max_new_tokens tokens.
- The window: the last new token is never fed back, so a prompt of n tokens needs
  n + max_new_tokens - 1 <= cfg.context. Longer prompts are left-truncated to their last
  cfg.context + 1 - max_new_tokens tokens (the newest context is kept); max_new_tokens must be in
  [1, cfg.context] (UserError otherwise). `score` truncates contexts by the same rule, so
  `generate(prompt, len(target))` and `score((prompt, target))` see the same tokens.

Greedy generation reproduces a target exactly iff every target token is the teacher-forced
argmax (`ContinuationScore.all_correct`): step i of greedy decoding conditions on tokens 0..i-1 of
its own output, which equal the target's as long as all earlier argmaxes did. The study uses
`all_correct` of one batched forward pass as a cheap exact match. The equivalence needs
`max_new_tokens = len(target)` and, with a stop token, a target that ends with the stop token and
does not contain it earlier (generation would stop there); and it is up to float ties between
the top two logits (the cached and uncached logits agree to about 1e-6, not bit for bit).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import UserError
from research.models import transformer
from research.models.transformer import TransformerConfig

_MASKED = float(np.finfo(np.float32).min)
_MIN_BUCKET = 8


# ---------------------------------------------------------------------------------------------
# The cached forward pass (the transformer's own modules over the same parameters)
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _rotary_tables(cfg: TransformerConfig):
  """cos, sin float32[context, K/2] as `transformer.rotary` computes them: rotary of the vector
  (1, ..., 1, 0, ..., 0) at position t is (cos_t, sin_t), exactly."""
  K = cfg.d_head
  unit_LxK = np.broadcast_to(
      np.concatenate([np.ones(K // 2, np.float32), np.zeros(K // 2, np.float32)]),
      (cfg.context, K))
  with jax.ensure_compile_time_eval():  # constants, also when called under jit
    table_LxK = np.asarray(transformer.rotary(jnp.asarray(unit_LxK), cfg.rope_base))
  return table_LxK[:, :K // 2], table_LxK[:, K // 2:]


def _rotate(x_BxSxHxK, pos_BxS, tables):
  """`transformer.rotary`'s rotation, at each row's own positions pos[B, S]."""
  cos_LxK2, sin_LxK2 = tables
  cos_BxSx1xK2 = jnp.asarray(cos_LxK2)[pos_BxS][:, :, None, :]
  sin_BxSx1xK2 = jnp.asarray(sin_LxK2)[pos_BxS][:, :, None, :]
  x1, x2 = jnp.split(x_BxSxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BxSx1xK2 - x2 * sin_BxSx1xK2,
                         x2 * cos_BxSx1xK2 + x1 * sin_BxSx1xK2], axis=-1)
  return out.astype(x_BxSxHxK.dtype)


def _apply(module: nn.Module, params, *args, **kwargs):
  return module.apply({"params": params}, *args, **kwargs)


def empty_cache(cfg: TransformerConfig, rows: int):
  """The (k, v) cache of `forward_cached` for `rows` rows: zeros [layers, B, H, T, K]."""
  shape = (cfg.n_layers, rows, cfg.n_heads, cfg.context, cfg.d_head)
  return jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype)


def _token_embedding(cfg: TransformerConfig) -> nn.Embed:
  return nn.Embed(cfg.vocab_size, cfg.d_model)  # as Transformer's `embed`


def forward_cached(cfg: TransformerConfig, params, tokens_BxS, pos_BxS, cache):
  """Logits float32[B, S, V] of tokens at positions pos[B, S], and the cache with their keys and
  values written at those positions. Queries attend to cached keys at positions <= their own.
  cache = (k, v), each [layers, B, H, T, K] in the compute dtype."""
  B, S = tokens_BxS.shape
  D, H, K, dtype = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.compute_dtype
  k_cache, v_cache = cache
  T = k_cache.shape[3]
  x_BxSxD = _apply(_token_embedding(cfg), params["embed"], tokens_BxS).astype(dtype)
  if cfg.positions == "learned":
    x_BxSxD = x_BxSxD + _apply(nn.Embed(cfg.context, cfg.d_model), params["pos_embed"],
                               pos_BxS).astype(dtype)
  tables = _rotary_tables(cfg) if cfg.positions == "rotary" else None
  rows_Bx1 = jnp.arange(B)[:, None]
  visible_Bx1xSxT = (jnp.arange(T)[None, None, :] <= pos_BxS[:, :, None])[:, None]
  for i in range(cfg.n_layers):
    p = params[f"block_{i}"]
    h_BxSxD = _apply(transformer._norm(cfg, "ln_attn"), p["ln_attn"], x_BxSxD)
    qkv_BxSxHx3xK = _apply(transformer._dense(3 * H * K, cfg, "qkv", D), p["attn"]["qkv"],
                           h_BxSxD.reshape(B * S, D)).reshape(B, S, H, 3, K)
    q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = (qkv_BxSxHx3xK[:, :, :, j] for j in range(3))
    if tables is not None:
      q_BxSxHxK, k_BxSxHxK = _rotate(q_BxSxHxK, pos_BxS, tables), _rotate(k_BxSxHxK, pos_BxS,
                                                                           tables)
    q_BxSxHxK = transformer._mup_queries(q_BxSxHxK, cfg)
    # Row b's S new keys go to positions pos[b, :] of layer i ([B, S, H, K] in index order).
    k_cache = k_cache.at[i, rows_Bx1, :, pos_BxS, :].set(k_BxSxHxK.astype(k_cache.dtype))
    v_cache = v_cache.at[i, rows_Bx1, :, pos_BxS, :].set(v_BxSxHxK.astype(v_cache.dtype))
    # As attention.causal_attention: float32 logits, unnormalised softmax, 1/l on the output.
    s_BxHxSxT = jnp.einsum("bshk,bhtk->bhst", q_BxSxHxK, k_cache[i],
                           preferred_element_type=jnp.float32)
    s_BxHxSxT = jnp.where(visible_Bx1xSxT, s_BxHxSxT * K ** -0.5, _MASKED)
    p_BxHxSxT = jnp.exp(s_BxHxSxT - jnp.max(s_BxHxSxT, axis=-1, keepdims=True))
    l_BxHxSx1 = jnp.sum(p_BxHxSxT, axis=-1, keepdims=True)
    o_BxHxSxK = jnp.einsum("bhst,bhtk->bhsk", p_BxHxSxT.astype(v_cache.dtype), v_cache[i],
                           preferred_element_type=jnp.float32) / l_BxHxSx1
    o_BxSxHK = o_BxHxSxK.astype(q_BxSxHxK.dtype).transpose(0, 2, 1, 3).reshape(B * S, H * K)
    x_BxSxD = x_BxSxD + _apply(transformer._dense(D, cfg, "out", H * K), p["attn"]["out"],
                               o_BxSxHK).reshape(B, S, D)
    h_BxSxD = _apply(transformer._norm(cfg, "ln_mlp"), p["ln_mlp"], x_BxSxD)
    x_BxSxD = x_BxSxD + _apply(transformer.Mlp(cfg), p["mlp"], h_BxSxD)
  x_NxD = _apply(transformer._norm(cfg, "ln_final"), params["ln_final"],
                 x_BxSxD).reshape(B * S, D)
  if cfg.tied_embeddings:
    logits_NxV = (_apply(_token_embedding(cfg), params["embed"], x_NxD, method="attend")
                  * transformer.output_multiplier(cfg))
  else:
    logits_NxV = _apply(transformer._dense(cfg.vocab_size, cfg, "unembed", D), params["unembed"],
                        x_NxD)
    if cfg.parametrization == "mup":
      logits_NxV = logits_NxV / cfg.width_mult
  return logits_NxV.reshape(B, S, cfg.vocab_size).astype(jnp.float32), (k_cache, v_cache)


def pick(logits_BxV, temperature: float, key):
  """The next token of each row: the argmax at temperature 0, else a sample of
  softmax(logits / temperature) with `key`."""
  if temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits_BxV / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "return_logits",
                                             "temperature"))
def decode(cfg: TransformerConfig, params, tokens_BxP, lengths_B, stop_token, *,
           max_new_tokens: int, return_logits: bool = False, temperature: float = 0.0,
           key=None):
  """Greedy continuation of right-padded prompts tokens[B, P] (row b's prompt is
  tokens[b, :lengths[b]], lengths >= 1, lengths + max_new_tokens - 1 <= cfg.context); with
  temperature > 0, sampled continuation (`key` a jax.random key; step i draws with
  fold_in(key, i)).

  Returns int32[B, max_new_tokens] (after a row's stop token: the stop token again; `stop_token`
  -1 for none), and with return_logits the float32[B, max_new_tokens, V] logits each token was
  chosen from (zeros after every row stopped). One prefill of P positions, then a
  `lax.while_loop` of single-token steps that ends early once every row has stopped.
  """
  B, P = tokens_BxP.shape
  N, V = max_new_tokens, cfg.vocab_size
  cache = empty_cache(cfg, B)
  pos_BxP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
  logits_BxPxV, cache = forward_cached(cfg, params, tokens_BxP, pos_BxP, cache)
  first_BxV = jnp.take_along_axis(logits_BxPxV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
  if temperature and key is None:
    raise ValueError("decode: sampling (temperature > 0) needs a key")
  step_key = (lambda i: jax.random.fold_in(key, i)) if temperature else (lambda i: None)
  first_B = pick(first_BxV, temperature, step_key(0))
  fill = jnp.maximum(stop_token, 0).astype(jnp.int32)  # what an early exit leaves unwritten
  out_BxN = jnp.full((B, N), fill, jnp.int32).at[:, 0].set(first_B)
  logits_BxNxV = jnp.zeros((B, N, V) if return_logits else (B, 0, V), jnp.float32)
  if return_logits:
    logits_BxNxV = logits_BxNxV.at[:, 0].set(first_BxV)
  done_B = first_B == stop_token

  def cond(carry):
    i, _, _, _, done_B = carry
    return (i < N) & ~jnp.all(done_B)

  def body(carry):
    i, cache, out_BxN, logits_BxNxV, done_B = carry
    previous_B = out_BxN[:, i - 1]
    pos_Bx1 = (lengths_B + i - 1)[:, None]
    step_Bx1xV, cache = forward_cached(cfg, params, previous_B[:, None], pos_Bx1, cache)
    next_B = pick(step_Bx1xV[:, 0], temperature, step_key(i))
    next_B = jnp.where(done_B, stop_token, next_B)
    out_BxN = out_BxN.at[:, i].set(next_B)
    if return_logits:
      logits_BxNxV = logits_BxNxV.at[:, i].set(step_Bx1xV[:, 0])
    return i + 1, cache, out_BxN, logits_BxNxV, done_B | (next_B == stop_token)

  _, _, out_BxN, logits_BxNxV, done_B = jax.lax.while_loop(
      cond, body, (jnp.asarray(1, jnp.int32), cache, out_BxN, logits_BxNxV, done_B))
  return (out_BxN, logits_BxNxV) if return_logits else out_BxN


# ---------------------------------------------------------------------------------------------
# Batching helpers
# ---------------------------------------------------------------------------------------------

def _pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def _bucket(length: int, cap: int) -> int:
  """A padded length >= length: a power of two (at least _MIN_BUCKET), at most cap."""
  return min(max(_pow2(length), _MIN_BUCKET), cap)


def _batches(order: list[int], batch_size: int):
  """Chunks of `order`, each with the row count its batch is padded to (a power of two up to
  batch_size, so that a long run compiles for few shapes)."""
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    yield chunk, min(batch_size, _pow2(len(chunk)))


def _as_tokens(sequence, cfg: TransformerConfig, what: str) -> np.ndarray:
  tokens = np.asarray(sequence)
  if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
    raise UserError(f"{what}: expected a 1-D sequence of integer token ids, got "
                    f"{type(sequence).__name__} of shape {tokens.shape}, dtype {tokens.dtype}")
  if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
    raise UserError(f"{what}: token ids must lie in [0, {cfg.vocab_size}) (the model's vocab_size)"
                    f", got min {tokens.min()} max {tokens.max()}")
  return tokens.astype(np.int32)


def _check_batch_size(batch_size: int) -> None:
  if int(batch_size) < 1:
    raise UserError(f"batch_size = {batch_size}: must be at least 1")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def generate(cfg: TransformerConfig, params, prompts, max_new_tokens: int,
             stop_token: int | None = None, batch_size: int = 64) -> list[list[int]]:
  """Greedy continuation of every prompt (without the prompt), in the order given.

  A continuation ends with `stop_token` (included) or after `max_new_tokens` tokens. Prompts
  longer than cfg.context + 1 - max_new_tokens are left-truncated to that many last tokens (see
  the module docstring); a prompt must not be empty (there is no BOS token to start from).
  """
  _check_batch_size(batch_size)
  if not 1 <= int(max_new_tokens) <= cfg.context:
    raise UserError(f"max_new_tokens = {max_new_tokens}: must be in [1, {cfg.context}] "
                    f"(the model's context): the prompt and the new tokens but the last must fit")
  if stop_token is not None and not 0 <= int(stop_token) < cfg.vocab_size:
    raise UserError(f"stop_token = {stop_token}: must be a token id in [0, {cfg.vocab_size})")
  keep = cfg.context + 1 - int(max_new_tokens)
  rows = []
  for i, prompt in enumerate(prompts):
    tokens = _as_tokens(prompt, cfg, f"prompt {i}")
    if tokens.size == 0:
      raise UserError(f"prompt {i} is empty: generation needs at least one token to condition on")
    rows.append(tokens[-keep:])
  stop = np.int32(-1 if stop_token is None else stop_token)
  order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
  results: list[list[int]] = [[] for _ in rows]
  for chunk, padded_rows in _batches(order, batch_size):
    lengths = np.ones(padded_rows, np.int32)
    lengths[:len(chunk)] = [len(rows[r]) for r in chunk]
    tokens_BxP = np.zeros((padded_rows, _bucket(int(lengths.max()), cfg.context)), np.int32)
    for b, r in enumerate(chunk):
      tokens_BxP[b, :len(rows[r])] = rows[r]
    out_BxN = np.asarray(decode(cfg, params, tokens_BxP, lengths, stop,
                                max_new_tokens=int(max_new_tokens)))
    for b, r in enumerate(chunk):
      continuation = out_BxN[b].tolist()
      if stop_token is not None and stop_token in continuation:
        continuation = continuation[:continuation.index(stop_token) + 1]
      results[r] = continuation
  return results


@dataclasses.dataclass(frozen=True, eq=False)
class ContinuationScore:
  """Teacher-forced scores of one continuation's tokens given its context, one entry per token:
  `logprobs` (natural log of p(token | everything before it)), `correct` (the argmax is the
  token) and `brier` (sum over the vocabulary of (p - onehot)^2, in [0, 2])."""
  logprobs: np.ndarray
  correct: np.ndarray
  brier: np.ndarray

  @property
  def n_tokens(self) -> int:
    return int(self.logprobs.size)

  @property
  def logprob(self) -> float:
    """log P(continuation | context), nats."""
    return float(np.sum(self.logprobs, dtype=np.float64))

  @property
  def mean_logprob(self) -> float:
    return self.logprob / max(self.n_tokens, 1)

  @property
  def all_correct(self) -> bool:
    """Every token is the teacher-forced argmax: greedy generation reproduces the continuation."""
    return bool(np.all(self.correct))

  @property
  def token_accuracy(self) -> float:
    return float(np.mean(self.correct)) if self.n_tokens else 0.0

  @property
  def mean_brier(self) -> float:
    return float(np.mean(self.brier)) if self.n_tokens else 0.0


@functools.partial(jax.jit, static_argnames=("cfg",))
def _score_batch(cfg: TransformerConfig, params, inputs_BxL, targets_BxL):
  logits_BxLxV = transformer.apply(cfg, params, inputs_BxL)
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  logp_BxL = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  correct_BxL = jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL
  p_BxLxV = jnp.exp(logp_BxLxV)
  brier_BxL = jnp.sum(p_BxLxV * p_BxLxV, axis=-1) - 2 * jnp.exp(logp_BxL) + 1.0
  return logp_BxL, correct_BxL, brier_BxL


def score(cfg: TransformerConfig, params, pairs, batch_size: int = 64) -> list[ContinuationScore]:
  """Teacher-forced scores of each (context, continuation) pair, in the order given: one forward
  pass per batch of context + continuation (minus its last token), right-padded to a bucketed
  length. Contexts longer than cfg.context + 1 - len(continuation) are left-truncated (as
  `generate` truncates its prompts); context and continuation must not be empty and the
  continuation must fit the window with one context token (UserError otherwise)."""
  _check_batch_size(batch_size)
  rows = []
  for i, pair in enumerate(pairs):
    try:
      context, continuation = pair
    except (TypeError, ValueError):
      raise UserError(f"pair {i}: expected (context, continuation), got {pair!r}") from None
    context = _as_tokens(context, cfg, f"pair {i} context")
    continuation = _as_tokens(continuation, cfg, f"pair {i} continuation")
    if context.size == 0 or continuation.size == 0:
      raise UserError(f"pair {i}: context and continuation must each have at least one token, "
                      f"got {context.size} and {continuation.size}")
    if continuation.size > cfg.context:
      raise UserError(f"pair {i}: a continuation of {continuation.size} tokens does not fit the "
                      f"model's context of {cfg.context} tokens with any context")
    context = context[-(cfg.context + 1 - continuation.size):]
    rows.append((np.concatenate([context, continuation]), context.size))
  order = sorted(range(len(rows)), key=lambda r: rows[r][0].size)
  results: list[ContinuationScore | None] = [None] * len(rows)
  for chunk, padded_rows in _batches(order, batch_size):
    length = _bucket(max(rows[r][0].size - 1 for r in chunk), cfg.context)
    inputs_BxL = np.zeros((padded_rows, length), np.int32)
    targets_BxL = np.zeros((padded_rows, length), np.int32)
    for b, r in enumerate(chunk):
      full = rows[r][0]
      inputs_BxL[b, :full.size - 1], targets_BxL[b, :full.size - 1] = full[:-1], full[1:]
    logp, correct, brier = (np.asarray(a) for a in
                            _score_batch(cfg, params, inputs_BxL, targets_BxL))
    for b, r in enumerate(chunk):
      full, n_context = rows[r]
      span = slice(n_context - 1, full.size - 1)
      results[r] = ContinuationScore(logp[b, span].copy(), correct[b, span].copy(),
                                     brier[b, span].copy())
  return results
