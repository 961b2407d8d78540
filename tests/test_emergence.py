"""The emergence study (experiments/emergence.py): its smoke sweep end to end (train, score tasks
during training, analyse), `launch eval` on BIG-bench JSON files, and the crossing and forecast
arithmetic of research/scaling/emergence.py."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

import sweep_helpers as sh
from conftest import require_shared
from experiments import emergence
from lm_helpers import REPO
from research.data import bigbench, task_families
from research.errors import UserError
from research.scaling import emergence as ability

STUDY = os.path.join(REPO, "experiments", "emergence.py")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  return sh.swept(tmp_path_factory, f"{STUDY}:smoke", "emergence")


def test_smoke_sweep_scores_every_task_at_every_evaluation(smoke):
  df = pd.read_csv(smoke / "metrics.csv")
  assert {"run", "N", "C", "step", "task", "metric", "value"} <= set(df.columns)
  runs = pd.read_csv(smoke / "runs.csv")
  assert len(runs) == 2 and (runs.status == "finished").all()
  cfg = emergence.get_config("smoke")
  steps = sorted(df.step.unique())
  assert steps == [30, 60]  # loop.eval_every 30 of 60 steps, and the final evaluation
  for task in cfg.tasks.families:
    names = set(df[df.task == task].metric)
    assert {"exact_match", "token_accuracy", "target_logprob", "edit_distance", "brier"} <= names
  assert {"multiple_choice_grade", "ece", "mc_logprob_correct", "mc_p_correct_renorm",
          "mc_p_wrong_max_renorm"} <= set(df[df.task == "add3_mc"].metric)
  assert set(df[df.task.str.startswith("parity_t")].task) == {f"parity_t{i:02d}" for i in range(4)}
  em = df[df.metric == "exact_match"].value
  assert em.between(0, 1).all()
  assert (df[df.metric == "target_logprob"].value < 0).all()
  # C at a checkpoint is the FLOPs trained up to its step
  last = df[(df.step == 60) & (df.task == "add1") & (df.metric == "exact_match")]
  first = df[(df.step == 30) & (df.task == "add1") & (df.metric == "exact_match")]
  assert np.allclose(sorted(last.C), sorted(2 * first.C))
  forecast = pd.read_csv(smoke / "forecast.csv")
  assert list(forecast.columns[:5]) == ["task", "n50_observed", "n50_forecast", "method",
                                        "models_used"]
  assert set(forecast.method) == {"per_token", "exact_match"}
  for name in ("exact_match_vs_c.png", "exact_match_vs_n.png", "metrics_vs_n.png",
               "calibration.png", "parity.png", "report.md", "fit.json", "calibration.csv"):
    assert (smoke / name).exists(), name
  assert "crosses 50%" in (smoke / "report.md").read_text()


def test_launch_eval_scores_a_bigbench_file_and_a_generated_one(smoke, tmp_path):
  run = next(p for p in (smoke / "runs").iterdir() if (p / "summary.json").exists())
  fam = task_families.family("add2")
  task_file = tmp_path / "add2.json"
  bigbench.dump(task_families.eval_task(fam, 8), str(task_file))
  code, out = sh.run("eval", "--workdir", str(run), "--task", str(task_file))
  assert code == 0, out
  result = json.loads((run / "eval" / "add2.json").read_text())
  assert result["examples"] == 8 and 0 <= result["exact_str_match"] <= 1
  bb = require_shared("bigbench", "arithmetic", "2_digit_addition", "task.json")
  code, out = sh.run("eval", "--workdir", str(run), "--task", str(bb), "--limit", "4")
  assert code == 0, out
  result = json.loads((run / "eval" / "2_digit_addition.json").read_text())
  assert result["exact_str_match_examples"] == 4 and result["multiple_choice_grade_examples"] == 4
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"examples": [{"input": "1+1=", "target": 2}]}))
  code, out = sh.run("eval", "--workdir", str(run), "--task", str(bad))
  assert code == 2 and "bad.json: examples[0]" in out and "Traceback" not in out


def test_config_errors_name_the_field():
  c = emergence.get_config("smoke")
  with c.unlocked():
    c.tasks.families = ("add1", "add9")
    c.tasks.weights = (1, 1)
  with pytest.raises(UserError, match="tasks.families.*add9"):
    emergence.validate(c)
  c = emergence.get_config("smoke")
  c.tasks.weights = (1, 1)
  with pytest.raises(UserError, match="tasks.weights"):
    emergence.validate(c)


def test_cpu_plan_is_the_preregistered_ladder():
  """results/PREREGISTRATION-emergence-v2.md, as pilot P1's rule set it: 8 sizes, 3 seeds each,
  rotary positions, the top two held out."""
  c = emergence.get_config("cpu")
  emergence.validate(c)
  runs = emergence.plan(c)
  sizes = sorted({emergence.size(r)["N_nonemb"] for r in runs})
  assert sizes == [27_792, 55_536, 98_624, 154_000, 230_960, 332_448, 603_120, 996_624]
  assert len(runs) == 24 and {r.seed for r in runs} == {0, 1, 2}
  assert {r.model.positions for r in runs} == {"rotary"} and c.sweep.heldout_rungs == 2


def test_crossing_interpolates_in_log_n():
  n = np.array([1e4, 1e5, 1e6])
  assert ability.crossing(n, [0.0, 0.25, 0.75]) == pytest.approx(10 ** 5.5)
  assert ability.crossing(n, [0.0, 0.1, 0.2]) is None
  assert math.isnan(ability.crossing(n, [0.6, 0.7, 0.9]))


def test_per_token_forecast_finds_the_jump_from_small_models():
  """Per-token accuracy logistic in log N, exact match its 5th power (the product model of
  Schaeffer et al.): from the three smallest sizes, where exact match as measured on 100
  examples is 0, 0 and 0.03, the per-token fit lands on the crossing and beats extrapolating
  exact match itself."""
  n = np.geomspace(1e3, 1e7, 9)
  p = 1 / (1 + np.exp(-(np.log(n) - np.log(1e4))))
  em = p ** 5
  observed = ability.crossing(n, em)
  f = ability.forecast(n, em, p, 5, observed)
  assert f["models_used"] == int(np.sum(n < observed)) == 4
  assert abs(ability.decades(f["per_token"], observed)) < 0.05
  measured = np.round(em[:3], 2)
  g = ability.forecast(n[:3], measured, p[:3], 5, observed)
  per_token, exact = (abs(ability.decades(g[m], observed)) for m in ("per_token", "exact_match"))
  assert per_token < 0.05 and exact > 2 * per_token


def test_parity_mean_loss_and_power_law():
  rows = pd.DataFrame({"N": [1e3, 1e4, 1e5] * 2, "task": ["parity_t00"] * 3 + ["parity_t01"] * 3,
                       "value": [-1.0, -0.1, -0.01, -2.0, -0.2, -0.02]})
  mean = ability.weighted_loss(rows, {"parity_t00": 1.0, "parity_t01": 1.0})
  assert np.allclose(mean.values, [1.5, 0.15, 0.015])
  law = ability.power_law(mean.index, mean.values)
  assert law["alpha"] == pytest.approx(1.0) and law["r2"] == pytest.approx(1.0)
  assert ability.sharpness([1, 2, 3, 4], [1.0, 1.0, 0.1, 0.0]) == pytest.approx(0.9)


def test_every_seed_of_the_plan_is_validated_on_the_same_text():
  """Acceptance 3 of PREREGISTRATION-emergence-v2.md: the text-loss row is one held-out set."""
  c = emergence.get_config("smoke")
  with c.unlocked():
    c.sweep.seeds = (0, 1, 2)
  emergence.validate(c)
  runs = emergence.plan(c)
  assert {r.seed for r in runs} == {0, 1, 2} and len({r.data.split_seed for r in runs}) == 1
  one_size = [r for r in runs if r.model.d_model == runs[0].model.d_model]
  val = [emergence.load_data(r, emergence.families(r)).val_batches(2, 4, 32) for r in one_size]
  for other in val[1:]:
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(val[0], other))


def test_family_heldout_gives_add1_a_larger_test_set():
  c = emergence.get_config("cpu")
  fams = {f.name: f for f in emergence.families(c)}
  assert fams["add1"].holdout_fraction == 0.3 and fams["add2"].holdout_fraction == 0.1
  test = task_families.eval_task(fams["add1"], c.tasks.eval_examples)
  assert 20 <= len(test.examples) <= 40  # about 30 of add1's 100 problems
  for bad in (("add9=0.3",), ("add1=1.5",), ("add1",)):
    with c.unlocked():
      c.tasks.family_heldout = bad
    with pytest.raises(UserError, match="tasks.family_heldout"):
      emergence.validate(c)
