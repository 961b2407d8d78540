"""One analysis of a table of runs: the approaches, intervals and held-out check, as dict and text.

`analyse` returns a JSON-ready report; `format_report` renders it for a terminal. Both state the
conventions (which N, how C and D relate) and whether each fit converged.
"""

import math
import numpy as np

from research.errors import UserError
from research.scaling import approaches, table
from research.scaling.fit import bootstrap_law, fit_law
from research.scaling.forms import hoffmann_frontier

DEFAULT_BUDGETS = (1e21, 1e22, 1e23, 5.76e23, 1e24, 1e25)

# `analyse`'s options as `launch fit` defaults them; a study that analyses its own sweep starts
# from these too (`options(...)`).
DEFAULTS = dict(approaches=[3], form="hoffmann", delta=1e-3, reduce="sum", likelihood=False,
                keep=32, maxiter=300, bootstrap=200, ci=0.95, seed=0, heldout=1,
                budget_tolerance_dex=0.05, drop_small_budgets=False, window=2.0, min_sizes=3,
                minimum="parabola", budgets=list(DEFAULT_BUDGETS))


def options(**overrides) -> dict:
  """DEFAULTS with `overrides` (unknown names are a programming error)."""
  unknown = set(overrides) - set(DEFAULTS) - {"budget_ids"}
  if unknown:
    raise TypeError(f"unknown analysis options: {sorted(unknown)}")
  return {**DEFAULTS, **overrides}


def parse_flops(text: str, flag: str) -> list[float]:
  """'1e20,1e22' -> [1e20, 1e22]; anything else is one clear UserError naming the flag."""
  try:
    values = [float(b) for b in text.split(",") if b.strip()]
  except ValueError:
    raise UserError(f"{flag} {text!r}: give FLOPs as numbers separated by commas") from None
  if not values or min(values) <= 0 or not all(math.isfinite(v) for v in values):
    raise UserError(f"{flag} {text!r}: give one or more positive, finite FLOP budgets")
  return values


def _approach3(runs, options) -> dict:
  inputs = runs.inputs()
  form = options.get("form", "hoffmann")
  if form == "muennighoff" and runs.U is None:
    raise UserError("--form muennighoff needs the unique-tokens column (--unique)")
  fit = fit_law(form, inputs, runs.L, delta=options["delta"], reduce=options["reduce"],
                likelihood=options["likelihood"], keep=options["keep"],
                maxiter=options.get("maxiter", 300))
  out = dict(approach=3, fit=fit.summary(), theta=fit.theta.tolist())
  if options["bootstrap"] > 0:
    boot = bootstrap_law(fit, inputs, runs.L, n_boot=options["bootstrap"], groups=runs.groups,
                         seed=options["seed"], ci=options["ci"],
                         maxiter=options.get("maxiter", 300), within=runs.bootstrap_points())
    boot["resample"] = approaches.resample_kind(runs)
    out["bootstrap"] = {k: v for k, v in boot.items() if k != "samples"}
    out["bootstrap_samples"] = boot["samples"]
  k = runs.conventions["flops_per_param_token"]
  frontier = hoffmann_frontier(fit.theta, np.array(options["budgets"]), k)
  # The frontier of the unrepeated law (U = D for the data-constrained form).
  out["allocation"] = [dict(C=float(c), N_opt=float(n), D_opt=float(d), tokens_per_param=float(r),
                            L_opt=float(fit.form.loss(fit.theta, dict(N=n, D=d, U=d))))
                       for c, n, d, r in zip(options["budgets"], frontier["N_opt"],
                                             frontier["D_opt"], frontier["tokens_per_param"])]
  out.update(a=fit.derived()["a"], b=fit.derived()["b"], converged=fit.converged)
  return out


def analyse(runs: table.Runs, options: dict) -> dict:
  """Run the requested approaches (1, 2, 3) and the held-out check; options from launch/fit.py."""
  report = dict(conventions=runs.conventions, n_points=int(len(runs.L)), approaches={},
                options={k: v for k, v in options.items() if k not in ("budgets", "budget_ids")},
                budgets=list(options["budgets"]))
  budget_ids = options.get("budget_ids")  # a planned sweep's budgets; else grouped by C
  if budget_ids is None:
    budget_ids = table.budgets(runs.C, options["budget_tolerance_dex"])
  for approach in options["approaches"]:
    if approach == 3:
      result = _approach3(runs, options)
    else:
      run_one = (lambda r, weights=None: approaches.approach1(r, weights)) if approach == 1 else (
          lambda r, weights=None: approaches.approach2(r, budget_ids, weights,
                                                       options["drop_small_budgets"],
                                                       options["window"],
                                                       options.get("minimum", "parabola"),
                                                       options.get("min_sizes", 3)))
      try:
        result = run_one(runs)
      except UserError as e:  # e.g. no two budgets with a minimum inside their sizes
        if len(options["approaches"]) == 1:
          raise
        failed = dict(approach=approach, failed=str(e))
        if approach == 2:  # the per-budget minima still go in the figure and the record
          try:
            failed["minima"] = approaches.isoflop_minima(
                runs, budget_ids, drop_small=options["drop_small_budgets"],
                window=options["window"], minimum=options.get("minimum", "parabola"),
                min_sizes=options.get("min_sizes", 3))
          except UserError:
            pass
        report["approaches"][str(approach)] = failed
        continue
      result["converged"] = True
      if options["bootstrap"] > 0:
        boot = approaches.bootstrap_allocation(run_one, runs, options["bootstrap"],
                                               options["seed"], options["ci"])
        result["bootstrap"] = {k: v for k, v in boot.items() if k != "samples"}
    report["approaches"][str(approach)] = result
  if options["heldout"] > 0:
    try:
      report["heldout"] = approaches.heldout_check(runs, budget_ids, options["heldout"],
                                                   delta=options["delta"], keep=options["keep"])
    except UserError as e:
      report["heldout"] = dict(skipped=str(e))
  return report


def _with_ci(name, value, intervals) -> str:
  ci = intervals.get(name)
  return f"{name} = {value:.6g}" + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def bootstrap_accounting(boot: dict) -> list[str]:
  """A bootstrap's failed resamples and left-out budgets, one line each (none when clean)."""
  lines = []
  if boot.get("n_failed"):
    lines.append(f"{boot['n_failed']} of {boot['n_boot']} resamples failed and are not in the "
                 "interval: " + "; ".join(f"{n} x {why}" for why, n in boot["failures"].items()))
  left = boot.get("budgets_left_out", {})
  if left.get("resamples_with_any"):
    n = left["resamples_with_any"]
    lines.append(f"{n} resample{'s' if n != 1 else ''} left budgets (up to {left['most']}) out "
                 "of their power law: a minimum outside the sampled sizes")
  return lines


def format_report(report: dict) -> str:
  """Human-readable summary: conventions, each law with intervals, allocation, held-out error."""
  conv = report["conventions"]
  lines = [f"{report['n_points']} runs.  Conventions: N = {conv['N']}; D = {conv['D']}; "
           f"{conv['C']}; L = {conv['L']}."]
  for key, result in report["approaches"].items():
    if "failed" in result:
      lines += ["", f"Approach {key}: no estimate. {result['failed']}"]
      continue
    boot = result.get("bootstrap", {})
    intervals = boot.get("intervals", {})
    ci = (f"{100 * boot['ci']:.0f}% bootstrap CI over {boot['n_converged']}/{boot['n_boot']} "
          f"resamples of {boot.get('resample', 'runs')}" if boot else "no bootstrap")
    lines += ["", f"Approach {key} ({ci})"] + ["  " + x for x in bootstrap_accounting(boot)]
    if key == "1":
      lines.append("  from the same runs as Approaches 2 and 3 (their training curves): its "
                   "agreement with them is not an independent check")
    if not result.get("converged", True):
      lines.append(f"  WARNING: the fit did NOT converge ({result['fit']['status']}); "
                   "the numbers below are where it stopped, not an optimum.")
    if key == "3":
      fit = result["fit"]
      lines.append(f"  {fit['formula']}   objective {fit['objective']:.6g} "
                   f"(Huber delta {fit['huber_delta']:g} on log L, {fit['reduce']}), "
                   f"{fit['status']}; {fit['good_starts']} of {fit['starts_refined']} refined "
                   f"starts (from {fit['starts']}) agree")
      lines += ["  " + _with_ci(k, v, intervals) for k, v in fit["params"].items()]
      lines += ["  " + _with_ci(k, fit["derived"][k], intervals) + "   (frontier exponent)"
                for k in ("a", "b")]
      lines += ["", f"  {'C (FLOPs)':>10} {'N_opt':>10} {'D_opt':>10} {'D/N':>7} {'L_opt':>7}"]
      lines += [f"  {r['C']:10.3g} {r['N_opt']:10.3g} {r['D_opt']:10.3g} "
                f"{r['tokens_per_param']:7.1f} {r['L_opt']:7.4f}" for r in result["allocation"]]
    else:
      lines += ["  " + _with_ci("a", result["a"], intervals) + "   (N_opt ~ C^a)",
                "  " + _with_ci("b", result["b"], intervals) + "   (D_opt ~ C^b)"]
      if result.get("minimum", "parabola") != "parabola":
        lines.append(f"  per-budget minima: {result['minimum']} (see --minimum)")
      lines += [f"  warning: {w}" for w in result.get("warnings", [])]
  held = report.get("heldout")
  if held:
    lines.append("")
    lines.append(f"Held-out check: {held['skipped']}" if "skipped" in held else
                 f"Held-out check (Approach 3 fitted without the largest {held['held_out_budgets']}"
                 f" budget(s), C >= {held['min_flops_held']:.3g}; {held['n_test']} runs): "
                 f"mean |error| {held['mean_abs_error']:.4f} nats "
                 f"({100 * held['mean_rel_error']:.2f}%)"
                 f", RMS {held['rms_error']:.4f}, mean signed {held['mean_signed_error']:+.4f}")
  return "\n".join(lines)
