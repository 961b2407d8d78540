"""Every study's analysis gives the fit.json it gave before the house was rebuilt (issue 18).

The fixtures (tests/data/analysis/<sweep>/, made by tests/data/analysis/make_fixtures.py) hold
what each analysis reads from a finished smoke sweep of the code on main at 577b2ad, with the
fit.json that code wrote over it. The analysis of today's code runs over a copy and must agree to
rounding: the fits are deterministic given their inputs and the instruction set, and both the
expected and today's analysis run in a child process pinned to AVX2 (make_fixtures.PINNED_NUMERICS;
the smoke fits are ill-conditioned enough that a CPU's AVX-512 paths move them). Timings
(`analysis_s`, a sampler's `seconds`) are left out of the comparison. A change meant to move a fit
(a new estimator) regenerates the fixtures from a new sweep and says so.
"""

import json
import math
import os
import shutil
import sys

import pytest

from lm_helpers import REPO

HERE = os.path.join(REPO, "tests", "data", "analysis")
sys.path.insert(0, HERE)
import make_fixtures  # noqa: E402  (tests/data/analysis/make_fixtures.py)

SWEEPS = ("lm-py-sweep-smoke", "chinchilla-py-smoke", "kaplan-py-smoke", "lr_transfer-py-smoke",
          "emergence-py-smoke", "diffusion-py-sweep-smoke")
TIMINGS = ("analysis_s", "seconds")


def differences(got, want, where="fit.json", rtol=1e-6) -> list[str]:
  """Where two JSON values differ: numbers beyond rtol, anything else at all."""
  if isinstance(want, dict) and isinstance(got, dict):
    keys = (set(want) | set(got)) - set(TIMINGS)
    return [d for k in sorted(keys, key=str) for d in
            (differences(got[k], want[k], f"{where}/{k}", rtol) if k in got and k in want
             else [f"{where}/{k}: only in {'expected' if k in want else 'new'}"])]
  if isinstance(want, list) and isinstance(got, list):
    if len(want) != len(got):
      return [f"{where}: {len(got)} items, expected {len(want)}"]
    return [d for i, (g, w) in enumerate(zip(got, want))
            for d in differences(g, w, f"{where}[{i}]", rtol)]
  numbers = (int, float)
  if (isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(want, bool)
      and not isinstance(got, bool)):
    if math.isclose(got, want, rel_tol=rtol, abs_tol=1e-12) or (math.isnan(got)
                                                                  and math.isnan(want)):
      return []
    return [f"{where}: {got!r}, expected {want!r}"]
  return [] if got == want else [f"{where}: {got!r}, expected {want!r}"]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_analysis_writes_the_fit_it_wrote_before(sweep, tmp_path):
  workdir = tmp_path / sweep
  shutil.copytree(os.path.join(HERE, sweep), workdir)
  # Without the sample grids, which need the checkpoints the fixture leaves out (megabytes);
  # they are figures, not part of fit.json (tests/test_diffusion_study.py draws them).
  with open(make_fixtures.analyze_pinned(str(workdir))) as f, \
      open(workdir / "expected_fit.json") as g:
    got, want = json.load(f), json.load(g)
  assert not differences(got, want), "\n".join(differences(got, want)[:20])


def test_the_comparison_sees_a_moved_number():
  want = {"a": [1.0, {"b": 2.0, "analysis_s": 3.0}], "c": "x"}
  assert not differences({"a": [1.0 + 1e-9, {"b": 2.0, "analysis_s": 9.0}], "c": "x"}, want)
  assert differences({"a": [1.0, {"b": 2.001}], "c": "x"}, want) == ["fit.json/a[1]/b: 2.001, "
                                                                    "expected 2.0"]
  assert differences({"a": [1.0], "c": "y"}, want) == ["fit.json/a: 1 items, expected 2",
                                                       "fit.json/c: 'y', expected 'x'"]


def test_the_fixtures_name_no_machine_paths():
  for root, _, files in os.walk(HERE):
    for name in files:
      if name.endswith((".json", ".jsonl")):
        with open(os.path.join(root, name)) as f:
          assert '": "/' not in f.read(), os.path.join(root, name)
