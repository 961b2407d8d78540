"""python -m launch COMMAND ...: the single entry point.

Each command lives in its own module with a `main(argv) -> int`; this file only dispatches and
turns what stops a command into one line on stderr and its exit code (docs/reliability.md):
bad input (`research.errors.UserError`) exits 2, the machine refusing a read or a write
(`EnvironmentFault`, or any OSError: a full or read-only disk) exits 3. Commands themselves
return 1 for a failure (a diverged run, a fit that did not converge) and 143 for a run stopped by
SIGTERM after saving its checkpoint.
"""

import importlib
import sys

from research import xla_env

xla_env.set_flags()  # before anything imports jax

COMMANDS = {
    "run": ("launch.run", "train one config: --config FILE:PRESET [--config.a.b=V] --workdir DIR"),
    "sweep": ("launch.sweep", "train a sweep preset's runs, then analyse them: --config --workdir"),
    "status": ("launch.status", "where a sweep stands: --workdir DIR"),
    "analyze": ("launch.analyze", "re-run a sweep's analysis over its finished runs: --workdir"),
    "fit": ("launch.fit", "fit a scaling law to a table of runs (modes: --curves, --two-step, "
            "--overtraining, --loss-to-loss, --hparams)"),
    "eval": ("launch.eval", "score a BIG-bench JSON task on a run's checkpoint: --workdir RUN "
             "--task FILE.json"),
    "speculate": ("launch.speculate", "speculative decoding of a prompt by a draft and a target "
                  "run: --draft RUN --target RUN --prompt TEXT"),
    "fid": ("launch.fid", "FID / KID between two image sets or statistics files"),
    "sample": ("launch.sample", "a grid of samples (PNG, --npz) from a diffusion run's checkpoint"),
    "tokenizer": ("launch.tokenizer", "train a BPE or sentencepiece tokenizer offline: train "
                  "--vocab N --input SOURCE --out FILE; info FILE"),
    "data": ("launch.data", "tokenize a source once into shards with dedup and "
             "decontamination: prepare --source S --tokenizer T --out DIR; info DIR"),
    "weights": ("launch.weights", "export pytorch-fid's Inception weights; retrain the digits "
                "extractor"),
}


def _usage() -> str:
  lines = ["usage: python -m launch COMMAND [options]", "", "commands:"]
  lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
  lines += ["", "python -m launch COMMAND --help for a command's options"]
  return "\n".join(lines)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0 if argv else 2
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
    return 2
  from research import errors
  try:
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_CODES["bad input"]
  except errors.EnvironmentFault as e:
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_CODES["environment"]
  except OSError as e:
    print(f"error: {errors.describe_os_error(e)}", file=sys.stderr)
    return errors.EXIT_CODES["environment"]


if __name__ == "__main__":
  sys.exit(main())
