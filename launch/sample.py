"""python -m launch sample --workdir RUN [--n 64] [--sampler ddim] [--steps 50] [--out grid.png]

Samples from a diffusion run's checkpoint (the EMA weights when the run keeps them; the newest
checkpoint, or --step): a PNG grid (--out), and with --npz the images as an (N, H, W, C) uint8
array that `python -m launch fid` reads. Deterministic given --seed.
"""

import argparse
import os
import sys

from research.errors import UserError


def parse(argv):
  parser = argparse.ArgumentParser(prog="python -m launch sample",
                                   description=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--workdir", required=True, help="a run folder of experiments/diffusion.py")
  parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
  parser.add_argument("--sampler", default="ddim", help="ddim (default) or ddpm")
  parser.add_argument("--steps", type=int, default=50,
                      help="sampling steps, at most the run's diffusion.steps (default 50)")
  parser.add_argument("--eta", type=float, default=0.0, help="DDIM's eta (default 0)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--out", default=None, help="PNG grid path (default RUN/samples.png)")
  parser.add_argument("--npz", default=None, help="also write the samples to this .npz")
  parser.add_argument("--columns", type=int, default=None, help="grid columns (default sqrt n)")
  return parser.parse_args(argv)


def main(argv) -> int:
  args = parse(argv)
  if args.n < 1:
    raise UserError(f"--n {args.n}: must be at least 1")
  if args.batch_size < 1:
    raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
  if not 0.0 <= args.eta <= 1.0:
    raise UserError(f"--eta {args.eta}: must be in [0, 1]")
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
  if not 1 <= args.steps <= T:
    raise UserError(f"--steps {args.steps}: the run was trained with {T} diffusion steps; "
                    f"sample with 1 to {T}")
  params, step = ddpm_recipe.restore_params(run, args.step)
  batch = min(args.batch_size, args.n)
  sample = ddpm_recipe.sampler_for(c, args.sampler, args.steps, batch, args.eta)
  images = samples.draw(sample, params, args.n, batch, args.seed)
  out = args.out or os.path.join(args.workdir, "samples.png")
  samples.save_png(out, samples.grid_image(images, args.columns),
                   scale=4 if c.model.image_size <= 16 else 2)
  print(f"{args.n} samples of step {step} ({args.sampler}, {args.steps} steps, seed {args.seed}"
        f"{', eta %g' % args.eta if args.sampler == 'ddim' else ''}) -> {out}")
  if args.npz:
    import io

    import numpy as np

    from research.fileio import atomic_write_bytes
    buffer = io.BytesIO()
    np.savez(buffer, images=(images * 255).round().astype(np.uint8))
    atomic_write_bytes(args.npz, buffer.getvalue())
    print(f"  images (N, H, W, C) uint8 -> {args.npz} (python -m launch fid REAL {args.npz})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
