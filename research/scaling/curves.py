"""Points from whole training curves: a run's intermediate evaluations as fit points, with the cut
of each curve's early part stated, and intermediate points of decaying schedules flagged.

    points, record = curve_points(rows, run="run", d="D", cut=0.1, schedule="schedule")
    final = final_points(rows, run="run", average=["loss"], last=5)   # one row per run
    smooth = smoothed(rows, run="run", columns=["loss", "acc"], window=5)

Choshen et al. 2024 ("A Hitchhiker's Guide to Scaling Law Estimation") fit laws to every
evaluation along each run, less the early part of the curve. Hoffmann et al. 2022 (App. A, Fig. A1)
warn that an intermediate point of a cosine run set for a longer horizon lies above the loss of a
run trained to that many tokens with a matched schedule: such points are flagged, and kept only when
asked for. A run's rows are its curve in order of D; its final point is the row of its largest D.
"""

import os

import numpy as np
import pandas as pd

from research import store, tracking
from research.errors import UserError

CONSTANT = ("constant",)  # schedules whose intermediate points are not biased by a decay to come


def _ordered(rows: pd.DataFrame, run: str, by: str | None) -> pd.DataFrame:
  for column in (run,) + ((by,) if by else ()):
    if column not in rows:
      raise UserError(f"column {column!r} is not in the table; columns are: "
                      f"{', '.join(map(repr, rows.columns))}")
  order = [run, by] if by else [run]
  return rows.sort_values(order, kind="stable") if by else rows


def final_points(rows: pd.DataFrame, run: str, *, by: str | None = None,
                 average: list | None = None, last: int = 1) -> pd.DataFrame:
  """One row per run: its last row (by `by`, else the table's order), with the `average`
  columns replaced by their mean over the run's last `last` rows (Bhagia et al. 2024 average the
  last 5 evaluations of a run for its final point)."""
  rows = _ordered(rows, run, by)
  groups = rows.groupby(run, sort=False)
  out = groups.tail(1).set_index(run)
  for column in average or []:
    out[column] = groups[column].apply(lambda v: v.tail(last).mean())
  return out.reset_index()


def smoothed(rows: pd.DataFrame, run: str, columns: list, *, by: str | None = None,
             window: int = 1, skip_first: float = 0.0) -> pd.DataFrame:
  """Every row of every run, the first `skip_first` fraction of each run's rows dropped, then
  `columns` replaced by their moving average over `window` rows (fewer at a curve's start)."""
  rows = _ordered(rows, run, by)
  parts = []
  for _, curve in rows.groupby(run, sort=False):
    curve = curve.iloc[int(np.ceil(skip_first * len(curve))):].copy()
    for column in columns:
      curve[column] = curve[column].rolling(window, min_periods=1).mean()
    parts.append(curve)
  return pd.concat(parts, ignore_index=True)


def curve_points(rows: pd.DataFrame, *, run: str, d: str, cut: float = 0.1,
                 schedule: str | None = None, keep_decaying: bool = False) -> tuple:
  """(points, record): the rows kept as fit points and what happened to the others.

  A row is cut when its D is below `cut` times its run's final D. A row that is not its run's
  final point is flagged when its run's schedule (column `schedule`) decays to the run's end
  (any schedule but constant, e.g. cosine or WSD before its cooldown); flagged rows are dropped
  unless `keep_decaying`. Without a schedule column no row can be flagged, and the record says so.
  """
  if not 0.0 <= cut < 1.0:
    raise UserError(f"the curve cut {cut}: must be in [0, 1): the fraction of each run's final "
                    "tokens below which its points are dropped")
  rows = _ordered(rows, run, None).reset_index(drop=True)
  tokens = pd.to_numeric(rows[d], errors="coerce") if d in rows else None
  if tokens is None or not np.all(np.isfinite(tokens)) or not np.all(tokens > 0):
    raise UserError(f"column {d!r} (D, tokens) must be present and positive on every row of a "
                    "curve table")
  final_d = tokens.groupby(rows[run]).transform("max")
  is_final = tokens == final_d
  early = tokens < cut * final_d
  if schedule is not None and schedule not in rows:
    raise UserError(f"column {schedule!r} (learning-rate schedule) is not in the table")
  decaying = (~rows[schedule].astype(str).str.lower().isin(CONSTANT) if schedule
              else pd.Series(False, index=rows.index))
  flagged = decaying & ~is_final & ~early
  keep = ~early & (~flagged | keep_decaying)
  record = dict(cut=cut, runs=int(rows[run].nunique()), rows=int(len(rows)),
                dropped_early=int(early.sum()), flagged_decaying=int(flagged.sum()),
                flagged_kept=bool(keep_decaying), points=int(keep.sum()),
                schedule_column=schedule,
                flagged_runs=sorted(map(str, rows.loc[flagged, run].unique()))[:20])
  if not keep.any():
    raise UserError(f"the curve cut and schedule flags leave no points of {len(rows)} rows")
  return rows[keep].reset_index(drop=True), record


def describe(record: dict) -> list[str]:
  """The curve selection in words, for the printed report."""
  lines = [f"curves: {record['rows']} evaluations of {record['runs']} runs; points before "
           f"{record['cut']:g} x each run's final D dropped ({record['dropped_early']}); "
           f"{record['points']} points fitted"]
  if record["schedule_column"] is None:
    lines.append("  no schedule column: intermediate points of decaying (cosine) schedules "
                 "cannot be flagged; give --schedule")
  elif record["flagged_decaying"]:
    verb = "KEPT (--keep-decaying)" if record["flagged_kept"] else "dropped"
    lines.append(f"  {record['flagged_decaying']} intermediate points of runs whose learning rate "
                 f"decays to their end (not constant) {verb}: they lie above a matched-schedule "
                 "run's loss (Hoffmann et al. 2022, App. A)")
  return lines


def sweep_curves(workdir: str, metric: str = "val_loss") -> pd.DataFrame:
  """A sweep folder's finished runs as a curve table: one row per evaluation (run, step, N,
  N_nonemb, D, C, the metric, schedule, seed), D = step x the run's tokens per step."""
  record = store.read_sweep(workdir)
  rows = []
  for r in record["runs"]:
    folder = store.run_dir(workdir, r["run"])
    s = store.summary(folder)
    if not s or not s.get("steps"):
      continue
    config = (store.read_config(folder) or {}).get("config", {})
    per_step = store.units(s) / s["steps"]
    flops_per_unit = s["flops"] / store.units(s)
    for e in tracking.read_metrics(os.path.join(folder, store.METRICS), kind="eval"):
      if metric in e and e.get("step", 0) > 0:
        rows.append(dict(run=r["run"], step=e["step"], N=s["params_total"],
                         N_nonemb=s["params_non_embedding"], D=e["step"] * per_step,
                         C=e["step"] * per_step * flops_per_unit, **{metric: e[metric]},
                         schedule=config.get("train", {}).get("schedule", "unknown"),
                         seed=config.get("seed")))
  if not rows:
    raise UserError(f"sweep {workdir!r}: no finished run has evaluations of {metric!r}")
  return pd.DataFrame(rows)
