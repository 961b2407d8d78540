"""python -m launch status --workdir DIR: where a sweep stands.

Counts of done / running / failed / pending runs (pending includes interrupted runs, which resume
from their last checkpoint), the FLOPs done and an ETA at the speed of the finished runs, and for
each failed run its reason and the last line of its log.
"""

from launch import options

from launch import backends
from launch import plan as plan_lib
from research import store


def main(argv) -> int:
  parser = options.Parser(prog="python -m launch status",
                                   description=__doc__.split("\n\n")[1])
  parser.add_argument("--workdir", required=True, help="the sweep's folder")
  args = parser.parse_args(argv)
  store.check_workdir(args.workdir)
  record = store.read_sweep(args.workdir)
  states = store.states(args.workdir, record)
  counts = {s: sum(v == s for v in states.values()) for s in store.STATES}
  runs = {r["run"]: r for r in record["runs"]}
  C = {r: plan_lib.cost(entry) for r, entry in runs.items()}
  done = {r: plan_lib.trained(args.workdir, runs[r], s) for r, s in states.items()}
  done_flops = sum(done.values())
  pending = counts["pending"] + counts["interrupted"]
  print(f"sweep {args.workdir} ({record['spec']}): {len(states)} runs: {counts['finished']} done, "
        f"{counts['running']} running, {counts['failed']} failed, {pending} pending"
        + (f" ({counts['interrupted']} interrupted, will resume)" if counts["interrupted"] else ""))
  total = sum(C.values())
  line = f"FLOPs {done_flops:.3e} of {total:.3e} ({done_flops / total:.0%})"
  if counts["finished"] and counts["finished"] < len(states):
    rate, overhead, _ = plan_lib.rate_estimate(args.workdir, record,
                                                record.get("threads_per_run", 1))
    left = sum((C[r] - done[r]) / rate + (overhead if s != "running" else 0)
               for r, s in states.items() if s != "finished")
    workers = max(1, counts["running"])
    line += (f"; ETA {plan_lib.hms(left / workers)} at the finished runs' speed on {workers} "
             "worker(s)")
  print(line)
  queue = {}
  for backend in backends.all_backends():
    queued = backend.queue(args.workdir)
    counts_q = {}
    for q, _ in queued.values():
      counts_q[q] = counts_q.get(q, 0) + 1
    if queued:
      listed = ", ".join(f"{n} {q.lower()}" for q, n in sorted(counts_q.items()))
      print(f"{backend.LABEL}: {listed} (the newest job of each submitted run)")
    queue.update(queued)
  for run, state in states.items():
    if run in queue and state != "finished":
      print(f"  {queue[run][0].lower()} {run} (job {queue[run][1]})")
    if state == "failed":
      folder = store.run_dir(args.workdir, run)
      reason = store.read_status(folder).get("reason", "")
      print(f"  failed {run}: {reason}\n    last log line: {store.last_log_line(folder)}")
    elif state == "running" and run not in queue:
      print(f"  running {run}")
  return 0
