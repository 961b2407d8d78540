"""research.evals.generate (KV-cached greedy generation, teacher-forced scoring) and
research.evals.metrics."""

import dataclasses

import jax
import numpy as np
import pytest

from research.errors import UserError
from research.evals import generate as gen
from research.evals import metrics
from research.models import transformer

TINY = transformer.TransformerConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                     context=32)
# Every option the cached path reimplements: positions, readout, muP multipliers, norm.
VARIANTS = {
    "rotary-tied-standard": {},
    "learned-untied-layernorm": dict(positions="learned", tied_embeddings=False, norm="layernorm"),
    "rotary-untied-mup": dict(tied_embeddings=False, parametrization="mup", mup_base_d_model=16,
                              mup_base_d_head=8),
    "learned-tied-mup": dict(positions="learned", parametrization="mup", mup_base_d_model=16,
                             mup_base_d_head=8),
}
LENGTHS = (1, 2, 5, 9, 16)
NEW = 6


def _model(**overrides):
  cfg = dataclasses.replace(TINY, **overrides)
  return cfg, transformer.init_params(cfg, jax.random.key(1))


def _prompts(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, TINY.vocab_size, n).astype(np.int32) for n in lengths]


_full_forward = jax.jit(transformer.apply, static_argnums=0)


def _greedy_uncached(cfg, params, prompts, steps):
  """Greedy decoding by full forward passes, all prompts at once (right-padded to the context:
  causal, so padding does not change a row's last real position): per prompt the tokens and
  the logits each was chosen from."""
  seqs = [list(p) for p in prompts]
  logits = [[] for _ in prompts]
  for _ in range(steps):
    x = np.zeros((len(seqs), cfg.context), np.int32)
    for b, seq in enumerate(seqs):
      x[b, :len(seq)] = seq
    out = np.asarray(_full_forward(cfg, params, x))
    for b, seq in enumerate(seqs):
      logits[b].append(out[b, len(seq) - 1])
      seq.append(int(np.argmax(logits[b][-1])))
  return [seq[len(p):] for seq, p in zip(seqs, prompts)], [np.stack(l) for l in logits]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_decode_equals_full_forward(name):
  cfg, params = _model(**VARIANTS[name])
  prompts = _prompts(LENGTHS)
  tokens_BxP = np.zeros((len(prompts), 16), np.int32)
  for b, p in enumerate(prompts):
    tokens_BxP[b, :len(p)] = p
  out, logits = gen.decode(cfg, params, tokens_BxP, np.array(LENGTHS, np.int32), np.int32(-1),
                           max_new_tokens=NEW, return_logits=True)
  want_tokens, want_logits = _greedy_uncached(cfg, params, prompts, NEW)
  for b in range(len(prompts)):
    assert np.asarray(out[b]).tolist() == want_tokens[b], (name, b)
    np.testing.assert_allclose(np.asarray(logits[b]), want_logits[b], atol=1e-5, rtol=0)


def test_generate_batches_truncates_and_stops():
  cfg, params = _model(**VARIANTS["learned-untied-layernorm"])
  prompts = _prompts((3, 1, 16, 7, 2, 40))  # mixed lengths, one longer than the window
  kept = [p[-(cfg.context + 1 - NEW):] for p in prompts]
  expected = _greedy_uncached(cfg, params, kept, NEW)[0]
  # Batches of 4 (the second padded from 2 rows to 2), lists and arrays alike, caller's order.
  got = gen.generate(cfg, params, [p.tolist() if i % 2 else p for i, p in enumerate(prompts)],
                     NEW, batch_size=4)
  assert got == expected
  # A stop token ends the continuation and is included.
  stop = expected[3][2]
  stopped = gen.generate(cfg, params, prompts, NEW, stop_token=stop, batch_size=4)
  for want, have in zip(expected, stopped):
    cut = want.index(stop) + 1 if stop in want else len(want)
    assert have == want[:cut]
  assert stopped[3][-1] == stop and len(stopped[3]) <= 3


def test_generate_bad_input():
  cfg, params = _model()
  with pytest.raises(UserError, match="max_new_tokens"):
    gen.generate(cfg, params, [[1, 2]], cfg.context + 1)
  with pytest.raises(UserError, match="empty"):
    gen.generate(cfg, params, [[]], 2)
  with pytest.raises(UserError, match="vocab_size"):
    gen.generate(cfg, params, [[1, 256]], 2)
  with pytest.raises(UserError, match="continuation"):
    gen.score(cfg, params, [([1], list(range(cfg.context + 1)))])


def test_score_matches_full_forward_and_exact_match_equivalence():
  """all_correct (one teacher-forced pass) == (greedy generation reproduces the target), with
  targets that end at the stop token."""
  cfg, params = _model(**VARIANTS["learned-untied-layernorm"])
  prompts = _prompts((2, 5, 11, 4, 8, 3), seed=1)
  # One compiled shape for every generate call here (max_new_tokens NEW + 1, one batch).
  free = gen.generate(cfg, params, prompts, NEW + 1)
  stop = int(np.bincount(np.concatenate(free)).argmax())  # a token greedy decoding emits
  greedy = [g[:NEW] for g in gen.generate(cfg, params, prompts, NEW + 1, stop_token=stop)]
  rng = np.random.default_rng(2)
  pairs = []
  for prompt, g in zip(prompts, greedy):
    if g[-1] != stop:
      g = g + [stop]  # ends at the stop token; a correct target only if the model emits it next
    pairs.append((prompt, g))
    if len(g) > 1:  # one token before the stop changed: not reproduced
      wrong, i = list(g), rng.integers(len(g) - 1)
      wrong[i] = (wrong[i] + 1) % cfg.vocab_size
      if stop not in wrong[:-1]:
        pairs.append((prompt, wrong))
    pairs.append((prompt, rng.integers(0, cfg.vocab_size, 3).tolist() + [stop]))
  scores = gen.score(cfg, params, pairs)
  # Room for every target: generation stops at the stop token, so it returns the target exactly
  # iff it reproduces it.
  generated = gen.generate(cfg, params, [c for c, _ in pairs], NEW + 1, stop_token=stop)
  n_true = 0
  for (context, target), s, g in zip(pairs, scores, generated):
    assert s.n_tokens == len(target)
    assert s.all_correct == (g == target), (context, target, g)
    n_true += s.all_correct
  assert 0 < n_true < len(pairs)

  # Per-token values against a direct full forward pass.
  context, target = pairs[1]
  full = np.concatenate([context, target])
  logits = np.asarray(transformer.apply(cfg, params, full[None, :-1]))[0, len(context) - 1:]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  picked = logp[np.arange(len(target)), target]
  probs = np.exp(logp)
  brier = (probs ** 2).sum(-1) - 2 * probs[np.arange(len(target)), target] + 1
  s = scores[1]
  np.testing.assert_allclose(s.logprobs, picked, atol=1e-5)
  np.testing.assert_array_equal(s.correct, logits.argmax(-1) == target)
  np.testing.assert_allclose(s.brier, brier, atol=1e-5)
  assert s.logprob == pytest.approx(picked.sum(), abs=1e-4)
  assert s.token_accuracy == pytest.approx(np.mean(s.correct))


def test_score_left_truncates_long_contexts():
  cfg, params = _model()
  context, target = _prompts((50, 4), seed=3)
  keep = cfg.context + 1 - len(target)
  long, short = gen.score(cfg, params, [(context, target), (context[-keep:], target)])
  np.testing.assert_allclose(long.logprobs, short.logprobs, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, d", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
    ("flaw", "lawn", 2), ("abc", "abc", 0), ([1, 2, 3], [1, 3], 1), ([1, 2], [2, 1], 2),
    ("intention", "execution", 5)])
def test_edit_distance(a, b, d):
  assert metrics.edit_distance(a, b) == d
  assert metrics.edit_distance(b, a) == d


def test_multiple_choice():
  mc = metrics.multiple_choice(np.log([0.2, 0.5, 0.3]), 1)
  assert mc.grade == 1.0 and mc.correct
  np.testing.assert_allclose(mc.probs, [0.2, 0.5, 0.3])
  assert mc.brier == pytest.approx(0.04 + 0.25 + 0.09)
  assert mc.brier_bigbench == pytest.approx((0.04 + 0.25 + 0.09) / 3)
  assert mc.confidence == pytest.approx(0.5)
  wrong = metrics.multiple_choice([-1.0, -3.0], 1)  # unnormalised log-likelihoods
  p = 1 / (1 + np.exp(-2.0))
  assert wrong.grade == 0.0 and not wrong.correct
  assert wrong.brier == pytest.approx(p ** 2 + (1 - p - 1) ** 2)
  assert metrics.multiple_choice([0.0, 0.0, -1.0], [0, 2]).grade == 1.0  # tie: the first
  assert metrics.multiple_choice([-2.0, -1.0], target_scores=[0.0, 0.5]).grade == 0.5
  with pytest.raises(UserError):
    metrics.multiple_choice([0.0, 1.0], 2)


def test_choice_mass_decomposes_the_grade():
  """Schaeffer et al. 2024's steps: likelihood of the correct choice, renormalised, top wrong."""
  from research.evals import scorer
  # unnormalised likelihoods 0.1 (correct), 0.3, 0.1: log P = log 0.1; renormalised 0.2; wrong 0.6
  log_correct, renorm, wrong = scorer._choice_mass(np.log([0.1, 0.3, 0.1]), [1, 0, 0])
  assert log_correct == pytest.approx(np.log(0.1)) and renorm == pytest.approx(0.2)
  assert wrong == pytest.approx(0.6)
  # two correct choices (BIG-bench target_scores > 0) pool their mass
  log_correct, renorm, wrong = scorer._choice_mass(np.log([0.2, 0.05, 0.25]), [1, 0, 0.5])
  assert log_correct == pytest.approx(np.log(0.45)) and renorm == pytest.approx(0.9)
  assert wrong == pytest.approx(0.1)
  assert scorer._choice_mass([-1e4, -1e4 - 1], [0, 1])[0] == pytest.approx(-1e4 - 1)  # no underflow


def test_ece_and_reliability():
  rng = np.random.default_rng(0)
  conf = rng.uniform(0, 1, 200_000)
  calibrated = rng.uniform(0, 1, conf.size) < conf
  assert metrics.ece(conf, calibrated) < 0.01
  overconfident = rng.uniform(0, 1, conf.size) < conf * 0.6
  assert metrics.ece(conf, overconfident) == pytest.approx(0.2, abs=0.01)
  table = metrics.reliability([0.05, 0.1, 0.95, 1.0], [1, 0, 1, 1], bins=10)
  assert table.count.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
  assert table.accuracy[0] == 0.5 and np.isnan(table.accuracy[1])
  assert table.confidence[-1] == pytest.approx(0.975)
  assert metrics.ece([0.9, 0.9], [1, 1]) == pytest.approx(0.1)


def test_breakthroughness_and_linearity():
  scales = np.logspace(4, 7, 7)
  ramp = np.linspace(0, 1, 7)
  step = np.array([0, 0, 0, 0, 1, 1, 1.0])
  smooth_step = np.array([0.0, 0.01, 0.0, 0.02, 0.9, 0.95, 1.0])
  assert metrics.breakthroughness(scales, ramp) == pytest.approx(6.0)
  assert metrics.linearity(scales, ramp) == pytest.approx(6.0)
  assert metrics.breakthroughness(scales, step) == np.inf
  assert metrics.breakthroughness(scales, smooth_step) > 3 * metrics.breakthroughness(scales, ramp)
  assert metrics.linearity(scales, ramp) > metrics.linearity(scales, smooth_step)
  # Order by scale, and a decline is negative.
  assert metrics.breakthroughness(scales[::-1], ramp[::-1]) == pytest.approx(6.0)
  assert metrics.linearity(scales, ramp[::-1]) == pytest.approx(-6.0)
  assert metrics.breakthroughness(scales, np.zeros(7)) == 0.0


def test_bootstrap_interval():
  values = np.random.default_rng(0).normal(1.0, 1.0, 400)
  low, high = metrics.bootstrap_interval(values, n=1000, seed=0)
  assert low < values.mean() < high
  assert high - low == pytest.approx(2 * 1.96 / 20, rel=0.2)
  assert metrics.bootstrap_interval(values, seed=0) == (low, high)
  assert metrics.bootstrap_interval(np.zeros(10)) == (0.0, 0.0)
  median_low, median_high = metrics.bootstrap_interval(values, statistic=np.median)
  assert median_low < np.median(values) < median_high
