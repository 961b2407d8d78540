"""The run store: one folder per run, holding its resolved config, logs, checkpoints, summary.

A folder belongs to one resolved config: re-running the same config resumes it (or reports it
finished); a different config in the same folder is refused rather than mixed in.
"""

import json
import os

from research.errors import UserError
from research.fileio import atomic_write_json

CONFIG, SUMMARY = "config.json", "summary.json"


def claim(workdir: str, config_dict: dict, run_id: str) -> str:
  """'new', 'resume' or 'finished'; writes config.json for a new run."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG)
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored.get("run_id") != run_id:
      raise UserError(
          f"workdir {workdir!r} holds run {stored.get('run_id')} with a different config than "
          f"this one ({run_id}); use another --workdir, or delete that folder to start over")
    return "finished" if os.path.exists(os.path.join(workdir, SUMMARY)) else "resume"
  atomic_write_json(path, {"run_id": run_id, "config": config_dict})
  return "new"


def summary(workdir: str) -> dict:
  with open(os.path.join(workdir, SUMMARY)) as f:
    return json.load(f)
