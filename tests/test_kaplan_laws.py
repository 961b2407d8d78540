"""Kaplan's laws are taken where each holds (experiments/kaplan.py, issue 20), on points made from
Kaplan et al. (2020)'s eq. 1.5 with its published constants (Table 2: alpha_N 0.076, alpha_D 0.095,
N_c 8.8e13, D_c 5.4e13) over the cpu preset's grid of sizes and token counts."""

import numpy as np
import pandas as pd
import pytest

from experiments import kaplan

ALPHA_N, ALPHA_D, N_C, D_C = 0.076, 0.095, 8.8e13, 5.4e13
SIZES = np.geomspace(5e3, 1.6e5, 6)
TOKENS = 8.192e6 / 2.0 ** np.arange(5, -1, -1)


def eq_1_5(d_c=D_C, noise=0.0, seeds=1):
  rng = np.random.default_rng(0)
  rows = []
  for n in SIZES:
    for d in TOKENS:
      for seed in range(seeds):
        loss = ((N_C / n) ** (ALPHA_N / ALPHA_D) + d_c / d) ** ALPHA_D
        rows.append(dict(run=f"{n:.0f}-{d:.0f}-{seed}", seed=seed, N=1.3 * n, N_nonemb=n, D=d,
                         C=6 * 1.3 * n * d, val_loss=loss * np.exp(noise * rng.normal())))
  return pd.DataFrame(rows)


def test_each_law_where_it_holds_is_nearer_the_truth_than_at_the_largest_d_or_n():
  points = eq_1_5()
  laws = kaplan.laws(points, "N_nonemb", "6ND", 0)
  joint = laws["L(N, D)"]["params"]
  assert joint["alpha_n"] == pytest.approx(ALPHA_N, abs=2e-3)
  assert joint["alpha_d"] == pytest.approx(ALPHA_D, abs=2e-3)
  s_d, s_n = kaplan.local_slopes(points, "N_nonemb")
  law_n = laws["L(N), converged in D"]
  used = points.run.isin(law_n["runs"]).to_numpy()
  assert 3 <= law_n["sizes_used"] < len(SIZES) and (s_d[used] < kaplan.SLOPE).all()
  assert (points.D[used] == TOKENS.max()).all()
  largest_d = laws["alpha_N by D"][f"{TOKENS.max():.6g}"]
  assert abs(law_n["alpha"] - ALPHA_N) < abs(largest_d - ALPHA_N)
  law_d = laws["L(D), data-limited"]
  used = points.run.isin(law_d["runs"]).to_numpy()
  assert law_d["points"] >= 3 and (s_n[used] < kaplan.SLOPE).all()
  assert (points.N_nonemb[used] == SIZES.max()).all()
  largest = points[points.N_nonemb == SIZES.max()]
  at_largest_n = kaplan._kaplan_constants(kaplan._power(largest.D, largest.val_loss))["alpha"]
  assert abs(law_d["alpha"] - ALPHA_D) < abs(at_largest_n - ALPHA_D)


def test_a_regime_the_grid_does_not_reach_is_not_measured_and_says_why():
  laws = kaplan.laws(eq_1_5(d_c=D_C / 100), "N_nonemb", "6ND", 0)  # every size converged in D
  assert laws["L(N), converged in D"]["sizes_used"] == len(SIZES)
  assert laws["L(N), converged in D"]["alpha"] == pytest.approx(ALPHA_N, abs=1e-3)
  assert "alpha" not in laws["L(D), data-limited"]
  assert "the law needs 3" in laws["L(D), data-limited"]["skipped"]


def test_short_runs_are_left_out_and_seeds_are_resampled_within_their_points():
  points = eq_1_5(noise=0.004, seeds=2)
  laws = kaplan.laws(points, "N_nonemb", "6ND", 20, min_tokens=TOKENS[1])
  law_d = laws["L(D), data-limited"]
  assert law_d["left_out_short"] == len(SIZES) * 2  # the shortest token count, two seeds
  assert points.D[points.run.isin(law_d["runs"])].min() == TOKENS[1]
  for key in ("L(N), converged in D", "L(D), data-limited"):
    boot = laws[key]["bootstrap"]
    assert boot["resample"].startswith("seeds within design points (")
    assert boot["resample"].endswith(" points, 2 seeds each)") and boot["n_failed"] == 0
    lo, hi = boot["interval"]
    assert lo <= laws[key]["alpha"] <= hi


def test_the_c_min_frontier_is_fitted_on_the_whole_envelope_and_counts_its_edges():
  frontier = kaplan.laws(eq_1_5(), "N_nonemb", "6ND", 0)["C_min frontier"]
  env = frontier["envelope"]
  assert len(env["C"]) == 40 and 0 < sum(env["interior"]) < 40
  edges = 40 - sum(env["interior"])
  assert f"({edges} of 40)" in frontier["edges"]
  fitted = (frontier["X_c"] / np.asarray(env["C"])) ** frontier["alpha"]
  assert np.max(np.abs(np.log(fitted / np.asarray(env["L"])))) < 0.02  # the law follows all of it
