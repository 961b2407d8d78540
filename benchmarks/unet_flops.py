"""The U-Net's analytic training FLOPs against XLA's cost analysis, for every shape of the
diffusion study's cpu sweep (the acceptance of issue 11: within 10%).

    python benchmarks/unet_flops.py [--preset cpu]

Prints, per run of the plan, ours / XLA for one jitted train step (Adam with the EMA, 4 images):
a counting check, so it needs no quiet machine. The analytic count leaves out norms, activations
and the optimizer (docs/diffusion.md, "Counting FLOPs"), so the ratio rises towards 1 with width.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import xla_env  # noqa: E402

xla_env.set_flags()

from experiments import diffusion  # noqa: E402
from research.diffusion import ddpm  # noqa: E402
from research.models import unet  # noqa: E402


def ratio(cfg: unet.UNetConfig, images: int = 4) -> float:
  """Our count of one train step's FLOPs over XLA's."""
  ours, xla = ddpm.train_step_flops(cfg, images)
  return ours / xla


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="cpu", help="a sweep preset of experiments/diffusion.py")
  args = parser.parse_args()
  print(f"{'data':<8} {'width':>5} {'params':>10} {'ours / XLA':>10}")
  for run in diffusion.plan(diffusion.get_config(args.preset)):
    cfg = diffusion.model_config(run)
    n = unet.param_counts(cfg).total
    print(f"{run.data.source:<8} {cfg.ch:>5} {n:>10,} {ratio(cfg):>10.3f}", flush=True)


if __name__ == "__main__":
  main()
