"""The model ladder's own train steps on one core: today's step against the new one, per rung.

    python benchmarks/ladder_speed.py [--studies chinchilla kaplan emergence] [--rounds 5]
        [--seconds 1.0] [--core 0] [--rungs 16x1 48x3] [--profile] [--json PATH]

The rungs are the distinct model shapes of the chinchilla, kaplan and emergence `cpu` plans
(d_model x layers, with their head size, context, batch and positions), each trained on one batch
of generated data (the step's time does not depend on the data). Two contenders per rung, built
by the study's recipe and the loop's own setup, compiled in this process with the XLA flags that
training uses, alternating over the rounds:
* today: the step as it ran before this benchmark's work: `model.attention=blocked` (its
  128-query blocks and batched dots), whole microbatches and the process's XLA flags
  (`loop.setup(..., cpu_tuned=False)`);
* new: the config unchanged, as `launch run` trains it: `auto` attention, and the recipe's CPU
  slices and compiler options.
Run it from the repository's root (the emergence plan reads ../shared/data).
Each round times `--seconds` of steps of each contender. Printed per rung: tokens/s (median of
rounds), MFU against the one-core f32 matmul peak measured in every round, the median and range
of per-round speed ratios, and the first step's loss of both (the same model, so the same loss
to float rounding). `--profile` adds a split of each contender's op time by the op's source
(attention, MLP, logits and loss, optimizer, the rest) from a trace of a few steps.
"""

import argparse
import collections
import glob
import gzip
import importlib
import json
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import xla_env  # noqa: E402  (imports no jax)

CONTENDERS = {"today": (["model.attention=blocked"], False), "new": ([], True)}
PARTS = ("attention", "mlp", "logits/loss", "optimizer", "other")


def rungs(studies: list[str]) -> list[tuple[str, object, object]]:
  """(name, study module, one config) per distinct model shape of the studies' cpu plans."""
  from research import config as config_lib
  seen, out = set(), []
  for name in studies:
    study = importlib.import_module(f"experiments.{name}")
    for cfg in study.plan(study.get_config("cpu")):
      m = cfg.model
      key = (m.d_model, m.n_layers, m.n_heads, m.d_ff, m.context, m.positions, m.tied_embeddings,
             m.parametrization, cfg.train.batch_size, cfg.train.seq_len)
      if key in seen:
        continue
      seen.add(key)
      cfg = config_lib.from_dict(config_lib.to_dict(cfg))
      config_lib.apply_overrides(cfg, ["data.source=synthetic:", "loop.init_from="])
      label = (f"{m.d_model}x{m.n_layers} h{m.d_model // m.n_heads} L{cfg.train.seq_len} "
               f"B{cfg.train.batch_size}{' learned' if m.positions == 'learned' else ''}")
      out.append((f"{name}: {label}", study, cfg))
  return out


def build(study, cfg, overrides: list[str], tuned: bool) -> dict:
  """One contender: benchmarks/accelerator.py's compiled step, run(steps) -> seconds per step."""
  import accelerator  # imports jax: after main() pinned the core

  from research import config as config_lib
  cfg = config_lib.from_dict(config_lib.to_dict(cfg))
  config_lib.apply_overrides(cfg, overrides)
  c = accelerator.compiled_step(cfg, study, cpu_tuned=tuned)
  recipe, run = c["recipe"], c["run"]
  return dict(c, run=lambda steps: run(steps)[0] / steps, microbatches=c["setup"].microbatches,
              options="YNN fusions" if tuned and recipe.cpu_compiler_options else "flags",
              attention=transformer_plan(cfg))


def transformer_plan(cfg) -> str:
  from research.models import transformer
  from research.recipes import lm
  m = lm.model_config(cfg)
  chunks, elementwise = transformer.blocked_plan(m, cfg.train.seq_len)
  return f"{chunks} blocks{', element-wise scores' if elementwise else ''}"


def op_sources(hlo_text: str) -> dict:
  """HLO instruction name -> the op_name of its metadata (a fusion without one: the first
  op_name inside the computation it calls, or inside that computation's reducer)."""
  first, names, calls, current = {}, {}, {}, None
  for line in hlo_text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      continue
    inst = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if not inst:
      continue
    names.setdefault(inst.group(1), None)
    source = re.search(r'op_name="([^"]+)"', line)
    called = re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", line)
    if called:
      calls[inst.group(1)] = called
      calls.setdefault(current, []).extend(called)
    if source:
      names[inst.group(1)] = source.group(1)
      first.setdefault(current, source.group(1))

  def inside(comp, depth=0):
    if comp in first or depth > 3:
      return first.get(comp)
    return next(filter(None, (inside(c, depth + 1) for c in calls.get(comp, ()))), None)

  for inst, called in calls.items():
    if names.get(inst) is None:
      names[inst] = next(filter(None, (inside(c) for c in called)), None)
  return names


def part(op_name: str | None) -> str:
  """The step's part an op belongs to, from its source (op_name)."""
  if op_name is None:
    return "other"
  if "jvp(" not in op_name:
    return "optimizer"  # outside the loss's forward and backward: the update (and clipping)
  if "/attn/" in op_name:
    return "attention"
  if "/mlp/" in op_name:
    return "mlp"
  if re.search(r"unembed|ln_final|logsumexp|take_along_axis|/embed/", op_name) or \
     "Transformer" not in op_name:
    return "logits/loss"
  return "other"


def profile(contender: dict, steps: int = 3) -> dict:
  """Share of the op time per part, from a trace of `steps` steps."""
  import jax
  names = op_sources(contender["compiled"].as_text())
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      contender["run"](steps)
    trace = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(trace) as f:
      events = json.load(f)["traceEvents"]
  totals = collections.Counter()
  for e in events:
    name = e.get("name", "")  # ops, not the loops and calls that contain them
    if e.get("ph") == "X" and name in names and not name.startswith(("while", "call")):
      totals[part(names[name])] += e.get("dur", 0)
  whole = sum(totals.values()) or 1
  return {p: totals[p] / whole for p in PARTS}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--studies", nargs="+", default=["chinchilla", "kaplan", "emergence"])
  parser.add_argument("--rungs", nargs="+", default=None,
                      help="only these DxL shapes (e.g. 16x1 48x3)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--seconds", type=float, default=1.0, help="per contender and round")
  parser.add_argument("--core", type=int, default=0, help="the one core to run on")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args()
  os.sched_setaffinity(0, {args.core})  # before jax starts: XLA sizes its pool to one thread
  xla_env.set_flags()
  import jax
  from research import accounting
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, core {args.core} of "
        f"{os.cpu_count()}; {args.rounds} rounds of {args.seconds} s per contender, alternating",
        flush=True)
  results = []
  for label, study, cfg in rungs(args.studies):
    if args.rungs and label.split(": ")[1].split(" ")[0] not in args.rungs:
      continue
    built = {name: build(study, cfg, overrides, tuned)
             for name, (overrides, tuned) in CONTENDERS.items()}
    steps = {name: max(1, round(args.seconds / c["run"](1))) for name, c in built.items()}
    times, peaks = {name: [] for name in built}, []
    for _ in range(args.rounds):
      peaks.append(accounting.measured_matmul_peak(n=512, repeats=3))
      for name, c in built.items():
        times[name].append(c["run"](steps[name]))
    peak, new, today = statistics.median(peaks), built["new"], built["today"]
    ratios = [a / b for a, b in zip(times["today"], times["new"])]
    row = dict(rung=label, peak_flops=peak, ratio=statistics.median(ratios),
               ratio_range=(min(ratios), max(ratios)), loss_today=today["loss"],
               loss_new=new["loss"], microbatches_new=new["microbatches"],
               attention_new=new["attention"])
    for name, c in built.items():
      rate = c["tokens"] / statistics.median(times[name])
      row[f"tokens_per_s_{name}"] = rate
      row[f"mfu_{name}"] = accounting.mfu(c["recipe"].flops_per_unit, rate, peak)
      if args.profile:
        row[f"profile_{name}"] = profile(c)
    results.append(row)
    print(f"{label:<40} today {row['tokens_per_s_today']:>9,.0f} tok/s ({row['mfu_today']:5.1%})"
          f"  new {row['tokens_per_s_new']:>9,.0f} tok/s ({row['mfu_new']:5.1%})  "
          f"{row['ratio']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})  loss "
          f"{today['loss']:.6f} / {new['loss']:.6f}  new: {new['microbatches']} slices, "
          f"{new['options']}, "
          f"{new['attention']}", flush=True)
    if args.profile:
      for name in built:
        print(f"{'':<40} {name:>5} profile: " + ", ".join(
            f"{p} {row[f'profile_{name}'][p]:.0%}" for p in PARTS), flush=True)
  if not results:
    sys.exit("no rung matched")
  speed = [r["ratio"] for r in results]
  print(f"\nnew / today over {len(results)} rungs: median {statistics.median(speed):.2f}x, "
        f"slowest {min(speed):.2f}x, fastest {max(speed):.2f}x")
  print("\n| rung | today tok/s | today MFU | new tok/s | new MFU | new / today (range) |"
        + (" today: attn/mlp/logits/opt/other | new: attn/mlp/logits/opt/other |"
           if args.profile else ""))
  print("|---|---|---|---|---|---|" + ("---|---|" if args.profile else ""))
  for r in results:
    split = ""
    if args.profile:
      split = "".join(" " + "/".join(f"{r[f'profile_{n}'][p] * 100:.0f}" for p in PARTS) + " |"
                      for n in ("today", "new"))
    print(f"| {r['rung']} | {r['tokens_per_s_today']:,.0f} | {r['mfu_today']:.1%} | "
          f"{r['tokens_per_s_new']:,.0f} | {r['mfu_new']:.1%} | {r['ratio']:.2f}x "
          f"({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}) |{split}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(device=jax.devices()[0].device_kind, rounds=args.rounds,
                     results=results), f, indent=1)


if __name__ == "__main__":
  main()
