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
  along_training      exact match against training tokens, one line per run
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
    ax.scatter(values[x], values.value, s=10, color="tab:blue", alpha=0.5, lw=0)
    mean = values.groupby(x).value.mean()
    ax.plot(mean.index, mean.values, "-", color="tab:blue", lw=1.5)
    lo = sub[sub.metric == f"{metric}_lo"].groupby(x).value.mean()
    hi = sub[sub.metric == f"{metric}_hi"].groupby(x).value.mean()
    if len(lo) and len(hi):
      ax.fill_between(lo.index, lo.values, hi.values, color="tab:blue", alpha=0.15, lw=0)
    level = (chance or {}).get(task, 0.0)
    ax.axhline(level, color="k", ls=":", lw=1)
    ax.set_ylim(-0.03, 1.03)
    _log_axes(ax, "training FLOPs C" if x == "C" else "non-embedding parameters N",
              LABELS.get(metric, metric) if ax is axes[0] else "", task)
  fig.suptitle(f"{LABELS.get(metric, metric)} at the end of training ({positions} positions; "
               "points: seeds, line: mean, band: mean of the seeds' 95% bootstrap intervals over "
               "examples, dotted: chance)", fontsize=9)
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
        ax.scatter(values.N, values.value, s=8, alpha=0.5, lw=0)
        mean = values.groupby("N").value.mean()
        ax.plot(mean.index, mean.values, "-", lw=1.5)
      if metric in ("exact_match", "token_accuracy"):
        ax.set_ylim(-0.03, 1.03)
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
  _log_axes(left, "N (non-embedding)", "answer loss (nats)", "mean loss", logy=True)
  _log_axes(right, "N (non-embedding)", "answer loss (nats)", "each subtask")
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
  fig.suptitle("Exact match during training (colour: N, small = dark)", fontsize=9)
  fig.tight_layout()
  return fig
