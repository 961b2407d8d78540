"""One decoder-only language model, trained end to end.

    python -m launch run --config experiments/lm.py:smoke --workdir runs/smoke

Presets:
  smoke     a 0.4M-parameter model on the embedded synthetic language, about 2 minutes on 2 CPU
            cores: checks the whole path (data, mesh, steps, eval, checkpoints, summary).
  cpu       a 3.2M-parameter byte-level model on ../shared/data/text (25 Gutenberg books and Tiny
            Shakespeare), about 20 minutes on 2 CPU cores.
  gpu-124m  GPT-2-small shape (12 x 768, context 1024; 85M non-embedding parameters, 110M in
            all with the 32,768-token BPE) for one accelerator or more, on shards of a web
            corpus tokenized once (PREPARED; docs/data.md says how to prepare FineWeb-Edu or
            OpenWebText): bfloat16, cuDNN attention on a GPU (model.attention auto), 2
            microbatches; not yet measured on a GPU (docs/accelerators.md,
            benchmarks/gpu_check.sh).

  byte-smoke  a 0.8M-parameter (non-embedding) byte-level model on the Gutenberg books and Tiny
              Shakespeare of ../shared/data/text (SMOKE_TEXT: not the held-out folder), about
              8 minutes on one CPU core; its held-out text is the whole held-out book.
  bpe-smoke   the same non-embedding shape on those documents prepared with an 8,192-token BPE
              (BPE_SMOKE; results/lm/bpe-smoke/README.md says how to make it), the same
              held-out book, and a token budget that gives byte-smoke's training FLOPs C.

Sweep presets (python -m launch sweep --config experiments/lm.py:PRESET --workdir DIR):
  sweep-smoke  4 widths x 2 token budgets of tiny models on the synthetic language, about 3
               minutes on 2 CPU cores; the analysis fits L = E + A N^-alpha (N non-embedding) at
               each budget and draws loss against N and against C. The tests and README use it.
"""

import ml_collections

from research import config as config_lib
from research import store
from research.errors import UserError, require
from research.recipes import lm as lm_recipe

from experiments import common

PRESETS = ("smoke", "cpu", "gpu-124m", "sweep-smoke", "byte-smoke", "bpe-smoke")
# The accelerator presets' data: a byte-level BPE of BPE_VOCAB tokens over prepared shards, made
# with `python -m launch tokenizer train` and `python -m launch data prepare` (docs/data.md).
PREPARED = "prepared:data/fineweb-edu-bpe32k"
BPE_VOCAB = 32768
# byte-smoke / bpe-smoke (results/lm/bpe-smoke): the same documents as bytes and as 8k BPE shards.
SMOKE_TEXT = "text:../shared/data/text/gutenberg,../shared/data/text/tinyshakespeare.txt"
BPE_SMOKE = "prepared:data/bpe-smoke/shared-bpe8k"
BPE_SMOKE_VOCAB = 8192
# Token budgets at one compute: C = D x training FLOPs per token under the 'full' convention
# (the layers' matmuls plus the logits' 2 d_model V), 6,488,064 FLOPs/token for bytes and
# 12,582,912 for the BPE's 8,192 logits, a ratio of exactly 33/64, so D_bpe = D_byte x 33 / 64
# and both runs have C = 1.063e13 exactly (tests/test_prepare.py checks it).
BYTE_SMOKE_TOKENS = 1_638_400  # 400 steps of 16 x 256
BPE_SMOKE_TOKENS = 844_800  # 206.25 steps: the last one's targets past D have weight 0


def use_prepared(c: ml_collections.ConfigDict, source: str = PREPARED,
                 vocab_size: int = BPE_VOCAB) -> None:
  """Train on prepared shards: the source, the tokenizer's vocabulary, and the identity fields
  that research.recipes.lm.resolve fills from the folder's manifest when the config is loaded."""
  c.data.source = source
  c.data.tokenizer_sha256 = ""
  c.data.prepared_sha256 = ""
  c.model.vocab_size = vocab_size


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=256, d_model=128, n_layers=2, n_heads=4, d_ff=512, context=128,
      positions="rotary", norm="rmsnorm", tied_embeddings=True, dtype="float32",
      attention_block=128, attention="auto", remat="none", parametrization="standard",
      mup_base_d_model=0, mup_base_d_head=0))
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic:", split_seed=0, val_fraction=0.05, tfds_data_dir="", val_batches=8))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=16, seq_len=128, tokens=1_228_800, lr=3e-3, schedule="cosine",
      warmup_steps=50, final_lr_fraction=0.1, cooldown_fraction=0.2, weight_decay=0.1,
      grad_clip=1.0, b1=0.9, b2=0.95, eps=1e-8, microbatches=1))
  config_lib.run_groups(c, log_every=10, eval_every=200, checkpoint_every=100,
                        keep_checkpoints=3)
  if preset == "cpu":
    c.model.update(d_model=256, n_layers=4, n_heads=4, d_ff=1024, context=256)
    c.data.source = "text:../shared/data/text"
    c.train.update(batch_size=16, seq_len=256, tokens=4_096_000, lr=2e-3, warmup_steps=100)
    c.loop.update(log_every=10, eval_every=200, checkpoint_every=200)
  elif preset == "gpu-124m":
    c.model.update(d_model=768, n_layers=12, n_heads=12, d_ff=3072, context=1024,
                   dtype="bfloat16")
    use_prepared(c)
    c.train.update(batch_size=256, seq_len=1024, tokens=2_621_440_000, lr=6e-4,
                   warmup_steps=700, schedule="cosine", final_lr_fraction=0.1, microbatches=2)
    c.loop.update(log_every=20, eval_every=1000, checkpoint_every=1000)
    c.data.val_batches = 16
  elif preset in ("byte-smoke", "bpe-smoke"):
    c.model.update(d_model=128, n_layers=4, n_heads=4, d_ff=512, context=256)
    c.data.source = SMOKE_TEXT
    c.train.update(batch_size=16, seq_len=256, tokens=BYTE_SMOKE_TOKENS, lr=3e-3,
                   warmup_steps=50)
    # one evaluation, at the end, of every full window of the held-out book (bar < 0.3%)
    c.loop.update(log_every=10, eval_every=100_000, checkpoint_every=100)
    c.data.val_batches = 672  # 10,752 windows of 257 bytes of its 2,767,289
    if preset == "bpe-smoke":
      use_prepared(c, BPE_SMOKE, BPE_SMOKE_VOCAB)
      c.train.tokens = BPE_SMOKE_TOKENS
      c.data.val_batches = 198  # 3,168 windows of 257 tokens of its 816,490
  elif preset == "sweep-smoke":
    c.model.update(n_layers=2, context=64)
    c.train.update(batch_size=16, seq_len=64, warmup_steps=20)
    c.data.val_batches = 4
    c.loop.update(log_every=10, eval_every=100_000, checkpoint_every=100)
    c.sweep = ml_collections.ConfigDict(dict(
        d_models=(16, 32, 48, 64), head_size=16, ff_ratio=4, tokens=(409_600, 819_200)))
  return c


validate = lm_recipe.validate
recipe = lm_recipe.recipe
size = lm_recipe.size
model_config = lm_recipe.model_config
resolve = lm_recipe.resolve  # a prepared: source's identity (data.*_sha256)


# Sweeps.

def plan(c) -> list[ml_collections.ConfigDict]:
  """Every (token budget, width) of c.sweep: n_heads = d_model / head_size, d_ff = ff_ratio x
  d_model, the rest of the config shared; budgets in order, widths in order within each."""
  s = c.sweep
  for field in ("d_models", "tokens"):
    values = s[field]
    require(len(values) >= 1 and all(isinstance(v, int) and v >= 1 for v in values),
            f"sweep.{field}", values, "must be a non-empty list of positive integers")
  require(isinstance(s.head_size, int) and s.head_size >= 1, "sweep.head_size", s.head_size,
          "must be a positive integer")
  bad = [d for d in s.d_models if d % s.head_size]
  require(not bad, "sweep.d_models", s.d_models,
          f"every width must be a multiple of sweep.head_size = {s.head_size} (not {bad})")

  def change(d_model: int, tokens: int):
    def apply(run):
      run.model.update(d_model=d_model, n_heads=d_model // s.head_size, d_ff=s.ff_ratio * d_model)
      run.train.tokens = tokens
    return apply

  return common.expand(c, [change(d, t) for t in s.tokens for d in s.d_models])


def analyze(workdir: str) -> dict:
  """runs.csv; at each token budget the fit L = E + A N^-alpha (N non-embedding, L the held-out
  loss) of the finished runs (fit.json); loss against N and against C (loss_vs_n_c.png / .pdf)."""
  from research.scaling import fit, plots
  df = store.table(workdir)
  out = common.Outputs(workdir)
  out.runs_csv(df)
  done = df[df.status == "finished"]
  budgets = []
  for tokens, group in done.groupby("D", sort=True):
    group = group.sort_values("N_nonemb")
    entry = dict(D=float(tokens), C=group.C.tolist(), runs=group.run.tolist(),
                 N_nonemb=group.N_nonemb.tolist(), L=group.val_loss.tolist())
    try:
      law = fit.fit_law("saturating", {"X": group.N_nonemb.to_numpy(float)},
                        group.val_loss.to_numpy(float), keep=16, maxiter=500)
      entry.update(law.summary())
    except UserError as e:  # too few finished sizes at this budget
      entry["skipped"] = str(e)
    budgets.append(entry)
  record = dict(law="L = E + A N^-alpha at each token budget D", N="non-embedding parameters",
                L="held-out loss, nats/token (final_val_loss)",
                C=(f"training FLOPs, convention {done.flop_convention.iloc[0]!r}" if len(done)
                   else ""),
                finished=int(len(done)), planned=int(len(df)), budgets=budgets)
  if len(done):
    out.figure(plots.sweep_losses(done, budgets), "loss_vs_n_c")
  return out.fit(record)
