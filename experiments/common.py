"""What every study shares: the plan expander and the writer of an analysis's files."""

import os

import ml_collections

from research import config as config_lib
from research import store
from research.errors import require
from research.fileio import atomic_write_json, atomic_write_text


def expand(c: ml_collections.ConfigDict, changes) -> list[ml_collections.ConfigDict]:
  """The plan skeleton: one locked run config per entry of `changes`, each the sweep preset `c`
  without its sweep group, changed by `change(run)` (a function of the unlocked run config)."""
  base = config_lib.to_dict(c)
  del base["sweep"]
  runs = []
  for change in changes:
    run = config_lib.from_dict(base)
    with run.unlocked():
      change(run)
    runs.append(run)
  return runs


MAX_SIZES = 100  # model sizes per sweep: more is a typo (sizes=1e15), not a ladder


def require_sizes(sizes, least: int, why: str) -> None:
  """sweep.sizes: an integer in [least, MAX_SIZES]."""
  require(isinstance(sizes, int) and least <= sizes <= MAX_SIZES, "sweep.sizes", sizes,
          f"must be an integer in [{least}, {MAX_SIZES}]: {why}")


def checked_sweep(c: ml_collections.ConfigDict, validate):
  """`validate(c)` (the model family's checks), then c's sweep group, or None for one run's
  config (a plan's runs have none): the start of a sweep study's validate."""
  validate(c)
  return c.get("sweep")


class Outputs:
  """The files an analysis writes into a sweep folder, atomically, and {name: path} of them."""

  def __init__(self, workdir: str):
    self.workdir, self.paths = workdir, {}

  def path(self, name: str) -> str:
    self.paths[name] = os.path.join(self.workdir, name)
    return self.paths[name]

  def csv(self, name: str, table) -> None:
    atomic_write_text(self.path(name), "" if table.columns.empty else table.to_csv(index=False))

  def runs_csv(self, table) -> None:
    self.csv(store.RUNS_CSV, table)

  def figure(self, fig, stem: str) -> None:
    """stem.png and stem.pdf (research.scaling.plots.save); nothing for no figure."""
    if fig is None:
      return
    from research.scaling import plots
    self.saved(plots.save(fig, os.path.join(self.workdir, stem)))

  def saved(self, paths) -> None:
    """Files a library function wrote into the folder itself (e.g. research.scaling.plots.
    report_figures)."""
    self.paths.update({os.path.basename(path): path for path in paths})

  def fit(self, record: dict, render=None) -> dict:
    """fit.json, and report.md (`render(record)`) when given, written last; returns the paths."""
    atomic_write_json(self.path("fit.json"), record)
    if render is not None:
      atomic_write_text(self.path("report.md"), render(record))
    return self.paths
