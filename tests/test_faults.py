"""The fault suite for runs and folders (docs/reliability.md): each class of failure a fault probe
found, with at least two instances, so that none comes back. Every case checks the exit code,
that the error is one line, and that nothing was lost or half-written.

The option domains are in test_faults_options.py, the files of fid / sample / eval in
test_faults_files.py.
"""

import errno
import json
import os
import shutil
import signal

import pytest

from launch.__main__ import main
from lm_helpers import losses, tiny_args
from research import fileio, store
from research.train import loop

STALE_PID = "999999"  # a pid no live process has here


def _one_line_error(capsys) -> str:
  err = capsys.readouterr().err.strip()
  lines = [line for line in err.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("error: "), err
  assert sum(line.startswith("error: ") for line in lines) == 1, err
  return lines[-1]


def _run(workdir, steps=6, *extra):
  return main(["run"] + tiny_args(workdir, steps, "loop.checkpoint_every=2", *extra))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tiny run of 6 steps (checkpoints at 2, 4, 6), started over a stale lock file whose
  holder is long dead: the lock is taken over."""
  folder = tmp_path_factory.mktemp("faults") / "run"
  folder.mkdir()
  (folder / store.LOCK).write_text(STALE_PID + "\n")
  assert _run(folder) == 0
  assert (folder / store.LOCK).read_text().strip() == str(os.getpid())
  return folder


@pytest.fixture
def unfinished(trained, tmp_path):
  """A copy of the trained run as if it had been killed after its last checkpoint."""
  folder = tmp_path / "run"
  shutil.copytree(trained, folder)
  os.remove(folder / store.SUMMARY)
  return folder


# 1. Environment errors while writing: one line naming the path, nothing written.

@pytest.mark.parametrize("case", ["below-a-file", "empty", "read-only"])
def test_a_workdir_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, case):
  (tmp_path / "file").write_text("x")
  workdir = {"below-a-file": str(tmp_path / "file" / "run"), "empty": "",
             "read-only": str(tmp_path / "ro" / "run")}[case]
  if case == "read-only":
    def refuse(*args, **kwargs):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir", ""))
    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
  code = main(["run"] + tiny_args(workdir, 2))
  line = _one_line_error(capsys)
  assert code == (3 if case == "read-only" else 2), line
  assert {"below-a-file": "which is a file", "empty": "is empty",
          "read-only": "read-only file system"}[case] in line
  assert sorted(os.listdir(tmp_path)) == ["file"]


# 2. Corrupt or foreign input files: one line naming the file.

@pytest.mark.parametrize("command", ["status", "analyze"])
@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_a_damaged_sweep_json_is_one_line(tmp_path, capsys, command, content):
  (tmp_path / store.SWEEP).write_text(content)
  assert main([command, "--workdir", str(tmp_path)]) == 2
  assert "sweep.json" in _one_line_error(capsys)


def test_a_damaged_config_json_or_a_foreign_config_file_is_one_line(tmp_path, capsys):
  (tmp_path / store.CONFIG).write_text('{"run_id": "abc", "config": ')
  assert main(["run"] + tiny_args(tmp_path, 2)) == 2
  line = _one_line_error(capsys)
  assert "config.json" in line and "not valid JSON" in line
  readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
  assert main(["run", "--config", readme + ":smoke", "--workdir", str(tmp_path / "x")]) == 2
  assert "not a Python file" in _one_line_error(capsys)
  assert not (tmp_path / "x").exists()


# 5. Signals at the start, the middle and the end of a run.

def _signal_in(monkeypatch, method: str, calls: int = 1):
  """SIGTERM to this process from inside loop._Session.`method`, on its `calls`-th call."""
  original, count = getattr(loop._Session, method), [0]

  def wrapped(self, *args, **kwargs):
    count[0] += 1
    if count[0] == calls:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(loop._Session, method, wrapped)


def test_sigterm_at_the_start_saves_step_1_and_exits_143(tmp_path, capsys, monkeypatch):
  _signal_in(monkeypatch, "__init__")  # while restoring or initialising, before any step
  assert _run(tmp_path, 6) == 143
  assert "SIGTERM: saved the checkpoint at step 1" in capsys.readouterr().err
  assert store.run_state(str(tmp_path)) == "interrupted"
  assert sorted(losses(tmp_path)) == [0]


def test_sigterm_during_the_final_evaluation_lets_the_run_finish(unfinished, trained, capsys,
                                                                 monkeypatch):
  _signal_in(monkeypatch, "evaluate")  # the resumed run has no steps left: the final one
  assert _run(unfinished, 6) == 0
  assert "SIGTERM arrived while the run was finishing" in capsys.readouterr().out
  assert store.summary(str(unfinished))["status"] == "finished"
  assert losses(unfinished) == losses(trained)


# 6. Two runs on one folder: the second exits at once naming the first.

def test_a_second_run_on_a_held_folder_exits_at_once_naming_the_holder(unfinished, capsys):
  before = (unfinished / store.METRICS).read_bytes()
  lock = store.RunLock(str(unfinished))
  assert lock.acquire()
  try:
    assert _run(unfinished, 6) == 2
    line = _one_line_error(capsys)
  finally:
    lock.release()
  assert f"pid {os.getpid()}" in line and "being trained by another process" in line
  assert (unfinished / store.METRICS).read_bytes() == before
  assert not (unfinished / store.SUMMARY).exists()


# 7. A run folder that no longer matches its run.

def test_an_edited_config_json_is_refused(trained, tmp_path, capsys):
  for finished in (True, False):
    folder = tmp_path / f"edited-{finished}"
    shutil.copytree(trained, folder)
    if not finished:
      os.remove(folder / store.SUMMARY)
    record = json.loads((folder / store.CONFIG).read_text())
    record["config"]["train"]["lr"] *= 2
    (folder / store.CONFIG).write_text(json.dumps(record))
    assert _run(folder, 6) == 2
    assert "was edited" in _one_line_error(capsys)


def test_a_run_killed_before_its_first_save_starts_again(unfinished, trained):
  """kill -9 after the checkpoint folder was made and before any step was saved or logged (the
  window in which a sweep's kill -9 test once caught it): nothing to resume, and nothing lost."""
  shutil.rmtree(unfinished / "checkpoints")
  (unfinished / "checkpoints").mkdir()
  (unfinished / "checkpoints" / "2.orbax-checkpoint-tmp").mkdir()  # a save cut short
  os.remove(unfinished / store.METRICS)
  assert _run(unfinished) == 0 and losses(unfinished) == losses(trained)


def test_a_deleted_metrics_log_is_refused_not_recomputed(unfinished, capsys):
  os.remove(unfinished / store.METRICS)
  assert _run(unfinished, 6) == 2
  assert "no metrics.jsonl" in _one_line_error(capsys)
  assert not (unfinished / store.SUMMARY).exists()


# 8. Every checkpoint corrupt: refused loudly, nothing overwritten.

def test_every_checkpoint_corrupt_is_refused_not_restarted(unfinished, capsys):
  for root, _, files in os.walk(unfinished / "checkpoints"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  before = (unfinished / store.METRICS).read_bytes()
  with pytest.warns(UserWarning, match="trying an older one"):
    assert _run(unfinished, 6) == 2
  line = _one_line_error(capsys)
  assert "no checkpoint in" in line and "could be restored" in line
  assert (unfinished / store.METRICS).read_bytes() == before


# 9. Disk full: one line, and the sweep's bookkeeping outlives it.

def test_a_full_disk_is_one_line_and_loses_nothing(unfinished, trained, capsys, monkeypatch):
  original = fileio.atomic_write_bytes

  def full(path, data):
    if path.endswith(store.SUMMARY):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return original(path, data)

  monkeypatch.setattr(fileio, "atomic_write_bytes", full)
  assert _run(unfinished, 6) == 3
  assert "no space left on device" in _one_line_error(capsys)
  monkeypatch.setattr(fileio, "atomic_write_bytes", original)
  assert _run(unfinished, 6) == 0  # space freed: the same command finishes it
  assert losses(unfinished) == losses(trained)


def _free_space(monkeypatch, free_bytes):
  """shutil.disk_usage as the checkpointer sees it: `free_bytes()` free, read on each call."""
  from research import checkpoint
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda path: shutil._ntuple_diskusage(1 << 40, 0, free_bytes()))


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_training(unfinished, trained,
                                                                          capsys, monkeypatch):
  before = (unfinished / store.METRICS).read_bytes()
  _free_space(monkeypatch, lambda: 1000)
  assert _run(unfinished) == 3
  line = _one_line_error(capsys)
  assert "no space left on device (a checkpoint needs about" in line and "checkpoints" in line
  assert (unfinished / store.METRICS).read_bytes() == before  # nothing evaluated or logged
  assert not (unfinished / store.SUMMARY).exists()


def test_a_disk_that_fills_midway_stops_at_a_checkpoint_in_one_line(tmp_path, trained, capsys,
                                                                    monkeypatch):
  calls = []  # the start's check, the save at step 2, then the disk is full at step 4

  def free():
    calls.append(1)
    return 1 << 40 if len(calls) <= 2 else 1000

  _free_space(monkeypatch, free)
  folder = tmp_path / "run"
  assert _run(folder) == 3
  assert "no space left on device" in _one_line_error(capsys)
  assert sorted(os.listdir(folder / "checkpoints")) == ["2"]
  monkeypatch.undo()
  assert _run(folder) == 0  # space freed: it resumes from step 2 and matches the whole run
  assert losses(folder) == losses(trained)


def test_an_empty_step_folder_is_not_a_checkpoint(unfinished, trained):
  from research import checkpoint
  (unfinished / "checkpoints" / "8").mkdir()
  ckpt = checkpoint.Checkpointer(str(unfinished / "checkpoints"), read_only=True)
  assert ckpt.steps() == [2, 4, 6]
  ckpt.close()
  assert _run(unfinished) == 0 and losses(unfinished) == losses(trained)


def test_status_and_log_writes_the_disk_refuses_do_not_stop_a_sweep(tmp_path, capsys,
                                                                    monkeypatch):
  from launch import worker

  def full(path, *args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(store, "atomic_write_json", full)
  assert store.write_status(str(tmp_path), "running") is False
  assert "no space left on device" in capsys.readouterr().err
  monkeypatch.setattr(worker, "_output_to", full)  # the run's log.txt cannot be opened
  result = worker.execute(worker.Task("r", str(tmp_path / "r"), {}, "none.py"))
  assert result.status == "failed" and "no space left on device" in result.reason


# 10. Messages that say what is true.

def test_a_divergence_before_any_checkpoint_says_there_is_none(tmp_path, capsys):
  code = main(["run"] + tiny_args(tmp_path, 30, "train.lr=1e9", "train.grad_clip=0",
                                  "train.schedule=constant", "loop.checkpoint_every=1000"))
  assert code == 1
  line = _one_line_error(capsys)
  assert "no checkpoint had been written yet" in line and "last good" not in line
