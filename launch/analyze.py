"""python -m launch analyze --workdir DIR: re-run a sweep's analysis over its finished runs."""

from launch import options
from launch import plan as plan_lib
from research import store


def main(argv) -> int:
  parser = options.Parser(prog="python -m launch analyze", description=__doc__)
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  parser.add_argument("--flops", help="compute budgets (FLOPs, comma-separated) for the "
                      "compute-optimal allocation, for studies that give one (chinchilla)")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  chosen = {}
  if args.flops:
    from research.scaling import report
    chosen["flops"] = tuple(report.parse_flops(args.flops, "--flops"))
  plan_lib.analyze(args.workdir, options=chosen)
  return 0
