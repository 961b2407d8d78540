"""The Slurm backend: a sweep's runs as a job array through submitit, then an analysis job.

Each array task trains `--runs-per-task` runs one after another (`launch.worker.execute`, the same
function the local pool calls), pinned to the cores Slurm gave it, with the sweep's persistent
compilation cache. The analysis job depends on the array (`afterany`) and calls the study's
`analyze`. Jobs are recorded in DIR/slurm/jobs.json, so `launch status` can read their queue
state and a second launch submits only runs that have neither finished nor are queued.

Preemption and time limits: Slurm signals a job (SIGUSR2, `--signal` set by submitit 90 s before
the time limit; SIGTERM on `scontrol requeue` or preemption). The running run saves an Orbax
checkpoint and stops. On SIGTERM Slurm requeues the job itself; on SIGUSR2 the task just ends, and
the analysis job, which starts when the array has ended, submits the interrupted runs again (a new
array, and the analysis after it). Either way the new task skips finished runs and resumes the
interrupted one from its checkpoint.
"""

import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from launch import options
from launch import plan as plan_lib
from launch import worker as worker_lib
from research import store
from research.errors import UserError

LABEL = "Slurm"
JOBS = "jobs.json"
QUEUED = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT")
SIGNAL_DELAY_S = 90


@dataclasses.dataclass(frozen=True)
class Options:
  partition: str | None = None
  time_min: int = 60
  gpus_per_run: int = 0
  cpus_per_run: int | None = None
  mem: str | None = None
  account: str | None = None
  qos: str | None = None
  nodes: int = 1
  extra: tuple = ()              # (KEY, VALUE) pairs for sbatch
  runs_per_task: int = 1


def parse_time(text: str) -> int:
  """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes."""
  match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
  if not match:
    raise UserError(f"--time {text!r}: give minutes or Slurm's [D-]HH:MM:SS")
  days, a, b, c = (int(g) if g else None for g in match.groups())
  if days is not None:
    hours, minutes, seconds = a, b or 0, c or 0
  elif c is not None:
    hours, minutes, seconds = a, b, c
  elif b is not None:
    hours, minutes, seconds = 0, a, b
  else:
    hours, minutes, seconds = 0, a, 0
  total = (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
  if total < 1:
    raise UserError(f"--time {text!r}: must be at least one minute")
  return total


def parse_extra(items) -> tuple:
  pairs = []
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise UserError(f"--slurm-extra {item!r}: give KEY=VALUE, e.g. constraint=a100")
    pairs.append((key.strip().lstrip("-").replace("-", "_"), value))
  return tuple(pairs)


def check_available() -> None:
  if shutil.which("sbatch") is None:
    raise UserError("--backend slurm needs Slurm's sbatch on PATH, and it is not there; run on a "
                    "cluster's login node, or use --backend local")
  if importlib.util.find_spec("submitit") is None:
    raise UserError("--backend slurm needs the submitit package: pip install submitit")


def _executor(folder: str, options: Options, threads: int, name: str, **more):
  import submitit
  executor = submitit.SlurmExecutor(folder=folder)
  params = dict(job_name=name, time=options.time_min, nodes=options.nodes, ntasks_per_node=1,
                cpus_per_task=options.cpus_per_run or threads, signal_delay_s=SIGNAL_DELAY_S,
                additional_parameters=dict(options.extra), **more)
  for key in ("partition", "mem", "account", "qos"):
    if getattr(options, key):
      params[key] = getattr(options, key)
  if options.gpus_per_run:
    params["gpus_per_node"] = options.gpus_per_run
  executor.update_parameters(**params)
  return executor


def test_submission(options: Options, threads: int) -> None:
  """`sbatch --test-only` with the sweep's parameters: Slurm's refusal as one line, nothing
  submitted."""
  args = ["sbatch", "--test-only", f"--time={options.time_min}", f"--nodes={options.nodes}",
          f"--cpus-per-task={options.cpus_per_run or threads}"]
  for key in ("partition", "mem", "account", "qos"):
    if getattr(options, key):
      args.append(f"--{key}={getattr(options, key)}")
  if options.gpus_per_run:
    args.append(f"--gpus-per-node={options.gpus_per_run}")
  args += [f"--{k.replace('_', '-')}={v}" for k, v in options.extra]
  done = subprocess.run(args + ["--wrap", "true"], capture_output=True, text=True)
  if done.returncode != 0:
    lines = [l.strip() for l in (done.stderr or done.stdout).splitlines() if l.strip()]
    raise UserError(f"Slurm refused the job: {lines[-1] if lines else done.returncode}")


class SlurmRuns:
  """One array task: train its runs in order; checkpointable, so submitit can requeue it."""

  def __init__(self, tasks: list, threads: int, cache_dir: str):
    self.tasks, self.threads, self.cache_dir = list(tasks), threads, cache_dir
    self._stop = None

  def __call__(self) -> dict:
    # the plan's thread count, on the cores Slurm gave this task
    worker_lib.prepare_process(sorted(os.sched_getaffinity(0))[:self.threads], self.cache_dir)
    signal.signal(signal.SIGUSR2, self._usr2)      # time limit soon, or preemption
    signal.signal(signal.SIGTERM, self._term)      # scontrol requeue, scancel, preemption
    rank = int(os.environ.get("SLURM_PROCID", "0"))  # a run over several nodes: one per node
    outcome = {}
    for task in self.tasks:
      if self._stop:
        break
      if store.run_state(task.run_dir) == "finished":
        outcome[task.run_id] = "finished"
        continue
      outcome[task.run_id] = (worker_lib.execute(task).status if rank == 0
                              else worker_lib.follow(task))
      if outcome[task.run_id] == "interrupted":  # a signal reached the training loop
        self._stop = self._stop or "SIGTERM"
    # On SIGUSR2 the task ends here, and does not requeue itself as submitit's handler would
    # (`scontrol requeue` from inside the job raced with the job's own end: the requeued
    # incarnation could be recorded FAILED before it ran). The analysis job resubmits the runs.
    return outcome

  def _usr2(self, signum, frame) -> None:
    self._stop = "SIGUSR2"
    os.kill(os.getpid(), signal.SIGTERM)  # the training loop saves a checkpoint and stops

  def _term(self, signum, frame) -> None:
    self._stop = self._stop or "SIGTERM"

  def checkpoint(self, *args, **kwargs):
    """For submitit's own SIGUSR2 handler, should the signal come before `__call__` replaces it."""
    import submitit
    return submitit.helpers.DelayedSubmission(SlurmRuns(self.tasks, self.threads, self.cache_dir))


def read_jobs(workdir: str) -> dict:
  return store.read_json(os.path.join(workdir, "slurm", JOBS)) or {"runs": {}, "analysis": []}


def queue_states(workdir: str, fresh_as_pending: bool = True) -> dict[str, str]:
  """{run id: Slurm state of its newest job} for runs with a recorded job; a job submitted in
  the last 5 minutes that sacct does not list yet counts as PENDING (`fresh_as_pending`)."""
  import submitit
  jobs = read_jobs(workdir)
  folder = os.path.join(workdir, "slurm")
  out = {}
  for run_id, entry in jobs["runs"].items():
    state = submitit.SlurmJob(folder, entry["job"]).state
    if fresh_as_pending and state == "UNKNOWN" and time.time() - entry["time"] < 300:
      state = "PENDING"  # just submitted: sacct may not list it yet
    out[run_id] = state
  return out


def queue(workdir: str) -> dict:
  """{run id: (Slurm state of its newest job, job id)} for a sweep submitted to Slurm, else {}."""
  if not os.path.exists(os.path.join(workdir, "slurm", JOBS)):
    return {}
  if importlib.util.find_spec("submitit") is None:
    print("Slurm: the queue is not shown (this sweep was submitted to Slurm; pip install "
          "submitit to read its jobs' states)")
    return {}
  jobs = read_jobs(workdir)["runs"]
  return {run: (state, jobs[run]["job"]) for run, state in queue_states(workdir).items()}


def submit(workdir: str, record: dict, tasks: list, options: Options, threads: int,
           after: tuple = ()) -> dict:
  """Submits the tasks as an array (runs_per_task runs each) and the analysis job after it (and
  after the jobs `after`). Branches (loop.init_from) go in one more array per generation, each
  after the one before. Each run's entry in jobs.json records its job and its newest checkpoint
  step at submission (`Analysis` resubmits an interrupted run only if that step has moved).

  Returns {"array": id, "analysis": id, "runs": {run id: job id}}; records them in jobs.json."""
  from research.fileio import atomic_write_json
  folder = os.path.join(workdir, "slurm")
  cache = worker_lib.cache_dir(workdir)
  by_id = {t.run_id: t for t in tasks}
  waves = {}  # branches go in a later array than their parents, which it waits for
  for task in tasks:
    waves.setdefault(worker_lib.depth(task, by_id), []).append(task)
  jobs, chunks, array_id = [], [], None
  for level in sorted(waves):
    wave = waves[level]
    wave_chunks = [wave[i:i + options.runs_per_task]
                   for i in range(0, len(wave), options.runs_per_task)]
    more = {"dependency": f"afterany:{array_id}"} if array_id else {}
    executor = _executor(folder, options, threads, f"sweep-{record['name']}", **more)
    with executor.batch():
      wave_jobs = [executor.submit(SlurmRuns(chunk, threads, cache)) for chunk in wave_chunks]
    array_id = wave_jobs[0].job_id.split("_")[0]
    jobs += wave_jobs
    chunks += wave_chunks
  entries = read_jobs(workdir)
  now = time.time()
  for job, chunk in zip(jobs, chunks):
    for task in chunk:
      entries["runs"][task.run_id] = {"job": job.job_id, "time": now,
                                      "step": _newest_step(task.run_dir)}
  atomic_write_json(os.path.join(folder, JOBS), entries)
  analysis = submit_analysis(workdir, record["name"], options, threads,
                             after=[array_id, *after])
  return {"array": array_id, "analysis": analysis,
          "runs": {t.run_id: j.job_id for j, c in zip(jobs, chunks) for t in c}}


def _newest_step(run_dir: str) -> int:
  steps = store.saved_steps(os.path.join(run_dir, "checkpoints"))
  return steps[-1] if steps else -1


def submit_analysis(workdir: str, name: str, options: Options, threads: int,
                    after: list[str]) -> str:
  """The analysis job, after the jobs `after` have ended (`afterany`); recorded in jobs.json."""
  from research.fileio import atomic_write_json
  folder = os.path.join(workdir, "slurm")
  one_cpu = dataclasses.replace(options, gpus_per_run=0, nodes=1, cpus_per_run=1)
  executor = _executor(folder, one_cpu, 1, f"analyze-{name}",
                       dependency="afterany:" + ":".join(after))
  job = executor.submit(Analysis(os.path.abspath(workdir), name, options, threads)).job_id
  entries = read_jobs(workdir)
  entries["analysis"].append({"job": job, "time": time.time()})
  atomic_write_json(os.path.join(folder, JOBS), entries)
  return job


@dataclasses.dataclass(frozen=True)
class Analysis:
  """The analysis job. Slurm starts it when every task of the array has ended once. A task
  requeued by Slurm (SIGTERM: preemption, `scontrol requeue`) ends once before it runs again:
  while runs are still queued, the job submits the analysis again after their jobs. The runs
  that a task left unfinished (SIGUSR2 near the time limit stops it after a checkpoint) are
  submitted again, in a new array with the analysis after it, if the task got anywhere
  (`unfinished_of_moving_jobs`: a task that cannot progress is not resubmitted for ever). The
  study's analysis then sees the finished sweep."""
  workdir: str
  name: str
  options: Options
  threads: int = 1

  def __call__(self):
    record = store.read_sweep(self.workdir)
    states = store.states(self.workdir, record)
    jobs = read_jobs(self.workdir)["runs"]
    queue = queue_states(self.workdir, fresh_as_pending=False)  # these jobs have all run
    queued = {run for run, state in queue.items()
              if state in QUEUED and states.get(run) != "finished"}
    waiting = sorted({jobs[run]["job"] for run in queued})
    resume = unfinished_of_moving_jobs(self.workdir, record, jobs, states, queued)
    if resume:
      tasks = worker_lib.tasks_for(self.workdir, record, resume)
      submitted = submit(self.workdir, record, tasks, self.options, self.threads, after=waiting)
      print(f"{len(resume)} unfinished run(s) submitted again, as array {submitted['array']}; "
            f"the analysis goes after it, as job {submitted['analysis']}")
      return {"resubmitted": submitted["array"], "deferred to": submitted["analysis"]}
    if waiting:
      job = submit_analysis(self.workdir, self.name, self.options, self.threads, after=waiting)
      print(f"runs are still queued in job(s) {', '.join(waiting)} (requeued): the analysis "
            f"goes after them, as job {job}")
      return {"deferred to": job}
    return plan_lib.analyze(self.workdir)


def unfinished_of_moving_jobs(workdir: str, record: dict, jobs: dict, states: dict,
                              queued: set) -> list[dict]:
  """The runs (entries of sweep.json) to submit again: those, interrupted or never started, of a
  job that has ended (not `queued`) and moved: one of its runs finished, or saved a newer
  checkpoint than it had when the job was submitted. A job that died before its first
  checkpoint, every time, is not resubmitted; `launch sweep` submits its runs when asked."""
  by_job = {}
  for r in record["runs"]:
    if r["run"] in jobs and r["run"] not in queued:
      by_job.setdefault(jobs[r["run"]]["job"], []).append(r)
  def moved(r):
    newest = _newest_step(store.run_dir(workdir, r["run"]))
    return states.get(r["run"]) == "finished" or newest > jobs[r["run"]].get("step", -1)
  return [r for runs in by_job.values() if any(moved(r) for r in runs)
          for r in runs if states.get(r["run"]) in ("interrupted", "pending")]


def add_arguments(parser) -> None:
  slurm = parser.add_argument_group("--backend slurm (see docs/slurm.md)")
  slurm.add_argument("--partition", help="Slurm partition")
  slurm.add_argument("--time", default="1:00:00", help="time limit per array task, [D-]HH:MM:SS")
  slurm.add_argument("--gpus-per-run", type=options.integer(least=0), default=0)
  slurm.add_argument("--cpus-per-run", type=options.integer(least=1), default=None,
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


def check(args, record: dict, states: dict, threads: int) -> Options:
  """Checked Slurm options from `launch sweep`'s arguments, before anything is written or
  submitted."""
  check_available()
  if args.runs_per_task < 1:
    raise UserError(f"--runs-per-task {args.runs_per_task}: must be at least 1")
  if args.gpus_per_run < 0:
    raise UserError(f"--gpus-per-run {args.gpus_per_run}: must be 0 or more")
  if args.nodes_per_run < 1:
    raise UserError(f"--nodes-per-run {args.nodes_per_run}: must be at least 1")
  options = Options(partition=args.partition, time_min=parse_time(args.time),
                          gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                          mem=args.mem, account=args.account, qos=args.qos,
                          extra=parse_extra(args.slurm_extra),
                          runs_per_task=args.runs_per_task, nodes=args.nodes_per_run)
  limit_s = options.time_min * 60
  if limit_s <= SIGNAL_DELAY_S + plan_lib.OVERHEAD_S:
    raise UserError(f"--time {args.time}: Slurm signals a job {SIGNAL_DELAY_S} s before "
                    "its time limit so that the run can checkpoint; give it more than "
                    f"{(SIGNAL_DELAY_S + plan_lib.OVERHEAD_S) / 60:.0f} minutes")
  if not options.gpus_per_run:  # on CPUs this machine's speed is a fair guess
    rate, overhead, basis = plan_lib.rate_estimate(args.workdir, record, threads)
    for r in record["runs"]:
      every = r["config"]["loop"]["checkpoint_every"]
      interval_s = r["C"] / rate * min(1.0, every / max(r.get("steps", every), 1)) + overhead
      if interval_s > limit_s - SIGNAL_DELAY_S:
        raise UserError(
            f"--time {args.time}: run {r['run']} needs about {interval_s:.0f} s to reach a "
            f"checkpoint (every {every} steps; {basis}), more than the {limit_s:.0f} s limit "
            f"allows before Slurm's signal; raise --time or lower loop.checkpoint_every")
  test_submission(options, threads)
  return options


def launch(args, record: dict, options: Options, workers: int, threads: int) -> int:
  """Submit what has neither finished nor is queued; with --wait, follow it to the end."""
  states = store.states(args.workdir, record)
  queue = queue_states(args.workdir)
  queued = {r for r, q in queue.items() if q in QUEUED and states[r] != "finished"}
  todo = [r for r in record["runs"] if states[r["run"]] != "finished" and r["run"] not in queued]
  print(f"sweep {args.workdir}: {sum(s == 'finished' for s in states.values())} finished, "
        f"{len(queued)} queued, {len(todo)} to submit")
  if todo:
    tasks = worker_lib.tasks_for(args.workdir, record, todo)
    jobs = submit(args.workdir, record, tasks, options, threads)
    print(f"submitted array {jobs['array']} ({len(tasks)} runs, {options.runs_per_task} per "
          f"task) and analysis job {jobs['analysis']} after it; logs in "
          f"{args.workdir}/runs/<id>/log.txt and {args.workdir}/slurm/")
  if not args.wait:
    print(f"follow it with: python -m launch status --workdir {args.workdir}")
    return 0
  return follow(args.workdir, record)


def follow(workdir: str, record: dict) -> int:
  """Poll the store and the queue until no run is queued and the analysis job has ended."""
  import submitit
  todo = [r["run"] for r in record["runs"]
          if store.run_state(store.run_dir(workdir, r["run"])) != "finished"]
  progress = plan_lib.Progress(workdir, record, todo)
  folder = os.path.join(workdir, "slurm")
  try:
    while True:
      time.sleep(2)
      analysis = read_jobs(workdir)["analysis"]  # an analysis job may defer itself (Analysis)
      for run in list(progress.todo - progress.done):
        if store.run_state(store.run_dir(workdir, run)) == "finished":
          progress.done.add(run)
          progress.finished += 1
      progress.tick()
      queue = queue_states(workdir)
      busy = [r for r, q in queue.items() if q in QUEUED]
      last = submitit.SlurmJob(folder, analysis[-1]["job"]).state if analysis else "COMPLETED"
      if not busy and last not in QUEUED + ("UNKNOWN",):
        break
  finally:
    progress.close()
  states = store.states(workdir, record)
  failed = [r for r, s in states.items() if s != "finished"]
  print(f"jobs done: {len(states) - len(failed)} runs finished; analysis job {last}")
  for run in failed:
    folder = store.run_dir(workdir, run)
    print(f"  not finished {run}: {store.last_log_line(folder)}", file=sys.stderr)
  return 1 if failed else 0
