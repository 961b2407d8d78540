"""The fault suite for option and config domains (docs/reliability.md): a value outside its domain
is refused in one line with exit code 2 before anything compiles or is written, on every command.
"""

import os

import pytest

from launch.__main__ import main
from lm_helpers import REPO, tiny_args
from test_fit_cli import isoflop_table


def _refused(capsys, argv, *expected) -> str:
  capsys.readouterr()
  assert main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  for text in expected:
    assert text in err, err
  return err


@pytest.mark.parametrize("override,expected", [
    ("train.lr=inf", "'train.lr' = 'inf': expected a finite float"),
    ("train.lr=nan", "'train.lr' = 'nan'"), ("train.lr=1e999", "expected a finite float"),
    ("train.b1=1.5", "'train.b1' = 1.5: must be in [0, 1)"),
    ("train.b2=-0.1", "'train.b2' = -0.1"), ("train.eps=0.0", "'train.eps' = 0.0"),
    ("train.weight_decay=inf", "'train.weight_decay' = 'inf'"),
    ("train.grad_clip=nan", "'train.grad_clip' = 'nan'"),
    ("train.cooldown_fraction=-inf", "expected a finite float"),
    ("train.batch_size=inf", "expected a finite int"),      # int("inf") is an OverflowError
    ("train.batch_size=1e400", "expected a finite int"),
])
def test_config_values_outside_their_domain(tmp_path, capsys, override, expected):
  workdir = tmp_path / "run"
  _refused(capsys, ["run"] + tiny_args(workdir, 4, override), expected)
  assert not workdir.exists()


@pytest.mark.parametrize("study,override,expected", [
    ("chinchilla.py:smoke", "sweep.sizes=1e15", "'sweep.sizes' = 1000000000000000: must be an "
     "integer in [3, 100]"),
    ("chinchilla.py:smoke", "sweep.extra_high=1e9", "'sweep.extra_high' = 1000000000"),
    ("emergence.py:smoke", "sweep.sizes=1e6", "must be an integer in [1, 100]"),
    ("kaplan.py:smoke", "sweep.sizes=500", "must be an integer in [3, 100]"),
    ("chinchilla.py:smoke", "sweep.budgets=(1e9,nan,1e10)", "expected a list of finite numbers, "
     "not 'nan'"),
    ("chinchilla.py:smoke", "sweep.budgets=(1e9,x)", "not 'x'"),
    ("diffusion.py:smoke", "diffusion.steps=1e15", "must be an integer in [2, 100000]"),
])
def test_sizes_a_planner_cannot_hold_are_refused(tmp_path, capsys, study, override, expected):
  workdir = tmp_path / "sweep"
  command = "run" if study.startswith("diffusion") else "sweep"
  _refused(capsys, [command, "--config", os.path.join(REPO, "experiments", study),
                    "--workdir", str(workdir), f"--config.{override}"], expected)
  assert not workdir.exists()


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
  path = tmp_path_factory.mktemp("fit") / "runs.csv"
  isoflop_table().to_csv(path, index=False)
  return str(path)


@pytest.mark.parametrize("option,value,expected", [
    ("--bootstrap", "-5", "--bootstrap: -5: must be at least 0"),
    ("--heldout", "-1", "--heldout: -1: must be at least 0"),
    ("--maxiter", "0", "--maxiter: 0: must be at least 1"),
    ("--ci", "1.5", "--ci: 1.5: must be in (0, 1)"),
    ("--delta", "nan", "--delta: nan"),
    ("--window", "0.5", "--window: 0.5"),
    ("--flops-per-param-token", "0", "--flops-per-param-token: 0.0"),
    ("--budgets", "1e20,inf", "--budgets '1e20,inf'"),
])
def test_fit_options_outside_their_domain_write_nothing(table_csv, tmp_path, capsys, option,
                                                          value, expected):
  out = tmp_path / "out"
  _refused(capsys, ["fit", table_csv, "--n", "params", "--c", "flops", "--loss", "loss",
                    "--out", str(out), option, value], expected)
  assert not out.exists()


def test_fit_out_an_existing_file_is_refused_before_the_fit(table_csv, tmp_path, capsys):
  out = tmp_path / "fit.json"
  out.write_text("keep me")
  _refused(capsys, ["fit", table_csv, "--n", "params", "--c", "flops", "--loss", "loss",
                    "--out", str(out)], "is an existing file")
  assert out.read_text() == "keep me"


@pytest.mark.parametrize("argv,expected", [
    (["sweep", "--workers", "0"], "--workers 0: must be at least 1"),
    (["sweep", "--threads-per-worker", "-1"], "--threads-per-worker -1"),
    (["sweep", "--backend", "slurm", "--gpus-per-run", "-1"], "--gpus-per-run: -1"),
    (["status"], "the following arguments are required: --workdir"),
    (["analyze", "--flops", "x"], "the following arguments are required: --workdir"),
])
def test_other_commands_options_outside_their_domain(tmp_path, capsys, argv, expected):
  workdir = tmp_path / "sweep"
  study = os.path.join(REPO, "experiments", "lm.py") + ":sweep-smoke"
  extra = ([] if argv[0] in ("status", "analyze")
           else ["--config", study, "--workdir", str(workdir)])
  _refused(capsys, argv + extra, expected)
  assert not workdir.exists()
