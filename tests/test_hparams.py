"""Hyperparameter laws (DeepSeek LLM 2024): a grid of lr x batch per cell around a known law,
recovered within its bootstrap intervals; the CLI's report, fit.json and bad input (exit 2)."""

import json

import numpy as np
import pandas as pd
import pytest

from research.scaling import hparams as hp
from test_fit_cli import run as fit_cli

LAW = dict(lr=(2.0, -0.15), batch=(0.5, 0.30))  # coefficient, exponent in C (not DeepSeek's)
BUDGETS = np.geomspace(1e17, 1e20, 5)
STEPS = np.arange(-3, 4) * 0.5  # log2 of the grid's factors around the optimum: 7 x 7 per cell
TOKENS_PER_PARAM = 20.0


def optimum(name: str, flops):
  c, a = LAW[name]
  return c * np.asarray(flops, np.float64) ** a


def grid_table(seed: int = 0, noise: float = 5e-4) -> pd.DataFrame:
  """Each budget C: lr and batch on a grid of factors of sqrt(2) around lr_opt(C), B_opt(C);
  loss = L0(C) (1 + 0.01 ln^2(lr / lr_opt) + 0.006 ln^2(B / B_opt)), times exp(noise z)."""
  rng = np.random.default_rng(seed)
  c, i, j = (v.ravel() for v in np.meshgrid(BUDGETS, STEPS, STEPS, indexing="ij"))
  lr, batch = optimum("lr", c) * 2.0 ** i, optimum("batch", c) * 2.0 ** j
  bowl = 1 + 0.01 * np.log(2.0 ** i) ** 2 + 0.006 * np.log(2.0 ** j) ** 2
  loss = (1.8 + 3e3 * c ** -0.15) * bowl * np.exp(noise * rng.normal(size=c.size))
  n = np.sqrt(c / (6 * TOKENS_PER_PARAM))
  return pd.DataFrame(dict(params=n, tokens=TOKENS_PER_PARAM * n, flops=c, lr=lr, batch=batch,
                           loss=loss))


def run(argv, capsys):
  return fit_cli(["--hparams", *argv], capsys)


def refused(mode: str, df: pd.DataFrame, options: dict, tmp_path, capsys) -> str:
  """`python -m launch fit MODE bad.csv OPTIONS` must stop with one line and exit code 2;
  returns that line. An option whose value is None is left out."""
  path = tmp_path / "bad.csv"
  df.to_csv(path, index=False)
  argv = [mode, path] + [str(part) for flag, value in options.items() if value is not None
                         for part in (flag, value)]
  code, _, stderr = fit_cli(argv, capsys)
  assert code == 2, stderr
  assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
  return stderr


def edited(df: pd.DataFrame, edit) -> pd.DataFrame:
  """A copy of df with (column, row, value) written in (the column made object-typed first)."""
  column, row, value = edit
  out = df.copy()
  out[column] = out[column].astype(object)
  out.loc[row, column] = value
  return out


@pytest.fixture(scope="module")
def grid():
  return grid_table()


@pytest.fixture
def csv_path(tmp_path, grid):
  path = tmp_path / "grid.csv"
  grid.to_csv(path, index=False)
  return path


def test_recovers_the_generating_law_within_its_bootstrap_intervals(grid):
  scale = hp.cell_scale(hp.scale_columns(grid, n="params", d="tokens"), "C")
  hparams = dict(lr=grid.lr.to_numpy(), batch=grid.batch.to_numpy())
  fit = hp.fit_hparams(scale["X"], scale["cells"], grid.loss.to_numpy(), hparams, within=0.25)
  boot = hp.bootstrap_hparams(scale["X"], scale["cells"], grid.loss.to_numpy(), hparams,
                              within=0.25, n_boot=200, seed=1, predict_x=[1e21])
  assert len(fit["cells"]) == 5 and boot["n_failed"] == 0 and boot["failures"] == {}
  for name, (coefficient, exponent) in LAW.items():
    law, iv = fit["laws"][name], boot["intervals"][name]
    assert iv["exponent"][0] <= exponent <= iv["exponent"][1], (name, iv)
    assert iv["coefficient"][0] <= coefficient <= iv["coefficient"][1], (name, iv)
    assert law["exponent"] == pytest.approx(exponent, abs=0.012)  # seed spread sd 0.005-0.009
    lo, hi = boot["predictions"][0][name]
    assert lo <= optimum(name, 1e21) <= hi
  for cell in fit["cells"]:  # the best run is the cell's smallest loss, and is near-optimal
    here = grid[np.isclose(grid.flops, cell["X"], rtol=1e-6)]
    assert cell["best"]["loss"] == here.loss.min() and 1 <= cell["near_optimal"] < cell["runs"]
    assert cell["best"]["row"] - 1 == here.loss.idxmin()


def test_near_optimal_set_and_the_law_against_n(grid):
  """--within 0 keeps each cell's best run only, 100 keeps every run; cells by N give the law
  against N (C = 120 N^2 here, so lr_opt ~ N^(2 * -0.15))."""
  loss, cells = grid.loss.to_numpy(), hp.cell_scale(dict(C=grid.flops), "C")["cells"]
  assert hp.near_optimal(loss, cells, 0.0).sum() == 5
  assert hp.near_optimal(loss, cells, 100.0).all()
  scale = hp.cell_scale(dict(N=grid.params.to_numpy()), "N")
  fit = hp.fit_hparams(scale["X"], scale["cells"], loss, dict(lr=grid.lr.to_numpy()))
  assert scale["name"] == "N" and fit["laws"]["lr"]["exponent"] == pytest.approx(-0.30, abs=0.03)


def test_failed_resamples_are_counted_not_dropped(grid):
  """A resample whose near-optimal points lie at one X cannot give a law: every one is counted
  (here the X is the same for all rows, past the checks the fit itself makes)."""
  one = grid[grid.flops == BUDGETS[0]]
  boot = hp.bootstrap_hparams(one.flops.to_numpy(), np.zeros(len(one), int), one.loss.to_numpy(),
                              dict(lr=one.lr.to_numpy()), n_boot=30, seed=0)
  assert boot["n_failed"] == 30 and boot["failures"] == {f"lr: {hp.FEW_X}": 30}
  assert np.isnan(boot["intervals"]["lr"]["exponent"]).all()
  got = hp.power_fit([1.0, 1.0, 2.0], [1.0, 2.0, 3.0], np.array([[1, 1, 0], [1, 0, 1.0]]))
  assert np.isnan(got["exponent"][0]) and got["distinct_x"].tolist() == [1, 2]


def test_cli_prints_the_laws_and_reference_and_writes_fit_json(csv_path, tmp_path, capsys):
  out = tmp_path / "fits"
  code, stdout, err = run([csv_path, "--n", "params", "--d", "tokens", "--lr", "lr", "--batch",
                           "batch", "--loss", "loss", "--bootstrap", "100", "--predict", "1e21",
                           "--out", out], capsys)
  assert code == 0, err
  assert "245 runs in 5 cells by C; law against C (C = 6 N D)" in stdout
  assert "lr_opt = 0.3118 C^-0.1250, B_opt = 0.292 C^0.3271" in stdout and "M D" in stdout
  assert "100 resamples of the runs within each cell, with replacement, 0 failed" in stdout
  report = json.loads((out / "fit.json").read_text())
  assert report["X"] == "C" and len(report["cells"]) == 5 and report["bootstrap"]["n_boot"] == 100
  for name, (_, exponent) in LAW.items():
    lo, hi = report["bootstrap"]["intervals"][name]["exponent"]
    assert lo <= exponent <= hi
  prediction = report["predictions"][0]
  assert prediction["X"] == 1e21 and set(prediction["reference"]) == {"lr", "batch"}
  assert prediction["reference"]["lr"] == pytest.approx(0.3118 * 1e21 ** -0.125)
  assert (out / "hparams.png").stat().st_size > 1000 and (out / "hparams.pdf").exists()


@pytest.mark.parametrize("edit, args, expected", [
    (None, ["--lr", "rate"], "column 'rate' (learning rate) is not in the table"),
    (("lr", 3, "fast"), [], "column 'lr' (learning rate) is missing, NaN or not a number at row 4"),
    (("batch", 6, -1.0), [], "column 'batch' (batch size) is not positive at row 7"),
    ("one run", [], "the cell at C = 1.2e+08 has one run (row 246)"),
    ("one budget", [], "every cell has C = 1e+17: a power law needs cells at 2 distinct C"),
    (None, ["--within", "150"], "argument --within: 150.0: must be in [0, 100]"),
    (None, ["--within", "-1"], "must be in [0, 100]"),
    (None, ["--lr", None, "--batch", None], "give the learning-rate column (--lr)"),
    (None, ["--d", None], "--by C needs the FLOPs column (--c) or both --n and --d"),
    (None, ["--against", "N"], "--against goes with --by ND"),
])
def test_bad_input_is_one_line_and_exit_2(grid, tmp_path, capsys, edit, args, expected):
  if edit == "one run":
    df = pd.concat([grid, grid.iloc[[0]].assign(params=1e3, tokens=2e4)], ignore_index=True)
  elif edit == "one budget":
    df = grid[grid.flops == BUDGETS[0]]
  else:
    df = edited(grid, edit) if edit else grid
  options = {"--n": "params", "--d": "tokens", "--lr": "lr", "--batch": "batch",
             "--loss": "loss", "--bootstrap": 0, **dict(zip(args[::2], args[1::2]))}
  assert expected in refused("--hparams", df, options, tmp_path, capsys)
