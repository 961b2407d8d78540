"""Kaplan et al. (2020) scaling laws on our own runs: L(N), L(D), L(N, D) and the C_min frontier.

    python -m launch sweep --config experiments/kaplan.py:cpu --workdir runs/kaplan

The plan: `sizes` models of the model ladder (research/models/ladder.py) from n_min to n_max
non-embedding parameters, spaced evenly in log N; each is one constant-rate parent run to the
largest token count with WSD cooldown branches (research/train/branch.py) at the token counts
`fractions` x tokens_max, so every size has a whole L(D) curve. muP, with the base width's
learning rate, as in experiments/chinchilla.py.

The analysis fits, under both N conventions (non-embedding as Kaplan et al., total as Hoffmann et
al.) and both FLOP counts (6ND with that N; our full count), each law where it holds:
  * L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D on every point (Kaplan eq. 1.5);
  * L(N) = (N_c / N)^alpha_N on the sizes converged in D: each size's longest run, where its loss
    fell over the last step of D at a local exponent -dlnL/dlnD below SLOPE (0.02);
  * L(D) = (D_c / D)^alpha_D on the largest size's data-limited runs: where its loss is no better
    than the next smaller size's by more than that local exponent in N;
    both leave out runs shorter than MIN_WARMUPS (10) warmups, and report what they left out, and
    with replicate seeds their bootstrap resamples the seeds within each design point;
  * alpha_N of L(N) at every D (so a reader sees whether it has converged);
  * the C_min frontier: L(C_min) = (C_c / C_min)^alpha_C on the whole lower envelope of loss
    against compute (where the smallest or largest size is the best there, the envelope is an
    upper bound on the frontier: counted), and N_opt ~ C^a where an interior size is the best.

Presets: smoke (synthetic language, a few minutes; the tests), cpu (../shared/data/text, at most
45 minutes on 2 cores; v2 as pre-registered in results/PREREGISTRATION-scaling-v2.md), gpu (a
real cluster on a TFDS corpus you prepare; --dry-run prints it).
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
resolve = lm_recipe.resolve


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.get_config(preset)
  shape = {k: v for k, v in scaling_family.LADDERS[preset].items() if k != "base_width"}
  c.sweep = ml_collections.ConfigDict(dict(
      n_min=5e3, n_max=1.6e5, sizes=6, **shape, tokens_max=8_192_000,
      fractions=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1), bootstrap=100, seeds=(0,)))
  if preset == "smoke":
    c.sweep.update(n_min=3e3, n_max=2.5e4, sizes=3, tokens_max=102_400,
                   fractions=(1 / 4, 1 / 2, 1), bootstrap=20)
  elif preset == "gpu":
    c.sweep.update(n_min=2e6, n_max=3e8, sizes=7, tokens_max=20_000_000_000)
  else:  # cpu: v2 as pre-registered (results/PREREGISTRATION-scaling-v2.md), every branch at
    # least 10 warmups long, 2 seeds so the bootstrap resamples seeds within design points
    c.sweep.update(n_min=1.8e3, n_max=1.2e5, sizes=8,
                   fractions=(1 / 16, 1 / 8, 1 / 4, 1 / 2, 1), seeds=(0, 1), bootstrap=200)
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  common.require_sizes(s.sizes, 3, "a law in N needs at least 3")
  scaling_family.require_seeds(s.seeds)
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
  return scaling_family.ladder_runs(c, [(shape, steps) for shape in shapes], s.seeds)


# Analysis.

def _power(x, loss, form: str = "power") -> dict:
  from research.scaling.fit import fit_law
  fit = fit_law(form, {"X": np.asarray(x, float)}, np.asarray(loss, float), keep=16, maxiter=500)
  return dict(fit.summary(), converged=fit.converged)


def _kaplan_constants(power: dict) -> dict:
  """L = A X^-alpha as Kaplan writes it: (X_c / X)^alpha, X_c = A^(1/alpha)."""
  p = power["params"]
  log_xc = np.log(p["A"]) / p["alpha"] if p["alpha"] > 0 else np.inf
  return dict(alpha=p["alpha"], X_c=float(np.exp(log_xc)) if log_xc < 700 else None)


SLOPE = 0.02  # converged in D / data-limited: the other variable's local exponent below this
MIN_WARMUPS = 10  # the one-variable laws leave out runs shorter than 10 warmups (transients)


def local_slopes(points, n_column: str):
  """Per point, (s_D, s_N): -d ln L / d ln D from the next shorter run of its size, and
  -d ln L / d ln N from the next smaller size at its D, on the mean loss of each design point
  (its seeds); NaN where there is no such neighbour."""
  mean = points.groupby([n_column, "D"]).val_loss.mean()
  log = np.log(mean.unstack("D"))  # sizes x token counts
  log_n, log_d = np.log(log.index.to_numpy(float)), np.log(log.columns.to_numpy(float))
  s_d = -(log.diff(axis=1) / np.diff(log_d, prepend=np.nan)[None, :])
  s_n = -(log.diff(axis=0) / np.diff(log_n, prepend=np.nan)[:, None])
  def pick(table):
    return np.array([table.loc[n, d] for n, d in zip(points[n_column], points.D)])
  return pick(s_d), pick(s_n)


def _one_variable(frame, x_column: str, n_boot: int, where: dict) -> dict:
  """(X_c / X)^alpha on the frame's points, a 95% bootstrap interval over seeds within design
  points where there are replicates, else over the points (which resamples the design)."""
  from research.scaling.fit import bootstrap_law, fit_law
  if frame[x_column].nunique() < 3:
    return dict(where, skipped=f"{frame[x_column].nunique()} distinct value(s) of "
                f"{x_column} in this regime; the law needs 3", points=int(len(frame)))
  x, loss = frame[x_column].to_numpy(float), frame.val_loss.to_numpy(float)
  fit = fit_law("power", {"X": x}, loss, keep=16, maxiter=500)
  out = dict(where, **_kaplan_constants(dict(params=fit.params)), converged=fit.converged,
             points=int(len(frame)), runs=frame.run.tolist(), X_range=[x.min(), x.max()])
  if n_boot:
    within, resample = _replicates(frame)
    boot = bootstrap_law(fit, {"X": x}, loss, n_boot=n_boot, groups=frame.run.to_numpy(),
                         seed=0, ci=0.95, maxiter=300, within=within)
    out["bootstrap"] = dict(interval=boot["intervals"]["alpha"], n_boot=n_boot,
                            n_failed=boot["n_failed"], failures=boot["failures"],
                            resample=resample)
  return out


def _replicates(frame):
  """(design point per row or None, what the bootstrap resamples), as the Chinchilla fits have
  it: seeds within design points where the frame has replicate seeds, else the runs."""
  from research.scaling import approaches
  runs = ladder_points.runs_under(frame, "N", "full")
  return runs.bootstrap_points(), approaches.resample_kind(runs)


def laws(points, n_column: str, count: str, n_boot: int, min_tokens: float = 0.0) -> dict:
  """Every Kaplan law of the finished points under one N convention and FLOP count, each where
  it holds (`local_slopes`): L(N, D) (eq. 1.5) on every point; L(N) on each size's longest run
  where the loss has stopped falling with D (s_D < SLOPE: converged in D); L(D) on the points
  where it has stopped falling with N (s_N < SLOPE: data-limited) of the largest size; both
  without runs shorter than `min_tokens`; the C_min frontier's L(C_min) on the whole lower
  envelope, N_opt ~ C^a where an interior size is the best."""
  from research.scaling import approaches
  from research.scaling.fit import bootstrap_law, fit_law
  out = {}
  inputs = {"N": points[n_column].to_numpy(float), "D": points.D.to_numpy(float)}
  fit = fit_law("kaplan", inputs, points.val_loss.to_numpy(float), keep=32, maxiter=500)
  joint = dict(fit.summary(), converged=fit.converged)
  if n_boot:
    within, resample = _replicates(points)
    boot = bootstrap_law(fit, inputs, points.val_loss.to_numpy(float), n_boot=n_boot, seed=0,
                         ci=0.95, maxiter=300, groups=points.run.to_numpy(), within=within)
    joint["intervals"] = boot["intervals"]
    joint["bootstrap"] = dict({k: boot[k] for k in ("n_boot", "n_failed", "failures")},
                              resample=resample)
  out["L(N, D)"] = joint
  s_d, s_n = local_slopes(points, n_column)
  frame = points.assign(s_D=s_d, s_N=s_n, long_enough=points.D >= min_tokens)
  longest = frame[frame.D == frame.groupby(n_column).D.transform("max")]  # with its seeds
  converged = longest[(longest.s_D < SLOPE) & longest.long_enough]
  out["L(N), converged in D"] = _one_variable(
      converged.assign(X=converged[n_column]), "X", n_boot,
      dict(rule=f"each size's longest run, where its loss fell with D at a local exponent "
           f"-dlnL/dlnD < {SLOPE} over the last step of D", sizes=int(longest[n_column].nunique()),
           sizes_used=int(converged[n_column].nunique()),
           s_D_of_longest={f"{n:.6g}": None if np.isnan(v) else float(v)
                           for n, v in zip(longest[n_column], longest.s_D)}))
  size = frame[n_column].max()
  chosen = frame[(frame[n_column] == size) & (frame.s_N < SLOPE) & frame.long_enough]
  out["L(D), data-limited"] = _one_variable(
      chosen.assign(X=chosen.D), "X", n_boot,
      dict(rule=f"the largest size's runs where its loss fell with N at a local exponent "
           f"-dlnL/dlnN < {SLOPE} from the next smaller size", N=float(size),
           s_N_of_largest={f"{d:.6g}": None if np.isnan(v) else float(v) for d, v in
                           zip(frame.D[frame[n_column] == size],
                               frame.s_N[frame[n_column] == size])},
      left_out_short=int((~frame.long_enough).sum()), min_tokens=float(min_tokens)))
  out["alpha_N by D"] = {f"{d:.6g}": _kaplan_constants(_power(g[n_column], g.val_loss))["alpha"]
                         for d, g in points.groupby("D") if g[n_column].nunique() >= 3}
  runs = ladder_points.runs_under(points, n_column, count)
  k = runs.conventions["flops_per_param_token"]
  env = approaches.lower_envelope(runs)
  allocation = approaches.approach1(runs)
  out["C_min frontier"] = dict(
      a=allocation["a"], b=allocation["b"], n_law=allocation["n_law"],
      warnings=allocation["warnings"],
      **_kaplan_constants(_power(env["C"], env["L"])), flops_per_param_token=k,
      envelope=dict(C=env["C"].tolist(), L=env["L"].tolist(), N=env["N"].tolist(),
                    interior=env["interior"].tolist()),
      edges=("L(C_min) is fitted on the whole envelope; at the compute values where the smallest "
             f"or largest size is the best ({int((~env['interior']).sum())} of "
             f"{len(env['C'])}) the envelope is an upper bound on the frontier; N_opt ~ C^a uses "
             "only the others"))
  return out


HEADLINE = "N non-embedding, C = 6ND"


def analyze(workdir: str) -> dict:
  """runs.csv; every law under every convention (fit.json, report.md); figures."""
  import time
  from research.scaling import plots
  started = time.perf_counter()
  c = config_lib.preset(get_config, store.read_sweep(workdir))
  s = c.sweep
  min_tokens = MIN_WARMUPS * c.train.warmup_steps * c.train.batch_size * c.train.seq_len
  df, points = ladder_points.points_table(workdir)
  out = common.Outputs(workdir)
  out.runs_csv(df)
  if points.empty or points[points.D == points.D.max()].N.nunique() < 3:
    print(f"analysis: {len(points)} finished point(s); the laws need 3 sizes at the largest D")
    return out.paths
  fits = {name: laws(points, n_column, count, s.bootstrap if name == HEADLINE else 0,
                     min_tokens) for name, (n_column, count) in CONVENTIONS.items()}
  record = dict(study="Kaplan et al. (2020) laws, analysed with research/scaling",
                L="held-out loss, nats/token (final_val_loss)", headline=HEADLINE,
                points=int(len(points)), planned_runs=int(len(df)), fits=fits,
                time=ladder_points.time_split(df))
  out.figure(plots.kaplan_laws(points, CONVENTIONS[HEADLINE][0], fits[HEADLINE]), "kaplan_laws")
  record["time"]["analysis_s"] = time.perf_counter() - started
  return out.fit(record, format_report)


def _num(value, fmt=".3f") -> str:
  return "-" if value is None else format(value, fmt)


def _alpha(law: dict) -> str:
  if "alpha" not in law:
    return "not measured"
  text = f"{law['alpha']:.3f}"
  if "bootstrap" in law:
    lo, hi = law["bootstrap"]["interval"]
    text += f" [{lo:.3f}, {hi:.3f}]"
  return text + f" ({law['points']} points)"


def format_report(record: dict) -> str:
  lines = ["| convention | alpha_N: L(N), converged in D | alpha_D: L(D), data-limited | "
           "L(N, D): alpha_N, alpha_D | alpha_C (whole C_min envelope) | N_opt ~ C^a |",
           "|---|---|---|---|---|---|"]
  for name, f in record["fits"].items():
    joint = f["L(N, D)"]["params"]
    lines.append(f"| {name} | {_alpha(f['L(N), converged in D'])} | "
                 f"{_alpha(f['L(D), data-limited'])} | {joint['alpha_n']:.3f}, "
                 f"{joint['alpha_d']:.3f} | {_num(f['C_min frontier']['alpha'])} | "
                 f"{f['C_min frontier']['a']:.3f} |")
  lines.append("| Kaplan et al. 2020 (Sec. 1.2, eq. 1.5, Table 6; N non-embedding, C = 6ND) | "
               "0.076 | 0.095 | 0.076, 0.103 | 0.050 | 0.73 |")
  head = record["fits"][record["headline"]]
  interval = head["L(N, D)"].get("intervals", {})
  if interval:
    boot = head["L(N, D)"]["bootstrap"]
    lines += ["", f"95% bootstrap intervals of L(N, D) ({record['headline']}; {boot['n_boot']} "
              f"resamples of {boot.get('resample', 'points')}, {boot['n_failed']} failed): "
              + ", ".join(f"{k} [{v[0]:.4g}, {v[1]:.4g}]" for k, v in interval.items())]
  for key in ("L(N), converged in D", "L(D), data-limited"):
    boot = head[key].get("bootstrap")
    if boot:
      lines.append(f"- {key}: alpha's interval from {boot['n_boot']} resamples of "
                   f"{boot['resample']}, {boot['n_failed']} failed")
  lines += ["", "Where each law is taken (" + record["headline"] + "):"]
  for key in ("L(N), converged in D", "L(D), data-limited"):
    law = head[key]
    lines.append(f"- {key}: {law['rule']}; " + (law["skipped"] if "skipped" in law else
                 f"{law['points']} points, X from {law['X_range'][0]:.3g} to "
                 f"{law['X_range'][1]:.3g}"))
  law = head["L(D), data-limited"]
  lines.append(f"- runs shorter than {law['min_tokens']:,.0f} tokens ({MIN_WARMUPS} warmups) left "
               f"out of both: {law['left_out_short']}")
  lines.append("- alpha_N of L(N) at each D: " + ", ".join(
      f"{float(d):.3g}: {a:.3f}" for d, a in head["alpha_N by D"].items()))
  lines.append(f"- C_min frontier: {head['C_min frontier']['edges']}")
  if "time" in record:
    lines += ["", ladder_points.format_time(record["time"], record["time"].get("analysis_s", 0.0))]
  return "\n".join(lines) + "\n"
