"""python -m launch eval --workdir RUN --task FILE.json: score a BIG-bench JSON task on a run.

The run's newest checkpoint (or --step) is scored as BIG-bench scores a JSON task
(research.evals.scorer.bigbench_scores): generative examples by exact_str_match of the greedy
output (cut at the task's stop string, then its output regex), examples with target_scores by
multiple_choice_grade, with the task's prefixes, choices and (with --shots) few-shot separator.
The metrics are printed and written to RUN/eval/<task name>.json.
"""

import argparse
import dataclasses
import json
import os

from research.errors import UserError
from research.fileio import atomic_write_json


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch eval", description=__doc__)
  parser.add_argument("--workdir", required=True, help="a run folder (launch run, or a sweep's "
                      "runs/<run id>)")
  parser.add_argument("--task", required=True, action="append",
                      help="a BIG-bench JSON task file (repeat for several)")
  parser.add_argument("--step", type=int, help="a checkpoint step (default: the newest)")
  parser.add_argument("--limit", type=int, help="score only the first LIMIT examples")
  parser.add_argument("--shots", type=int, default=0, help="few-shot examples taken from the "
                      "task's first examples (which are then not scored); default 0")
  parser.add_argument("--batch-size", type=int, default=64)
  args = parser.parse_args(argv)
  if args.limit is not None and args.limit < 1:
    raise UserError(f"--limit {args.limit}: allowed: a positive number of examples")
  if args.shots < 0:
    raise UserError(f"--shots {args.shots}: allowed: 0 or more")
  from research.data import bigbench
  loaded = [bigbench.load(path) for path in args.task]  # bad files fail before the model loads
  from research.evals import runs, scorer
  run = runs.load_run(args.workdir, step=args.step)
  for path, task in zip(args.task, loaded):
    bigbench.check_encodable(task, run.tokenizer)
    shots = task.examples[:args.shots]
    examples = task.examples[args.shots:]
    if args.limit:
      examples = examples[:args.limit]
    if not examples:
      raise UserError(f"{path}: no examples left to score after --shots {args.shots}")
    task = dataclasses.replace(task, examples=tuple(examples))
    result = scorer.bigbench_scores(run.model, run.params, task, run.tokenizer,
                                    batch_size=args.batch_size, shots=shots)
    result.update(file=os.path.abspath(path), run=run.run_id, step=run.step, shots=args.shots)
    out = os.path.join(run.workdir, "eval", f"{task.name}.json")
    atomic_write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "file"}))
    print(f"wrote {out}")
  return 0
