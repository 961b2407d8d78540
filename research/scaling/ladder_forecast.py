"""Downstream prediction from a model ladder (Bhagia et al. 2024, "Establishing task scaling laws
via compute-efficient model ladders"): step 1 fits a task loss (bits per byte of the answer) of
the ladder's runs as a law of N and D, step 2 maps task loss to accuracy by a sigmoid, and the
chain predicts a target model's accuracy from its N and D alone (research/scaling/two_step.py is
the one implementation of both steps).

    law_rows, link_rows = ladder_points(rows, run="run", n="N", d="tokens", task_loss="bpb",
                                        metric="acc", smooth=5)
    report = forecast(law_rows, link_rows, targets=[(13.2e9, 5e12, "13B")], heldout=None)
    print(format_forecast(report))

Step 1's point of a run is its final evaluation, the task loss (and metric) averaged over the run's
last `smooth` evaluations (Bhagia et al. average the last 5); step 2's points are every evaluation
of every run, after dropping the first `skip_first` fraction of each run and a moving average over
`smooth` evaluations. Held-out runs (e.g. the ladder's largest size) are predicted from their N and
D alone and compared with what they measured.
"""

import math

import numpy as np
import pandas as pd

from research.errors import UserError
from research.scaling import curves, two_step

LAWS = {"hoffmann": {"N": "N", "D": "D"}, "saturating": {"X": "C"}}
MAXITER = 2000  # step 1's L-BFGS limit: some task losses of the OLMo ladder need over 300


def ladder_points(rows: pd.DataFrame, *, run: str, n: str, d: str, task_loss: str,
                  metric: str | None = None, smooth: int = 1, skip_first: float = 0.0,
                  seeds: str | None = None, flops_per_param_token: float = 6.0) -> tuple:
  """(law_rows, link_rows): step 1's points (run, design, N, D, C, loss[, metric]), one per run,
  and step 2's (run, loss, metric), or None without a metric."""
  columns = [c for c in (run, n, d, task_loss, metric, seeds) if c]
  missing = [c for c in columns if c not in rows]
  if missing:
    raise UserError(f"the ladder has no column(s) {missing}; it has "
                    f"{', '.join(map(repr, rows.columns))}")
  values = [c for c in (n, d, task_loss, metric) if c]
  numeric = rows[values].apply(pd.to_numeric, errors="coerce")
  bad = ~np.isfinite(numeric.to_numpy(np.float64)).all(axis=1)
  if bad.any():
    raise UserError(f"{int(bad.sum())} evaluation row(s) have a missing or non-numeric "
                    f"{'/'.join(values)} value (first: row {int(np.flatnonzero(bad)[0]) + 1})")
  data = pd.DataFrame({"run": rows[run].astype(str), "N": numeric[n], "D": numeric[d],
                       "loss": numeric[task_loss]})
  if metric:
    data["metric"] = numeric[metric]
  if seeds:
    data["seed"] = rows[seeds].astype(str)
  for column in ("N", "D", "loss"):
    if not (data[column] > 0).all():
      raise UserError(f"column {dict(N=n, D=d, loss=task_loss)[column]!r}: every value must "
                      "be > 0")
  averaged = ["loss"] + (["metric"] if metric else [])
  law_rows = curves.final_points(data, "run", by="D", average=averaged, last=smooth)
  law_rows["C"] = flops_per_param_token * law_rows.N * law_rows.D
  law_rows["design"] = [f"{math.log10(a):.4f}/{math.log10(b):.4f}"
                        for a, b in zip(law_rows.N, law_rows.D)]
  link_rows = (curves.smoothed(data, "run", averaged, by="D", window=smooth,
                               skip_first=skip_first)[["run", "loss", "metric"]]
               if metric else None)
  return law_rows, link_rows


def resample_kind(law_rows: pd.DataFrame, asked: str = "auto") -> str:
  """"runs" (seeds within design points) where some design point has two runs, else
  "residuals"; an explicit choice is checked."""
  replicated = bool((law_rows.groupby("design").run.nunique() >= 2).any())
  if asked == "auto":
    return "runs" if replicated else "residuals"
  if asked == "runs" and not replicated:
    raise UserError("--resample runs: no design point (N, D) has two runs, so drawing runs "
                    "within design points gives no spread; use --resample residuals")
  return asked


def forecast(law_rows: pd.DataFrame, link_rows: pd.DataFrame | None, targets: list,
             heldout: pd.DataFrame | None, *, law: str = "hoffmann", chance=None,
             upper=1.0, resample: str = "auto", n_boot: int = 200, seed: int = 0,
             ci: float = 0.95, flops_per_param_token: float = 6.0) -> dict:
  """The chain fitted on the ladder, its predictions at `targets` ((N, D, label) tuples) and at
  the held-out runs' final points (compared with their measured loss and metric)."""
  if law not in LAWS:
    raise UserError(f"--law {law!r}: choose one of {', '.join(LAWS)}")
  chain = two_step.fit_two_step(law_rows, link_rows, law=law, inputs=LAWS[law], chance=chance,
                                upper=upper, maxiter=MAXITER)
  where = [dict(label=label, N=float(n), D=float(d)) for n, d, label in targets]
  for _, r in (heldout if heldout is not None else pd.DataFrame()).iterrows():
    where.append(dict(label=r.run, N=float(r.N), D=float(r.D), actual_loss=float(r.loss),
                      actual_metric=float(r.metric) if "metric" in r else math.nan))
  report = dict(law=law, chain=chain.summary(),
                theta=chain.law.theta[:len(chain.law.form.params)].tolist(),
                fit_runs=int(len(law_rows)),
                step2_points=0 if link_rows is None else int(len(link_rows)), predictions=[])
  if not where:
    return report
  n = np.array([w["N"] for w in where])
  d = np.array([w["D"] for w in where])
  inputs = (dict(N=n, D=d) if law == "hoffmann" else dict(X=flops_per_param_token * n * d))
  kind = resample_kind(law_rows, resample)
  if n_boot > 0:
    boot = two_step.bootstrap_two_step(chain, law_rows, link_rows, inputs, n_boot=n_boot,
                                       seed=seed, ci=ci, resample=kind)
  else:
    loss, metric = chain.predict(inputs)
    nan = [[math.nan, math.nan]] * len(where)
    boot = dict(loss=loss.tolist(), metric=metric.tolist(), loss_interval=nan,
                metric_interval=nan, n_boot=0, n_failed=0, failures={}, resample=None)
  report["bootstrap"] = {k: boot[k] for k in ("n_boot", "n_failed", "failures", "resample")}
  report["bootstrap"]["ci"] = ci
  for i, w in enumerate(where):
    w.update(loss=boot["loss"][i], loss_interval=boot["loss_interval"][i],
             metric=boot["metric"][i], metric_interval=boot["metric_interval"][i])
    if "actual_loss" in w:
      w["loss_relative_error"] = (w["loss"] - w["actual_loss"]) / w["actual_loss"]
      w["metric_error"] = w["metric"] - w["actual_metric"]
    report["predictions"].append(w)
  return report


def _value(v, ci=None, digits=4) -> str:
  if v is None or not np.isfinite(v):
    return "-"
  text = f"{v:.{digits}f}"
  if ci is not None and all(np.isfinite(ci)):
    text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
  return text


def format_forecast(report: dict, task_loss: str = "task loss", metric: str = "metric") -> str:
  """The fitted steps, the bootstrap's accounting and the predictions, as text."""
  chain = report["chain"]
  p = chain["law"]["params"]
  lines = [f"two-step forecast on {report['fit_runs']} ladder runs; step 2 on "
           f"{report['step2_points']} evaluations",
           f"step 1 ({task_loss}): {chain['law']['formula']}  "
           + "  ".join(f"{k} = {v:.5g}" for k, v in p.items())
           + f"  ({'converged' if chain['law']['converged'] else 'NOT converged'})"]
  if chain["link"]:
    lk = chain["link"]
    ends = ", ".join(f"{e} = {lk[e]:.4g} ({'fitted' if e in lk['fitted_ends'] else 'given'})"
                     for e in ("chance", "upper"))
    lines.append(f"step 2 ({task_loss} -> {metric}): {lk['formula']}  L0 = {lk['L0']:.5g}  "
                 f"k = {lk['k']:.5g}  {ends}  rmse {lk['rmse']:.4f}"
                 f"{'' if lk['converged'] else '  NOT converged'}")
  boot = report.get("bootstrap")
  if boot and boot["n_boot"]:
    how = ("runs drawn within design points (seeds)" if boot["resample"] == "runs" else
           "residuals drawn with replacement, design kept (one run per design point)")
    failed = "; ".join(f"{k}: {v}" for k, v in boot["failures"].items()) or "none failed"
    lines.append(f"bootstrap: {boot['n_boot']} resamples of the {how}; {boot['n_failed']} "
                 f"failed ({failed}); {boot['ci']:.0%} intervals")
  step2 = bool(chain["link"])
  if report["predictions"]:
    lines.append(f"{'':>22} {'N':>10} {'D':>10}  {'step 1: task loss':<28} {'actual':>8} "
                 f"{'rel.err':>8}" + (f"  {'step 2: metric':<28} {'actual':>8} {'error':>8}"
                                      if step2 else ""))
  for w in report["predictions"]:
    actual = "actual_loss" in w
    line = (f"{str(w['label'])[-22:]:>22} {w['N']:>10.4g} {w['D']:>10.4g}  "
            f"{_value(w['loss'], w['loss_interval']):<28} {_value(w.get('actual_loss')):>8} "
            f"{(format(100 * w['loss_relative_error'], '+.2f') + '%') if actual else '-':>8}")
    if step2:
      line += (f"  {_value(w['metric'], w['metric_interval']):<28} "
               f"{_value(w.get('actual_metric')):>8} "
               f"{_value(w.get('metric_error'), digits=3):>8}")
    lines.append(line)
  return "\n".join(lines)


def figure(report: dict, law_rows: pd.DataFrame, link_rows: pd.DataFrame | None,
           task_loss: str = "task loss", metric: str = "metric"):
  """The forecast's Figure: step 1 (task loss against D, one colour per N, the law's lines, every
  fitted point, held-out and target predictions with intervals, extrapolation dashed) and, with a
  metric, step 2 (metric against task loss, every point, the sigmoid)."""
  from research.scaling.forms import get_form
  from research.scaling.plots import plt

  chain = report["chain"]
  form = get_form(chain["law"]["form"])
  theta = np.array(report["theta"])
  panels = 2 if chain["link"] else 1
  fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
  ax = axes[0, 0]
  sizes = sorted(set(law_rows.N) | {w["N"] for w in report["predictions"]})
  colours = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
  d_max = max([law_rows.D.max()] + [w["D"] for w in report["predictions"]])
  for size, colour in zip(sizes, colours):
    mine = law_rows[law_rows.N == size]
    ax.scatter(mine.D, mine.loss, color=colour, s=25, label=f"N = {size:.3g}")
    fitted_d = law_rows.D.max() if len(mine) else law_rows.D.min() * 0.8  # unfitted N: dashed
    for lo, hi, style in ((law_rows.D.min() * 0.8, fitted_d, "-"), (fitted_d, d_max * 1.2, "--")):
      if hi <= lo:
        continue
      grid = np.geomspace(lo, hi, 50)
      x = dict(N=np.full_like(grid, size), D=grid) if form.name == "hoffmann" else dict(
          X=6.0 * size * grid)
      ax.plot(grid, form.loss(theta, x), style, color=colour, lw=1)
  for w in report["predictions"]:
    lo, hi = w["loss_interval"]
    err = None if not np.isfinite(lo) else [[w["loss"] - lo], [hi - w["loss"]]]
    ax.errorbar([w["D"]], [w["loss"]], yerr=err, fmt="x", color="tab:red", capsize=3)
    if "actual_loss" in w:
      ax.scatter([w["D"]], [w["actual_loss"]], facecolors="none", edgecolors="tab:red", s=40)
  ax.set_xscale("log")
  ax.set_xlabel("D (tokens)")
  ax.set_ylabel(task_loss)
  ax.set_title("step 1: dots fitted runs; x predictions (bars: bootstrap interval);\n"
               "open circles: held-out actual; dashed: extrapolation", fontsize=9)
  ax.legend(fontsize=7)
  if chain["link"]:
    ax = axes[0, 1]
    lk = chain["link"]
    ax.scatter(link_rows.loss, link_rows.metric, s=4, color="0.6", label="ladder evaluations")
    lows = [link_rows.loss.min()] + [w["loss"] for w in report["predictions"]]
    grid = np.linspace(min(lows) * 0.95, link_rows.loss.max(), 200)
    ax.plot(grid, two_step.link(grid, lk["L0"], lk["k"], lk["chance"], lk["upper"]),
            color="tab:orange", label="sigmoid")
    for w in report["predictions"]:
      lo, hi = w["metric_interval"]
      err = None if not np.isfinite(lo) else [[w["metric"] - lo], [hi - w["metric"]]]
      ax.errorbar([w["loss"]], [w["metric"]], yerr=err, fmt="x", color="tab:red", capsize=3)
      if "actual_metric" in w and np.isfinite(w["actual_metric"]):
        ax.scatter([w["actual_loss"]], [w["actual_metric"]], facecolors="none",
                   edgecolors="tab:red", s=40)
    ax.axhline(lk["chance"], color="k", ls=":", lw=1)
    ax.set_xlabel(task_loss)
    ax.set_ylabel(metric)
    ax.set_title("step 2: x predicted (at predicted loss); open circles: held-out actual;\n"
                 "dotted: the sigmoid's lower end", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
