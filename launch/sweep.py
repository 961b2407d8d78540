"""python -m launch sweep --config FILE:PRESET --workdir DIR [options] [--config.a.b=VALUE ...]

Plan -> store -> backend -> analyze. The study's `plan` expands the sweep preset into per-run
configs (launch/plan.py, the sweep core); the plan is printed (id, N, D, C, estimated time) and
written to DIR/sweep.json; every run that has not finished is trained by the backend
(launch/backends/: finished runs are skipped, interrupted ones resume from their last
checkpoint, failed ones are retried), under one progress bar; then the study's `analyze` writes
runs.csv, fits and figures into DIR. Exit code 0 when every run finished, 1 when some failed (the
others still ran), 2 for bad input (nothing is written).
"""

import os

from launch import backends
from launch import plan as plan_lib
from launch import run as run_lib
from research import store
from research.errors import UserError


def _parser():
  parser = run_lib.make_parser(prog="python -m launch sweep",
                               description="Train a study's sweep preset, then analyse it; resumable.")
  parser.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
  parser.add_argument("--backend", default="local",
                      help=f"where runs train: {', '.join(backends.BACKENDS)}")
  parser.add_argument("--workers", type=int, default=None,
                      help="runs trained at once (default: cores / threads per worker)")
  parser.add_argument("--threads-per-worker", type=int, default=None,
                      help="threads (cores) per run, fixed by the plan (default 1)")
  parser.add_argument("--extend", action="store_true",
                      help="add this plan's new runs to a sweep folder of another plan")
  for backend in backends.all_backends():
    backend.add_arguments(parser)
  return parser


def _layout(args, stored: dict | None) -> tuple[int, int]:
  cpus = len(os.sched_getaffinity(0))
  threads = args.threads_per_worker
  if threads is None:
    threads = stored.get("threads_per_run", 1) if stored else 1
  if threads < 1 or threads > cpus:
    raise UserError(f"--threads-per-worker {threads}: must be between 1 and the {cpus} cores "
                    "this process may use")
  workers = max(1, cpus // threads) if args.workers is None else args.workers
  if workers < 1:
    raise UserError(f"--workers {workers}: must be at least 1")
  return workers, threads


def main(argv) -> int:
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  overrides = run_lib.split_overrides(parser, rest)
  store.check_workdir(args.workdir)
  stored = store.read_json(os.path.join(args.workdir, store.SWEEP))
  backend = backends.get(args.backend)
  workers, threads = _layout(args, stored)
  plan = plan_lib.make_plan(args.config, overrides, threads, args.workdir)
  record = store.prepare_sweep(args.workdir, plan, extend=args.extend)
  states = store.states(args.workdir, record) if os.path.isdir(args.workdir) else {}
  rate, overhead, basis = plan_lib.rate_estimate(args.workdir, record, threads)
  print(plan_lib.format_plan(record, states, rate, overhead, basis, workers))
  if args.dry_run:
    print("dry run: nothing trained, nothing written")
    return 0
  options = backend.check(args, record, states, threads)
  store.write_sweep(args.workdir, record)
  return backend.launch(args, record, options, workers, threads)
