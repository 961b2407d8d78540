"""Fault probe (issue 21), files and options of `launch fid`, `launch sample` and `launch eval`:
damaged .npz files, refusals that must leave no output behind, a missing checkpoint step,
destinations that cannot be written, and numeric options out of their domain. Each is one line
on stderr starting with "error: ", exit code 2 (bad input) or 3 (the machine refused).

Nothing here trains: the run folders hold a config.json (and, for sample, one tiny checkpoint),
the images are a few random 8x8 arrays and the features are the digits extractor's. A read-only
folder is simulated by a tempfile.mkstemp that refuses it (the tests run as root, where chmod
does not stop writes); every write of the project goes through mkstemp (research.fileio).
"""

import errno
import json
import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main as launch
from lm_helpers import REPO
from research import config as config_lib
from research import store
from research.errors import UserError
from research.fileio import npz_names, read_npz

DIGITS = ["--features", "digits"]


def _one_error_line(capsys, code: int, got: int, fragment: str = "") -> str:
  """Asserts the exit code and that stderr is one line "error: ..." holding `fragment`."""
  err = capsys.readouterr().err
  lines = err.splitlines()
  assert got == code, err
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert fragment in lines[0], (fragment, lines[0])
  return lines[0]


def _files(folder) -> set[str]:
  return {os.path.relpath(os.path.join(d, f), folder)
          for d, _, names in os.walk(folder) for f in names}


def _read_only(monkeypatch, folder) -> None:
  """tempfile.mkstemp refuses `folder` and everything below it, as a read-only mount would."""
  real = tempfile.mkstemp
  top = os.path.abspath(folder)

  def mkstemp(*args, dir=None, **kwargs):  # noqa: A002  (tempfile's own name)
    target = os.path.abspath(dir or tempfile.gettempdir())
    if target == top or target.startswith(top + os.sep):
      raise OSError(errno.EROFS, "Read-only file system", target)
    return real(*args, dir=dir, **kwargs)

  monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# Image sets and damaged files.


def _images(tmp_path, name="good.npz", n=12, seed=0) -> str:
  path = str(tmp_path / name)
  np.savez(path, images=np.random.default_rng(seed).integers(0, 256, (n, 8, 8), dtype=np.uint8))
  return path


def _damaged(tmp_path, kind: str) -> str:
  """An .npz that numpy alone answers with a traceback (or a wrong result)."""
  good = open(_images(tmp_path, "source.npz"), "rb").read()
  path = tmp_path / f"{kind}.npz"
  if kind == "empty":
    path.write_bytes(b"")
  elif kind == "truncated":
    path.write_bytes(good[:len(good) // 2])
  elif kind == "npy":
    with open(path, "wb") as f:
      np.save(f, np.zeros((4, 8, 8), np.uint8))
  elif kind == "pickled":
    np.savez(path, images=np.array([{"a": 1}], dtype=object))
  return str(path)


def _stats(tmp_path, name, mu, sigma) -> str:
  path = str(tmp_path / name)
  np.savez(path, mu=mu, sigma=sigma, n=np.int64(100), features=np.array("digits"))
  return path


def _refuse_writes_of(monkeypatch, prefix: str) -> None:
  """Atomic writes of files whose temporary name starts with `prefix` fail: a full disk."""
  real = tempfile.mkstemp

  def mkstemp(*args, **kwargs):
    name = kwargs.get("prefix", "")
    if name.startswith(prefix):
      raise OSError(errno.ENOSPC, "No space left on device", kwargs.get("dir"))
    return real(*args, **kwargs)

  monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("kind,fragment", [
    ("empty", "is empty (0 bytes)"), ("truncated", "is truncated or damaged"),
    ("npy", "a single .npy array"), ("pickled", "pickled Python objects")])
@pytest.mark.parametrize("side", ["REAL", "FAKE"])
def test_fid_damaged_npz_is_one_line_and_writes_nothing(tmp_path, capsys, kind, fragment, side):
  bad, good = _damaged(tmp_path, kind), _images(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  argv = [bad, good] if side == "REAL" else [good, bad]
  got = launch(["fid", *argv, *DIGITS, "--out", str(out), "--json", str(out / "r.json")])
  line = _one_error_line(capsys, 2, got, fragment)
  assert side in line and bad in line and not _files(out)


def test_read_npz_names_path_and_problem(tmp_path):
  stats = _stats(tmp_path, "s.npz", np.zeros(3), np.eye(3))
  assert set(read_npz(stats, "stats", keys=("mu",), optional=("n", "nothing"))) == {"mu", "n"}
  assert npz_names(stats) == ["mu", "sigma", "n", "features"]
  with pytest.raises(UserError, match=r"stats '.*s\.npz' lacks \['kernel'\]"):
    read_npz(stats, "stats", keys=("kernel",))
  with pytest.raises(UserError, match="does not exist"):
    read_npz(str(tmp_path / "nothing.npz"), "stats")
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not an archive at all")
  with pytest.raises(UserError, match="not an .npz file"):
    npz_names(str(junk))


def test_weight_files_use_the_checked_reader(tmp_path, capsys):
  from research.models import digits, torch_weights
  truncated, empty = _damaged(tmp_path, "truncated"), _damaged(tmp_path, "empty")
  with pytest.raises(UserError, match="digits extractor weights .* is truncated"):
    digits.load_params(truncated)
  with pytest.raises(UserError, match="Inception weights .* is empty"):
    torch_weights.read_state_dict(empty, "Inception weights")
  got = launch(["fid", _images(tmp_path), _images(tmp_path, "b.npz"), "--weights", empty,
                "--out", str(tmp_path / "out")])
  _one_error_line(capsys, 2, got, "Inception weight file")
  assert not (tmp_path / "out").exists()


# Refusals leave no output behind.


def _pngs(folder, shapes) -> str:
  os.makedirs(folder)
  rng = np.random.default_rng(3)
  for i, shape in enumerate(shapes):
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        os.path.join(folder, f"{i:03d}.png"))
  return str(folder)


def _truncated_png_folder(folder) -> str:
  """Good PNGs and one whose header reads but whose pixels are cut off."""
  path = _pngs(folder, [(8, 8)] * 4)
  last = os.path.join(path, "003.png")
  data = open(last, "rb").read()
  with open(last, "wb") as f:
    f.write(data[:60])  # the signature, the header and part of the pixel data
  return path


@pytest.mark.parametrize("case", ["wrong dimension", "not positive definite", "mixed sizes",
                                  "unreadable png"])
def test_fid_refusal_writes_no_statistics_or_json(tmp_path, capsys, case):
  good = _images(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  fragment = {"wrong dimension": "have dimension 5", "not positive definite": "not positive",
              "mixed sizes": "must share one size", "unreadable png": "cannot be read"}[case]
  if case == "wrong dimension":
    fake = _stats(tmp_path, "s.npz", np.zeros(5), np.eye(5))
  elif case == "not positive definite":
    sigma = np.eye(64)
    sigma[0, 0] = -1.0
    fake = _stats(tmp_path, "s.npz", np.zeros(64), sigma)
  elif case == "mixed sizes":
    fake = _pngs(tmp_path / "fake", [(8, 8), (8, 8), (9, 8)])
  else:
    fake = _truncated_png_folder(tmp_path / "fake")
  got = launch(["fid", good, fake, *DIGITS, "--out", str(out), "--json", str(out / "r.json")])
  _one_error_line(capsys, 2, got, fragment)
  assert not _files(out)


def test_fid_destinations_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
  good, other = _images(tmp_path), _images(tmp_path, "other.npz", seed=1)
  folder = tmp_path / "a_folder"
  folder.mkdir()
  got = launch(["fid", good, other, *DIGITS, "--out", str(tmp_path), "--json", str(folder)])
  _one_error_line(capsys, 2, got, "is an existing folder")
  got = launch(["fid", good, other, *DIGITS, "--out", good])
  _one_error_line(capsys, 2, got, "is an existing file, not a folder")
  from research.models import digits
  monkeypatch.setattr(digits, "DigitsFeatures", lambda: pytest.fail("features computed"))
  (tmp_path / "ro").mkdir()
  _read_only(monkeypatch, tmp_path / "ro")
  got = launch(["fid", good, other, *DIGITS, "--out", str(tmp_path / "ro" / "stats")])
  _one_error_line(capsys, 3, got, "read-only file system")
  got = launch(["fid", good, other, *DIGITS, "--out", str(tmp_path),
                "--json", str(tmp_path / "ro" / "r.json")])
  _one_error_line(capsys, 3, got, "--json's folder")
  assert not _files(tmp_path / "ro") and not os.path.exists(tmp_path / "good_digits_stats.npz")


def test_fid_still_writes_after_the_checks(tmp_path, capsys):
  good, other = _images(tmp_path), _images(tmp_path, "other.npz", seed=1)
  out = tmp_path / "new" / "stats"
  result = tmp_path / "new" / "r.json"
  assert launch(["fid", good, other, *DIGITS, "--out", str(out), "--json", str(result),
                 "--kid-subsets", "2", "--kid-subset-size", "5"]) == 0
  assert "FD_digits @ 12 samples" in capsys.readouterr().out
  assert _files(out) == {"good_digits_stats.npz", "other_digits_stats.npz"}
  assert json.loads(result.read_text())["real_n"] == 12


def test_fid_prints_the_numbers_when_writing_them_fails(tmp_path, capsys, monkeypatch):
  good, other = _images(tmp_path), _images(tmp_path, "other.npz", seed=1)
  _refuse_writes_of(monkeypatch, ".tmp-good_digits_stats")  # the checks pass; the write fails
  got = launch(["fid", good, other, *DIGITS, "--out", str(tmp_path / "out"),
                "--kid-subsets", "2", "--kid-subset-size", "5"])
  captured = capsys.readouterr()
  assert got == 3 and "FD_digits @ 12 samples" in captured.out
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and "the REAL statistics" in err[0] and "no space left" in err[0], err


# launch sample: a missing checkpoint step, destinations that cannot be written.


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
  """A U-Net run folder: the tiny config of tests/test_diffusion_study.py and one checkpoint at
  step 2 (of a stand-in state: these tests never get as far as restoring it)."""
  from research import checkpoint
  from test_diffusion_study import tiny_config
  cfg = tiny_config()
  workdir = str(tmp_path_factory.mktemp("unet") / "run")
  store.claim(workdir, config_lib.to_dict(cfg), config_lib.run_id(cfg))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), use_async=False)
  ckpt.save(2, {"x": np.zeros(2, np.float32)}, {"step": 2})
  ckpt.close()
  return workdir


def _sample(workdir, *extra) -> int:
  return launch(["sample", "--workdir", workdir, "--steps", "3", *extra])


def test_sample_of_a_missing_step_lists_the_steps(unet_run, tmp_path, capsys):
  out = tmp_path / "grid.png"
  got = _sample(unet_run, "--step", "7", "--out", str(out))
  _one_error_line(capsys, 2, got, "no checkpoint at step 7")
  got = _sample(unet_run, "--step", "3", "--n", "2", "--out", str(out))
  _one_error_line(capsys, 2, got, "steps there: 2")
  assert not out.exists()


def test_sample_default_steps_fit_a_run_with_fewer_diffusion_steps(unet_run, tmp_path, capsys,
                                                                   monkeypatch):
  from research.recipes import ddpm as ddpm_recipe
  seen = {}

  def sampler_for(c, sampler, steps, *args):  # the run has diffusion.steps = 20, not 50
    seen["steps"] = steps
    raise UserError("stop before sampling")

  monkeypatch.setattr(ddpm_recipe, "restore_params", lambda run, step: ({}, 2))
  monkeypatch.setattr(ddpm_recipe, "sampler_for", sampler_for)
  got = launch(["sample", "--workdir", unet_run, "--out", str(tmp_path / "g.png")])
  _one_error_line(capsys, 2, got, "stop before sampling")
  assert seen["steps"] == 20
  got = launch(["sample", "--workdir", unet_run, "--steps", "21"])
  _one_error_line(capsys, 2, got, "--steps 21: the run was trained with 20 diffusion steps")


def test_sample_destinations_are_checked_before_sampling(unet_run, tmp_path, capsys, monkeypatch):
  from research.recipes import ddpm as ddpm_recipe
  monkeypatch.setattr(ddpm_recipe, "restore_params", lambda *a: pytest.fail("restored"))
  got = _sample(unet_run, "--out", str(tmp_path))
  _one_error_line(capsys, 2, got, "--out")
  got = _sample(unet_run, "--out", str(tmp_path / "g.png"), "--npz", str(tmp_path))
  _one_error_line(capsys, 2, got, "--npz")
  (tmp_path / "ro").mkdir()
  _read_only(monkeypatch, tmp_path / "ro")
  got = _sample(unet_run, "--out", str(tmp_path / "ro" / "g.png"))
  _one_error_line(capsys, 3, got, "read-only file system")
  got = _sample(unet_run, "--out", str(tmp_path / "g.png"),
                "--npz", str(tmp_path / "ro" / "s.npz"))
  _one_error_line(capsys, 3, got, "--npz's folder")
  _read_only(monkeypatch, unet_run)  # the default --out is RUN/samples.png
  got = _sample(unet_run)
  _one_error_line(capsys, 3, got, "read-only file system")
  assert not _files(tmp_path) and not os.path.exists(os.path.join(unet_run, "samples.png"))


# launch eval on a run folder that cannot be written.


@pytest.fixture
def lm_run(tmp_path):
  """A language-model run folder with its config.json only (the tests stop before restoring)."""
  import lm_helpers
  cfg, _ = config_lib.load(os.path.join(REPO, "experiments", "lm.py") + ":smoke",
                           lm_helpers.TINY)
  workdir = str(tmp_path / "lm")
  store.claim(workdir, config_lib.to_dict(cfg), config_lib.run_id(cfg))
  task = tmp_path / "add.json"
  task.write_text(json.dumps({"name": "add", "examples": [{"input": "1+1=", "target": "2"}]}))
  return workdir, str(task)


def test_eval_on_a_read_only_run_fails_before_scoring(lm_run, capsys, monkeypatch):
  from research.evals import runs, scorer
  workdir, task = lm_run
  monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("run loaded"))
  monkeypatch.setattr(scorer, "bigbench_scores", lambda *a, **k: pytest.fail("scored"))
  _read_only(monkeypatch, workdir)
  got = launch(["eval", "--workdir", workdir, "--task", task])
  _one_error_line(capsys, 3, got, "eval folder")
  assert not os.path.exists(os.path.join(workdir, "eval"))
  os.makedirs(os.path.join(workdir, "eval", "add.json"))
  monkeypatch.undo()
  monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("run loaded"))
  got = launch(["eval", "--workdir", workdir, "--task", task])
  _one_error_line(capsys, 2, got, "is a folder")


def test_eval_prints_the_scores_when_writing_them_fails(lm_run, capsys, monkeypatch):
  import types

  from research.data import text
  from research.evals import runs, scorer
  workdir, task = lm_run
  fake_run = types.SimpleNamespace(workdir=workdir, run_id="r", step=2, model=None, params=None,
                                   tokenizer=text.ByteTokenizer())
  monkeypatch.setattr(runs, "load_run", lambda *a, **k: fake_run)
  monkeypatch.setattr(scorer, "bigbench_scores",
                      lambda *a, **k: {"task": "add", "exact_str_match": 0.75})
  _refuse_writes_of(monkeypatch, ".tmp-add.json")  # the check passes; the write itself fails
  got = launch(["eval", "--workdir", workdir, "--task", task])
  captured = capsys.readouterr()
  assert got == 3 and '"exact_str_match": 0.75' in captured.out
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: the scores printed above could not be "
                                             "written to") and "no space left" in err[0]


# Numeric options out of their domain.


@pytest.mark.parametrize("argv", [
    ["fid", "a", "b", "--n", "1"], ["fid", "a", "b", "--n", "10", "0"],
    ["fid", "a", "b", "--batch-size", "0"], ["fid", "a", "b", "--kid-subsets", "0"],
    ["fid", "a", "b", "--kid-subset-size", "1"], ["fid", "a", "b", "--kid-max", "-3"],
    ["fid", "a", "b", "--batch-size", "ten"],
    ["sample", "--workdir", "w", "--n", "0"], ["sample", "--workdir", "w", "--steps", "0"],
    ["sample", "--workdir", "w", "--eta", "1.5"], ["sample", "--workdir", "w", "--eta", "nan"],
    ["sample", "--workdir", "w", "--seed", "-1"],
    ["sample", "--workdir", "w", "--seed", str(2**32)],
    ["sample", "--workdir", "w", "--step", "-1"], ["sample", "--workdir", "w", "--columns", "0"],
    ["sample", "--workdir", "w", "--batch-size", "0"],
    ["eval", "--workdir", "w", "--task", "t", "--step", "-2"],
    ["eval", "--workdir", "w", "--task", "t", "--limit", "0"],
    ["eval", "--workdir", "w", "--task", "t", "--shots", "-1"],
    ["eval", "--workdir", "w", "--task", "t", "--batch-size", "0"],
], ids=lambda argv: " ".join(argv[:1] + argv[-2:]))
def test_numeric_option_out_of_domain_is_one_line(capsys, argv):
  option = argv[-2] if argv[-2].startswith("--") else argv[-3]
  _one_error_line(capsys, 2, launch(argv), option)
