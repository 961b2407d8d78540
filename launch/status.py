"""python -m launch status --workdir DIR: where a sweep stands.

Counts of done / running / failed / pending runs (pending includes interrupted runs, which resume
from their last checkpoint), the FLOPs done and an ETA at the speed of the finished runs, and for
each failed run its reason and the last line of its log.
"""

import argparse
import os

from launch import sweep as sweep_lib
from research import store


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch status",
                                   description=__doc__.split("\n\n")[1])
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  record = store.read_sweep(args.workdir)
  states = store.states(args.workdir, record)
  counts = {s: sum(v == s for v in states.values()) for s in store.STATES}
  runs = {r["run"]: r for r in record["runs"]}
  C = {r: sweep_lib.cost(entry) for r, entry in runs.items()}
  done = {r: sweep_lib.trained(args.workdir, runs[r], s) for r, s in states.items()}
  done_flops = sum(done.values())
  pending = counts["pending"] + counts["interrupted"]
  print(f"sweep {args.workdir} ({record['spec']}): {len(states)} runs: {counts['finished']} done, "
        f"{counts['running']} running, {counts['failed']} failed, {pending} pending"
        + (f" ({counts['interrupted']} interrupted, will resume)" if counts["interrupted"] else ""))
  total = sum(C.values())
  line = f"FLOPs {done_flops:.3e} of {total:.3e} ({done_flops / total:.0%})"
  if counts["finished"] and counts["finished"] < len(states):
    rate, overhead, _ = sweep_lib.rate_estimate(args.workdir, record,
                                                record.get("threads_per_run", 1))
    left = sum((C[r] - done[r]) / rate + (overhead if s != "running" else 0)
               for r, s in states.items() if s != "finished")
    workers = max(1, counts["running"])
    line += (f"; ETA {sweep_lib.hms(left / workers)} at the finished runs' speed on {workers} "
             "worker(s)")
  print(line)
  queue = _queue(args.workdir)
  if queue:
    counts_q = {}
    for q in queue.values():
      counts_q[q] = counts_q.get(q, 0) + 1
    print("Slurm: " + ", ".join(f"{n} {q.lower()}" for q, n in sorted(counts_q.items()))
          + " (the newest job of each submitted run)")
  for run, state in states.items():
    if run in queue and state != "finished":
      print(f"  {queue[run].lower()} {run} (job {_job(args.workdir, run)})")
    if state == "failed":
      folder = store.run_dir(args.workdir, run)
      reason = (store.read_json(f"{folder}/{store.STATUS}") or {}).get("reason", "")
      print(f"  failed {run}: {reason}\n    last log line: {store.last_log_line(folder)}")
    elif state == "running" and run not in queue:
      print(f"  running {run}")
  return 0


def _queue(workdir: str) -> dict:
  """{run id: Slurm state} when the sweep was submitted to Slurm, else {}."""
  if not os.path.exists(os.path.join(workdir, "slurm", "jobs.json")):
    return {}
  import importlib.util
  if importlib.util.find_spec("submitit") is None:
    print("Slurm: the queue is not shown (this sweep was submitted to Slurm; pip install "
          "submitit to read its jobs' states)")
    return {}
  from launch import slurm
  return slurm.queue_states(workdir)


def _job(workdir: str, run: str) -> str:
  from launch import slurm
  return slurm.read_jobs(workdir)["runs"][run]["job"]
