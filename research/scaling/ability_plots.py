"""Figures of ability against scale (the emergence study), from its long metrics table
(research/scaling/emergence.py describes the table). Each function returns a Figure; save them
with research.scaling.plots.save.

  exact_match_panels  Wei et al. (2022) style: exact match against C or N, one panel per task,
                      seeds as points, their mean as a line with the examples' bootstrap band,
                      the chance line
  metric_grid         Schaeffer et al. (2023) style: continuous metrics of the same models
  calibration         ECE against N, and a reliability diagram per size
  parity              multitask sparse parity: mean loss against N with its power law, and every
                      subtask's loss
  along_training      exact match against training tokens, one line per run, colour bar of N
  forecast_panels     held-out models against the two-step forecast and direct extrapolations
  two_step_steps      each task's step 1 (loss against N) and step 2 (metric against loss)
  choice_decomposition  Schaeffer et al. (2024): from a choice's likelihood to the grade

Sizes are drawn as markers (seeds' mean and range), never joined by straight lines, which would
suggest a shape between sparse sizes that the ladder did not measure.
"""

import math

import numpy as np

from research.scaling import emergence
from research.scaling.plots import _log_axes, plt

LABELS = {"exact_match": "exact match", "token_accuracy": "per-token accuracy",
          "target_logprob": "log P(target) (nats)", "edit_distance": "token edit distance",
          "brier": "Brier score (per token)", "multiple_choice_grade": "multiple-choice grade",
          "ece": "expected calibration error"}


def _grid(n: int, width: float = 2.6, height: float = 2.3, cols: int = 5):
  cols = min(cols, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=110,
                           squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  return fig, axes.ravel()


def exact_match_panels(df, tasks: list[str], x: str = "C", metric: str = "exact_match",
                       positions: str = "rotary", chance: dict | None = None):
  """One panel per task: `metric` at the runs' last checkpoints against x ("C" or "N")."""
  fig, axes = _grid(len(tasks))
  rows = emergence.final(df[df.positions == positions])
  for ax, task in zip(axes, tasks):
    sub = rows[(rows.task == task)]
    values = sub[sub.metric == metric]
    if values.empty:
      ax.set_title(f"{task}: not scored", fontsize=9)
      continue
    _seed_markers(ax, values, x)
    level = (chance or {}).get(task, 0.0)
    ax.axhline(level, color="k", ls=":", lw=1)
    ax.set_ylim(-0.03, 1.03)
    _log_axes(ax, "training FLOPs C" if x == "C" else "non-embedding parameters N",
              LABELS.get(metric, metric) if ax is axes[0] else "", task)
  fig.suptitle(f"{LABELS.get(metric, metric)} at the end of training ({positions} positions; "
               "small points: seeds; large: their mean, bars: min to max; dotted: chance)",
               fontsize=9)
  fig.tight_layout()
  return fig


def _seed_markers(ax, values, x: str = "N", colour: str = "tab:blue", filled: bool = True,
                  label: str | None = None):
  """Seeds as small points, their mean as a marker with a min-max bar: no line between sizes."""
  ax.scatter(values[x], values.value, s=7, color=colour, alpha=0.35, lw=0)
  stats = values.groupby(x).value.agg(["mean", "min", "max"])
  ax.errorbar(stats.index, stats["mean"], yerr=[stats["mean"] - stats["min"],
                                                stats["max"] - stats["mean"]],
              fmt="o", ms=4, color=colour, mfc=colour if filled else "white", capsize=2, lw=1,
              label=label)


def informative(df, tasks: list[str], metric: str = "exact_match", margin: float = 0.1,
                positions: str = "rotary") -> list[str]:
  """The tasks whose seed-mean `metric` rises at least `margin` above chance at some size."""
  rows = emergence.final(df[(df.positions == positions) & (df.metric == metric)])
  best = rows.groupby(["task", "N"]).value.mean().groupby("task").max()
  return [t for t in tasks if t in best and best[t] >= emergence.chance(t) + margin]


def forecast_panels(results: list[dict], df, positions: str = "rotary", fit_fraction=0.25):
  """One panel per task: its metric against N at the last checkpoint (fit sizes filled, held-out
  open), the two-step forecast with its bootstrap band (solid over the fitted sizes, dashed where
  it extrapolates), the two direct extrapolations, chance, and the fit's compute cut-off."""
  fig, axes = _grid(len(results), width=3.1, height=2.7, cols=4)
  final = emergence.final(df[df.positions == positions])
  for ax, r in zip(axes, results):
    values = final[(final.task == r["task"]) & (final.metric == r["kind"]["metric"])]
    fit_top = max(r["fit_sizes"]) if r["fit_sizes"] else 0
    _seed_markers(ax, values[values.N <= fit_top], colour="tab:blue", label="fitted on")
    _seed_markers(ax, values[values.N.isin(r["heldout"])], colour="tab:red", filled=False,
                  label="held out")
    rest = values[(values.N > fit_top) & ~values.N.isin(r["heldout"])]
    if len(rest):
      _seed_markers(ax, rest, colour="0.5", label="not used")
    curve = r.get("curve")
    if curve:
      n, y = np.asarray(curve["N"]), np.asarray(curve["metric"])
      band = np.asarray(curve["band"])
      inside = n <= fit_top
      ax.fill_between(n, band[:, 0], band[:, 1], color="tab:orange", alpha=0.2, lw=0)
      ax.plot(n[inside], y[inside], "-", color="tab:orange", lw=1.5, label="two-step")
      ax.plot(n[~inside], y[~inside], "--", color="tab:orange", lw=1.5)
    for method in ("exact_match", "per_token"):
      m = r["methods"].get(method)
      if m and np.isfinite(m["predicted"]).all():
        ax.plot(r["heldout"], m["predicted"], marker="x", ls="none", color="tab:green"
                if method == "exact_match" else "tab:purple", ms=6,
                label="extrapolated " + ("metric" if method == "exact_match" else "per-token"))
    ax.axhline(r["kind"]["chance"], color="k", ls=":", lw=1)
    if fit_top:
      ax.axvline(fit_top, color="0.6", ls=":", lw=1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xscale("log")
    ax.set_title(r["task"], fontsize=9)
    ax.set_xlabel("N (non-embedding)", fontsize=8)
    ax.set_ylabel(LABELS.get(r["kind"]["metric"], r["kind"]["metric"]) if ax is axes[0] else "",
                  fontsize=8)
  axes[0].legend(fontsize=6, loc="upper left")
  fig.suptitle(f"Held-out models (open) forecast from runs of at most {fit_fraction:g} of their "
               "compute (filled)\norange: two-step, 95% band over seeds, dashed beyond the fitted "
               "sizes; crosses: direct extrapolations;\ndotted: chance and the largest fitted "
               "size", fontsize=8)
  fig.tight_layout()
  return fig


def two_step_steps(results: list[dict]):
  """Each task's two steps: the answer loss against N with its law (left), the metric against the
  loss with its sigmoid (right), for the fitted runs; held-out sizes' seed means added open."""
  from research.scaling import two_step
  fitted = [r for r in results if r.get("chain") is not None]
  fig, axes = plt.subplots(max(1, len(fitted)), 2, figsize=(7.0, 2.5 * max(1, len(fitted))),
                           dpi=110, squeeze=False)
  for (left, right), r in zip(axes, fitted):
    chain, law = r["chain"], r["points"]
    left.scatter(law["law"].N, law["law"].loss, s=8, color="tab:blue", alpha=0.6, lw=0)
    n = np.geomspace(law["law"].N.min(), 2 * max(r["heldout"]), 50)
    loss, _ = chain.predict({"X": n})
    p = chain.law.params
    left.plot(n, loss, "-", color="tab:orange",
              label=f"{p['E']:.2f} + {p['A']:.3g} N^-{p['alpha']:.2f}")
    if len(law["heldout"]):
      left.scatter(law["heldout"].N, law["heldout"].loss, s=14, facecolors="white",
                   edgecolors="tab:red", label="held out")
    _log_axes(left, "N (non-embedding)", "answer loss (nats)", f"{r['task']}: step 1", logy=True)
    left.legend(fontsize=6)
    link = law["link"]
    right.scatter(link.loss, link.metric, s=8, color="tab:blue", alpha=0.5, lw=0,
                  label="fitted runs, every checkpoint")
    grid = np.linspace(min(link.loss.min(), law["heldout"].loss.min() if len(law["heldout"])
                           else link.loss.min()), link.loss.max(), 80)
    right.plot(grid, two_step.link(grid, chain.link["L0"], chain.link["k"], chain.chance,
                                   chain.upper), "-", color="tab:orange",
               label=f"sigmoid, L0 {chain.link['L0']:.2f}, k {chain.link['k']:.2f}")
    if len(law["heldout"]):
      right.scatter(law["heldout"].loss, law["heldout"].metric, s=14, facecolors="white",
                    edgecolors="tab:red", label="held out (not fitted)")
    right.axhline(chain.chance, color="k", ls=":", lw=1)
    right.set_ylim(-0.03, 1.03)
    right.set_xlabel("answer loss (nats)", fontsize=8)
    right.set_ylabel(LABELS.get(r["kind"]["metric"], r["kind"]["metric"]), fontsize=8)
    right.set_title(f"{r['task']}: step 2", fontsize=9)
    right.legend(fontsize=6)
  fig.tight_layout()
  return fig


CHOICE_PARTS = (("mc_p_correct", "P(correct), unnormalised", "tab:blue"),
                ("mc_p_correct_renorm", "P(correct), renormalised", "tab:orange"),
                ("mc_p_wrong_max_renorm", "P(top wrong choice), renormalised", "tab:red"),
                ("multiple_choice_grade", "multiple-choice grade", "k"))


def choice_decomposition(df, tasks: list[str], positions: str = "rotary"):
  """Schaeffer et al. (2024)'s chain from likelihood to grade on multiple-choice tasks: the
  correct choice's probability, renormalised over the choices, the mass on the most likely wrong
  choice, and the grade, against N (seed markers, chance dotted)."""
  fig, axes = _grid(len(tasks), width=3.4, height=2.8, cols=3)
  final = emergence.final(df[df.positions == positions])
  for ax, task in zip(axes, tasks):
    rows = final[final.task == task]
    for metric, label, colour in CHOICE_PARTS:
      values = rows[rows.metric == metric]
      if len(values):
        _seed_markers(ax, values, colour=colour, label=label)
    chance = rows[rows.metric == "chance"].value
    if len(chance):
      ax.axhline(float(chance.mean()), color="k", ls=":", lw=1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xscale("log")
    ax.set_title(task, fontsize=9)
    ax.set_xlabel("N (non-embedding)", fontsize=8)
  axes[0].legend(fontsize=6)
  fig.suptitle("From likelihood to grade (Schaeffer et al. 2024): seeds' mean and range; "
               "dotted: chance", fontsize=9)
  fig.tight_layout()
  return fig


def metric_grid(df, tasks: list[str], metrics: list[str], positions: str = "rotary"):
  """Rows: metrics; columns: tasks; each against N at the last checkpoints (seed mean and
  points)."""
  rows_df = emergence.final(df[df.positions == positions])
  fig, axes = plt.subplots(len(metrics), len(tasks), figsize=(2.5 * len(tasks),
                                                              2.1 * len(metrics)),
                           dpi=110, squeeze=False)
  for i, metric in enumerate(metrics):
    for j, task in enumerate(tasks):
      ax = axes[i, j]
      values = rows_df[(rows_df.task == task) & (rows_df.metric == metric)]
      if not values.empty:
        _seed_markers(ax, values)
      if metric in ("exact_match", "token_accuracy"):
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(emergence.chance(task) if metric == "exact_match" else 0.0, color="k",
                   ls=":", lw=1)
      _log_axes(ax, "N (non-embedding)" if i == len(metrics) - 1 else "",
                LABELS.get(metric, metric) if j == 0 else "", task if i == 0 else "")
  fig.suptitle(f"The same models under five metrics ({positions} positions, last checkpoint)",
               fontsize=10)
  fig.tight_layout()
  return fig


def calibration(df, calib, task: str, positions: str = "rotary"):
  """ECE (and grade) of `task` against N; reliability diagrams per N from `calib` (columns N,
  bin, confidence, accuracy, count: pooled over seeds)."""
  sizes = sorted(calib.N.unique())
  fig, axes = plt.subplots(1, 1 + len(sizes), figsize=(2.6 * (1 + len(sizes)), 2.6), dpi=110,
                           squeeze=False)
  axes = axes.ravel()
  rows = emergence.final(df[(df.positions == positions) & (df.task == task)])
  for metric, colour in (("ece", "tab:red"), ("multiple_choice_grade", "tab:blue")):
    values = rows[rows.metric == metric]
    mean = values.groupby("N").value.mean()
    axes[0].plot(mean.index, mean.values, "o-", color=colour, ms=3, label=LABELS[metric])
    axes[0].scatter(values.N, values.value, s=6, color=colour, alpha=0.4, lw=0)
  _log_axes(axes[0], "N (non-embedding)", "", f"{task}: calibration")
  axes[0].legend(fontsize=7)
  for ax, n in zip(axes[1:], sizes):
    table = calib[calib.N == n]
    filled = table[table["count"] > 0]
    ax.bar(filled.confidence, filled.accuracy, width=0.08, alpha=0.7)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"N = {n:,.0f}", fontsize=9)
    ax.set_xlabel("confidence", fontsize=8)
  axes[1].set_ylabel("accuracy")
  fig.tight_layout()
  return fig


def parity(df, weights: dict, law: dict | None, positions: str = "rotary"):
  """Sparse parity: frequency-weighted mean loss of the answer against N with its fitted power
  law (left), every subtask's loss (right)."""
  rows = emergence.final(df[(df.positions == positions) & (df.metric == "target_logprob")])
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
  cmap = plt.get_cmap("viridis")
  for i, (task, _) in enumerate(sorted(weights.items())):
    values = rows[rows.task == task]
    mean = -values.groupby("N").value.mean()
    right.plot(mean.index, mean.values, "o-", ms=2, lw=1, color=cmap(i / max(1, len(weights))),
               label=task.rsplit("_", 1)[-1])
  mean_loss = emergence.weighted_loss(rows, weights)
  left.plot(mean_loss.index, mean_loss.values, "o", color="k", label="mean over subtasks")
  if law:
    n = np.geomspace(mean_loss.index.min(), mean_loss.index.max(), 50)
    left.plot(n, law["A"] * n ** -law["alpha"], "r-",
              label=f"{law['A']:.3g} N^-{law['alpha']:.3f} (R2 {law['r2']:.2f})")
  _log_axes(left, "N (non-embedding)", "answer loss (nats)", "mean loss")
  _log_axes(right, "N (non-embedding)", "answer loss (nats)", "each subtask")
  for ax in (left, right):
    ax.axhline(math.log(2), color="k", ls=":", lw=1, label="ln 2: a coin flip")
  left.legend(fontsize=7)
  right.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  return fig


def along_training(df, tasks: list[str], positions: str = "rotary"):
  """Exact match against training tokens, one line per run, coloured by N."""
  fig, axes = _grid(len(tasks), cols=min(5, len(tasks)))
  rows = df[(df.positions == positions) & (df.metric == "exact_match")]
  sizes = sorted(rows.N.unique())
  cmap = plt.get_cmap("viridis")
  for ax, task in zip(axes, tasks):
    for run, group in rows[rows.task == task].groupby("run"):
      group = group.sort_values("D")
      colour = cmap(sizes.index(group.N.iloc[0]) / max(1, len(sizes) - 1))
      ax.plot(group.D, group.value, "-", color=colour, lw=1, alpha=0.8)
    ax.set_ylim(-0.03, 1.03)
    _log_axes(ax, "training tokens", "exact match" if ax is axes[0] else "", task)
  fig.suptitle("Exact match during training, one line per run", fontsize=9)
  fig.tight_layout()
  norm = plt.matplotlib.colors.LogNorm(vmin=min(sizes), vmax=max(sizes))
  bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), shrink=0.8)
  bar.set_label("N (non-embedding)", fontsize=8)
  return fig
