"""Figures in the style of the scaling papers (matplotlib, Agg): each function returns a Figure.

  loss_vs_compute   runs coloured by N, with the fitted compute-optimal frontier
  isoflop_curves    L against N per budget, the fitted parabolas (or splines), minima
  allocation        N_opt and D_opt against C: the approaches' points, fits and bootstrap band
  loss_vs_n_d       L against N and against D with the fitted law
  sweep_losses      a sweep's held-out loss against N per token budget (with each budget's
                    fitted L = E + A N^-alpha) and against C per model size
  training_run      one run's training loss and eval curves against tokens (from its records)
`save` writes PNG and PDF atomically.
"""

import io
import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.fileio import atomic_write_bytes  # noqa: E402
from research.scaling.forms import FORMS, hoffmann_frontier  # noqa: E402

HOFFMANN = FORMS["hoffmann"]


def save(fig, path_stem: str, dpi: int = 110) -> list[str]:
  """Write path_stem.png and path_stem.pdf; returns the paths."""
  paths = []
  for ext in ("png", "pdf"):
    buffer = io.BytesIO()
    fig.savefig(buffer, format=ext, dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(f"{path_stem}.{ext}", buffer.getvalue())
    paths.append(f"{path_stem}.{ext}")
  plt.close(fig)
  return paths


def _log_axes(ax, xlabel: str, ylabel: str, title: str, logy: bool = False) -> None:
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded 2x10^11 labels
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, which="major", alpha=0.3)


def _colour_by_n(fig, ax, x, y, n):
  points = ax.scatter(x, y, c=np.log10(n), cmap="viridis", s=12, alpha=0.85)
  fig.colorbar(points, ax=ax, label="log10 N (parameters)")


def loss_vs_compute(runs, theta, conventions: dict):
  """L against C; the frontier L(N_opt(C), D_opt(C)) of the fitted Hoffmann law."""
  fig, ax = plt.subplots(figsize=(6, 4.2))
  _colour_by_n(fig, ax, runs.C, runs.L, runs.N)
  flops = np.geomspace(runs.C.min() / 2, runs.C.max() * 50, 100)
  frontier = hoffmann_frontier(theta, flops, conventions["flops_per_param_token"])
  ax.plot(flops, HOFFMANN.loss(theta, dict(N=frontier["N_opt"], D=frontier["D_opt"])), "k-",
          label="compute-optimal frontier (Approach 3)")
  _log_axes(ax, f"training compute C (FLOPs; {conventions['C']})", "loss L (nats/token)",
            "Loss against compute")
  ax.legend(fontsize=8)
  return fig


def isoflop_curves(runs, minima: list[dict], budget_ids):
  """Each IsoFLOP budget: its runs, the fitted parabola (or spline) in log N, and the minimum.

  A star marks a minimum used in the power law; a cross one left out (at the edge of its sizes).
  """
  fig, ax = plt.subplots(figsize=(6, 4.2))
  colours = plt.cm.plasma(np.linspace(0, 0.9, max(len(minima), 1)))
  for colour, m in zip(colours, minima):
    here = np.isclose(np.log(runs.C), np.log(m["C"]), atol=0.25) if budget_ids is None else (
        budget_ids == budget_ids[np.argmin(np.abs(np.log(runs.C) - np.log(m["C"])))])
    ax.scatter(runs.N[here], runs.L[here], color=colour, s=12)
    if "parabola" in m:
      log_n = np.linspace(*np.log(m["fit_range_N"]), 60)
      curve_n, curve_l = np.exp(log_n), np.polyval(m["parabola"], log_n)
    else:  # the Akima spline, sampled by approaches._akima_minimum
      curve_n, curve_l = m["curve_N"], m["curve_L"]
    ax.plot(curve_n, curve_l, color=colour, lw=1, label=f"C = {m['C']:.2g}")
    ax.plot(m["N_opt"], m["L_opt"], "*" if m.get("in_fit", True) else "x", color=colour, ms=10,
            mec="k")
  _log_axes(ax, "parameters N", "loss L (nats/token)", "IsoFLOP curves (star: fitted minimum)")
  ax.legend(fontsize=6, ncol=2)
  return fig


def allocation(results: dict, conventions: dict, flops_range):
  """N_opt(C) and D_opt(C): the points of Approaches 1/2, every power law, the Approach 3 band."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  flops = np.geomspace(*flops_range, 100)
  k = conventions["flops_per_param_token"]
  for key, result in results.items():
    if "failed" in result:  # no estimate (research.scaling.report.analyse says why)
      continue
    if key == "3":
      theta = np.array(result["theta"])
      frontier = hoffmann_frontier(theta, flops, k)
      for ax, name in zip(axes, ("N_opt", "D_opt")):
        ax.plot(flops, frontier[name], "k-", label=f"Approach 3 (a = {result['a']:.3f})")
      samples = result.get("bootstrap_samples")
      if samples:
        _band(axes, flops, samples, k)
      continue
    points = [m for m in result.get("minima", []) if m.get("in_fit", True)] or [
        dict(C=c, N_opt=n, D_opt=d) for c, n, d in zip(
            result["envelope"]["C"], result["envelope"]["N_opt"], result["envelope"]["D_opt"])]
    left_out = [m for m in result.get("minima", []) if not m.get("in_fit", True)]
    for ax, name, law in zip(axes, ("N_opt", "D_opt"), ("n_law", "d_law")):
      ax.scatter([p["C"] for p in points], [p[name] for p in points], s=14,
                 label=f"Approach {key} points")
      if left_out:  # every point is shown: these are extrapolated minima, not in the law
        ax.scatter([p["C"] for p in left_out], [p[name] for p in left_out], s=18,
                   facecolors="none", edgecolors="C3",
                   label=f"Approach {key}: minimum outside its sizes (not fitted)")
      ax.plot(flops, result[law]["coefficient"] * flops ** result[law]["exponent"], "--",
              label=f"Approach {key} fit (exponent {result[law]['exponent']:.3f})")
  for ax, name in zip(axes, ("parameters N_opt", "tokens D_opt")):
    _log_axes(ax, "training compute C (FLOPs)", name, f"Compute-optimal {name.split()[0]}",
              logy=True)
    ax.legend(fontsize=7)
  return fig


def _band(axes, flops, samples: dict, k: float) -> None:
  curves = []
  for a, b, e, alpha, beta in zip(*(np.log(samples[x]) for x in ("A", "B", "E")),
                                  samples["alpha"], samples["beta"]):
    f = hoffmann_frontier([a, b, e, alpha, beta], flops, k)
    curves.append((f["N_opt"], f["D_opt"]))
  curves = np.array(curves)
  for i, ax in enumerate(axes):
    lo, hi = np.quantile(curves[:, i], [0.025, 0.975], axis=0)
    ax.fill_between(flops, lo, hi, color="grey", alpha=0.3, label="95% bootstrap band")


def loss_vs_n_d(runs, theta):
  """L against N (coloured by D) and against D (coloured by N), with the law at fixed D or N."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, (x, other, xname, oname) in zip(axes, ((runs.N, runs.D, "N", "D"),
                                                 (runs.D, runs.N, "D", "N"))):
    points = ax.scatter(x, runs.L, c=np.log10(other), cmap="viridis", s=10, alpha=0.85)
    fig.colorbar(points, ax=ax, label=f"log10 {oname}")
    grid = np.geomspace(x.min(), x.max(), 80)
    for value in np.quantile(other, [0.1, 0.5, 0.9]):
      args = {xname: grid, oname: np.full_like(grid, value)}
      colour = plt.cm.viridis((np.log10(value) - np.log10(other).min())
                              / max(np.ptp(np.log10(other)), 1e-9))
      ax.plot(grid, HOFFMANN.loss(theta, args), color=colour, lw=1.2,
              label=f"law at {oname} = {value:.2g}")
    _log_axes(ax, "parameters N" if xname == "N" else "tokens D", "loss L (nats/token)",
              f"Loss against {xname}")
    ax.legend(fontsize=7)
  return fig


def sweep_losses(runs, budgets: list[dict]):
  """Left: L against non-embedding N, a colour per token budget, with that budget's fitted
  saturating law. Right: L against C, a line per model size joining its budgets.

  `runs` has columns N_nonemb, D, C, val_loss; `budgets` entries have D and, when fitted,
  params {A, E, alpha} (the analyses' fit.json entries).
  """
  fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
  colours = plt.cm.plasma(np.linspace(0, 0.8, max(len(budgets), 1)))
  for colour, b in zip(colours, budgets):
    here = runs[np.isclose(runs.D, b["D"])]
    label = f"D = {b['D']:.3g} tokens"
    ax_n.plot(here.N_nonemb, here.val_loss, "o", color=colour, label=label)
    if "params" in b:
      p = b["params"]
      grid = np.geomspace(here.N_nonemb.min() / 1.5, here.N_nonemb.max() * 1.5, 80)
      ax_n.plot(grid, p["E"] + p["A"] * grid ** -p["alpha"], "-", color=colour, lw=1,
                label=f"fit: E {p['E']:.3f} + A N^-{p['alpha']:.2f}")
  _log_axes(ax_n, "non-embedding parameters N", "held-out loss (nats/token)",
            "Loss against N at each token budget")
  ax_n.legend(fontsize=7)
  sizes = sorted(runs.N_nonemb.unique())
  size_colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))
  for colour, n in zip(size_colours, sizes):
    here = runs[runs.N_nonemb == n].sort_values("C")
    ax_c.plot(here.C, here.val_loss, "o-", color=colour, label=f"N = {n:,.0f}")
  convention = runs.flop_convention.iloc[0] if "flop_convention" in runs else "?"
  _log_axes(ax_c, f"training compute C (FLOPs; '{convention}')", "held-out loss (nats/token)",
            "Loss against compute, a line per size")
  ax_c.legend(fontsize=7)
  fig.tight_layout()
  return fig


def lr_transfer(curves: dict):
  """Held-out loss against learning rate, a line per width and a panel per parametrization,
  the best rate of each width marked. `curves`: {parametrization: {width: {lr, val_loss,
  best_lr}}} (experiments/lr_transfer.py's fit.json)."""
  names = [p for p in ("standard", "mup") if p in curves] + sorted(set(curves) - {"standard",
                                                                                  "mup"})
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.0), sharey=True,
                           squeeze=False)
  finite = [v for c in curves.values() for w in c.values() for v in w["val_loss"] if v is not None]
  for ax, name in zip(axes[0], names):
    widths = sorted(curves[name])
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(widths)))
    for colour, width in zip(colours, widths):
      w = curves[name][width]
      loss = [np.nan if v is None else v for v in w["val_loss"]]
      ax.plot(w["lr"], loss, "o-", color=colour, label=f"d_model {width}")
      if w["best_lr"]:
        ax.axvline(w["best_lr"], color=colour, ls=":", lw=1)
    title = "muP" if name == "mup" else f"{name} parametrization"
    _log_axes(ax, "learning rate", "held-out loss (nats/token)", title)
    ax.set_yscale("linear")
    if finite:
      low = min(finite)
      ax.set_ylim(low - 0.02 * abs(low), min(max(finite), low + 1.0))
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def kaplan_laws(points, n_column: str, fits: dict):
  """Kaplan et al.'s three views of one sweep. Left: L against N, a colour per D, with L(N) at
  the largest D. Middle: L against D, a line per size, with L(D) at the largest N. Right: L
  against C (6ND), every point, with the C_min envelope's power law. `fits`: one convention's
  entry of experiments/kaplan.py's fit.json; `points` has N / N_nonemb, D, C, val_loss."""
  fig, (ax_n, ax_d, ax_c) = plt.subplots(1, 3, figsize=(15, 4.3))
  label_n = "non-embedding parameters N" if n_column == "N_nonemb" else "parameters N"
  tokens = sorted(points.D.unique())
  colours = plt.cm.plasma(np.linspace(0, 0.85, len(tokens)))
  for colour, d in zip(colours, tokens):
    here = points[points.D == d].sort_values(n_column)
    ax_n.plot(here[n_column], here.val_loss, "o-", color=colour, lw=0.8, label=f"D = {d:.3g}")
  law = fits["L(N) at the largest D"]
  if law.get("X_c"):
    grid = np.geomspace(points[n_column].min(), points[n_column].max() * 3, 80)
    ax_n.plot(grid, (law["X_c"] / grid) ** law["alpha"], "k--", lw=1,
              label=f"(N_c/N)^{law['alpha']:.3f}")
  _log_axes(ax_n, label_n, "held-out loss (nats/token)", "L(N), a line per D", logy=True)
  ax_n.legend(fontsize=6)
  sizes = sorted(points[n_column].unique())
  colours = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
  for colour, n in zip(colours, sizes):
    here = points[points[n_column] == n].sort_values("D")
    ax_d.plot(here.D, here.val_loss, "o-", color=colour, lw=0.8, label=f"N = {n:,.0f}")
  law = fits["L(D) at the largest N"]
  if law.get("X_c"):
    grid = np.geomspace(points.D.min(), points.D.max() * 3, 80)
    ax_d.plot(grid, (law["X_c"] / grid) ** law["alpha"], "k--", lw=1,
              label=f"(D_c/D)^{law['alpha']:.3f}")
  _log_axes(ax_d, "training tokens D", "held-out loss (nats/token)",
            "L(D), a line per size (WSD branches)", logy=True)
  ax_d.legend(fontsize=6)
  k = fits["C_min frontier"]["flops_per_param_token"]
  flops = k * points[n_column] * points.D
  ax_c.scatter(flops, points.val_loss, c=np.log(points[n_column]), cmap="viridis", s=14)
  law = fits["C_min frontier"]
  if law.get("X_c"):
    grid = np.geomspace(flops.min(), flops.max() * 3, 80)
    ax_c.plot(grid, (law["X_c"] / grid) ** law["alpha"], "k--", lw=1,
              label=f"C_min frontier (C_c/C)^{law['alpha']:.3f}; N_opt ~ C^{law['a']:.2f}")
  _log_axes(ax_c, f"training compute C = {k:.3g} N D (FLOPs)", "held-out loss (nats/token)",
            "L against compute (colour: log N)", logy=True)
  ax_c.legend(fontsize=7)
  fig.tight_layout()
  return fig


def training_run(train: list[dict], evals: list[dict], summary: dict):
  """One run's training loss and its study's eval curves against the training units (tokens,
  images, ...).

  Which eval metrics and reference levels are drawn is the study's choice, in summary["report"]
  (research.train.recipe.Report); records are as in metrics.jsonl.
  """
  from research import store
  report = summary.get("report", {})
  unit = report.get("unit", "tokens")
  per_step = store.units(summary) / max(summary["steps"], 1)
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  ax.plot([r.get(unit, r.get("tokens")) for r in train], [r["loss"] for r in train], lw=1,
          label="train")
  curve_ax = ax.twinx() if report.get("curves_label") else ax
  for name in report.get("curves", ()):
    points = [(r["step"] * per_step, r[name]) for r in evals if name in r]
    if points:
      style = {"color": "C1"} if curve_ax is not ax else {}
      curve_ax.plot(*zip(*points), "o-", ms=4, label=name.replace("_", " ") + " (held out)",
                    **style)
  if curve_ax is not ax:
    curve_ax.set_yscale("log")
    curve_ax.set_ylabel(report["curves_label"])
    curve_ax.legend(fontsize=8, loc="upper center")
  for key, label in report.get("levels", ()):
    if summary.get(key) is not None:
      ax.axhline(summary[key], color="k", ls="--", lw=1, label=f"{label} ({summary[key]:.3f})")
  if summary.get("params_non_embedding") is not None:
    size = f"{summary['params_non_embedding']:,} non-embedding params, "
  elif summary.get("params_total") is not None:
    size = f"{summary['params_total']:,} params, "
  else:
    size = ""
  _log_axes(ax, f"training {unit} D", report.get("loss_label", "loss"),
            f"{size}C = {summary['flops']:.2e} FLOPs ('{summary.get('flop_convention', '?')}')")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def report_figures(runs, report, out: str, budget_ids=None) -> list[str]:
  """The figures of a research.scaling.report analysis, saved into `out` (PNG and PDF)."""
  from research.scaling import table
  results = report["approaches"]
  conv = report["conventions"]
  paths = []
  if "3" in results:
    theta = np.array(results["3"]["theta"])
    paths += save(loss_vs_compute(runs, theta, conv), os.path.join(out, "loss_vs_compute"))
    paths += save(loss_vs_n_d(runs, theta), os.path.join(out, "loss_vs_n_d"))
  if "minima" in results.get("2", {}):
    ids = (table.budgets(runs.C, report["options"]["budget_tolerance_dex"])
           if budget_ids is None else budget_ids)
    paths += save(isoflop_curves(runs, results["2"]["minima"], ids),
                  os.path.join(out, "isoflop_curves"))
  flops_range = (runs.C.min() / 2, max(runs.C.max() * 10, max(report["budgets"], default=0)))
  paths += save(allocation(results, conv, flops_range), os.path.join(out, "allocation"))
  return paths
