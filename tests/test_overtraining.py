"""Gadre et al. 2024's over-training law and loss-to-error link: their published figures from
the shared data, recovery of known constants, and python -m launch fit --overtraining."""

import json

import numpy as np
import pandas as pd
import pytest

from launch.__main__ import main as launch
from research.errors import UserError
from research.scaling import overtraining as ot

GADRE = ("scaling", "gadre2024", "gadre_summary.csv")
TARGETS = {"rpj-open_lm_1b-32.0": (0.007103, 0.036365),  # 1.4B at M = 640: loss, 17-task error
           "rpj-open_lm_7b-1.0": (0.007320, 0.000464)}   # 6.9B at M = 20
LAW = dict(a=166.0, b=367.0, eta=-0.27, E=1.84)
LINK = dict(k=2.2, gamma=0.71, epsilon=0.86)


def sig3(x: float) -> str:
  return f"{x:.3g}"


@pytest.fixture
def redpajama(shared_data):
  df = pd.read_csv(shared_data(*GADRE))
  return df[df["dataset_name"] == "rpj"].reset_index(drop=True)


def test_published_constants_and_relative_errors(redpajama):
  """Fig. 1 (RedPajama, C4 eval loss, 17-task error) of Gadre et al., from their flagged rows."""
  loss_rows = redpajama[redpajama["in_default_loss_fit"] == 1]
  error_rows = redpajama[redpajama["in_default_error_fit"] == 1]
  assert (len(loss_rows), len(error_rows)) == (5, 6)
  loss_fit = ot.fit_loss(loss_rows["N"], loss_rows["tok_mult"], loss_rows["loss_c4_val"])
  error_fit = ot.fit_error(error_rows["loss_c4_val"], error_rows["err_avg_subset"])
  assert loss_fit["converged"] and error_fit["converged"]
  got = {k: sig3(v) for k, v in loss_fit["params"].items()}
  assert got == {"eta": "-0.273", "E": "1.84", "a": "166", "b": "367"}
  assert loss_fit["params"]["eta"] == pytest.approx(-0.2729, abs=5e-5)
  assert loss_fit["params"]["E"] == pytest.approx(1.837, abs=5e-4)
  for name, (loss_target, error_target) in TARGETS.items():
    row = redpajama[redpajama["name"] == name].iloc[0]
    p = ot.predict(loss_fit["params"], row["N"], row["tok_mult"], error_fit["params"])
    assert sig3(ot.relative_error(p["loss"], row["loss_c4_val"])) == sig3(loss_target), name
    assert sig3(ot.relative_error(p["error"], row["err_avg_subset"])) == sig3(error_target), name


def synthetic(seed: int = 0, noise: float = 1e-4) -> pd.DataFrame:
  """Four sizes x four multipliers from known constants, relative noise `noise`."""
  rng = np.random.default_rng(seed)
  n, m = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 4e8, 4), [5.0, 20.0, 80.0, 320.0]))
  loss = ot.loss_law(n, m, *LAW.values()) * (1 + noise * rng.normal(size=n.size))
  error = ot.error_law(loss, *LINK.values()) * (1 + noise * rng.normal(size=n.size))
  return pd.DataFrame(dict(params=n, tokens=m * n, mult=m, loss=loss, error=error,
                           fit=(m <= 80).astype(int)))


def test_fit_recovers_known_constants():
  df = synthetic()
  loss_fit = ot.fit_loss(df["params"], df["mult"], df["loss"])
  error_fit = ot.fit_error(df["loss"], df["error"])
  assert loss_fit["params"] == pytest.approx(LAW, rel=0.02)
  assert error_fit["params"] == pytest.approx(LINK, rel=0.02)
  # the law in compute: L = E + (a (6M)^(-eta/2) + b M^(eta/2)) C^(eta/2), C = 6 M N^2
  n, m, (a, b, eta, e) = 3e9, 100.0, LAW.values()
  c = 6 * m * n ** 2
  in_c = e + (a * (6 * m) ** (-eta / 2) + b * m ** (eta / 2)) * c ** (eta / 2)
  assert ot.loss_law(n, m, a, b, eta, e) == pytest.approx(in_c, rel=1e-12)
  with pytest.raises(UserError, match="4 points; its 4 constants"):
    ot.fit_loss(df["params"][:4], df["mult"][:4], df["loss"][:4])


def run(argv, capsys):
  code = launch(["fit", "--overtraining", *map(str, argv)])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_cli_reproduces_the_published_figures(shared_data, tmp_path, capsys):
  code, out, err = run([shared_data(*GADRE), "--where", "dataset_name=rpj", "--n", "N",
                        "--m", "tok_mult", "--loss", "loss_c4_val",
                        "--fit-rows", "in_default_loss_fit", "--error", "err_avg_subset",
                        "--error-fit-rows", "in_default_error_fit",
                        "--predict", "1439795200:640", "--predict", "6889410560:20",
                        "--out", tmp_path / "fit"], capsys)
  assert code == 0, err
  for figure in ("0.7103%", "0.7320%", "3.6365%", "0.0464%", "eta = -0.272851"):
    assert figure in out, out
  report = json.loads((tmp_path / "fit" / "fit.json").read_text())
  assert report["fits"]["loss"]["params"]["b"] == pytest.approx(366.7, abs=0.05)
  first = report["predictions"][0]
  assert first["relative_error"]["loss"] == pytest.approx(0.007103, abs=5e-7)


@pytest.fixture
def csv_path(tmp_path):
  path = tmp_path / "runs.csv"
  synthetic().to_csv(path, index=False)
  return path


def test_cli_tokens_column_and_prediction_of_a_table_row(csv_path, capsys):
  n = float(pd.read_csv(csv_path)["params"].iloc[-1])
  code, out, err = run([csv_path, "--n", "params", "--d", "tokens", "--loss", "loss",
                        "--fit-rows", "fit", "--error", "error", "--predict", f"{n!r}:320",
                        "--predict", "1e10:20"], capsys)
  assert code == 0, err
  assert "on 12 rows (column 'fit')" in out and "on 12 rows" in out.split("downstream")[1]
  lines = out.splitlines()
  assert "relative error" in lines[-2] and "relative error" not in lines[-1]


def bad_run(tmp_path, capsys, args) -> str:
  """The command on a table with a text column, a negative N and a 3-row flag; its stderr."""
  df = synthetic().assign(label="x", negative=1e8, few=0)
  df.loc[2, "negative"] = -1.0
  df.loc[:2, "few"] = 1
  path = tmp_path / "bad.csv"
  df.to_csv(path, index=False)
  base = {"--n": "params", "--m": "mult", "--loss": "loss"}
  rest = []
  for flag, value in zip(args[::2], args[1::2]):
    if flag in base:
      base[flag] = value
    else:
      rest += [flag, value]
  code, _, err = run([path, *sum(base.items(), ()), *rest], capsys)
  assert code == 2, err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  return err


@pytest.mark.parametrize("option, column, expected", [
    ("--n", "size", "column 'size' (N, parameters) is not in the table"),
    ("--n", "label", "column 'label' (N, parameters) is missing, NaN or not a number at rows 1"),
    ("--fit-rows", "label", "--fit-rows 'label': row 1 is 'x'; every value must be 0 or 1"),
    ("--fit-rows", "few", "the loss law: 3 points; its 4 constants (a, b, eta, E) need at least"),
])
def test_cli_bad_column_is_one_line_exit_2(tmp_path, capsys, option, column, expected):
  assert expected in bad_run(tmp_path, capsys, [option, column])


@pytest.mark.parametrize("args, expected", [
    (["--predict", "1e9"], "expected N:M"),
    (["--predict", "1e9:-3"], "must be > 0"),
    (["--predict", "big:20"], "'big' is not a number"),
    (["--d", "tokens"], "not both"),
    (["--error-fit-rows", "fit"], "give the error column (--error) too"),
    (["--maxfev", "0"], "must be at least 1"),
    (["--n", "negative"], "column 'negative' (N, parameters) is not positive at row 3"),
    (["--where", "kind=x"], "no column 'kind'"),
])
def test_cli_bad_option_is_one_line_exit_2(tmp_path, capsys, args, expected):
  assert expected in bad_run(tmp_path, capsys, args)


def test_cli_non_convergence_exits_1(csv_path, capsys):
  code, out, _ = run([csv_path, "--n", "params", "--m", "mult", "--loss", "loss",
                      "--maxfev", "3", "--predict", "1e9:20"], capsys)
  assert code == 1
  assert "did NOT converge" in out and "no predictions" in out
