"""python -m launch tokenizer train --vocab 8192 --input SOURCE --out FILE | info FILE

`train` fits a byte-level BPE (Hugging Face `tokenizers`; --out FILE.json, a tokenizer.json) or a
sentencepiece BPE (--kind sentencepiece; --out FILE.model) on the training documents of a source
(text:PATH[,PATH...], tfds:..., hf:PATH; a bare path is text:PATH), offline. A source without
a validation split of its own first holds out documents by the rule that `text.load` and
`launch data prepare` use (--split-seed, --val-fraction): the held-out text is not in the fit.
`info` prints a tokenizer file's kind, vocabulary and sha256 (the hash a prepared folder and a run
id carry).
"""

import sys

from launch import options
from research.errors import UserError


def _parser() -> options.Parser:
  parser = options.Parser(prog="python -m launch tokenizer",
                          description=__doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  train = commands.add_parser("train", help="train a BPE or sentencepiece tokenizer offline")
  train.add_argument("--vocab", type=options.integer(least=257), required=True,
                     help="vocabulary size, special tokens included (e.g. 8192)")
  train.add_argument("--input", required=True,
                     help="a source of documents: text:PATH[,PATH...], tfds:NAME, hf:PATH")
  train.add_argument("--out", required=True, help="FILE.json (bpe) or FILE.model (sentencepiece)")
  train.add_argument("--kind", choices=("bpe", "sentencepiece"), default="bpe")
  train.add_argument("--split-seed", type=options.integer(least=0), default=0,
                     help="the held-out documents left out of the fit (as data.split_seed)")
  train.add_argument("--val-fraction", type=options.number(0, 1, low_open=True, high_open=True),
                     default=0.05)
  train.add_argument("--tfds-data-dir", default=None)
  info = commands.add_parser("info", help="a tokenizer file's kind, vocabulary and sha256")
  info.add_argument("file")
  return parser


def source_spec(text_or_path: str) -> str:
  """A source spec; a bare path means text:PATH."""
  scheme = text_or_path.partition(":")[0]
  return text_or_path if scheme in ("text", "tfds", "hf") else "text:" + text_or_path


def train(args) -> int:
  from research.data import corpus, text, tokenizers  # pylint: disable=import-outside-toplevel
  if args.kind == "sentencepiece" and not args.out.endswith(".model"):
    raise UserError(f"--out {args.out!r}: a sentencepiece model's file name ends in .model")
  spec = source_spec(args.input)
  docs, val = text.read_documents(spec, args.tfds_data_dir)
  docs = [d for d in docs if d[1]]
  if not docs:
    raise UserError(f"--input {args.input!r}: no non-empty document; allowed: a source with text")
  if val is None:  # hold out what text.load and `launch data prepare` hold out
    docs, _ = corpus.train_val_split(spec, docs, args.split_seed, args.val_fraction)
  texts = (tokenizers.as_text(d) for _, d in docs)
  if args.kind == "bpe":
    tok = tokenizers.train_bpe(texts, args.vocab, args.out, length=len(docs))
  else:
    tok = tokenizers.train_sentencepiece(texts, args.vocab, args.out)
  ident = tokenizers.identity(tok)
  print(f"wrote {args.out}: {ident['kind']}, {ident['vocab_size']:,} tokens, "
        f"from {len(docs):,} training documents; sha256 {ident['sha256']}")
  return 0


def main(argv: list[str]) -> int:
  args = _parser().parse_args(argv)
  if args.command == "train":
    return train(args)
  from research.data import tokenizers  # pylint: disable=import-outside-toplevel
  ident = tokenizers.identity(tokenizers.load(args.file))
  print(" ".join(f"{k}={v}" for k, v in ident.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
