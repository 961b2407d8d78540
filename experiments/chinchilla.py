"""Chinchilla's compute-optimal allocation (Hoffmann et al. 2022) on our own runs: IsoFLOP sweeps.

    python -m launch sweep --config experiments/chinchilla.py:cpu --workdir runs/chinchilla

The plan: budgets C spaced evenly in log C; at each budget `sizes` models of the model ladder
(research/models/ladder.py) spaced by `spacing` in N around a prior optimum N_opt(C) =
prior_n (C / prior_c)^prior_a; each trained on D = C / F(N) tokens, F the training FLOPs per token
of that shape as `sweep.budget_count` counts them: 6 N with N total (the headline convention,
so its budgets are exactly iso) or our full count. Sizes sit on one grid in log N, so a size
recurs at several budgets; each size is one constant-rate parent run with WSD cooldown branches
(research/train/branch.py) at the token counts its budgets need, which costs about one run per
size instead of one per point. Every model is muP (Yang et al. 2022) with the base width's tuned
learning rate (see results/lr-transfer/README.md for the pilot that chose it).

The analysis fits Approaches 1, 2 and 3 (research/scaling) with bootstrap intervals under two N
conventions (total, non-embedding) and two FLOP counts (6ND with that N; our full count), holds
out the largest budget and predicts its optimal loss, and gives N_opt, D_opt and tokens per
parameter at the budgets in sweep.flops, or at yours:
`python -m launch analyze --workdir DIR --flops 1e20,1e22`.

Presets: smoke (synthetic language, a few minutes; the tests), cpu (../shared/data/text, at most
45 minutes on 2 cores), gpu (1e17-1e19 FLOPs on a TFDS corpus you prepare; --dry-run prints its
plan), synthetic (the cpu plan on a generated language whose entropy rate is known: Approach 3's
E against it). cpu and synthetic are v2 as pre-registered (results/PREREGISTRATION-scaling-v2.md).
"""

import math

import ml_collections
import numpy as np

from experiments import common, scaling_family
from research import config as config_lib
from research import store
from research.errors import UserError, require
from research.models import ladder, transformer
from research.recipes import lm as lm_recipe
from research.scaling import ladder_points
from research.scaling.ladder_points import CONVENTIONS

PRESETS = ("smoke", "cpu", "gpu", "synthetic")
BUDGET_COUNTS = ("6ND", "full")
recipe = lm_recipe.recipe
size = lm_recipe.size
resolve = lm_recipe.resolve


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.get_config(preset)
  c.sweep = ml_collections.ConfigDict(dict(
      budgets=(1e11, 10 ** 11.5, 1e12, 10 ** 12.5), sizes=7, spacing=10 ** 0.25, prior_c=1e12,
      prior_n=4.7e4, prior_a=0.5, **scaling_family.LADDERS[preset], branches=True,
      extra_low=0, extra_high=0, flops=(1e15, 1e18, 1e21), bootstrap=100, budget_count="6ND",
      seeds=(0,)))
  if preset == "smoke":
    c.sweep.update(budgets=(2e9, 8e9, 3.2e10), sizes=3, spacing=2.0, prior_c=8e9, prior_n=1.2e4,
                   bootstrap=20)
  elif preset == "gpu":
    c.sweep.update(budgets=(1e17, 4e17, 1.6e18, 6.4e18), sizes=7, spacing=2 ** 0.5,
                   prior_c=1e18, prior_n=5e7)
  else:  # cpu, synthetic: v2 as pre-registered (results/PREREGISTRATION-scaling-v2.md), centred
    # on v1's minima in non-embedding N; 2 seeds so the bootstrap resamples seeds, not the design
    c.sweep.update(budgets=tuple(10 ** (10.9 + 0.25 * k) for k in range(7)), sizes=7,
                   spacing=10 ** 0.2, prior_c=1e12, prior_n=2.2e4, prior_a=0.75, seeds=(0, 1),
                   bootstrap=200)
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  require(len(s.budgets) >= 2 and all(b > 0 for b in s.budgets)
          and list(s.budgets) == sorted(s.budgets), "sweep.budgets", s.budgets,
          "must be at least two increasing positive FLOP budgets")
  common.require_sizes(s.sizes, 3, "an IsoFLOP budget needs at least 3 sizes to have an "
                       "interior minimum")
  require(s.spacing > 1, "sweep.spacing", s.spacing, "must be a ratio > 1 between sizes")
  require(isinstance(s.base_width, int) and s.base_width >= 1, "sweep.base_width", s.base_width,
          "must be muP's base d_model, where the learning rate was tuned")
  require(0 < s.prior_a < 1 and s.prior_n > 0 and s.prior_c > 0, "sweep.prior_a", s.prior_a,
          "the prior N_opt = prior_n (C / prior_c)^prior_a needs prior_n, prior_c > 0 and "
          "0 < prior_a < 1")
  require(s.budget_count in BUDGET_COUNTS, "sweep.budget_count", s.budget_count,
          f"counts a budget's FLOPs, one of {', '.join(BUDGET_COUNTS)}: 6ND with N total (the "
          "headline convention) or our full count")
  scaling_family.require_seeds(s.seeds)
  for field in ("extra_low", "extra_high"):
    require(isinstance(s[field], int) and 0 <= s[field] <= common.MAX_SIZES, f"sweep.{field}",
            s[field], f"must be a number of sizes in [0, {common.MAX_SIZES}]")


def flops_per_token(mcfg, seq_len: int, count: str) -> int:
  """Training FLOPs per token as sweep.budget_count counts a budget: 6 N (N total) or in full."""
  if count == "6ND":
    return 6 * transformer.param_counts(mcfg).total
  return transformer.train_flops_per_token(mcfg, seq_len, "full")


def _shape(n_target: float, s) -> ladder.Rung:
  return ladder.rung(n_target, aspect=s.aspect, head_size=s.head_size, ff_ratio=s.ff_ratio,
                     tolerance=0.35)


def grid(c) -> list[dict]:
  """The IsoFLOP points: per budget, grid indices i (N_target = prior_n spacing^i) around the
  prior optimum, their ladder shapes, steps and tokens. A prior optimum exactly between two
  centrings (v2's largest budget) takes the lower one, after rounding to 9 decimals so that
  float noise in 10^x cannot pick the side."""
  s, t = c.sweep, c.train
  per_step = t.batch_size * t.seq_len
  half = (s.sizes - 1) / 2
  points = []
  for j, budget in enumerate(s.budgets):
    centre = s.prior_a * math.log(budget / s.prior_c) / math.log(s.spacing)
    low = math.ceil(round(centre - half, 9) - 0.5)
    high = low + s.sizes - 1
    shapes = {}
    for i in range(low - s.extra_low, high + s.extra_high + 1):
      shape = _shape(s.prior_n * s.spacing ** i, s)
      shapes.setdefault(shape, i)  # the coarse ladder of small models can repeat a shape
    if len(shapes) < 3:
      raise UserError(f"sweep.budgets: C = {budget:.3g} gets {len(shapes)} distinct shape(s) "
                      "from the ladder, no interior point is possible; raise sweep.spacing or "
                      "lower sweep.head_size")
    for shape, i in shapes.items():
      mcfg = transformer.TransformerConfig(**{**c.model.to_dict(), **shape.model_fields()})
      per_token = flops_per_token(mcfg, t.seq_len, s.budget_count)
      steps = round(budget / per_token / per_step)
      cooldown = max(1, round(t.cooldown_fraction * steps))
      if steps - cooldown <= t.warmup_steps:
        raise UserError(
            f"sweep.budgets: C = {budget:.3g} is too small for the model of N = "
            f"{shape.n_nonemb:,} non-embedding parameters: {steps} steps of {per_step} tokens, "
            f"and warmup ({t.warmup_steps}) plus cooldown ({cooldown}) need more")
      points.append(dict(budget=j, C_planned=budget, index=i, shape=shape, steps=steps))
  return points


def plan(c) -> list[ml_collections.ConfigDict]:
  """Per size on the grid, a constant-rate parent (its checkpoints kept at the branch steps)
  and the size's IsoFLOP points as WSD branches of it (experiments/scaling_family.py); parents
  come first. Without sweep.branches, one WSD run per point."""
  points = grid(c)
  shapes = sorted({p["shape"] for p in points}, key=lambda r: r.n_nonemb)
  steps = [(shape, [p["steps"] for p in points if p["shape"] == shape]) for shape in shapes]
  if c.sweep.branches:
    return scaling_family.ladder_runs(c, steps, c.sweep.seeds)

  def point(shape, n, seed):
    def apply(run):
      run.model.update(**shape.model_fields())
      run.seed = seed
      lm_recipe.set_steps(run, n)
    return apply

  return common.expand(c, [point(shape, n, seed) for seed in c.sweep.seeds
                           for shape, ns in steps for n in ns])


# Analysis.

HEADLINE = "N total, C = 6ND"


def _options(flops, budget_ids, bootstrap: int) -> dict:
  from research.scaling import report
  return report.options(approaches=[1, 2, 3], bootstrap=bootstrap, budgets=list(flops),
                        budget_ids=budget_ids, window=None)  # every size of a budget


def heldout_optimum(runs, budget_ids, options) -> dict:
  """Hoffmann's law fitted without the largest budget predicts that budget's optimal loss; the
  observed optimum is the vertex of its IsoFLOP parabola (Approach 2)."""
  from research.scaling import approaches
  from research.scaling.fit import fit_law
  from research.scaling.forms import hoffmann_frontier
  largest = budget_ids == budget_ids.max()
  train = runs.subset(~largest)
  fit = fit_law("hoffmann", train.inputs(), train.L, delta=options["delta"], keep=options["keep"],
                maxiter=options["maxiter"])
  observed = approaches.isoflop_minima(runs.subset(largest), budget_ids[largest],
                                       window=options["window"])[0]
  k = runs.conventions["flops_per_param_token"]
  frontier = hoffmann_frontier(fit.theta, np.array([observed["C"]]), k)
  n, d = float(frontier["N_opt"][0]), float(frontier["D_opt"][0])
  predicted = float(fit.form.loss(fit.theta, dict(N=np.array([n]), D=np.array([d])))[0])
  return dict(C=observed["C"], predicted_L_opt=predicted, observed_L_opt=observed["L_opt"],
              relative_error=(predicted - observed["L_opt"]) / observed["L_opt"],
              predicted_N_opt=n, observed_N_opt=observed["N_opt"],
              observed_inside_grid=observed["inside_grid"], train_converged=fit.converged)


def _summary(report: dict) -> dict:
  out = {}
  for name, result in report["approaches"].items():
    entry = dict(a=result.get("a"), b=result.get("b"),
                 intervals=result.get("bootstrap", {}).get("intervals", {}))
    if "failed" in result:
      entry["failed"] = result["failed"]
    if name == "3":
      entry.update(E=result["fit"]["params"]["E"], alpha=result["fit"]["params"]["alpha"],
                   beta=result["fit"]["params"]["beta"], allocation=result["allocation"])
    out[f"approach{name}"] = entry
  return out


def _floors(workdir: str, run: str):
  """[(label, nats)] of a synthetic language (its entropy rate, and the best mean loss over the
  run's context), from the run's summary; None for other data."""
  from research.data import markov
  summary = store.summary(store.run_dir(workdir, run)) or {}
  chain = (summary.get("data") or {}).get("synthetic")
  if not chain:
    return None
  seq_len = store.read_config(store.run_dir(workdir, run))["config"]["train"]["seq_len"]
  return [("entropy rate", chain["entropy_rate_nats"]),
          (f"best loss at context {seq_len}",
           markov.loss_floor(chain["conditional_entropies_nats"], seq_len))]


def analyze(workdir: str, flops=None) -> dict:
  """runs.csv; Approaches 1-3 under every convention (fit.json, report.md); the headline
  convention's figures. `flops`: the budgets of the allocation table (default sweep.flops;
  `python -m launch analyze --workdir DIR --flops 1e20,1e21`)."""
  import time
  from research.scaling import plots
  from research.scaling import report as report_lib
  started = time.perf_counter()
  s = config_lib.preset(get_config, store.read_sweep(workdir)).sweep
  allocation_flops = tuple(flops) if flops else tuple(s.flops)
  df, points = ladder_points.points_table(workdir, s.budget_count, s.budgets)
  out = common.Outputs(workdir)
  out.runs_csv(df)
  if points.empty or points.budget.nunique() < 2:
    print(f"analysis: {len(points)} finished IsoFLOP point(s); a fit needs two budgets or more")
    return out.paths
  budget_ids = points.budget.to_numpy()
  fits, headline_runs = {}, None
  for name, (n_column, count) in CONVENTIONS.items():
    runs = ladder_points.runs_under(points, n_column, count)
    options = _options(allocation_flops, budget_ids,
                       s.bootstrap if name == HEADLINE else s.bootstrap // 2)
    report = report_lib.analyse(runs, options)
    report["budget_spread_dex"] = ladder_points.budget_spread_dex(runs.C, budget_ids)
    try:
      report["heldout_optimum"] = heldout_optimum(runs, budget_ids, options)
    except UserError as e:  # too few points below the largest budget
      report["heldout_optimum"] = dict(skipped=str(e))
    drawn = dict(report)  # with the bootstrap samples: the allocation figure draws their band
    report["approaches"] = {k: {kk: vv for kk, vv in v.items() if kk != "bootstrap_samples"}
                            for k, v in report["approaches"].items()}
    fits[name] = report
    if name == HEADLINE:
      headline_runs, headline = runs, drawn
  edges = []
  for budget, group in points.groupby("budget"):
    best = group.N.iloc[int(np.argmin(group.val_loss.to_numpy()))]
    if best in (group.N.min(), group.N.max()):
      side = "extra_low" if best == group.N.min() else "extra_high"
      edges.append(dict(C=float(group.C.median()), best_N=float(best), add=side))
  floors = _floors(workdir, points.run.iloc[0]) if len(points) else None
  sizes = points.groupby("N").N_nonemb.first()
  shares = [dict(N=int(n), N_nonemb=int(m), embedding_share=1 - m / n) for n, m in sizes.items()]
  record_out = dict(
      study="Chinchilla IsoFLOP sweep (Hoffmann et al. 2022), analysed with research/scaling",
      L="held-out loss, nats/token (final_val_loss)", headline=HEADLINE,
      budgets=sorted({float(f"{c:.3g}") for c in points.groupby("budget").C.median()}),
      points=int(len(points)), planned_runs=int(len(df)), edges=edges, sizes=shares,
      time=ladder_points.time_split(df),
      entropy_rate_nats=floors[0][1] if floors else None,
      summary={name: _summary(r) for name, r in fits.items()},
      heldout_optimum={name: r["heldout_optimum"] for name, r in fits.items()},
      fits=fits)
  out.saved(plots.report_figures(headline_runs, headline, workdir, budget_ids=budget_ids,
                                 floors=floors, convention=HEADLINE))
  record_out["time"]["analysis_s"] = time.perf_counter() - started
  return out.fit(record_out, format_report)


def _ci(entry: dict, key: str) -> str:
  value, interval = entry.get(key), entry.get("intervals", {}).get(key)
  if value is None:
    return "-"
  return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


PAPERS = (  # (source, a of Approaches 1 / 2 / 3, E, alpha, beta)
    ("Hoffmann et al. 2022 (Table 2, eq. 10)", (0.50, 0.49, 0.46), 1.69, 0.34, 0.28),
    ("Besiroglu et al. 2024 (Epoch's refit of Approach 3)", (None, None, 0.51), 1.82, 0.35, 0.37),
)


def format_report(record: dict) -> str:
  """Markdown: exponents under every convention beside the papers', the allocation, the
  held-out check, the time split."""
  from research.scaling import report as report_lib
  head = record["summary"][record["headline"]]
  a3 = head["approach3"]
  lines = ["| | Approach 1 a | Approach 2 a | Approach 3 a | E | alpha | beta |",
           "|---|---|---|---|---|---|---|",
           f"| ours ({record['headline']}) | {_ci(head['approach1'], 'a')} | "
           f"{_ci(head['approach2'], 'a')} | {_ci(a3, 'a')} | {a3['E']:.3f} | {a3['alpha']:.3f} | "
           f"{a3['beta']:.3f} |"]
  for source, a, e, alpha, beta in PAPERS:
    lines.append(f"| {source} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in a)
                 + f" | {e:.2f} | {alpha:.2f} | {beta:.2f} |")
  lines += ["", "Every convention (95% bootstrap intervals in brackets; a budget's spread in "
            "log10 C is 0 in the convention the plan counted budgets in, and Approaches 1-2 "
            "treat a budget as iso in every convention):", "",
            "| convention | budget spread (dex) | Approach 1 a | Approach 2 a | Approach 3 a | "
            "Approach 3 E, alpha, beta | held-out L_opt error |", "|---|---|---|---|---|---|---|"]
  for name, entry in record["summary"].items():
    a3 = entry["approach3"]
    held = record["heldout_optimum"][name]
    spread = record["fits"][name].get("budget_spread_dex")
    lines.append(f"| {name} | {'-' if spread is None else f'{spread:.3f}'} | "
                 f"{_ci(entry['approach1'], 'a')} | {_ci(entry['approach2'], 'a')} | "
                 f"{_ci(a3, 'a')} | {a3['E']:.3f}, {a3['alpha']:.3f}, {a3['beta']:.3f} | "
                 + (f"{held['relative_error']:+.2%} |" if "relative_error" in held else
                    "skipped |"))
  lines += ["", f"Compute-optimal allocation (Approach 3, {record['headline']}):", "",
            "| C (FLOPs) | N_opt | D_opt | tokens per parameter | L_opt |", "|---|---|---|---|---|"]
  for row in record["summary"][record["headline"]]["approach3"]["allocation"]:
    lines.append(f"| {row['C']:.2e} | {row['N_opt']:.3g} | {row['D_opt']:.3g} | "
                 f"{row['tokens_per_param']:.1f} | {row['L_opt']:.3f} |")
  lines += ["", f"Bootstrap ({record['headline']}):"]
  for approach, result in record["fits"][record["headline"]]["approaches"].items():
    boot = result.get("bootstrap")
    if boot:
      lines.append(f"- Approach {approach}: {boot['n_converged']} of {boot['n_boot']} resamples "
                   f"of {boot['resample']}; "
                   + ("; ".join(report_lib.bootstrap_accounting(boot)) or "none failed"))
  if record.get("sizes"):
    lines += ["", "The embedding share of N total per size (the input embedding and the readout, "
              "with the positions where learned):", "",
              "| N total | N non-embedding | embedding share |", "|---|---|---|"]
    lines += [f"| {x['N']:,} | {x['N_nonemb']:,} | {x['embedding_share']:.0%} |"
              for x in record["sizes"]]
  for name, report in record["fits"].items():
    for approach, result in report["approaches"].items():
      if "failed" in result:
        lines.append(f"\nApproach {approach} ({name}): no estimate. {result['failed']}")
      for warning in result.get("warnings", []):
        lines.append(f"\nwarning ({name}, Approach {approach}): {warning}")
  for edge in record.get("edges", []):
    lines.append(f"\nbudget C = {edge['C']:.3g}: its best size (N = {edge['best_N']:,.0f}) is "
                 "at the "
                 f"edge of its grid; add sizes there with --extend --config.sweep.{edge['add']}=1")
  if "time" in record:
    lines += ["", ladder_points.format_time(record["time"], record["time"].get("analysis_s", 0.0))]
  if record.get("entropy_rate_nats"):
    e = record["summary"][record["headline"]]["approach3"]["E"]
    lines += ["", f"Known truth: fitted E = {e:.4f} nats/token, entropy rate of the data "
              f"{record['entropy_rate_nats']:.4f} ({e / record['entropy_rate_nats'] - 1:+.2%})."]
  return "\n".join(lines) + "\n"
