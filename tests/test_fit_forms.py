"""Forms, optimisers, approaches and intervals on synthetic data drawn from known laws."""

import numpy as np
import pytest

from research.errors import UserError
from research.scaling import approaches, table
from research.scaling.fit import bootstrap_law, fit_law, resample_weights
from research.scaling.forms import FORMS, hoffmann_frontier

TRUE = dict(a=np.log(400.0), b=np.log(1500.0), e=np.log(1.7), alpha=0.34, beta=0.28)
TRUE_THETA = np.array(list(TRUE.values()))
SMALL_GRID = FORMS["hoffmann"].grid()[::9]  # 500 starts: enough for a five-parameter fit here


def synthetic_runs(seed: int, noise: float = 0.01):
  """IsoFLOP-like runs: 6 budgets x 7 sizes around the optimum, lognormal noise on L."""
  rng = np.random.default_rng(seed)
  flops = np.repeat(np.geomspace(1e18, 1e21, 6), 7)
  frontier = hoffmann_frontier(TRUE_THETA, flops)
  n = frontier["N_opt"] * np.tile(np.geomspace(0.25, 4.0, 7), 6)
  d = flops / (6 * n)
  loss = FORMS["hoffmann"].loss(TRUE_THETA, dict(N=n, D=d))
  loss = loss * np.exp(noise * rng.normal(size=n.size))
  return n, d, flops, loss


def test_forms_match_their_formulas():
  n, d, x = np.array([1e8, 3e9]), np.array([2e9, 7e10]), np.array([1e19, 1e21])
  a, b, e, alpha, beta = TRUE_THETA
  direct = np.exp(e) + np.exp(a) / n**alpha + np.exp(b) / d**beta
  assert FORMS["hoffmann"].loss(TRUE_THETA, dict(N=n, D=d)) == pytest.approx(direct, rel=1e-12)
  assert FORMS["saturating"].loss([a, e, alpha], dict(X=x)) == pytest.approx(
      np.exp(e) + np.exp(a) * x**-alpha, rel=1e-12)
  assert FORMS["power"].loss([a, alpha], dict(X=x)) == pytest.approx(np.exp(a) * x**-alpha)
  n_c, d_c, a_n, a_d = 6.4e13, 1.8e13, 0.076, 0.095
  kaplan = ((n_c / n)**(a_n / a_d) + d_c / d)**a_d
  got = FORMS["kaplan"].loss([np.log(n_c), np.log(d_c), a_n, a_d], dict(N=n, D=d))
  assert got == pytest.approx(kaplan, rel=1e-12)
  # Extreme starts stay finite in log space (the log-sum-exp parametrisation).
  with np.errstate(over="raise"):
    extreme = FORMS["hoffmann"].log_loss(np.array([25.0, 25.0, 1.0, -50.0, -50.0]), dict(N=n, D=d))
  assert np.all(np.isfinite(extreme)) and np.all(extreme > 900)


def test_frontier_is_the_minimum_at_fixed_compute():
  flops = 1e21
  frontier = hoffmann_frontier(TRUE_THETA, flops)
  assert frontier["a"] + frontier["b"] == pytest.approx(1.0)
  assert 6 * frontier["N_opt"] * frontier["D_opt"] == pytest.approx(flops, rel=1e-9)
  sizes = frontier["N_opt"] * np.geomspace(0.5, 2.0, 101)
  losses = FORMS["hoffmann"].loss(TRUE_THETA, dict(N=sizes, D=flops / (6 * sizes)))
  assert np.argmin(losses) == 50


def test_jax_and_scipy_reach_the_same_optimum():
  n, d, _, loss = synthetic_runs(seed=0)
  ours = fit_law("hoffmann", dict(N=n, D=d), loss, grid=SMALL_GRID, keep=16)
  ref = fit_law("hoffmann", dict(N=n, D=d), loss, grid=SMALL_GRID, keep=16, optimizer="scipy")
  assert ours.converged
  assert ours.value <= ref.value * (1 + 1e-6)
  np.testing.assert_allclose(ours.theta[3:], ref.theta[3:], atol=2e-3)


def test_synthetic_exponents_inside_their_90_percent_intervals():
  hits = []
  for seed in range(5):
    n, d, _, loss = synthetic_runs(seed=seed + 10)
    fit = fit_law("hoffmann", dict(N=n, D=d), loss, grid=SMALL_GRID, keep=16)
    boot = bootstrap_law(fit, dict(N=n, D=d), loss, n_boot=100, seed=seed, ci=0.9)
    assert boot["n_converged"] >= 90
    for name in ("alpha", "beta"):
      lo, hi = boot["intervals"][name]
      hits.append(lo <= TRUE[name] <= hi)
  assert sum(hits) >= 7, hits  # 10 intervals at 90%: most should cover the truth


def test_approach2_recovers_the_frontier_exponent():
  n, d, flops, loss = synthetic_runs(seed=3, noise=0.002)
  runs = table.Runs(n, d, flops, loss, np.arange(1, n.size + 1), np.arange(n.size),
                    conventions=dict(flops_per_param_token=6.0))
  result = approaches.approach2(runs)
  expected = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
  assert len(result["minima"]) == 6 and not result["warnings"]
  assert result["a"] == pytest.approx(expected, abs=0.03)
  assert result["a"] + result["b"] == pytest.approx(1.0, abs=1e-9)


def _runs(n, d, flops, loss, keep=None, groups=None, points=None):
  keep = np.ones(n.size, bool) if keep is None else keep
  groups = np.arange(n.size) if groups is None else groups
  return table.Runs(n[keep], d[keep], flops[keep], loss[keep], np.arange(keep.sum()),
                    groups[keep], conventions=dict(flops_per_param_token=6.0),
                    points=None if points is None else points[keep])


def test_approach2_fits_every_size_or_a_window_of_at_least_min_sizes():
  runs = _runs(*synthetic_runs(seed=3, noise=0.002))
  assert all(m["n_sizes"] == 7 for m in approaches.approach2(runs, window=None)["minima"])
  narrow = approaches.approach2(runs, window=1.5, min_sizes=5)["minima"]  # 1.5x holds 3 of 7
  assert all(m["n_sizes"] == 5 for m in narrow)


def test_approach2_leaves_out_a_minimum_outside_its_sizes_and_says_so():
  n, d, flops, loss = synthetic_runs(seed=4, noise=0.0)
  n_opt = hoffmann_frontier(TRUE_THETA, flops)["N_opt"]
  small = n < n_opt * 0.9  # only sizes below the optimum: every vertex is extrapolated
  with pytest.raises(UserError, match="0 of 6 budgets have a minimum inside"):
    approaches.approach2(_runs(n, d, flops, loss, small))
  keep = (flops != flops.max()) | small  # only the largest budget lacks its optimum
  result = approaches.approach2(_runs(n, d, flops, loss, keep))
  assert [m["in_fit"] for m in result["minima"]] == [True] * 5 + [False]
  assert result["n_budgets_left_out"] == 1 and len(result["warnings"]) == 1
  assert "outside the sizes sampled: left out of the power law" in result["warnings"][0]
  assert result["a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.03)
  edge = (flops != flops.max()) | (n < n_opt * 1.1)  # the lowest loss at the edge, vertex inside
  result = approaches.approach2(_runs(n, d, flops, loss, edge))
  assert result["minima"][-1]["at_edge"] and result["minima"][-1]["in_fit"]
  assert "lies inside it" in result["warnings"][0]


def test_approach2_akima_minima_leave_out_edge_budgets():
  """Porian et al.'s Akima minima: the frontier exponent; a budget whose best size is its largest
  is warned about and left out of the power law (its 'minimum' is only a bound)."""
  n, d, flops, loss = synthetic_runs(seed=5, noise=0.0)
  n_opt = hoffmann_frontier(TRUE_THETA, flops)["N_opt"]
  keep = (flops != flops.max()) | (n < n_opt * 0.9)  # the largest budget: sizes below N_opt only
  runs = table.Runs(n[keep], d[keep], flops[keep], loss[keep], np.arange(keep.sum()),
                    np.arange(keep.sum()), conventions=dict(flops_per_param_token=6.0))
  result = approaches.approach2(runs, minimum="akima")
  assert [m["in_fit"] for m in result["minima"]] == [True] * 5 + [False]
  assert len(result["warnings"]) == 1 and "left out" in result["warnings"][0]
  expected = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
  assert result["a"] == pytest.approx(expected, abs=0.03)
  for m in result["minima"][:5]:
    assert m["N_opt"] == pytest.approx(hoffmann_frontier(TRUE_THETA, m["C"])["N_opt"], rel=0.1)


def test_approach1_envelope_of_training_curves():
  """Curves: each size trained to many token counts; the envelope picks the best size per C."""
  sizes = np.geomspace(1e8, 1e10, 17)
  tokens = np.geomspace(1e9, 1e14, 40)  # long curves: every size reaches the whole C range
  n, d = (v.ravel() for v in np.meshgrid(sizes, tokens, indexing="ij"))
  loss = FORMS["hoffmann"].loss(TRUE_THETA, dict(N=n, D=d))
  runs = table.Runs(n, d, 6 * n * d, loss, np.arange(n.size), np.repeat(np.arange(17), 40),
                    conventions=dict(flops_per_param_token=6.0))
  result = approaches.approach1(runs)
  expected = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
  assert result["a"] == pytest.approx(expected, abs=0.03)
  assert result["warnings"]  # the ends of the compute range were dropped


@pytest.mark.parametrize("name, theta, inputs", [
    ("kaplan", [np.log(6.4e13), np.log(1.8e13), 0.076, 0.095],
     dict(zip("ND", (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 1e10, 6),
                                                   np.geomspace(1e9, 1e12, 6)))))),
    ("saturating", [0.0, 1.0, 0.3], dict(X=np.geomspace(1e3, 1e8, 20))),
])
def test_other_forms_recover_their_constants(name, theta, inputs):
  form = FORMS[name]
  loss = form.loss(theta, inputs)
  fit = fit_law(name, inputs, loss, keep=16)
  assert fit.converged
  np.testing.assert_allclose(fit.theta, theta, rtol=2e-3, atol=2e-3)


def test_resampling_seeds_within_design_points_keeps_the_design():
  points = np.repeat(np.arange(10), 3)          # 10 design points x 3 seeds, one row per run
  within = resample_weights(np.arange(30), 200, seed=0, within=points)
  per_point = within.reshape(200, 10, 3).sum(axis=2)
  assert np.all(per_point == 3)                 # every resample keeps every design point
  assert within.std() > 0                       # and still resamples the seeds
  runs = resample_weights(np.arange(30), 200, seed=0).reshape(200, 10, 3).sum(axis=2)
  assert np.mean(runs == 0) > 0.01              # resampling runs drops whole points
  with pytest.raises(UserError, match="different design points"):
    resample_weights(np.array([0, 0, 1]), 5, seed=0, within=np.array(["a", "b", "b"]))


def _replicated(seeds=2, noise=0.004):
  """synthetic_runs with `seeds` replicates of every design point (its own noise each)."""
  parts = [synthetic_runs(seed=20 + s, noise=noise) for s in range(seeds)]
  n, d, flops, loss = (np.concatenate([p[i] for p in parts]) for i in range(4))
  points = np.tile(np.arange(parts[0][0].size), seeds)
  return n, d, flops, loss, points


def test_bootstrap_over_seeds_accounts_for_every_resample():
  n, d, flops, loss, points = _replicated()
  runs = _runs(n, d, flops, loss, points=points)
  assert runs.replicates() == dict(design_points=42, seeds_min=2, seeds_max=2)
  boot = approaches.bootstrap_allocation(lambda r, weights=None: approaches.approach2(
      r, weights=weights), runs, 60, seed=0, ci=0.95)
  assert boot["resample"] == "seeds within design points (42 points, 2 seeds each)"
  uneven = _runs(n[1:], d[1:], flops[1:], loss[1:], points=points[1:])  # one point lost a seed
  assert approaches.resample_kind(uneven) == ("seeds within design points (42 points, 1-2 seeds "
                                              "each; points with one seed are held fixed)")
  assert boot["n_failed"] == 0 and boot["n_converged"] == 60 and boot["failures"] == {}
  lo, hi = boot["intervals"]["a"]
  assert lo < TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]) + 0.03 and hi - lo < 0.1

  def flaky(r, weights=None):  # fails whenever the first run's seed was not drawn
    if weights[0] == 0:
      raise UserError(f"budget {int(weights.sum())} could not be fitted")
    return approaches.approach2(r, weights=weights)

  boot = approaches.bootstrap_allocation(flaky, runs, 60, seed=0, ci=0.95)
  assert 0 < boot["n_failed"] < 60 and boot["n_failed"] + boot["n_converged"] == 60
  assert boot["failures"] == {"UserError: budget # could not be fitted": boot["n_failed"]}


def test_one_seed_per_point_resamples_the_runs_and_says_so():
  n, d, flops, loss, points = _replicated(seeds=1)
  runs = _runs(n, d, flops, loss, points=points)
  assert runs.bootstrap_points() is None
  assert approaches.resample_kind(runs) == "runs (the design itself: one seed per design point)"
  assert approaches.resample_kind(_runs(n, d, flops, loss)).startswith("runs (the design itself")


def test_seed_column_makes_design_points_from_n_and_d():
  import pandas as pd
  n, d, flops, loss, points = _replicated()
  df = pd.DataFrame(dict(N=n, D=d, loss=loss, seed=np.repeat([0, 1], n.size // 2)))
  runs = table.runs_from_table(df, n="N", d="D", loss="loss", seed="seed")
  assert runs.replicates() == dict(design_points=42, seeds_min=2, seeds_max=2)
  with pytest.raises(UserError, match="column 'nope' \\(seed\\)"):
    table.runs_from_table(df, n="N", d="D", loss="loss", seed="nope")
