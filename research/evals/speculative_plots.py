"""The speculative-decoding study's figures (experiments/speculative.py), each a Figure:

  alpha_heatmap      alpha over (draft, target), sampled and greedy
  alpha_vs_gap       alpha against the draft-target loss gap, with the affine fit and intervals
  speedup_measured   measured against predicted tokens per call and walltime improvement
  speedup_vs_gamma   predicted curves and measured points against gamma for a few pairs
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.evals import speculative  # noqa: E402

MODES = ("sampled", "greedy")
LEVIATHAN_ALPHA = (0.5, 0.8)  # Leviathan et al. 2023: alpha of their T5 pairs (as issue 24 quotes)
LEVIATHAN_SPEEDUP = (2.0, 3.4)  # their Table 2: T5-XXL with T5 drafts


def alpha_heatmap(pairs):
  names = list(dict.fromkeys(list(pairs.draft) + list(pairs.target)))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
  for ax, mode in zip(axes, MODES):
    grid = np.full((len(names), len(names)), np.nan)
    for _, r in pairs.iterrows():
      grid[names.index(r.draft), names.index(r.target)] = r[f"alpha_{mode}"]
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower")
    for (i, j), value in np.ndenumerate(grid):
      if np.isfinite(value):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("draft")
    ax.set_title({"sampled": "alpha = 1 - E[TV(p, q)], temperature 1",
                  "greedy": "greedy agreement (argmax equal)"}[mode], fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  return fig


def alpha_vs_gap(pairs, fits: dict):
  fig, ax = plt.subplots(figsize=(6, 4.4))
  gap = pairs.loss_gap.to_numpy(float)
  span = np.linspace(min(0.0, gap.min()), gap.max() * 1.05, 50)
  for mode, colour in zip(MODES, ("tab:blue", "tab:orange")):
    alpha = pairs[f"alpha_{mode}"].to_numpy(float)
    ax.errorbar(gap, alpha, xerr=[gap - pairs.loss_gap_low, pairs.loss_gap_high - gap],
                yerr=[alpha - pairs[f"alpha_{mode}_low"], pairs[f"alpha_{mode}_high"] - alpha],
                fmt="o", ms=4, color=colour, capsize=2, label=f"{mode} (every pair)")
    f = fits[mode]
    if "skipped" in f:
      continue
    ax.plot(span, f["intercept"] + f["slope"] * span, color=colour, lw=1,
            label=f"fit: {f['intercept']:.2f} {f['slope']:+.2f} x gap (R^2 {f['r2']:.2f})")
  ax.axhspan(*LEVIATHAN_ALPHA, color="grey", alpha=0.15,
             label="Leviathan et al. 2023: alpha 0.5-0.8")
  ax.set_xlabel("loss gap L_draft - L_target (nats / token, held out)")
  ax.set_ylabel("alpha (held out, teacher-forced)")
  ax.set_ylim(0, 1)
  ax.set_xlim(min(0.0, float(pairs.loss_gap_low.min())) - 0.02, None)  # every pair, a gap < 0 too
  ax.axvline(0.0, color="k", lw=0.6)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title("Acceptance against the draft-target loss gap", fontsize=10)
  return fig


def speedup_measured(pairs):
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
  for ax, quantity, label, band in zip(
      axes, ("tokens_per_call", "speedup"),
      ("tokens per target call", "walltime improvement over plain decoding"), (0.05, 0.15)):
    for mode, colour in zip(MODES, ("tab:blue", "tab:orange")):
      x = pairs[f"predicted_{quantity}_{mode}"].to_numpy(float)
      y = pairs[f"{quantity}_{mode}"].to_numpy(float)
      if quantity == "speedup":
        ax.errorbar(x, y, yerr=[y - pairs[f"speedup_low_{mode}"],
                                pairs[f"speedup_high_{mode}"] - y],
                    fmt="o", ms=4, color=colour, capsize=2, label=f"{mode} (range of rounds)")
      else:
        ax.plot(x, y, "o", ms=4, color=colour, label=mode)
    lo = 0.9 * min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = 1.1 * max(ax.get_xlim()[1], ax.get_ylim()[1])
    line = np.array([lo, hi])
    ax.plot(line, line, "k-", lw=0.8, label="measured = predicted")
    ax.fill_between(line, line * (1 - band), line * (1 + band), color="grey", alpha=0.15,
                    label=f"within {band:.0%} (the acceptance bound)")
    if quantity == "speedup":
      ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"predicted from held-out alpha{' and measured c' if band > 0.1 else ''}")
    ax.set_ylabel(f"measured {label}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_title("(1 - alpha^(gamma+1)) / (1 - alpha) against the sampler", fontsize=10)
  axes[1].set_title("Leviathan's walltime model against the clock", fontsize=10)
  fig.tight_layout()
  return fig


def speedup_vs_gamma(gammas):
  if gammas.empty:
    return None
  fig, ax = plt.subplots(figsize=(6, 4.4))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  span = np.arange(1, gammas.gamma.max() + 1)
  for colour, ((draft, target), group) in zip(colours, gammas.groupby(["draft", "target"])):
    r = group.iloc[0]
    ax.plot(span, speculative.predicted_speedup(r.alpha, span, r.c), "-", color=colour, lw=1,
            label=f"{draft} -> {target}: predicted (alpha {r.alpha:.2f}, c {r.c:.2f})")
    ax.plot(group.gamma, group.predicted_speedup_verify, "--", color=colour, lw=1,
            label="predicted with the measured verify cost v (post hoc)")
    ax.errorbar(group.gamma, group.speedup, yerr=[group.speedup - group.speedup_low,
                                                  group.speedup_high - group.speedup],
                fmt="o", ms=4, color=colour, capsize=2, label="measured")
  ax.axhline(1.0, color="k", ls=":", lw=0.8)
  ax.set_xlabel("gamma (draft tokens per round)")
  ax.set_ylabel("walltime improvement (temperature 1)")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title("Speedup against gamma, largest target", fontsize=10)
  return fig


def all_figures(pairs, gammas, record: dict) -> dict:
  return {"alpha_heatmap": alpha_heatmap(pairs),
          "alpha_vs_gap": alpha_vs_gap(pairs, record["alpha_fit"]),
          "speedup_measured": speedup_measured(pairs),
          "speedup_vs_gamma": speedup_vs_gamma(gammas)}
