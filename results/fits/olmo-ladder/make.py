"""Every two-step forecast of this folder: `python results/fits/olmo-ladder/make.py` from the
repository root runs `python -m launch fit --two-step` on the OLMo ladder (Bhagia et al. 2024) for
C4 loss (step 1 alone) and for each of the 20 task columns (task bits per byte -> accuracy), with
Bhagia et al.'s "final" configuration (190M-1.3B at 1, 2, 5, 10 x Chinchilla tokens, the last 5
evaluations averaged) and the ladder's 3B runs held out, then writes summary.csv and summary.md
from the fit.json files. Each task's folder is the command's --out (figures for C4 and HellaSwag).
"""

import json
import os
import sys

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "../shared/data/scaling/olmo_ladder2024/ladder_runs_manifest.csv"
COMMON = ["--files", "file", "--files-dir", "ladder-runs", "--where", "variant=", "--where",
          "xC!=0.5", "--heldout", "model=3B", "--n", "N", "--d", "throughput/total_tokens",
          "--smooth", "5", "--target", "13202396160,5e12,OLMo-2-13B", "--target",
          "6887575552,4e12,OLMo-2-7B", "--bootstrap", "200", "--seed", "0"]
C4 = "eval/c4_en-validation/CrossEntropyLoss"
PLOTTED = ("c4", "hellaswag_val")  # the other tasks' figures are left out to keep the folder small


def tasks() -> list:
  """(name, task-loss column, metric column): every bpb column and its accuracy column."""
  first = pd.read_csv(MANIFEST).file.iloc[0]
  columns = pd.read_csv(os.path.join(os.path.dirname(MANIFEST), "ladder-runs", first),
                        nrows=1).columns
  out = [("c4", C4, None)]
  for bpb in (c for c in columns if c.startswith("eval/downstream_bpb/")):
    name = bpb.split("/")[-1].replace("_rc_5shot_bpb", "")
    metric = next(m for m in columns if m.startswith("eval/downstream/")
                  and m.split("/")[-1].startswith(name + "_rc_5shot"))
    out.append((name, bpb, metric))
  return out


def main() -> int:
  from launch.__main__ import main as launch
  from research.fileio import atomic_write_text
  rows = []
  for name, loss, metric in tasks():
    out = os.path.join(HERE, name)
    argv = ["fit", "--two-step", MANIFEST, *COMMON, "--task-loss", loss, "--out", out]
    argv += ["--metric", metric] if metric else []
    argv += [] if name in PLOTTED else ["--no-plots"]
    print(f"\n== {name}: python -m launch {' '.join(argv)}", flush=True)
    code = launch(argv)
    report = json.load(open(os.path.join(out, "fit.json")))
    for p in report["predictions"]:
      rows.append(dict(task=name, converged=code == 0, target=p["label"], N=p["N"], D=p["D"],
                       loss=p["loss"], loss_lo=p["loss_interval"][0],
                       loss_hi=p["loss_interval"][1], actual_loss=p.get("actual_loss"),
                       loss_rel_error=p.get("loss_relative_error"), metric=p["metric"],
                       metric_lo=p["metric_interval"][0], metric_hi=p["metric_interval"][1],
                       actual_metric=p.get("actual_metric"), metric_error=p.get("metric_error")))
  table = pd.DataFrame(rows)
  table.to_csv(os.path.join(HERE, "summary.csv"), index=False, float_format="%.6g")
  held = table[table.actual_loss.notna()]
  lines = ["| task | 3B at 1/2/5/10 xC: step 1 relative error | step 2 metric error (points) | "
           "13B: predicted metric [95%] | 7B |", "|---|---|---|---|---|"]
  for name, group in held.groupby("task", sort=False):
    group = group.set_index("target").loc[[f"3B-{x}xC.csv" for x in (1, 2, 5, 10)]]
    target = table[(table.task == name) & table.actual_loss.isna()].set_index("target")

    def cell(t):
      if pd.isna(target.metric[t]):
        return f"loss {target.loss[t]:.4f} [{target.loss_lo[t]:.4f}, {target.loss_hi[t]:.4f}]"
      return f"{target.metric[t]:.3f} [{target.metric_lo[t]:.3f}, {target.metric_hi[t]:.3f}]"

    errors = " / ".join(f"{100 * e:+.2f}%" for e in group.loss_rel_error)
    points = (" / ".join(f"{100 * e:+.1f}" for e in group.metric_error)
              if group.metric_error.notna().all() else "-")
    flag = "" if group.converged.all() else " (NOT converged)"
    lines.append(f"| {name}{flag} | {errors} | {points} | {cell('OLMo-2-13B')} | "
                 f"{cell('OLMo-2-7B')} |")
  scored = held[held.metric_error.notna()]
  inside = lambda v, lo, hi: int(((v >= lo) & (v <= hi)).sum())
  lines += ["", f"Held-out 3B runs: accuracy within 2 points for "
            f"{int((scored.metric_error.abs() <= 0.02).sum())} of {len(scored)}; step 1 within 3% "
            f"for {int((held.loss_rel_error.abs() <= 0.03).sum())} of {len(held)}; the actual "
            f"inside its 95% interval for {inside(held.actual_loss, held.loss_lo, held.loss_hi)} "
            f"of {len(held)} losses and "
            f"{inside(scored.actual_metric, scored.metric_lo, scored.metric_hi)} of "
            f"{len(scored)} accuracies."]
  atomic_write_text(os.path.join(HERE, "summary.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
