"""python -m launch fit --overtraining TABLE [TABLE ...] --n COL (--m COL | --d COL) --loss COL

Fits the over-training law of Gadre et al. 2024 (arXiv 2403.08540), L = a N^eta + b 6^(eta/2)
(M N)^eta + E with M = D / N, and, with --error, their link from loss to average top-1 error,
Err = epsilon - k exp(-gamma L), the same way as their code (research/scaling/overtraining.py).
It prints the constants, the predictions at each --predict N:M (the error from the predicted
loss) and, where the table has a row at that N and M, the relative errors; --out gets fit.json.
Bad input exits with code 2 and one line; a fit that did not converge exits with code 1.

    python -m launch fit --overtraining ../shared/data/scaling/gadre2024/gadre_summary.csv \\
        --where dataset_name=rpj --n N --m tok_mult --loss loss_c4_val \\
        --fit-rows in_default_loss_fit --error err_avg_subset \\
        --error-fit-rows in_default_error_fit --predict 1439795200:640 --predict 6889410560:20
"""

import argparse
import os

import numpy as np
import pandas as pd

from launch import options
from launch.fit import _rows, add_shared
from research.errors import UserError
from research.fileio import atomic_write_json, writable_folder
from research.scaling import overtraining as ot
from research.scaling import table

PROG = "python -m launch fit --overtraining"
MATCH_RTOL = 1e-6  # a --predict point is the table's row when N and M agree to this


def _point(text: str) -> tuple[float, float]:
  """--predict N:M: two positive finite numbers."""
  n_text, sep, m_text = text.partition(":")
  if not sep:
    raise argparse.ArgumentTypeError(f"{text!r}: expected N:M, e.g. 1.4e9:640")
  positive = options.number(0, low_open=True)
  return positive(n_text), positive(m_text)


_point.__name__ = "N:M"  # argparse names the type in its messages


def _parser() -> options.Parser:
  p = options.Parser(prog=PROG, description=__doc__.split("\n\n")[1])
  add_shared(p, "CSV or any table `python -m launch fit` reads", bootstrap=None, plots=False)
  p.add_argument("--n", required=True, help="column of parameter counts N")
  p.add_argument("--m", help="column of token multipliers M = D / N")
  p.add_argument("--d", help="column of training tokens D (M = D / N; when --m is absent)")
  p.add_argument("--loss", required=True, help="column of losses (nats per token)")
  p.add_argument("--fit-rows", metavar="COL",
                 help="0/1 column: the rows the loss law is fitted on (default: every row)")
  p.add_argument("--error", metavar="COL", help="column of average top-1 errors (fractions): "
                 "fits the link from loss to error")
  p.add_argument("--error-fit-rows", metavar="COL",
                 help="0/1 column: the rows the error link is fitted on (default: --fit-rows)")
  p.add_argument("--predict", action="append", default=[], type=_point, metavar="N:M",
                 help="predict the loss (and error) of N parameters at token multiplier M "
                 "(repeatable)")
  p.add_argument("--maxfev", type=options.integer(least=1), default=ot.MAXFEV,
                 help=f"curve_fit's evaluation limit per start (default {ot.MAXFEV})")
  return p


def _flags(df: pd.DataFrame, column: str | None, option: str) -> np.ndarray:
  """The rows a 0/1 column selects (every row without one); UserError for anything else."""
  if column is None:
    return np.ones(len(df), bool)
  if column not in df.columns:
    raise UserError(f"{option} {column!r}: no such column; the table has "
                    f"{', '.join(map(str, df.columns))}")
  values = pd.to_numeric(df[column], errors="coerce").astype(np.float64)
  bad = np.flatnonzero(~values.isin([0, 1]).to_numpy()) + 1
  if len(bad):
    raise UserError(f"{option} {column!r}: row {bad[0]} is {df[column].iloc[bad[0] - 1]!r}; "
                    "every value must be 0 or 1")
  return values.to_numpy() == 1


def _inputs(args) -> tuple[pd.DataFrame, dict]:
  """The rows after --where and their checked columns: N, M, loss and (with --error) error."""
  if (args.m is None) == (args.d is None):
    raise UserError(f"{PROG}: give the token multiplier column (--m) or the tokens column "
                    f"(--d), {'not both' if args.m else 'neither was given'}")
  if args.error_fit_rows is not None and args.error is None:
    raise UserError(f"{PROG}: --error-fit-rows selects the rows of the error fit; give the "
                    "error column (--error) too")
  df = _rows(args.table, args.where)
  cols = dict(N=table._column(df, args.n, "N, parameters"),
              loss=table._column(df, args.loss, "loss"))
  if args.m is not None:
    cols["M"] = table._column(df, args.m, "M, token multiplier")
  else:
    cols["M"] = table._column(df, args.d, "D, tokens") / cols["N"]
  if args.error is not None:
    cols["error"] = table._column(df, args.error, "error, top-1")
  return df, cols


def _fits(args, df: pd.DataFrame, cols: dict) -> dict:
  """The loss law on --fit-rows and the error link on --error-fit-rows."""
  loss_rows = _flags(df, args.fit_rows, "--fit-rows")
  fits = dict(loss=ot.fit_loss(cols["N"][loss_rows], cols["M"][loss_rows],
                               cols["loss"][loss_rows], maxfev=args.maxfev))
  fits["loss"]["fit_rows"] = args.fit_rows
  if args.error is not None:
    option = "--error-fit-rows" if args.error_fit_rows else "--fit-rows"
    error_rows = _flags(df, args.error_fit_rows or args.fit_rows, option)
    fits["error"] = ot.fit_error(cols["loss"][error_rows], cols["error"][error_rows],
                                 maxfev=args.maxfev)
    fits["error"]["fit_rows"] = args.error_fit_rows or args.fit_rows
  return fits


def _predictions(points, fits: dict, cols: dict) -> list[dict]:
  """Each --predict point's loss (and error) and, for the one row of the table at its N and M,
  the actual values and relative errors."""
  out = []
  error_params = fits["error"]["params"] if "error" in fits else None
  for n, m in points:
    got = {k: float(v) for k, v in ot.predict(fits["loss"]["params"], n, m, error_params).items()}
    row = dict(N=n, M=m, predicted=got)
    match = np.flatnonzero(np.isclose(cols["N"], n, rtol=MATCH_RTOL, atol=0)
                           & np.isclose(cols["M"], m, rtol=MATCH_RTOL, atol=0))
    row["table_rows"] = [int(i) + 1 for i in match]
    if len(match) == 1:
      row["actual"] = {k: float(cols[k][match[0]]) for k in got}
      row["relative_error"] = {k: float(ot.relative_error(got[k], row["actual"][k]))
                               for k in got}
    out.append(row)
  return out


def _constants(fit: dict) -> str:
  return "  ".join(f"{k} = {v:.6g}" for k, v in fit["params"].items())


def _fit_lines(title: str, formula: str, fit: dict, column: str) -> list[str]:
  rows = f"column {fit['fit_rows']!r}" if fit["fit_rows"] else "every row"
  starts = (f"best of {fit['starts']} starts ({fit['converged_starts']} converged)"
            if fit["starts"] > 1 else "one start")
  lines = [f"{title}: {formula}",
           f"  {column!r} on {fit['rows']} rows ({rows}), least squares, {starts}"]
  if not fit["converged"]:
    return lines + ["  did NOT converge: from every start curve_fit reached its evaluation "
                    "limit (--maxfev) or gave constants that are not finite"]
  return lines + [f"  {_constants(fit)}  (rmse {fit['rmse']:.4g})"]


def _prediction_line(p: dict) -> str:
  parts = []
  for k, v in p["predicted"].items():
    text = f"{k} {v:.6g}"
    if "actual" in p:
      text += f" (actual {p['actual'][k]:.6g}, relative error {p['relative_error'][k]:.4%})"
    parts.append(text)
  where = ("" if len(p["table_rows"]) < 2 else
           f"  [{len(p['table_rows'])} table rows at this N, M: no single actual value]")
  return f"  N = {p['N']:.6g}, M = {p['M']:g}: {', '.join(parts)}{where}"


def format_report(report: dict) -> str:
  lines = _fit_lines("over-training law (Gadre et al. 2024)", ot.LOSS_FORMULA,
                     report["fits"]["loss"], report["columns"]["loss"])
  if "error" in report["fits"]:
    lines += _fit_lines("downstream error from loss", ot.ERROR_FORMULA,
                        report["fits"]["error"], report["columns"]["error"])
  if report["predictions"]:
    lines += ["predictions (error from the predicted loss):"]
    lines += [_prediction_line(p) for p in report["predictions"]]
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  """Fit, print, then write fit.json; --out is checked before the fit."""
  args = _parser().parse_args(argv)
  if args.out:
    writable_folder(args.out, "--out", create=False)
  df, cols = _inputs(args)
  fits = _fits(args, df, cols)
  converged = all(f["converged"] for f in fits.values())
  report = dict(table=args.table[0] if len(args.table) == 1 else args.table, where=args.where,
                columns=dict(N=args.n, M=args.m, D=args.d, loss=args.loss, error=args.error),
                formulas=dict(loss=ot.LOSS_FORMULA, error=ot.ERROR_FORMULA), fits=fits,
                predictions=_predictions(args.predict, fits, cols) if converged else [])
  print(format_report(report), flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "fit.json"), report)
    print(f"\nwrote fit.json to {args.out}")
  if not converged:
    print("a fit did not converge: no predictions", flush=True)
  return 0 if converged else 1
