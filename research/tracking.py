"""Metric writers: JSONL always, wandb when configured, a console progress bar with ETA.

The JSONL log is append-only. A resumed run appends an `{"event": "resume", ...}` record and
then re-logs the steps after its checkpoint, which are identical to the ones the killed process
wrote (batches and RNG are indexed by step); `read_metrics` keeps the last record of each step.
"""

import json
import math
import os
import sys

from tqdm import tqdm


def read_log(path: str) -> dict[str, list[dict]]:
  """{kind: its records ("train", "eval", ...), one per step (the last written wins)}, read in
  one pass."""
  by_kind: dict[str, dict] = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a killed process
      if "kind" in record and "step" in record:
        by_kind.setdefault(record["kind"], {})[record["step"]] = record
  return {kind: [steps[s] for s in sorted(steps)] for kind, steps in by_kind.items()}


def read_metrics(path: str, kind: str = "train") -> list[dict]:
  """The records of one kind ("train" or "eval"), one per step (the last written wins)."""
  return read_log(path).get(kind, [])


def _clean(value):
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep the fact visible
  return value


class Tracker:
  """Writes metrics to `workdir/metrics.jsonl`, optionally to wandb, and drives a progress bar."""

  def __init__(self, workdir: str, run_id: str, total_steps: int, start_step: int, *,
               config_dict: dict | None = None, progress: bool = True, wandb_project: str = "",
               wandb_mode: str = "offline", group: str | None = None, chief: bool = True):
    """`wandb_project` (with `wandb_mode`) also logs to wandb; `group` is the wandb group (a
    sweep's name). Only the chief process of a multi-process run writes (the others track
    nothing)."""
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.file = open(self.path if chief else os.devnull, "a", buffering=1)
    self.wandb = None
    if wandb_project and chief:
      import wandb  # optional: imported only when asked for
      self.wandb = wandb.init(project=wandb_project, name=run_id, id=run_id, config=config_dict,
                              dir=workdir, resume="allow", mode=wandb_mode or None, group=group)
    self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                    disable=not (progress and chief), file=sys.stderr, mininterval=1.0)

  def event(self, name: str, **fields) -> None:
    self.file.write(json.dumps({"event": name, **{k: _clean(v) for k, v in fields.items()}}) + "\n")

  def write(self, step: int, metrics: dict, kind: str = "train") -> None:
    record = {"kind": kind, "step": step, **{k: _clean(v) for k, v in metrics.items()}}
    self.file.write(json.dumps(record) + "\n")
    if self.wandb is not None:
      self.wandb.log({f"{kind}/{k}": v for k, v in record.items()
                      if isinstance(v, (int, float)) and k != "step"}, step=step)

  def progress(self, step: int, postfix: dict) -> None:
    self.bar.n = step
    self.bar.set_postfix(postfix, refresh=False)
    self.bar.update(0)

  def message(self, text: str) -> None:
    self.bar.write(text, file=sys.stderr)

  def close(self) -> None:
    self.bar.close()
    self.file.close()
    if self.wandb is not None:
      self.wandb.finish()
