"""python -m launch analyze --workdir DIR: re-run a sweep's analysis over its finished runs."""

import argparse

from launch import sweep as sweep_lib
from research import store
from research.errors import UserError


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch analyze", description=__doc__)
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  parser.add_argument("--flops", help="compute budgets (FLOPs, comma-separated) for the "
                      "compute-optimal allocation, for studies that give one (chinchilla)")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  options = {}
  if args.flops:
    try:
      options["flops"] = tuple(float(f) for f in args.flops.split(",") if f.strip())
    except ValueError:
      raise UserError(f"--flops {args.flops!r}: give FLOPs as numbers separated by commas") from None
    if not options["flops"] or min(options["flops"]) <= 0:
      raise UserError(f"--flops {args.flops!r}: give one or more positive budgets")
  sweep_lib.analyze(args.workdir, options=options)
  return 0
