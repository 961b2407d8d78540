"""python -m launch fit TABLE [TABLE ...] --n COL (--d COL | --c COL) --loss COL [options]

Fits Chinchilla's approaches to any table of runs (CSV, a JSONL run log, or anything pandas reads),
prints the law with bootstrap intervals and the compute-optimal allocation, and writes fit.json and
figures to --out. Bad input exits with code 2 and a message naming the column or rows; a fit that
did not converge says so and exits with code 1.

Several tables are fitted as one (their rows together: a joint fit over two sweeps of one family,
such as `results/chinchilla/cpu/runs.csv results/kaplan/cpu/runs.csv --where role=point`).
"""

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
  p.add_argument("table", nargs="+", help="CSV, JSONL run log, or any pandas-readable file; "
                 "several are fitted together (their rows concatenated)")
  p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                 help="keep only rows whose COLUMN equals VALUE (repeatable: all must hold), "
                 "e.g. role=point for a study's runs.csv")
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
  p.add_argument("--bootstrap", type=options.integer(least=0), default=D["bootstrap"],
                 help="bootstrap resamples (0: none)")
  p.add_argument("--ci", type=options.number(0, 1, low_open=True, high_open=True),
                 default=D["ci"], help="bootstrap interval coverage")
  p.add_argument("--seed", type=options.integer(least=0), default=D["seed"])
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
  p.add_argument("--out", help="folder for fit.json and figures")
  p.add_argument("--no-plots", action="store_true")
  return p


def _window(text: str):
  """--window: a factor >= 1, or 'all' (None: every size of a budget)."""
  return None if text.strip().lower() == "all" else options.number(1)(text)


_window.__name__ = "window"  # argparse names the type in its messages


def _rows(paths: list[str], where: list[str]) -> pd.DataFrame:
  """The tables' rows together, then the --where filters; UserError names a missing column, a
  malformed filter or a filter that keeps nothing."""
  df = pd.concat([table.read_table(path) for path in paths], ignore_index=True)
  for condition in where:
    column, sep, value = condition.partition("=")
    if not sep or not column:
      raise UserError(f"--where {condition!r}: expected COLUMN=VALUE")
    if column not in df.columns:
      raise UserError(f"--where {condition!r}: no column {column!r}; the table has "
                      f"{', '.join(map(str, df.columns))}")
    df = df[df[column].astype(str) == value]
    if df.empty:
      raise UserError(f"--where {condition!r}: no rows left")
  return df.reset_index(drop=True)


def _load_runs(args) -> table.Runs:
  df = _rows(args.table, args.where)
  if args.drop_highest_loss:
    if args.loss not in df.columns:
      table.runs_from_table(df, n=args.n, d=args.d, c=args.c, loss=args.loss)  # names the column
    df = df.loc[df[args.loss].rank(method="first", ascending=False) > args.drop_highest_loss]
    df = df.reset_index(drop=True)
  return table.runs_from_table(df, n=args.n, loss=args.loss, d=args.d, c=args.c,
                               unique=args.unique, run=args.run, seed=args.seeds,
                               flops_per_param_token=args.flops_per_param_token,
                               n_convention=args.n_convention)


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


def main(argv: list[str]) -> int:
  """The fit, then its files: --out is checked before the fit, and fit.json is written last, so
  a folder with fit.json holds the whole report."""
  args = _parser().parse_args(argv)
  if args.out:
    writable_folder(args.out, "--out", create=False)  # an existing file is refused there too
  runs = _load_runs(args)
  report = report_lib.analyse(runs, _options(args))
  report["table"] = args.table[0] if len(args.table) == 1 else args.table
  if args.where:
    report["where"] = args.where
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
