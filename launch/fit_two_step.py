"""python -m launch fit --two-step TABLE [TABLE ...] --n COL --d COL --task-loss COL [--metric COL]

Downstream prediction from a model ladder (Bhagia et al. 2024): step 1 fits a task loss of the
ladder's runs as a law of N and D, step 2 maps it to a metric by a sigmoid, and the chain
predicts the metric of a model from its N and D alone, with bootstrap intervals. Without
--metric, step 1 alone. The table holds every evaluation of every run (a run's rows are its
curve); with --files it is a manifest whose column names one file per run.

    python -m launch fit --two-step \\
        ../shared/data/scaling/olmo_ladder2024/ladder_runs_manifest.csv \\
        --files file --files-dir ladder-runs --where variant= --where xC!=0.5 \\
        --heldout model=3B --n N --d throughput/total_tokens \\
        --task-loss eval/downstream_bpb/hellaswag_val_rc_5shot_bpb \\
        --metric eval/downstream/hellaswag_val_rc_5shot_len_norm --smooth 5 \\
        --target 13202396160,5e12
"""

import os

import pandas as pd

from launch import fit as fit_cli
from launch import options
from launch.fit import _rows, holds
from research.errors import UserError
from research.scaling import ladder_forecast, table


def _end(text: str):
  """--chance / --upper: a number, or 'fit'."""
  return None if text.strip().lower() == "fit" else options.number()(text)


_end.__name__ = "number or 'fit'"


def _target(text: str) -> tuple:
  """--target N,D[,LABEL]."""
  parts = [p.strip() for p in text.split(",")]
  try:
    n, d = float(parts[0]), float(parts[1])
  except (ValueError, IndexError):
    raise options.argparse.ArgumentTypeError(
        f"{text!r}: expected N,D (e.g. 13202396160,5e12) or N,D,LABEL") from None
  if not (n > 0 and d > 0 and n < float("inf") and d < float("inf")):
    raise options.argparse.ArgumentTypeError(f"{text!r}: N and D must be finite and > 0")
  return n, d, parts[2] if len(parts) > 2 else f"N={n:.4g}, D={d:.4g}"


_target.__name__ = "target"


def _parser() -> options.Parser:
  p = options.Parser(prog="python -m launch fit --two-step",
                     description=__doc__.split("\n\n")[1])
  fit_cli.add_shared(p, "evaluations of the ladder's runs (CSV or any table launch fit reads), "
                     "or with --files a manifest of one file per run (--where filters its rows)")
  p.add_argument("--files", metavar="COLUMN",
                 help="the table is a manifest: COLUMN names each run's file (relative to the "
                 "manifest), whose rows are that run's evaluations; the manifest's columns are "
                 "repeated on them, and the run is named by its file")
  p.add_argument("--files-dir", metavar="DIR",
                 help="with --files: the folder the files are in, relative to the manifest "
                 "(default: the manifest's own folder)")
  p.add_argument("--heldout", action="append", default=[], metavar="COLUMN=VALUE",
                 help="runs (kept by --where) matching this are not fitted but predicted from "
                 "their N and D and compared with what they measured; repeatable (any may hold)")
  p.add_argument("--run", help="column of run ids (default: 'run' with --files)")
  p.add_argument("--n", required=True, help="column of parameter counts N")
  p.add_argument("--d", required=True, help="column of tokens D seen at each evaluation")
  p.add_argument("--task-loss", required=True, help="column of the task loss (e.g. bits per "
                 "byte of the answer, or a validation loss)")
  p.add_argument("--metric", help="column of the metric step 2 predicts (e.g. accuracy); "
                 "without it, step 1 alone")
  p.add_argument("--seeds", metavar="COLUMN",
                 help="column of training seeds: runs with the same N and final D are replicates")
  p.add_argument("--law", default="hoffmann", choices=sorted(ladder_forecast.LAWS),
                 help="step 1: hoffmann L(N, D) = E + A/N^alpha + B/D^beta (default), or "
                 "saturating L(C) = E + A C^-alpha with C = 6 N D")
  p.add_argument("--smooth", type=options.integer(least=1), default=1,
                 help="step 1: a run's final point averages its last K evaluations; step 2: a "
                 "moving average over K evaluations (Bhagia et al. use 5)")
  p.add_argument("--skip-first", type=options.number(0, 1, high_open=True), default=0.0,
                 help="step 2: drop this fraction of each run's first evaluations")
  p.add_argument("--chance", type=_end, default=None,
                 help="the sigmoid's lower end: a number (a task's chance accuracy), or 'fit' "
                 "(default: fitted, as Bhagia et al.)")
  p.add_argument("--upper", type=_end, default=1.0,
                 help="the sigmoid's upper end (default 1), or 'fit'")
  p.add_argument("--target", type=_target, action="append", default=[],
                 help="N,D[,LABEL] of a model to predict; repeatable")
  p.add_argument("--resample", default="auto", choices=["auto", "runs", "residuals"],
                 help="bootstrap: runs (seeds) within design points, or each step's residuals "
                 "with the design kept; auto: runs where some design point has two runs")
  return p


def _matches(df: pd.DataFrame, conditions: list[str]) -> pd.Series:
  """Rows where any --heldout condition holds."""
  hit = pd.Series(False, index=df.index)
  for condition in conditions:
    hit |= holds(df, condition, "--heldout")
  return hit


def _ladder(args) -> tuple:
  """(fitted rows, held-out rows): every evaluation, split by --heldout."""
  rows = _rows(args.table, args.where)
  held = _matches(rows, args.heldout) if args.heldout else pd.Series(False, index=rows.index)
  if args.files:
    base = os.path.join(os.path.dirname(os.path.abspath(args.table[0])), args.files_dir or "")
    rows = rows.assign(_heldout=held)
    rows = table.expand_files(rows, args.files, base)
    held = rows.pop("_heldout").astype(bool)
  if held.all():
    raise UserError("--heldout matches every run: nothing is left to fit")
  return rows[~held], rows[held]


def analyse(args) -> dict:
  if args.chance is not None and args.upper is not None and not args.chance < args.upper:
    raise UserError(f"--chance {args.chance:g} must be below --upper {args.upper:g}")
  fitted, held = _ladder(args)
  run = args.run or ("run" if args.files else None)
  if run is None:
    raise UserError("give --run (the column naming each row's run) or --files (one file per "
                    "run)")
  columns = dict(run=run, n=args.n, d=args.d, task_loss=args.task_loss, metric=args.metric,
                 smooth=args.smooth, skip_first=args.skip_first, seeds=args.seeds)
  law_rows, link_rows = ladder_forecast.ladder_points(fitted, **columns)
  heldout = ladder_forecast.ladder_points(held, **columns)[0] if len(held) else None
  report = ladder_forecast.forecast(law_rows, link_rows, args.target, heldout, law=args.law,
                                    chance=args.chance, upper=args.upper,
                                    resample=args.resample, n_boot=args.bootstrap,
                                    seed=args.seed, ci=args.ci)
  report.update(table=args.table, where=args.where, heldout=args.heldout, columns=columns,
                names=[args.task_loss, args.metric or "metric"])
  return dict(report=report, law_rows=law_rows, link_rows=link_rows)


def main(argv: list[str]) -> int:
  """Fit, print, then the figure and fit.json (launch.fit.run_mode); exit 1 when a step did not
  converge."""
  done = fit_cli.run_mode(
      argv, _parser, analyse,
      lambda report: ladder_forecast.format_forecast(report, *report["names"]),
      lambda d, args: ladder_forecast.figure(d["report"], d["law_rows"], d["link_rows"],
                                             *d["report"]["names"]), "forecast")
  chain = done["report"]["chain"]
  return 0 if chain["law"]["converged"] and (chain["link"] or {}).get("converged", True) else 1
