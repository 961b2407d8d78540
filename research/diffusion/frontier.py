"""Sample quality against training compute: the compute frontier of FD over a sweep's evaluated
checkpoints, its power law FD - floor = A C^-a with a bootstrap interval, and the figure of FD and
KID against C per data set."""

import numpy as np


def frontier(points) -> np.ndarray:
  """Indices of the compute frontier: points (sorted by C) whose FD is below every point of
  smaller or equal C."""
  order = np.argsort(points.C.to_numpy(), kind="stable")
  best, keep = np.inf, []
  for i in order:
    if points.fd.iloc[i] < best:
      best = points.fd.iloc[i]
      keep.append(i)
  return np.array(keep, int)


def fit_frontier(points, floor: float, n_boot: int) -> dict:
  """FD - floor = A C^-a on the frontier (research.scaling.fit's power law, Huber in log
  space), with a bootstrap interval over the frontier points."""
  from research.scaling import fit
  x = points.C.to_numpy(float)
  y = points.fd.to_numpy(float) - floor
  ok = y > 0
  if ok.sum() < 3:
    return dict(skipped=f"{int(ok.sum())} frontier point(s) above the floor; a fit needs 3")
  law = fit.fit_law("power", {"X": x[ok] / 1e12}, y[ok], keep=16, maxiter=500)
  boot = fit.bootstrap_law(law, {"X": x[ok] / 1e12}, y[ok], n_boot=n_boot, seed=0)
  p = law.params
  return dict(law="FD - floor = A (C / 1e12)^-a", a=p["alpha"], A=p.get("A", p.get("a")),
              a_interval=boot["intervals"].get("alpha"), n_points=int(ok.sum()),
              bootstrap=n_boot, converged=law.converged, floor=floor)


def fd_figure(points, out: dict):
  """FD and KID against training FLOPs, one curve per width, per data set; the frontier, its
  fit and the real-vs-real floor."""
  if points.empty:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  datasets = list(out["datasets"])
  fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 8), squeeze=False)
  for j, dataset in enumerate(datasets):
    entry, group = out["datasets"][dataset], points[points.dataset == dataset]
    widths = sorted(group.width.unique())
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    for row, metric in enumerate(("fd", "kid")):
      ax = axes[row, j]
      for colour, w in zip(colours, widths):
        g = group[group.width == w].sort_values("C")
        ax.plot(g.C, g[metric], "o-", color=colour, ms=3, lw=1,
                label=f"width {w} (N = {int(g.N.iloc[0]):,})")
      name = entry["fd_name"] if metric == "fd" else entry["fd_name"].replace("FD", "KID")
      if metric == "fd":
        ax.axhline(entry["floor"], color="grey", ls=":", label="real vs real (floor)")
        f = entry["fit"]
        front = entry["frontier"]
        ax.plot(front["C"], front["fd"], "k*", ms=8, label="compute frontier")
        if "a" in f:
          c = np.geomspace(min(front["C"]), max(front["C"]), 50)
          ax.plot(c, f["floor"] + f["A"] * (c / 1e12) ** -f["a"], "k--", lw=1,
                  label=f"fit: a = {f['a']:.2f} {interval(f.get('a_interval'))}")
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("training compute C (FLOPs, convention 'full')")
      ax.set_ylabel(f"{name} ({entry['n_samples']} samples, {entry['sampler']} "
                    f"{entry['sampling_steps']} steps)")
      ax.set_title(f"{dataset}", fontsize=10)
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def interval(iv) -> str:
  return f"[{iv[0]:.2f}, {iv[1]:.2f}]" if iv else ""
