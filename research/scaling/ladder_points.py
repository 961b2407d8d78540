"""From a sweep folder of the model ladder (parents and their WSD branches) to the table of points
that the Chinchilla and Kaplan analyses fit, under each convention of N and C; the time the runs
spent, split."""

import json
import os

import numpy as np

from research import store

CONVENTIONS = {  # name: (N column, how C is counted)
    "N total, C = 6ND": ("N", "6ND"),
    "N non-embedding, C = 6ND": ("N_nonemb", "6ND"),
    "N total, C full count": ("N", "full"),
    "N non-embedding, C full count": ("N_nonemb", "full"),
}


def step_speed(run_dir: str) -> tuple:
  """(tokens/s, MFU): medians over the train steps this run logged itself (not those a branch
  copied from its parent, nor the first, which includes compiling)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return None, None
  own, start = [], 0
  with open(path) as f:
    for line in f:
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        continue
      if r.get("event") == "branch":
        start = r.get("from_step", 0)
      elif r.get("kind") == "train" and r.get("step", -1) > start and "tokens_per_s" in r:
        own.append(r)
  own = [r for r in own if r["step"] >= start][1:] or own
  if not own:
    return None, None
  return (float(np.median([r["tokens_per_s"] for r in own])),
          float(np.median([r.get("mfu", np.nan) for r in own])))


def points_table(workdir: str, count: str = "full", planned=None):
  """(runs.csv's table of every planned run with its role and speed, the finished points with
  their budget id). With the `planned` budgets (FLOPs counted as `count` says: "full", our FLOP
  count, or "6ND" with N total), a point's budget is the planned one nearest its C in log C;
  without them, runs whose full-count C lie within 0.05 dex share one."""
  from research.scaling import table
  df = store.table(workdir)
  roles = {}
  for r in store.read_sweep(workdir)["runs"]:
    t = r["config"]["train"]
    roles[r["run"]] = "parent" if t["schedule"] == "constant" else "point"
  df["role"] = [roles[run] for run in df.run]
  speed = [step_speed(store.run_dir(workdir, run)) for run in df.run]
  df["tokens_per_s"], df["mfu"] = [s[0] for s in speed], [s[1] for s in speed]
  times = [store.summary(store.run_dir(workdir, run)) or {} for run in df.run]
  df["compile_s"], df["eval_s"] = ([t.get(k) for t in times] for k in ("compile_s", "eval_s"))
  points = df[(df.role == "point") & (df.status == "finished")].copy().reset_index(drop=True)
  if not len(points):
    points["budget"] = []
  elif planned is None:
    points["budget"] = table.budgets(points.C.to_numpy(float))
  else:
    c = (points.C if count == "full" else 6.0 * points.N * points.D).to_numpy(float)
    offset = np.log10(c)[:, None] - np.log10(np.asarray(planned, float))[None, :]
    points["budget"] = np.argmin(np.abs(offset), axis=1)
  return df, points


def budget_spread_dex(c_used, budget_ids) -> float:
  """The widest budget in log10 C under one convention (0 where the plan counted budgets in
  it; up to ~0.1 dex in another convention, whose budgets are then not iso)."""
  log_c = np.log10(np.asarray(c_used, np.float64))
  ids = np.asarray(budget_ids)
  return float(max(np.ptp(log_c[ids == b]) for b in np.unique(ids)))


def runs_under(points, n_column: str, count: str):
  """The points as research.scaling.table.Runs under one convention: N from `n_column`, C our
  full count ("full") or 6ND with that N ("6ND"); k = C / (N D), the median."""
  from research.scaling import table
  frame = points.assign(C_used=points.C if count == "full"
                        else 6.0 * points[n_column] * points.D)
  k = float(np.median(frame.C_used / (frame[n_column] * frame.D)))
  seed = "seed" if "seed" in frame.columns else None  # runs.csv has it when seeds vary
  return table.runs_from_table(frame, n=n_column, d="D", c="C_used", loss="val_loss", run="run",
                               seed=seed, flops_per_param_token=k,
                               n_convention="total" if n_column == "N" else "non-embedding")


def time_split(df) -> dict:
  """Seconds the finished runs spent compiling, evaluating (its first compile included) and
  training (the rest of their wall time), summed over runs (workers run side by side)."""
  done = df[df.status == "finished"]
  compile_s, eval_s = float(done.compile_s.fillna(0).sum()), float(done.eval_s.fillna(0).sum())
  return dict(runs=int(len(done)), run_s=float(done.wall_s.sum()), compile_s=compile_s,
              eval_s=eval_s, train_s=float(done.wall_s.sum()) - compile_s - eval_s)


def format_time(split: dict, analysis_s: float) -> str:
  return (f"Time (summed over the {split['runs']} runs; workers train side by side): "
          f"{split['run_s']:.0f} s of runs = {split['compile_s']:.0f} s compiling + "
          f"{split['eval_s']:.0f} s evaluating + {split['train_s']:.0f} s training; the analysis "
          f"took {analysis_s:.0f} s.")
