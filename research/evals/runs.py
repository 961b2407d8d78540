"""A finished (or checkpointed) language-model run, loaded for evaluation: its config, its study,
the transformer's shape, the parameters of its newest readable checkpoint and the tokenizer.

    run = load_run("runs/smoke")      # or a sweep's runs/<run id>
    logits = transformer.apply(run.model, run.params, tokens_BxL)

The run folder is the store's (research.store): `config.json` holds the resolved config, and
`checkpoints/` the Orbax checkpoints of research.checkpoint. Only the parameters are read (a
partial restore: no optimizer state), on one device, and the checkpoints are opened read-only.
Bad input is a one-line UserError: no such folder, no config, no checkpoint, or a run whose model
is not a transformer language model.
"""

import dataclasses
import os
import types
import warnings
from typing import Any

import ml_collections

from research import config as config_lib
from research import store
from research.data import text
from research.errors import UserError
from research.models import transformer

# A config whose model group lacks these trained another model family (a U-Net, say).
TRANSFORMER_FIELDS = ("d_model", "n_layers")


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  workdir: str                                 # absolute path of the run folder
  run_id: str
  config: ml_collections.ConfigDict            # the run's resolved config (locked)
  study: types.ModuleType | None               # its experiment module; None when not recorded
  model: transformer.TransformerConfig
  params: Any                                  # float32 parameter tree of `step`
  step: int                                    # the checkpoint's training step
  tokenizer: text.ByteTokenizer

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


def model_config(cfg: ml_collections.ConfigDict, study=None,
                 workdir: str = "") -> transformer.TransformerConfig:
  """The transformer of a run's config: the study's `model_config(cfg)` when it has one, else
  the config's model fields that TransformerConfig knows."""
  model = cfg.get("model")
  if not isinstance(model, ml_collections.ConfigDict) or not all(
      f in model for f in TRANSFORMER_FIELDS):
    raise UserError(f"run {workdir!r}: checkpoint of a different model family (its config has no "
                    f"model.{' / model.'.join(TRANSFORMER_FIELDS)}; a transformer language model "
                    "is needed)")
  if study is not None and callable(getattr(study, "model_config", None)):
    return study.model_config(cfg)
  known = {f.name for f in dataclasses.fields(transformer.TransformerConfig)}
  return transformer.TransformerConfig(**{k: v for k, v in model.to_dict().items() if k in known})


def restore_params(checkpoints: str, model: transformer.TransformerConfig,
                   step: int | None = None):
  """(params, step): the parameters alone from the newest readable checkpoint (or `step`),
  read-only, on one device; an older checkpoint is tried, with a warning, when one cannot be
  read. A UserError when there is no checkpoint or none fits `model`."""
  import jax
  import orbax.checkpoint as ocp

  from research import checkpoint
  if not os.path.isdir(checkpoints):
    raise UserError(f"no checkpoint: {checkpoints!r} does not exist (has the run trained?)")
  ckpt = checkpoint.Checkpointer(checkpoints, read_only=True)
  try:
    steps = ckpt.steps()
    if not steps:
      raise UserError(f"no checkpoint: {checkpoints!r} holds no finished checkpoint")
    if step is not None and step not in steps:
      raise UserError(f"no checkpoint at step {step} in {checkpoints!r}; steps there: "
                      f"{', '.join(map(str, steps))}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(lambda: transformer.init_params(model, jax.random.key(0)))
    item = {"params": jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)}
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
    errors = []
    for candidate in ([step] if step is not None else sorted(steps, reverse=True)):
      try:
        return ckpt.manager.restore(candidate, args=args)["state"]["params"], candidate
      except Exception as e:  # noqa: BLE001  (damaged, or another model's parameters)
        errors.append(f"step {candidate}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        if step is None and candidate != min(steps):
          warnings.warn(f"checkpoint at step {candidate} in {checkpoints} could not be read "
                        f"({errors[-1]}); trying an older one")
    raise UserError(f"no checkpoint in {checkpoints!r} fits the run's transformer "
                    f"(checkpoint of a different model family?): {errors[0]}")
  finally:
    ckpt.close()


def load_run(workdir: str, step: int | None = None, study=None) -> LoadedRun:
  """The run in `workdir` at its newest readable checkpoint (or at `step`).

  `study` (a module or a path) overrides the study recorded for the run; a single run's folder
  records none, a sweep's run has its sweep's (sweep.json). The transformer is the study's
  `model_config(cfg)` when it has one, else the config's model fields.
  """
  workdir = os.path.abspath(str(workdir))
  if not os.path.isdir(workdir):
    raise UserError(f"no such run folder: {workdir!r}")
  record = store.read_json(os.path.join(workdir, store.CONFIG))
  if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
    raise UserError(f"{workdir!r} is not a run folder: it has no {store.CONFIG} with a config "
                    "(a run of python -m launch run, or a sweep's runs/<run id>)")
  cfg = config_lib.from_dict(record["config"])
  module = _load_study(workdir, record, study)
  model = model_config(cfg, module, workdir)
  params, restored_step = restore_params(os.path.join(workdir, "checkpoints"), model, step)
  return LoadedRun(workdir=workdir, run_id=record.get("run_id") or config_lib.run_id(cfg),
                   config=cfg, study=module, model=model, params=params, step=restored_step,
                   tokenizer=text.ByteTokenizer())
