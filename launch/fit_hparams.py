"""python -m launch fit --hparams TABLE [...] (--lr COL | --batch COL) --loss COL --by C|N|D|ND

Fits the hyperparameter laws of DeepSeek LLM 2024 (arXiv 2401.02954, Sec. 3.1), lr_opt = c X^a
and B_opt = c X^a, to a grid of runs: in each cell (one compute budget with --by C, one size N,
one token count D, or one (N, D) pair) the runs within --within percent of the cell's best loss
are near-optimal, and the law goes through all of them by least squares in log-log space. It
prints each cell's best run and near-optimal count, the laws with bootstrap intervals (the runs
within each cell resampled), the --predict values and DeepSeek's published laws beside; --out
gets fit.json and a figure. Bad input exits with code 2 and one line.

    python -m launch fit --hparams grid.csv --n params --d tokens --lr lr --batch batch_tokens \\
        --loss val_loss --by C --within 0.25 --bootstrap 200 --predict 1e21 --out fits/hparams
"""

import numpy as np

from launch import options
from launch import fit as fit_cli
from launch.fit import _rows
from research.errors import UserError
from research.scaling import hparams as hp
from research.scaling import report as report_lib
from research.scaling import table

PROG = "python -m launch fit --hparams"


def _parser() -> options.Parser:
  D = report_lib.DEFAULTS
  p = fit_cli.add_shared(options.Parser(prog=PROG, description=__doc__.split("\n\n")[1]),
                         "CSV or any table `python -m launch fit` reads: one row per run of the "
                         "grid", bootstrap=report_lib.DEFAULTS["bootstrap"])
  p.add_argument("--n", help="column of parameter counts N")
  p.add_argument("--d", help="column of training tokens D")
  p.add_argument("--c", help="column of training FLOPs C (otherwise C = k N D)")
  p.add_argument("--lr", help="column of peak learning rates")
  p.add_argument("--batch", help="column of batch sizes (tokens, to compare with DeepSeek's)")
  p.add_argument("--loss", required=True, help="column of losses (nats per token)")
  p.add_argument("--by", default="C", choices=hp.BY,
                 help="what a cell shares: a compute budget C (default), a size N, a token count "
                 "D, or an (N, D) pair; the law is against that scale (ND: --against)")
  p.add_argument("--against", choices=tuple(hp.SCALES),
                 help="with --by ND, the scale X of the law (default C)")
  p.add_argument("--within", type=options.number(0, 100), default=0.25,
                 help="near-optimal: loss within this percentage of the cell's best (default "
                 "0.25, DeepSeek's; 0: the best run of each cell only)")
  p.add_argument("--flops-per-param-token", type=options.number(0, low_open=True), default=6.0,
                 help="k in C = k N D (default 6)")
  p.add_argument("--budget-tolerance-dex", type=options.number(0),
                 default=D["budget_tolerance_dex"],
                 help="rows whose log10 scale differ by less than this share a cell")
  p.add_argument("--predict", action="append", default=[], metavar="X",
                 type=options.number(0, low_open=True),
                 help="predict lr_opt and B_opt at this X (repeatable)")
  return p


def _inputs(args) -> dict:
  """The rows after --where and their checked columns: X and cells, loss, lr and/or batch."""
  if args.lr is None and args.batch is None:
    raise UserError(f"{PROG}: give the learning-rate column (--lr), the batch-size column "
                    "(--batch) or both")
  df = _rows(args.table, args.where)
  scales = hp.scale_columns(df, n=args.n, d=args.d, c=args.c,
                            flops_per_param_token=args.flops_per_param_token)
  scale = hp.cell_scale(scales, args.by, args.against, args.budget_tolerance_dex)
  hparams = {name: table._column(df, column, role) for name, column, role in (
      ("lr", args.lr, "learning rate"), ("batch", args.batch, "batch size")) if column}
  return dict(scale=scale, how=scales[scale["name"]][1], loss=table._column(df, args.loss, "loss"),
              hparams=hparams, rows=np.arange(1, len(df) + 1))


def _mean_x(cells: list[dict]) -> float:
  """The geometric mean of the cells' X: where a law is better determined than its coefficient
  (the value at X = 1, far outside the data)."""
  return float(np.exp(np.mean(np.log([c["X"] for c in cells]))))


def analyse(args) -> dict:
  got = _inputs(args)
  scale, loss, hparams = got["scale"], got["loss"], got["hparams"]
  result = hp.fit_hparams(scale["X"], scale["cells"], loss, hparams, args.within, got["rows"],
                          scale["name"])
  pivot = _mean_x(result["cells"])
  laws = {name: dict(law, at_mean_x=dict(X=pivot, value=float(hp.predict(law, pivot))))
          for name, law in result["laws"].items()}
  report = dict(table=args.table[0] if len(args.table) == 1 else args.table, where=args.where,
                columns=dict(N=args.n, D=args.d, C=args.c, lr=args.lr, batch=args.batch,
                             loss=args.loss),
                by=args.by, X=scale["name"], X_convention=got["how"],
                within_percent=args.within, runs=len(loss), cells=result["cells"], laws=laws,
                method="least squares of log hparam on log X through every near-optimal run",
                reference=hp.REFERENCE)
  boot = None
  if args.bootstrap:
    boot = hp.bootstrap_hparams(scale["X"], scale["cells"], loss, hparams, args.within,
                                n_boot=args.bootstrap, seed=args.seed, ci=args.ci,
                                predict_x=[*args.predict, pivot])
    at_pivot = boot["predictions"].pop()
    for name, law in laws.items():
      law["at_mean_x"]["interval"] = at_pivot[name]
    report["bootstrap"] = {k: v for k, v in boot.items() if k != "samples"}
  report["predictions"] = _predictions(args.predict, laws, report.get("bootstrap"),
                                       scale["name"])
  return dict(report=report, result=result, boot=boot, got=got)


def _predictions(xs, laws: dict, boot: dict | None, x_name: str) -> list[dict]:
  out = []
  for i, x in enumerate(xs):
    row = dict(X=x, predicted={name: float(hp.predict(law, x)) for name, law in laws.items()})
    if boot:
      row["interval"] = {name: boot["predictions"][i][name] for name in laws}
    if x_name == hp.REFERENCE["X"]:
      row["reference"] = {name: hp.reference_prediction(name, x) for name in laws}
    out.append(row)
  return out


def _interval_text(interval) -> str:
  return f"[{interval[0]:.4g}, {interval[1]:.4g}]"


def _cell_lines(report: dict) -> list[str]:
  x = report["X"]
  lines = []
  for c in report["cells"]:
    b = c["best"]
    values = ", ".join(f"{k} {b[k]:.4g}" for k in hp.HPARAMS if k in b)
    lines.append(f"  {x} = {c['X']:.4g}: {c['runs']} runs, {c['near_optimal']} near-optimal; "
                 f"best row {b['row']}: {values}, loss {b['loss']:.5g}")
  return lines


def _law_lines(report: dict) -> list[str]:
  x, boot = report["X"], report.get("bootstrap")
  lines = []
  for name, law in report["laws"].items():
    text = (f"  {hp.SYMBOLS[name]} = {law['coefficient']:.4g} {x}^{law['exponent']:.4f}"
            f"  ({law['n_points']} points at {law['distinct_x']} X)")
    pivot = law["at_mean_x"]
    at = f"  at {x} = {pivot['X']:.4g}: {pivot['value']:.4g}"
    if boot:
      iv = boot["intervals"][name]
      text += (f"\n      exponent {_interval_text(iv['exponent'])}, coefficient "
               f"{_interval_text(iv['coefficient'])}")
      at += f" {_interval_text(pivot['interval'])}"
    lines += [text, "    " + at.strip()]
  return lines


def format_report(report: dict) -> str:
  x, boot = report["X"], report.get("bootstrap")
  lines = [f"{report['runs']} runs in {len(report['cells'])} cells by {report['by']}; law against "
           f"{x} ({report['X_convention']}); near-optimal: loss within "
           f"{report['within_percent']:g}% of the cell's best"]
  lines += _cell_lines(report)
  head = f"laws ({report['method']}, as DeepSeek LLM 2024"
  if boot:
    head += (f"; {boot['ci']:.0%} bootstrap intervals from {boot['n_boot']} resamples of "
             f"{boot['resampled']}, {boot['n_failed']} failed")
    head += "".join(f"\n    {n} failed: {reason}" for reason, n in boot["failures"].items())
  lines += [head + "):"] + _law_lines(report)
  ref = report["reference"]
  lines.append(f"reference, {ref['source']}: lr_opt = {ref['lr']['coefficient']} "
               f"C^{ref['lr']['exponent']:.4f}, B_opt = {ref['batch']['coefficient']} "
               f"C^{ref['batch']['exponent']:.4f} ({ref['note']}"
               + (f"; laws in C, not comparable with these in {x})" if x != ref["X"] else ")"))
  for p in report["predictions"]:
    parts = []
    for name, value in p["predicted"].items():
      part = f"{hp.SYMBOLS[name]} {value:.4g}"
      if "interval" in p:
        part += f" {_interval_text(p['interval'][name])}"
      if "reference" in p:
        part += f" (DeepSeek {p['reference'][name]:.4g})"
      parts.append(part)
    lines.append(f"  predicted at {x} = {p['X']:.4g}: {', '.join(parts)}")
  return "\n".join(lines)


def _figure(done: dict, args):
  got, report = done["got"], done["report"]
  return hp.figure(got["scale"]["X"], got["loss"], got["hparams"], done["result"], done["boot"],
                   x_name=report["X"],
                   x_label=f"{hp.SCALES[report['X']]}; {report['X_convention']}",
                   predict_x=args.predict)


def main(argv: list[str]) -> int:
  fit_cli.run_mode(argv, _parser, analyse, format_report, _figure, "hparams")
  return 0
