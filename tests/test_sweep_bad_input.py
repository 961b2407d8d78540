"""Bad input to sweep / status / analyze / run: one line naming what is wrong, exit 2, nothing
written; and the study contract, checked when a module is loaded."""

import os

import pytest

import sweep_helpers as sh
from launch.__main__ import main
from lm_helpers import REPO, tiny_args
from research import study
from research.errors import UserError


def _one_line_error(capsys, code, expected):
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.startswith("error: ") and expected in err, err
  assert len(err.strip().splitlines()) == 1, err


def _study_without(tmp_path, name: str) -> str:
  """A copy of the toy study lacking one function."""
  source = open(sh.TOY).read().replace(f"def {name}(", f"def _{name}_gone(")
  path = tmp_path / f"no_{name}.py"
  path.write_text(source)
  return str(path)


@pytest.mark.parametrize("args,expected", [
    ((f"{sh.SMOKE[:-len(':sweep-smoke')]}:sweep-huge",), "allowed presets"),
    ((f"{sh.TOY}:sweep-dup",), "the plan has duplicate runs: #0 and #3"),
    ((sh.SMOKE, "--backend", "gpu-cloud"), "--backend 'gpu-cloud' is unknown: choose one of local"),
    ((sh.SMOKE, "--workers", "0"), "--workers 0: must be at least 1"),
    ((sh.SMOKE, "--threads-per-worker", "64"), "--threads-per-worker 64: must be between 1 and"),
    ((sh.SMOKE, "--config.sweep.d_models=(16,40)"), "every width must be a multiple of"),
    ((sh.SMOKE, "--config.model.norm=batchnorm"), "allowed: rmsnorm, layernorm"),
    ((os.path.join(REPO, "experiments/lm.py:smoke"),), "is one run, not a sweep preset"),
], ids=["preset", "duplicates", "backend", "workers", "threads", "grid", "field", "not-a-sweep"])
def test_bad_sweep_input_exits_2_and_writes_nothing(tmp_path, capsys, args, expected):
  workdir = tmp_path / "sweep"
  _one_line_error(capsys, main(["sweep", "--config", *args[:1], "--workdir", str(workdir),
                                *args[1:]]), expected)
  assert not workdir.exists()


def test_missing_study_function_is_named(tmp_path, capsys):
  path = _study_without(tmp_path, "analyze")
  _one_line_error(capsys, main(["sweep", "--config", f"{path}:sweep", "--workdir",
                                str(tmp_path / "w")]), "lacks analyze()")
  path = _study_without(tmp_path, "recipe")
  _one_line_error(capsys, main(["run", "--config", f"{path}:one", "--workdir",
                                str(tmp_path / "w")]), "lacks recipe()")
  assert not (tmp_path / "w").exists()


def test_contract_check_lists_every_missing_function():
  class Partial:
    get_config = validate = staticmethod(lambda *a: None)
  with pytest.raises(UserError, match=r"lacks recipe\(\), plan\(\), size\(\), analyze\(\)"):
    study.check(Partial, "partial.py", sweep=True)
  import importlib.util
  spec = importlib.util.spec_from_file_location("toy_study_check", sh.TOY)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  study.check(module, sh.TOY, sweep=True)
  assert isinstance(module, study.SweepStudy)


def test_workdir_that_is_a_file(tmp_path, capsys):
  path = tmp_path / "file.txt"
  path.write_text("x")
  _one_line_error(capsys, main(["sweep", "--config", sh.SMOKE, "--workdir", str(path)]),
                  "is an existing file")
  _one_line_error(capsys, main(["run"] + tiny_args(path, 2)), "is an existing file")
  _one_line_error(capsys, main(["status", "--workdir", str(path)]), "is an existing file")
  assert path.read_text() == "x"


def test_workdir_of_another_plan_is_refused_unless_extend(tmp_path, capsys):
  workdir = tmp_path / "toy"
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir))
  assert code == 0, out
  before = sh.fingerprint(workdir)
  _one_line_error(capsys, main(["sweep", "--config", f"{sh.TOY}:sweep", "--workdir",
                                str(workdir), "--config.sweep.widths=(4,32)"]),
                  "belongs to another plan")
  assert sh.fingerprint(workdir) == before
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir, "--extend",
                                             "--config.sweep.widths=(4,32)"))
  assert code == 0, out
  assert "3 finished, 1 to train (0 to resume, 0 to retry, 1 new)" in out
  assert len(os.listdir(workdir / "runs")) == 4


def test_non_sweep_folders_are_refused(tmp_path, capsys):
  occupied = tmp_path / "occupied"
  occupied.mkdir()
  (occupied / "notes.txt").write_text("mine")
  _one_line_error(capsys, main(["sweep", "--config", sh.SMOKE, "--workdir", str(occupied)]),
                  "non-empty folder without sweep.json")
  _one_line_error(capsys, main(["status", "--workdir", str(occupied)]), "is not a sweep folder")
  _one_line_error(capsys, main(["analyze", "--workdir", str(occupied)]), "is not a sweep folder")
  assert os.listdir(occupied) == ["notes.txt"]


def test_sweep_preset_to_run_is_refused(tmp_path, capsys):
  _one_line_error(capsys, main(["run", "--config", sh.SMOKE, "--workdir", str(tmp_path / "r")]),
                  "is a sweep preset")
  assert not (tmp_path / "r").exists()
