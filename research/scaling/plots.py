"""Figures in the style of the scaling papers (matplotlib, Agg): each function returns a Figure.

  loss_vs_compute   runs coloured by N, with the fitted compute-optimal frontier
  isoflop_curves    L against N per budget, the fitted parabolas (or splines), minima
  allocation        N_opt and D_opt against C: the approaches' points, fits and bootstrap band
  residuals         the fitted law's relative residuals against N and against D
  sweep_losses      a sweep's held-out loss against N per token budget (with each budget's
                    fitted L = E + A N^-alpha) and against C per model size
  training_run      one run's training loss and eval curves against tokens (from its records)
`save` writes PNG and PDF atomically.
"""

import io
import os
import textwrap

import matplotlib
import matplotlib.colors
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
  lo, hi = ax.get_xlim()
  if hi > 10 * lo:  # no crowded 2x10^11 labels; within a decade the minor labels are the only ones
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, which="major", alpha=0.3)


def _colour_by_n(fig, ax, x, y, n):
  points = ax.scatter(x, y, c=np.log10(n), cmap="viridis", s=12, alpha=0.85)
  fig.colorbar(points, ax=ax, label="log10 N (parameters)")


def _floors(ax, floors) -> None:
  """Horizontal lines at known loss floors: [(label, value), ...] (a synthetic language's)."""
  for (label, value), style in zip(floors or (), ("--", ":")):
    ax.axhline(value, color="0.3", ls=style, lw=1, label=f"{label} ({value:.4f})")


def _extrapolated(ax, data_max: float) -> None:
  """Shade compute beyond the data as extrapolated."""
  lo, hi = ax.get_xlim()
  if hi > data_max:
    ax.axvspan(data_max, hi, color="0.92", zorder=0, label="extrapolated (beyond the runs)")
    ax.set_xlim(lo, hi)


def loss_vs_compute(runs, theta, conventions: dict, floors=None):
  """L against C; the frontier L(N_opt(C), D_opt(C)) of the fitted Hoffmann law, solid over the
  runs' compute and dotted beyond."""
  fig, ax = plt.subplots(figsize=(6, 4.2))
  _colour_by_n(fig, ax, runs.C, runs.L, runs.N)
  k = conventions["flops_per_param_token"]
  for flops, style, label in ((np.geomspace(runs.C.min(), runs.C.max(), 60), "k-",
                               "compute-optimal frontier (Approach 3)"),
                              (np.geomspace(runs.C.max(), runs.C.max() * 30, 30), "k:",
                               "extrapolated")):
    frontier = hoffmann_frontier(theta, flops, k)
    ax.plot(flops, HOFFMANN.loss(theta, dict(N=frontier["N_opt"], D=frontier["D_opt"])), style,
            label=label)
  _floors(ax, floors)
  _log_axes(ax, f"training compute C (FLOPs; {conventions['C']})", "loss L (nats/token)",
            "Loss against compute")
  ax.legend(fontsize=7)
  return fig


def isoflop_curves(runs, minima: list[dict], budget_ids, convention: str = "", floors=None):
  """Each IsoFLOP budget: its runs, the fitted parabola in log N (solid where fitted, dotted over
  any sampled sizes outside its window) or spline, and the minimum: a star where it is used in
  the power law, a cross where it is left out (outside the sizes sampled)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  colours = plt.cm.plasma(np.linspace(0, 0.9, max(len(minima), 1)))
  for colour, m in zip(colours, minima):
    here = np.isclose(np.log(runs.C), np.log(m["C"]), atol=0.25) if budget_ids is None else (
        budget_ids == budget_ids[np.argmin(np.abs(np.log(runs.C) - np.log(m["C"])))])
    ax.scatter(runs.N[here], runs.L[here], color=colour, s=14)
    label = f"C = {m['C']:.2g}" + (f" ({convention})" if convention else "")
    if "parabola" in m:
      fitted = np.log(m["fit_range_N"])
      sampled = np.log([runs.N[here].min(), runs.N[here].max()])
      log_n = np.linspace(*fitted, 60)
      ax.plot(np.exp(log_n), np.polyval(m["parabola"], log_n), color=colour, lw=1, label=label)
      for lo, hi in ((sampled[0], fitted[0]), (fitted[1], sampled[1])):
        if hi > lo:
          log_n = np.linspace(lo, hi, 20)
          ax.plot(np.exp(log_n), np.polyval(m["parabola"], log_n), ":", color=colour, lw=1)
    else:  # the Akima spline, sampled by approaches._akima_minimum
      ax.plot(m["curve_N"], m["curve_L"], color=colour, lw=1, label=label)
    ax.plot(m["N_opt"], m["L_opt"], "*" if m.get("in_fit", True) else "x", color=colour, ms=10,
            mec="k")
  _floors(ax, floors)
  _log_axes(ax, "parameters N", "loss L (nats/token)",
            "IsoFLOP curves (star: minimum fitted; x: outside its sizes, left out)")
  ax.legend(fontsize=6, ncol=2)
  return fig


CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, Table 3: about 20 tokens per parameter


def allocation(results: dict, conventions: dict, flops_range, data_max: float | None = None):
  """N_opt(C) and D_opt(C): Approach 2's minima (points), Approach 1's envelope (a line: it is
  interpolated), every power law (solid over the runs' compute, dotted beyond, the extrapolated
  range shaded), the Approach 3 bootstrap band, and Hoffmann et al.'s 20 tokens per parameter."""
  fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
  flops = np.geomspace(*flops_range, 100)
  data_max = flops_range[1] if data_max is None else data_max
  inside, beyond = flops <= data_max * (1 + 1e-9), flops >= data_max * (1 - 1e-9)
  k = conventions["flops_per_param_token"]
  for key, result in results.items():
    if "failed" in result:  # no estimate (research.scaling.report.analyse says why)
      continue
    if key == "3":
      theta = np.array(result["theta"])
      frontier = hoffmann_frontier(theta, flops, k)
      for ax, name in zip(axes, ("N_opt", "D_opt")):
        ax.plot(flops[inside], frontier[name][inside], "k-",
                label=f"Approach 3 (a = {result['a']:.3f})")
        ax.plot(flops[beyond], frontier[name][beyond], "k:")
      samples = result.get("bootstrap_samples")
      if samples:
        _band(axes, flops, samples, k)
      continue
    colour = {"1": "C0", "2": "C1"}.get(key, "C2")
    for ax, name, law in zip(axes, ("N_opt", "D_opt"), ("n_law", "d_law")):
      if "minima" in result:
        used = [m for m in result["minima"] if m.get("in_fit", True)]
        left_out = [m for m in result["minima"] if not m.get("in_fit", True)]
        ax.scatter([m["C"] for m in used], [m[name] for m in used], s=18, color=colour,
                   label=f"Approach {key} minima")
        if left_out:  # every point is shown: these are extrapolated minima, not in the law
          ax.scatter([m["C"] for m in left_out], [m[name] for m in left_out], s=22,
                     facecolors="none", edgecolors="C3",
                     label=f"Approach {key}: minimum outside its sizes (not fitted)")
      elif "envelope" in result:
        ax.plot(result["envelope"]["C"], result["envelope"][name], color=colour, lw=1.5,
                alpha=0.6, label=f"Approach {key} envelope (interpolated)")
      line = result[law]["coefficient"] * flops ** result[law]["exponent"]
      ax.plot(flops[inside], line[inside], "--", color=colour,
              label=f"Approach {key} fit (exponent {result[law]['exponent']:.3f})")
      ax.plot(flops[beyond], line[beyond], ":", color=colour)
  n_rule = np.sqrt(flops / (k * CHINCHILLA_TOKENS_PER_PARAM))
  for ax, values in zip(axes, (n_rule, CHINCHILLA_TOKENS_PER_PARAM * n_rule)):
    ax.plot(flops, values, color="tab:red", lw=0.9, alpha=0.7,
            label="Hoffmann et al. 2022: 20 tokens per parameter")
  for ax, name in zip(axes, ("parameters N_opt", "tokens D_opt")):
    _log_axes(ax, f"training compute C (FLOPs; {conventions['C']})", name,
              f"Compute-optimal {name.split()[0]}", logy=True)
    _extrapolated(ax, data_max)
    ax.legend(fontsize=6)
  fig.tight_layout()
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


def residuals(runs, theta):
  """The fitted Hoffmann law's relative residual L / L_fit - 1 of every run, against N (colour:
  D) and against D (colour: N), on linear axes: where the law misses shows as structure."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  relative = runs.L / HOFFMANN.loss(theta, dict(N=runs.N, D=runs.D)) - 1
  for ax, (x, other, xname, oname) in zip(axes, ((runs.N, runs.D, "N", "D"),
                                                 (runs.D, runs.N, "D", "N"))):
    points = ax.scatter(x, 100 * relative, c=np.log10(other), cmap="viridis", s=14)
    fig.colorbar(points, ax=ax, label=f"log10 {oname}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters N" if xname == "N" else "tokens D")
    ax.set_ylabel("residual, L / L_fit - 1 (%)")
    ax.set_title(f"Approach 3's law: residuals against {xname}", fontsize=10)
    ax.grid(True, alpha=0.3)
  fig.tight_layout()
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
  best_lr}}} (experiments/lr_transfer.py's fit.json; an entry's `label` replaces "d_model W")."""
  names = [p for p in ("standard", "mup") if p in curves] + sorted(set(curves) - {"standard",
                                                                                  "mup"})
  cols = min(len(names), 3)
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), sharey=True,
                           squeeze=False)
  for ax in axes.flat[len(names):]:
    ax.set_visible(False)
  finite = [v for c in curves.values() for w in c.values() for v in w["val_loss"] if v is not None]
  for ax, name in zip(axes.flat, names):
    widths = sorted(curves[name])
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(widths)))
    for colour, width in zip(colours, widths):
      w = curves[name][width]
      loss = [np.nan if v is None else v for v in w["val_loss"]]
      ax.plot(w["lr"], loss, "o-", color=colour, label=w.get("label", f"d_model {width}"))
      if w["best_lr"]:
        ax.axvline(w["best_lr"], color=colour, ls=":", lw=1)
    title = {"mup": "muP", "standard": "standard parametrization"}.get(name, name)
    _log_axes(ax, "learning rate", "held-out loss (nats/token)", title)
    ax.set_yscale("linear")
    if finite:
      low = min(finite)
      ax.set_ylim(low - 0.02 * abs(low), min(max(finite), low + 1.0))
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


KAPLAN_2020 = {"alpha_N": 0.076, "alpha_D": 0.095, "alpha_C": 0.050,  # Sec. 1.2, N non-embedding
               "a": 0.73}  # N_opt ~ C^0.73 (their eq. 1.7 and Sec. 6.1)


def _law_line(ax, law: dict, label: str) -> None:
  """(X_c / X)^alpha solid over the X its points span, dotted beyond (extrapolated)."""
  if not law.get("X_c"):
    return
  lo, hi = law["X_range"]
  inside = np.geomspace(lo, hi, 60)
  beyond = np.geomspace(hi, hi * 3, 20)
  ax.plot(inside, (law["X_c"] / inside) ** law["alpha"], "k-", lw=1.2, label=label)
  ax.plot(beyond, (law["X_c"] / beyond) ** law["alpha"], "k:", lw=1.0,
          label="extrapolated")


def _reference_slope(ax, x, y, slope: float, label: str) -> None:
  """A reference line of the given log-log slope through the geometric middle of (x, y)."""
  x0, y0 = np.exp(np.mean(np.log(x))), np.exp(np.mean(np.log(y)))
  grid = np.geomspace(np.min(x), np.max(x), 20)
  ax.plot(grid, y0 * (grid / x0) ** slope, color="tab:red", ls="--", lw=0.9, alpha=0.7,
          label=label)


def _used(points, law: dict):
  return points.run.isin(law.get("runs", []))


def kaplan_laws(points, n_column: str, fits: dict):
  """Kaplan et al.'s three views of one sweep, every point drawn. Left: L against N, colour by D;
  filled the points of L(N) (each size converged in D), the law solid over them, dotted beyond.
  Middle: L against D, colour by N; filled the data-limited points of L(D). Right: L against C,
  colour by N, the lower envelope (a line: interpolated, not data) and L(C_min) fitted on all of
  it. Fourth: the envelope's best size against C (filled where an interior size is the best, the
  points N_opt ~ C^a is fitted on). Dashed red: Kaplan et al. 2020's slopes (alpha_N 0.076,
  alpha_D 0.095, alpha_C 0.050, a 0.73), for the slope only. `fits`: one convention's entry of
  experiments/kaplan.py's fit.json."""
  fig, (ax_n, ax_d, ax_c, ax_a) = plt.subplots(1, 4, figsize=(21, 4.4))
  label_n = "non-embedding parameters N" if n_column == "N_nonemb" else "parameters N"
  log_d, log_n = np.log10(points.D), np.log10(points[n_column])
  for ax, x, colour_by, law_key, name in (
      (ax_n, points[n_column], log_d, "L(N), converged in D", "alpha_N"),
      (ax_d, points.D, log_n, "L(D), data-limited", "alpha_D")):
    law, used = fits[law_key], _used(points, fits[law_key])
    cmap = plt.get_cmap("plasma" if ax is ax_n else "viridis")
    norm = matplotlib.colors.Normalize(colour_by.min(), colour_by.max())
    ax.scatter(x[~used], points.val_loss[~used], s=22, facecolors="none",
               edgecolors=cmap(norm(colour_by[~used])))
    shown = ax.scatter(x[used], points.val_loss[used], c=colour_by[used], cmap=cmap, norm=norm,
                       s=22)
    fig.colorbar(shown, ax=ax, label="log10 D (tokens)" if ax is ax_n else f"log10 {label_n}")
    if "alpha" in law:
      _law_line(ax, law, f"fit: alpha = {law['alpha']:.3f} (filled points)")
      _reference_slope(ax, x[used], points.val_loss[used], -KAPLAN_2020[name],
                       f"Kaplan et al. 2020: {KAPLAN_2020[name]}")
      ax.legend(fontsize=7)
    else:  # the paper's slope through every point, so the reference is there regardless
      _reference_slope(ax, x, points.val_loss, -KAPLAN_2020[name],
                       f"Kaplan et al. 2020: {KAPLAN_2020[name]} (slope only)")
      ax.legend(fontsize=7, loc="upper right")
      ax.text(0.03, 0.05, textwrap.fill(f"{law_key}: {law.get('skipped', 'not measured')}", 60),
              fontsize=7, transform=ax.transAxes)
  _log_axes(ax_n, label_n, "held-out loss (nats/token)", "L(N): hollow = not converged in D",
            logy=True)
  _log_axes(ax_d, "training tokens D", "held-out loss (nats/token)",
            "L(D): hollow = not data-limited or too short", logy=True)
  frontier = fits["C_min frontier"]
  k = frontier["flops_per_param_token"]
  flops = k * points[n_column] * points.D
  shown = ax_c.scatter(flops, points.val_loss, c=log_n, cmap="viridis", s=14)
  fig.colorbar(shown, ax=ax_c, label=f"log10 {label_n}")
  env = frontier.get("envelope")
  if env:
    ax_c.plot(env["C"], env["L"], color="0.5", lw=1.0, label="lower envelope (interpolated)")
    if frontier.get("X_c"):
      c = np.asarray(env["C"])
      ax_c.plot(c, (frontier["X_c"] / c) ** frontier["alpha"], "k-", lw=1.2,
                label=f"L(C_min): alpha_C = {frontier['alpha']:.3f}; N_opt ~ C^{frontier['a']:.2f}")
      _reference_slope(ax_c, c, env["L"], -KAPLAN_2020["alpha_C"], "Kaplan et al. 2020: 0.050")
    _optimal_sizes(ax_a, env, frontier, label_n)
  _log_axes(ax_c, f"training compute C = {k:.3g} N D (FLOPs)", "held-out loss (nats/token)",
            "L against compute", logy=True)
  ax_c.legend(fontsize=7)
  _log_axes(ax_a, f"training compute C = {k:.3g} N D (FLOPs)", f"best {label_n}",
            "N_opt: the envelope's best size", logy=True)
  for ax in (ax_n, ax_d, ax_c):  # losses within a decade: plain numbers, not 2x10^0
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
  fig.tight_layout()
  return fig


def _optimal_sizes(ax, env: dict, frontier: dict, label_n: str) -> None:
  """The lower envelope's best size per compute value (hollow where the smallest or largest size
  is the best: a bound, left out of the fit), N_opt ~ C^a over the fitted ones, Kaplan's 0.73."""
  c, n = np.asarray(env["C"]), np.asarray(env["N"])
  inside = np.asarray(env["interior"], bool)
  ax.scatter(c[~inside], n[~inside], s=18, facecolors="none", edgecolors="0.4",
             label="smallest or largest size best (not fitted)")
  ax.scatter(c[inside], n[inside], s=18, color="k", label="interior best size (fitted)")
  law = frontier.get("n_law")
  if law and inside.sum() >= 2:
    grid = np.geomspace(c[inside].min(), c[inside].max(), 30)
    ax.plot(grid, law["coefficient"] * grid ** law["exponent"], "k-", lw=1.2,
            label=f"fit: N_opt ~ C^{law['exponent']:.2f}")
    _reference_slope(ax, c[inside], n[inside], KAPLAN_2020["a"],
                     f"Kaplan et al. 2020: C^{KAPLAN_2020['a']}")
  ax.legend(fontsize=7)


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


def report_figures(runs, report, out: str, budget_ids=None, floors=None,
                   convention: str | None = None) -> list[str]:
  """The figures of a research.scaling.report analysis, saved into `out` (PNG and PDF);
  `floors`: known loss floors to draw, [(label, nats), ...]; `convention`: how N and C are
  counted, for the labels (default: the report's description of C)."""
  from research.scaling import table
  results = report["approaches"]
  conv = dict(report["conventions"])
  if convention:
    conv["C"] = convention
  paths = []
  if "3" in results:
    theta = np.array(results["3"]["theta"])
    paths += save(loss_vs_compute(runs, theta, conv, floors), os.path.join(out, "loss_vs_compute"))
    paths += save(residuals(runs, theta), os.path.join(out, "residuals"))
  if "minima" in results.get("2", {}):
    ids = (table.budgets(runs.C, report["options"]["budget_tolerance_dex"])
           if budget_ids is None else budget_ids)
    paths += save(isoflop_curves(runs, results["2"]["minima"], ids, conv.get("C", ""), floors),
                  os.path.join(out, "isoflop_curves"))
  flops_range = (runs.C.min() / 1.5, runs.C.max() * 3)  # the data's range, a little beyond marked
  paths += save(allocation(results, conv, flops_range, data_max=float(runs.C.max())),
                os.path.join(out, "allocation"))
  return paths
