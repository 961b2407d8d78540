"""python -m launch run --config FILE:PRESET [--config.a.b=VALUE ...] --workdir DIR

Trains one config into one folder (research.train.run.run, which the sweep's workers call too).
"""

import argparse
import sys

from research import config as config_lib
from research import study as study_lib
from research.errors import UserError


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
    run(cfg, study, args.workdir)
  except loop.NonFiniteLoss as e:
    print(f"error: training diverged: {e}. Stopped; the last good checkpoint is kept in "
          f"{args.workdir}/checkpoints.", file=sys.stderr)
    return 1
  return 0
