"""python -m launch data prepare --source SOURCE --tokenizer FILE --out DIR | info DIR

`prepare` tokenizes a source of documents (text:PATH[,PATH...], tfds:NAME[...], hf:PATH[...])
once into shards with a manifest (research/data/prepare.py): exact and MinHash near-duplicates
and documents sharing a 13-gram with the evaluation data (--eval, repeatable) are flagged,
and removed when their kind is in --remove; resumable after kill -9 (run the same command again);
train on the folder with --config.data.source=prepared:DIR. `info` summarises a manifest.
"""

import sys

from launch import options
from research.errors import UserError


def _parser() -> options.Parser:
  from research.data import dedup, decontaminate, prepare  # pylint: disable=import-outside-toplevel
  parser = options.Parser(prog="python -m launch data", description=__doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  p = commands.add_parser("prepare", help="tokenize a source once into shards with a manifest")
  p.add_argument("--source", required=True, help="text:PATH[,PATH...], tfds:NAME, hf:PATH")
  p.add_argument("--tokenizer", required=True,
                 help="a tokenizer.json, a sentencepiece .model, or 'byte'")
  p.add_argument("--out", required=True, help="the folder of shards and manifest.json")
  p.add_argument("--eval", action="append", default=[], metavar="PATH",
                 help="evaluation data to decontaminate against: BIG-bench task files or "
                      "folders, .zip files of text, text files or folders (repeatable)")
  p.add_argument("--remove", default=",".join(prepare.REASONS),
                 help="which flagged kinds to drop: a comma-separated subset of "
                      f"{','.join(prepare.REASONS)}, or none (report only); default: all")
  p.add_argument("--near-threshold", type=options.number(0, 1, low_open=True),
                 default=dedup.NEAR_THRESHOLD, help="MinHash Jaccard threshold (0.8)")
  p.add_argument("--ngram", type=options.integer(least=decontaminate.MIN_WORDS),
                 default=decontaminate.NGRAM, help="decontamination n-gram in words (13)")
  p.add_argument("--split-seed", type=options.integer(least=0), default=0)
  p.add_argument("--val-fraction", type=options.number(0, 1, low_open=True, high_open=True),
                 default=0.05)
  p.add_argument("--shard-tokens", type=options.integer(least=1),
                 default=prepare.DEFAULT_SHARD_TOKENS)
  p.add_argument("--tfds-data-dir", default=None)
  p.add_argument("--no-progress", action="store_true")
  info = commands.add_parser("info", help="summarise a prepared folder's manifest")
  info.add_argument("dir")
  return parser


def removed_kinds(text: str) -> tuple[str, ...]:
  return () if text.strip() in ("", "none") else tuple(s.strip() for s in text.split(","))


def summary(manifest: dict) -> str:
  f, s = manifest["filter"], manifest["splits"]
  lines = [f"source {manifest['source']['spec']} (sha256 {manifest['source']['sha256'][:16]}, "
           f"{manifest['source']['documents']:,} documents); tokenizer "
           f"{manifest['tokenizer']['kind']} {manifest['tokenizer']['vocab_size']:,} "
           f"(sha256 {manifest['tokenizer']['sha256'][:16]})",
           "flagged " + ", ".join(f"{k} {v}" for k, v in f["counts"].items()) +
           f"; removed {f['removed_documents']} documents ({f['removed_bytes']:,} bytes; kinds "
           f"{','.join(f['removed']) or 'none'})"]
  for split in ("train", "val"):
    e = s[split]
    ratio = e["bytes"] / max(1, e["tokens"])
    lines.append(f"{split:5s} {e['documents']:,} documents, {e['tokens']:,} tokens, "
                 f"{e['bytes']:,} bytes ({ratio:.3f} bytes/token), {len(e['shards'])} shards")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  args = _parser().parse_args(argv)
  from research.data import prepare, prepared  # pylint: disable=import-outside-toplevel
  if args.command == "info":
    print(summary(prepared.read_manifest(f"prepared:{args.dir}", args.dir)))
    return 0
  if args.source.partition(":")[0] == "prepared":
    raise UserError(f"--source {args.source!r}: already prepared; allowed: text:, tfds:, hf:")
  manifest = prepare.prepare(
      args.source, args.tokenizer, args.out, eval_paths=args.eval,
      remove=removed_kinds(args.remove), near_threshold=args.near_threshold, ngram=args.ngram,
      split_seed=args.split_seed, val_fraction=args.val_fraction,
      shard_tokens=args.shard_tokens, tfds_data_dir=args.tfds_data_dir,
      progress=not args.no_progress)
  print(summary(manifest))
  print(f"train on it: --config.data.source=prepared:{args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
