"""python -m launch fid REAL FAKE [--features inception|digits] [--n N ...]: FID (or FD), KID.

Each side is a folder of images, an `.npz` holding an array of images (N, H, W[, C]), or a
statistics file (`.npz` with `mu` and `sigma`, as written by this command or the published
`fid_stats_*.npz`). Statistics computed from images are written to --out.
"""

import sys

from launch import options
from research.diffusion import compare
from research.errors import UserError
from research.fileio import atomic_write_json, writable_file, writable_folder, write_after_printing


def parse(argv):
  parser = options.Parser(
      prog="python -m launch fid", description=__doc__.split("\n\n", 1)[1],
      epilog="FD_digits is a Frechet distance in a small digit classifier's features: it is not "
             "FID and compares only with other FD_digits values. See docs/fid.md.")
  parser.add_argument("real", metavar="REAL", help="reference: folder, image .npz or stats .npz")
  parser.add_argument("fake", metavar="FAKE", help="samples: folder, image .npz or stats .npz")
  parser.add_argument("--features", choices=sorted(compare.METRIC_NAMES), default="inception",
                      help="feature extractor (default: inception, i.e. FID)")
  parser.add_argument("--n", type=options.integer(least=2), nargs="+", metavar="N",
                      help="FAKE sample counts (each at least 2: a covariance needs 2 samples): "
                           "the distance at each (first N samples), and its extrapolation to "
                           "infinitely many (Chong & Forsyth 2020) when several are given; "
                           "default: all samples")
  parser.add_argument("--weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth or "
                      "its .npz export (needed by --features inception; never downloaded)")
  parser.add_argument("--out", default=".", help="folder for the computed statistics (default .)")
  parser.add_argument("--json", help="also write the numbers to this JSON file")
  parser.add_argument("--batch-size", type=options.integer(least=1), default=50)
  parser.add_argument("--kid-subsets", type=options.integer(least=1), default=100)
  parser.add_argument("--kid-subset-size", type=options.integer(least=2), default=1000,
                      help="samples per side in each KID subset (at least 2; default 1000)")
  parser.add_argument("--kid-max", type=options.integer(least=2), default=10000,
                      help="features kept per side for KID (at least 2; default 10000)")
  return parser.parse_args(argv)


def _check_destinations(args, sides) -> None:
  """Before any work: the --out folder (when statistics will be computed) and --json's folder
  can be written, and --json is not a folder. Nothing is created here."""
  if any(side.loaded is None for side in sides):
    writable_folder(args.out, "--out", create=False)
  if args.json:
    writable_file(args.json, "--json")


def _extractor(features: str, weights: str | None):
  if features == "digits":
    from research.models import digits  # pylint: disable=import-outside-toplevel
    return digits.DigitsFeatures()
  from research.models import inception  # pylint: disable=import-outside-toplevel
  if not weights:
    raise UserError("--features inception needs --weights PATH: pytorch-fid's "
                    f"{inception.WEIGHTS_FILE} or its .npz export (nothing is downloaded); for "
                    "small digit images use --features digits")
  return inception.InceptionFeatures(inception.load_variables(weights))


def _written(what: str, write):
  """write()'s result; the numbers are on stdout already, so a refused write says what was lost."""
  return write_after_printing(write, f"the numbers printed above are right, but {what} could "
                              "not be written")


def _save(side: compare.Side, folder: str) -> None:
  out = _written(f"the {side.label} statistics (--out {folder})", lambda: side.save(folder))
  print(f"{side.label}: wrote statistics of {side.counts[-1]} samples to {out}", file=sys.stderr)


def _lines(real: compare.Side, fake: compare.Side, result: compare.Comparison) -> list[str]:
  fd_name, kid_name = compare.metric_names(result.features)
  lines = [real.describe(), fake.describe()]
  lines += [f"{fd_name} @ {n} samples: {d:.4f}" for n, d in zip(result.fake_n, result.distance)]
  if result.distance_inf is not None:
    lines.append(f"{fd_name}_inf (Chong & Forsyth 2020, fit of {len(result.fake_n)} counts): "
                 f"{result.distance_inf:.4f}  (slope {result.slope:.4g} / N)")
  if result.kid is not None:
    lines.append(f"{kid_name}: {result.kid:.6f} +- {result.kid_std:.6f}  "
                 f"({result.kid_subsets} subsets of {result.kid_subset_size})")
  else:
    lines.append(f"{kid_name}: n/a (needs images on both sides, not statistics files)")
  return lines


def main(argv: list[str]) -> int:
  """Everything is read and checked, the features computed and the distance found before any
  file is written: a refused input leaves --out and --json as they were."""
  args = parse(argv)
  real, fake = compare.Side.open("REAL", args.real), compare.Side.open("FAKE", args.fake)
  if args.n and fake.loaded is not None:
    raise UserError(f"--n needs images for FAKE, but {args.fake!r} is a statistics file")
  if real.name == fake.name:
    real.name, fake.name = f"{real.name}_real", f"{fake.name}_fake"
  real.check_counts(None)
  fake.check_counts(args.n)
  _check_destinations(args, (real, fake))
  needs_features = real.loaded is None or fake.loaded is None
  extractor = _extractor(args.features, args.weights) if needs_features else None
  # Statistics files first: their checks (features, dimension, covariance) before slow features.
  for side, counts in sorted([(real, None), (fake, args.n)], key=lambda s: s[0].loaded is None):
    side.compute(extractor, args.features, counts, args.batch_size, args.kid_max)
  result = compare.compare(real, fake, args.features, args.kid_subsets, args.kid_subset_size)
  print("\n".join(_lines(real, fake, result)), flush=True)  # shown even if a write fails
  for side in (real, fake):
    if side.loaded is None:
      _save(side, args.out)
  if args.json:
    _written(f"--json {args.json}", lambda: atomic_write_json(args.json, result.as_dict()))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
