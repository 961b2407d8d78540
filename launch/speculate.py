"""python -m launch speculate --draft RUN --target RUN --prompt TEXT [--gamma 4] [--temperature 1]

Speculative decoding of one prompt (research/evals/speculative.py): the draft run proposes
--gamma tokens per round, the target run verifies them in one forward pass. Prints the text, the
acceptance statistics (tokens per target call, the acceptance rate on this text) and the
walltime improvement over plain KV-cached decoding of the target, the two taking turns over
--rounds rounds in this process (medians), beside the one Leviathan et al. (2023) predict from
the measured acceptance and the measured cost ratio c of a draft step to a target step.
"""

import sys

import numpy as np

from launch import options
from research.errors import UserError

SEED_MAX = 2**32 - 1


def parse(argv):
  parser = options.Parser(prog="python -m launch speculate",
                          description=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--draft", required=True, help="the draft model's run folder")
  parser.add_argument("--target", required=True, help="the target model's run folder")
  parser.add_argument("--prompt", required=True, help="the text to continue")
  parser.add_argument("--gamma", type=options.integer(least=1, most=64), default=4,
                      help="draft tokens per round (default 4)")
  parser.add_argument("--temperature", type=options.number(0.0, 100.0), default=1.0,
                      help="sampling temperature; 0 is greedy (default 1)")
  parser.add_argument("--max-new-tokens", type=options.integer(least=1), default=64,
                      help="tokens to generate (default 64)")
  parser.add_argument("--seed", type=options.integer(least=0, most=SEED_MAX), default=0)
  parser.add_argument("--rounds", type=options.integer(least=1, most=100), default=5,
                      help="timing rounds (default 5)")
  return parser.parse_args(argv)


def main(argv) -> int:
  args = parse(argv)
  from research.evals import draft_target as dt
  from research.evals import runs as eval_runs
  from research.evals import speculative as spec
  draft_run, target_run = eval_runs.load_run(args.draft), eval_runs.load_run(args.target)
  draft, target = (draft_run.model, draft_run.params), (target_run.model, target_run.params)
  tokenizer = target_run.tokenizer
  prompt = tokenizer.encode(args.prompt)
  if prompt.size == 0:
    raise UserError("--prompt is empty: generation needs at least one token to condition on")
  keep = spec.window(draft[0], target[0], args.max_new_tokens, args.gamma)
  if prompt.size > keep:
    print(f"note: the prompt's {prompt.size} tokens are cut to their last {keep} (the window: "
          f"context - new tokens - gamma + 1)")
  run = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
  found = {}

  def speculative():
    found["out"], found["stats"] = spec.speculate(draft, target, [prompt], gamma=args.gamma, **run)

  times = dt.alternate({
      "speculative": speculative,
      "target": lambda: spec.sample(target, [prompt], gamma=args.gamma, **run),
      "draft": lambda: spec.sample(draft, [prompt], gamma=args.gamma, **run)}, args.rounds)
  median = {name: float(np.median(t)) for name, t in times.items()}
  stats = found["stats"]
  c = median["draft"] / median["target"]
  alpha = stats.alpha_on_policy
  print(f"{args.prompt}{tokenizer.decode(found['out'][0])}")
  print()
  print(f"draft {draft_run.run_id} ({draft_run.workdir}) -> target {target_run.run_id} "
        f"({target_run.workdir}); gamma {args.gamma}, temperature {args.temperature:g}, "
        f"seed {args.seed}")
  print(f"  target calls {stats.calls} for {stats.tokens} tokens: {stats.tokens_per_call:.3f} "
        f"tokens per call (i.i.d. prediction from alpha {alpha:.3f} on this text: "
        f"{float(spec.expected_tokens(alpha, args.gamma)):.3f})")
  speedup = median["target"] / median["speculative"]
  print(f"  walltime over {args.rounds} rounds (medians): speculative "
        f"{median['speculative']:.4f} s, target alone {median['target']:.4f} s -> {speedup:.2f}x"
        f" (predicted {float(spec.predicted_speedup(alpha, args.gamma, c)):.2f}x from alpha and "
        f"the measured c = {c:.3f})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
