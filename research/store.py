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
import time

import numpy as np
import pandas as pd

from research.errors import UserError
from research.fileio import atomic_write_json

CONFIG, SUMMARY, STATUS = "config.json", "summary.json", "status.json"
LOG, LOCK = "log.txt", ".lock"
SWEEP, RUNS_DIR, RUNS_CSV = "sweep.json", "runs", "runs.csv"
STATES = ("finished", "running", "failed", "interrupted", "pending")


def check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir!r} is an existing file, not a folder; choose another "
                    "path")


def read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


# One run's folder.

def claim(workdir: str, config_dict: dict, run_id: str) -> str:
  """'new', 'resume' or 'finished'; writes config.json for a new run."""
  check_workdir(workdir)
  path = os.path.join(workdir, CONFIG)
  stored = read_json(path)
  if stored is not None:
    if stored.get("run_id") != run_id:
      raise UserError(
          f"workdir {workdir!r} holds run {stored.get('run_id')} with a different config than "
          f"this one ({run_id}); use another --workdir, or delete that folder to start over")
    if os.path.exists(os.path.join(workdir, SUMMARY)):
      return "finished"
    return "resume" if os.path.isdir(os.path.join(workdir, "checkpoints")) else "new"
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


def write_status(run_dir: str, status: str, **fields) -> None:
  previous = read_json(os.path.join(run_dir, STATUS)) or {}
  attempt = previous.get("attempt", 0) + (1 if status == "running" else 0)
  atomic_write_json(os.path.join(run_dir, STATUS),
                    {"status": status, "time": time.time(), "attempt": attempt, **fields})


class RunLock:
  """An exclusive flock on run_dir/.lock, held while a process trains the run."""

  def __init__(self, run_dir: str):
    self.path = os.path.join(run_dir, LOCK)
    self.fd = None

  def acquire(self, timeout: float = 0.0) -> bool:
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.time() + timeout
    while True:
      try:
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
      except BlockingIOError:
        if time.time() >= deadline:
          os.close(self.fd)
          self.fd = None
          return False
        time.sleep(0.2)

  def release(self) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None


def is_locked(run_dir: str) -> bool:
  if not os.path.exists(os.path.join(run_dir, LOCK)):
    return False
  lock = RunLock(run_dir)
  if lock.acquire():
    lock.release()
    return False
  return True


def run_state(run_dir: str) -> str:
  """One of STATES, from the files alone (and the lock, for a run being trained)."""
  if os.path.exists(os.path.join(run_dir, SUMMARY)):
    return "finished"
  if is_locked(run_dir):
    return "running"
  status = (read_json(os.path.join(run_dir, STATUS)) or {}).get("status")
  if status == "failed":
    return "failed"
  if status in ("running", "interrupted") or os.path.isdir(os.path.join(run_dir, "checkpoints")):
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
