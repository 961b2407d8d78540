"""experiments/speculative.py end to end on its smoke preset (train two tiny models, analyse the
pair), `python -m launch speculate` on those runs, and the held-out windows' documents."""

import itertools
import json
import os

import numpy as np
import pandas as pd
import pytest

import sweep_helpers
from research.data import text
from research.evals import draft_target as dt

STUDY = os.path.join(sweep_helpers.REPO, "experiments", "speculative.py")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  return sweep_helpers.swept(tmp_path_factory, f"{STUDY}:smoke", "speculative")


def test_the_analysis_writes_every_pair_its_measurements_and_figures(swept):
  pairs = pd.read_csv(swept / "pairs.csv")
  assert list(pairs.draft) == ["d16x1"] and list(pairs.target) == ["d32x2"]
  r = pairs.iloc[0]
  for mode in ("sampled", "greedy"):
    assert 0 < r[f"alpha_{mode}_low"] <= r[f"alpha_{mode}"] <= r[f"alpha_{mode}_high"] <= 1
    assert 1 <= r[f"tokens_per_call_{mode}"] <= r[f"gamma_{mode}"] + 1
    assert r[f"speedup_{mode}"] > 0 and 0 <= r[f"alpha_on_policy_{mode}"] <= 1
  assert r.c > 0 and 0 < r.flop_ratio < 1
  gammas = pd.read_csv(swept / "gammas.csv")
  assert list(gammas.gamma) == [1, 2]
  record = json.loads((swept / "fit.json").read_text())
  assert [m["name"] for m in record["models"]] == ["d16x1", "d32x2"]
  assert record["acceptance"]["sampled"]["pairs"] == 1
  for stem in ("alpha_heatmap", "alpha_vs_gap", "speedup_measured", "speedup_vs_gamma"):
    assert (swept / f"{stem}.png").exists(), stem
  assert "Acceptance" in (swept / "report.md").read_text()


def test_launch_speculate_prints_text_statistics_and_speedup(swept):
  runs = pd.read_csv(swept / "runs.csv").sort_values("N")
  draft, target = (str(swept / "runs" / run) for run in runs.run)
  code, out = sweep_helpers.run("speculate", "--draft", draft, "--target", target, "--prompt",
                                "abc", "--max-new-tokens", "12", "--gamma", "3", "--rounds", "2")
  assert code == 0, out
  assert "tokens per call" in out and "walltime over 2 rounds" in out
  code, out = sweep_helpers.run("speculate", "--draft", draft, "--target", target, "--prompt",
                                "abc", "--max-new-tokens", "64")
  assert code == 2 and "no room" in out


def test_held_out_windows_know_their_documents():
  docs = [(f"d{i}", bytes([65 + i]) * n) for i, n in enumerate((30, 5, 50, 20, 40, 60))]
  data = text.from_documents("test", docs[:2], docs[2:], split_seed=0)
  rows, groups = dt.held_out(data, windows=100, length=15)
  stream = data.source.val
  assert len(rows) == stream.size // 16
  for row, group in zip(rows, groups):  # the first byte's document: 'C' + its index
    assert row[0] == text.DOC_SEPARATOR or row[0] == 67 + group
  assert list(np.unique(groups)) == [0, 1, 2, 3]
  weights = dt.resample_weights(groups, 200, seed=0)
  assert weights.shape == (200, len(rows))
  # Every resample draws 4 documents and, per drawn document, as many windows as it has.
  sizes = np.bincount(groups)
  assert all(np.isin(w.sum(), [sizes[list(c)].sum() for c in _multisets(4)]) for w in weights)
  estimate, draws = dt.ratio_estimate(np.ones(rows[:, 1:].shape), weights)
  assert estimate.value == estimate.low == estimate.high == 1.0 and np.all(draws == 1.0)
  values = np.where(groups[:, None] == 3, 1.0, 0.0) * np.ones(rows[:, 1:].shape)
  estimate, _ = dt.ratio_estimate(values, weights)
  assert estimate.low < estimate.value < estimate.high  # document 3's share varies


def _multisets(k):
  return itertools.combinations_with_replacement(range(k), k)


def test_sequential_tokens_is_the_iid_formula_for_constant_rates_and_more_for_clustered_ones():
  from research.evals import speculative as spec
  constant = np.full((3, 40), 0.6)
  assert dt.sequential_tokens(constant, 4) == pytest.approx(float(spec.expected_tokens(0.6, 4)))
  clustered = np.repeat([[0.2] * 20 + [1.0] * 20], 3, axis=0)  # mean 0.6, in runs
  assert dt.sequential_tokens(clustered, 4) > float(spec.expected_tokens(0.6, 4))
