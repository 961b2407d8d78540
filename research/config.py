"""Configs: load a preset from an experiment file, apply command-line overrides, validate, hash.

A config is a locked `ml_collections.ConfigDict` made by `get_config(preset)` in an experiment
module. Overrides are `a.b.c=VALUE` strings (the `--config.a.b.c=VALUE` flags of `launch`); the
value is parsed to the type the field already has, and a wrong field or value raises
`ConfigError` naming the field, the value and what is allowed.
"""

import ast
import hashlib
import importlib.util
import json
import math
import os

import ml_collections

from research import study
from research.errors import ConfigError, UserError


def load_module(path: str):
  """The study module in the Python file `path`; a UserError for a missing file, another kind of
  file, or Python that does not parse (an error the module's own code raises is its traceback)."""
  if not os.path.isfile(path):
    raise UserError(f"config file {path!r} does not exist")
  if not path.endswith(".py"):
    raise UserError(f"config file {path!r} is not a Python file: give a study module, e.g. "
                    "experiments/lm.py:smoke")
  name = "scaling_lab_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    where = f" (line {e.lineno})" if e.lineno else ""
    raise UserError(f"config file {path!r} is not valid Python{where}: "
                    f"{e.msg}") from None
  return module


def load(spec: str, overrides=()) -> tuple[ml_collections.ConfigDict, object]:
  """'experiments/lm.py:smoke' + overrides -> (locked config, the study module).

  The module is checked against the study contract (research/study.py): the run functions
  always, the sweep functions too when the preset is a sweep.
  """
  path, _, preset = spec.partition(":")
  module = load_module(path)
  study.check(module, path, sweep=False)
  presets = getattr(module, "PRESETS", None)
  if presets is not None and preset not in presets:
    raise ConfigError("--config preset", preset, f"allowed presets in {path}: {', '.join(presets)}")
  cfg = module.get_config(preset)
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise UserError(f"{path}: get_config({preset!r}) returned {type(cfg).__name__}, not a "
                    "ml_collections.ConfigDict")
  if study.is_sweep(cfg):
    study.check(module, path, sweep=True)
  cfg.lock()
  apply_overrides(cfg, overrides)
  resolve = getattr(module, "resolve", None)
  if callable(resolve):  # a study's completion of the config from files (a data set's identity)
    resolve(cfg)
  study.check_config(cfg)
  return cfg, module


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """A locked config from `to_dict`'s output (JSON lists back to tuples); same run id."""

  def convert(x):
    if isinstance(x, dict):
      return ml_collections.ConfigDict({k: convert(v) for k, v in x.items()})
    if isinstance(x, list):
      return tuple(convert(v) for v in x)
    return x

  cfg = convert(values)
  cfg.lock()
  return cfg


def _parse(field: str, text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(field, text, "expected a boolean (true or false)")
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    kind = type(current).__name__
    try:
      value = float(text) if isinstance(current, float) else _parse_int(text)
    except ValueError:
      raise ConfigError(field, text, f"expected {kind}") from None
    except OverflowError:  # int(float("inf"))
      value = math.inf
    if not math.isfinite(value):  # no field of any study means nan or inf
      raise ConfigError(field, text, f"expected a finite {kind}")
    return value
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # words: a,b or (a, b)
      inner = text.strip()
      if inner[:1] + inner[-1:] in ("()", "[]"):
        inner = inner[1:-1]
      value = tuple(s.strip() for s in inner.split(",") if s.strip())
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if current and all(_is_number(x) for x in current):  # a list of numbers stays one
      value = tuple(_list_number(field, text, x) for x in value)
    return value
  return text


def _list_number(field: str, text: str, x):
  """An element of a list of numbers: a number, or a word that reads as one (nan, 1e400 do not)."""
  if isinstance(x, str):
    try:
      x = float(x)
    except ValueError:
      pass
  if not (_is_number(x) and math.isfinite(x)):
    shown = x if isinstance(x, str) else repr(x)
    raise ConfigError(field, text, f"expected a list of finite numbers, not {shown!r}")
  return x


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_int(text: str) -> int:
  value = float(text)  # accepts 1e6
  if value != int(value):
    raise ValueError(text)
  return int(value)


def apply_overrides(cfg: ml_collections.ConfigDict, overrides) -> None:
  for item in overrides:
    field, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(field, None, "overrides look like --config.a.b=VALUE")
    node, keys = cfg, field.split(".")
    for depth, key in enumerate(keys):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        where = ".".join(keys[:depth]) or "config"
        allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(field, text, f"no such field; fields of {where}: {', '.join(allowed)}")
      if depth < len(keys) - 1:
        node = node[key]
    current = node[keys[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(field, text, "is a group of fields, set one of its fields instead")
    with cfg.unlocked():
      node[keys[-1]] = _parse(field, text, current)


def preset(get_config, record: dict) -> ml_collections.ConfigDict:
  """A sweep's config again from its sweep.json record: the preset with the launch's overrides."""
  cfg = get_config(record["preset"])
  apply_overrides(cfg, record.get("overrides", []))
  return cfg


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
  return json.loads(cfg.to_json(sort_keys=True))


def run_id(cfg: ml_collections.ConfigDict) -> str:
  """A short stable id of the resolved config."""
  return run_id_of(to_dict(cfg))


def run_id_of(values: dict) -> str:
  """The run id of a config as `to_dict` gives it (and config.json holds it)."""
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def run_groups(c: ml_collections.ConfigDict, *, log_every: int, eval_every: int,
               checkpoint_every: int, keep_checkpoints: int) -> None:
  """Adds the groups every study's config has, whatever it trains: `mesh` (data-parallel over
  every device), `loop` (logging, evaluation and checkpoint intervals; branches) and `tracking`
  (progress bar, wandb, FLOP convention, peak)."""
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1,
                                          axis_names=("data", "fsdp", "model")))
  c.loop = ml_collections.ConfigDict(dict(
      log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every,
      keep_checkpoints=keep_checkpoints, async_checkpoints=True, keep_steps=(), init_from=""))
  c.tracking = ml_collections.ConfigDict(dict(
      progress=True, wandb_project="", wandb_mode="offline", flop_convention="full",
      peak_flops=0.0))
