"""python -m launch run --config FILE:PRESET [--config.a.b=VALUE ...] --workdir DIR

Trains one config into one folder (research.train.run.run, which the sweep's workers call too).
Exit codes: 0 finished (or already finished), 1 diverged, 2 bad input, 3 the disk refused,
128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C) when a signal stopped the run after
saving its checkpoint: run the same command again to resume.
"""

import os
import signal
import sys

from launch import options
from research import config as config_lib
from research import study as study_lib
from research.errors import EXIT_CODES, UserError


def make_parser(prog="python -m launch run", description="Train one config; resumable."):
  parser = options.Parser(
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


def main(argv) -> int:
  parser = make_parser()
  args, rest = parser.parse_known_args(argv)
  cfg, study = config_lib.load(args.config, split_overrides(parser, rest))
  if study_lib.is_sweep(cfg):
    raise UserError(f"{args.config} is a sweep preset; train it with python -m launch sweep "
                    f"--config {args.config} --workdir DIR")
  from research.train import loop
  from research.train.run import run
  try:
    summary = run(cfg, study, args.workdir)
  except loop.NonFiniteLoss as e:
    print(f"error: training diverged: {e}. Stopped; {_kept(args.workdir)}", file=sys.stderr)
    return EXIT_CODES["failed"]
  status = summary.get("status", "")
  if status.startswith("interrupted by "):  # the checkpoint is saved; exit as the signal would
    return 128 + signal.Signals[status.rsplit(" ", 1)[-1]].value
  return 0


def _kept(workdir: str) -> str:
  """What a diverged run leaves to resume from: its newest checkpoint, if it wrote any."""
  from research.train import branch
  steps = branch.checkpoint_steps(os.path.join(workdir, "checkpoints"))
  if steps:
    return f"the last good checkpoint (step {steps[-1]}) is kept in {workdir}/checkpoints."
  return "no checkpoint had been written yet: there is nothing to resume from."
