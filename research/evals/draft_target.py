"""Every (draft, target) pair of a ladder of language models on held-out text: the exact
acceptance rate alpha (research.evals.speculative.acceptance, teacher-forced), the greedy
agreement rate and the loss gap, with bootstrap intervals over documents; and the walltime of
decoding, measured in alternating rounds.

Held-out windows come from a run's own data (research.data.text): non-overlapping windows spread
over the held-out stream, each assigned to the document its first token belongs to (a generated
language has no documents: each window is its own group). The bootstrap resamples documents, and
windows within each drawn document.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from research.data import text
from research.evals import speculative
from research.models import transformer


def held_out(data: text.TextData, windows: int, length: int) -> tuple[np.ndarray, np.ndarray]:
  """int32[W, length + 1] held-out windows and int[W] the document of each (its first token's).

  From a corpus, `windows` non-overlapping windows spread evenly over the whole held-out stream
  (every document is represented in proportion to its length; fewer windows when the text is
  short); from a generated language, its first validation rows, each its own group.
  """
  source = data.source
  stream = getattr(source, "val", None)
  if stream is None:  # a generated language: no documents
    rows = source.val_rows(data.split_seed, windows, length + 1)
    return rows.astype(np.int32), np.arange(len(rows))
  if not isinstance(stream, np.ndarray):  # prepared shards: read the held-out split once
    stream = stream[np.arange(stream.size)]
  separator = data.info.get("tokenizer", {}).get("eot_id", text.DOC_SEPARATOR)
  available = stream.size // (length + 1)
  index = np.unique(np.linspace(0, available - 1, min(windows, available)).round().astype(int))
  starts = index * (length + 1)
  rows = stream[starts[:, None] + np.arange(length + 1)].astype(np.int32)
  documents = np.cumsum(stream == separator)  # separators up to and including t
  return rows, documents[starts] - (stream[starts] == separator)


def log_probs(cfg: transformer.TransformerConfig, params, rows_WxL1: np.ndarray,
              batch: int = 16) -> np.ndarray:
  """float32[W, L, V] log-probabilities of every next token of the windows (teacher-forced)."""
  forward = jax.jit(lambda p, x: jax.nn.log_softmax(transformer.apply(cfg, p, x), axis=-1))
  out = [np.asarray(forward(params, jnp.asarray(rows_WxL1[i:i + batch, :-1])))
         for i in range(0, len(rows_WxL1), batch)]
  return np.concatenate(out)


def nll(logp_WxLxV: np.ndarray, rows_WxL1: np.ndarray) -> np.ndarray:
  """float64[W, L] nats of each target token."""
  return -np.take_along_axis(logp_WxLxV, rows_WxL1[:, 1:, None], axis=-1)[..., 0].astype(float)


def beta(target_logp, draft_logp, temperature: float) -> np.ndarray:
  """float64[W, L] acceptance per position at `temperature` (0: argmax agreement)."""
  return np.asarray(speculative.acceptance(jnp.asarray(target_logp), jnp.asarray(draft_logp),
                                           temperature), float)


def sequential_tokens(beta_WxL: np.ndarray, gamma: int) -> float:
  """Mean tokens per round over every round start t of the windows, with proposal k of a round
  accepted with probability beta[t + k] (the held-out positions' own rates, in order):
  1 + sum_{k=1..gamma} prod_{i<k} beta[t + i]. Against (1 - alpha^(gamma+1)) / (1 - alpha) it
  shows what the i.i.d. assumption misses: rates that vary and cluster along the text."""
  W, L = beta_WxL.shape
  starts = L - gamma + 1
  if starts < 1:
    raise ValueError(f"windows of {L} positions hold no round of gamma {gamma}")
  total, survive = np.ones((W, starts)), np.ones((W, starts))
  for k in range(gamma):
    survive = survive * beta_WxL[:, k:k + starts]
    total = total + survive
  return float(total.mean())


def resample_weights(groups_W: np.ndarray, n: int, seed: int) -> np.ndarray:
  """float[n, W] bootstrap counts of each window, two-stage: documents drawn with replacement,
  then each drawn document's windows with replacement (a cluster bootstrap; one stage where
  every window is its own document)."""
  ids, index = np.unique(groups_W, return_inverse=True)
  members = [np.flatnonzero(index == g) for g in range(ids.size)]
  rng = np.random.default_rng(seed)
  weights = np.zeros((n, groups_W.size))
  for r in range(n):
    for g in rng.integers(0, ids.size, ids.size):
      chosen = members[g] if members[g].size == 1 else rng.choice(members[g], members[g].size)
      np.add.at(weights[r], chosen, 1.0)
  return weights


@dataclasses.dataclass(frozen=True)
class Estimate:
  value: float
  low: float
  high: float

  def row(self, name: str) -> dict:
    return {name: self.value, f"{name}_low": self.low, f"{name}_high": self.high}


def ratio_estimate(values_WxL: np.ndarray, weights_RxW: np.ndarray) -> tuple[Estimate, np.ndarray]:
  """The mean of values over every position, its 95% percentile interval over the resampled
  window counts, and the resampled means float[R]."""
  sums_W, count = values_WxL.sum(axis=1), values_WxL.shape[1]
  value = sums_W.sum() / (sums_W.size * count)
  draws = (weights_RxW @ sums_W) / (weights_RxW.sum(axis=1) * count)
  low, high = np.percentile(draws, [2.5, 97.5])
  return Estimate(float(value), float(low), float(high)), draws


def _cached_forwards(cfg: transformer.TransformerConfig, positions: int, steps: int):
  """A jitted loop of `steps` cached forwards of `positions` new tokens each at batch 1 (the
  tokens differ per step, so nothing is hoisted out of the loop)."""
  from research.evals import generate
  tokens_Nx1xS = jax.random.randint(jax.random.key(0), (steps, 1, positions), 0, cfg.vocab_size)
  start = cfg.context // 4

  def run(params):
    def body(i, cache):
      pos_1xS = (start + i % 8 + jnp.arange(positions))[None]
      return generate.forward_cached(cfg, params, tokens_Nx1xS[i], pos_1xS, cache)[1]
    return jax.lax.fori_loop(0, steps, body, generate.empty_cache(cfg, 1))

  return jax.jit(run)


def verify_cost(cfg: transformer.TransformerConfig, params, positions: int, rounds: int,
                steps: int = 32) -> float:
  """The time of one cached forward over `positions` new tokens over that of one token (batch 1,
  the two taking turns over `rounds` rounds; the median of the per-round ratios). Leviathan et
  al.'s walltime model takes it to be 1; on a CPU, where a step is compute-bound, it grows with
  the positions."""
  if not 1 <= positions <= cfg.context - cfg.context // 4 - 8:
    raise ValueError(f"positions {positions}: does not fit the context {cfg.context}")
  many, one = _cached_forwards(cfg, positions, steps), _cached_forwards(cfg, 1, steps)
  times = alternate({"many": lambda: jax.block_until_ready(many(params)),
                     "one": lambda: jax.block_until_ready(one(params))}, rounds)
  return float(np.median(np.array(times["many"]) / np.array(times["one"])))


def alternate(contenders: dict, rounds: int, warmup: bool = True) -> dict[str, list[float]]:
  """Seconds per call of each contender (name -> blocking function), the contenders taking turns
  in each of `rounds` rounds (a noisy machine slows all of them alike); one untimed call each
  first (compilation) when `warmup`."""
  if warmup:
    for function in contenders.values():
      function()
  times = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, function in contenders.items():
      start = time.perf_counter()
      function()
      times[name].append(time.perf_counter() - start)
  return times
