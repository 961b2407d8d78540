"""Training steps of a preset on this machine's accelerator: tokens/s, MFU, compile time, memory.

    python benchmarks/accelerator.py --config experiments/lm.py:gpu-124m [--config.FIELD=V ...]
        [--steps 10] [--rounds 3] [--microbatches 1 2] [--remat none dots] [--json PATH]

Every (microbatches, remat) pair is a contender: the preset with `train.microbatches` and
`model.remat` set, validated as `launch run` validates it, built by the study's recipe and the
loop's own setup (research.train.loop.setup: mesh, shardings, jitted step), with the XLA flags
training uses. Each contender is compiled once (timed), then the contenders alternate over the
rounds, `--steps` steps each on one batch (the data pipeline is not timed); medians of the
rounds and of per-round speed ratios against the first contender, with their range, are printed.

MFU is against the device's data-sheet peak (research.accounting.PEAK_FLOPS) for the compute
dtype, or on a CPU against an f32 matmul peak measured in every round (median), under the
config's FLOP convention (tracking.flop_convention, "full" by default). Memory per device, per
contender: our estimate before compiling (research.accounting.MemoryEstimate), XLA's for the
compiled step (arguments + outputs - aliased + temporaries, `memory_analysis()`), and at the end
the process's peak (`memory_stats()['peak_bytes_in_use']`, where the backend keeps one: it is the
largest contender's, since a process peak cannot be reset).
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import xla_env  # noqa: E402  (imports no jax)

xla_env.set_flags()  # as `python -m launch` does, before jax is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402

from research import accounting  # noqa: E402
from research import config as config_lib  # noqa: E402
from research.train import loop  # noqa: E402
from research.train import run as run_lib  # noqa: E402


def compiled_step(cfg, study, *, cpu_tuned: bool = True) -> dict:
  """A config's train step as the loop builds it (research.train.loop.setup), compiled once
  (timed) and run once (the first execution allocates): recipe, setup, compiled step, compile
  time, units per step, first loss, and run(steps) -> (seconds, last metrics) on one batch."""
  recipe, spec = run_lib.prepare(cfg, study)
  spec.check_devices(recipe.batch_size, jax.device_count())
  s = loop.setup(recipe, spec, cpu_tuned=cpu_tuned)
  with jax.set_mesh(s.mesh):
    state = jax.jit(s.make_state, out_shardings=s.state_sharding)()
    batch = loop.put_batch(recipe.train_batch(0), s.batch_sharding)
    lr = np.float32(loop.learning_rates(recipe)[-1])
    start = time.perf_counter()
    compiled = s.step.lower(state, batch, lr).compile()
    compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run(steps: int) -> tuple[float, dict]:
    begin = time.perf_counter()
    for _ in range(steps):
      holder["state"], metrics = compiled(holder["state"], batch, lr)
    metrics = jax.device_get(metrics)
    return time.perf_counter() - begin, metrics

  _, metrics = run(1)
  return dict(recipe=recipe, setup=s, compiled=compiled, compile_s=compile_s, run=run,
              tokens=float(metrics.get("units", recipe.batch_size)), loss=float(metrics["loss"]))


def build(spec: str, overrides: list[str], microbatches: int, remat: str) -> dict:
  """One contender: its config, compiled step (timed), memory figures."""
  cfg, study = config_lib.load(spec, overrides + [f"train.microbatches={microbatches}",
                                                  f"model.remat={remat}"])
  c = compiled_step(cfg, study)
  s = c["setup"]
  m = c["compiled"].memory_analysis()
  xla_bytes = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes) if m is not None else float("nan")
  return dict(c, cfg=cfg, mesh_size=s.mesh.size, xla_bytes=xla_bytes,
              estimate=s.memory.total if s.memory else float("nan"),
              attention=c["recipe"].facts.get("attention", "?"))


def peak_flops(recipe, n_devices: int) -> tuple[float | None, str]:
  """(the data-sheet peak, its source), or (None, ...) on a chip without one: measured per round."""
  kind = jax.devices()[0].device_kind
  peak = accounting.table_peak_flops(kind, recipe.compute_dtype)
  if peak is None:
    return None, f"measured f32 matmul peak ({kind}, median of rounds)"
  return peak * n_devices, f"data sheet ({kind}, {recipe.compute_dtype}) x {n_devices}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="FILE:PRESET, e.g. experiments/lm.py:gpu-124m")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per round and contender")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--microbatches", type=int, nargs="+", default=None,
                      help="train.microbatches values to compare (default: the config's)")
  parser.add_argument("--remat", nargs="+", default=None,
                      help="model.remat values to compare (default: the config's)")
  parser.add_argument("--json", help="also write the results to this file")
  args, rest = parser.parse_known_args()
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      parser.error(f"unrecognised argument {item!r}")
    overrides.append(item[len("--config."):])
  base, _ = config_lib.load(args.config, overrides)
  pairs = list(itertools.product(args.microbatches or [base.train.microbatches],
                                 args.remat or [base.model.remat]))
  device = jax.devices()[0]
  print(f"jax {jax.__version__} on {device.device_kind} x{jax.device_count()} "
        f"({jax.default_backend()}), {os.cpu_count()} host cores; {args.config} "
        f"{' '.join(overrides)}; {args.rounds} rounds of {args.steps} steps, contenders "
        "alternating", flush=True)
  contenders = {}
  for microbatches, remat in pairs:
    name = f"microbatches={microbatches} remat={remat}"
    try:
      contenders[name] = c = build(args.config, overrides, microbatches, remat)
    except Exception as e:  # noqa: BLE001  (one that does not fit must not stop the others)
      print(f"  {name}: failed, left out: {type(e).__name__}: {str(e)[:300]}", flush=True)
      continue
    print(f"  {name}: compiled in {c['compile_s']:.1f} s, attention {c['attention']}, "
          f"first loss {c['loss']:.4f}", flush=True)
  if not contenders:
    sys.exit("no contender could run")
  first = next(iter(contenders.values()))
  recipe, tokens = first["recipe"], first["tokens"]
  table_peak, peak_source = peak_flops(recipe, first["mesh_size"])
  times, peaks = {name: [] for name in contenders}, []
  for _ in range(args.rounds):
    peaks.append(table_peak or accounting.measured_matmul_peak(n=1024, repeats=3))
    for name, c in contenders.items():
      times[name].append(c["run"](args.steps)[0] / args.steps)
  peak = statistics.median(peaks)
  stats = device.memory_stats() or {}
  flops_token = recipe.flops_per_unit
  print(f"\n{recipe.facts.get('params_total', 0):,} parameters, {tokens:,.0f} tokens per step, "
        f"{flops_token:,.0f} training FLOPs per token ('{base.tracking.flop_convention}')")
  print(f"peak: {peak / 1e9:,.0f} GFLOP/s, {peak_source}")
  print(f"{'contender':<28} {'compile':>8} {'step':>9} {'tokens/s':>11} {'MFU':>6} "
        f"{'estimate':>9} {'XLA mem':>9}  speed vs first (median, range)")
  results = []
  names = list(contenders)
  for name in names:
    c, t = contenders[name], statistics.median(times[name])
    ratios = [b / x for b, x in zip(times[names[0]], times[name])]
    rate = tokens / t
    mfu = accounting.mfu(flops_token, rate, peak)
    print(f"{name:<28} {c['compile_s']:7.1f}s {t * 1e3:7.1f}ms {rate:11,.0f} {mfu:6.1%} "
          f"{accounting.format_bytes(c['estimate']):>9} {accounting.format_bytes(c['xla_bytes']):>9}"
          f"  {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    results.append(dict(contender=name, compile_s=c["compile_s"], step_s=t, tokens_per_s=rate,
                        mfu=mfu, estimate_bytes=c["estimate"], xla_bytes=c["xla_bytes"],
                        speed_vs_first=statistics.median(ratios), attention=c["attention"],
                        step_s_rounds=times[name]))
  if "peak_bytes_in_use" in stats:
    print(f"process peak device memory: {accounting.format_bytes(stats['peak_bytes_in_use'])} "
          f"of {accounting.format_bytes(stats.get('bytes_limit', float('nan')))}")
  else:
    print("process peak device memory: not reported by this backend (memory_stats() is "
          f"{'None' if not stats else 'without peak_bytes_in_use'})")
  best = max(results, key=lambda r: r["tokens_per_s"])
  print(f"fastest: {best['contender']}, {best['tokens_per_s']:,.0f} tokens/s, MFU {best['mfu']:.1%}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(config=args.config, overrides=overrides, device=device.device_kind,
                     devices=jax.device_count(), backend=jax.default_backend(), peak_flops=peak,
                     peak_source=peak_source, tokens_per_step=tokens, flops_per_token=flops_token,
                     peak_bytes_in_use=stats.get("peak_bytes_in_use"),
                     bytes_limit=stats.get("bytes_limit"), results=results, best=best), f,
                indent=1)


if __name__ == "__main__":
  main()
