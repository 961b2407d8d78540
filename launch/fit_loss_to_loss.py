"""python -m launch fit --loss-to-loss TABLE [TABLE ...] --x COL --y COL [--ex V] [--ey V]

Fits the loss-to-loss law of Brandfonbrener et al. 2024 (arXiv 2411.12925), L_y = K (L_x -
E_x)^kappa + E_y, through the runs of a table (a row a model: its loss L_x on one data set and
L_y on another). E_x and E_y are given (--ex, --ey: e.g. each data set's fitted E, as the paper
does) or fitted jointly with K and kappa, and the report says how well the data identify them.
It prints K, kappa, E_x, E_y with bootstrap intervals (the runs resampled), L_y at each --predict
L_x; --out gets fit.json and a figure. Bad input exits with code 2 and one line; a fit that did
not converge exits with code 1.

    python -m launch fit --loss-to-loss runs.csv --x loss_fineweb --y loss_c4 --ex 1.81 \\
        --ey 1.92 --bootstrap 200 --predict 2.5 --out fits/fineweb_to_c4
"""

import numpy as np

from launch import options
from launch.fit import _rows
from launch.fit import add_shared, run_mode
from research.errors import UserError
from research.scaling import loss_to_loss as l2l
from research.scaling import table

PROG = "python -m launch fit --loss-to-loss"


def _parser() -> options.Parser:
  p = add_shared(options.Parser(prog=PROG, description=__doc__.split("\n\n")[1]),
                 "CSV or any table `python -m launch fit` reads: one row per model, its two "
                 "losses")
  p.add_argument("--x", required=True, help="column of the losses L_x (nats per token) on x")
  p.add_argument("--y", required=True, help="column of the losses L_y on y, the same models")
  p.add_argument("--ex", type=options.number(0), help="E_x, the irreducible loss of x (e.g. "
                 "the E of x's own fitted law); fitted with K, kappa when absent")
  p.add_argument("--ey", type=options.number(0), help="E_y, the irreducible loss of y; fitted "
                 "when absent")
  p.add_argument("--run", help="column of run ids: rows of one run are resampled together")
  p.add_argument("--predict", action="append", default=[], metavar="L_X",
                 type=options.number(0, low_open=True),
                 help="predict L_y at this L_x (repeatable)")
  return p


def _inputs(args) -> dict:
  df = _rows(args.table, args.where)
  got = dict(l_x=table._column(df, args.x, "L_x, loss on x"),
             l_y=table._column(df, args.y, "L_y, loss on y"), groups=None)
  if args.run is not None:
    if args.run not in df.columns:
      raise UserError(f"column {args.run!r} (run id) is not in the table; columns are: "
                      f"{', '.join(map(repr, df.columns))}")
    got["groups"] = df[args.run].astype(str).to_numpy()
  return got


def analyse(args) -> dict:
  got = _inputs(args)
  fit = l2l.fit_loss_to_loss(got["l_x"], got["l_y"], args.ex, args.ey)
  report = dict(table=args.table[0] if len(args.table) == 1 else args.table, where=args.where,
                columns=dict(x=args.x, y=args.y, run=args.run), fit=fit,
                source="Brandfonbrener et al. 2024, arXiv 2411.12925",
                objective="least squares on log L_y")
  boot = None
  if args.bootstrap and fit["converged"]:
    boot = l2l.bootstrap_loss_to_loss(fit, got["l_x"], got["l_y"], n_boot=args.bootstrap,
                                      seed=args.seed, ci=args.ci, predict_x=args.predict,
                                      groups=got["groups"])
    report["bootstrap"] = {k: v for k, v in boot.items() if k != "samples"}
  report["predictions"] = [
      dict(L_x=x, L_y=float(l2l.predict_y(fit["params"], x)),
           **({"interval": boot["predictions"][i]["interval"]} if boot else {}))
      for i, x in enumerate(args.predict)]
  return dict(report=report, boot=boot, got=got)


def _param_line(name: str, fit: dict, boot: dict | None) -> str:
  text = f"  {name:<5} = {fit['params'][name]:.6g}"
  if name in fit["given"]:
    return text + f"  (given, --{name.replace('_', '').lower()})"
  if boot:
    lo, hi = boot["intervals"][name]
    text += f"  [{lo:.4g}, {hi:.4g}]"
  return text


def format_report(report: dict) -> str:
  fit, boot = report["fit"], report.get("bootstrap")
  cols = report["columns"]
  free = ", ".join(fit["free"])
  lines = [f"loss-to-loss law ({report['source']}): {fit['formula']}",
           f"  x = column {cols['x']!r}, y = column {cols['y']!r}; {fit['n_runs']} runs; fitted: "
           f"{free}; {report['objective']}, best of {fit['starts']} starts "
           f"({fit['converged_starts']} converged, {fit['good_starts']} at the best)"]
  if not fit["converged"]:
    return "\n".join(lines + [f"  did NOT converge ({fit['status']})"])
  if boot:
    failures = "; ".join(f"{n} {reason}" for reason, n in boot["failures"].items())
    lines.append(f"  {boot['ci']:.0%} bootstrap intervals from {boot['n_boot']} resamples of "
                 f"{boot['resampled']}, {boot['n_failed']} failed" +
                 (f" ({failures})" if failures else ""))
  lines += [_param_line(name, fit, boot) for name in l2l.PARAMS]
  ident = fit["identifiability"]
  lines.append(f"  rmse of log L_y {fit['rmse_log']:.3g}; identifiability: max |correlation| "
               f"{ident['max_abs_correlation']:.4f} ({' ~ '.join(ident['worst_pair'])}): "
               f"{ident['verdict']}")
  for p in report["predictions"]:
    text = f"  predicted L_y at L_x = {p['L_x']:g}: {p['L_y']:.6g}"
    if "interval" in p:
      text += f" [{p['interval'][0]:.4g}, {p['interval'][1]:.4g}]"
    lines.append(text)
  return "\n".join(lines)


def figure(l_x, l_y, fit: dict, boot: dict | None, columns: dict, predict_x=()):
  """L_y against L_x: the runs, the fitted law (dashed beyond the runs, out to --predict), its
  bootstrap band."""
  from research.scaling import plots
  fig, ax = plots.plt.subplots(figsize=(6, 4.4))
  ax.scatter(l_x, l_y, s=14, color="C0", label="runs")
  lo, hi = float(np.min(l_x)), float(max([np.max(l_x), *predict_x]))
  low = max(fit["params"]["E_x"] + 1e-3 * (hi - lo), min([lo, *predict_x]) * 0.98)
  grid = np.linspace(low, hi * 1.02, 200)
  inside = (grid >= np.min(l_x)) & (grid <= np.max(l_x))
  line = l2l.predict_y(fit["params"], grid)
  p = fit["params"]
  ax.plot(grid[inside], line[inside], "k-", label=f"{p['K']:.3g} (L_x - {p['E_x']:.3g})^"
          f"{p['kappa']:.3f} + {p['E_y']:.3g}")
  below, above = grid < np.min(l_x), grid > np.max(l_x)
  ax.plot(grid[below], line[below], "k--", label="extrapolated")
  ax.plot(grid[above], line[above], "k--")
  if boot and boot["samples"]["K"]:
    curves = np.array([l2l._sample_predictions(boot["samples"], x) for x in grid]).T
    band = np.nanquantile(curves, [(1 - boot["ci"]) / 2, (1 + boot["ci"]) / 2], axis=0)
    ax.fill_between(grid, band[0], band[1], color="grey", alpha=0.3,
                    label=f"{boot['ci']:.0%} bootstrap band")
  ax.set_xlabel(f"L_x, column {columns['x']!r} (nats/token)")
  ax.set_ylabel(f"L_y, column {columns['y']!r} (nats/token)")
  ax.set_title("Loss-to-loss (Brandfonbrener et al. 2024)", fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  return fig


def _figure(done: dict, args):
  report = done["report"]
  if not report["fit"]["converged"]:
    return None
  return figure(done["got"]["l_x"], done["got"]["l_y"], report["fit"], done["boot"],
                report["columns"], args.predict)


def main(argv: list[str]) -> int:
  """Fit, print, then the figure and fit.json (launch.fit.run_mode); exit 1 when the
  fit did not converge."""
  done = run_mode(argv, _parser, analyse, format_report, _figure, "loss_to_loss")
  return 0 if done["report"]["fit"]["converged"] else 1
