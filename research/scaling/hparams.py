"""Hyperparameter laws: the optimal learning rate and batch size as power laws of scale.

DeepSeek LLM 2024 (arXiv 2401.02954, Sec. 3.1) grid-search the learning rate and batch size at
several compute budgets, keep the "near-optimal" runs of each budget (generalisation error within
0.25% of that budget's minimum) and fit, through all those points,

    lr_opt(X) = c_lr X^a_lr        batch_opt(X) = c_B X^a_B

by least squares in log-log space. Porian et al. 2024 (arXiv 2406.19146) do the same against the
model size N. A *cell* is the set of runs that share one scale: one compute budget C (cells by
C), one size N, one token count D, or one (N, D) pair (cells by ND, law against C, N or D).

    scale = cell_scale({"N": n, "D": d, "C": 6 * n * d}, by="C")    # {X, cells, name}
    fit = fit_hparams(scale["X"], scale["cells"], loss, {"lr": lr, "batch": batch}, within=0.25)
    fit["laws"]["lr"]                   # {"exponent": a_lr, "coefficient": c_lr, "n_points"}
    boot = bootstrap_hparams(scale["X"], scale["cells"], loss, {"lr": lr}, within=0.25,
                             n_boot=200, seed=0, predict_x=[1e21])
    boot["intervals"]["lr"]["exponent"]  # (low, high)

The bootstrap resamples what is random, the runs of each cell (with replacement, among
themselves: `fit.resample_weights(..., within=cells)`), then recomputes every cell's best run and
near-optimal set and refits with the draw counts as weights. A resample whose near-optimal points
span fewer than 2 distinct X (or give a non-finite fit) is counted by reason, never dropped
silently. What it cannot see is the grid itself: a grid off-centre around the optimum biases the
near-optimal mean towards the grid's centre in every resample alike.
"""

import numpy as np

from research.errors import UserError
from research.scaling import fit as fit_lib
from research.scaling import table

HPARAMS = ("lr", "batch")
SYMBOLS = dict(lr="lr_opt", batch="B_opt")
SCALES = dict(C="compute C (FLOPs)", N="parameters N", D="tokens D")
BY = ("C", "N", "D", "ND")
REFERENCE = dict(
    source="DeepSeek LLM 2024 (arXiv 2401.02954, Sec. 3.1)", X="C",
    lr=dict(coefficient=0.3118, exponent=-0.1250),
    batch=dict(coefficient=0.2920, exponent=0.3271),
    note="their C = M D with M the non-embedding FLOPs per token (not 6 N); B in tokens, "
         "C in FLOPs; comparable only where this table's batch and C use those units")
FEW_X = "near-optimal points span fewer than 2 distinct X"
NOT_FINITE = "non-finite fit"


def scale_columns(df, *, n=None, d=None, c=None, flops_per_param_token: float = 6.0) -> dict:
  """The checked scale columns the table gives: N, D, C (C = k N D or D = C / (k N) when one of
  them is absent) and how each was obtained; UserError names a bad column and rows."""
  k = float(flops_per_param_token)
  got = {}
  for key, column, role in (("N", n, "N, parameters"), ("D", d, "D, tokens"),
                            ("C", c, "C, FLOPs")):
    if column is not None:
      got[key] = (table._column(df, column, role), f"column {column!r}")
  if "C" not in got and {"N", "D"} <= set(got):
    got["C"] = (k * got["N"][0] * got["D"][0], f"C = {k:g} N D")
  if "D" not in got and {"N", "C"} <= set(got):
    got["D"] = (got["C"][0] / (k * got["N"][0]), f"D = C / ({k:g} N)")
  return got


NEEDS = dict(C="the FLOPs column (--c) or both --n and --d", N="the parameters column (--n)",
             D="the tokens column (--d) or both --n and --c")


def cell_scale(scales: dict, by: str, against: str | None = None,
               tolerance_dex: float = 1e-3) -> dict:
  """Cell ids and the law's X per row. `scales`: {"N"|"D"|"C": values} (arrays or the (values,
  how) pairs of scale_columns). Cells by C, N or D group rows whose log10 value agree within
  `tolerance_dex` (table.budgets), and X is that scale; cells by ND group (N, D) pairs and X is
  `against` (C unless told)."""
  if by not in BY:
    raise UserError(f"--by {by!r}: choose one of {', '.join(BY)}")
  values = {k: np.asarray(v[0] if isinstance(v, tuple) else v, np.float64)
            for k, v in scales.items()}
  keys = ["N", "D"] if by == "ND" else [by]
  name = against or ("C" if by == "ND" else by)
  if by != "ND" and name != by:
    raise UserError(f"--against {name}: a cell by {by} has one {by} but many {name}; "
                    "--against goes with --by ND")
  for key in dict.fromkeys(keys + [name]):
    if key not in values:
      raise UserError(f"--by {by}{' --against ' + name if against else ''} needs {NEEDS[key]}")
  ids = [table.budgets(values[key], tolerance_dex) for key in keys]
  _, cells = np.unique(np.stack(ids, axis=1), axis=0, return_inverse=True)
  return dict(X=values[name], cells=cells.ravel(), name=name, by=by)


def check_cells(x, cells, rows=None, x_name: str = "X") -> None:
  """Every cell has two runs or more; the cells span two X values or more."""
  x, cells = np.asarray(x, np.float64), np.asarray(cells)
  rows = np.arange(1, len(x) + 1) if rows is None else np.asarray(rows)
  for c in np.unique(cells):
    here = cells == c
    if here.sum() < 2:
      raise UserError(f"the cell at {x_name} = {x[here][0]:.4g} has one run (row "
                      f"{rows[here][0]}); "
                      "near-optimal runs need several runs per cell (a grid of lr and batch)")
  if len(np.unique(cell_x(x, cells))) < 2:
    raise UserError(f"every cell has {x_name} = {x[0]:.4g}: a power law needs cells at 2 "
                    f"distinct {x_name} or more")


def cell_x(x, cells) -> np.ndarray:
  """One X per cell (the geometric mean of its rows', which agree within the tolerance)."""
  x, cells = np.asarray(x, np.float64), np.asarray(cells)
  return np.array([np.exp(np.mean(np.log(x[cells == c]))) for c in np.unique(cells)])


def near_optimal(loss, cells, within: float, weights=None) -> np.ndarray:
  """Masks (..., n) of the runs within `within` percent of their cell's best loss; `weights`
  (..., n) are draw counts (a run with weight 0 is not in that resample)."""
  loss, cells = np.asarray(loss, np.float64), np.asarray(cells)
  drawn = np.ones_like(loss, bool) if weights is None else np.asarray(weights) > 0
  present = np.where(drawn, loss, np.inf)
  best = np.empty_like(present)
  for c in np.unique(cells):
    here = cells == c
    best[..., here] = present[..., here].min(axis=-1, keepdims=True)
  return drawn & (loss <= best * (1.0 + within / 100.0))


def power_fit(x, y, weights) -> dict:
  """Weighted least squares of log y on log x, vectorised over the leading axes of `weights`:
  {exponent, log_coefficient, distinct_x}; NaN where the points span fewer than 2 distinct x."""
  log_x, log_y = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
  w = np.asarray(weights, np.float64)
  _, x_id = np.unique(np.round(log_x, 10), return_inverse=True)
  distinct = ((w > 0) @ np.eye(x_id.max() + 1)[x_id.ravel()] > 0).sum(axis=-1)
  total = w.sum(axis=-1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_x = (w * log_x).sum(-1, keepdims=True) / total
    mean_y = (w * log_y).sum(-1) / total[..., 0]
    dx = log_x - mean_x
    slope = (w * dx * log_y).sum(-1) / (w * dx * dx).sum(-1)
  slope = np.where(distinct >= 2, slope, np.nan)
  return dict(exponent=slope, log_coefficient=mean_y - slope * mean_x[..., 0],
              distinct_x=distinct)


def cells_report(x, cells, loss, hparams: dict, mask, rows=None) -> list[dict]:
  """Per cell, by X: runs, near-optimal points, the best run (row, loss, hparams) and the range
  of each hparam over the near-optimal runs."""
  rows = np.arange(1, len(loss) + 1) if rows is None else np.asarray(rows)
  out = []
  for c, x_c in zip(np.unique(cells), cell_x(x, cells)):
    here = np.flatnonzero(cells == c)
    best = here[np.argmin(loss[here])]
    near = here[mask[here]]
    entry = dict(X=float(x_c), runs=len(here), near_optimal=len(near),
                 best=dict(row=int(rows[best]), loss=float(loss[best]),
                           **{k: float(v[best]) for k, v in hparams.items()}),
                 near_optimal_range={k: [float(v[near].min()), float(v[near].max())]
                                     for k, v in hparams.items()})
    out.append(entry)
  return sorted(out, key=lambda e: e["X"])


def check_hparams(hparams: dict) -> None:
  if not hparams:
    raise UserError("give the learning-rate column (--lr), the batch-size column (--batch) or "
                    "both")
  unknown = set(hparams) - set(HPARAMS)
  if unknown:
    raise UserError(f"unknown hyperparameters {sorted(unknown)}: laws are for {HPARAMS}")


def fit_hparams(x, cells, loss, hparams: dict, within: float = 0.25, rows=None,
                x_name: str = "X") -> dict:
  """The near-optimal set of each cell and the power law of each hparam through it; `rows` and
  `x_name` (C, N or D) name the rows and the scale in a UserError."""
  if not 0 <= within <= 100:
    raise UserError(f"--within {within:g}: must be a percentage in [0, 100]")
  check_hparams(hparams)
  x, loss = np.asarray(x, np.float64), np.asarray(loss, np.float64)
  hparams = {k: np.asarray(v, np.float64) for k, v in hparams.items()}
  check_cells(x, cells, rows, x_name)
  mask = near_optimal(loss, cells, within)
  laws = {}
  for name, values in hparams.items():
    got = power_fit(x, values, mask.astype(np.float64))
    laws[name] = dict(exponent=float(got["exponent"]),
                      coefficient=float(np.exp(got["log_coefficient"])),
                      n_points=int(mask.sum()), distinct_x=int(got["distinct_x"]))
  return dict(within_percent=float(within), laws=laws, near_optimal=mask,
              cells=cells_report(x, cells, loss, hparams, mask, rows))


def predict(law: dict, x) -> np.ndarray:
  """c X^a for a law {coefficient, exponent}."""
  return law["coefficient"] * np.asarray(x, np.float64) ** law["exponent"]


def bootstrap_hparams(x, cells, loss, hparams: dict, within: float = 0.25, *, n_boot: int = 200,
                      seed: int = 0, ci: float = 0.95, predict_x=()) -> dict:
  """Refit on `n_boot` resamples of the runs within each cell: intervals of every exponent and
  coefficient and of the predictions at `predict_x`; failed resamples counted by reason."""
  x, loss = np.asarray(x, np.float64), np.asarray(loss, np.float64)
  weights = fit_lib.resample_weights(np.arange(len(loss)), n_boot, seed, within=cells)
  mask = near_optimal(loss, cells, within, weights)
  failed = np.zeros(n_boot, bool)
  failures, samples, intervals = {}, {}, {}
  for name, values in hparams.items():
    got = power_fit(x, values, weights * mask)
    few = got["distinct_x"] < 2
    bad = ~few & ~(np.isfinite(got["exponent"]) & np.isfinite(got["log_coefficient"]))
    for reason, where in ((FEW_X, few), (NOT_FINITE, bad)):
      if where.any():
        failures[f"{name}: {reason}"] = int(where.sum())
    failed |= few | bad
    samples[name] = dict(exponent=got["exponent"], coefficient=np.exp(got["log_coefficient"]))
  for name, s in samples.items():
    ok = {k: v[~failed] for k, v in s.items()}
    intervals[name] = {k: fit_lib.interval(v, ci) if len(v) else [np.nan, np.nan]
                       for k, v in ok.items()}
    samples[name] = {k: v.tolist() for k, v in ok.items()}
  predictions = [dict(X=float(p), **{name: fit_lib.interval(predict_samples(s, p), ci)
                                     for name, s in samples.items()}) for p in predict_x]
  return dict(n_boot=n_boot, n_failed=int(failed.sum()), failures=failures, ci=ci, seed=seed,
              resampled="the runs within each cell, with replacement", intervals=intervals,
              predictions=predictions, samples=samples)


def predict_samples(samples: dict, x) -> np.ndarray:
  """A law's predictions at `x` from each bootstrap sample {coefficient: [...], exponent}."""
  return np.asarray(samples["coefficient"]) * float(x) ** np.asarray(samples["exponent"])


def reference_prediction(name: str, x) -> float:
  """DeepSeek LLM's lr_opt or B_opt at compute C = x (their C = M D, FLOPs; B in tokens)."""
  return float(predict(REFERENCE[name], x))


def figure(x, loss, hparams: dict, result: dict, boot: dict | None = None, *, x_name: str = "C",
           x_label: str = "", predict_x=(), reference: bool = True):
  """A panel per hparam against X: every run (grey), the near-optimal ones highlighted, the fit
  (solid over the cells' X, dashed beyond, out to `predict_x`), its bootstrap band, and
  DeepSeek LLM's law as a reference where X is C. Returns a Figure (plots.save writes it)."""
  from research.scaling import plots
  plt = plots.plt
  names = [n for n in HPARAMS if n in hparams]
  fig, axes = plt.subplots(1, len(names), figsize=(5.4 * len(names), 4.2), squeeze=False)
  mask = result["near_optimal"]
  lo, hi = float(np.min(x)), float(np.max(x))
  top = max([hi, *predict_x])
  grid = np.geomspace(lo / 1.3, top * 1.3, 120)
  inside = (grid >= lo) & (grid <= hi)
  for ax, name in zip(axes[0], names):
    law, values = result["laws"][name], np.asarray(hparams[name])
    ax.scatter(x[~mask], values[~mask], s=10, color="0.7", label="run")
    ax.scatter(x[mask], values[mask], s=18, color="C0",
               label=f"near-optimal (loss within {result['within_percent']:g}% of its cell's best)")
    line = predict(law, grid)
    ax.plot(grid[inside], line[inside], "k-",
            label=f"fit: {SYMBOLS[name]} = {law['coefficient']:.4g} {x_name}^{law['exponent']:.4f}")
    ax.plot(grid[grid >= hi], line[grid >= hi], "k--", label="extrapolated")
    ax.plot(grid[grid <= lo], line[grid <= lo], "k--")
    if boot and boot["samples"][name]["exponent"]:
      curves = np.array([predict_samples(boot["samples"][name], g) for g in grid]).T
      band = np.quantile(curves, [(1 - boot["ci"]) / 2, (1 + boot["ci"]) / 2], axis=0)
      ax.fill_between(grid, band[0], band[1], color="grey", alpha=0.3,
                      label=f"{boot['ci']:.0%} bootstrap band")
    if len(predict_x):
      ax.scatter(predict_x, predict(law, predict_x), marker="D", color="C3", s=24, zorder=3,
                 label="--predict")
    if reference and x_name == "C":
      ax.plot(grid, predict(REFERENCE[name], grid), color="tab:red", ls=":", lw=1,
              label=f"reference: DeepSeek LLM 2024 ({REFERENCE[name]['coefficient']} "
                    f"C^{REFERENCE[name]['exponent']}; their C = M D)")
    ylabel = "learning rate" if name == "lr" else "batch size"
    plots._log_axes(ax, x_label or SCALES.get(x_name, x_name), ylabel,
                    f"{SYMBOLS[name]} against {x_name}", logy=True)
    plots._extrapolated(ax, hi)
    ax.legend(fontsize=6)
  fig.tight_layout()
  return fig

