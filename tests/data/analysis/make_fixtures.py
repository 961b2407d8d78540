"""Writes the analysis fixtures of tests/test_analysis_unchanged.py from finished sweep folders.

    python tests/data/analysis/make_fixtures.py SWEEPS_DIR
    python tests/data/analysis/make_fixtures.py --refit    # expected fits only, same inputs

SWEEPS_DIR holds one folder per smoke sweep, named as STUDIES below says, each made by
`python -m launch sweep --config experiments/<study>.py:<preset> --workdir SWEEPS_DIR/<name>`.
Each fixture keeps what the study's analysis reads (sweep.json with the study path made relative;
per run config.json, summary.json, status.json, the eval and event lines of metrics.jsonl with a
branch's parent named relative to the sweep folder, a cached sampler comparison) and the fit.json
the analysis wrote there, as expected_fit.json. The committed
fixtures were made on main at 577b2ad, before the house was rebuilt (issue 18), on 2026-12-01.

One expected fit was moved on purpose since: chinchilla-py-smoke/expected_fit.json was rewritten
on 2026-12-02 by that day's analysis over the same fixture inputs, when Approach 2 began leaving
out budgets whose parabola minimum lies outside their sampled sizes (issue 20). Only Approach 2
moved: the smoke's three sizes per budget put every such minimum outside them (or give none), so
Approach 2 now reports no estimate; Approaches 1 and 3 kept every number (new fields only). On
2026-12-02 the same file gained one field per convention, `budget_spread_dex` (how far from iso
each budget is in that convention, issue 20), copied from that day's analysis; nothing else moved.

On 2026-12-03 every expected_fit.json was rewritten by `--refit`, now that the analyses run pinned
to AVX2 (PINNED_NUMERICS). The 2026-12-01 files came from a machine with AVX-512 (AMD Zen 4); on
an AVX2-only one (Zen 2) 555 of their numbers differed, the point fits of well-posed laws by under
1e-15 but the ill-conditioned smoke fits far more (Approach 3's theta by up to 98%, its bootstrap
intervals by factors of 1e183, the held-out prediction by 6%). Under the pinning, the code of main
at 1640b97 and the code of 2026-12-03 wrote the same files to the last digit (but for the new
`budget_spread_dex`), and so do the unpinned analyses on the Zen 2 machine. Later on 2026-12-03
kaplan-py-smoke/expected_fit.json was rewritten by `--refit` when Kaplan's laws began to be taken
where each holds (issue 20): L(N) on the sizes converged in D and L(D) on the largest size's
data-limited runs replace L(N) at the largest D and L(D) at the largest N, alpha_N at every D
and the whole C_min envelope are new, and L(N, D) gained its bootstrap's failure counts; L(N, D)'s
fit and the frontier's N_opt ~ C^a kept every number. The same day chinchilla-py-smoke's file
gained `sizes` (each size's embedding share of N), by `--refit`; no number moved. Later the
same day kaplan-py-smoke's file was rewritten by `--refit` once more, when L(N, D)'s bootstrap
began resampling by run (seeds within design points where there are replicates, issue 20): the
smoke has one seed, so it still resamples the points, but in the order of the run ids, which
moved its intervals and failure count; the frontier gained `n_law` (N_opt's power law, drawn
in the figure) and the bootstrap its `resample`. No point fit moved.
Later still on 2026-12-03 that file's `resample` label was rewritten by `--refit` when Kaplan
began to share Chinchilla's description of what a bootstrap resamples (one seed column absent:
"runs (the design itself ...)"); no number moved. On 2026-12-07 emergence-py-smoke's file was
rewritten by `--refit` when the emergence analysis gained its held-out-model validation
(`heldout_forecast`, issue 22) and the list of tasks drawn as panels (`panels`); no number moved.
Later on 2026-12-07 every expected_fit.json was rewritten by `--refit` when the fitter's batched
L-BFGS became `optax.lbfgs` with its zoom line search (issue 23, benchmarks/fit_optimizer.py).
Point fits of well-posed laws moved by at most 4e-8 relative (lm, kaplan, diffusion); emergence's
by nothing. The chinchilla smoke's Approach 3 has E at its floor (3.6e-29 before, 7.6e-18 after;
the objective agrees to 1e-15), so E, its intervals and the numbers that divide by it moved
by orders of magnitude; its other constants kept 4 digits. The ill-conditioned smoke bootstraps
moved (intervals by up to 31%, kaplan's alpha_n bound), as did the counts of refined starts that
agree (`good_starts`, `spread`) and the "did not converge" counts (now 0 where there was 1).
"""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STUDIES = {"lm-py-sweep-smoke": "experiments/lm.py",
           "chinchilla-py-smoke": "experiments/chinchilla.py",
           "kaplan-py-smoke": "experiments/kaplan.py",
           "lr_transfer-py-smoke": "experiments/lr_transfer.py",
           "emergence-py-smoke": "experiments/emergence.py",
           "diffusion-py-sweep-smoke": "experiments/diffusion.py"}
RUN_FILES = ("config.json", "summary.json", "status.json", "sampler_comparison.json")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
# The smoke sweeps' fits are ill-conditioned (three sizes per budget, a handful of points), so
# ULP-level differences between CPUs' vector paths (numpy's AVX-512 loops, OpenBLAS's kernel
# choice, XLA's target ISA) move some of their numbers far beyond rounding: the analyses run
# on one instruction set, AVX2, which every x86-64 machine of this kind has.
PINNED_NUMERICS = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
                   "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1",
                   "XLA_FLAGS": "--xla_cpu_max_isa=AVX2 --xla_cpu_multi_thread_eigen=false"}
_ANALYZE = """
import json, os, sys
from research import config as config_lib
workdir = sys.argv[1]
with open(os.path.join(workdir, "sweep.json")) as f:
  study = config_lib.load_module(json.load(f)["study"])
# The sample grids need checkpoints, which the fixtures leave out; they are figures, not fit.json.
study.sample_grids = lambda *args, **kwargs: []
study.analyze(workdir)
"""


def analyze_pinned(workdir: str) -> str:
  """Runs the study's analysis over `workdir` in a child process under PINNED_NUMERICS; returns
  the fit.json path (the child's output on failure is raised)."""
  env = {**os.environ, **PINNED_NUMERICS, "PYTHONPATH": REPO}
  done = subprocess.run([sys.executable, "-c", _ANALYZE, workdir], cwd=REPO, env=env,
                        capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f"analysis of {workdir} failed:\n{done.stdout}\n{done.stderr}")
  return os.path.join(workdir, "fit.json")


def refit(names=tuple(STUDIES)) -> None:
  """Rewrites each fixture's expected_fit.json by today's analysis of its inputs (pinned)."""
  import tempfile
  for name in names:
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, name)
      shutil.copytree(os.path.join(HERE, name), workdir)
      shutil.copy(analyze_pinned(workdir), os.path.join(HERE, name, "expected_fit.json"))


def main(sweeps: str) -> None:
  for name, study in STUDIES.items():
    src, dst = os.path.join(sweeps, name), os.path.join(HERE, name)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(os.path.join(dst, "runs"))
    with open(os.path.join(src, "sweep.json")) as f:
      record = json.load(f)
    record["study"] = study
    with open(os.path.join(dst, "sweep.json"), "w") as f:
      json.dump(record, f, indent=None, sort_keys=True)
    shutil.copy(os.path.join(src, "fit.json"), os.path.join(dst, "expected_fit.json"))
    for run in record["runs"]:
      folder, out = os.path.join(src, "runs", run["run"]), os.path.join(dst, "runs", run["run"])
      os.makedirs(out)
      for file in RUN_FILES:
        if os.path.exists(os.path.join(folder, file)):
          shutil.copy(os.path.join(folder, file), os.path.join(out, file))
      with open(os.path.join(folder, "metrics.jsonl")) as f, \
          open(os.path.join(out, "metrics.jsonl"), "w") as g:
        g.writelines(_relative(line, src) for line in f if '"kind": "train"' not in line)


def _relative(line: str, sweep: str) -> str:
  """A branch event's parent folder relative to the sweep folder (no machine paths)."""
  record = json.loads(line)
  if record.get("event") != "branch":
    return line
  record["parent"] = os.path.relpath(record["parent"], sweep)
  return json.dumps(record) + "\n"


if __name__ == "__main__":
  refit() if sys.argv[1:] == ["--refit"] else main(sys.argv[1])
