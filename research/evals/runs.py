"""A finished (or checkpointed) language-model run, loaded for evaluation: its config, its study,
the transformer's shape, the parameters of its newest readable checkpoint and the tokenizer.

    run = load_run("runs/smoke")      # or a sweep's runs/<run id>
    logits = transformer.apply(run.model, run.params, tokens_BxL)

The folder is read by research.runs (one reader of a run folder for every family); only the
parameters are restored (a partial restore: no optimizer state), on one device, read-only.
"""

import dataclasses
import os
import types
import warnings
from typing import Any

import ml_collections

from research import config as config_lib
from research import runs, store
from research.data import tokenizers
from research.errors import UserError
from research.models import transformer


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  workdir: str                                 # absolute path of the run folder
  run_id: str
  config: ml_collections.ConfigDict            # the run's resolved config (locked)
  study: types.ModuleType | None               # its experiment module; None when not recorded
  model: transformer.TransformerConfig
  params: Any                                  # float32 parameter tree of `step`
  step: int                                    # the checkpoint's training step
  tokenizer: tokenizers.Tokenizer             # the run's copy of its tokenizer, else bytes

  @property
  def context(self) -> int:
    return self.model.context


def _study_path(workdir: str, record: dict) -> str | None:
  """The study file: config.json's `study` when recorded, else the sweep's (sweep.json two
  folders up, <sweep>/runs/<run id>)."""
  if record.get("study"):
    return record["study"]
  runs_dir = os.path.dirname(workdir)
  if os.path.basename(runs_dir) == store.RUNS_DIR:
    sweep = store.read_json(os.path.join(os.path.dirname(runs_dir), store.SWEEP)) or {}
    return sweep.get("study")
  return None


def _load_study(workdir: str, record: dict, study):
  if study is not None and not isinstance(study, str):
    return study  # a module already
  path = study or _study_path(workdir, record)
  if not path:
    return None
  if not os.path.isfile(path):
    if study:  # asked for explicitly
      raise UserError(f"study file {path!r} does not exist")
    warnings.warn(f"run {workdir}: its study file {path!r} is gone; loading without it")
    return None
  return config_lib.load_module(path)


def model_config(cfg: ml_collections.ConfigDict, study=None) -> transformer.TransformerConfig:
  """The transformer of a run's config: the study's `model_config(cfg)` when it has one, else
  the config's model fields that TransformerConfig knows."""
  if study is not None and callable(getattr(study, "model_config", None)):
    return study.model_config(cfg)
  known = {f.name for f in dataclasses.fields(transformer.TransformerConfig)}
  return transformer.TransformerConfig(**{k: v for k, v in cfg.model.to_dict().items()
                                          if k in known})


def run_tokenizer(workdir: str) -> tokenizers.Tokenizer:
  """The tokenizer a run trained with: its folder's copy (tokenizer.json or tokenizer.model, a
  run on prepared shards) or the byte tokenizer."""
  for name in ("tokenizer.json", "tokenizer.model"):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      return tokenizers.load(path)
  return tokenizers.ByteTokenizer()


def load_run(workdir: str, step: int | None = None, study=None) -> LoadedRun:
  """The run in `workdir` at its newest readable checkpoint (or at `step`).

  `study` (a module or a path) overrides the study recorded for the run; a single run's folder
  records none, a sweep's run has its sweep's (sweep.json). The transformer is the study's
  `model_config(cfg)` when it has one, else the config's model fields.
  """
  import jax
  run = runs.read(workdir, "transformer", "a language-model evaluation")
  module = _load_study(run.workdir, run.record, study)
  model = model_config(run.config, module)
  shapes = jax.eval_shape(lambda: transformer.init_params(model, jax.random.key(0)))
  params, restored = runs.restore(run, ("params",), shapes, step)
  return LoadedRun(workdir=run.workdir, run_id=run.run_id, config=run.config, study=module,
                   model=model, params=params, step=restored,
                   tokenizer=run_tokenizer(run.workdir))
