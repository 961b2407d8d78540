"""The local backend: a pool of worker processes on this machine, each pinned to its own cores.

Each worker is a spawned Python process that imports JAX once and trains runs one after another
(`launch.worker.execute`). A worker is pinned (sched_setaffinity) to `threads` cores of its own
before JAX starts, so XLA sizes its thread pool to exactly that many threads: the number of
threads that trains a run is fixed by the sweep's plan, not by what happens to be free, and a
resumed run reproduces the uninterrupted one (XLA's CPU GEMMs sum in another order with another
thread count). Workers share the persistent compilation cache, so a shape compiled by one is not
compiled again by another or by a later launch.

A worker that dies (a crash, the OOM killer) marks its run failed and is replaced; a worker
whose parent dies gets SIGTERM (Linux's parent-death signal), saves a checkpoint and exits.
Ctrl-C or SIGTERM to the sweep starts no new run and asks the running ones to checkpoint and
stop. When the runs are done, the study's analysis runs here over what finished.
"""

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time

from launch import plan as plan_lib
from launch import worker as worker_lib
from research import store
from research.errors import UserError
from research.train.clocks import StopSignal

LABEL = "local"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
  except (OSError, AttributeError):  # not Linux: the worker notices the closed pipe instead
    pass


def _worker_main(conn, cores: list[int], cache_dir: str) -> None:
  _die_with_parent()
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # between runs; a run's loop handles its own
  worker_lib.prepare_process(cores, cache_dir)
  while True:
    try:
      task = conn.recv()
    except (EOFError, OSError):  # the parent is gone
      return
    if task is None:
      return
    result = worker_lib.execute(task)
    try:
      conn.send(result)
    except (BrokenPipeError, OSError):
      return
    if result.status == "interrupted":  # a signal asked this process to stop
      return


class LocalBackend:
  """`workers` processes of `threads` threads each; runs go to whichever worker is free."""

  name = "local"

  def __init__(self, workers: int, threads: int, cache_dir: str):
    self.workers, self.threads, self.cache_dir = workers, threads, cache_dir
    cpus = sorted(os.sched_getaffinity(0))
    self.core_sets = [[cpus[(k * threads + i) % len(cpus)] for i in range(threads)]
                      for k in range(workers)]
    self.context = multiprocessing.get_context("spawn")

  def _start(self, slot: int):
    parent, child = self.context.Pipe()
    process = self.context.Process(
        target=_worker_main, args=(child, self.core_sets[slot], self.cache_dir),
        name=f"sweep-worker-{slot}", daemon=True)
    process.start()
    child.close()
    return {"process": process, "conn": parent, "task": None}

  def run(self, tasks: list, on_start, on_done, tick, stop) -> None:
    """Train `tasks` (launch.worker.Task); calls on_start(task), on_done(result) as runs start
    and end, tick() about once a second. When stop() turns true, no new run starts and the
    running ones are asked (SIGTERM) to checkpoint and stop."""
    queue = list(tasks)
    waiting_for = {t.run_id for t in tasks}  # a branch starts when its parent has finished
    slots = [self._start(k) for k in range(min(self.workers, len(queue)))]
    stopping = False

    def finish(result) -> None:
      if result.status == "finished":
        waiting_for.discard(result.run_id)
      on_done(result)

    def next_task():
      for i, task in enumerate(queue):
        if task.after not in waiting_for:
          return queue.pop(i)
      return None

    def fail_orphans() -> None:
      """Branches whose parent failed, or cannot finish in this launch, fail with the reason."""
      busy = {s["task"].run_id for s in slots if s["task"] is not None}
      pending = {t.run_id for t in queue}
      for task in [t for t in queue if t.after in waiting_for and t.after not in busy | pending]:
        queue.remove(task)
        reason = f"its parent run {task.after} did not finish"
        store.write_status(task.run_dir, "failed", reason=reason)
        finish(worker_lib.Result(task.run_id, "failed", reason))
    try:
      while any(s["task"] is not None for s in slots) or (queue and not stopping):
        if stop() and not stopping:
          stopping = True
          for s in slots:
            if s["task"] is not None and s["process"].is_alive():
              os.kill(s["process"].pid, signal.SIGTERM)
        fail_orphans()
        for k, s in enumerate(slots):
          if s["task"] is None and queue and not stopping:
            task = next_task()
            if task is None:
              break
            if not s["process"].is_alive():
              slots[k] = s = self._start(k)
            s["task"] = task
            s["conn"].send(s["task"])
            on_start(s["task"])
        busy = [s for s in slots if s["task"] is not None]
        ready = multiprocessing.connection.wait(
            [s["conn"] for s in busy] + [s["process"].sentinel for s in busy], timeout=1.0)
        for s in busy:
          if s["conn"] in ready or s["process"].sentinel in ready:
            self._collect(s, finish)
        tick()
    finally:
      for s in slots:
        if s["process"].is_alive() and s["task"] is None:
          try:
            s["conn"].send(None)
          except (BrokenPipeError, OSError):
            pass
      deadline = time.time() + 30
      for s in slots:
        s["process"].join(timeout=max(0.1, deadline - time.time()))
        if s["process"].is_alive():
          s["process"].terminate()

  def _collect(self, slot: dict, on_done) -> None:
    task = slot["task"]
    try:
      result = slot["conn"].recv() if slot["conn"].poll() else None
    except (EOFError, OSError):
      result = None
    if result is None:
      slot["process"].join(timeout=5)
      if slot["process"].is_alive():
        return  # woken by something else; the result is still to come
      code = slot["process"].exitcode
      reason = f"the worker process died (exit code {code}) while training this run"
      store.write_status(task.run_dir, "failed", reason=reason)
      try:
        with open(os.path.join(task.run_dir, store.LOG), "a") as log:
          log.write(f"run {task.run_id} failed: {reason}\n")
      except OSError:  # the disk refused; the reason is in the sweep's own output
        pass
      result = worker_lib.Result(task.run_id, "failed", reason)
    slot["task"] = None
    on_done(result)


# The backend's entry points (launch/backends/__init__.py).

def add_arguments(parser) -> None:
  """No options of its own: --workers and --threads-per-worker are every backend's."""


def check(args, record: dict, states: dict, threads: int):
  running = [r for r, s in states.items() if s == "running"]
  if running:
    raise UserError(f"another process is training runs of {args.workdir} "
                    f"({', '.join(running)}); wait for it or stop it first "
                    f"(python -m launch status --workdir {args.workdir})")
  return None


def queue(workdir: str) -> dict:
  return {}


def launch(args, record: dict, options, workers: int, threads: int) -> int:
  """Train what has not finished in the pool, then the analysis: 0 when every run finished, 1
  when some failed, 130 when a signal stopped the sweep (running runs checkpointed)."""
  states = store.states(args.workdir, record)
  todo = [r for r in record["runs"] if states[r["run"]] != "finished"]
  counts = {s: sum(v == s for v in states.values()) for s in store.STATES}
  new = sum(s == "pending" for s in states.values())
  print(f"sweep {args.workdir}: {counts['finished']} finished, {len(todo)} to train "
        f"({counts['interrupted']} to resume, {counts['failed']} to retry, {new} new); "
        f"{workers} worker(s) x {threads} thread(s)")
  failed = _train(args.workdir, record, todo, workers, threads) if todo else []
  if failed is None:
    return 130
  plan_lib.analyze(args.workdir)
  if failed:
    print(f"{len(failed)} run(s) failed; run the same command again to retry them:",
          file=sys.stderr)
    for result in failed:
      print(f"  {result.run_id}: {result.reason}", file=sys.stderr)
    return 1
  return 0


def _train(workdir: str, record: dict, todo: list[dict], workers: int, threads: int):
  """Failed results, or None when a signal stopped the sweep (running runs checkpointed)."""
  backend = LocalBackend(workers, threads, worker_lib.cache_dir(workdir))
  tasks = worker_lib.tasks_for(workdir, record, todo)
  progress = plan_lib.Progress(workdir, record, [t.run_id for t in tasks])
  start = time.time()
  with StopSignal() as stop:  # stop starting runs; running ones checkpoint and stop
    try:
      backend.run(tasks, progress.start, progress.end, progress.tick,
                  lambda: stop.received is not None)
    finally:
      progress.close()
  summaries = [store.summary(store.run_dir(workdir, r)) for r in progress.done]
  compile_s = sum(s.get("compile_s", 0.0) for s in summaries)
  busy_s = sum(s["wall_s"] for s in summaries)
  print(f"trained {len(progress.done)} run(s) in {plan_lib.hms(time.time() - start)} of wall "
        f"time; the runs took {busy_s:.1f} s in all, {compile_s:.1f} s of it compiling")
  if stop.received:
    print(f"{stop.received}: stopped; running runs saved checkpoints. Run the same command again "
          "to resume.", file=sys.stderr)
    return None
  return progress.failed
