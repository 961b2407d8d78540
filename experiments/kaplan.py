"""Kaplan et al. (2020) scaling laws on our own runs: L(N), L(D), L(N, D) and the C_min frontier.

    python -m launch sweep --config experiments/kaplan.py:cpu --workdir runs/kaplan

The plan: `sizes` models of the model ladder (research/models/ladder.py) from n_min to n_max
non-embedding parameters, spaced evenly in log N; each is one constant-rate parent run to the
largest token count with WSD cooldown branches (research/train/branch.py) at the token counts
`fractions` x tokens_max, so every size has a whole L(D) curve. muP, with the base width's
learning rate, as in experiments/chinchilla.py.

The analysis fits, under both N conventions (non-embedding as Kaplan et al., total as Hoffmann et
al.) and both FLOP counts (6ND with that N; our full count):
  * L(N) = (N_c / N)^alpha_N at the largest D (and E + A N^-alpha beside it);
  * L(D) = (D_c / D)^alpha_D at the largest N;
  * L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D on every point (Kaplan eq. 1.5);
  * the C_min frontier: the lower envelope of loss against compute, L(C_min) = (C_c / C_min)^
    alpha_C, and N_opt ~ C^a along it.

Presets: smoke (synthetic language, a few minutes; the tests), cpu (../shared/data/text, at most
45 minutes on 2 cores), gpu (a real cluster on a TFDS corpus you prepare; --dry-run prints it).
"""

import ml_collections
import numpy as np

from experiments import common, scaling_family
from research import config as config_lib
from research import store
from research.errors import UserError, require
from research.models import ladder
from research.recipes import lm as lm_recipe
from research.scaling import ladder_points
from research.scaling.ladder_points import CONVENTIONS
from research.train import branch

PRESETS = ("smoke", "cpu", "gpu")
recipe = lm_recipe.recipe
size = lm_recipe.size


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.get_config(preset)
  shape = {k: v for k, v in scaling_family.LADDERS[preset].items() if k != "base_width"}
  c.sweep = ml_collections.ConfigDict(dict(
      n_min=5e3, n_max=1.6e5, sizes=6, **shape, tokens_max=8_192_000,
      fractions=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1), bootstrap=100))
  if preset == "smoke":
    c.sweep.update(n_min=3e3, n_max=2.5e4, sizes=3, tokens_max=102_400,
                   fractions=(1 / 4, 1 / 2, 1), bootstrap=20)
  elif preset == "gpu":
    c.sweep.update(n_min=2e6, n_max=3e8, sizes=7, tokens_max=20_000_000_000)
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  common.require_sizes(s.sizes, 3, "a law in N needs at least 3")
  require(0 < s.n_min < s.n_max, "sweep.n_min", s.n_min, f"must be in (0, sweep.n_max = "
          f"{s.n_max})")
  require(len(s.fractions) >= 3 and all(0 < f <= 1 for f in s.fractions)
          and max(s.fractions) == 1, "sweep.fractions", s.fractions,
          "must be three or more fractions of tokens_max in (0, 1], the largest 1")
  per_step = c.train.batch_size * c.train.seq_len
  smallest = round(min(s.fractions) * s.tokens_max / per_step)
  require(branch.branch_step(max(smallest, 1), c.train.cooldown_fraction) > c.train.warmup_steps,
          "sweep.fractions", s.fractions,
          f"the smallest fraction of tokens_max gives {smallest} steps, too few for warmup "
          f"({c.train.warmup_steps}) plus the cooldown")


def plan(c) -> list[ml_collections.ConfigDict]:
  """A parent per size (parents first), then its WSD branches at fractions x tokens_max."""
  s, t = c.sweep, c.train
  shapes = ladder.ladder(s.n_min, s.n_max, s.sizes, aspect=s.aspect, head_size=s.head_size,
                         ff_ratio=s.ff_ratio)
  if len(shapes) < 3:
    raise UserError(f"sweep.sizes: the ladder gives {len(shapes)} distinct shape(s) from N = "
                    f"{s.n_min:,.0f} to {s.n_max:,.0f}; widen the range or lower head_size")
  per_step = t.batch_size * t.seq_len
  steps = sorted({max(1, round(f * s.tokens_max / per_step)) for f in s.fractions})
  return scaling_family.ladder_runs(c, [(shape, steps) for shape in shapes])


# Analysis.

def _power(x, loss, form: str = "power") -> dict:
  from research.scaling.fit import fit_law
  fit = fit_law(form, {"X": np.asarray(x, float)}, np.asarray(loss, float), keep=16, maxiter=500)
  return dict(fit.summary(), converged=fit.converged)


def _kaplan_constants(power: dict) -> dict:
  """L = A X^-alpha as Kaplan writes it: (X_c / X)^alpha, X_c = A^(1/alpha)."""
  p = power["params"]
  return dict(alpha=p["alpha"], X_c=p["A"] ** (1 / p["alpha"]) if p["alpha"] > 0 else None)


def laws(points, n_column: str, count: str, n_boot: int) -> dict:
  """Every Kaplan law of the finished points under one N convention and FLOP count."""
  from research.scaling import approaches
  from research.scaling.fit import bootstrap_law, fit_law
  out = {}
  largest_d = points[np.isclose(points.D, points.D.max())]
  out["L(N) at the largest D"] = dict(D=float(points.D.max()), **_kaplan_constants(
      _power(largest_d[n_column], largest_d.val_loss)))
  try:
    out["L(N) at the largest D"]["saturating"] = _power(largest_d[n_column], largest_d.val_loss,
                                                        "saturating")["params"]
  except UserError as e:  # E + A N^-alpha needs four sizes or more
    out["L(N) at the largest D"]["saturating"] = dict(skipped=str(e))
  largest_n = points[points[n_column] == points[n_column].max()]
  out["L(D) at the largest N"] = dict(N=float(points[n_column].max()), **_kaplan_constants(
      _power(largest_n.D, largest_n.val_loss)))
  inputs = {"N": points[n_column].to_numpy(float), "D": points.D.to_numpy(float)}
  fit = fit_law("kaplan", inputs, points.val_loss.to_numpy(float), keep=32, maxiter=500)
  joint = dict(fit.summary(), converged=fit.converged)
  if n_boot:
    boot = bootstrap_law(fit, inputs, points.val_loss.to_numpy(float), n_boot=n_boot, seed=0,
                         ci=0.95, maxiter=300)
    joint["intervals"] = boot["intervals"]
  out["L(N, D)"] = joint
  runs = ladder_points.runs_under(points, n_column, count)
  k = runs.conventions["flops_per_param_token"]
  envelope = approaches.approach1(runs)
  frontier = envelope["envelope"]
  out["C_min frontier"] = dict(a=envelope["a"], b=envelope["b"], warnings=envelope["warnings"],
                               **_kaplan_constants(_power(frontier["C"], frontier["L"])),
                               flops_per_param_token=k)
  return out


HEADLINE = "N non-embedding, C = 6ND"


def analyze(workdir: str) -> dict:
  """runs.csv; every law under every convention (fit.json, report.md); figures."""
  import time
  from research.scaling import plots
  started = time.perf_counter()
  s = config_lib.preset(get_config, store.read_sweep(workdir)).sweep
  df, points = ladder_points.points_table(workdir)
  out = common.Outputs(workdir)
  out.runs_csv(df)
  if points.empty or points[points.D == points.D.max()].N.nunique() < 3:
    print(f"analysis: {len(points)} finished point(s); the laws need 3 sizes at the largest D")
    return out.paths
  fits = {name: laws(points, n_column, count, s.bootstrap if name == HEADLINE else 0)
          for name, (n_column, count) in CONVENTIONS.items()}
  record = dict(study="Kaplan et al. (2020) laws, analysed with research/scaling",
                L="held-out loss, nats/token (final_val_loss)", headline=HEADLINE,
                points=int(len(points)), planned_runs=int(len(df)), fits=fits,
                time=ladder_points.time_split(df))
  out.figure(plots.kaplan_laws(points, CONVENTIONS[HEADLINE][0], fits[HEADLINE]), "kaplan_laws")
  record["time"]["analysis_s"] = time.perf_counter() - started
  return out.fit(record, format_report)


def _num(value, fmt=".3f") -> str:
  return "-" if value is None else format(value, fmt)


def format_report(record: dict) -> str:
  lines = ["| convention | alpha_N (L(N)) | alpha_D (L(D)) | L(N, D): alpha_N, alpha_D | "
           "alpha_C (C_min) | N_opt ~ C^a |", "|---|---|---|---|---|---|"]
  for name, f in record["fits"].items():
    joint = f["L(N, D)"]["params"]
    lines.append(f"| {name} | {_num(f['L(N) at the largest D']['alpha'])} | "
                 f"{_num(f['L(D) at the largest N']['alpha'])} | {joint['alpha_n']:.3f}, "
                 f"{joint['alpha_d']:.3f} | {_num(f['C_min frontier']['alpha'])} | "
                 f"{f['C_min frontier']['a']:.3f} |")
  lines.append("| Kaplan et al. 2020 (Sec. 1.2, eq. 1.5, Table 6; N non-embedding, C = 6ND) | "
               "0.076 | 0.095 | 0.076, 0.103 | 0.050 | 0.73 |")
  interval = record["fits"][record["headline"]]["L(N, D)"].get("intervals", {})
  if interval:
    lines += ["", f"95% bootstrap intervals of L(N, D) ({record['headline']}): " + ", ".join(
        f"{k} [{v[0]:.3f}, {v[1]:.3f}]" for k, v in interval.items())]
  if "time" in record:
    lines += ["", ladder_points.format_time(record["time"], record["time"].get("analysis_s", 0.0))]
  return "\n".join(lines) + "\n"

