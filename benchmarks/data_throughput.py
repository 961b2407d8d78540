"""Is the data path fast enough for an accelerator? Prepared-shard loader tokens/s on one core
against what the gpu-124m step needs on an H100 at 40% MFU, and prepare's throughput.

    taskset -c 1 python benchmarks/data_throughput.py --tokenizer BPE.json [--source SPEC]
        [--steps 40] [--out DIR]

1. prepare: `research.data.prepare.prepare` of --source with --tokenizer into a fresh folder,
   timed as a whole and by pass (filter: dedup and decontamination; tokenize), in source
   bytes/s and tokens/s;
2. loader: `text.load("prepared:DIR").train_batch(step, 256, 1024)` (the gpu-124m preset's
   batch) for --steps consecutive steps, tokens/s;
3. need: the gpu-124m step's training FLOPs per token (convention "full": 6 N_nonemb plus the
   attention matmuls, research.models.transformer.train_flops_per_token, with the preset's
   32k vocabulary, context 1024) against 0.4 x 989e12 FLOP/s (an H100's dense bf16 peak,
   research/accounting.py) = tokens/s the step consumes; printed with the ratios.
"""

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

H100_BF16 = 989e12
MFU = 0.4


def needed_tokens_per_s() -> tuple[float, float]:
  from research import config as config_lib
  from research.models import transformer
  from research.recipes import lm as lm_recipe
  cfg, _ = config_lib.load(os.path.join(REPO, "experiments/lm.py:gpu-124m"))
  flops = transformer.train_flops_per_token(lm_recipe.model_config(cfg), cfg.train.seq_len,
                                            "full")
  return flops, MFU * H100_BF16 / flops


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tokenizer", required=True, help="a tokenizer.json or .model")
  p.add_argument("--source", default="text:../shared/data/text/gutenberg,"
                 "../shared/data/text/tinyshakespeare.txt")
  p.add_argument("--eval", action="append", default=[], help="decontaminate against (repeatable)")
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--seq", type=int, default=1024)
  p.add_argument("--out", default="", help="the prepared folder (default: a temporary one)")
  args = p.parse_args(argv)
  from research.data import dedup, decontaminate, prepare, text, tokenizers
  out = args.out or tempfile.mkdtemp(prefix="data-throughput-")
  train, val = text.read_documents(args.source)
  n_bytes = sum(len(d) for _, d in train + (val or []))
  t0 = time.perf_counter()
  prepare.filter_documents(train, val, eval_paths=args.eval)
  t_filter = time.perf_counter() - t0
  tok = tokenizers.load(args.tokenizer)
  t0 = time.perf_counter()
  manifest = prepare.prepare(args.source, args.tokenizer, out, eval_paths=args.eval,
                             progress=False)
  t_prepare = time.perf_counter() - t0
  tokens = sum(manifest["splits"][s]["tokens"] for s in prepare.SPLITS)
  data = text.load(f"prepared:{out}")
  data.train_batch(0, args.batch, args.seq)  # page the shards in
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    data.train_batch(step, args.batch, args.seq)
  t_load = time.perf_counter() - t0
  loader = args.steps * args.batch * args.seq / t_load
  flops, need = needed_tokens_per_s()
  split = manifest["splits"]["train"]
  print(f"source {args.source}: {n_bytes:,} bytes, {len(train):,} documents; tokenizer "
        f"{tok.name} {tok.vocab_size:,} ({split['bytes'] / max(1, split['tokens']):.3f} "
        "bytes/token)")
  print(f"prepare   {t_prepare:7.1f} s  {n_bytes / t_prepare / 1e6:6.2f} MB/s  "
        f"{tokens / t_prepare:12,.0f} tokens/s  (filter pass alone {t_filter:.1f} s: MinHash "
        f"{dedup.NUM_PERM} permutations, {decontaminate.NGRAM}-gram index of "
        f"{len(args.eval)} eval paths)")
  print(f"loader    {loader:12,.0f} tokens/s  ({args.steps} batches of {args.batch} x {args.seq}, "
        f"one core)")
  print(f"need      {need:12,.0f} tokens/s  (gpu-124m: {flops / 1e9:.3f} GFLOP/token 'full'; "
        f"{MFU:.0%} x {H100_BF16 / 1e12:.0f} TFLOP/s H100 bf16 dense)")
  print(f"ratios    loader / need = {loader / need:.1f}x;  prepare / need = "
        f"{tokens / t_prepare / need:.3f}x (tokenize once: prepare runs ahead of training, "
        "not beside it)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
