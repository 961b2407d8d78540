"""One run of a sweep, as any backend executes it: lock the run, log to its folder, train, record.

`execute(task)` is what a local worker process or a cluster job calls; it never raises for a run
that fails (the failure is recorded in the run's status.json with its reason, and returned), so
one bad run does not stop the others.
"""

import contextlib
import dataclasses
import gc
import os
import sys
import traceback

from research import config as config_lib
from research import store
from research.errors import describe_os_error


@dataclasses.dataclass(frozen=True)
class Task:
  run_id: str
  run_dir: str
  config: dict          # research.config.to_dict of the run's config
  study_path: str
  wandb_group: str | None = None
  after: str = ""       # a run of the same sweep that must finish first (a branch's parent)


def parent_run(config: dict, run_ids) -> str:
  """The run of `run_ids` that a run branches from (loop.init_from 'RUN_ID@STEP'), or ''."""
  parent = config.get("loop", {}).get("init_from", "").rpartition("@")[0]
  return parent if parent in run_ids else ""


def tasks_for(workdir: str, record: dict, runs: list[dict]) -> list[Task]:
  """The Tasks of `runs` (entries of sweep.json) in the sweep folder `workdir`."""
  ids = {r["run"] for r in record["runs"]}
  return [Task(r["run"], os.path.abspath(store.run_dir(workdir, r["run"])), r["config"],
               record["study"], record["name"], parent_run(r["config"], ids)) for r in runs]


def depth(task: Task, by_id: dict) -> int:
  """0 for a run with no parent in the sweep, else 1 + its parent's depth."""
  return 0 if task.after not in by_id else 1 + depth(by_id[task.after], by_id)


def cache_dir(workdir: str) -> str:
  """The persistent compilation cache runs share: $JAX_COMPILATION_CACHE_DIR, else the sweep's."""
  return (os.environ.get("JAX_COMPILATION_CACHE_DIR")
          or os.path.join(os.path.abspath(workdir), ".cache", "jax"))


def prepare_process(cores: list[int], cache: str) -> None:
  """Before JAX starts in a process that trains runs: pin it to `cores` (XLA sizes its thread
  pool to them, so the plan's thread count holds), the same count for BLAS, and the shared
  persistent compilation cache."""
  os.sched_setaffinity(0, cores)
  for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = str(len(cores))
  import jax
  jax.config.update("jax_compilation_cache_dir", cache)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@dataclasses.dataclass(frozen=True)
class Result:
  run_id: str
  status: str           # finished | failed | interrupted
  reason: str = ""
  summary: dict | None = None


@contextlib.contextmanager
def _output_to(path: str):
  """stdout and stderr (the file descriptors, so XLA's own messages too) appended to `path`."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  with open(path, "ab", buffering=0) as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      yield
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      os.close(saved[0])
      os.close(saved[1])


_MODULES: dict = {}


def _study(path: str):
  if path not in _MODULES:
    _MODULES[path] = config_lib.load_module(path)
  return _MODULES[path]


def execute(task: Task, *, lock_timeout: float = 60.0) -> Result:
  """Train one run of a sweep in this process, resuming its folder; the outcome as a Result."""
  lock = store.RunLock(task.run_dir)
  os.makedirs(task.run_dir, exist_ok=True)
  if not lock.acquire(timeout=lock_timeout):
    return Result(task.run_id, "failed", f"another process holds {lock.path}")
  try:
    with _output_to(os.path.join(task.run_dir, store.LOG)):
      return _train(task)
  except OSError as e:  # the log itself could not be written: the disk refused
    return Result(task.run_id, "failed", describe_os_error(e))
  finally:
    lock.release()
    import jax
    jax.clear_caches()  # compiled executables of this run; the persistent cache keeps them on disk
    gc.collect()


def _train(task: Task) -> Result:
  from research.errors import UserError
  from research.train import loop
  from research.train.run import run
  store.write_status(task.run_dir, "running", pid=os.getpid())
  try:
    cfg = config_lib.from_dict(task.config)
    # the plan validated the config (launch.plan.make_plan)
    summary = run(cfg, _study(task.study_path), task.run_dir, progress=False,
                  wandb_group=task.wandb_group, validated=True, locked=True)
  except loop.NonFiniteLoss as e:
    result = Result(task.run_id, "failed", f"training diverged: {e}")
  except UserError as e:
    result = Result(task.run_id, "failed", f"bad input: {e}")
  except OSError as e:
    result = Result(task.run_id, "failed", describe_os_error(e))
  except Exception as e:  # noqa: BLE001  (any crash of one run is recorded, not raised)
    traceback.print_exc()
    result = Result(task.run_id, "failed", f"{type(e).__name__}: {e}")
  else:
    status = "finished" if summary.get("status") == "finished" else "interrupted"
    result = Result(task.run_id, status, "" if status == "finished" else summary["status"],
                    summary)
  if result.status == "failed":
    print(f"run {task.run_id} failed: {result.reason}", file=sys.stderr)
  store.write_status(task.run_dir, result.status, reason=result.reason)
  return result


def follow(task: Task) -> str:
  """A non-chief process of a multi-process run: train along with process 0, writing nothing to
  the run's folder (process 0 logs, checkpoints' metadata and summaries are its job)."""
  from research.train.run import run
  try:
    summary = run(config_lib.from_dict(task.config), _study(task.study_path), task.run_dir,
                  progress=False, log=lambda *a: None, validated=True)
  except Exception:  # noqa: BLE001  (process 0 records the failure)
    traceback.print_exc()
    return "failed"
  return "finished" if summary.get("status") == "finished" else "interrupted"
