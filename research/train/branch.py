"""Branches: a run that starts from another run's checkpoint at a given step (`loop.init_from`).

WSD (warmup-stable-decay) makes this worth having: one constant-rate run per model size, and a
cooldown branched from its checkpoints at several token counts, gives a whole loss-against-data
curve for about the price of one run (Hägele et al. 2024). A branch is the parent's run up to the
branch step, then its own schedule tail, so:

  * `loop.init_from = "PARENT@STEP"`: PARENT is the parent's run folder, absolute or relative to
    the folder that holds this run's folder (in a sweep, a sibling run id); STEP one of its kept
    checkpoints (the parent keeps them with `loop.keep_steps`);
  * the configs may differ only in the schedule's tail, the run's length (the fields the model
    family's recipe names: `Recipe.length_fields`) and loop, tracking and mesh fields
    (BRANCH_MAY_CHANGE): same model, data, seed and optimizer, so that the step-indexed batches
    and the state continue the parent's;
  * the learning rate must equal the parent's at every step before STEP (checked against the
    parent's logged rates), e.g. WSD branches of a constant-rate parent with the same warmup;
  * the branch's metrics.jsonl starts with the parent's lines before STEP, so its logged losses up
    to the branch point are the parent's; its wall time counts its own steps only.
"""

import dataclasses
import os

import numpy as np

from research import store, tracking
from research.errors import UserError
from research.train.recipe import split_init_from

BRANCH_MAY_CHANGE = ("train.schedule", "train.cooldown_fraction", "train.final_lr_fraction",
                     "loop.", "tracking.", "mesh.")
FIELD = "loop.init_from"


@dataclasses.dataclass(frozen=True)
class Parent:
  run_dir: str
  step: int

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.run_dir, "checkpoints")


def parse(init_from: str, workdir: str) -> Parent:
  """'PARENT@STEP' -> Parent, with PARENT resolved beside `workdir`."""
  path, step = split_init_from(init_from)
  if not os.path.isabs(path):
    path = os.path.join(os.path.dirname(os.path.abspath(workdir)), path)
  return Parent(os.path.normpath(path), step)


def checkpoint_steps(directory: str) -> list[int]:
  """The finished checkpoint steps in an Orbax folder (its numbered subfolders)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check(parent: Parent, config_dict: dict, init_from: str, length_fields=()) -> dict:
  """Every check that needs only the parent's files; returns the parent's config.json record.
  `length_fields`: the config fields that set a run's length, which may differ too."""
  record = store.read_config(parent.run_dir)
  if record is None:
    raise UserError(f"config field '{FIELD}' = {init_from!r}: no run folder at {parent.run_dir} "
                    "(no config.json there)")
  steps = checkpoint_steps(parent.checkpoints)
  if parent.step not in steps:
    raise UserError(f"config field '{FIELD}' = {init_from!r}: run {record.get('run_id')} has no "
                    f"checkpoint at step {parent.step} (it has {steps or 'none'}; keep one with "
                    "loop.keep_steps in the parent's config)")
  ours, theirs = store.flatten(config_dict), store.flatten(record["config"])
  differ = sorted(k for k in set(ours) | set(theirs)
                  if ours.get(k) != theirs.get(k) and k != FIELD
                  and not k.startswith(BRANCH_MAY_CHANGE + tuple(length_fields)))
  if differ:
    raise UserError(f"config field '{FIELD}' = {init_from!r}: a branch must share its parent's "
                    f"model, data, seed and optimizer; these fields differ: {', '.join(differ)}")
  return record


def check_schedule(parent: Parent, learning_rates: np.ndarray, init_from: str) -> None:
  """The branch's rate equals the parent's at every logged step before the branch point."""
  records = tracking.read_metrics(os.path.join(parent.run_dir, "metrics.jsonl"), kind="train")
  for r in records:
    step = int(r["step"])
    if step < parent.step and not np.isclose(r["lr"], learning_rates[step], rtol=1e-6, atol=0):
      raise UserError(f"config field '{FIELD}' = {init_from!r}: the learning rate at step {step} "
                      f"is {learning_rates[step]:.6g} here but {r['lr']:.6g} in the parent; a "
                      "branch must follow its parent's schedule up to the branch step")


def history(parent: Parent) -> list[tuple[str, dict]]:
  """The parent's metric lines before the branch step (evaluations at it included)."""
  path = os.path.join(parent.run_dir, "metrics.jsonl")
  lines = []
  for kind in ("train", "eval"):
    for r in tracking.read_metrics(path, kind=kind):
      if r["step"] < parent.step or (kind == "eval" and r["step"] == parent.step):
        lines.append((kind, r))
  return sorted(lines, key=lambda line: (line[1]["step"], line[0] == "eval"))


def verify(init_from: str, workdir: str, config_dict: dict, learning_rates: np.ndarray,
           length_fields=()) -> None:
  """All checks of a branch that has not started yet (research.train.run calls it before any
  write)."""
  if not init_from or checkpoint_steps(os.path.join(workdir, "checkpoints")):
    return  # not a branch, or one resuming from its own checkpoints
  parent = parse(init_from, workdir)
  check(parent, config_dict, init_from, length_fields)
  check_schedule(parent, learning_rates, init_from)


def branch_step(steps: int, cooldown_fraction: float) -> int:
  """Where a WSD run of `steps` steps leaves its stable phase (research.train.optim.schedule)."""
  return steps - max(1, round(cooldown_fraction * steps))


def family(base, steps: list[int], set_steps) -> tuple:
  """(parent, branches): one constant-rate run of `base` up to the last branch step, keeping its
  checkpoints at every branch step, and one WSD branch of it per entry of `steps` (a run of that
  many steps whose cooldown starts at its branch step). `base` is a locked run config with the
  wsd schedule; `set_steps(cfg, n)` makes a config (unlocked) train n steps, as its model
  family's recipe counts them. The branches name the parent by run id, so they must live beside
  it (a sweep)."""
  from research import config as config_lib
  points = {n: branch_step(n, base.train.cooldown_fraction) for n in steps}
  parent = config_lib.from_dict(config_lib.to_dict(base))
  with parent.unlocked():
    parent.train.schedule = "constant"
    set_steps(parent, max(points.values()))
    parent.loop.keep_steps = tuple(sorted(set(points.values())))
  parent_id = config_lib.run_id(parent)
  branches = []
  for n, at in points.items():
    run = config_lib.from_dict(config_lib.to_dict(base))
    with run.unlocked():
      run.train.schedule = "wsd"
      set_steps(run, n)
      run.loop.init_from = f"{parent_id}@{at}"
    branches.append(run)
  return parent, branches
