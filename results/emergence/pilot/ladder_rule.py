"""Pilot P1's rule for the emergence v2 ladder (results/PREREGISTRATION-emergence-v2.md), as it
was applied on 2026-12-07: prints its inputs from P1's sweep folder and each ladder it tried.

    PYTHONPATH=. python results/emergence/pilot/ladder_rule.py runs/emergence-v2-pilot
"""

import math
import sys

import numpy as np
import pandas as pd

from experiments import emergence
from research.recipes import lm as lm_recipe
from research.scaling import emergence as ability


def main(pilot: str) -> None:
  df = pd.read_csv(f"{pilot}/metrics.csv")
  runs = pd.read_csv(f"{pilot}/runs.csv")
  for task in ("add1", "add2", "add3", "add4", "add5"):
    c = ability.curve(df, task, "exact_match")
    print(task, dict(zip(c.N, c["mean"].round(3))))
  print(runs[["N_nonemb", "C", "wall_s"]].to_string())
  em = ability.curve(df, "add3", "exact_match")
  n3 = ability.crossing(em.N, em["mean"])            # step 1
  if n3 is None:
    n3 = 1.5 * em.N.max()
  elif math.isnan(n3):
    n3 = em.N.min()
  print(f"N3 = {n3:,.0f}")
  b, a = np.polyfit(np.log(runs.C), np.log(runs.wall_s), 1)   # step 3's run time
  print(f"run time = exp({a:.4f}) C^{b:.4f} s")
  cfg = emergence.get_config("cpu")

  def estimate(n_min, n_max, sizes):
    with cfg.unlocked():
      cfg.sweep.update(n_min=n_min, n_max=n_max, sizes=sizes)
    plan = emergence.plan(cfg)
    times = [math.exp(a) * lm_recipe.size(r)["C"] ** b for r in plan]
    by_c = sorted({lm_recipe.size(r)["C"]: lm_recipe.size(r)["N_nonemb"] for r in plan}.items())
    fit = [n for c, n in by_c if c <= 0.25 * by_c[-2][0]]
    return (sum(times) / 2 + max(times) / 2) / 60, [r.n_nonemb for r in emergence.rungs(cfg)], fit

  n_max = 2 * n3                                      # step 2
  n_min = n_max / 40
  sizes = 1 + round(4.5 * math.log10(n_max / n_min))
  while True:                                         # step 3
    minutes, rungs, fit = estimate(n_min, n_max, sizes)
    print(f"n_min {n_min:,.0f} n_max {n_max:,.0f} sizes {sizes}: rungs {rungs}, fit sizes {fit}, "
          f"estimate {minutes:.1f} min")
    if minutes <= 40:
      break
    if len(fit) > 4:
      step = (n_max / n_min) ** (1 / (sizes - 1))
      n_min, sizes = n_min * step, sizes - 1
    else:
      n_max, n_min = n_max / 1.2, n_min / 1.2


if __name__ == "__main__":
  main(sys.argv[1])
