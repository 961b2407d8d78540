"""python -m launch analyze --workdir DIR: re-run a sweep's analysis over its finished runs."""

import argparse

from launch import sweep as sweep_lib
from research import store


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch analyze", description=__doc__)
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  sweep_lib.analyze(args.workdir)
  return 0
