"""python -m launch weights export-inception IN.pth OUT.npz | train-digits [MNIST_DIR]

The feature extractors' weight files. `export-inception` converts pytorch-fid's InceptionV3
weights to an `.npz` of the same names (checked; no pickle inside). `train-digits` retrains the
committed FD_digits extractor (research/models/weights/digits_mlp.npz) with its fixed seed and
records the test accuracies it measured beside it, in digits_mlp.json.
"""

from launch import options
import sys
import time

from research.fileio import atomic_write_json

DIGITS_COMMAND = "python -m launch weights train-digits  (from the repository root)"


def _parser() -> options.Parser:
  parser = options.Parser(prog="python -m launch weights",
                                   description=__doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  export = commands.add_parser(
      "export-inception", help="pytorch-fid's .pth -> .npz (read without PyTorch)",
      description="Convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth to an .npz.")
  export.add_argument("pth", metavar="IN.pth", help="pytorch-fid's InceptionV3 weight file")
  export.add_argument("npz", metavar="OUT.npz", help="the .npz to write")
  digits = commands.add_parser(
      "train-digits", help="retrain the committed FD_digits extractor",
      description="Retrain research/models/weights/digits_mlp.npz and record its accuracies.")
  digits.add_argument("mnist_dir", metavar="MNIST_DIR", nargs="?",
                      help="MNIST IDX files (default: ../shared/data/images/mnist, from the "
                           "repository root)")
  return parser


def export_inception(pth_path: str, npz_path: str) -> int:
  from research.models import inception  # pylint: disable=import-outside-toplevel
  inception.export_npz(pth_path, npz_path)
  print(f"wrote {npz_path}")
  return 0


def train_digits(mnist_dir: str | None) -> int:
  from research.models import digits  # pylint: disable=import-outside-toplevel
  start = time.time()
  params, accuracy, info = digits.train(digits.DEFAULT_MNIST if mnist_dir is None else mnist_dir)
  digits.save_params(digits.WEIGHTS, params)
  record = dict(info, test_accuracy=accuracy, train_seconds=round(time.time() - start, 1),
                command=DIGITS_COMMAND,
                features=f"{digits.FEATURE_DIM}-d ReLU layer 'features'; distance name FD_digits")
  atomic_write_json(digits.WEIGHTS[:-len(".npz")] + ".json", record)
  print(f"wrote {digits.WEIGHTS}: test accuracy {accuracy}")
  return 0


def main(argv: list[str]) -> int:
  args = _parser().parse_args(argv)
  if args.command == "export-inception":
    return export_inception(args.pth, args.npz)
  return train_digits(args.mnist_dir)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
