"""Ability curves against scale: the emergence study's tables of evaluations from its sweep folder,
where exact match crosses 50%, forecasts of that point, and the smoothness of each metric.

Input is a long table of evaluations (the emergence study's metrics.csv): one row per run,
checkpoint, task and metric with columns run, N, C, step, task, metric, value (plus the varying
fields, such as seed and positions). Curves are taken at each run's last checkpoint and averaged
over seeds at each N.

Forecasts follow the argument of Schaeffer et al. (2023): exact match over an answer of T tokens
is about the product of its per-token accuracies, so a per-token metric that moves smoothly in
log N predicts where exact match will jump. `forecast` fits logit(per-token accuracy) linearly in
log N on the models below the observed crossing only, predicts exact match as p(N)^T and solves
p(N)^T = 1/2; the baseline fits logit(exact match) itself in log N on the same models. A forecast
is a miss when it is more than `tolerance` decades of N from the observed crossing, or when it
cannot be made (a fit with a non-positive slope never reaches 1/2).
"""

import math
import os

import numpy as np
import pandas as pd

from research import store, tracking

EPS = 1e-3  # logits are taken of values clipped to [EPS, 1 - EPS]


def final(df: pd.DataFrame) -> pd.DataFrame:
  """The rows of each run's last evaluated step."""
  last = df.groupby("run").step.transform("max")
  return df[df.step == last]


def curve(df: pd.DataFrame, task: str, metric: str, by: str = "N") -> pd.DataFrame:
  """Mean, min, max and count over runs (seeds) of `metric` on `task` at each value of `by`, at
  the runs' last checkpoints, sorted by `by`."""
  rows = final(df)
  rows = rows[(rows.task == task) & (rows.metric == metric)]
  out = rows.groupby(by).value.agg(["mean", "min", "max", "count"]).reset_index()
  return out.sort_values(by).reset_index(drop=True)


def crossing(x, y, level: float = 0.5) -> float | None:
  """The first x (interpolated linearly in log x) where y reaches `level` from below; None when
  y never reaches it, NaN when it is already there at the smallest x (no crossing observed)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  if len(x) == 0 or not np.any(y >= level):
    return None
  i = int(np.argmax(y >= level))
  if i == 0:
    return float("nan")
  lx0, lx1 = math.log(x[i - 1]), math.log(x[i])
  frac = (level - y[i - 1]) / (y[i] - y[i - 1])
  return float(math.exp(lx0 + frac * (lx1 - lx0)))


def _logit(p):
  p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
  return np.log(p / (1 - p))


def _solve_logit_line(log_n, values, target_logit: float) -> float | None:
  """Least squares logit(values) = a + b log N; the N where it equals target_logit (None when
  fewer than two points or b <= 0)."""
  if len(log_n) < 2 or np.ptp(log_n) == 0:
    return None
  b, a = np.polyfit(log_n, _logit(values), 1)
  log_solution = (target_logit - a) / b if b > 0 else math.inf
  if log_solution > 230:  # b <= 0, or past N = 1e100: no forecast
    return None
  return float(math.exp(log_solution))


def forecast(n, exact_match, token_accuracy, answer_tokens: float, n50_observed: float | None,
             level: float = 0.5) -> dict:
  """Forecasts of the crossing from the sizes strictly below the observed one (all sizes when it
  was not reached): {"per_token": N or None, "exact_match": N or None, "models_used": count}."""
  n = np.asarray(n, float)
  below = n < n50_observed if n50_observed and not math.isnan(n50_observed) else np.ones_like(
      n, bool)
  log_n = np.log(n[below])
  per_token_target = level ** (1.0 / answer_tokens)
  return {
      "per_token": _solve_logit_line(log_n, np.asarray(token_accuracy, float)[below],
                                     float(_logit(per_token_target))),
      "exact_match": _solve_logit_line(log_n, np.asarray(exact_match, float)[below],
                                       float(_logit(level))),
      "models_used": int(below.sum()),
  }


def decades(forecast_n: float | None, observed_n: float | None) -> float | None:
  """log10(forecast / observed), None when either is missing."""
  if not forecast_n or not observed_n or math.isnan(observed_n):
    return None
  return math.log10(forecast_n / observed_n)


def weighted_loss(rows: pd.DataFrame, weights: dict) -> pd.Series:
  """sum_t w_t (-target_logprob of subtask t) / sum_t w_t at each N (seed means), over the rows
  of metric target_logprob; weights: {task: frequency in training}."""
  total = sum(weights.values())
  parts = [-rows[rows.task == task].groupby("N").value.mean() * w / total
           for task, w in weights.items()]
  return pd.concat(parts, axis=1).sum(axis=1, min_count=len(parts)).dropna().sort_index()


def power_law(n, loss) -> dict | None:
  """Least squares log L = log A - alpha log N: {"A", "alpha", "r2"} (None with < 3 points)."""
  n, loss = np.asarray(n, float), np.asarray(loss, float)
  if len(n) < 3:
    return None
  slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
  predicted = intercept + slope * np.log(n)
  residual = np.sum((np.log(loss) - predicted) ** 2)
  spread = np.sum((np.log(loss) - np.log(loss).mean()) ** 2)
  return {"A": float(np.exp(intercept)), "alpha": float(-slope),
          "r2": float(1 - residual / spread) if spread > 0 else 1.0}


def sharpness(n, loss) -> float:
  """How abruptly a loss curve drops: the largest fall between neighbouring sizes as a fraction
  of the whole fall (1: all at once; 1/(k-1) for an even fall over k sizes)."""
  loss = np.asarray(loss, float)[np.argsort(np.asarray(n, float))]
  total = loss[0] - loss.min()
  if len(loss) < 2 or total <= 0:
    return float("nan")
  return float(np.max(-np.diff(loss)) / total)


# The emergence study's tables (experiments/emergence.py): from its sweep folder to the curves.

MAIN_METRICS = ("exact_match", "token_accuracy", "target_logprob", "edit_distance", "brier", "ece",
                "multiple_choice_grade", "exact_match_lo", "exact_match_hi", "answer_tokens",
                "chance", "mc_logprob_correct", "mc_p_correct", "mc_p_correct_renorm",
                "mc_p_wrong_max_renorm")
CONTINUOUS = ("token_accuracy", "target_logprob", "edit_distance", "brier")
# Schaeffer et al. (2024)'s chain from a choice's likelihood to the grade (multiple-choice tasks)
CHOICE_CHAIN = ("mc_logprob_correct", "mc_p_correct_renorm", "mc_p_wrong_max_renorm",
                "multiple_choice_grade")
LOWER_IS_BETTER = ("edit_distance", "brier", "mc_p_wrong_max_renorm")
def chance(task: str) -> float:
  """Exact match of a guess: 0.5 for sparse parity's one-bit answer (a constant guess is right
  half the time), 0 for the other generated answers."""
  return 0.5 if task.startswith("parity") else 0.0


def metrics_table(workdir: str):
  """(metrics, calibration): one row per finished run, evaluated step, task and metric (columns
  run, N (non-embedding), C, step, task, metric, value, and D, seed, positions, N_total); the
  reliability bins of multiple-choice tasks separately (run, N, step, task, bin, confidence,
  accuracy, count)."""
  runs = store.table(workdir)
  rows, calib = [], []
  for r in runs[runs.status == "finished"].to_dict("records"):
    folder = store.run_dir(workdir, r["run"])
    s = store.summary(folder)
    config = store.read_json(os.path.join(folder, store.CONFIG)) or {}
    cfg = config.get("config", config)
    per_step = store.units(s) / s["steps"]
    per_token = s["flops"] / store.units(s)
    common = dict(run=r["run"], N=s["params_non_embedding"], N_total=s["params_total"],
                  seed=cfg.get("seed"), positions=cfg.get("model", {}).get("positions"))
    for rec in tracking.read_metrics(os.path.join(folder, "metrics.jsonl"), kind="eval"):
      D = rec["step"] * per_step
      at = dict(common, step=rec["step"], D=D, C=D * per_token)
      if "val_loss" in rec:
        rows.append(dict(at, task="text", metric="val_loss", value=rec["val_loss"]))
      for key, value in rec.items():
        task, _, metric = key.partition("/")
        if not metric:
          continue
        if metric.startswith("reliability_"):
          kind, _, b = metric[len("reliability_"):].rpartition("_")
          calib.append(dict(at, task=task, bin=int(b), kind=kind,
                            value=np.nan if value is None else float(value)))
        elif metric in MAIN_METRICS:
          rows.append(dict(at, task=task, metric=metric, value=value))
  df = pd.DataFrame(rows)
  cal = pd.DataFrame(calib)
  if len(cal):
    cal = cal.pivot_table(index=["run", "N", "seed", "positions", "step", "task", "bin"],
                          columns="kind", values="value").reset_index()
  return df, cal


def crossings(df, tasks, positions: str, tolerance: float) -> list[dict]:
  """Per task: the N and C where the seed-mean exact match crosses 50% (last checkpoints), and
  the two forecasts from the sizes below it (a miss when more than `tolerance` decades off)."""
  out = []
  for task in tasks:
    em = curve(df[df.positions == positions], task, "exact_match")
    if em.empty or chance(task) >= 0.5:  # a 50% crossing of a coin flip says nothing
      continue
    acc = curve(df[df.positions == positions], task, "token_accuracy")
    cs = curve(df[df.positions == positions], task, "exact_match", by="C")
    tokens = curve(df[df.positions == positions], task, "answer_tokens")["mean"].mean()
    n50 = crossing(em.N, em["mean"])
    c50 = crossing(cs.C, cs["mean"])
    entry = dict(task=task, positions=positions, n50_observed=n50, c50_observed=c50,
                 answer_tokens=float(tokens), sizes=len(em),
                 exact_match_max=float(em["mean"].max()))
    f = forecast(em.N, em["mean"], acc["mean"], tokens, n50)
    for method in ("per_token", "exact_match"):
      err = decades(f[method], n50)
      observed = n50 is not None and not math.isnan(n50)
      entry[method] = dict(n50_forecast=f[method], decades=err,  # miss: None when not observed
                           miss=(err is None or abs(err) > tolerance) if observed
                           else None)
    entry["models_used"] = f["models_used"]
    out.append(entry)
  return out


def smoothness(df, tasks, positions: str = "rotary") -> list[dict]:
  """Per task and metric (exact match, the continuous metrics and, for multiple choice, the
  chain from likelihood to grade): breakthroughness and linearity (BIG-bench) of the seed-mean
  curve in log N, and whether it is monotone (lower-is-better metrics negated)."""
  from research.evals import metrics
  out = []
  for task in tasks:
    for metric in ("exact_match",) + CONTINUOUS + CHOICE_CHAIN:
      c = curve(df[df.positions == positions], task, metric)
      if len(c) < 3:
        continue
      y = c["mean"].to_numpy() * (-1 if metric in LOWER_IS_BETTER else 1)
      steps = np.diff(y)
      out.append(dict(task=task, metric=metric,
                      breakthroughness=metrics.breakthroughness(np.log(c.N), y),
                      linearity=metrics.linearity(np.log(c.N), y),
                      monotone=bool(np.all(steps >= -1e-9)),
                      improving_steps=f"{int(np.sum(steps > 0))}/{len(steps)}"))
  return out


def parity_weights(c_tasks: dict, tasks: list[str]) -> dict:
  """{parity_tNN: training frequency} (subtask i drawn with probability ~ (i+1)^-(alpha+1))."""
  alpha = c_tasks["parity_alpha"]
  return {t: (int(t.rsplit("_t", 1)[1]) + 1) ** -(alpha + 1) for t in tasks
          if t.startswith("parity_t")}


def pooled_reliability(cal):
  """Reliability bins at each run's last step, pooled over seeds per N."""
  if cal.empty:
    return cal
  last = cal.groupby("run").step.transform("max")
  cal = cal[cal.step == last].copy()
  cal["hits"] = cal.accuracy.fillna(0) * cal["count"]
  cal["conf"] = cal.confidence.fillna(0) * cal["count"]
  pooled = cal.groupby(["N", "bin"])[["hits", "conf", "count"]].sum().reset_index()
  with np.errstate(invalid="ignore", divide="ignore"):
    pooled["accuracy"] = pooled.hits / pooled["count"]
    pooled["confidence"] = pooled.conf / pooled["count"]
  return pooled
