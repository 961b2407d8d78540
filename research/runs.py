"""One reader of a run folder (research.store's layout): its config and run id, the model family it
trained, and a chosen part of its checkpoint (the parameters, or an EMA of them).

    run = runs.read("runs/smoke", family="transformer")
    params, step = runs.restore(run, ("params",), abstract_params)

Bad input is a one-line UserError: no such folder, no config.json, a run of another model family,
no checkpoint, or none that fits the model.
"""

import dataclasses
import os

import ml_collections

from research import config as config_lib
from research import store
from research.errors import UserError

# A transformer config names no family; its model group has these fields.
TRANSFORMER_FIELDS = ("d_model", "n_layers")
DESCRIPTIONS = {"transformer": "a transformer language model", "unet": "a DDPM U-Net ('unet')"}


def family(config: dict) -> str:
  """The model family a run's config (as in config.json) trains: its model.family, else
  'transformer' for a model group with the transformer's fields, else 'unknown'."""
  model = config.get("model") if isinstance(config, dict) else None
  if not isinstance(model, dict):
    return "unknown"
  if model.get("family"):
    return str(model["family"])
  return "transformer" if all(f in model for f in TRANSFORMER_FIELDS) else "unknown"


@dataclasses.dataclass(frozen=True)
class RunFolder:
  workdir: str                              # absolute path of the run folder
  run_id: str
  config: ml_collections.ConfigDict         # the run's resolved config (locked)
  record: dict                              # config.json as written
  family: str

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.workdir, "checkpoints")


def read(workdir: str, family_name: str | None = None, purpose: str = "this") -> RunFolder:
  """The run in `workdir`; with `family_name`, a UserError unless it trained that family
  (`purpose` says who needs it, e.g. "launch sample")."""
  workdir = os.path.abspath(str(workdir))
  if not os.path.isdir(workdir):
    raise UserError(f"no such run folder: {workdir!r}")
  record = store.read_config(workdir)
  if record is None:
    raise UserError(f"{workdir!r} is not a run folder: it has no {store.CONFIG} with a config "
                    "(a run of python -m launch run, or a sweep's runs/<run id>)")
  found = family(record["config"])
  if family_name is not None and found != family_name:
    raise UserError(f"run {workdir!r}: checkpoint of a different model family: it trained "
                    f"{DESCRIPTIONS.get(found, repr(found))}, and {purpose} needs "
                    f"{DESCRIPTIONS.get(family_name, repr(family_name))}")
  cfg = config_lib.from_dict(record["config"])
  return RunFolder(workdir=workdir, run_id=record.get("run_id") or config_lib.run_id(cfg),
                   config=cfg, record=record, family=found)


def restore(run: RunFolder, path: tuple[str, ...], abstract, step: int | None = None):
  """(tree, step): the part of the run's train state at `path` (("params",), or
  ("opt_state", "ema")) from its newest readable checkpoint or `step`, read-only, on one device.
  `abstract` is that part's shapes (jax.eval_shape of the family's init)."""
  import jax

  from research import checkpoint
  if not os.path.isdir(run.checkpoints):
    raise UserError(f"no checkpoint: {run.checkpoints!r} does not exist (has the run trained?)")
  ckpt = checkpoint.Checkpointer(run.checkpoints, read_only=True)
  try:
    steps = ckpt.steps()
    if not steps:
      raise UserError(f"no checkpoint: {run.checkpoints!r} holds no finished checkpoint")
    if step is not None and step not in steps:
      raise UserError(f"no checkpoint at step {step} in {run.checkpoints!r}; steps there: "
                      f"{', '.join(map(str, steps))}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract)
    try:
      return ckpt.restore_subtree(path, target, step)
    except Exception as e:  # noqa: BLE001  (damaged, or another model's state)
      raise UserError(f"no checkpoint in {run.checkpoints!r} fits the run's {run.family} at "
                      f"{'/'.join(path)} (checkpoint of a different model family?): "
                      f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
  finally:
    ckpt.close()
