"""The sweep command against the same runs launched one by one, in one run of this script.

    python benchmarks/sweep_throughput.py [--rounds 3] [--layouts 2x1 1x2] [--preset sweep-smoke]

Contenders, alternating over rounds (the order rotates each round), each from a cold start:
  * sweep WxT: `python -m launch sweep --config experiments/lm.py:PRESET --workers W
    --threads-per-worker T` into a fresh folder (its own, empty compilation cache), analysis
    included;
  * one by one: the same runs as a user would script them, `python -m launch run --config
    experiments/lm.py:smoke --config.FIELD=VALUE ...` in fresh processes one after the other
    (no persistent compilation cache, all cores), no analysis.
Each run's config is checked to give the sweep's run id. Printed: per-round wall times, medians,
the median and range of the per-round ratios (one by one / sweep), and the split of each sweep's
wall time into the runs' compiling, the runs' training and the analysis (runs overlap across
workers, so their seconds add up to more than the wall time).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from research import config as config_lib  # noqa: E402
from research import store  # noqa: E402

STUDY = os.path.join(REPO, "experiments", "lm.py")


def _env() -> dict:
  env = dict(os.environ, WANDB_MODE="disabled")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


def one_by_one_commands(preset: str, folder: str) -> list[tuple[list[str], str]]:
  """(argv, expected run id) per run of the plan, as overrides of the `smoke` preset."""
  sweep_cfg, module = config_lib.load(f"{STUDY}:{preset}")
  base = store.flatten(config_lib.to_dict(module.get_config("smoke")))
  commands = []
  for i, run_cfg in enumerate(module.plan(sweep_cfg)):
    fields = store.flatten(config_lib.to_dict(run_cfg))
    overrides = [f"--config.{k}={_text(v)}" for k, v in sorted(fields.items()) if base.get(k) != v]
    argv = [sys.executable, "-m", "launch", "run", "--config", f"{STUDY}:smoke", "--workdir",
            os.path.join(folder, str(i)), *overrides]
    commands.append((argv, config_lib.run_id(run_cfg)))
  return commands


def _text(value) -> str:
  return "(" + ",".join(map(str, value)) + ")" if isinstance(value, (list, tuple)) else str(value)


def time_one_by_one(preset: str) -> dict:
  folder = tempfile.mkdtemp(prefix="one-by-one-")
  try:
    start = time.perf_counter()
    for argv, run_id in one_by_one_commands(preset, folder):
      subprocess.run(argv, cwd=REPO, env=_env(), check=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
      with open(os.path.join(argv[argv.index("--workdir") + 1], "config.json")) as f:
        assert json.load(f)["run_id"] == run_id, "the scripted run differs from the sweep's"
    return {"wall": time.perf_counter() - start}
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def time_sweep(preset: str, workers: int, threads: int) -> dict:
  folder = tempfile.mkdtemp(prefix="sweep-")
  workdir = os.path.join(folder, "sweep")
  try:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "launch", "sweep", "--config",
                          f"{STUDY}:{preset}", "--workdir", workdir, "--workers", str(workers),
                          "--threads-per-worker", str(threads)], cwd=REPO, env=_env(),
                         check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    summaries = [store.summary(store.run_dir(workdir, r["run"]))
                 for r in store.read_sweep(workdir)["runs"]]
    compile_s = sum(s["compile_s"] for s in summaries)
    return {"wall": wall, "compile": compile_s,
            "train": sum(s["wall_s"] for s in summaries) - compile_s,
            "analysis": float(re.search(r"analysis \(([\d.]+) s\)", out).group(1))}
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _cpu() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return re.search(r"Model name:\s*(.+)", out).group(1).strip()
  except (OSError, AttributeError):
    return "unknown CPU"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--layouts", nargs="+", default=["2x1", "1x2"],
                      help="sweep layouts WORKERSxTHREADS")
  parser.add_argument("--preset", default="sweep-smoke")
  args = parser.parse_args()
  layouts = [tuple(int(x) for x in layout.split("x")) for layout in args.layouts]
  names = [f"sweep {w}x{t}" for w, t in layouts] + ["one by one"]
  n_runs = len(one_by_one_commands(args.preset, "/unused"))
  print(f"{args.preset}: {n_runs} runs; {_cpu()}, {len(os.sched_getaffinity(0))} cores; "
        f"{args.rounds} rounds, contenders alternating (order rotates)")
  results = {name: [] for name in names}
  for round_ in range(args.rounds):
    order = names[round_ % len(names):] + names[:round_ % len(names)]
    for name in order:
      if name == "one by one":
        r = time_one_by_one(args.preset)
      else:
        w, t = layouts[names.index(name)]
        r = time_sweep(args.preset, w, t)
      results[name].append(r)
      extra = (f"  (runs compiling {r['compile']:.1f} s, training {r['train']:.1f} s; "
               f"analysis {r['analysis']:.1f} s)" if "compile" in r else "")
      print(f"round {round_ + 1}  {name:<12} {r['wall']:7.1f} s{extra}", flush=True)
  print("\nmedians over rounds; ratio = one-by-one wall / contender wall, per round (range)")
  base = [r["wall"] for r in results["one by one"]]
  for name in names:
    walls = [r["wall"] for r in results[name]]
    ratios = [b / w for b, w in zip(base, walls)]
    line = f"{name:<12} {statistics.median(walls):7.1f} s   {statistics.median(ratios):.2f}x " \
           f"({min(ratios):.2f}-{max(ratios):.2f})"
    if "compile" in results[name][0]:
      line += "   split: " + ", ".join(
          f"{k} {statistics.median(r[k] for r in results[name]):.1f} s"
          for k in ("compile", "train", "analysis"))
    print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
