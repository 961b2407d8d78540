"""Speculative decoding against draft and target size (Leviathan et al. 2023; Chen et al. 2023).

    python -m launch sweep --config experiments/speculative.py:cpu --workdir runs/speculative
    python -m launch analyze --study experiments/speculative.py --workdir SWEEP  # another ladder

The plan trains a ladder of language models of one vocabulary on one data set (`sweep.shapes`,
(d_model, n_layers) pairs at head size `sweep.head_size`, each for `train.tokens`); the analysis
also reads any other sweep folder whose finished runs share a vocabulary and data source (a
Kaplan or emergence ladder). Every pair of sizes is a (draft, target) pair, draft smaller.

Per pair the analysis measures (research/evals/draft_target.py, research/evals/speculative.py):
  * alpha = 1 - E[TV(p, q)] over teacher-forced held-out positions at temperature 1, and the
    greedy agreement rate (alpha at temperature 0), with 95% bootstrap intervals over documents;
    the draft-target loss gap on the same positions;
  * the cost ratio c of one draft step to one target step, measured on this machine (plain
    KV-cached decoding at batch 1, all models taking turns over `timing_rounds` rounds; medians),
    and the forward-FLOP ratio beside it;
  * the best gamma and walltime improvement predicted from alpha and c, and at that gamma the
    real sampler's mean tokens per target call and walltime against plain KV-cached target
    decoding of the same prompts in the same process (alternating rounds; median of the ratios),
    sampled (temperature 1) and greedy;
  * speedup against gamma (`sweep.gammas`) for the largest target and its `gamma_drafts`
    smallest drafts, sampled.
Fits: alpha = a + b (L_draft - L_target) across pairs (bootstrap over documents refits it), and
the best draft (largest predicted speedup) per target. Files: runs.csv, pairs.csv, gammas.csv,
fit.json, report.md and the figures alpha_heatmap, alpha_vs_gap, speedup_measured,
speedup_vs_gamma (.png / .pdf).

Presets: smoke (two tiny models on the synthetic language, about a minute; the tests), cpu
(five sizes from 12k to 3.1M non-embedding parameters on ../shared/data/text; under 45 minutes on
2 cores as pre-registered in results/PREREGISTRATION-speculative.md).
"""

import os

import ml_collections
import numpy as np

from experiments import common, lm, scaling_family
from research import config as config_lib
from research import store
from research.errors import UserError, require
from research.recipes import lm as lm_recipe

PRESETS = ("smoke", "cpu")
recipe = lm_recipe.recipe
size = lm_recipe.size
model_config = lm_recipe.model_config


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = scaling_family.family(lm.get_config("smoke"))
  c.train.update(lr=3e-3, warmup_steps=50, tokens=2_048_000)
  c.sweep = ml_collections.ConfigDict(dict(
      shapes=((32, 1), (64, 2), (128, 3), (192, 4), (256, 4)), head_size=16, ff_ratio=4,
      windows=256, bootstrap=1000, prompts=16, prompt_tokens=32, new_tokens=64, timing_rounds=5,
      gammas=(1, 2, 3, 4, 6, 8), gamma_drafts=3, max_gamma=16))
  if preset == "smoke":
    c.model.context = 64
    c.train.update(batch_size=8, seq_len=64, warmup_steps=10, tokens=25_600)
    c.data.val_batches = 2
    c.sweep.update(shapes=((16, 1), (32, 2)), windows=8, bootstrap=50, prompts=2,
                   prompt_tokens=8, new_tokens=12, timing_rounds=2, gammas=(1, 2),
                   gamma_drafts=1, max_gamma=4)
  else:
    c.data.source = "text:../shared/data/text"
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  if s is None:
    return
  require(len(s.shapes) >= 2 and all(len(x) == 2 and x[0] % s.head_size == 0 and x[1] >= 1
                                     for x in s.shapes),
          "sweep.shapes", s.shapes, f"must be two or more (d_model, n_layers) pairs, d_model a "
          f"multiple of sweep.head_size = {s.head_size}")
  for field in ("windows", "bootstrap", "prompts", "prompt_tokens", "new_tokens",
                "timing_rounds", "gamma_drafts", "max_gamma"):
    require(isinstance(s[field], int) and s[field] >= 1, f"sweep.{field}", s[field],
            "must be a positive integer")
  require(len(s.gammas) >= 1 and all(isinstance(g, int) and 1 <= g <= s.max_gamma
                                     for g in s.gammas),
          "sweep.gammas", s.gammas, f"must be integers in [1, sweep.max_gamma = {s.max_gamma}]")
  room = c.model.context + 1 - s.new_tokens - s.max_gamma
  require(room >= s.prompt_tokens, "sweep.prompt_tokens", s.prompt_tokens,
          f"prompt + new tokens + gamma - 1 must fit the context ({c.model.context}): at most "
          f"{room} prompt tokens with new_tokens {s.new_tokens} and max_gamma {s.max_gamma}")


def plan(c) -> list[ml_collections.ConfigDict]:
  """One run per shape, smallest first."""
  s = c.sweep

  def change(d_model: int, n_layers: int):
    def apply(run):
      run.model.update(d_model=d_model, n_layers=n_layers, n_heads=d_model // s.head_size,
                       d_ff=s.ff_ratio * d_model)
    return apply

  return common.expand(c, [change(d, n) for d, n in s.shapes])


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------

DEFAULTS = get_config("cpu").sweep  # for a sweep folder of another study


def _models(workdir: str, table):
  """The finished runs, loaded, smallest first; one vocabulary and data source."""
  from research.evals import runs as eval_runs
  done = table[table.status == "finished"].sort_values("N_nonemb")
  if len(done) < 2:
    raise UserError(f"{workdir}: {len(done)} finished run(s); speculative decoding needs a draft "
                    "and a target")
  models = [eval_runs.load_run(store.run_dir(workdir, run)) for run in done.run]
  sources = {(m.model.vocab_size, m.config.data.source) for m in models}
  if len(sources) > 1:
    raise UserError(f"{workdir}: the runs differ in vocabulary or data source ({sorted(sources)});"
                    " pairs need one of each")
  return done, models


def _settings(workdir: str) -> ml_collections.ConfigDict:
  """The sweep group of this study's sweep (its preset and overrides); the cpu preset's for a
  sweep folder of another study."""
  record = store.read_sweep(workdir)
  if os.path.basename(record.get("study") or "") == os.path.basename(__file__):
    return config_lib.preset(get_config, record).sweep
  return DEFAULTS


def analyze(workdir: str) -> dict:
  import jax
  from research.evals import draft_target as dt
  from research.evals import speculative as spec
  from research.models import transformer
  from tqdm import tqdm
  table = store.table(workdir)
  out = common.Outputs(workdir)
  out.runs_csv(table)
  s = _settings(workdir)
  done, models = _models(workdir, table)
  length = min(m.context for m in models)
  data = lm_recipe.load_data(models[-1].config)
  rows, groups = dt.held_out(data, s.windows, length)
  logp = [dt.log_probs(m.model, m.params, rows) for m in tqdm(models, desc="held-out logits")]
  nll = [dt.nll(lp, rows) for lp in logp]
  G = np.unique(groups).size
  weights = dt.resample_weights(groups, s.bootstrap, seed=0)
  loss = [dt.ratio_estimate(x, weights) for x in nll]
  names = [f"d{m.model.d_model}x{m.model.n_layers}" for m in models]
  n_nonemb = done.N_nonemb.to_numpy(float)
  # Cost of one step of each model (plain decoding, batch 1), all models taking turns.
  keep = s.prompt_tokens
  prompts = [r[:keep] for r in rows[:s.prompts]]
  if len(prompts) < s.prompts:
    raise UserError(f"{workdir}: the held-out text gives {len(prompts)} windows, fewer than "
                    f"sweep.prompts = {s.prompts}")

  def plain(model, temperature):
    pair = (model.model, model.params)
    return lambda: [spec.sample(pair, [p], s.new_tokens, temperature=temperature, seed=i,
                                gamma=s.max_gamma) for i, p in enumerate(prompts)]

  times = dt.alternate({n: plain(m, 1.0) for n, m in zip(names, models)}, s.timing_rounds)
  step_s = {n: float(np.median(t)) / (s.prompts * s.new_tokens) for n, t in times.items()}
  flops = [transformer.forward_flops_per_token(m.model, length) for m in models]

  pairs, draws, betas, verify = [], {}, {}, {}
  for j in range(1, len(models)):
    for i in range(j):
      row = dict(draft=names[i], target=names[j], draft_N=n_nonemb[i], target_N=n_nonemb[j],
                 c=step_s[names[i]] / step_s[names[j]], flop_ratio=flops[i] / flops[j])
      gap = dt.ratio_estimate(nll[i] - nll[j], weights)
      row.update(gap[0].row("loss_gap"))
      draws[(i, j, "gap")] = gap[1]
      for mode, temperature in (("sampled", 1.0), ("greedy", 0.0)):
        b = dt.beta(logp[j], logp[i], temperature)
        estimate, draws[(i, j, mode)] = dt.ratio_estimate(b, weights)
        row.update(estimate.row(f"alpha_{mode}"))
        gamma, predicted = spec.best_gamma(estimate.value, row["c"], s.max_gamma)
        row.update({f"gamma_{mode}": gamma, f"predicted_speedup_{mode}": predicted,
                    f"predicted_tokens_per_call_{mode}":
                    float(spec.expected_tokens(estimate.value, gamma)),
                    f"sequential_tokens_per_call_{mode}": dt.sequential_tokens(b, gamma)})
        betas[(i, j, mode)] = b
      pairs.append(row)

  def measure(i, j, gamma, temperature):
    """Mean tokens per call, on-policy alpha and the walltime speedup (median over rounds of
    plain / speculative) of draft i for target j over the prompts, one prompt at a time."""
    draft, target = (models[i].model, models[i].params), (models[j].model, models[j].params)
    found = {}

    def speculate():
      total = None
      for k, p in enumerate(prompts):
        _, stats = spec.speculate(draft, target, [p], s.new_tokens, gamma=gamma,
                                  temperature=temperature, seed=k)
        total = stats if total is None else total + stats
      found["stats"] = total

    baseline = plain(models[j], temperature)
    t = dt.alternate({"plain": baseline, "speculative": speculate}, s.timing_rounds)
    ratios = np.array(t["plain"]) / np.array(t["speculative"])
    stats = found["stats"]
    c = step_s[names[i]] / step_s[names[j]]
    if (j, gamma + 1) not in verify:
      verify[(j, gamma + 1)] = dt.verify_cost(models[j].model, models[j].params, gamma + 1,
                                              s.timing_rounds)
    v = verify[(j, gamma + 1)]
    round_s = float(np.median(t["speculative"])) / stats.calls
    return dict(tokens_per_call=stats.tokens_per_call, alpha_on_policy=stats.alpha_on_policy,
                speedup=float(np.median(ratios)), speedup_low=float(ratios.min()),
                speedup_high=float(ratios.max()),
                round_cost=round_s / (step_s[names[j]] * (gamma * c + 1)),
                verify_cost=v)

  def with_verify(alpha, gamma, c, v):
    """The walltime model with the measured cost v of the target's gamma + 1-position
    forward in target steps (Leviathan et al.'s takes v = 1)."""
    return float(spec.expected_tokens(alpha, gamma) / (gamma * c + v))

  for row in tqdm(pairs, desc="speculative decoding, per pair"):
    i, j = names.index(row["draft"]), names.index(row["target"])
    for mode, temperature in (("sampled", 1.0), ("greedy", 0.0)):
      found = measure(i, j, row[f"gamma_{mode}"], temperature)
      row.update({f"{k}_{mode}": v for k, v in found.items()})
      row[f"predicted_speedup_verify_{mode}"] = with_verify(
          row[f"alpha_{mode}"], row[f"gamma_{mode}"], row["c"], found["verify_cost"])
      row[f"predicted_speedup_onpolicy_{mode}"] = float(spec.predicted_speedup(
          found["alpha_on_policy"], row[f"gamma_{mode}"], row["c"]))
      row[f"predicted_tokens_per_call_onpolicy_{mode}"] = float(spec.expected_tokens(
          found["alpha_on_policy"], row[f"gamma_{mode}"]))
  gamma_rows = []
  j = len(models) - 1
  for i in tqdm(range(min(s.gamma_drafts, j)), desc="speedup against gamma"):
    row = next(r for r in pairs if r["draft"] == names[i] and r["target"] == names[j])
    for gamma in s.gammas:
      found = measure(i, j, gamma, 1.0)
      gamma_rows.append(dict(draft=names[i], target=names[j], gamma=gamma, c=row["c"],
                             alpha=row["alpha_sampled"],
                             predicted_tokens_per_call=float(spec.expected_tokens(
                                 row["alpha_sampled"], gamma)),
                             sequential_tokens_per_call=dt.sequential_tokens(
                                 betas[(i, j, "sampled")], gamma),
                             predicted_speedup=float(spec.predicted_speedup(
                                 row["alpha_sampled"], gamma, row["c"])),
                             predicted_speedup_verify=with_verify(
                                 row["alpha_sampled"], gamma, row["c"], found["verify_cost"]),
                             **found))
  import pandas as pd
  pairs_df, gammas_df = pd.DataFrame(pairs), pd.DataFrame(gamma_rows)
  out.csv("pairs.csv", pairs_df)
  out.csv("gammas.csv", gammas_df)
  record = dict(
      models=[dict(name=n, N_nonemb=float(x), val_loss=e[0].value, val_loss_low=e[0].low,
                   val_loss_high=e[0].high, step_ms=1e3 * step_s[n], forward_flops=f)
              for n, x, e, f in zip(names, n_nonemb, loss, flops)],
      held_out=dict(windows=int(len(rows)), documents=int(G), positions_per_window=length,
                    source=models[-1].config.data.source, bootstrap=int(s.bootstrap)),
      settings=s.to_dict(), device=jax.devices()[0].device_kind,
      alpha_fit={mode: _gap_fit(pairs_df, draws, names, mode) for mode in ("sampled", "greedy")},
      best_draft=_best_drafts(pairs_df),
      acceptance=_acceptance(pairs_df), pairs=pairs_df.to_dict("records"))
  from research.evals import speculative_plots as figures
  for stem, fig in figures.all_figures(pairs_df, gammas_df, record).items():
    out.figure(fig, stem)
  return out.fit(record, render=_report)


MIN_FIT_PAIRS = 3


def _gap_fit(pairs, draws, names, mode: str) -> dict:
  """alpha = a + b gap by least squares over pairs; the bootstrap refits each resample."""
  gap, alpha = pairs.loss_gap.to_numpy(float), pairs[f"alpha_{mode}"].to_numpy(float)
  if len(pairs) < MIN_FIT_PAIRS:
    return dict(skipped=f"{len(pairs)} pair(s); the affine fit needs {MIN_FIT_PAIRS}",
                pairs=int(len(pairs)))
  slope, intercept = np.polyfit(gap, alpha, 1)
  index = [(names.index(d), names.index(t)) for d, t in zip(pairs.draft, pairs.target)]
  G = np.stack([draws[(i, j, "gap")] for i, j in index], axis=1)
  A = np.stack([draws[(i, j, mode)] for i, j in index], axis=1)
  fits = np.array([np.polyfit(g, a, 1) for g, a in zip(G, A)])
  residual = alpha - (intercept + slope * gap)
  r2 = 1 - np.sum(residual ** 2) / max(np.sum((alpha - alpha.mean()) ** 2), 1e-300)
  return dict(slope=float(slope), intercept=float(intercept), r2=float(r2),
              slope_interval=np.percentile(fits[:, 0], [2.5, 97.5]).tolist(),
              intercept_interval=np.percentile(fits[:, 1], [2.5, 97.5]).tolist(),
              pairs=int(len(pairs)), max_abs_residual=float(np.max(np.abs(residual))))


def _best_drafts(pairs) -> list[dict]:
  """Per target with two or more drafts: the draft of the largest predicted and of the largest
  measured speedup (sampled)."""
  out = []
  for target, group in pairs.groupby("target", sort=False):
    if len(group) < 2:
      continue
    predicted = group.loc[group.predicted_speedup_sampled.idxmax()]
    measured = group.loc[group.speedup_sampled.idxmax()]
    out.append(dict(target=target, target_N=float(group.target_N.iloc[0]),
                    predicted_best=predicted.draft, predicted_best_N=float(predicted.draft_N),
                    predicted_speedup=float(predicted.predicted_speedup_sampled),
                    measured_best=measured.draft, measured_best_N=float(measured.draft_N),
                    measured_speedup=float(measured.speedup_sampled)))
  return out


TOKENS_TOLERANCE, SPEEDUP_TOLERANCE = 0.05, 0.15  # the acceptance bounds


def _acceptance(pairs) -> dict:
  """Per mode, how many pairs meet the bounds: measured tokens per call within 5% of the
  prediction from the held-out alpha (and from the on-policy alpha), measured speedup within 15%
  of the predicted one."""
  out = {}
  for mode in ("sampled", "greedy"):
    tokens = pairs[f"tokens_per_call_{mode}"] / pairs[f"predicted_tokens_per_call_{mode}"] - 1
    onpolicy = (pairs[f"tokens_per_call_{mode}"]
                / pairs[f"predicted_tokens_per_call_onpolicy_{mode}"] - 1)
    sequential = (pairs[f"tokens_per_call_{mode}"]
                  / pairs[f"sequential_tokens_per_call_{mode}"] - 1)
    speed = pairs[f"speedup_{mode}"] / pairs[f"predicted_speedup_{mode}"] - 1
    speed_verify = pairs[f"speedup_{mode}"] / pairs[f"predicted_speedup_verify_{mode}"] - 1
    out[mode] = dict(pairs=int(len(pairs)),
                     tokens_within=int(np.sum(np.abs(tokens) <= TOKENS_TOLERANCE)),
                     tokens_within_onpolicy=int(np.sum(np.abs(onpolicy) <= TOKENS_TOLERANCE)),
                     tokens_within_sequential=int(np.sum(np.abs(sequential)
                                                         <= TOKENS_TOLERANCE)),
                     speedup_within=int(np.sum(np.abs(speed) <= SPEEDUP_TOLERANCE)),
                     tokens_error_median=float(np.median(tokens)),
                     tokens_error_onpolicy_median=float(np.median(onpolicy)),
                     tokens_error_sequential_median=float(np.median(sequential)),
                     speedup_error_median=float(np.median(speed)),
                     speedup_within_verify=int(np.sum(np.abs(speed_verify)
                                                      <= SPEEDUP_TOLERANCE)),
                     speedup_error_verify_median=float(np.median(speed_verify)))
  return out


def _report(record: dict) -> str:
  lines = ["# Speculative decoding on the ladder", "",
           f"Held out: {record['held_out']['windows']} windows of "
           f"{record['held_out']['positions_per_window']} positions from "
           f"{record['held_out']['documents']} documents of {record['held_out']['source']}; "
           f"intervals 95% over {record['held_out']['bootstrap']} document resamples. "
           f"Timings on {record['device']}.", "",
           "| model | N non-emb | val loss (nats/token) | step (ms) |", "|---|---|---|---|"]
  for m in record["models"]:
    lines.append(f"| {m['name']} | {m['N_nonemb']:,.0f} | {m['val_loss']:.4f} "
                 f"[{m['val_loss_low']:.4f}, {m['val_loss_high']:.4f}] | {m['step_ms']:.3f} |")
  lines += ["", "| draft -> target | alpha (T=1) | greedy | c | FLOP ratio | gamma | tokens/call "
            "measured / iid / sequential | speedup measured / predicted / with v | v | "
            "round cost |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for p in record["pairs"]:
    lines.append(
        f"| {p['draft']} -> {p['target']} | {p['alpha_sampled']:.3f} "
        f"[{p['alpha_sampled_low']:.3f}, {p['alpha_sampled_high']:.3f}] | "
        f"{p['alpha_greedy']:.3f} | {p['c']:.3f} | {p['flop_ratio']:.3f} | "
        f"{p['gamma_sampled']} | {p['tokens_per_call_sampled']:.3f} / "
        f"{p['predicted_tokens_per_call_sampled']:.3f} / "
        f"{p['sequential_tokens_per_call_sampled']:.3f} | {p['speedup_sampled']:.2f}x / "
        f"{p['predicted_speedup_sampled']:.2f}x / {p['predicted_speedup_verify_sampled']:.2f}x | "
        f"{p['verify_cost_sampled']:.2f} | {p['round_cost_sampled']:.2f} |")
  lines += ["", "(sampled, temperature 1; greedy rows in pairs.csv)", "",
            "Acceptance (the issue's bounds: tokens per call within 5% of the prediction from "
            "the held-out alpha, speedup within 15%):", ""]
  for mode, a in record["acceptance"].items():
    lines.append(f"- {mode}: tokens per call within 5% on {a['tokens_within']}/{a['pairs']} "
                 f"pairs, median error {100 * a['tokens_error_median']:+.1f}% (from the "
                 f"on-policy alpha: {a['tokens_within_onpolicy']}/{a['pairs']}, "
                 f"{100 * a['tokens_error_onpolicy_median']:+.1f}%; from the held-out rates in "
                 f"sequence: {a['tokens_within_sequential']}/{a['pairs']}, "
                 f"{100 * a['tokens_error_sequential_median']:+.1f}%); speedup within 15% on "
                 f"{a['speedup_within']}/{a['pairs']}, median error "
                 f"{100 * a['speedup_error_median']:+.1f}% (with the measured cost of the "
                 f"target's verifying forward, not in the pre-registered test: "
                 f"{a['speedup_within_verify']}/{a['pairs']}, "
                 f"{100 * a['speedup_error_verify_median']:+.1f}%)")
  lines += ["", "alpha against the loss gap (alpha = a + b gap):", ""]
  for mode, f in record["alpha_fit"].items():
    if "skipped" in f:
      lines.append(f"- {mode}: not fitted ({f['skipped']})")
      continue
    lines.append(f"- {mode}: a = {f['intercept']:.3f} [{f['intercept_interval'][0]:.3f}, "
                 f"{f['intercept_interval'][1]:.3f}], b = {f['slope']:.3f} "
                 f"[{f['slope_interval'][0]:.3f}, {f['slope_interval'][1]:.3f}] per nat, "
                 f"R^2 {f['r2']:.3f} over {f['pairs']} pairs, largest residual "
                 f"{f['max_abs_residual']:.3f}")
  lines += ["", "Best draft per target (sampled):", ""]
  if not record["best_draft"]:
    lines.append("- none: no target has two drafts")
  for b in record["best_draft"]:
    lines.append(f"- {b['target']}: predicted {b['predicted_best']} "
                 f"({b['predicted_speedup']:.2f}x), measured {b['measured_best']} "
                 f"({b['measured_speedup']:.2f}x)")
  return "\n".join(lines) + "\n"
