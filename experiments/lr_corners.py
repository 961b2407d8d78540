"""The learning rate checked at the corners of a study's plan (issue 20's pilot P1).

    python -m launch sweep --config experiments/lr_corners.py:cpu --workdir runs/lr-corners

The scaling studies train every size and horizon at one muP rate, tuned at one width, depth and
token count (results/lr-transfer/). This sweep trains each corner of a plan, a (ladder shape,
token count) pair such as its smallest and largest model and its shortest and longest horizon,
at a small grid of rates around that one (`sweep.rate` times `sweep.factors`), each a full WSD
run of the studies' family, and finds each corner's best rate (lr_transfer.best_lr: the vertex
of a parabola in log LR through the grid's best and its neighbours).

The rule (results/PREREGISTRATION-scaling-v2.md, P1): the rate stands if every corner's best
lies within `sweep.tolerance` (a factor) of it; otherwise the studies take the geometric mean of
the corners' best rates, rounded to two significant digits. fit.json has both, report.md the
table, lr_corners.png the curves.

Presets: smoke (the tests), cpu (the corners of the Chinchilla v2 plan on ../shared/data/text).
"""

import math

import ml_collections
import numpy as np

from experiments import chinchilla, common, lr_transfer, scaling_family
from research import store
from research.errors import require
from research.recipes import lm as lm_recipe

PRESETS = ("smoke", "cpu")
recipe = lm_recipe.recipe
size = lm_recipe.size


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.get_config("cpu" if preset == "cpu" else "smoke", pilot=True)
  ladder_rule = scaling_family.LADDERS[preset]
  c.sweep = ml_collections.ConfigDict(dict(
      corners=plan_corners(chinchilla.get_config("cpu")) if preset == "cpu" else (),
      rate=0.031, factors=(0.5, 1.0, 2.0), tolerance=1.33,
      head_size=ladder_rule["head_size"], ff_ratio=ladder_rule["ff_ratio"]))
  if preset == "smoke":
    c.sweep.update(corners=((16, 1, 40_960), (32, 2, 81_920)), rate=0.01)
  return c


def plan_corners(study) -> tuple:
  """A Chinchilla plan's smallest model, shortest and longest horizon, and largest model, as
  (d_model, n_layers, tokens); a model at several budgets is taken at its fewest tokens when it
  is the smallest and at its most when it is the largest. On the v2 plan: N non-embedding 792,
  13,944, 9,492 and 130,260."""
  points = chinchilla.grid(study)
  per_step = study.train.batch_size * study.train.seq_len
  size = lambda p: (p["shape"].n_nonemb, p["steps"])  # noqa: E731
  steps = lambda p: p["steps"]  # noqa: E731
  picked = (min(points, key=size), min(points, key=steps), max(points, key=steps),
            max(points, key=size))
  return tuple((p["shape"].d_model, p["shape"].n_layers, p["steps"] * per_step) for p in picked)


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  require(len(s.corners) >= 1 and all(
      len(x) == 3 and all(isinstance(v, int) and v > 0 for v in x) and x[0] % s.head_size == 0
      for x in s.corners), "sweep.corners", s.corners,
      f"must be (d_model, n_layers, tokens) triples of positive ints, d_model a multiple of "
      f"sweep.head_size = {s.head_size}")
  require(len(s.factors) >= 3 and all(f > 0 for f in s.factors) and 1.0 in s.factors,
          "sweep.factors", s.factors, "must be three or more positive factors of sweep.rate, 1 "
          "among them")
  require(s.rate > 0 and math.isfinite(s.rate), "sweep.rate", s.rate, "must be a positive rate")
  require(s.tolerance > 1, "sweep.tolerance", s.tolerance, "must be a factor > 1")


def plan(c) -> list[ml_collections.ConfigDict]:
  s = c.sweep
  per_step = c.train.batch_size * c.train.seq_len

  def change(width, layers, tokens, lr):
    def apply(run):
      run.model.update(d_model=width, n_layers=layers, n_heads=width // s.head_size,
                       d_ff=s.ff_ratio * width)
      run.train.lr = lr
      lm_recipe.set_steps(run, max(1, round(tokens / per_step)))
    return apply

  return common.expand(c, [change(*corner, s.rate * f) for corner in s.corners
                           for f in s.factors])


def verdict(best: dict, rate: float, tolerance: float) -> dict:
  """The pre-registered rule over {corner: best rate}: keep `rate` if every best lies within a
  factor `tolerance` of it, else the geometric mean of the bests, to two significant digits."""
  found = [b for b in best.values() if b]
  inside = bool(found) and all(1 / tolerance <= b / rate <= tolerance for b in found)
  mean = float(np.exp(np.mean(np.log(found)))) if found else None
  chosen = rate if inside else (float(f"{mean:.2g}") if mean else None)
  return dict(rate=rate, tolerance=tolerance, every_corner_inside=inside,
              geometric_mean_of_best=mean, chosen_rate=chosen, corners_measured=len(found),
              corners=len(best))


def analyze(workdir: str) -> dict:
  """runs.csv; fit.json (per corner its losses and best rate; the rule's verdict); report.md;
  lr_corners.png / .pdf."""
  from research import config as config_lib
  from research.scaling import plots
  c = config_lib.preset(get_config, store.read_sweep(workdir))
  s = c.sweep
  df = store.table(workdir)
  lrs = {r["run"]: r["config"]["train"]["lr"] for r in store.read_sweep(workdir)["runs"]}
  df["lr"] = [lrs[r] for r in df.run]
  out = common.Outputs(workdir)
  out.runs_csv(df)
  curves = {}
  for (n, d), group in df.groupby(["N_nonemb", "D"]):
    curves[f"N {int(n):,}, D {d:.3g}"] = dict(
        label=f"N {int(n):,} non-embedding, {d:.3g} tokens", N_nonemb=int(n), D=float(d),
        **lr_transfer.lr_curve(group))
  record = dict(study="the learning rate at the corners of a plan (issue 20, pilot P1)",
                L="held-out loss, nats/token (final_val_loss)", corners=curves,
                verdict=verdict({k: v["best_lr"] for k, v in curves.items()}, s.rate,
                                s.tolerance))
  if curves:
    out.figure(plots.lr_transfer({"mup": curves}), "lr_corners")
  return out.fit(record, format_report)


def format_report(record: dict) -> str:
  v = record["verdict"]
  lines = ["| corner | best rate | best / rate | loss at the rate | best loss |",
           "|---|---|---|---|---|"]
  for corner in record["corners"].values():
    at = dict(zip(corner["lr"], corner["val_loss"])).get(v["rate"])
    finite = [x for x in corner["val_loss"] if x is not None]
    best = corner["best_lr"]
    edge = " (grid's edge: the best may lie beyond)" if best and np.any(np.isclose(
        best, [min(corner["lr"]), max(corner["lr"])])) else ""
    lines.append(f"| {corner['label']} | {best:.4g}{edge} | {best / v['rate']:.2f} | "
                 f"{'-' if at is None else format(at, '.4f')} | "
                 f"{format(min(finite), '.4f') if finite else '-'} |" if best else
                 f"| {corner['label']} | - | - | - | - |")
  lines += ["", f"Rule: keep {v['rate']} if every corner's best lies within a factor "
            f"{v['tolerance']} of it, else the geometric mean of the bests "
            f"({v['geometric_mean_of_best'] or float('nan'):.4g}) to two digits. Verdict: "
            + (f"every corner inside, the rate stays {v['chosen_rate']}."
               if v["every_corner_inside"] else f"the studies' rate becomes {v['chosen_rate']}.")]
  return "\n".join(lines) + "\n"
