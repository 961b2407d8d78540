"""One decoder-only language model, trained end to end.

    python -m launch run --config experiments/lm.py:smoke --workdir runs/smoke

Presets:
  smoke     a 0.4M-parameter model on the embedded synthetic language, about 2 minutes on 2 CPU
            cores: checks the whole path (data, mesh, steps, eval, checkpoints, summary).
  cpu       a 3.2M-parameter byte-level model on ../shared/data/text (25 Gutenberg books and Tiny
            Shakespeare), about 20 minutes on 2 CPU cores.
  gpu-124m  GPT-2-small shape (12 x 768, context 1024; 85M non-embedding parameters with a byte
            vocabulary) for one accelerator or more: bfloat16, cuDNN attention on a GPU
            (model.attention auto), 2 microbatches (about 48 GB per device by the memory
            estimate, where one would need about 95 GB); not yet measured on a GPU
            (docs/accelerators.md, benchmarks/gpu_check.sh).

Sweep presets (python -m launch sweep --config experiments/lm.py:PRESET --workdir DIR):
  sweep-smoke  4 widths x 2 token budgets of tiny models on the synthetic language, about 3
               minutes on 2 CPU cores; the analysis fits L = E + A N^-alpha (N non-embedding) at
               each budget and draws loss against N and against C. The tests and README use it.
"""

import math
import os
import warnings

import ml_collections

from research import accounting, store
from research import config as config_lib
from research.errors import UserError, require
from research.fileio import atomic_write_json, atomic_write_text
from research.data import text
from research.evals import lm as lm_evals
from research.models import transformer
from research.train import loop, optim

PRESETS = ("smoke", "cpu", "gpu-124m", "sweep-smoke")


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=256, d_model=128, n_layers=2, n_heads=4, d_ff=512, context=128,
      positions="rotary", norm="rmsnorm", tied_embeddings=True, dtype="float32",
      attention_block=128, attention="auto", remat="none", parametrization="standard",
      mup_base_d_model=0, mup_base_d_head=0))
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic:", val_fraction=0.05, tfds_data_dir="", val_batches=8))
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
    c.data.source = "text:../shared/data/text"
    c.train.update(batch_size=256, seq_len=1024, tokens=2_621_440_000, lr=6e-4,
                   warmup_steps=700, schedule="cosine", final_lr_fraction=0.1, microbatches=2)
    c.loop.update(log_every=20, eval_every=1000, checkpoint_every=1000)
    c.data.val_batches = 16
  elif preset == "sweep-smoke":
    c.model.update(n_layers=2, context=64)
    c.train.update(batch_size=16, seq_len=64, warmup_steps=20)
    c.data.val_batches = 4
    c.loop.update(log_every=10, eval_every=100_000, checkpoint_every=100)
    c.sweep = ml_collections.ConfigDict(dict(
        d_models=(16, 32, 48, 64), head_size=16, ff_ratio=4, tokens=(409_600, 819_200)))
  return c


def scaling_family(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The scaling studies' shared setup (experiments/chinchilla.py, kaplan.py, lr_transfer.py) on
  top of a preset: untied readout (muP needs it), context 128, batches of 16 x 128 tokens, WSD
  with a 20-step warmup and a cooldown over the last 20% to 0, 16 validation batches, no
  intermediate evaluations or checkpoints. Returns c."""
  c.model.update(tied_embeddings=False, context=128)
  c.train.update(batch_size=16, seq_len=128, schedule="wsd", warmup_steps=20,
                 cooldown_fraction=0.2, final_lr_fraction=0.0)
  c.data.val_batches = 16
  c.loop.update(log_every=20, eval_every=1_000_000, checkpoint_every=1_000_000)
  return c


def model_config(c) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(**c.model.to_dict())


def num_steps(c) -> int:
  return math.ceil(c.train.tokens / (c.train.batch_size * c.train.seq_len))


def validate(c) -> None:
  """Every check that needs no data and no compilation."""
  m = c.model
  for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "context"):
    require(isinstance(m[field], int) and m[field] >= 1, f"model.{field}", m[field],
            "must be a positive integer")
  require(m.d_model % m.n_heads == 0, "model.n_heads", m.n_heads,
          f"must divide model.d_model = {m.d_model}")
  require(m.positions in ("rotary", "learned"), "model.positions", m.positions,
          "allowed: rotary, learned")
  if m.positions == "rotary":
    require((m.d_model // m.n_heads) % 2 == 0, "model.n_heads", m.n_heads,
            "rotary positions need an even head size d_model / n_heads")
  require(m.norm in ("rmsnorm", "layernorm"), "model.norm", m.norm, "allowed: rmsnorm, layernorm")
  require(m.dtype in ("float32", "bfloat16"), "model.dtype", m.dtype,
          "allowed: float32, bfloat16")
  require(isinstance(m.attention_block, int) and m.attention_block >= 0, "model.attention_block",
          m.attention_block, "must be 0 (one block) or a positive number of queries per block")
  require(m.parametrization in ("standard", "mup"), "model.parametrization", m.parametrization,
          "allowed: standard, mup")
  require(m.parametrization != "mup" or not m.tied_embeddings, "model.tied_embeddings",
          m.tied_embeddings, "muP needs an untied readout (false): a tied one is updated along "
          "the input embedding's gradient, and its logit updates shrink with width (tests/"
          "test_mup.py)")
  for field in ("mup_base_d_model", "mup_base_d_head"):
    require(isinstance(m[field], int) and m[field] >= 0, f"model.{field}", m[field],
            "must be 0 (this model's own) or a positive integer")
  require(m.attention in transformer.ATTENTION, "model.attention", m.attention,
          f"allowed: {', '.join(transformer.ATTENTION)}")
  if m.attention == "cudnn":
    problem = transformer.cudnn_problem(model_config(c))
    require(problem is None, "model.attention", m.attention,
            f"cuDNN's fused attention cannot run this model: {problem}")
  require(m.remat in transformer.REMAT_POLICIES, "model.remat", m.remat,
          f"allowed: {', '.join(transformer.REMAT_POLICIES)}")
  tp = c.mesh.model
  require(isinstance(tp, int) and tp >= 1, "mesh.model", tp, "must be a positive integer")
  require(m.n_heads % tp == 0 and m.d_ff % tp == 0, "mesh.model", tp,
          f"tensor parallelism splits the attention heads and the MLP's hidden units: it must "
          f"divide model.n_heads = {m.n_heads} and model.d_ff = {m.d_ff}")
  require(m.vocab_size >= text.ByteTokenizer.vocab_size, "model.vocab_size", m.vocab_size,
          f"the byte tokenizer needs at least {text.ByteTokenizer.vocab_size}")
  t = c.train
  require(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be a positive integer")
  require(1 <= t.seq_len <= m.context, "train.seq_len", t.seq_len,
          f"must be in [1, model.context = {m.context}]")
  require(t.tokens >= 1, "train.tokens", t.tokens, "must be a positive number of tokens")
  require(c.tracking.flop_convention in accounting.FLOP_CONVENTIONS,
          "tracking.flop_convention", c.tracking.flop_convention,
          f"allowed: {', '.join(accounting.FLOP_CONVENTIONS)}")
  require(c.data.val_batches >= 1, "data.val_batches", c.data.val_batches, "must be >= 1")
  optim.validate(t, num_steps(c))


def checked_sweep(c):
  """validate(c), then c's sweep group, or None for one run's config (a plan's runs have none):
  the start of every sweep study's validate."""
  validate(c)
  return c.get("sweep")


def load_data(c) -> text.TextData:
  return text.load(c.data.source, seed=c.seed, val_fraction=c.data.val_fraction,
                   tfds_data_dir=c.data.tfds_data_dir or None)


REPORT = loop.Report(
    metrics=(("final_val_loss", "val loss  ", "nats/token"),
             ("final_val_bpb", "val bpb   ", "bits/byte"),
             ("entropy_rate_nats", "entropy rate of the synthetic language", "nats/token")),
    curves=("val_loss",), levels=(("entropy_rate_nats", "entropy rate of the data"),),
    unit="tokens", loss_label="loss (nats / token)")


def recipe(c) -> loop.Recipe:
  data = load_data(c)
  mcfg = model_config(c)
  warning = text.budget_warning(data, c.train.tokens)
  if warning:
    warnings.warn(warning)
  apply_fn = lambda params, tokens: transformer.apply(mcfg, params, tokens)  # noqa: E731
  steps = num_steps(c)
  B, L = c.train.batch_size, c.train.seq_len
  val = data.val_batches(c.data.val_batches, B, L)
  counts = transformer.param_counts(mcfg)
  flops = {conv: transformer.train_flops_per_token(mcfg, L, conv)
           for conv in accounting.FLOP_CONVENTIONS}
  implementation = transformer.attention_implementation(mcfg)  # here: this process's backend
  facts = {
      "params_total": counts.total, "params_embedding": counts.embedding,
      "params_non_embedding": counts.non_embedding,
      "flop_convention": c.tracking.flop_convention,
      "flops_per_token": flops,
      "tokens_budget": c.train.tokens,
      "epochs": data.epochs(c.train.tokens),
      "data": data.describe(),
      "entropy_rate_nats": data.entropy_rate_nats,
      "attention": implementation,
  }
  return loop.Recipe(
      init=lambda rng: transformer.init_params(mcfg, rng),
      loss=lm_evals.lm_loss(apply_fn),
      train_batch=lambda step: data.train_batch(step, B, L, token_budget=c.train.tokens),
      num_steps=steps,
      batch_size=B,
      optimizer=optim.optimizer(c.train, transformer.lr_multiplier(mcfg)
                                if mcfg.parametrization == "mup" else None),
      lr_schedule=optim.schedule(c.train, steps),
      flops_per_token=flops[c.tracking.flop_convention],
      compute_dtype=c.model.dtype,
      evaluators=[lm_evals.loss_evaluator(apply_fn, val, data.bytes_per_token)],
      facts=facts,
      report=REPORT,
      partition_rules=transformer.TENSOR_PARALLEL_RULES,
      activation_bytes=lambda rows, model_parallel: transformer.activation_bytes(
          mcfg, rows, L, model_parallel, implementation))


# Sweeps.

def size(c) -> dict:
  """N (total), N_nonemb, D (tokens), C (FLOPs under tracking.flop_convention) and the number of
  steps of one run."""
  mcfg = model_config(c)
  counts = transformer.param_counts(mcfg)
  flops = transformer.train_flops_per_token(mcfg, c.train.seq_len, c.tracking.flop_convention)
  return dict(N=counts.total, N_nonemb=counts.non_embedding, D=c.train.tokens,
              C=float(c.train.tokens) * flops, flop_convention=c.tracking.flop_convention,
              steps=num_steps(c))


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
  base = config_lib.to_dict(c)
  del base["sweep"]
  runs = []
  for tokens in s.tokens:
    for d_model in s.d_models:
      run = config_lib.from_dict(base)
      with run.unlocked():
        run.model.update(d_model=d_model, n_heads=d_model // s.head_size,
                         d_ff=s.ff_ratio * d_model)
        run.train.tokens = tokens
      runs.append(run)
  return runs


def analyze(workdir: str) -> dict:
  """runs.csv; at each token budget the fit L = E + A N^-alpha (N non-embedding, L the held-out
  loss) of the finished runs (fit.json); loss against N and against C (loss_vs_n_c.png / .pdf)."""
  from research.scaling import fit, plots
  df = store.table(workdir)
  paths = {"runs.csv": os.path.join(workdir, store.RUNS_CSV)}
  atomic_write_text(paths["runs.csv"], df.to_csv(index=False))
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
  paths["fit.json"] = os.path.join(workdir, "fit.json")
  atomic_write_json(paths["fit.json"], record)
  if len(done):
    for path in plots.save(plots.sweep_losses(done, budgets), os.path.join(workdir, "loss_vs_n_c")):
      paths[os.path.basename(path)] = path
  return paths
