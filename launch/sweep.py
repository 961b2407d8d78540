"""python -m launch sweep --config FILE:PRESET --workdir DIR [options] [--config.a.b=VALUE ...]

Plan -> store -> backend -> analyze. The study's `plan` expands the sweep preset into per-run
configs; the plan is printed (id, N, D, C, estimated time) and written to DIR/sweep.json; every
run that has not finished is trained by the backend (finished runs are skipped, interrupted ones
resume from their last checkpoint, failed ones are retried), under one progress bar; then the
study's `analyze` writes runs.csv, fits and figures into DIR. Exit code 0 when every run
finished, 1 when some failed (the others still ran), 2 for bad input (nothing is written).
"""

import inspect
import os
import sys
import time

from launch import run as run_lib
from research import config as config_lib
from research import store
from research import study as study_lib
from research.errors import UserError

BACKENDS = ("local", "slurm")
MFU_PRIOR = 0.25         # guessed share of the measured matmul peak, before any run finished here
OVERHEAD_S = 6.0         # guessed start-up and compile seconds per run, likewise


def _parser():
  parser = run_lib.make_parser(prog="python -m launch sweep",
                               description="Train a study's sweep preset, then analyse it; resumable.")
  parser.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
  parser.add_argument("--backend", default="local", help=f"where runs train: {', '.join(BACKENDS)}")
  parser.add_argument("--workers", type=int, default=None,
                      help="runs trained at once (default: cores / threads per worker)")
  parser.add_argument("--threads-per-worker", type=int, default=None,
                      help="threads (cores) per run, fixed by the plan (default 1)")
  parser.add_argument("--extend", action="store_true",
                      help="add this plan's new runs to a sweep folder of another plan")
  slurm = parser.add_argument_group("--backend slurm (see docs/slurm.md)")
  slurm.add_argument("--partition", help="Slurm partition")
  slurm.add_argument("--time", default="1:00:00", help="time limit per array task, [D-]HH:MM:SS")
  slurm.add_argument("--gpus-per-run", type=int, default=0)
  slurm.add_argument("--cpus-per-run", type=int, default=None,
                     help="CPUs per array task (default: --threads-per-worker)")
  slurm.add_argument("--mem", help="memory per node, e.g. 16G")
  slurm.add_argument("--account")
  slurm.add_argument("--qos")
  slurm.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                     help="any other sbatch option, e.g. constraint=a100 (repeatable)")
  slurm.add_argument("--nodes-per-run", type=int, default=1,
                     help="nodes (one process each) that train one run together (multi-host)")
  slurm.add_argument("--runs-per-task", type=int, default=1,
                     help="runs trained one after another by each array task (pack small runs)")
  slurm.add_argument("--wait", action="store_true",
                     help="follow the jobs with a progress bar until the analysis has run")
  return parser


def _layout(args, stored: dict | None) -> tuple[int, int]:
  cpus = len(os.sched_getaffinity(0))
  if args.backend not in BACKENDS:
    raise UserError(f"--backend {args.backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
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


def make_plan(spec: str, overrides: list[str], threads: int, workdir: str) -> tuple[dict, object]:
  """(the sweep record for sweep.json, the study module): every check before anything is written."""
  import jax

  from research.train import loop
  cfg, module = config_lib.load(spec, overrides)
  if not study_lib.is_sweep(cfg):
    raise UserError(f"{spec} is one run, not a sweep preset (a sweep config has a `sweep` group); "
                    f"train it with python -m launch run")
  module.validate(cfg)
  configs = module.plan(cfg)
  if not configs:
    raise UserError(f"{spec}: the plan is empty")
  runs, seen = [], {}
  for i, run_cfg in enumerate(configs):
    module.validate(run_cfg)
    loop.validate(run_cfg, run_cfg.train.batch_size, jax.device_count())
    run_id = config_lib.run_id(run_cfg)
    if run_id in seen:
      raise UserError(f"{spec}: the plan has duplicate runs: #{seen[run_id]} and #{i} have the "
                      f"same config (run id {run_id}); every run of a plan must differ")
    seen[run_id] = i
    size = module.size(run_cfg)
    runs.append(dict(run=run_id, config=config_lib.to_dict(run_cfg), **size))
  varying = store.mark_varying(runs)
  path = os.path.abspath(spec.partition(":")[0])
  return dict(spec=spec, study=path, preset=spec.partition(":")[2], overrides=list(overrides),
              name=os.path.basename(os.path.abspath(workdir)), threads_per_run=threads,
              varying=varying, runs=runs, created=time.time(),
              plans=[dict(spec=spec, overrides=list(overrides))]), module


def rate_estimate(workdir: str, record: dict, threads: int) -> tuple[float, float, str]:
  """(FLOP/s per run, overhead s per run, basis) for time estimates."""
  finished = [store.summary(store.run_dir(workdir, r["run"])) for r in record["runs"]]
  finished = [s for s in finished if s and s.get("wall_s") and not s.get("init_from")]
  if finished:
    rates = sorted(s["flops"] / max(s["wall_s"] - s.get("compile_s", 0.0), 1e-3) for s in finished)
    compile_s = sorted(s.get("compile_s", OVERHEAD_S) for s in finished)
    return (rates[len(rates) // 2], compile_s[len(compile_s) // 2],
            f"measured on {len(finished)} finished run(s)")
  from research import accounting
  cpus = len(os.sched_getaffinity(0))
  peak = accounting.measured_matmul_peak(n=512, repeats=3) / cpus * threads
  return (peak * MFU_PRIOR, OVERHEAD_S,
          f"a guess: {MFU_PRIOR:.0%} of a matmul peak measured now, +{OVERHEAD_S:.0f} s a run")


def hms(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cost(run: dict) -> float:
  """FLOPs a planned run trains itself: its C, less what a branch's parent trained before the
  branch step (`C_start` in the study's size)."""
  return run["C"] - run.get("C_start", 0.0)


def trained(workdir: str, run: dict, state: str) -> float:
  """FLOPs of `cost(run)` done so far: all of it when finished, else what its log says."""
  if state == "finished":
    return cost(run)
  done = store.progress_flops(store.run_dir(workdir, run["run"])) - run.get("C_start", 0.0)
  return min(max(done, 0.0), cost(run))


def format_plan(record: dict, states: dict, rate: float, overhead: float, basis: str,
                workers: int) -> str:
  """The plan table, one line per run, and a total with the estimated wall time left."""
  varying = record.get("varying", [])
  short = [v.split(".")[-1] for v in varying]
  head = (f"{'run':<12} {'N':>10} {'N_nonemb':>10} {'D':>10} {'C':>9} {'est.':>8}  "
          + " ".join(f"{s:>10}" for s in short) + "  state")
  lines, left = [head], 0.0
  states = {r["run"]: states.get(r["run"], "pending") for r in record["runs"]}
  for r in record["runs"]:
    est = cost(r) / rate + overhead
    state = states[r["run"]]
    if state != "finished":
      left += est
    fields = " ".join(f"{str(r['fields'].get(v)):>10}" for v in varying)
    lines.append(f"{r['run']:<12} {r['N']:>10,} {r['N_nonemb']:>10,} {r['D']:>10.3g} "
                 f"{r['C']:>9.2e} {hms(est):>8}  {fields}  {state}")
  total_c = sum(cost(r) for r in record["runs"])
  wall = left / max(1, min(workers, sum(s != "finished" for s in states.values()) or 1))
  lines.append(f"{len(record['runs'])} runs, {total_c:.3e} FLOPs to train in all "
               f"('{record['runs'][0]['flop_convention']}'); left to train: "
               f"{sum(s != 'finished' for s in states.values())} runs, about {hms(left)} of "
               f"run time, {hms(wall)} on {workers} worker(s) (estimates: {basis})")
  return "\n".join(lines)


class Progress:
  """One bar for the sweep: FLOPs done / total with ETA, runs done / total in the postfix."""

  def __init__(self, workdir: str, record: dict, todo: list[str]):
    from tqdm import tqdm
    self.workdir = workdir
    self.runs = {r["run"]: r for r in record["runs"]}
    self.C = {r["run"]: cost(r) for r in record["runs"]}
    self.todo, self.running, self.done, self.failed = set(todo), set(), set(), []
    finished = len(record["runs"]) - len(todo)
    self.base = sum(c for run, c in self.C.items() if run not in self.todo)
    self.total_runs, self.finished = len(record["runs"]), finished
    self.bar = tqdm(total=sum(self.C.values()), initial=self._flops(), unit="FLOP",
                    unit_scale=True, dynamic_ncols=True, file=sys.stderr, mininterval=1.0,
                    desc="sweep")
    self._postfix()

  def _flops(self) -> float:
    flops = self.base + sum(self.C[r] for r in self.done)
    flops += sum(trained(self.workdir, self.runs[r], "running") for r in self.todo - self.done)
    return flops

  def _postfix(self) -> None:
    self.bar.set_postfix_str(f"runs {self.finished}/{self.total_runs} done, {len(self.running)} "
                             f"running, {len(self.failed)} failed", refresh=False)

  def start(self, task) -> None:
    self.running.add(task.run_id)
    self._postfix()

  def end(self, result) -> None:
    self.running.discard(result.run_id)
    if result.status == "finished":
      self.done.add(result.run_id)
      self.finished += 1
    elif result.status == "failed":
      self.failed.append(result)
      self.bar.write(f"run {result.run_id} failed: {result.reason}", file=sys.stderr)
    self._postfix()
    self.tick()

  def tick(self) -> None:
    self.bar.n = self._flops()
    self.bar.refresh()

  def close(self) -> None:
    self.bar.close()


def analyze(workdir: str, module=None, options: dict | None = None) -> dict:
  """The study's analysis over the finished runs, with a warning naming the missing ones.
  `options` go to the study's analyze as keywords (e.g. flops), which it must accept."""
  record = store.read_sweep(workdir)
  if module is None:
    module = config_lib.load_module(record["study"])
    study_lib.check(module, record["study"], sweep=True)
  states = store.states(workdir, record)
  missing = [run for run, s in states.items() if s != "finished"]
  if missing:
    print(f"warning: {len(missing)} of {len(states)} runs have not finished and are left out of "
          f"the analysis: {', '.join(missing)}", file=sys.stderr)
  options = options or {}
  accepted = inspect.signature(module.analyze).parameters
  for name in options:
    if name not in accepted:
      raise UserError(f"--{name}: the analysis of {record['study']} takes no such option")
  start = time.time()
  written = module.analyze(workdir, **options)
  print(f"analysis ({time.time() - start:.1f} s) wrote: {', '.join(sorted(written))}")
  return written


def main(argv) -> int:
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  overrides = run_lib.split_overrides(parser, rest)
  store.check_workdir(args.workdir)
  stored = store.read_json(os.path.join(args.workdir, store.SWEEP))
  workers, threads = _layout(args, stored)
  plan, module = make_plan(args.config, overrides, threads, args.workdir)
  record, new = store.prepare_sweep(args.workdir, plan, extend=args.extend)
  states = store.states(args.workdir, record) if os.path.isdir(args.workdir) else {}
  rate, overhead, basis = rate_estimate(args.workdir, record, threads)
  print(format_plan(record, states, rate, overhead, basis, workers))
  if args.dry_run:
    print("dry run: nothing trained, nothing written")
    return 0
  slurm_options = None
  if args.backend == "slurm":
    from launch import slurm
    slurm_options = slurm.options_from_args(args, record, threads)
  if slurm_options is None and any(s == "running" for s in states.values()):
    raise UserError(f"another process is training runs of {args.workdir} "
                    f"({', '.join(r for r, s in states.items() if s == 'running')}); wait for it "
                    f"or stop it first (python -m launch status --workdir {args.workdir})")
  store.write_sweep(args.workdir, record)
  if slurm_options is not None:
    return slurm.launch(args, record, slurm_options, threads)
  states = store.states(args.workdir, record)
  todo = [r for r in record["runs"] if states[r["run"]] != "finished"]
  counts = {s: sum(v == s for v in states.values()) for s in store.STATES}
  print(f"sweep {args.workdir}: {counts['finished']} finished, {len(todo)} to train "
        f"({counts['interrupted']} to resume, {counts['failed']} to retry, {len(new)} new); "
        f"{workers} worker(s) x {threads} thread(s)")
  failed = _train(args, record, todo, workers, threads) if todo else []
  if failed is None:
    return 130
  analyze(args.workdir, module)
  if failed:
    print(f"{len(failed)} run(s) failed; run the same command again to retry them:",
          file=sys.stderr)
    for result in failed:
      print(f"  {result.run_id}: {result.reason}", file=sys.stderr)
    return 1
  return 0


def _train(args, record: dict, todo: list[dict], workers: int, threads: int):
  """Failed results, or None when a signal stopped the sweep (running runs checkpointed)."""
  from launch import local, worker
  from research.train import loop
  backend = local.LocalBackend(workers, threads, worker.cache_dir(args.workdir))
  tasks = worker.tasks_for(args.workdir, record, todo)
  progress = Progress(args.workdir, record, [t.run_id for t in tasks])
  start = time.time()
  with loop.StopSignal() as stop:  # stop starting runs; running ones checkpoint and stop
    try:
      backend.run(tasks, progress.start, progress.end, progress.tick,
                  lambda: stop.received is not None)
    finally:
      progress.close()
  summaries = [store.summary(store.run_dir(args.workdir, r)) for r in progress.done]
  compile_s = sum(s.get("compile_s", 0.0) for s in summaries)
  busy_s = sum(s["wall_s"] for s in summaries)
  print(f"trained {len(progress.done)} run(s) in {hms(time.time() - start)} of wall time; "
        f"the runs took {busy_s:.1f} s in all, {compile_s:.1f} s of it compiling")
  if stop.received:
    print(f"{stop.received}: stopped; running runs saved checkpoints. Run the same command again "
          "to resume.", file=sys.stderr)
    return None
  return progress.failed
