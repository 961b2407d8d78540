"""The two-step forecast (research/scaling/two_step.py) on ladders drawn from a known chain."""

import math

import numpy as np
import pandas as pd
import pytest

from research.errors import UserError
from research.scaling import two_step

E, A, ALPHA = 0.8, 40.0, 0.35        # step 1: answer loss (nats) = E + A N^-alpha
L0, K = 1.6, 6.0                     # step 2: exact match = 1 / (1 + exp(K (loss - L0)))


def ladder(sizes, seeds, noise=0.01, seed=0):
  """One row per (size, seed): a run's final answer loss and exact match (noisy, as seeds are)."""
  rng = np.random.default_rng(seed)
  rows = []
  for n in sizes:
    for s in seeds:
      loss = (E + A * n ** -ALPHA) * math.exp(rng.normal(0, noise))
      metric = float(np.clip(two_step.link(loss, L0, K) + rng.normal(0, noise), 0, 1))
      rows.append(dict(run=f"n{n:.0f}-s{s}", design=f"{n:.0f}", N=n, loss=loss, metric=metric))
  return pd.DataFrame(rows)


def true_crossing(level=0.5):
  loss = two_step.loss_at(level, L0, K)
  return (A / (loss - E)) ** (1 / ALPHA)


def test_the_chain_forecasts_held_out_models_and_the_crossing():
  sizes = np.geomspace(1e4, 4e6, 10)
  rows = ladder(sizes, seeds=(0, 1, 2))
  small = rows[rows.N <= sizes[6]]          # fitted on the 7 smallest sizes
  held_out = np.array(sizes[8:])            # two sizes beyond 4x the largest fitted
  chain = two_step.fit_two_step(small, small, inputs={"X": "N"})
  assert chain.law.converged and chain.link["converged"]
  loss, metric = chain.predict({"X": held_out})
  truth = two_step.link(E + A * held_out ** -ALPHA, L0, K)
  assert np.all(np.abs(metric - truth) < 0.05), (metric, truth)
  assert abs(math.log10(chain.crossing(0.5) / true_crossing())) < 0.1
  boot = two_step.bootstrap_two_step(chain, small, small, {"X": held_out}, n_boot=60)
  assert boot["n_used"] + boot["n_failed"] == 60 and boot["n_used"] >= 50, boot["failures"]
  for (lo, hi), t in zip(boot["metric_interval"], truth):
    assert lo - 0.02 <= t <= hi + 0.02 and hi - lo < 0.3
  lo, hi = boot["crossing_interval"]
  assert lo <= chain.crossing(0.5) <= hi and hi / lo < 3


def test_one_seed_per_size_gives_no_spread_and_says_nothing_is_dropped():
  rows = ladder(np.geomspace(1e4, 1e6, 8), seeds=(0,))
  chain = two_step.fit_two_step(rows, rows)
  boot = two_step.bootstrap_two_step(chain, rows, rows, {"X": [2e6]}, n_boot=20)
  (lo, hi), = boot["loss_interval"]
  assert boot["n_failed"] == 0 and hi - lo < 1e-6  # resampling seeds within a size: nothing moves
  assert lo == pytest.approx(boot["loss"][0], rel=1e-4)


def test_a_level_below_the_floor_is_never_reached():
  rows = ladder(np.geomspace(1e4, 1e6, 8), seeds=(0, 1))
  chain = two_step.fit_two_step(rows, rows)
  chain.link = dict(chain.link, L0=0.5)   # the metric would need a loss below the floor E = 0.8
  assert chain.crossing(0.5) is None
  assert two_step.loss_at(0.0, L0, K) is None and two_step.loss_at(1.0, L0, K) is None
  chain.link = dict(chain.link, L0=L0)
  assert abs(math.log10(chain.crossing(0.5) / true_crossing())) < 0.1


def test_never_reached_resamples_are_counted_and_kept_at_infinity():
  rows = ladder(np.geomspace(1e4, 1e6, 8), seeds=(0, 1, 2))
  chain = two_step.fit_two_step(rows, rows)
  # 0.999 needs a loss of 1.6 - ln(999)/6 = 0.45 nats, below the floor E = 0.8: never reached
  boot = two_step.bootstrap_two_step(chain, rows, rows, {"X": [1e7]}, n_boot=30, level=0.999)
  assert boot["crossing"] is None and boot["n_used"] + boot["n_failed"] == 30
  assert boot["never_reached"] == boot["n_used"] > 0
  assert boot["crossing_interval"] == [math.inf, math.inf]


def test_bad_points_are_refused_in_one_line():
  rows = ladder(np.geomspace(1e4, 1e6, 6), seeds=(0,))
  bad = rows.copy()
  bad.loc[2, "loss"] = float("nan")
  with pytest.raises(UserError, match="not finite"):
    two_step.fit_two_step(bad, rows)
  with pytest.raises(UserError, match="need at least 3"):
    two_step.fit_two_step(rows, rows.head(2))
  with pytest.raises(UserError, match="no column"):
    two_step.fit_two_step(rows.drop(columns="N"), rows)
  with pytest.raises(UserError, match="chance"):
    two_step.fit_two_step(rows, rows, chance=1.0)


def metrics_table(sizes, seeds=(0, 1, 2), steps=(25, 50, 75, 100), noise=0.01):
  """A long metrics table as the emergence study writes it, for one generative task whose answer
  loss follows the known chain (earlier checkpoints: a larger loss, on the same link)."""
  rng = np.random.default_rng(1)
  rows = []
  for n in sizes:
    for s in seeds:
      run = f"n{n:.0f}-s{s}"
      for step in steps:
        loss = (E + A * n ** -ALPHA) * (100 / step) ** 0.2 * math.exp(rng.normal(0, noise))
        em = float(np.clip(two_step.link(loss, L0, K) + rng.normal(0, noise), 0, 1))
        at = dict(run=run, N=n, C=6 * n * 1e6 * step / 100, step=step, seed=s,
                  positions="rotary", task="add3")
        rows += [dict(at, metric="target_logprob", value=-loss),
                 dict(at, metric="exact_match", value=em),
                 dict(at, metric="token_accuracy", value=max(em, 1e-3) ** 0.25),
                 dict(at, metric="answer_tokens", value=4.0)]
  return pd.DataFrame(rows)


def test_held_out_models_are_forecast_from_a_quarter_of_their_compute():
  from research.scaling import ability_forecast as af
  sizes = np.geomspace(1e4, 4e6, 10)
  df = metrics_table(sizes)
  parts = af.split(df, heldout_rungs=2, fit_fraction=0.25)
  assert parts["heldout"] == list(sizes[-2:])
  assert max(parts["fit_sizes"]) <= 0.25 * sizes[-2] and len(parts["fit_sizes"]) == 6
  result = af.forecast_task(df, "add3", parts, n_boot=40)
  truth = two_step.link(E + A * sizes[-2:] ** -ALPHA, L0, K)
  two = result["methods"]["two_step"]
  assert np.all(np.abs(np.array(two["predicted"]) - truth) < 0.08), (two, truth)
  assert result["n50_observed"] is not None
  rows = af.table([result], tolerance_metric=0.10, tolerance_decades=0.3)
  assert {r["method"] for r in rows} == set(af.METHODS) and len(rows) == 6
  two_rows = [r for r in rows if r["method"] == "two_step"]
  assert all(r["within"] for r in two_rows) and two_rows[0]["n50_within"], two_rows
  assert all(r["lo"] <= r["predicted"] <= r["hi"] for r in two_rows)


def test_a_split_that_leaves_nothing_to_fit_is_refused():
  from research.scaling import ability_forecast as af
  df = metrics_table(np.geomspace(1e4, 1e5, 3), seeds=(0,), steps=(100,))
  with pytest.raises(UserError, match="held-out"):
    af.split(df, heldout_rungs=3, fit_fraction=0.25)
  parts = af.split(df, heldout_rungs=1, fit_fraction=0.01)   # no run is that small
  result = af.forecast_task(df, "add3", parts, n_boot=5)
  assert result["methods"]["two_step"]["note"].startswith("no fit")


def test_one_seed_per_size_residual_bootstrap_gives_a_spread_that_covers_the_truth():
  rows = ladder(np.geomspace(1e4, 1e6, 8), seeds=(0,), noise=0.02)
  chain = two_step.fit_two_step(rows, rows)
  boot = two_step.bootstrap_two_step(chain, rows, rows, {"X": [2e6]}, n_boot=40,
                                     resample="residuals")
  (lo, hi), = boot["loss_interval"]
  assert boot["resample"] == "residuals" and boot["n_used"] + boot["n_failed"] == 40
  assert hi - lo > 1e-3 and lo <= E + A * 2e6 ** -ALPHA <= hi
  with pytest.raises(UserError, match="resample"):
    two_step.bootstrap_two_step(chain, rows, rows, {"X": [2e6]}, resample="design")


def test_the_link_fits_its_ends_when_asked():
  loss = np.linspace(0.5, 2.5, 60)
  metric = two_step.link(loss, 1.4, 5.0, chance=0.25, upper=0.9)
  fit = two_step.fit_link(loss, metric, chance=None, upper=None)
  assert fit["converged"]
  assert fit["chance"] == pytest.approx(0.25, abs=1e-3) and fit["upper"] == pytest.approx(
      0.9, abs=1e-3) and fit["L0"] == pytest.approx(1.4, abs=1e-3)
  refit = two_step.fit_link(loss, metric, chance=None, upper=1.0, start=fit)
  assert refit["upper"] == 1.0 and refit["converged"]
  with pytest.raises(UserError, match="4 parameters need at least 5"):
    two_step.fit_link(loss[:4], metric[:4], chance=None, upper=None)
