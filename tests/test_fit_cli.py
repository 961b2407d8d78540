"""python -m launch fit: outputs, conventions, bad input (exit 2) and non-convergence (exit 1)."""

import json
import os
import pathlib

import numpy as np
import pandas as pd
import pytest

from launch.__main__ import main as launch
from research.scaling.forms import FORMS, hoffmann_frontier

THETA = np.array([np.log(400.0), np.log(1500.0), np.log(1.7), 0.34, 0.28])
FAST = ["--keep", "8", "--bootstrap", "0", "--heldout", "0", "--no-plots"]


def isoflop_table(noise: float = 0.005) -> pd.DataFrame:
  """Five budgets x five sizes around the optimum of a known law."""
  rng = np.random.default_rng(0)
  flops = np.repeat(np.geomspace(1e18, 1e20, 5), 5)
  n = hoffmann_frontier(THETA, flops)["N_opt"] * np.tile(np.geomspace(0.3, 3.0, 5), 5)
  d = flops / (6 * n)
  loss = FORMS["hoffmann"].loss(THETA, dict(N=n, D=d)) * np.exp(noise * rng.normal(size=n.size))
  return pd.DataFrame({"params": n, "tokens": d, "flops": flops, "loss": loss})


def run(argv, capsys):
  code = launch(["fit", *map(str, argv)])
  out = capsys.readouterr()
  return code, out.out, out.err


@pytest.fixture
def csv_path(tmp_path):
  path = tmp_path / "runs.csv"
  isoflop_table().to_csv(path, index=False)
  return path


def test_fit_writes_report_and_figures(csv_path, tmp_path, capsys):
  out = tmp_path / "fits"
  code, stdout, _ = run([csv_path, "--n", "params", "--c", "flops", "--loss", "loss",
                         "--approach", "all", "--keep", "8", "--bootstrap", "20",
                         "--budgets", "1e21,5.76e23", "--out", out], capsys)
  assert code == 0, stdout
  assert "C = 6 N D" in stdout and "5.76e+23" in stdout and "converged" in stdout
  report = json.loads((out / "fit.json").read_text())
  assert set(report["approaches"]) == {"1", "2", "3"}
  assert report["conventions"]["flops_per_param_token"] == 6.0
  fit3 = report["approaches"]["3"]
  assert fit3["converged"] and fit3["bootstrap"]["n_boot"] == 20
  lo, hi = fit3["bootstrap"]["intervals"]["alpha"]
  assert lo <= fit3["fit"]["params"]["alpha"] <= hi
  assert report["approaches"]["2"]["a"] == pytest.approx(0.28 / 0.62, abs=0.05)
  assert "mean_abs_error" in report["heldout"]
  for name in ("loss_vs_compute", "residuals", "isoflop_curves", "allocation"):
    for ext in ("png", "pdf"):
      size = os.path.getsize(out / f"{name}.{ext}")
      assert 1000 < size < 300_000, (name, ext, size)


def test_jsonl_run_log_with_tokens_column(tmp_path, capsys):
  path = tmp_path / "runs.jsonl"
  isoflop_table().to_json(path, orient="records", lines=True)
  code, stdout, _ = run([path, "--n", "params", "--d", "tokens", "--loss", "loss", *FAST], capsys)
  assert code == 0
  assert "D = column 'tokens'" in stdout and "alpha = 0.3" in stdout


@pytest.mark.parametrize("edit, args, expected", [
    (None, ["--n", "size"], "column 'size' (N, parameters) is not in the table"),
    (("params", 2, -5.0), [], "column 'params' (N, parameters) is not positive at row 3"),
    (("loss", 4, np.nan), [], "column 'loss' (loss) is missing, NaN or not a number at row 5"),
    (("flops", 0, 0.0), [], "column 'flops' (C, FLOPs) is not positive at row 1"),
    (None, ["--approach", "2", "--budget-tolerance-dex", "0"],
     "Approach 2 needs at least 3 per budget"),
])
def test_bad_input_names_the_column_and_row(tmp_path, capsys, edit, args, expected):
  df = isoflop_table()
  if expected.startswith("Approach 2"):
    df.loc[0, "flops"] *= 1.5  # a budget of its own with one run
  if edit:
    column, row, value = edit
    df.loc[row, column] = value
  path = tmp_path / "bad.csv"
  df.to_csv(path, index=False)
  base = {"--n": "params", "--c": "flops", "--loss": "loss"}
  for flag, value in zip(args[::2], args[1::2]):
    base[flag] = value
  code, _, stderr = run([path, *sum(base.items(), ()), *FAST], capsys)
  assert code == 2
  assert stderr.startswith("error: ") and expected in stderr


def test_too_few_points_and_missing_file(tmp_path, capsys):
  path = tmp_path / "few.csv"
  isoflop_table().head(4).to_csv(path, index=False)
  code, _, stderr = run([path, "--n", "params", "--c", "flops", "--loss", "loss", *FAST], capsys)
  assert code == 2 and "4 points for a law with 5 parameters" in stderr
  code, _, stderr = run([tmp_path / "absent.csv", "--n", "x", "--c", "y", "--loss", "z"], capsys)
  assert code == 2 and "does not exist" in stderr


def test_non_convergence_is_reported(csv_path, capsys):
  code, stdout, _ = run([csv_path, "--n", "params", "--c", "flops", "--loss", "loss",
                         "--maxiter", "2", *FAST], capsys)
  assert code == 1
  assert "did NOT converge" in stdout and "iteration limit" in stdout


def test_data_constrained_form(shared_data, capsys):
  path = shared_data("scaling", "muennighoff2023_datablations", "datablations_c4_val_losses.csv")
  args = [path, "--n", "params", "--d", "tokens", "--loss", "val_loss", "--form", "muennighoff"]
  code, _, stderr = run([*args, *FAST], capsys)
  assert code == 2 and "needs the unique-tokens column (--unique)" in stderr
  code, stdout, _ = run([*args, "--unique", "unique_tokens", *FAST], capsys)
  assert code == 0 and "R_D* = " in stdout and "R_N* = " in stdout


def test_replicate_seeds_are_resampled_within_design_points(tmp_path, capsys):
  """--seeds: runs of one N and D are replicates; the bootstrap keeps the design and says so,
  and every resample is accounted for."""
  tables = [isoflop_table().assign(seed=0), isoflop_table(noise=0.01).assign(seed=1)]
  tables[1]["loss"] = tables[0]["loss"] * np.exp(0.005 * np.random.default_rng(1).normal(
      size=len(tables[0])))
  path = tmp_path / "seeds.csv"
  pd.concat(tables).to_csv(path, index=False)
  common = [path, "--n", "params", "--d", "tokens", "--loss", "loss", "--approach", "2",
            "--bootstrap", "40", "--window", "all", "--no-plots"]
  code, out, err = run(common + ["--seeds", "seed"], capsys)
  assert code == 0, err
  assert "resamples of seeds within design points (25 points, 2 seeds each)" in out, out
  code, out, _ = run(common, capsys)
  assert code == 0 and "resamples of runs (the design itself: no seed column given)" in out
  code, _, err = run(common + ["--window", "0.5"], capsys)
  assert code == 2 and "--window" in err


def test_several_tables_fit_as_one_and_where_keeps_rows(tmp_path, capsys):
  """Two studies' tables are fitted together (a joint fit), --where keeps the rows it names; a
  bad filter is one line."""
  df = isoflop_table().assign(role="point")
  first, second = tmp_path / "a.csv", tmp_path / "b.csv"
  df.iloc[::2].to_csv(first, index=False)
  pd.concat([df.iloc[1::2], df.iloc[:3].assign(role="parent", loss=9.0)]).to_csv(second,
                                                                                 index=False)
  common = ["--n", "params", "--d", "tokens", "--loss", "loss", *FAST]
  code, out, err = run([first, second, *common, "--where", "role=point"], capsys)
  assert code == 0, err
  assert out.startswith(f"{len(df)} runs.")  # every point of both, no parent
  together = tmp_path / "together.csv"
  pd.concat([df.iloc[::2], df.iloc[1::2]]).to_csv(together, index=False)
  code, whole, _ = run([together, *common], capsys)
  assert code == 0 and whole == out  # the same fit as one table of the same rows
  for where, message in (("role", "expected COLUMN=VALUE"), ("kind=x", "no column 'kind'"),
                         ("role=none", "no rows left")):
    code, _, err = run([first, *common, "--where", where], capsys)
    assert code == 2 and message in err, err


def test_the_committed_joint_fit_comes_from_the_committed_tables(tmp_path, capsys):
  """results/joint/cpu/fit.json is what its README's command writes from the two committed v2
  tables (the point fit; the bootstrap is left to the committed file)."""
  root = os.path.join(os.path.dirname(__file__), "..")
  committed = json.loads(pathlib.Path(root, "results/joint/cpu/fit.json").read_text())
  tables = [os.path.join(root, f"results/{s}/cpu/runs.csv") for s in ("chinchilla", "kaplan")]
  code, out, err = run([*tables, "--where", "role=point", "--n", "N", "--d", "D", "--loss",
                        "val_loss", "--run", "run", "--seeds", "seed", "--n-convention", "total",
                        "--approach", "3", "--bootstrap", "0", "--out", tmp_path / "joint",
                        "--no-plots"], capsys)
  assert code == 0, err
  assert out.startswith("174 runs.")
  got = json.loads((tmp_path / "joint" / "fit.json").read_text())["approaches"]["3"]
  want = committed["approaches"]["3"]
  for name, value in want["fit"]["params"].items():
    assert got["fit"]["params"][name] == pytest.approx(value, rel=1e-6), name
  assert got["a"] == pytest.approx(want["a"], rel=1e-6)
