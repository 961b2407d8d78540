"""python -m launch run --config FILE:PRESET [--config.a.b=VALUE ...] --workdir DIR"""

import argparse
import os
import sys

from launch import store
from research import config as config_lib


def parse(argv):
  parser = argparse.ArgumentParser(
      prog="python -m launch run", description="Train one config; resumable.",
      epilog="Override any config field with --config.FIELD=VALUE, e.g. --config.model.d_model=256")
  parser.add_argument("--config", required=True, help="FILE:PRESET, e.g. experiments/lm.py:smoke")
  parser.add_argument("--workdir", required=True, help="folder for this run's files")
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      parser.error(f"unrecognised argument {item!r}")
    overrides.append(item[len("--config."):])
  return args, overrides


def _repeats(s: dict) -> str:
  if s["data"].get("unique_train_tokens") is None:
    return "fresh samples every step: no repeated data"
  return f"{s['epochs']:.2f} epochs of the {s['data']['unique_train_tokens']:,} unique tokens"


def format_summary(s: dict) -> str:
  lines = [f"run {s['run_id']}: {s['status']} after {s['steps']} steps",
           f"  params     total {s['params_total']:,}  non-embedding {s['params_non_embedding']:,}"
           f"  embedding {s['params_embedding']:,}",
           f"  tokens D   {s['tokens']:,.0f}  ({_repeats(s)})",
           f"  FLOPs C    {s['flops']:.3e}  (convention '{s['flop_convention']}')",
           f"  train loss {s['train_loss_last10']:.4f} nats/token (mean of the last 10 logged steps)",
           f"  val loss   {s.get('final_val_loss', float('nan')):.4f} nats/token, "
           f"{s.get('final_val_bpb', float('nan')):.4f} bits/byte"]
  if s.get("entropy_rate_nats") is not None:
    lines.append(f"  entropy rate of the synthetic language: {s['entropy_rate_nats']:.4f} nats/token")
  lines.append(f"  wall time  {s['wall_s']:.1f} s on {s['devices']} device(s)")
  return "\n".join(lines)


def main(argv) -> int:
  args, overrides = parse(argv)
  cfg, experiment = config_lib.load(args.config, overrides)
  experiment.validate(cfg)
  config_dict = config_lib.to_dict(cfg)
  run_id = config_lib.run_id(cfg)

  import jax  # after argument and config checks, which should fail fast

  from research import parallel
  from research.train import loop
  parallel.maybe_initialize_distributed()
  loop.validate(cfg, cfg.train.batch_size, jax.device_count())
  data = experiment.load_data(cfg)
  state = store.claim(args.workdir, config_dict, run_id)
  if state == "finished":
    print(f"run {run_id} in {args.workdir} has already finished:")
    print(format_summary(store.summary(args.workdir)))
    return 0
  recipe = experiment.recipe(cfg, data)
  print(f"run {run_id}: {state}, {recipe.num_steps} steps, workdir {args.workdir}",
        file=sys.stderr)
  try:
    summary = loop.train(recipe, cfg, args.workdir, config_dict, run_id)
  except loop.NonFiniteLoss as e:
    print(f"error: training diverged: {e}. Stopped; the last good checkpoint is kept in "
          f"{args.workdir}/checkpoints.", file=sys.stderr)
    return 1
  if summary["status"] != "finished":
    print(f"run {run_id}: {summary['status']}; checkpoint saved, re-run to resume",
          file=sys.stderr)
    return 0
  from research import tracking
  from research.scaling import plots
  metrics = os.path.join(args.workdir, "metrics.jsonl")
  figure = plots.training_run(tracking.read_metrics(metrics, kind="train"),
                              tracking.read_metrics(metrics, kind="eval"), summary)
  paths = plots.save(figure, os.path.join(args.workdir, "curves"))
  print(format_summary(summary))
  print(f"  figures    {', '.join(paths)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
