"""python -m launch fit TABLE [TABLE ...] --n COL (--d COL | --c COL) --loss COL [options]

Fits Chinchilla's approaches to any table of runs (CSV, a JSONL run log, or anything pandas reads),
prints the law with bootstrap intervals and the compute-optimal allocation, and writes fit.json and
figures to --out. Bad input exits with code 2 and a message naming the column or rows; a fit that
did not converge says so and exits with code 1.

Several tables are fitted as one (their rows together: a joint fit over two sweeps of one family,
such as `results/chinchilla/cpu/runs.csv results/kaplan/cpu/runs.csv --where role=point`).

The laws of 2024 are modes with their own options, each in its own module (MODES below):
`--two-step`, `--hparams`, `--overtraining`, `--loss-to-loss`; docs/fitting.md has one section each.
"""

import importlib

import os

import pandas as pd

from launch import options
from research.errors import UserError
from research.fileio import atomic_write_json, atomic_write_text, writable_folder
from research.scaling import report as report_lib
from research.scaling import table


def _parser() -> options.Parser:
  D = report_lib.DEFAULTS
  p = options.Parser(prog="python -m launch fit", description=__doc__.split("\n\n")[1])
  add_shared(p, "CSV, JSONL run log, or any pandas-readable file, or a sweep folder (its runs' "
             "evaluations as curves: columns run, step, N, N_nonemb, D, C, the --loss metric, "
             "schedule, seed)", bootstrap=D["bootstrap"])
  p.add_argument("--n", required=True, help="column of parameter counts N (used as given)")
  p.add_argument("--d", help="column of training tokens D")
  p.add_argument("--c", help="column of training FLOPs C (D = C / (k N) when --d is absent)")
  p.add_argument("--loss", required=True, help="column of losses (nats per token)")
  p.add_argument("--unique", help="column of unique tokens (data-constrained runs)")
  p.add_argument("--run", help="column of run ids: rows of one run share a training curve and "
                 "are resampled together by the bootstrap")
  p.add_argument("--seeds", metavar="COLUMN",
                 help="column of training seeds: runs with the same N and D are replicates of one "
                 "design point, and the bootstrap resamples the seeds within each point (without "
                 "it, it resamples the runs, which drops design points)")
  curves = [  # (flag, help, argparse options): fits from whole training curves
      ("--curves", "the rows are training curves (--run the run, --d the tokens at each "
       "evaluation): every evaluation is a point, less the cut and the flagged", {}),
      ("--curve-cut", "drop points below this fraction of their run's final D (default 0.1)",
       dict(type=options.number(0, 1, high_open=True), default=0.1)),
      ("--schedule", "column of learning-rate schedules: intermediate points of runs whose "
       "schedule is not constant are flagged and dropped ('schedule' in a sweep folder)",
       dict(metavar="COLUMN")),
      ("--keep-decaying", "keep the flagged points of decaying schedules", {}),
  ]
  for flag, text, kwargs in curves:
    kwargs = kwargs or dict(action="store_true")
    p.add_argument(flag, help=text if flag == "--curves" else f"with --curves: {text}", **kwargs)
  p.add_argument("--flops-per-param-token", type=options.number(0, low_open=True),
                 default=6.0,
                 help="k in C = k N D (default 6)")
  p.add_argument("--n-convention", default="as given",
                 help="what N counts, written into every output (e.g. 'total', 'non-embedding')")
  p.add_argument("--approach", default="3", choices=["1", "2", "3", "all"])
  p.add_argument("--form", default="hoffmann", choices=["hoffmann", "muennighoff"],
                 help="the parametric law of Approach 3 (muennighoff needs --unique)")
  p.add_argument("--drop-highest-loss", type=options.integer(least=0), default=0,
                 help="drop this many highest-loss rows first (Besiroglu et al. drop 5)")
  p.add_argument("--delta", type=options.number(0, low_open=True), default=D["delta"],
                 help="Huber delta on log L")
  p.add_argument("--mean", action="store_true",
                 help="average the Huber terms instead of summing them (not recommended)")
  p.add_argument("--likelihood", action="store_true",
                 help="Epoch's Huber likelihood with a fitted scale instead of the plain sum")
  p.add_argument("--keep", type=options.integer(least=0), default=D["keep"],
                 help="starts refined after the cheap first pass over the grid (0: all)")
  p.add_argument("--maxiter", type=options.integer(least=1), default=D["maxiter"],
                 help="L-BFGS iteration limit per start")
  p.add_argument("--heldout", type=options.integer(least=0), default=D["heldout"],
                 help="largest budgets held out for the prediction check (0: none)")
  p.add_argument("--budget-tolerance-dex", type=options.number(0),
                 default=D["budget_tolerance_dex"],
                 help="runs whose log10 C differ by less than this share an IsoFLOP budget")
  p.add_argument("--drop-small-budgets", action="store_true",
                 help="Approach 2: skip budgets with fewer than three sizes instead of failing")
  p.add_argument("--window", type=_window, default=D["window"],
                 help="Approach 2: fit each parabola within this factor in N of the best run, "
                 f"at least --min-sizes sizes (default {D['window']:g}), or 'all': every size")
  p.add_argument("--min-sizes", type=options.integer(least=3), default=D["min_sizes"],
                 help=f"Approach 2: sizes a windowed parabola takes at least (default "
                 f"{D['min_sizes']})")
  p.add_argument("--minimum", default="parabola", choices=["parabola", "akima"],
                 help="Approach 2: locate each budget's minimum with a parabola (Hoffmann et al.; "
                 "robust to noise) or an Akima spline through every size (Porian et al.; for "
                 "clean sweeps with one loss per size)")
  p.add_argument("--budgets", default=",".join(f"{b:g}" for b in report_lib.DEFAULT_BUDGETS),
                 help="compute budgets (FLOPs, comma-separated) for the allocation table")
  return p


def add_shared(p: options.Parser, table_help: str, *, bootstrap: int | None = 200,
               plots: bool = True) -> options.Parser:
  """The options the fit modes share: the tables, --where, the bootstrap's (unless `bootstrap` is
  None), --out and --no-plots (unless `plots` is False)."""
  p.add_argument("table", nargs="+", help=table_help + "; several are fitted together (their "
                 "rows concatenated)")
  p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                 help="keep only rows whose COLUMN equals VALUE, or with COLUMN!=VALUE differs "
                 "from it (repeatable: all must hold; an empty cell is ''), e.g. role=point for "
                 "a study's runs.csv")
  if bootstrap is not None:
    p.add_argument("--bootstrap", type=options.integer(least=0), default=bootstrap,
                   help=f"bootstrap resamples (0: none; default {bootstrap})")
    p.add_argument("--ci", type=options.number(0, 1, low_open=True, high_open=True),
                   default=report_lib.DEFAULTS["ci"], help="bootstrap interval coverage")
    p.add_argument("--seed", type=options.integer(least=0), default=report_lib.DEFAULTS["seed"],
                   help="the bootstrap's random seed")
  p.add_argument("--out", help="folder for fit.json" + (" and figures" if plots else ""))
  if plots:
    p.add_argument("--no-plots", action="store_true")
  return p


def run_mode(argv: list[str], parser, analyse, format_report, figure, stem: str) -> dict:
  """A fit mode's command: parse, check --out, fit (`analyse(args)`, a dict with `report`),
  print; then with --out the figure (`figure(done, args)`: a Figure or None) as STEM.png/.pdf
  and fit.json last, so a folder with fit.json is complete. Returns what `analyse` returned."""
  args = parser().parse_args(argv)
  if args.out:
    writable_folder(args.out, "--out", create=False)  # an existing file is refused there too
  done = analyse(args)
  print(format_report(done["report"]), flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    written = ["fit.json"]
    fig = None if args.no_plots else figure(done, args)
    if fig is not None:
      from research.scaling import plots
      written += [os.path.basename(p) for p in plots.save(fig, os.path.join(args.out, stem))]
    atomic_write_json(os.path.join(args.out, "fit.json"), done["report"])
    print(f"\nwrote {', '.join(written)} to {args.out}")
  return done


def _window(text: str):
  """--window: a factor >= 1, or 'all' (None: every size of a budget)."""
  return None if text.strip().lower() == "all" else options.number(1)(text)


_window.__name__ = "window"  # argparse names the type in its messages


def _read(path: str, metric: str | None) -> pd.DataFrame:
  """A table file, or a sweep folder's curves (research.scaling.curves.sweep_curves)."""
  if os.path.isdir(path):
    from research.scaling import curves
    return curves.sweep_curves(path, metric or "val_loss")
  return table.read_table(path)


def _rows(paths: list[str], where: list[str], metric: str | None = None) -> pd.DataFrame:
  """The tables' rows together, then the --where filters; UserError names a missing column, a
  malformed filter or a filter that keeps nothing."""
  df = pd.concat([_read(path, metric) for path in paths], ignore_index=True)
  for condition in where:
    df = df[holds(df, condition, "--where")]
    if df.empty:
      raise UserError(f"--where {condition!r}: no rows left")
  return df.reset_index(drop=True)


def holds(df: pd.DataFrame, condition: str, flag: str) -> pd.Series:
  """The rows where COLUMN=VALUE (or COLUMN!=VALUE) holds; an empty cell reads as ''."""
  column, sep, value = condition.partition("=")
  negate = column.endswith("!")
  column = column[:-1] if negate else column
  if not sep or not column:
    raise UserError(f"{flag} {condition!r}: expected COLUMN=VALUE or COLUMN!=VALUE")
  if column not in df.columns:
    raise UserError(f"{flag} {condition!r}: no column {column!r}; the table has "
                    f"{', '.join(map(str, df.columns))}")
  cells = df[column].astype(str).where(df[column].notna(), "")
  return (cells == value) != negate


def _curve_rows(args, df: pd.DataFrame) -> tuple:
  """--curves: the curve points and their record; a sweep folder without --curves: each run's
  final evaluation. (rows, record or None)"""
  from research.scaling import curves
  sweep = any(os.path.isdir(path) for path in args.table)
  if not args.curves:
    if args.schedule or args.keep_decaying:
      raise UserError("--schedule and --keep-decaying need --curves")
    return (curves.final_points(df, "run", by="D") if sweep else df), None
  if not args.run or not args.d:
    if not sweep:
      raise UserError("--curves needs --run (the run of each row) and --d (its tokens)")
  run, d = args.run or "run", args.d or "D"
  schedule = args.schedule or ("schedule" if sweep else None)
  return curves.curve_points(df, run=run, d=d, cut=args.curve_cut, schedule=schedule,
                             keep_decaying=args.keep_decaying)


def _load_runs(args) -> tuple:
  df, record = _curve_rows(args, _rows(args.table, args.where, args.loss))
  if args.drop_highest_loss:
    if args.loss not in df.columns:
      table.runs_from_table(df, n=args.n, d=args.d, c=args.c, loss=args.loss)  # names the column
    df = df.loc[df[args.loss].rank(method="first", ascending=False) > args.drop_highest_loss]
    df = df.reset_index(drop=True)
  sweep = any(os.path.isdir(path) for path in args.table)
  run = args.run or ("run" if sweep and args.curves else None)
  return table.runs_from_table(df, n=args.n, loss=args.loss, d=args.d, c=args.c,
                               unique=args.unique, run=run, seed=args.seeds,
                               flops_per_param_token=args.flops_per_param_token,
                               n_convention=args.n_convention), record


def _options(args) -> dict:
  budgets = report_lib.parse_flops(args.budgets, "--budgets")
  return dict(approaches=[1, 2, 3] if args.approach == "all" else [int(args.approach)],
              form=args.form,
              delta=args.delta, reduce="mean" if args.mean else "sum", likelihood=args.likelihood,
              keep=args.keep or None, maxiter=args.maxiter, bootstrap=args.bootstrap,
              ci=args.ci, seed=args.seed,
              heldout=args.heldout, budget_tolerance_dex=args.budget_tolerance_dex,
              drop_small_budgets=args.drop_small_budgets, window=args.window,
              min_sizes=args.min_sizes, minimum=args.minimum, budgets=budgets)


MODES = {
    "--two-step": "launch.fit_two_step",
    "--hparams": "launch.fit_hparams",
    "--overtraining": "launch.fit_overtraining",
    "--loss-to-loss": "launch.fit_loss_to_loss",
}


def main(argv: list[str]) -> int:
  """A mode flag hands the command line (less the flag) to its module; otherwise Chinchilla."""
  modes = [a for a in argv if a in MODES]
  if len(modes) > 1:
    raise UserError(f"python -m launch fit: {' and '.join(modes)} are different fits; "
                    "give one of them")
  if modes:
    rest = [a for a in argv if a != modes[0]]
    return int(importlib.import_module(MODES[modes[0]]).main(rest) or 0)
  return _chinchilla(argv)


def _chinchilla(argv: list[str]) -> int:
  """The fit, then its files: --out is checked before the fit, and fit.json is written last, so
  a folder with fit.json holds the whole report."""
  args = _parser().parse_args(argv)
  if args.out:
    writable_folder(args.out, "--out", create=False)  # an existing file is refused there too
  runs, curve_record = _load_runs(args)
  report = report_lib.analyse(runs, _options(args))
  report["table"] = args.table[0] if len(args.table) == 1 else args.table
  if args.where:
    report["where"] = args.where
  if curve_record:
    from research.scaling import curves
    report["curves"] = curve_record
    print("\n".join(curves.describe(curve_record)), flush=True)
  print(report_lib.format_report(report), flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    written = []
    if not args.no_plots:
      from research.scaling import plots
      written += [os.path.basename(p) for p in plots.report_figures(runs, report, args.out)]
    saved = {k: {kk: vv for kk, vv in v.items() if kk != "bootstrap_samples"}
             for k, v in report["approaches"].items()}
    atomic_write_text(os.path.join(args.out, "summary.txt"),
                      report_lib.format_report(report) + "\n")
    atomic_write_json(os.path.join(args.out, "fit.json"), dict(report, approaches=saved))
    written = ["fit.json", "summary.txt"] + written
    print(f"\nwrote {', '.join(written)} to {args.out}")
  converged = all(r.get("converged", True) for r in report["approaches"].values())
  return 0 if converged else 1
