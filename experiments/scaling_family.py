"""The scaling studies' model family (experiments/chinchilla.py, kaplan.py, lr_transfer.py): the
language model of experiments/lm.py with an untied readout and muP, trained with WSD, on one
model ladder (research/models/ladder.py); each ladder size is one constant-rate parent run with
cooldown branches at the token counts a study needs (research/train/branch.py)."""

import ml_collections

from experiments import common, lm
from research.errors import require
from research.recipes import lm as lm_recipe
from research.train import branch

# The ladder of muP models per preset: aspect d_model / n_layers, head size, d_ff / d_model and
# muP's base width (where the learning rate was tuned: results/lr-transfer/).
LADDERS = {
    "smoke": dict(aspect=16.0, head_size=8, ff_ratio=4, base_width=16),
    "cpu": dict(aspect=16.0, head_size=4, ff_ratio=4, base_width=24),
    "gpu": dict(aspect=64.0, head_size=64, ff_ratio=4, base_width=256),
}
LADDERS["synthetic"] = LADDERS["cpu"]  # the cpu plan's shape on the generated language

# The v2 studies' training (results/PREREGISTRATION-scaling-v2.md): pilot P1's learning rate at
# the corners of the plan, pilot P2's muP output multiplier and embedding-rate factor, and pilot
# P0's graded synthetic language (entropy rate 1.4564 nats/token). The cpu and synthetic presets
# train with it; the pilots themselves ran v1's (pilot=True).
V2 = dict(lr=0.024, mup_output_mult=4.0, mup_embed_lr=4.0,
          synthetic="synthetic:order=4,symbols=16,form=loglinear,scale=1.5,decay=0.8")


def family(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The shared setup on top of an LM preset: untied readout (muP needs it), context 128,
  batches of 16 x 128 tokens, WSD with a 20-step warmup and a cooldown over the last 20% to 0,
  16 validation batches, no intermediate evaluations or checkpoints. Returns c."""
  c.model.update(tied_embeddings=False, context=128)
  c.train.update(batch_size=16, seq_len=128, schedule="wsd", warmup_steps=20,
                 cooldown_fraction=0.2, final_lr_fraction=0.0)
  c.data.val_batches = 16
  c.loop.update(log_every=20, eval_every=1_000_000, checkpoint_every=1_000_000)
  return c


def get_config(preset: str, pilot: bool = False) -> ml_collections.ConfigDict:
  """One run of the ladder under muP with the base width's tuned learning rate, for a preset of
  the Chinchilla and Kaplan studies (smoke, cpu, synthetic, gpu); no sweep group. cpu and
  synthetic train with V2 unless `pilot` (v1's rate and muP as given, as the v2 pilots ran)."""
  c = family(lm.get_config("smoke"))
  c.model.parametrization = "mup"
  c.train.lr = 0.031  # v1's LR-transfer pilot's (results/PREREGISTRATION-scaling.md)
  c.tracking.flop_convention = "full"
  if preset == "smoke":
    c.model.context = 64
    c.train.update(batch_size=8, seq_len=64, warmup_steps=10)
    c.data.val_batches = 4
  elif preset in ("cpu", "synthetic"):
    synthetic = "synthetic:" if pilot else V2["synthetic"]
    c.data.source = "text:../shared/data/text" if preset == "cpu" else synthetic
    if not pilot:
      c.train.lr = V2["lr"]
      c.model.update(mup_output_mult=V2["mup_output_mult"], mup_embed_lr=V2["mup_embed_lr"])
  elif preset == "gpu":
    c.model.update(context=1024, dtype="bfloat16")
    lm.use_prepared(c)  # a 32k BPE over prepared shards (docs/data.md: prepare your corpus)
    c.data.val_batches = 32
    c.train.update(batch_size=256, seq_len=1024, warmup_steps=500,  # tune lr: lr_transfer.py
                   tokens=256 * 1024 * 4000)
    c.loop.update(log_every=50, checkpoint_every=1000)
  c.model.mup_base_d_model = LADDERS[preset]["base_width"]
  c.model.mup_base_d_head = LADDERS[preset]["head_size"]
  return c


MAX_SEEDS = 10


def require_seeds(seeds) -> None:
  """sweep.seeds: 1 to MAX_SEEDS distinct training seeds (each replicates the whole plan)."""
  require(isinstance(seeds, (tuple, list)) and 1 <= len(seeds) <= MAX_SEEDS
          and all(isinstance(x, int) and x >= 0 for x in seeds) and len(set(seeds)) == len(seeds),
          "sweep.seeds", seeds, f"must be 1 to {MAX_SEEDS} distinct training seeds (ints >= 0); "
          "a seed changes initialisation and batch order, never the held-out data "
          "(data.split_seed)")


def ladder_runs(c: ml_collections.ConfigDict, steps_by_shape,
                seeds=(0,)) -> list[ml_collections.ConfigDict]:
  """Per training seed, per (ladder shape, step counts) of `steps_by_shape`, in order: one
  constant-rate parent run of that shape, keeping its checkpoints at the branch steps, and a WSD
  cooldown branch of it per step count (research.train.branch.family); parents first (every
  seed's), then the branches."""
  parents, runs = [], []
  for seed in seeds:
    for shape, steps in steps_by_shape:
      def change(run, shape=shape, seed=seed):
        run.model.update(**shape.model_fields())
        run.seed = seed
      parent, branches = branch.family(common.expand(c, [change])[0], steps, lm_recipe.set_steps)
      parents.append(parent)
      runs += branches
  return parents + runs
