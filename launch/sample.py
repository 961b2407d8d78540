"""python -m launch sample --workdir RUN [--n 64] [--sampler ddim] [--steps 50] [--out grid.png]

Samples from a diffusion run's checkpoint (the EMA weights when the run keeps them; the newest
checkpoint, or --step): a PNG grid (--out), and with --npz the images as an (N, H, W, C) uint8
array that `python -m launch fid` reads. Deterministic given --seed.
"""

import os
import sys

from launch import options
from research.errors import UserError
from research.fileio import writable_file

SEED_MAX = 2**32 - 1  # jax.random.key(seed) folds larger seeds onto others
DEFAULT_STEPS = 50    # sampling steps when --steps is not given


def parse(argv):
  parser = options.Parser(prog="python -m launch sample", description=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--workdir", required=True, help="a run folder of experiments/diffusion.py")
  parser.add_argument("--n", type=options.integer(least=1), default=64,
                      help="number of samples (default 64)")
  parser.add_argument("--sampler", default="ddim", help="ddim (default) or ddpm")
  parser.add_argument("--steps", type=options.integer(least=1), default=None,
                      help="sampling steps, at most the run's diffusion.steps (default 50, or "
                           "diffusion.steps when the run has fewer)")
  parser.add_argument("--eta", type=options.number(0.0, 1.0), default=0.0,
                      help="DDIM's eta, in [0, 1] (default 0)")
  parser.add_argument("--seed", type=options.integer(least=0, most=SEED_MAX), default=0)
  parser.add_argument("--step", type=options.integer(least=0), default=None,
                      help="checkpoint step (default newest)")
  parser.add_argument("--batch-size", type=options.integer(least=1), default=256)
  parser.add_argument("--out", default=None, help="PNG grid path (default RUN/samples.png)")
  parser.add_argument("--npz", default=None, help="also write the samples to this .npz")
  parser.add_argument("--columns", type=options.integer(least=1), default=None,
                      help="grid columns (default sqrt n)")
  return parser.parse_args(argv)


def main(argv) -> int:
  args = parse(argv)
  if not os.path.isdir(args.workdir):
    raise UserError(f"--workdir {args.workdir!r} is not a folder")
  from research.diffusion import ddpm, samples
  from research.models import unet
  from research.recipes import ddpm as ddpm_recipe
  run = ddpm_recipe.read_run(args.workdir, "launch sample")
  c = run.config
  unet.validate(ddpm_recipe.model_config(c))  # e.g. an edited config.json's image size
  T = c.diffusion.steps
  if args.sampler not in ddpm.SAMPLERS:
    raise UserError(f"--sampler {args.sampler!r} is unknown: choose one of "
                    f"{', '.join(ddpm.SAMPLERS)}")
  if args.steps is None:
    args.steps = min(DEFAULT_STEPS, T)
  if args.steps > T:
    raise UserError(f"--steps {args.steps}: the run was trained with {T} diffusion steps; "
                    f"sample with 1 to {T}")
  out = args.out or os.path.join(args.workdir, "samples.png")
  writable_file(out, "--out")
  if args.npz:
    writable_file(args.npz, "--npz")
  params, step = ddpm_recipe.restore_params(run, args.step)  # a missing step: one line, exit 2
  batch = min(args.batch_size, args.n)
  sample = ddpm_recipe.sampler_for(c, args.sampler, args.steps, batch, args.eta)
  images = samples.draw(sample, params, args.n, batch, args.seed)
  samples.save_png(out, samples.grid_image(images, args.columns),
                   scale=4 if c.model.image_size <= 16 else 2)
  print(f"{args.n} samples of step {step} ({args.sampler}, {args.steps} steps, seed {args.seed}"
        f"{', eta %g' % args.eta if args.sampler == 'ddim' else ''}) -> {out}")
  if args.npz:
    samples.save_npz(args.npz, images)
    print(f"  images (N, H, W, C) uint8 -> {args.npz} (python -m launch fid REAL {args.npz})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
