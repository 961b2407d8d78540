"""The sweep core: a study's plan as a sweep record, its cost and time estimates, one progress bar,
and the study's analysis over the finished runs.

`make_plan` expands a sweep preset (the study's `plan`) into the record that sweep.json holds,
after every check that needs no data (each run config validated once, here); `format_plan`
prints it with estimated times; `Progress` is the bar every backend drives; `analyze` runs the
study's analysis. The backends (launch/backends/) train the runs; `launch sweep` glues the two.
"""

import inspect
import os
import sys
import time

from research import config as config_lib
from research import store
from research import study as study_lib
from research.errors import UserError

MFU_PRIOR = 0.25         # guessed share of the measured matmul peak, before any run finished here
OVERHEAD_S = 6.0         # guessed start-up and compile seconds per run, likewise


def make_plan(spec: str, overrides: list[str], threads: int, workdir: str) -> dict:
  """The sweep record for sweep.json, after every check that can be made before anything is
  written."""
  import jax

  from research.train.recipe import LoopSpec
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
    loop_spec = LoopSpec.from_config(run_cfg)
    if "batch_size" in run_cfg.get("train", {}):  # else the run checks it, before any write
      loop_spec.check_devices(run_cfg.train.batch_size, jax.device_count())
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
              plans=[dict(spec=spec, overrides=list(overrides))])


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


def analyze(workdir: str, module=None, options: dict | None = None,
            study: str | None = None) -> dict:
  """The study's analysis over the finished runs, with a warning naming the missing ones.
  `options` go to the study's analyze as keywords (e.g. flops), which it must accept; `study`
  replaces the module file sweep.json names (an absolute path in the checkout that planned it)."""
  record = store.read_sweep(workdir)
  if module is None:
    path = study or record["study"]
    if study is None and not os.path.isfile(path):
      raise UserError(f"{workdir}: its study {path!r} does not exist (planned in another "
                      "checkout?); name the module with --study, e.g. --study "
                      "experiments/chinchilla.py")
    module = config_lib.load_module(path)
    study_lib.check(module, path, sweep=True)
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
