"""The decoder-only language model as a family: its config's checks, data, size, and the recipe
of one run (research.train.recipe.Recipe) that the loop trains.

A study's config for this family has the groups `model` (research.models.transformer's
TransformerConfig fields), `data` (a source of research.data.text), `train` (the token budget,
batch, optimizer and schedule of research.train.optim) and the loop's groups
(research.config.run_groups). D counts tokens; C is the training FLOPs per token under
`tracking.flop_convention` times D.
"""

import math
import os
import warnings

from research import accounting, xla_env
from research.data import prepared, text
from research.errors import require
from research.evals import lm as lm_evals
from research.models import transformer
from research.train import optim
from research.train.recipe import Recipe, Report

LENGTH_FIELDS = ("train.tokens",)
# Tokens per device in one slice of a one-core CPU step (Recipe.slice_rows; more cores take
# threads^2 times more, research.train.loop.cpu_slices): the model ladder's steps ran fastest
# with slices of 256-512 tokens on one core (benchmarks/ladder_speed.py, benchmarks/README.md).
SLICE_TOKENS = 256
# Models up to this width compile their CPU step with this jaxlib's YNNPACK fusions back on
# (research.xla_env.YNN_DEFAULT_OPTIONS): 1.1-1.3x faster at d_model 16-88 (head size 4), and
# 0.9x at d_model 128 (head size 32, context 256), where the process's flags stay.
YNN_MAX_D_MODEL = 96


def model_config(c) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(**c.model.to_dict())


def num_steps(c) -> int:
  return math.ceil(c.train.tokens / (c.train.batch_size * c.train.seq_len))


def set_steps(c, steps: int) -> None:
  """Make the (unlocked) config train `steps` steps: its token budget (research.train.branch)."""
  c.train.tokens = steps * c.train.batch_size * c.train.seq_len


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
  for field in ("mup_output_mult", "mup_embed_lr"):  # set by a plan (lr_transfer's variants)
    value = m.get(field, 1.0)
    require(isinstance(value, (int, float)) and 0 < value < float("inf"), f"model.{field}",
            value, "must be a positive factor (1: muP as Yang et al. 2022 give it)")
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
  if is_prepared(c):  # the tokenizer's vocabulary is checked when the manifest is read
    for field in prepared.IDENTITY_FIELDS:
      require(isinstance(c.data.get(field), str), f"data.{field}", c.data.get(field),
              "a prepared: source's config needs it (set when the config is loaded: "
              "research.recipes.lm.resolve)")
  else:
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
  require(isinstance(split_seed(c), int) and split_seed(c) >= 0, "data.split_seed",
          split_seed(c), "must be an integer >= 0 (it picks the held-out text)")
  optim.validate(t, num_steps(c))


def split_seed(c) -> int:
  """The seed of the held-out split: data.split_seed; a run made before that field existed
  held out the text its own seed picked."""
  return c.data.get("split_seed", c.seed)


def is_prepared(c) -> bool:
  return c.data.source.startswith("prepared:")


def resolve(c) -> None:
  """Completes a loaded config: a `prepared:DIR` source gets data.tokenizer_sha256 and
  data.prepared_sha256 from DIR/manifest.json ('' while DIR is not prepared), so the run id
  changes with the tokenizer and the data. Other sources are left as they are (their ids too)."""
  if not is_prepared(c):
    return
  found = prepared.identity(c.data.source.partition(":")[2])
  with c.unlocked():
    for field, value in found.items():
      c.data[field] = value


def load_data(c) -> text.TextData:
  data = text.load(c.data.source, seed=c.seed, split_seed=split_seed(c),
                   val_fraction=c.data.val_fraction,
                   tfds_data_dir=c.data.tfds_data_dir or None)
  if is_prepared(c):
    found = prepared.identity(c.data.source.partition(":")[2])
    for field, value in found.items():
      require(c.data.get(field) == value, f"data.{field}", c.data.get(field),
              f"the prepared folder now has {value!r}: its tokenizer or data changed after the "
              "run id was made; allowed: the folder the run was made with (or a new run)")
    require(c.model.vocab_size >= data.vocab_size, "model.vocab_size", c.model.vocab_size,
            f"the prepared data's tokenizer has {data.vocab_size:,} tokens; allowed: at least "
            "that many")
  return data


def identity_files(c) -> tuple[tuple[str, str], ...]:
  """(name, path) of the tokenizer file a run copies into its folder."""
  if not is_prepared(c):
    return ()
  path = prepared.tokenizer_file(c.data.source, c.data.source.partition(":")[2])
  return ((os.path.basename(path), path),) if path else ()


def size(c) -> dict:
  """N (total), N_nonemb, D (tokens), C (FLOPs under tracking.flop_convention) and the number of
  steps of one run; for a branch (loop.init_from) also C_start, the FLOPs its parent trained
  before the branch step, which the branch does not train itself."""
  mcfg = model_config(c)
  counts = transformer.param_counts(mcfg)
  flops = transformer.train_flops_per_token(mcfg, c.train.seq_len, c.tracking.flop_convention)
  out = dict(N=counts.total, N_nonemb=counts.non_embedding, D=c.train.tokens,
             C=float(c.train.tokens) * flops, flop_convention=c.tracking.flop_convention,
             steps=num_steps(c))
  step = c.loop.init_from.rpartition("@")[2]
  if step:
    out["C_start"] = out["C"] * int(step) / out["steps"]
  return out


REPORT = Report(
    header=(("params", "total {params_total:,}  non-embedding {params_non_embedding:,}  "
                       "embedding {params_embedding:,}"),),
    metrics=(("final_val_loss", "val loss  ", "nats/token"),
             ("final_val_bpb", "val bpb   ", "bits/byte"),
             ("entropy_rate_nats", "entropy rate of the synthetic language", "nats/token")),
    curves=("val_loss",), levels=(("entropy_rate_nats", "entropy rate of the data"),),
    unit="tokens", loss_label="loss (nats / token)")


def data_note(data: text.TextData, tokens: int) -> str:
  """How often the run sees its data, for the summary's D line."""
  if data.unique_train_tokens is None:
    return "fresh samples every step: no repeated data"
  return f"{data.epochs(tokens):.2f} epochs of the {data.unique_train_tokens:,} unique tokens"


def recipe(c, data: text.TextData | None = None) -> Recipe:
  """One run of the config; `data` replaces the config's data source (a study's own mixture:
  experiments/emergence.py), else it is loaded from c.data."""
  data = load_data(c) if data is None else data
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
      "data_note": data_note(data, c.train.tokens),
      "entropy_rate_nats": data.entropy_rate_nats,
      "attention": implementation,
  }
  return Recipe(
      init=lambda rng: transformer.init_params(mcfg, rng),
      loss=lm_evals.lm_loss(apply_fn),
      train_batch=lambda step: data.train_batch(step, B, L, token_budget=c.train.tokens),
      num_steps=steps,
      batch_size=B,
      optimizer=optim.optimizer(c.train, transformer.lr_multiplier(mcfg)
                                if mcfg.parametrization == "mup" else None),
      lr_schedule=optim.schedule(c.train, steps),
      flops_per_unit=flops[c.tracking.flop_convention],
      compute_dtype=c.model.dtype,
      evaluators=[lm_evals.loss_evaluator(apply_fn, val, data.batch_bytes_per_token(val))],
      facts=facts,
      report=REPORT,
      partition_rules=transformer.TENSOR_PARALLEL_RULES,
      activation_bytes=lambda rows, model_parallel: transformer.activation_bytes(
          mcfg, rows, L, model_parallel, implementation),
      length_fields=LENGTH_FIELDS,
      files=identity_files(c),
      **cpu_step(mcfg, L))


def cpu_step(mcfg: transformer.TransformerConfig, seq_len: int) -> dict:
  """The Recipe fields of a CPU step: slices of SLICE_TOKENS tokens, YNNPACK's fusions up to
  YNN_MAX_D_MODEL."""
  return dict(slice_rows=max(1, SLICE_TOKENS // seq_len),
              cpu_compiler_options=(xla_env.YNN_DEFAULT_OPTIONS
                                    if mcfg.d_model <= YNN_MAX_D_MODEL else {}))
