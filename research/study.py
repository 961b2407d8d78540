"""The study contract: what `launch` needs from an experiment module, checked when it is loaded.

A study is one Python file (one per study, in experiments/). Every study provides the functions
of `Study`; a study with sweep presets also provides those of `SweepStudy`. A sweep preset is a
config with a top-level `sweep` group (the grid it expands); `plan` turns it into complete per-run
configs, each a config that `recipe` can train on its own, with a stable run id (the hash of the
resolved config, `research.config.run_id`). Nothing in `launch/` or `research/train/` knows which
model a study trains: the loop gets a `research.train.recipe.Recipe`, the sweep gets configs and
sizes, and the study's own `analyze` turns the finished runs into tables, fits and figures.

A study may also provide `resolve(cfg)`, which `research.config.load` calls after the overrides:
it completes the config from files before the run id is taken (a prepared data set's tokenizer
and data hashes: research.recipes.lm.resolve).

Every config a study makes also carries the groups the loop reads (`seed`, `mesh`, `loop`,
`tracking`; research.train.recipe.LoopSpec), checked when the study is loaded:
`research.config.run_groups` adds them with their defaults.
"""

from typing import Protocol, runtime_checkable

import ml_collections

from research.errors import UserError

RUN_FUNCTIONS = ("get_config", "validate", "recipe")
SWEEP_FUNCTIONS = ("plan", "size", "analyze")


@runtime_checkable
class Study(Protocol):
  """One run.

  PRESETS: the preset names `get_config` accepts (a tuple; `launch` lists them on a typo).
  """

  def get_config(self, preset: str) -> ml_collections.ConfigDict:
    """The config of a preset: a run's, or a sweep's (with a top-level `sweep` group)."""

  def validate(self, cfg: ml_collections.ConfigDict) -> None:
    """Every check that needs no data and no compilation; raises research.errors.ConfigError."""

  def recipe(self, cfg: ml_collections.ConfigDict):
    """One run, as a research.train.recipe.Recipe: init, loss, batches by step, evaluators, facts,
    and the Report of what its summary and figure show. Loads the run's data; bad data is a
    UserError, raised before anything is written."""


@runtime_checkable
class SweepStudy(Study, Protocol):
  """A study whose presets include sweeps."""

  def plan(self, cfg: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """The per-run configs of a sweep preset, complete and deterministic (same sweep config, same
    list), in the order they should be trained."""

  def size(self, cfg: ml_collections.ConfigDict) -> dict:
    """One run's analytic size without data or compilation: N (total parameters), N_nonemb,
    D (training tokens or other units), C (training FLOPs), flop_convention, and optionally
    steps (the Slurm backend checks a time limit against the checkpoint interval with it)."""

  def analyze(self, workdir: str) -> dict:
    """Reads the finished runs of the sweep in `workdir` (research.store), writes runs.csv and the
    study's fits and figures there, and returns {name: path} of what it wrote."""


def check(module, path: str, *, sweep: bool) -> None:
  """One clear UserError when `module` lacks a function the contract asks for."""
  names = RUN_FUNCTIONS + (SWEEP_FUNCTIONS if sweep else ())
  missing = [n for n in names if not callable(getattr(module, n, None))]
  if missing:
    kind = "a sweep study" if sweep else "a study"
    raise UserError(f"{path} is not {kind}: it lacks {', '.join(f'{n}()' for n in missing)} "
                    "(the study contract is in research/study.py and docs/sweeps.md)")


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """A one-line ConfigError when the config lacks a group or field the loop reads."""
  from research.train.recipe import LoopSpec
  LoopSpec.from_config(cfg)


def is_sweep(cfg: ml_collections.ConfigDict) -> bool:
  return "sweep" in cfg
