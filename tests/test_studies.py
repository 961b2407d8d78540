"""The scaling studies' smoke presets end to end (experiments/chinchilla.py, kaplan.py,
lr_transfer.py): plans with WSD branches, training through the sweep command, the analyses."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import sweep_helpers as sh
from experiments import chinchilla, kaplan, lr_transfer
from launch.__main__ import main
from lm_helpers import REPO
from research import config as config_lib
from research import tracking
from research.models import transformer

CHINCHILLA = os.path.join(REPO, "experiments", "chinchilla.py")
KAPLAN = os.path.join(REPO, "experiments", "kaplan.py")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One compilation cache for the module: the two studies share their small shapes."""
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache"))}


@pytest.fixture(scope="module")
def chinchilla_sweep(tmp_path_factory, cache):
  workdir = tmp_path_factory.mktemp("chinchilla") / "smoke"
  code, out = sh.run("sweep", *sh.sweep_args(f"{CHINCHILLA}:smoke", workdir), extra_env=cache)
  assert code == 0, out
  return workdir


def test_isoflop_plan_puts_each_budget_around_its_prior_on_one_grid():
  cfg = chinchilla.get_config("cpu")
  points = chinchilla.grid(cfg)
  budgets = sorted({p["budget"] for p in points})
  assert len(budgets) == 7 and np.log10(cfg.sweep.budgets[-1] / cfg.sweep.budgets[0]) >= 1.5
  for j in budgets:
    here = [p for p in points if p["budget"] == j]
    assert cfg.sweep.sizes - 1 <= len(here) <= cfg.sweep.sizes  # small rungs can repeat
    n = sorted(p["shape"].n_nonemb for p in here)
    prior = cfg.sweep.prior_n * (cfg.sweep.budgets[j] / cfg.sweep.prior_c) ** cfg.sweep.prior_a
    assert n[0] < prior < n[-1]  # the prior optimum is interior
  # budgets are iso in the headline convention (6ND, N total), up to rounding to whole steps
  tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
  for p in points:
    model = transformer.TransformerConfig(**{**cfg.model.to_dict(), **p["shape"].model_fields()})
    c = 6 * transformer.param_counts(model).total * p["steps"] * tokens_per_step
    assert abs(np.log10(c / p["C_planned"])) < 0.5 / p["steps"] + 1e-9
  # v2's largest budget has its prior optimum exactly between two centrings: the lower one
  top = sorted(p["index"] for p in points if p["budget"] == budgets[-1])
  assert (top[0], top[-1]) == (-2, 4)
  runs = chinchilla.plan(cfg)
  assert len(runs) == 116  # as pre-registered (results/PREREGISTRATION-scaling-v2.md)
  parents = [r for r in runs if r.train.schedule == "constant"]
  branches = [r for r in runs if r.loop.init_from]
  seeds = len(cfg.sweep.seeds)
  assert len(branches) == seeds * len(points)
  assert len(parents) == seeds * len({p["shape"] for p in points})
  ids = {config_lib.run_id(p): p for p in parents}
  for b in branches:  # each branch's parent keeps a checkpoint at the branch step
    parent_id, step = b.loop.init_from.split("@")
    assert int(step) in ids[parent_id].loop.keep_steps
  assert runs[:len(parents)] == parents  # parents first


def test_chinchilla_smoke_trains_branches_and_fits_the_three_approaches(chinchilla_sweep):
  workdir = chinchilla_sweep
  df = pd.read_csv(workdir / "runs.csv")
  assert (df.status == "finished").all() and set(df.role) == {"parent", "point"}
  fit = json.loads((workdir / "fit.json").read_text())
  assert set(fit["summary"]) == set(chinchilla.CONVENTIONS)
  headline = fit["summary"][chinchilla.HEADLINE]
  assert {"approach1", "approach2", "approach3"} <= set(headline)
  assert len(fit["budgets"]) == 3 and fit["points"] == 9
  spread = {name: r["budget_spread_dex"] for name, r in fit["fits"].items()}
  assert spread[chinchilla.HEADLINE] < 0.005 < spread["N total, C full count"]  # iso as planned
  assert abs(fit["entropy_rate_nats"] - 1.1301) < 1e-3  # the synthetic language's known rate
  for name in ("isoflop_curves", "allocation", "loss_vs_compute"):
    assert (workdir / f"{name}.png").stat().st_size > 0
  # a branch's log starts with its parent's lines before the branch step
  point = df[df.role == "point"].iloc[0].run
  config = json.loads((workdir / "runs" / point / "config.json").read_text())["config"]
  parent, step = config["loop"]["init_from"].split("@")
  mine = tracking.read_metrics(str(workdir / "runs" / point / "metrics.jsonl"))
  theirs = tracking.read_metrics(str(workdir / "runs" / parent / "metrics.jsonl"))
  before = [r["loss"] for r in theirs if r["step"] < int(step)]
  assert before and [r["loss"] for r in mine if r["step"] < int(step)] == before


def test_allocation_at_the_users_budget_and_a_bad_option(chinchilla_sweep, capsys, monkeypatch):
  from research.scaling import plots
  drawn = []
  allocation = plots.allocation
  monkeypatch.setattr(plots, "allocation", lambda results, *a, **k: (
      drawn.append(results), allocation(results, *a, **k))[1])
  assert main(["analyze", "--workdir", str(chinchilla_sweep), "--flops", "1e20,1e22"]) == 0
  # the figure gets Approach 3's bootstrap samples (its band); fit.json does not keep them
  assert len(drawn) == 1 and len(drawn[0]["3"]["bootstrap_samples"]["alpha"]) > 0
  assert "bootstrap_samples" not in (chinchilla_sweep / "fit.json").read_text()
  fit = json.loads((chinchilla_sweep / "fit.json").read_text())
  rows = fit["summary"][chinchilla.HEADLINE]["approach3"]["allocation"]
  assert [r["C"] for r in rows] == [1e20, 1e22]
  assert all(r["D_opt"] == pytest.approx(r["C"] / (6 * r["N_opt"]), rel=1e-6) or
             not np.isfinite(r["N_opt"]) for r in rows)
  assert main(["analyze", "--workdir", str(chinchilla_sweep), "--flops", "lots"]) == 2
  assert "--flops 'lots'" in capsys.readouterr().err


def test_extending_a_grid_adds_sizes_at_the_chosen_edge():
  cfg = chinchilla.get_config("cpu")
  before = chinchilla.grid(cfg)
  with cfg.unlocked():
    cfg.sweep.extra_high = 1  # (below the smallest budget's sizes the ladder has no new rung)
  after = chinchilla.grid(cfg)
  for j in range(len(cfg.sweep.budgets)):
    old = sorted(p["shape"].n_nonemb for p in before if p["budget"] == j)
    new = sorted(p["shape"].n_nonemb for p in after if p["budget"] == j)
    assert new[:-1] == old and new[-1] > old[-1]


@pytest.mark.parametrize("module", [chinchilla, kaplan])
def test_seeds_replicate_the_plan_and_never_move_the_held_out_data(module):
  one = module.get_config("cpu")
  two = module.get_config("cpu")
  with one.unlocked(), two.unlocked():
    one.sweep.seeds, two.sweep.seeds = (0,), (0, 3)
  module.validate(two)
  base, runs = module.plan(one), module.plan(two)
  assert len(runs) == 2 * len(base)
  assert [config_lib.run_id(r) for r in runs if r.seed == 0] == [config_lib.run_id(r)
                                                                  for r in base]
  ids = {config_lib.run_id(r): r for r in runs}
  for run in runs:
    assert run.data.split_seed == one.data.split_seed
    if run.loop.init_from:  # a branch continues its own seed's parent
      assert ids[run.loop.init_from.split("@")[0]].seed == run.seed


def test_kaplan_smoke_fits_every_law_under_every_convention(tmp_path, cache):
  workdir = tmp_path / "kaplan"
  code, out = sh.run("sweep", *sh.sweep_args(f"{KAPLAN}:smoke", workdir), extra_env=cache)
  assert code == 0, out
  fit = json.loads((workdir / "fit.json").read_text())
  assert len(fit["fits"]) == 4 and fit["points"] == 9
  for laws in fit["fits"].values():
    assert set(laws) == {"L(N), converged in D", "L(D), data-limited", "alpha_N by D",
                         "L(N, D)", "C_min frontier"}
  assert (workdir / "kaplan_laws.png").stat().st_size > 0


@pytest.mark.parametrize("spec,override,expected", [
    (CHINCHILLA, "--config.train.warmup_steps=500", "is too small for the model of N ="),
    (CHINCHILLA, "--config.sweep.sizes=2", "needs at least 3 sizes to have an interior minimum"),
    (CHINCHILLA, "--config.sweep.spacing=1.01", "no interior point is possible"),
    (KAPLAN, "--config.sweep.n_min=10", "below the smallest shape of this rule"),
])
def test_bad_study_plans_are_one_line(tmp_path, capsys, spec, override, expected):
  workdir = tmp_path / "sweep"
  code = main(["sweep", "--config", f"{spec}:smoke", "--workdir", str(workdir), override])
  err = capsys.readouterr().err
  assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
  assert not workdir.exists()


def test_best_learning_rate_is_the_vertex_through_the_grid_minimum():
  lrs = [1e-3, 2e-3, 4e-3, 8e-3]
  losses = [(np.log(lr) - np.log(3e-3)) ** 2 + 1 for lr in lrs]
  assert lr_transfer.best_lr(lrs, losses) == pytest.approx(3e-3, rel=1e-6)
  assert lr_transfer.best_lr(lrs, [4, 3, 2, 1]) == pytest.approx(8e-3)  # at the edge: the best


def test_lr_corners_plan_and_rule():
  from experiments import lr_corners
  c = lr_corners.get_config("cpu")
  lr_corners.validate(c)
  runs = lr_corners.plan(c)
  assert len(runs) == 4 * 3
  # the corners of Chinchilla's v2 plan, as pilot P1 trained them (results/lr-corners/)
  assert c.sweep.corners == ((8, 1, 2_707_456), (24, 2, 503_808), (28, 1, 17_569_792),
                             (52, 4, 2_668_544))
  shapes = {(r.model.d_model, r.model.n_layers, r.train.tokens) for r in runs}
  assert shapes == {tuple(x) for x in c.sweep.corners}
  assert sorted({r.train.lr for r in runs}) == pytest.approx([0.0155, 0.031, 0.062])
  keep = lr_corners.verdict({"a": 0.025, "b": 0.04}, 0.031, 1.33)
  assert keep["every_corner_inside"] and keep["chosen_rate"] == 0.031
  move = lr_corners.verdict({"a": 0.012, "b": 0.03, "c": None}, 0.031, 1.33)
  assert not move["every_corner_inside"] and move["corners_measured"] == 2
  assert move["chosen_rate"] == float(f"{(0.012 * 0.03) ** 0.5:.2g}")
  record = dict(verdict=move, corners={"x": dict(label="N 1, D 2", lr=[0.0155, 0.031, 0.062],
                                                 val_loss=[2.0, 1.9, None], best_lr=0.02)})
  assert "the studies' rate becomes 0.019" in lr_corners.format_report(record)


def test_mup_variants_are_curves_of_their_own_and_leave_mup_as_given_alone():
  c = lr_transfer.get_config("mup-variants")
  lr_transfer.validate(c)
  runs = lr_transfer.plan(c)
  assert len(runs) == len(c.sweep.variants) * 2 * 3
  names = {lr_transfer.curve_name(r.model.to_dict()) for r in runs}
  assert "mup" in names and "mup out x 4, embed lr x 4" in names and len(names) == 6
  plain = [r for r in runs if lr_transfer.curve_name(r.model.to_dict()) == "mup"]
  assert plain and all("mup_output_mult" not in r.model for r in plain)  # ids as before
