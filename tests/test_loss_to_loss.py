"""Loss-to-loss (Brandfonbrener et al. 2024): runs of a known Hoffmann law on x, translated to y
by known K, kappa, E_x, E_y, with noise on both losses; the fits recover them within their
bootstrap intervals, E's given or fitted; translation of a law; the CLI (fit.json, exit 2)."""

import json

import numpy as np
import pandas as pd
import pytest

from research.scaling import loss_to_loss as l2l
from research.scaling.forms import FORMS, hoffmann_frontier
from test_fit_cli import run as fit_cli
from test_hparams import edited, refused

THETA = np.array([np.log(400.0), np.log(1500.0), np.log(1.7), 0.34, 0.28])  # the law on x
TRUE = dict(K=1.1, kappa=1.25, E_x=1.7, E_y=2.3)  # E_x is the law's E


def runs(seed: int = 1, noise: float = 2e-3, sizes=(1e6, 1e11), tokens=(1e8, 1e13)):
  """Six sizes x five token counts; L_x from THETA, L_y = K (L_x - E_x)^kappa + E_y, both times
  exp(noise z) (independent)."""
  rng = np.random.default_rng(seed)
  n = np.repeat(np.geomspace(*sizes, 6), 5)
  d = np.tile(np.geomspace(*tokens, 5), 6)
  l_x = FORMS["hoffmann"].loss(THETA, dict(N=n, D=d))
  l_y = l2l.predict_y(TRUE, l_x)
  jitter = lambda v: v * np.exp(noise * rng.normal(size=v.size))
  return pd.DataFrame(dict(N=n, D=d, loss_x=jitter(l_x), loss_y=jitter(l_y)))


@pytest.fixture(scope="module")
def table():
  return runs()


def _fit_and_boot(table, **given):
  fit = l2l.fit_loss_to_loss(table.loss_x, table.loss_y, **given)
  boot = l2l.bootstrap_loss_to_loss(fit, table.loss_x, table.loss_y, n_boot=200, seed=1,
                                    predict_x=[2.0])
  return fit, boot


def _inside(boot, names):
  return {k: boot["intervals"][k][0] <= TRUE[k] <= boot["intervals"][k][1] for k in names}


def test_given_irreducible_losses_recover_k_and_kappa(table):
  fit, boot = _fit_and_boot(table, e_x=TRUE["E_x"], e_y=TRUE["E_y"])
  assert fit["converged"] and fit["free"] == ["K", "kappa"] and boot["n_failed"] == 0
  assert all(_inside(boot, ["K", "kappa"]).values()), boot["intervals"]
  assert fit["params"]["kappa"] == pytest.approx(TRUE["kappa"], abs=0.005)
  assert fit["identifiability"]["verdict"] == "well identified"
  lo, hi = boot["predictions"][0]["interval"]
  assert lo <= l2l.predict_y(TRUE, 2.0) <= hi


def test_joint_fit_recovers_all_four_over_a_wide_range(table):
  """L_x - E_x from 0.42 to 12: E_x and E_y trade off (correlation about 0.996) but are pinned
  to about +-0.15, and every generating value lies in its interval."""
  fit, boot = _fit_and_boot(table)
  assert fit["converged"] and fit["free"] == list(l2l.PARAMS) and boot["n_failed"] == 0
  assert all(_inside(boot, l2l.PARAMS).values()), boot["intervals"]
  ident = fit["identifiability"]
  assert 0.95 < ident["max_abs_correlation"] < 0.999 and ident["verdict"].startswith("weakly")
  assert fit["good_starts"] >= fit["starts"] // 2  # the grid's starts agree on one optimum
  assert boot["intervals"]["E_x"][1] - boot["intervals"]["E_x"][0] < 0.6


def test_narrow_range_is_reported_as_not_identified():
  """L_x - E_x from 0.8 to 4 only: the joint fit cannot place E_x and E_y, and says so."""
  narrow = runs(sizes=(1e7, 1e10), tokens=(1e10, 1e12))
  ident = l2l.fit_loss_to_loss(narrow.loss_x, narrow.loss_y)["identifiability"]
  assert ident["max_abs_correlation"] > 0.99 or ident["at_bound"]
  assert "not identified" in ident["verdict"] or "at the bound" in ident["verdict"]


def test_failed_resamples_are_counted():
  """Five runs for four parameters: most resamples repeat a run and leave four or fewer
  distinct ones; each is counted, none dropped (failed + kept = resamples)."""
  few = runs().iloc[[0, 7, 14, 21, 28]]
  fit = l2l.fit_loss_to_loss(few.loss_x, few.loss_y)
  boot = l2l.bootstrap_loss_to_loss(fit, few.loss_x, few.loss_y, n_boot=50, seed=0)
  assert boot["failures"].get("no more distinct runs than parameters", 0) >= 40
  assert boot["n_failed"] + len(boot["samples"]["K"]) == 50


def test_translated_law_and_its_frontier(table):
  """L_y(N, D) from the law on x: exactly the generating translation with the true constants,
  within 1% at held-out (N, D) from the fitted ones; the frontier is the law on x's."""
  n, d = np.array([3e11, 1e9]), np.array([6e12, 1e14])  # beyond the runs
  truth = l2l.predict_y(TRUE, FORMS["hoffmann"].loss(THETA, dict(N=n, D=d)))
  assert l2l.translated_loss(THETA, TRUE, dict(N=n, D=d)) == pytest.approx(truth, rel=1e-12)
  fit = l2l.fit_loss_to_loss(table.loss_x, table.loss_y, e_x=TRUE["E_x"], e_y=TRUE["E_y"])
  assert l2l.translated_loss(THETA, fit["params"], dict(N=n, D=d)) == pytest.approx(truth,
                                                                                     rel=0.01)
  flops = np.array([1e21, 1e23])
  frontier = l2l.translated_frontier(THETA, TRUE, flops)
  assert frontier["N_opt"] == pytest.approx(hoffmann_frontier(THETA, flops)["N_opt"])
  at = dict(N=frontier["N_opt"], D=frontier["D_opt"])
  assert frontier["L_x"] == pytest.approx(FORMS["hoffmann"].loss(THETA, at), rel=1e-12)
  for shift in (0.8, 1.25):  # any other split of C = 6 N D gives a higher L_y
    other = dict(N=at["N"] * shift, D=at["D"] / shift)
    assert (l2l.translated_loss(THETA, TRUE, other) > frontier["L_y"]).all()


def test_cli_prints_constants_and_writes_fit_json(table, tmp_path, capsys):
  path, out = tmp_path / "runs.csv", tmp_path / "fits"
  table.to_csv(path, index=False)
  code, stdout, err = fit_cli(["--loss-to-loss", path, "--x", "loss_x", "--y", "loss_y", "--ex",
                               "1.7", "--ey", "2.3", "--bootstrap", "100", "--predict", "2.0",
                               "--out", out], capsys)
  assert code == 0, err
  assert "L_y = K (L_x - E_x)^kappa + E_y" in stdout and "E_x   = 1.7  (given, --ex)" in stdout
  assert "100 resamples of the runs, with replacement, 0 failed" in stdout
  report = json.loads((out / "fit.json").read_text())
  assert report["fit"]["given"] == {"E_x": 1.7, "E_y": 2.3}
  lo, hi = report["bootstrap"]["intervals"]["kappa"]
  assert lo <= TRUE["kappa"] <= hi and report["predictions"][0]["L_x"] == 2.0
  assert (out / "loss_to_loss.png").stat().st_size > 1000


@pytest.mark.parametrize("edit, args, expected", [
    (None, ["--y", "loss_z"], "column 'loss_z' (L_y, loss on y) is not in the table"),
    (("loss_x", 2, -1.0), [], "column 'loss_x' (L_x, loss on x) is not positive at row 3"),
    (("loss_y", 0, "n/a"), [], "column 'loss_y' (L_y, loss on y) is missing, NaN or not a number"),
    (None, ["--ex", "2.2"], "--ex 2.2 is not below L_x at rows"),
    (None, ["--ey", "-1"], "argument --ey: -1.0: must be >= 0"),
    ("few", [], "4 points for a law with 4 parameters"),
    (None, ["--bootstrap", "-3"], "argument --bootstrap: -3: must be at least 0"),
])
def test_bad_input_is_one_line_and_exit_2(table, tmp_path, capsys, edit, args, expected):
  df = table.head(4) if edit == "few" else edited(table, edit) if edit else table
  options = {"--x": "loss_x", "--y": "loss_y", "--bootstrap": 0, **dict(zip(args[::2], args[1::2]))}
  assert expected in refused("--loss-to-loss", df, options, tmp_path, capsys)
