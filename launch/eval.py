"""python -m launch eval --workdir RUN --task FILE.json: score a BIG-bench JSON task on a run.

The run's newest checkpoint (or --step) is scored as BIG-bench scores a JSON task
(research.evals.scorer.bigbench_scores): generative examples by exact_str_match of the greedy
output (cut at the task's stop string, then its output regex), examples with target_scores by
multiple_choice_grade, with the task's prefixes, choices and (with --shots) few-shot separator.
The metrics are printed and written to RUN/eval/<task name>.json.
"""

import dataclasses
import json
import os
import sys

from launch import options
from research.errors import UserError
from research.fileio import atomic_write_json, writable_folder, write_after_printing


def parse(argv):
  parser = options.Parser(prog="python -m launch eval", description=__doc__)
  parser.add_argument("--workdir", required=True, help="a run folder (launch run, or a sweep's "
                      "runs/<run id>)")
  parser.add_argument("--task", required=True, action="append",
                      help="a BIG-bench JSON task file (repeat for several)")
  parser.add_argument("--step", type=options.integer(least=0),
                      help="a checkpoint step (default: the newest)")
  parser.add_argument("--limit", type=options.integer(least=1),
                      help="score only the first LIMIT examples")
  parser.add_argument("--shots", type=options.integer(least=0), default=0,
                      help="few-shot examples taken from the task's first examples (which are "
                      "then not scored); default 0")
  parser.add_argument("--batch-size", type=options.integer(least=1), default=64)
  return parser.parse_args(argv)


def _check_destination(workdir: str, names) -> str:
  """Before any scoring: RUN/eval can be written (EnvironmentFault, exit 3, for a read-only run
  folder) and no RUN/eval/<task>.json is a folder. Creates nothing; returns RUN/eval."""
  folder = os.path.join(workdir, "eval")
  writable_folder(folder, "the run's eval folder", create=False)
  for name in names:
    out = os.path.join(folder, f"{name}.json")
    if os.path.isdir(out):
      raise UserError(f"{out!r} is a folder: the scores of task {name!r} cannot be written there")
  return folder


def main(argv) -> int:
  args = parse(argv)
  from research import runs as run_folders
  from research.data import bigbench
  loaded = [bigbench.load(path) for path in args.task]  # bad files fail before the model loads
  folder = run_folders.read(args.workdir, "transformer", "a language-model evaluation")
  eval_dir = _check_destination(folder.workdir, [task.name for task in loaded])
  from research.evals import runs, scorer
  run = runs.load_run(folder.workdir, step=args.step)
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
    out = os.path.join(eval_dir, f"{task.name}.json")
    print(json.dumps({k: v for k, v in result.items() if k != "file"}), flush=True)
    write_after_printing(lambda: atomic_write_json(out, result),
                         f"the scores printed above could not be written to {out}")
    print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
