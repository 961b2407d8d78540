"""The figure of one run: training and validation loss against tokens, from `metrics.jsonl`."""

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from research import tracking  # noqa: E402
from research.fileio import atomic_write_bytes  # noqa: E402


def plot_run(workdir: str, summary: dict, out_path: str | None = None) -> str:
  """Writes `curves.png` (or out_path) for the run in `workdir`; returns the path."""
  metrics = os.path.join(workdir, "metrics.jsonl")
  train = tracking.read_metrics(metrics, kind="train")
  evals = tracking.read_metrics(metrics, kind="eval")
  tokens_per_step = summary["tokens"] / max(summary["steps"], 1)
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], lw=1, label="train")
  ax.plot([r["step"] * tokens_per_step for r in evals], [r["val_loss"] for r in evals], "o-",
          ms=4, label="validation (held out)")
  if summary.get("entropy_rate_nats") is not None:
    ax.axhline(summary["entropy_rate_nats"], color="k", ls="--", lw=1,
               label=f"entropy rate of the data ({summary['entropy_rate_nats']:.3f})")
  ax.set_xscale("log")
  ax.set_xlabel("training tokens D")
  ax.set_ylabel("loss (nats / token)")
  ax.set_title(f"{summary['params_non_embedding']:,} non-embedding params, "
               f"C = {summary['flops']:.2e} FLOPs ('{summary['flop_convention']}')", fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  out_path = out_path or os.path.join(workdir, "curves.png")
  atomic_write_bytes(out_path, buffer.getvalue())
  return out_path
