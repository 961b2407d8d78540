"""One config trained into one folder: validate, claim the folder, train (or resume), then the
figure and, last, the summary.

`run(cfg, study, workdir)` is what `python -m launch run` and every sweep worker call. A run
folder belongs to one resolved config (research.store.claim); a finished run is reported, not
trained again; a killed one resumes from its newest checkpoint (research.train.loop).
"""

import os
import string
import sys

import numpy as np

from research import config as config_lib
from research import store, tracking
from research.fileio import atomic_write_bytes, atomic_write_json
from research.train.recipe import LoopSpec, Recipe


def prepare(cfg, study, *, validated: bool = False) -> tuple[Recipe, LoopSpec]:
  """The study's checks (unless the caller has `validated` this config: a sweep's plan does),
  the loop's spec and the recipe (which loads data): every bad input fails here, before any
  write."""
  if not validated:
    study.validate(cfg)
  spec = LoopSpec.from_config(cfg)
  return study.recipe(cfg), spec


def _filled(template: str, s: dict) -> str | None:
  """`template` formatted with the summary; None when a key it names is absent or None."""
  names = {field.split(".")[0].split("[")[0]
           for _, field, _, _ in string.Formatter().parse(template) if field}
  if any(s.get(name) is None for name in names):
    return None
  return template.format(**s)


def _number(value, fmt: str) -> str:
  return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def format_summary(s: dict) -> str:
  """The summary as text: the common lines, with the lines and metrics the study's report
  names."""
  report = s.get("report", {})
  unit = report.get("unit", "units")
  lines = [f"run {s['run_id']}: {s['status']} after {s['steps']} steps"]
  for label, template in report.get("header", ()):
    text = _filled(template, s)
    if text is not None:
      lines.append(f"  {label:<10} {text}")
  note = f"  ({s['data_note']})" if s.get("data_note") else ""
  lines.append(f"  {unit} D{' ' * max(1, 9 - len(unit))}{store.units(s):,.0f}{note}")
  lines.append(f"  FLOPs C    {s['flops']:.3e}  (convention '{s.get('flop_convention', '?')}')")
  if s.get("train_loss_last10") is not None:
    lines.append(f"  train loss {s['train_loss_last10']:.4f} (mean of the last 10 logged steps)")
  for key, label, unit_text in report.get("metrics", ()):
    if s.get(key) is not None:
      lines.append(f"  {label} {_number(s[key], '.4f')} {unit_text}".rstrip())
  lines.append(f"  wall time  {s['wall_s']:.1f} s on {s['devices']} device(s), "
               f"{s.get('compile_s', 0.0):.1f} s of it compiling")
  return "\n".join(lines)


def run(cfg, study, workdir: str, *, progress: bool | None = None,
        wandb_group: str | None = None, log=print, validated: bool = False,
        locked: bool = False) -> dict:
  """Train `cfg` into `workdir` (resuming it, or reporting it finished) and return its summary.

  Raises UserError for bad input (before the folder is touched), also when another process is
  training the folder (its lock, research.store.RunLock, unless the caller holds it: `locked`),
  and loop.NonFiniteLoss when training diverges (the last good checkpoint is kept). SIGTERM /
  SIGINT are caught from the first line to the last: a run stopped before its last step returns
  {"status": "interrupted by ..."} after saving a checkpoint; one stopped later finishes first.
  Leaves no open checkpoint manager, tracker or progress bar behind, so a worker can call it
  many times. `validated`: the study's checks already passed for this config (a sweep's plan ran
  them).
  """
  from research.train.clocks import StopSignal
  store.check_workdir(workdir)
  with StopSignal() as stop:
    summary = _run(cfg, study, workdir, stop, progress=progress, wandb_group=wandb_group,
                   log=log, validated=validated, locked=locked)
  if stop.received and summary.get("status") == "finished":
    log(f"  ({stop.received} arrived while the run was finishing; it finished first)")
  return summary


def copy_files(recipe, workdir: str) -> None:
  """The recipe's identity files (a tokenizer) into the run folder, once."""
  for name, source in recipe.files:
    dest = os.path.join(workdir, name)
    if not os.path.exists(dest):
      with open(source, "rb") as f:
        atomic_write_bytes(dest, f.read())


def _run(cfg, study, workdir, stop, *, progress, wandb_group, log, validated, locked) -> dict:
  import jax  # after the config checks, which should fail fast

  from research import parallel
  from research.scaling import plots
  from research.train import branch, loop
  run_id = config_lib.run_id(cfg)
  config_dict = config_lib.to_dict(cfg)
  parallel.maybe_initialize_distributed()
  recipe, spec = prepare(cfg, study, validated=validated)
  spec.check_devices(recipe.batch_size, jax.device_count())
  lrs = loop.learning_rates(recipe)
  branch.verify(spec.init_from, workdir, config_dict, lrs, recipe.length_fields)
  chief = jax.process_index() == 0  # in a multi-process run only process 0 writes run files
  lock = store.RunLock(workdir) if chief and not locked else None
  if lock is not None:
    lock.acquire_or_refuse()
  try:
    if chief:
      state = store.claim(workdir, config_dict, run_id)
      copy_files(recipe, workdir)
    else:
      state = "finished" if store.summary(workdir) is not None else "resume"
    if state == "finished":
      summary = store.summary(workdir)
      if chief:
        log(f"run {run_id} in {workdir} has already finished:")
        log(format_summary(summary))
      return summary
    print(f"run {run_id}: {state}, {recipe.num_steps} steps, workdir {workdir}", file=sys.stderr)
    summary = loop.train(recipe, spec, workdir, config_dict, run_id, lrs=lrs, progress=progress,
                         wandb_group=wandb_group, stop=stop)
    if summary["status"] != "finished" or not chief:
      if summary["status"] != "finished":
        print(f"run {run_id}: {summary['status']}; checkpoint saved, re-run to resume",
              file=sys.stderr)
      return summary
    records = tracking.read_log(os.path.join(workdir, store.METRICS))
    train, evals = records.get("train", []), records.get("eval", [])
    tail = train[-10:]
    summary["train_loss_last10"] = float(np.mean([r["loss"] for r in tail])) if tail else None
    paths = plots.save(plots.training_run(train, evals, summary),
                       os.path.join(workdir, "curves"))
    atomic_write_json(os.path.join(workdir, store.SUMMARY), summary)  # last: the run is finished
    log(format_summary(summary))
    log(f"  figures    {', '.join(paths)}")
    return summary
  finally:
    if lock is not None:
      lock.release()
