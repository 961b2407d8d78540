"""python -m launch run --config FILE:PRESET [--config.a.b=VALUE ...] --workdir DIR

`run(cfg, study, workdir)` trains one config into one folder and returns its summary; the command
line and the sweep's workers both call it.
"""

import argparse
import os
import sys

from research import config as config_lib
from research import store
from research import study as study_lib
from research.errors import UserError
from research.fileio import atomic_write_json


def make_parser(prog="python -m launch run", description="Train one config; resumable."):
  parser = argparse.ArgumentParser(
      prog=prog, description=description,
      epilog="Override any config field with --config.FIELD=VALUE, e.g. --config.model.d_model=256")
  parser.add_argument("--config", required=True, help="FILE:PRESET, e.g. experiments/lm.py:smoke")
  parser.add_argument("--workdir", required=True, help="folder for this run's files")
  return parser


def split_overrides(parser, args_rest) -> list[str]:
  overrides = []
  for item in args_rest:
    if not item.startswith("--config."):
      parser.error(f"unrecognised argument {item!r}")
    overrides.append(item[len("--config."):])
  return overrides


def _line(value, fmt: str) -> str:
  return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def format_summary(s: dict) -> str:
  """The summary as text: the common lines, then the metrics the study's report names."""
  report = s.get("report", {})
  unit = report.get("unit", "tokens")
  lines = [f"run {s['run_id']}: {s['status']} after {s['steps']} steps"]
  if "params_total" in s:
    lines.append(f"  params     total {s['params_total']:,}  non-embedding "
                 f"{s.get('params_non_embedding', s['params_total']):,}"
                 f"  embedding {s.get('params_embedding', 0):,}")
  data = s.get("data") if isinstance(s.get("data"), dict) else {}
  note = ""
  if "unique_train_tokens" in data:
    unique = data["unique_train_tokens"]
    note = ("fresh samples every step: no repeated data" if unique is None else
            f"{s.get('epochs', float('nan')):.2f} epochs of the {unique:,} unique {unit}")
  lines.append(f"  {unit} D{' ' * max(1, 9 - len(unit))}{s['tokens']:,.0f}"
               + (f"  ({note})" if note else ""))
  lines.append(f"  FLOPs C    {s['flops']:.3e}  (convention '{s.get('flop_convention', '?')}')")
  if s.get("train_loss_last10") is not None:
    lines.append(f"  train loss {s['train_loss_last10']:.4f} (mean of the last 10 logged steps)")
  for key, label, unit_text in report.get("metrics", ()):
    if s.get(key) is not None:
      lines.append(f"  {label} {_line(s[key], '.4f')} {unit_text}".rstrip())
  lines.append(f"  wall time  {s['wall_s']:.1f} s on {s['devices']} device(s), "
               f"{s.get('compile_s', 0.0):.1f} s of it compiling")
  return "\n".join(lines)


def prepare(cfg, study, n_devices: int):
  """Validate and build the recipe (loads data): every bad input fails here, before any write."""
  from research.train import loop
  study.validate(cfg)
  loop.validate(cfg, cfg.train.batch_size, n_devices)
  return study.recipe(cfg)


def run(cfg, study, workdir: str, *, progress: bool | None = None,
        wandb_group: str | None = None, log=print) -> dict:
  """Train `cfg` into `workdir` (resuming it, or reporting it finished) and return its summary.

  Raises UserError for bad input (before the folder is touched) and loop.NonFiniteLoss when
  training diverges (the last good checkpoint is kept). A run stopped by SIGTERM / SIGINT returns
  {"status": "interrupted by ..."} after saving a checkpoint. Leaves no open checkpoint manager,
  tracker or progress bar behind, so a worker can call it many times.
  """
  store.check_workdir(workdir)
  import jax  # after the config checks, which should fail fast

  from research import parallel, tracking
  from research.scaling import plots
  from research.train import branch, loop
  run_id = config_lib.run_id(cfg)
  config_dict = config_lib.to_dict(cfg)
  parallel.maybe_initialize_distributed()
  recipe = prepare(cfg, study, jax.device_count())
  branch.verify(cfg.loop.get("init_from", ""), workdir, config_dict, loop.learning_rates(recipe))
  chief = jax.process_index() == 0  # in a multi-process run only process 0 writes run files
  if chief:
    state = store.claim(workdir, config_dict, run_id)
  else:
    state = "finished" if store.summary(workdir) is not None else "resume"
  if state == "finished":
    summary = store.summary(workdir)
    if chief:
      log(f"run {run_id} in {workdir} has already finished:")
      log(format_summary(summary))
    return summary
  print(f"run {run_id}: {state}, {recipe.num_steps} steps, workdir {workdir}", file=sys.stderr)
  summary = loop.train(recipe, cfg, workdir, config_dict, run_id, progress=progress,
                       wandb_group=wandb_group)
  if summary["status"] != "finished" or not chief:
    if summary["status"] != "finished":
      print(f"run {run_id}: {summary['status']}; checkpoint saved, re-run to resume",
            file=sys.stderr)
    return summary
  metrics = os.path.join(workdir, "metrics.jsonl")
  figure = plots.training_run(tracking.read_metrics(metrics, kind="train"),
                              tracking.read_metrics(metrics, kind="eval"), summary)
  paths = plots.save(figure, os.path.join(workdir, "curves"))
  atomic_write_json(os.path.join(workdir, store.SUMMARY), summary)  # last: the run is finished
  log(format_summary(summary))
  log(f"  figures    {', '.join(paths)}")
  return summary


def main(argv) -> int:
  parser = make_parser()
  args, rest = parser.parse_known_args(argv)
  cfg, study = config_lib.load(args.config, split_overrides(parser, rest))
  if study_lib.is_sweep(cfg):
    raise UserError(f"{args.config} is a sweep preset; train it with python -m launch sweep "
                    f"--config {args.config} --workdir DIR")
  from research.train import loop
  try:
    run(cfg, study, args.workdir)
  except loop.NonFiniteLoss as e:
    print(f"error: training diverged: {e}. Stopped; the last good checkpoint is kept in "
          f"{args.workdir}/checkpoints.", file=sys.stderr)
    return 1
  return 0
