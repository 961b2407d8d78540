"""Forecasting an ability's held-out models from smaller ones: the two-step forecast
(research/scaling/two_step.py) against the two direct extrapolations, on the emergence study's
long metrics table (research/scaling/emergence.py describes it).

The held-out models are given (the top rungs of the ladder, by N); the forecasts are fitted only
on runs whose training compute is at most `fit_fraction` of the smallest held-out model's. Per
task:
  * two_step: step 1, the answer's loss (nats, teacher-forced, summed over its tokens; for a
    multiple-choice task -log P(correct choice), unnormalised) as E + A N^-alpha from the fit
    runs' last checkpoints, seeds resampled within each size; step 2, the sigmoid from that loss
    to the metric (exact match, or multiple-choice grade from its chance level), fitted on every
    evaluated checkpoint of the fit runs;
  * exact_match: logit(metric) linear in log N through the fit sizes' seed means;
  * per_token: logit(per-token accuracy) linear in log N, the metric as accuracy^T (T answer
    tokens; Schaeffer et al. 2023), generative tasks only.
Each method predicts every held-out size's seed-mean metric and the N of the `level` crossing;
the observed crossing is interpolated in log N on the seed means of every size.
"""

import math

import numpy as np
import pandas as pd

from research.errors import UserError
from research.scaling import emergence, two_step

METHODS = ("two_step", "exact_match", "per_token")


def task_kind(df: pd.DataFrame, task: str) -> dict | None:
  """How a task is forecast: {"metric", "loss" (metric negated for the loss), "chance"}; None
  when it has neither form (or is a coin flip: sparse parity)."""
  metrics = set(df[df.task == task].metric)
  if "multiple_choice_grade" in metrics and "mc_logprob_correct" in metrics:
    chance = df[(df.task == task) & (df.metric == "chance")].value
    return dict(metric="multiple_choice_grade", loss="mc_logprob_correct",
                chance=float(chance.mean()) if len(chance) else 0.0, per_token=False)
  if "exact_match" in metrics and "target_logprob" in metrics and emergence.chance(task) < 0.5:
    return dict(metric="exact_match", loss="target_logprob", chance=emergence.chance(task),
                per_token="token_accuracy" in metrics)
  return None


def split(df: pd.DataFrame, heldout_rungs: int, fit_fraction: float) -> dict:
  """{"heldout": the held-out N values, "fit_runs": runs fitted on, "c_max": their compute cap}:
  the top `heldout_rungs` sizes, and the runs of other sizes whose final C is at most
  fit_fraction of the smallest held-out run's final C."""
  final_c = df.groupby("run").agg(N=("N", "first"), C=("C", "max"))
  sizes = sorted(final_c.N.unique())
  if heldout_rungs < 1 or heldout_rungs >= len(sizes):
    raise UserError(f"forecast: {heldout_rungs} held-out size(s) of a ladder of {len(sizes)}: "
                    "hold out at least one and keep at least one to fit on")
  heldout = sizes[-heldout_rungs:]
  c_max = fit_fraction * final_c[final_c.N.isin(heldout)].C.min()
  fit_runs = final_c[(final_c.C <= c_max) & ~final_c.N.isin(heldout)].index.tolist()
  return dict(heldout=heldout, fit_runs=fit_runs, c_max=float(c_max),
              fit_sizes=sorted(final_c.loc[fit_runs].N.unique()))


def _logit_line(n, values):
  """(intercept, slope) of logit(values) against log N, None with fewer than 2 sizes."""
  n = np.asarray(n, float)
  if len(n) < 2 or np.ptp(np.log(n)) == 0:
    return None
  b, a = np.polyfit(np.log(n), emergence._logit(values), 1)
  return a, b


def _line_prediction(line, n, power: float = 1.0, chance: float = 0.0):
  if line is None:
    return np.full(len(n), np.nan)
  a, b = line
  p = 1.0 / (1.0 + np.exp(-(a + b * np.log(np.asarray(n, float)))))
  return chance + (1 - chance) * p ** power


def _line_crossing(line, level: float, power: float = 1.0, chance: float = 0.0):
  if line is None:
    return None
  a, b = line
  target = float(emergence._logit(((level - chance) / (1 - chance)) ** (1.0 / power)))
  if b <= 0 or (target - a) / b > 230:  # never reaches the level, or only past N = 1e100
    return None
  return float(math.exp((target - a) / b))


def forecast_task(df: pd.DataFrame, task: str, parts: dict, *, level: float = 0.5,
                  n_boot: int = 200, seed: int = 0) -> dict:
  """Every method's predictions for one task: {"task", "kind", "observed", "n50_observed",
  "methods": {method: {"predicted", "interval", "n50", "n50_interval", "note"}}, "chain",
  "boot", "curve"} (the two-step fit, its bootstrap and its curve over N with a band, for
  figures)."""
  kind = task_kind(df, task)
  rows = df[df.task == task]
  final = emergence.final(rows)
  metric_final = final[final.metric == kind["metric"]]
  mean = metric_final.groupby("N").value.mean()
  observed = mean.reindex(parts["heldout"]).to_numpy()
  out = dict(task=task, kind=kind, heldout=list(parts["heldout"]), observed=observed.tolist(),
             n50_observed=emergence.crossing(mean.index, mean.values, level),
             fit_sizes=list(parts["fit_sizes"]), c_max=parts["c_max"], methods={}, chain=None,
             boot=None, curve=None)
  fit_final = final[final.run.isin(parts["fit_runs"])]
  fit_all = rows[rows.run.isin(parts["fit_runs"])]
  heldout = np.asarray(parts["heldout"], float)

  # two-step
  law = fit_final[fit_final.metric == kind["loss"]].assign(loss=lambda d: -d.value)
  law = law.assign(design=law.N.astype(str))[["run", "design", "N", "loss"]]
  link = fit_all.pivot_table(index=["run", "step"], columns="metric", values="value")
  entry = dict(predicted=[math.nan] * len(heldout), interval=[[math.nan] * 2] * len(heldout),
               n50=None, n50_interval=[math.nan, math.nan], note="")
  if kind["metric"] in link and kind["loss"] in link:
    link = link.reset_index()[["run", kind["loss"], kind["metric"]]].dropna()
    link = pd.DataFrame(dict(run=link.run, loss=-link[kind["loss"]], metric=link[kind["metric"]]))
    held = final[final.N.isin(parts["heldout"])].pivot_table(index="N", columns="metric",
                                                             values="value", aggfunc="mean")
    out["points"] = dict(law=law, link=link, heldout=pd.DataFrame(dict(
        N=held.index, loss=-held[kind["loss"]], metric=held[kind["metric"]])) if len(held)
        else pd.DataFrame(columns=["N", "loss", "metric"]))
    try:
      chain = two_step.fit_two_step(law, link, law="saturating", inputs={"X": "N"},
                                    chance=kind["chance"])
      grid = np.geomspace(min(parts["fit_sizes"]), 2 * heldout.max(), 60)
      boot = two_step.bootstrap_two_step(chain, law, link, {"X": np.concatenate([heldout, grid])},
                                         level=level, n_boot=n_boot, seed=seed)
      k = len(heldout)
      out["curve"] = dict(N=grid.tolist(), metric=boot["metric"][k:],
                          band=boot["metric_interval"][k:])
      boot = dict(boot, metric=boot["metric"][:k], metric_interval=boot["metric_interval"][:k],
                  loss=boot["loss"][:k], loss_interval=boot["loss_interval"][:k])
      boot.pop("metric_samples")
      entry.update(predicted=boot["metric"], interval=boot["metric_interval"],
                   n50=boot["crossing"], n50_interval=boot["crossing_interval"],
                   note=_boot_note(boot, chain))
      out.update(chain=chain, boot=boot)
    except UserError as e:
      entry["note"] = f"no fit: {e}"
  else:
    entry["note"] = "no fit: the metric or the loss was not scored"
  out["methods"]["two_step"] = entry

  # direct extrapolations through the fit sizes' seed means
  fit_mean = fit_final.pivot_table(index="N", columns="metric", values="value", aggfunc="mean")
  def column(name):
    return fit_mean[name] if name in fit_mean else pd.Series(dtype=float)
  em_line = _logit_line(column(kind["metric"]).index,
                        _unit(column(kind["metric"]), kind["chance"]))
  out["methods"]["exact_match"] = dict(
      predicted=_line_prediction(em_line, heldout, chance=kind["chance"]).tolist(),
      interval=None, n50=_line_crossing(em_line, level, chance=kind["chance"]),
      n50_interval=None, note="" if em_line else "fewer than 2 fit sizes")
  if kind["per_token"]:
    tokens = float(rows[rows.metric == "answer_tokens"].value.mean())
    tok_line = _logit_line(column("token_accuracy").index, column("token_accuracy"))
    out["methods"]["per_token"] = dict(
        predicted=_line_prediction(tok_line, heldout, power=tokens).tolist(), interval=None,
        n50=_line_crossing(tok_line, level, power=tokens), n50_interval=None,
        note=f"accuracy^{tokens:.1f}" if tok_line else "fewer than 2 fit sizes")
  return out


def _unit(values, chance: float):
  """A metric rescaled from [chance, 1] to [0, 1] (for the logit line)."""
  return (np.asarray(values, float) - chance) / (1 - chance)


def _boot_note(boot: dict, chain) -> str:
  notes = []
  if boot["n_failed"]:
    notes.append(f"{boot['n_failed']} of {boot['n_boot']} resamples failed "
                 f"({', '.join(f'{k}: {v}' for k, v in boot['failures'].items())})")
  if boot["never_reached"]:
    notes.append(f"{boot['never_reached']} resample(s) never reach the level")
  if not chain.law.converged:
    notes.append(f"step 1 did not converge ({chain.law.status})")
  if not chain.link["converged"]:
    notes.append("step 2 did not converge")
  return "; ".join(notes)


def table(results: list[dict], *, tolerance_metric: float, tolerance_decades: float) -> list[dict]:
  """One row per task, method and held-out size: observed, predicted (interval), error, and the
  pre-registered tests (|error| <= tolerance_metric; the crossing within tolerance_decades)."""
  rows = []
  for r in results:
    n50 = r["n50_observed"]
    observed_n50 = n50 is not None and not math.isnan(n50)
    for method, m in r["methods"].items():
      decades = (math.log10(m["n50"] / n50) if observed_n50 and m["n50"] else None)
      for i, n in enumerate(r["heldout"]):
        pred, obs = m["predicted"][i], r["observed"][i]
        err = pred - obs if np.isfinite(pred) and np.isfinite(obs) else None
        lo, hi = m["interval"][i] if m["interval"] else (None, None)
        rows.append(dict(
            task=r["task"], metric=r["kind"]["metric"], method=method, N=n, observed=obs,
            predicted=pred, lo=lo, hi=hi, error=err,
            within=None if err is None else abs(err) <= tolerance_metric,
            n50_observed=n50 if observed_n50 else None, n50_predicted=m["n50"],
            n50_lo=m["n50_interval"][0] if m["n50_interval"] else None,
            n50_hi=m["n50_interval"][1] if m["n50_interval"] else None,
            decades=decades,
            n50_within=None if decades is None else abs(decades) <= tolerance_decades,
            fit_sizes=len(r["fit_sizes"]), note=m["note"]))
  return rows
