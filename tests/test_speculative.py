"""research.evals.speculative: exactness of the speculative sampler (greedy: token for token;
sampled: the target's own distribution, by a chi-square test of stated power), its statistics,
and the acceptance arithmetic."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from research.errors import UserError
from research.evals import generate as gen
from research.evals import speculative as spec
from research.models import transformer

SMALL = transformer.TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                      context=48, tied_embeddings=False)


def _pair(base, draft_width=16, draft_layers=1, seeds=(1, 2)):
  target = (base, transformer.init_params(base, jax.random.key(seeds[0])))
  draft_cfg = dataclasses.replace(base, d_model=draft_width, n_layers=draft_layers,
                                  d_ff=2 * draft_width)
  return (draft_cfg, transformer.init_params(draft_cfg, jax.random.key(seeds[1]))), target


def _prompts(lengths, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, n).astype(np.int32) for n in lengths]


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_greedy_speculative_output_is_greedy_target_output(gamma):
  draft, target = _pair(SMALL)
  prompts = _prompts((1, 4, 9), SMALL.vocab_size)
  new = 20
  out, stats = spec.speculate(draft, target, prompts, new, gamma=gamma, temperature=0.0)
  reference = gen.generate(*target, prompts, new)
  assert out == reference
  assert stats.tokens >= 3 * new and stats.calls >= 3 * new / (gamma + 1)
  # Random models rarely agree: most rounds end at a rejection.
  assert 1.0 <= stats.tokens_per_call < gamma + 1
  assert 0.0 <= stats.alpha_on_policy < 1.0


def test_a_draft_equal_to_the_target_is_always_accepted():
  _, target = _pair(SMALL)
  gamma, new = 3, 17
  out, stats = spec.speculate(target, target, _prompts((5,), SMALL.vocab_size), new,
                              gamma=gamma, temperature=1.0, seed=3)
  assert len(out[0]) == new
  assert stats.calls == -(-new // (gamma + 1))  # every round yields gamma + 1 tokens
  assert stats.tokens == stats.calls * (gamma + 1)
  assert stats.alpha_on_policy == pytest.approx(1.0, abs=1e-5)


TINY = transformer.TransformerConfig(vocab_size=4, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                     context=16, tied_embeddings=False)
NEW, DRAWS, TEMPERATURE = 3, 20_000, 0.8
PROMPT = np.array([1, 2, 0], np.int32)


def _sequence_distribution(model, temperature):
  """The exact probability of every continuation of PROMPT (V^NEW of them, lexicographic)."""
  cfg, params = model
  outcomes = np.array(list(itertools.product(range(cfg.vocab_size), repeat=NEW)), np.int32)
  rows = np.concatenate([np.broadcast_to(PROMPT, (len(outcomes), PROMPT.size)), outcomes], 1)
  logits = transformer.apply(cfg, params, jnp.asarray(rows[:, :-1]))
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)
  steps = np.arange(PROMPT.size - 1, rows.shape[1] - 1)
  picked = np.take_along_axis(np.asarray(logp)[:, steps], outcomes[..., None], axis=-1)[..., 0]
  return np.exp(picked.sum(axis=1, dtype=np.float64))


def _counts(outputs, vocab):
  index = np.asarray(outputs) @ (vocab ** np.arange(NEW)[::-1])
  return np.bincount(index, minlength=vocab ** NEW)


def _chi_square(counts, probabilities):
  expected = counts.sum() * probabilities
  return scipy_stats.chisquare(counts, expected).pvalue


def _power(p, alternative, draws, level):
  """Power of the chi-square test at `level` against draws from `alternative`."""
  df = p.size - 1
  noncentrality = draws * np.sum((alternative - p) ** 2 / p)
  return scipy_stats.ncx2.sf(scipy_stats.chi2.ppf(1 - level, df), df, noncentrality)


@pytest.fixture(scope="module")
def tiny_pair():
  return _pair(TINY, draft_width=8, seeds=(4, 5))


def test_sampled_speculative_output_has_the_targets_distribution(tiny_pair):
  draft, target = tiny_pair
  p = _sequence_distribution(target, TEMPERATURE)
  q = _sequence_distribution(draft, TEMPERATURE)
  assert p.sum() == pytest.approx(1.0, abs=1e-5)
  p = p / p.sum()
  level = 1e-3
  # Stated power: a sampler whose output were 10% the draft's own (a missing correction of that
  # size) would be caught with probability >= 0.99 by this many draws.
  mixture = 0.9 * p + 0.1 * q / q.sum()
  assert _power(p, mixture, DRAWS, level) >= 0.99
  prompts = [PROMPT] * DRAWS
  for gamma in (1, 2):
    out, stats = spec.speculate(draft, target, prompts, NEW, gamma=gamma,
                                temperature=TEMPERATURE, seed=gamma)
    counts = _counts(out, TINY.vocab_size)
    assert _chi_square(counts, p) > level, f"gamma {gamma}: not the target's distribution"
    # The same test tells the draft's distribution apart: the sampler did correct it.
    assert _chi_square(counts, q / q.sum()) < level
    assert 1.0 < stats.tokens_per_call < gamma + 1
  # The plain sampled baseline draws from the same distribution.
  plain = spec.sample(target, prompts, NEW, temperature=TEMPERATURE, seed=9)
  assert _chi_square(_counts(plain, TINY.vocab_size), p) > level


def test_on_policy_alpha_matches_the_teacher_forced_acceptance(tiny_pair):
  """With gamma 1 every round judges one proposal at the committed text: the mean on-policy beta
  over many rows estimates E[beta] over the target's own continuations."""
  draft, target = tiny_pair
  _, stats = spec.speculate(draft, target, [PROMPT] * 4096, 1, gamma=1, temperature=1.0)
  (dc, dp), (tc, tp) = draft, target
  beta = spec.acceptance(transformer.apply(tc, tp, PROMPT[None]),
                         transformer.apply(dc, dp, PROMPT[None]), 1.0)
  assert stats.beta_count == 4096
  assert stats.alpha_on_policy == pytest.approx(float(beta[0, -1]), abs=1e-5)


def test_acceptance_arithmetic():
  p = jnp.log(jnp.array([0.5, 0.3, 0.2]))
  q = jnp.log(jnp.array([0.2, 0.3, 0.5]))
  assert float(spec.acceptance(p, q, 1.0)) == pytest.approx(0.7, abs=1e-6)  # 1 - TV (0.3)
  assert float(spec.acceptance(p, q, 0.0)) == 0.0
  assert float(spec.acceptance(p, p, 0.0)) == 1.0
  assert spec.expected_tokens(0.0, 4) == 1.0
  assert spec.expected_tokens(1.0, 4) == 5.0
  assert spec.expected_tokens(0.5, 2) == pytest.approx(1.75)
  # Leviathan et al. (2023), Sec. 3.4: alpha 0.8, gamma 5, c 0.05 -> about 3.69x.
  assert spec.predicted_speedup(0.8, 5, 0.05) == pytest.approx((1 - 0.8 ** 6) / 0.2 / 1.25)
  gamma, best = spec.best_gamma(0.8, 0.05)
  assert best == max(spec.predicted_speedup(0.8, g, 0.05) for g in range(1, 17))
  assert spec.best_gamma(0.1, 0.5)[0] == 1


def test_bad_input_is_a_clear_error(tiny_pair):
  draft, target = tiny_pair
  with pytest.raises(UserError, match="no room"):
    spec.speculate(draft, target, [PROMPT], 14, gamma=4)
  with pytest.raises(UserError, match="at least one token"):
    spec.speculate(draft, target, [PROMPT], 3, gamma=0)
  other = (dataclasses.replace(draft[0], vocab_size=8), draft[1])
  with pytest.raises(UserError, match="different vocabularies"):
    spec.speculate(other, target, [PROMPT], 3, gamma=1)
  with pytest.raises(UserError, match="temperature"):
    spec.speculate(draft, target, [PROMPT], 3, gamma=1, temperature=-1.0)
