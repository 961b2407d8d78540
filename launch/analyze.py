"""python -m launch analyze --workdir DIR: re-run a sweep's analysis over its finished runs."""

from launch import options
from launch import plan as plan_lib
from research import store


def main(argv) -> int:
  parser = options.Parser(prog="python -m launch analyze", description=__doc__)
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  parser.add_argument("--flops", help="compute budgets (FLOPs, comma-separated) for the "
                      "compute-optimal allocation, for studies that give one (chinchilla)")
  parser.add_argument("--study", help="the study module to analyse with (default: the one "
                      "sweep.json names, where the sweep was planned), e.g. for a sweep folder "
                      "planned in another checkout: --study experiments/kaplan.py")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  chosen = {}
  if args.flops:
    from research.scaling import report
    chosen["flops"] = tuple(report.parse_flops(args.flops, "--flops"))
  plan_lib.analyze(args.workdir, options=chosen, study=args.study)
  return 0
