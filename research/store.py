"""The run store: a folder per run, and a sweep folder holding its plan and a folder per run id.

A run folder belongs to one resolved config (`config.json` holds it with its run id): running the
same config again resumes it, or reports it finished (`summary.json` is written last, atomically);
another config in the same folder is refused rather than mixed in.

A sweep folder:

    sweep.json            the plan: study file, preset, overrides, threads per run, and per run its
                          id, config, analytic size (N, N_nonemb, D, C) and the fields that vary
    runs/<run id>/        a run folder as above, plus status.json (pending / running / finished /
                          failed / interrupted, with the reason, pid and attempt) and log.txt (the
                          run's stdout and stderr, appended across attempts)
    runs.csv, fit.json, figures    what the study's analyze() writes

Every file is written atomically (research.fileio), so a sweep killed at any moment leaves files
that are either the old or the new version. A process training a run holds an exclusive lock on
`runs/<id>/.lock`; a run whose status says running but whose lock is free was killed and resumes
from its last checkpoint on the next launch.
"""

import fcntl
import json
import os
import sys
import time

import numpy as np
import pandas as pd

from research.errors import UserError, describe_os_error
from research.fileio import atomic_write_json, writable_folder

CONFIG, SUMMARY, STATUS = "config.json", "summary.json", "status.json"
LOG, LOCK, METRICS = "log.txt", ".lock", "metrics.jsonl"
SWEEP, RUNS_DIR, RUNS_CSV = "sweep.json", "runs", "runs.csv"
STATES = ("finished", "running", "failed", "interrupted", "pending")


def check_workdir(workdir: str) -> None:
  """Before any work: `workdir` can be a folder and this process can write there (or in its
  nearest existing parent; nothing is created). UserError for a path that cannot be a folder,
  EnvironmentFault when the disk refuses."""
  writable_folder(workdir, "--workdir", create=False)


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, None when there is no such file; a UserError naming the file
  when it is not a JSON object (damaged, truncated, edited by hand, or another kind of file)."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except FileNotFoundError:
    return None
  except IsADirectoryError:
    raise UserError(f"{path!r} is a folder, where a JSON file was expected") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path!r} is not valid JSON ({_json_problem(e)}): the file is damaged or "
                    "was edited; restore it, or use another folder") from None
  if not isinstance(value, dict):
    raise UserError(f"{path!r} holds a JSON {type(value).__name__}, not the object this project "
                    "writes there: the file was replaced or edited")
  return value


def _json_problem(e: Exception) -> str:
  if isinstance(e, json.JSONDecodeError):
    return f"{e.msg} at line {e.lineno} column {e.colno}" if e.doc.strip() else "empty file"
  return "not UTF-8 text"


def read_status(run_dir: str) -> dict:
  """status.json of a run folder, {} when absent or damaged (a status is advisory: the run's
  state also follows from its checkpoints and summary, research.store.run_state)."""
  try:
    return read_json(os.path.join(run_dir, STATUS)) or {}
  except UserError:
    return {}


# One run's folder.

def read_config(workdir: str) -> dict | None:
  """config.json of a run folder ({"run_id", "config"}), None when absent; a UserError when it
  is damaged or no longer matches its run id (edited after the run started: it would then
  misdescribe the run's checkpoints and results)."""
  from research.config import run_id_of
  path = os.path.join(workdir, CONFIG)
  record = read_json(path)
  if record is None:
    return None
  if not isinstance(record.get("config"), dict) or not isinstance(record.get("run_id"), str):
    raise UserError(f"{path!r} is not a run's config file: it lacks the run_id and config this "
                    "project writes (a run of python -m launch run, or a sweep's runs/<id>)")
  found = run_id_of(record["config"])
  if found != record["run_id"]:
    raise UserError(f"{path!r} was edited: its config hashes to run {found}, but the file names "
                    f"run {record['run_id']}, whose checkpoints and results are in this folder; "
                    "restore the file, or train the edited config in a new folder")
  return record


def saved_steps(checkpoint_dir: str) -> list[int]:
  """The steps saved in a checkpoints folder, from the files alone: non-empty folders named by
  their step (Orbax's unfinished `N.orbax-checkpoint-tmp` folders and an empty folder, where
  nothing was ever written, do not count)."""
  try:
    names = os.listdir(checkpoint_dir)
  except OSError:
    return []
  def saved(name):
    folder = os.path.join(checkpoint_dir, name)
    try:
      return name.isdigit() and os.path.isdir(folder) and bool(os.listdir(folder))
    except OSError:
      return False
  return sorted(int(name) for name in names if saved(name))


def has_checkpoints(workdir: str) -> bool:
  """Whether RUN/checkpoints holds a saved step (`saved_steps`)."""
  return bool(saved_steps(os.path.join(workdir, "checkpoints")))


def claim(workdir: str, config_dict: dict, run_id: str) -> str:
  """'new', 'resume' or 'finished'; writes config.json for a new run. A run to resume must
  still have its metrics.jsonl (the summary's training loss is read from it)."""
  check_workdir(workdir)
  path = os.path.join(workdir, CONFIG)
  stored = read_config(workdir)
  if stored is not None:
    if stored["run_id"] != run_id:
      raise UserError(
          f"workdir {workdir!r} holds run {stored['run_id']} with a different config than "
          f"this one ({run_id}); use another --workdir, or delete that folder to start over")
    if os.path.exists(os.path.join(workdir, SUMMARY)):
      return "finished"
    if not has_checkpoints(workdir):  # an empty checkpoints/: killed before its first save
      return "new"
    if not os.path.exists(os.path.join(workdir, METRICS)):
      raise UserError(f"{workdir!r} has checkpoints but no {METRICS}: the log of the steps "
                      "trained so far is gone, and the run's summary is computed from it; "
                      "restore the file, or delete the folder's checkpoints to start over")
    return "resume"
  os.makedirs(workdir, exist_ok=True)
  atomic_write_json(path, {"run_id": run_id, "config": config_dict})
  return "new"


def summary(workdir: str) -> dict | None:
  return read_json(os.path.join(workdir, SUMMARY))


def units(summary: dict) -> float | None:
  """D of a finished run: its count of the units its recipe names (summary["report"]["unit"]:
  tokens, images, ...); summaries written before the loop named its units kept it as "tokens"."""
  unit = summary.get("report", {}).get("unit", "tokens")
  return summary.get(unit, summary.get("tokens"))


def write_status(run_dir: str, status: str, **fields) -> bool:
  """Records a run's status; False (with a one-line warning) when the disk refuses: a status is
  advisory (run_state reads the checkpoints and summary too), so a sweep outlives it."""
  previous = read_status(run_dir)
  attempt = previous.get("attempt", 0) + (1 if status == "running" else 0)
  try:
    atomic_write_json(os.path.join(run_dir, STATUS),
                      {"status": status, "time": time.time(), "attempt": attempt, **fields})
  except OSError as e:
    print(f"warning: the status '{status}' of {run_dir} was not recorded: "
          f"{describe_os_error(e)}", file=sys.stderr)
    return False
  return True


class RunLock:
  """An exclusive flock on run_dir/.lock, held while a process trains the run; the file names
  the holder's pid. The kernel drops the lock when its holder dies, so a stale lock file is
  simply taken over."""

  def __init__(self, run_dir: str):
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, LOCK)
    self.fd = None

  def acquire(self, timeout: float = 0.0, *, record_pid: bool = True) -> bool:
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.time() + timeout
    while True:
      try:
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.time() >= deadline:
          os.close(self.fd)
          self.fd = None
          return False
        time.sleep(0.2)
    if record_pid:
      os.ftruncate(self.fd, 0)
      os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
    return True

  def holder(self) -> str:
    """The pid written by the process holding the lock ('?' when unknown)."""
    try:
      with open(self.path) as f:
        return f.read().strip() or "?"
    except OSError:
      return "?"

  def acquire_or_refuse(self) -> None:
    """Takes the lock (making the folder), else a UserError naming the process that holds it."""
    os.makedirs(self.run_dir, exist_ok=True)
    if not self.acquire():
      pid = self.holder()
      raise UserError(f"run folder {self.run_dir!r} is being trained by another process (pid "
                      f"{pid}, holding {self.path}); wait for it to finish, or stop it "
                      f"(kill {pid}: it saves a checkpoint) and run this again to resume")

  def release(self) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None


def is_locked(run_dir: str) -> bool:
  if not os.path.exists(os.path.join(run_dir, LOCK)):
    return False
  lock = RunLock(run_dir)
  if lock.acquire(record_pid=False):
    lock.release()
    return False
  return True


def run_state(run_dir: str) -> str:
  """One of STATES, from the files alone (and the lock, for a run being trained)."""
  if os.path.exists(os.path.join(run_dir, SUMMARY)):
    return "finished"
  if is_locked(run_dir):
    return "running"
  status = read_status(run_dir).get("status")
  if status == "failed":
    return "failed"
  if status in ("running", "interrupted") or has_checkpoints(run_dir):
    return "interrupted"
  return "pending"


def last_log_line(run_dir: str) -> str:
  try:
    with open(os.path.join(run_dir, LOG), "rb") as f:
      f.seek(max(0, os.path.getsize(f.name) - 8192))
      lines = [l.strip() for l in f.read().decode("utf-8", "replace").splitlines() if l.strip()]
  except FileNotFoundError:
    return ""
  return lines[-1] if lines else ""


# A sweep's folder.

def run_dir(workdir: str, run_id: str) -> str:
  return os.path.join(workdir, RUNS_DIR, run_id)


def read_sweep(workdir: str) -> dict:
  record = read_json(os.path.join(workdir, SWEEP))
  if record is None:
    raise UserError(f"{workdir!r} is not a sweep folder: it has no {SWEEP} (start one with "
                    "python -m launch sweep --config FILE:PRESET --workdir DIR)")
  return record


def varying_fields(configs: list[dict]) -> list[str]:
  """Dotted names of the config fields whose values differ across the runs."""
  flat = [flatten(c) for c in configs]
  names = sorted(set().union(*flat)) if flat else []
  return [n for n in names if len({json.dumps(f.get(n), sort_keys=True) for f in flat}) > 1]


def mark_varying(runs: list[dict]) -> list[str]:
  """Sets each run entry's "fields" to its values of the fields that vary; returns their names."""
  varying = varying_fields([r["config"] for r in runs])
  for r in runs:
    r["fields"] = {k: flatten(r["config"]).get(k) for k in varying}
  return varying


def flatten(d: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def prepare_sweep(workdir: str, plan: dict, *, extend: bool) -> dict:
  """Checks `plan` against what `workdir` holds, without writing: the record to write.

  `plan` has the keys of sweep.json; its "runs" list entries have "run", "config" and size keys.
  A folder of another plan is refused unless `extend`, which appends the new runs to it.
  """
  check_workdir(workdir)
  path = os.path.join(workdir, SWEEP)
  stored = read_json(path)
  if stored is None:
    if os.path.isdir(workdir) and os.listdir(workdir):
      raise UserError(f"--workdir {workdir!r} is a non-empty folder without {SWEEP}: not a sweep "
                      "folder; choose an empty or new folder")
    return plan
  if stored.get("threads_per_run") != plan["threads_per_run"]:
    raise UserError(
        f"sweep {workdir!r} trains each run with {stored.get('threads_per_run')} thread(s), fixed "
        f"by its plan so that a resumed run reproduces the uninterrupted one; pass "
        f"--threads-per-worker {stored.get('threads_per_run')} (or leave it out)")
  old = {r["run"] for r in stored["runs"]}
  new = [r for r in plan["runs"] if r["run"] not in old]
  if not new:  # this plan, or a part of an extended one
    return stored
  if not extend:
    overrides = " ".join(stored.get("overrides", []))
    raise UserError(
        f"sweep folder {workdir!r} belongs to another plan ({stored['spec']}"
        f"{' ' + overrides if overrides else ''}, {len(old)} runs); {len(new)} of this plan's "
        f"{len(plan['runs'])} runs are not in it. Use another --workdir, or --extend to add them")
  runs = stored["runs"] + new
  merged = dict(stored, runs=runs,
                plans=stored.get("plans", []) + [dict(spec=plan["spec"],
                                                      overrides=plan["overrides"])])
  merged["varying"] = mark_varying(merged["runs"])
  return merged


def write_sweep(workdir: str, record: dict) -> None:
  """sweep.json, and a folder with config.json for every run not yet created."""
  os.makedirs(workdir, exist_ok=True)
  for r in record["runs"]:
    folder = run_dir(workdir, r["run"])
    if not os.path.exists(os.path.join(folder, CONFIG)):
      claim(folder, r["config"], r["run"])
  atomic_write_json(os.path.join(workdir, SWEEP), record)


def states(workdir: str, record: dict) -> dict[str, str]:
  return {r["run"]: run_state(run_dir(workdir, r["run"])) for r in record["runs"]}


def progress_flops(run_folder: str) -> float:
  """FLOPs trained so far by an unfinished run: the newest train record in its metrics.jsonl."""
  path = os.path.join(run_folder, "metrics.jsonl")
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 4096))
      tail = f.read().decode("utf-8", "replace").splitlines()
  except FileNotFoundError:
    return 0.0
  for line in reversed(tail):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if record.get("kind") == "train" and "flops" in record:
      return float(record["flops"])
  return 0.0


def table(workdir: str, metrics: dict | None = None) -> pd.DataFrame:
  """One row per planned run: run, N, N_nonemb, D, C, flop_convention, the metrics, wall_s,
  status, and one column per config field that varies across the plan.

  `metrics` maps a column to a summary key (default: train_loss from train_loss_last10 and
  val_loss from final_val_loss). Finished runs give measured D and C from their summaries;
  unfinished ones the plan's analytic values and NaN metrics.
  """
  metrics = metrics or {"train_loss": "train_loss_last10", "val_loss": "final_val_loss"}
  record = read_sweep(workdir)
  rows = []
  for r in record["runs"]:
    folder = run_dir(workdir, r["run"])
    s = summary(folder) or {}
    row = {"run": r["run"],
           "N": s.get("params_total", r["N"]), "N_nonemb": s.get("params_non_embedding",
                                                                 r["N_nonemb"]),
           "D": units(s) if s else r["D"], "C": s.get("flops", r["C"]),
           "flop_convention": s.get("flop_convention", r["flop_convention"])}
    row.update({col: s.get(key, np.nan) for col, key in metrics.items()})
    row.update(wall_s=s.get("wall_s", np.nan), status=run_state(folder))
    row.update({k: _cell(v) for k, v in r.get("fields", {}).items()})
    rows.append(row)
  return pd.DataFrame(rows)


def _cell(value):
  return json.dumps(value) if isinstance(value, (list, dict)) else value
