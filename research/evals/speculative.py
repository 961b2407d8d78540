"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) and the exact acceptance rate of
a (draft, target) pair of language models of one vocabulary.

The sampler runs both models through the KV-cached forward pass of research.evals.generate. One
round, for each row with committed tokens x[0..n-1]:
  1. the draft proposes gamma tokens d_1..d_gamma, one cached step each (its first step feeds
     x[n-2], x[n-1]: after a round that accepted every proposal the draft never saw d_gamma);
  2. the target scores x[n-1], d_1..d_gamma in one cached forward of gamma + 1 positions, which
     gives p_1..p_{gamma+1};
  3. d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)), in order; at the first
     rejection the round's last token is drawn from the residual norm(max(0, p_i - q_i)), and
     when all gamma are accepted a bonus token is drawn from p_{gamma+1}.
Every round costs one target call and yields a + 1 tokens (a accepted). With temperature 0 both
models are greedy: d_i is accepted iff it is the target's argmax, and the correction is the
target's argmax, so the output is greedy target decoding token for token (up to float ties: the
target's logits come from a forward of gamma + 1 positions, not of one). Sampled output is
distributed exactly as the target's own samples at the same temperature (tests/test_speculative.py
checks it with a chi-square test of stated power). Keys and values a round wrote for rejected
proposals sit beyond the row's new length and are overwritten before any query can see them (the
argument of generate.py's prefill padding).

Exact alpha without sampling: beta = sum_v min(p(v), q(v)) = 1 - TV(p, q) at every teacher-forced
position of held-out text, alpha = its mean (Leviathan et al. 2023, Sec. 3.1); at temperature 0
beta is 1 where the argmaxes agree. Under their i.i.d. assumption a round yields
(1 - alpha^(gamma+1)) / (1 - alpha) tokens and the walltime improvement is that divided by
gamma c + 1, with c the cost of a draft step over a target step.

Generation has no stop token: every continuation has max_new_tokens tokens. A prompt of n tokens
needs n + max_new_tokens + gamma - 1 <= context (of the smaller of the two models); longer
prompts are left-truncated to their last context + 1 - max_new_tokens - gamma tokens.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import UserError
from research.evals import generate
from research.evals.generate import forward_cached
from research.models.transformer import TransformerConfig


# ---------------------------------------------------------------------------------------------
# Acceptance arithmetic (Leviathan et al. 2023, Sec. 3)
# ---------------------------------------------------------------------------------------------

def probabilities(logits, temperature: float):
  """softmax(logits / temperature) over the last axis; at temperature 0, the one-hot argmax."""
  if temperature == 0:
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def acceptance(p_logits, q_logits, temperature: float):
  """beta = sum_v min(p, q) = 1 - TV(p, q) per position (target p, draft q), float32[...]; at
  temperature 0, 1.0 where the argmaxes agree."""
  if temperature == 0:
    return (jnp.argmax(p_logits, -1) == jnp.argmax(q_logits, -1)).astype(jnp.float32)
  return jnp.sum(jnp.minimum(probabilities(p_logits, temperature),
                             probabilities(q_logits, temperature)), axis=-1)


def expected_tokens(alpha, gamma):
  """Tokens per target call, (1 - alpha^(gamma+1)) / (1 - alpha) (gamma + 1 at alpha = 1)."""
  alpha, gamma = np.asarray(alpha, float), np.asarray(gamma, float)
  with np.errstate(divide="ignore", invalid="ignore"):
    out = (1 - alpha ** (gamma + 1)) / (1 - alpha)
  return np.where(alpha >= 1, gamma + 1, out)


def predicted_speedup(alpha, gamma, c):
  """Walltime improvement over plain decoding: expected_tokens / (gamma c + 1)."""
  return expected_tokens(alpha, gamma) / (np.asarray(gamma, float) * np.asarray(c, float) + 1)


def best_gamma(alpha: float, c: float, most: int = 16) -> tuple[int, float]:
  """The gamma in 1..most of the largest predicted speedup, and that speedup."""
  gammas = np.arange(1, most + 1)
  speedups = predicted_speedup(alpha, gammas, c)
  i = int(np.argmax(speedups))
  return int(gammas[i]), float(speedups[i])


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------

def _take(x_BxL, index_BxS):
  return jnp.take_along_axis(x_BxL, index_BxS, axis=1)


@functools.partial(jax.jit, static_argnames=("draft_cfg", "target_cfg", "gamma",
                                             "max_new_tokens", "temperature"))
def speculative_decode(draft_cfg: TransformerConfig, target_cfg: TransformerConfig,
                       draft_params, target_params, tokens_BxP, lengths_B, key, *,
                       gamma: int, max_new_tokens: int, temperature: float):
  """Speculative continuation of right-padded prompts tokens[B, P] (row b's prompt is
  tokens[b, :lengths[b]], lengths >= 1, lengths + max_new_tokens + gamma - 1 <= both contexts).

  Returns (int32[B, max_new_tokens], stats) with stats per row: `calls` (target forwards),
  `tokens` (tokens committed, at least max_new_tokens: the last round may overshoot), and
  `beta_sum`, `beta_count` (the on-policy acceptance: sum_v min(p, q) at every proposal the
  target judged, summed and counted).
  """
  B, P = tokens_BxP.shape
  G, N = gamma, max_new_tokens
  V = target_cfg.vocab_size
  context = min(draft_cfg.context, target_cfg.context)
  rows_Bx1 = jnp.arange(B)[:, None]
  seq_BxS = jnp.zeros((B, P + N + G + 1), jnp.int32).at[:, :P].set(tokens_BxP)
  pos_BxP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
  _, draft_cache = forward_cached(draft_cfg, draft_params, tokens_BxP, pos_BxP,
                                  generate.empty_cache(draft_cfg, B))
  _, target_cache = forward_cached(target_cfg, target_params, tokens_BxP, pos_BxP,
                                   generate.empty_cache(target_cfg, B))

  def draft_step(cache, tokens_BxS, pos_BxS, step_key):
    logits_BxSxV, cache = forward_cached(draft_cfg, draft_params, tokens_BxS,
                                         jnp.minimum(pos_BxS, context - 1), cache)
    q_BxV = logits_BxSxV[:, -1]
    return cache, q_BxV, generate.pick(q_BxV, temperature, step_key)

  def cond(carry):
    n_B = carry[0]
    return jnp.any(n_B - lengths_B < N)

  def body(carry):
    n_B, seq_BxS, draft_cache, target_cache, calls_B, beta_sum_B, beta_count_B, r = carry
    active_B = n_B - lengths_B < N
    round_key = jax.random.fold_in(key, r)
    draft_key, accept_key, residual_key = jax.random.split(round_key, 3)
    # 1. The draft's gamma proposals.
    last2_Bx2 = jnp.stack([jnp.maximum(n_B - 2, 0), n_B - 1], axis=1)
    draft_cache, q_BxV, d_B = draft_step(draft_cache, _take(seq_BxS, last2_Bx2), last2_Bx2,
                                         jax.random.fold_in(draft_key, 0))

    def propose(carry, j):
      cache, previous_B = carry
      cache, q_BxV, d_B = draft_step(cache, previous_B[:, None], (n_B + j - 1)[:, None],
                                     jax.random.fold_in(draft_key, j))
      return (cache, d_B), (q_BxV, d_B)

    (draft_cache, _), (q_GxBxV, d_GxB) = jax.lax.scan(
        propose, (draft_cache, d_B), jnp.arange(1, G, dtype=jnp.int32))
    q_BxGxV = jnp.concatenate([q_BxV[:, None], q_GxBxV.transpose(1, 0, 2)], axis=1)
    d_BxG = jnp.concatenate([d_B[:, None], d_GxB.T], axis=1)
    # 2. The target's one forward over x[n-1], d_1..d_gamma.
    feed_BxG1 = jnp.concatenate([_take(seq_BxS, (n_B - 1)[:, None]), d_BxG], axis=1)
    pos_BxG1 = jnp.minimum((n_B - 1)[:, None] + jnp.arange(G + 1), context - 1)
    p_logits_BxG1xV, target_cache = forward_cached(target_cfg, target_params, feed_BxG1,
                                                   pos_BxG1, target_cache)
    # 3. Accept in order; correct at the first rejection, or the bonus token.
    p_BxG1xV = probabilities(p_logits_BxG1xV, temperature)
    q_BxGxV = probabilities(q_BxGxV, temperature)
    p_d_BxG = jnp.take_along_axis(p_BxG1xV[:, :G], d_BxG[..., None], axis=-1)[..., 0]
    q_d_BxG = jnp.take_along_axis(q_BxGxV, d_BxG[..., None], axis=-1)[..., 0]
    u_BxG = jax.random.uniform(accept_key, (B, G))
    accept_BxG = (p_d_BxG > 0) if temperature == 0 else (u_BxG * q_d_BxG < p_d_BxG)
    a_B = jnp.sum(jnp.cumprod(accept_BxG.astype(jnp.int32), axis=1), axis=1)
    p_a_BxV = jnp.take_along_axis(p_BxG1xV, a_B[:, None, None], axis=1)[:, 0]
    q_pad_BxG1xV = jnp.concatenate([q_BxGxV, jnp.zeros((B, 1, V), q_BxGxV.dtype)], axis=1)
    q_a_BxV = jnp.take_along_axis(q_pad_BxG1xV, a_B[:, None, None], axis=1)[:, 0]
    residual_BxV = jnp.maximum(p_a_BxV - q_a_BxV, 0.0)
    # A rejection leaves mass where p > q; guard the float case of none (then p itself).
    residual_BxV = jnp.where(jnp.sum(residual_BxV, -1, keepdims=True) > 0, residual_BxV,
                             p_a_BxV)
    if temperature == 0:
      next_B = jnp.argmax(p_a_BxV, axis=-1).astype(jnp.int32)
    else:
      next_B = jax.random.categorical(residual_key, jnp.log(residual_BxV), axis=-1)
    index_G1 = jnp.arange(G + 1)
    proposals_BxG1 = jnp.concatenate([d_BxG, jnp.zeros((B, 1), jnp.int32)], axis=1)
    new_BxG1 = jnp.where(index_G1 < a_B[:, None], proposals_BxG1, next_B[:, None])
    written_BxS = seq_BxS.at[rows_Bx1, n_B[:, None] + index_G1].set(new_BxG1)
    seq_BxS = jnp.where(active_B[:, None], written_BxS, seq_BxS)
    # The on-policy acceptance of the proposals the target judged (0..a, at most gamma - 1).
    beta_BxG = jnp.sum(jnp.minimum(p_BxG1xV[:, :G], q_BxGxV), axis=-1)
    judged_BxG = (index_G1[:G] <= a_B[:, None]) & active_B[:, None]
    return (jnp.where(active_B, n_B + a_B + 1, n_B), seq_BxS, draft_cache, target_cache,
            calls_B + active_B, beta_sum_B + jnp.sum(beta_BxG * judged_BxG, axis=1),
            beta_count_B + jnp.sum(judged_BxG, axis=1), r + 1)

  zeros_B = jnp.zeros((B,), jnp.int32)
  n_B, seq_BxS, _, _, calls_B, beta_sum_B, beta_count_B, _ = jax.lax.while_loop(
      cond, body, (lengths_B.astype(jnp.int32), seq_BxS, draft_cache, target_cache, zeros_B,
                   jnp.zeros((B,), jnp.float32), zeros_B, jnp.asarray(0, jnp.int32)))
  out_BxN = _take(seq_BxS, lengths_B[:, None] + jnp.arange(N))
  return out_BxN, dict(calls=calls_B, tokens=n_B - lengths_B, beta_sum=beta_sum_B,
                       beta_count=beta_count_B)


@dataclasses.dataclass(frozen=True)
class Stats:
  """What the sampler did over a set of prompts: target calls, tokens committed (including the
  last round's overshoot), and the on-policy acceptance sum and count."""
  calls: int
  tokens: int
  beta_sum: float
  beta_count: int

  @property
  def tokens_per_call(self) -> float:
    """Mean tokens per target call: the mean of a + 1 over rounds."""
    return self.tokens / max(self.calls, 1)

  @property
  def alpha_on_policy(self) -> float:
    """Mean beta at the proposals the target judged (the sampler's own text)."""
    return self.beta_sum / max(self.beta_count, 1)

  def __add__(self, other: "Stats") -> "Stats":
    return Stats(self.calls + other.calls, self.tokens + other.tokens,
                 self.beta_sum + other.beta_sum, self.beta_count + other.beta_count)


def window(draft_cfg: TransformerConfig, target_cfg: TransformerConfig, max_new_tokens: int,
           gamma: int) -> int:
  """How many prompt tokens fit: min(contexts) + 1 - max_new_tokens - gamma (UserError when
  none does)."""
  if draft_cfg.vocab_size != target_cfg.vocab_size:
    raise UserError(f"draft and target have different vocabularies ({draft_cfg.vocab_size} and "
                    f"{target_cfg.vocab_size} tokens): speculative decoding needs one")
  if int(gamma) < 1:
    raise UserError(f"gamma = {gamma}: the draft must propose at least one token")
  if int(max_new_tokens) < 1:
    raise UserError(f"max_new_tokens = {max_new_tokens}: must be at least 1")
  context = min(draft_cfg.context, target_cfg.context)
  keep = context + 1 - int(max_new_tokens) - int(gamma)
  if keep < 1:
    raise UserError(f"max_new_tokens {max_new_tokens} + gamma {gamma} leave no room for a prompt "
                    f"in a context of {context} tokens: lower one of them")
  return keep


def prepare(prompts, cfg: TransformerConfig, keep: int):
  """Right-padded int32[B, P] prompts (each its last `keep` tokens; B, P powers of two) and their
  lengths; B's padding rows repeat prompt 0 (their output is dropped)."""
  rows = []
  for i, prompt in enumerate(prompts):
    tokens = generate._as_tokens(prompt, cfg, f"prompt {i}")
    if tokens.size == 0:
      raise UserError(f"prompt {i} is empty: generation needs at least one token to condition on")
    rows.append(tokens[-keep:])
  B = generate._pow2(len(rows))
  lengths = np.array([len(r) for r in rows] + [len(rows[0])] * (B - len(rows)), np.int32)
  tokens_BxP = np.zeros((B, generate._bucket(int(lengths.max()), keep)), np.int32)
  for b in range(B):
    row = rows[b] if b < len(rows) else rows[0]
    tokens_BxP[b, :row.size] = row
  return tokens_BxP, lengths


def speculate(draft, target, prompts, max_new_tokens: int, *, gamma: int,
              temperature: float = 0.0, seed: int = 0) -> tuple[list[list[int]], Stats]:
  """Speculative continuations of `prompts` (token id sequences), in one batch; draft and target
  are (TransformerConfig, params). Returns the continuations (max_new_tokens tokens each) and the
  sampler's Stats over the real rows."""
  (draft_cfg, draft_params), (target_cfg, target_params) = draft, target
  prompts = list(prompts)
  if temperature < 0:
    raise UserError(f"temperature = {temperature}: must be >= 0 (0 is greedy)")
  keep = window(draft_cfg, target_cfg, max_new_tokens, gamma)
  tokens_BxP, lengths = prepare(prompts, target_cfg, keep)
  out, stats = speculative_decode(draft_cfg, target_cfg, draft_params, target_params, tokens_BxP,
                                  lengths, jax.random.key(seed), gamma=int(gamma),
                                  max_new_tokens=int(max_new_tokens),
                                  temperature=float(temperature))
  stats = {k: np.asarray(v)[:len(prompts)] for k, v in stats.items()}
  return (np.asarray(out)[:len(prompts)].tolist(),
          Stats(int(stats["calls"].sum()), int(stats["tokens"].sum()),
                float(stats["beta_sum"].sum()), int(stats["beta_count"].sum())))


def sample(target, prompts, max_new_tokens: int, *, temperature: float = 0.0, seed: int = 0,
           gamma: int = 1) -> list[list[int]]:
  """Plain KV-cached decoding of the target alone (the baseline), with the prompts truncated and
  padded as `speculate` does for `gamma`, in one batch."""
  cfg, params = target
  prompts = list(prompts)
  keep = window(cfg, cfg, max_new_tokens, gamma)
  tokens_BxP, lengths = prepare(prompts, cfg, keep)
  out = generate.decode(cfg, params, tokens_BxP, lengths, np.int32(-1),
                        max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                        key=jax.random.key(seed))
  return np.asarray(out)[:len(prompts)].tolist()
