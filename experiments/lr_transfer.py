"""Learning-rate transfer across width: muP beside the standard parametrization (Yang et al. 2022).

    python -m launch sweep --config experiments/lr_transfer.py:cpu --workdir runs/lr-transfer

Every (parametrization, width, learning rate) of the grid trains the scaling studies' model family
(untied readout, WSD schedule) at fixed depth on the same tokens. The analysis draws loss against
learning rate, one curve per width, muP beside standard (lr_transfer.png / .pdf), and writes the
best rate per width (fit.json; the best of the grid, refined by a parabola in log LR through it
and its neighbours). Under muP the best rate should stay put as the width grows (the scaling
studies inherit the base width's); under the standard parametrization it falls.

`sweep.variants` adds muP variants, (output multiplier, embedding rate multiplier) pairs beside
(1, 1), each a curve of its own named "mup out x A, embed lr x B" (issue 20's pilot P2).

Presets: smoke (tiny, synthetic language; the tests), cpu (widths 24, 48, 96 on
../shared/data/text: the pilot that chose the scaling studies' learning rate), mup-variants
(widths 24 and 96, the output multiplier x 1, 2, 4 and the embedding rate x 1, 4 under muP,
rates 0.0155-0.062, against the standard parametrization's best of the cpu preset: pilot P2 of
results/PREREGISTRATION-scaling-v2.md).
"""

import ml_collections
import numpy as np

from experiments import common, lm, scaling_family
from research import store
from research.errors import require
from research.recipes import lm as lm_recipe

PRESETS = ("smoke", "cpu", "mup-variants")
recipe = lm_recipe.recipe
size = lm_recipe.size
resolve = lm_recipe.resolve


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.family(lm.get_config("smoke"))
  c.model.update(n_layers=2, mup_base_d_head=4)
  c.train.tokens = 512_000
  c.sweep = ml_collections.ConfigDict(dict(
      widths=(24, 48, 96), head_size=4, ff_ratio=4, parametrizations=("standard", "mup"),
      lrs=(2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1), variants=((1.0, 1.0),)))
  if preset == "smoke":
    c.model.context = 32
    c.train.update(batch_size=8, seq_len=32, warmup_steps=5, tokens=25_600)
    c.data.val_batches = 2
    c.model.mup_base_d_head = 8
    c.sweep.update(widths=(16, 32), head_size=8, lrs=(3e-3, 1e-2, 3e-2))
  else:
    c.data.source = "text:../shared/data/text"
  if preset == "mup-variants":
    c.sweep.update(widths=(24, 96), lrs=(0.0155, 0.031, 0.062), parametrizations=("mup",),
                   variants=(
        (1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (1.0, 4.0), (2.0, 4.0), (4.0, 4.0)))
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  require(len(s.widths) >= 2 and all(w % s.head_size == 0 for w in s.widths), "sweep.widths",
          s.widths, f"must be two or more multiples of sweep.head_size = {s.head_size}")
  require(len(s.lrs) >= 3 and all(lr > 0 for lr in s.lrs), "sweep.lrs", s.lrs,
          "must be three or more positive learning rates")
  require(set(s.parametrizations) <= {"standard", "mup"}, "sweep.parametrizations",
          s.parametrizations, "allowed: standard, mup")
  require(len(s.variants) >= 1 and all(len(v) == 2 and v[0] > 0 and v[1] > 0
                                       for v in s.variants),
          "sweep.variants", s.variants, "must be (output multiplier, embedding rate multiplier) "
          "pairs of positive factors, (1, 1) being muP as given")


def plan(c) -> list[ml_collections.ConfigDict]:
  s = c.sweep

  def change(parametrization: str, width: int, lr: float, variant=(1.0, 1.0)):
    def apply(run):
      run.model.update(d_model=width, n_heads=width // s.head_size, d_ff=s.ff_ratio * width,
                       parametrization=parametrization, mup_base_d_model=min(s.widths))
      if tuple(variant) != (1.0, 1.0):  # only then: muP as given keeps its run ids
        run.model.mup_output_mult, run.model.mup_embed_lr = variant
      run.train.lr = lr
    return apply

  variants = {p: s.variants if p == "mup" else ((1.0, 1.0),) for p in s.parametrizations}
  return common.expand(c, [change(p, w, lr, v) for p in s.parametrizations
                           for v in variants[p] for w in s.widths for lr in s.lrs])


def curve_name(model: dict) -> str:
  """A run's curve: its parametrization, and a muP variant's multipliers."""
  out, embed = model.get("mup_output_mult", 1.0), model.get("mup_embed_lr", 1.0)
  if (out, embed) == (1.0, 1.0):
    return model["parametrization"]
  return f"mup out x {out:g}, embed lr x {embed:g}"


def best_lr(lrs, losses) -> float:
  """The grid's best rate, refined by the vertex of a parabola in log LR through it and its two
  neighbours (the grid's best itself when it sits at an end of the grid)."""
  order = np.argsort(lrs)
  x, y = np.log(np.asarray(lrs, float)[order]), np.asarray(losses, float)[order]
  i = int(np.nanargmin(y))
  if i == 0 or i == len(x) - 1 or not np.all(np.isfinite(y[i - 1:i + 2])):
    return float(np.exp(x[i]))
  c2, c1, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
  return float(np.exp(-c1 / (2 * c2))) if c2 > 0 else float(np.exp(x[i]))


def lr_curve(group) -> dict:
  """One curve of held-out loss against rate from rows of store.table with an `lr` column:
  {lr, val_loss (None where a run did not finish), best_lr (best_lr, None without a loss)}."""
  group = group.sort_values("lr")
  loss = np.where(group.status == "finished", group.val_loss, np.nan).astype(float)
  return dict(lr=group.lr.tolist(), val_loss=[None if np.isnan(v) else float(v) for v in loss],
              best_lr=best_lr(group.lr, loss) if np.isfinite(loss).sum() else None)


def analyze(workdir: str) -> dict:
  """runs.csv, fit.json (best LR per parametrization and width, the spread of the best LR across
  widths), lr_transfer.png / .pdf."""
  from research.scaling import plots
  df = store.table(workdir)
  fields = {r["run"]: (curve_name(r["config"]["model"]), r["config"]["model"]["d_model"],
                       r["config"]["train"]["lr"]) for r in store.read_sweep(workdir)["runs"]}
  df["parametrization"], df["width"], df["lr"] = ([fields[r][k] for r in df.run] for k in range(3))
  out = common.Outputs(workdir)
  out.runs_csv(df)
  curves = {}
  for (param, width), group in df.groupby(["parametrization", "width"]):
    curves.setdefault(param, {})[int(width)] = lr_curve(group)
  spread = {param: max(b) / min(b) for param, widths in curves.items()
            if len(b := [w["best_lr"] for w in widths.values() if w["best_lr"]]) >= 2}
  record = dict(study="learning-rate transfer across width (muP beside standard)",
                L="held-out loss, nats/token (final_val_loss)", curves=curves,
                best_lr_spread=spread,
                base_width=min(min(w) for w in curves.values()) if curves else None)
  if curves:
    out.figure(plots.lr_transfer(curves), "lr_transfer")
  return out.fit(record)
