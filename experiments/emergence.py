"""Emergent abilities (Wei et al. 2022) and the metric question (Schaeffer et al. 2023) on a
ladder of our own language models.

    python -m launch sweep --config experiments/emergence.py:cpu --workdir runs/emergence

Every model of the ladder (research/models/ladder.py) is trained on the same mixture of text and
generated task lines (research/data/task_families.py: k-digit addition in plain and reversed digit
order and in BIG-bench's question form, 2-digit multiplication, word unscrambling, a multiple-choice
addition task, multitask sparse parity), with several seeds per size, and every task's held-out
problems are scored at several checkpoints of every run (research/evals/scorer.py): exact match,
per-token accuracy, log P(target), token edit distance and Brier score; multiple-choice grade and
calibration for the multiple-choice task; BIG-bench's own addition files beside the generated
ones. The analysis (`analyze`) writes metrics.csv (one row per run, checkpoint, task and metric),
forecast.csv (the N where exact match crosses 50%, observed and forecast from smaller models),
the Wei-style and Schaeffer-style figures, calibration figures and report.md.

Presets:
  smoke  two tiny sizes on the generated language and a few tasks, about 2 minutes on 2 CPU
         cores: the tests' path through train, evaluate and analyse.
  pilot  v2's pilot P1, which sized the ladder (results/emergence/pilot/README.md).
  cpu    the study: results/emergence/cpu/, at most 45 minutes on 2 CPU cores.
"""

import dataclasses
import math
import os

import ml_collections
import numpy as np

from experiments import common, lm
from research import store
from research.data import bigbench, task_families, task_mixture, text
from research.errors import UserError, require
from research.evals import scorer
from research.models import ladder
from research.recipes import lm as lm_recipe
from research.scaling import emergence as ability
from research.train.recipe import Recipe

PRESETS = ("smoke", "pilot", "cpu")

# (family, weight in the task part of the mixture). v1 (results/emergence/pilot/README-v1.md, and
# the v1 study in git history) gave 3-digit addition the largest share; v2 keeps v1's weights for
# plain addition, its multiple-choice and question forms, and drops the families no v1 model
# learned at any size (reversed order, 2-digit multiplication, unscrambling, sparse parity: 34%
# of v1's task lines), raising add4 from 1.5 to 3 so that it may cross at the top of the ladder
# (PREREGISTRATION-emergence-v2.md).
CPU_FAMILIES = (
    ("add1", 1), ("add2", 3), ("add3", 6), ("add4", 3), ("add5", 1.5), ("add3_mc", 1),
    ("add2_qa", 0.25), ("add3_qa", 0.25), ("add4_qa", 0.25), ("add5_qa", 0.25))


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = lm.get_config("smoke")
  c.model.update(context=64, tied_embeddings=True, positions="rotary")
  c.train.update(batch_size=32, seq_len=64, tokens=3_072_000, lr=3e-3, schedule="cosine",
                 warmup_steps=50, final_lr_fraction=0.1)
  c.data.update(source="text:../shared/data/text", val_batches=4)
  # every task is scored at 4 points of training: eval_every = steps / 4 (1500 steps of 32 x 64)
  c.loop.update(log_every=20, eval_every=375, checkpoint_every=375)
  names, weights = zip(*CPU_FAMILIES)
  c.tasks = ml_collections.ConfigDict(dict(
      families=names, weights=weights, text_fraction=0.1,
      split_seed=0, heldout_fraction=0.1, family_heldout=("add1=0.3",), eval_examples=100,
      bigbench="../shared/data/bigbench/arithmetic", bigbench_examples=100,
      lexicon="../shared/data/text/gutenberg", lexicon_size=1000,
      parity_tasks=8, parity_bits=8, parity_k=2, parity_alpha=0.4, edit_distance=True))
  # The ladder: pilot P1's rule (PREREGISTRATION-emergence-v2.md; results/emergence/pilot/):
  # add3 crossed 50% at N3 = 628,622 in P1, so n_max = 2 N3 and n_min = n_max / 40, 8 sizes;
  # that plan's estimate (45.5 min) broke the 40-minute budget with only 4 fit sizes, so both
  # ends came down 1.2x (39.9 min): 27,792 to 996,624 non-embedding parameters.
  c.sweep = ml_collections.ConfigDict(dict(
      n_min=26_193.0, n_max=1_047_704.0, sizes=8, seeds=(0, 1, 2), positions=("rotary",),
      learned_seeds=(), learned_n_max=5e5, head_size=16, aspect=32.0, ff_ratio=4,
      # held-out-model validation (research/scaling/ability_forecast.py): the top
      # `heldout_rungs` sizes are forecast from runs of at most `fit_fraction` of their compute
      heldout_rungs=2, fit_fraction=0.25, forecast_level=0.5, forecast_boot=200,
      forecast_tolerance=0.10, crossing_tolerance=0.3))
  # The pilots (results/emergence/pilot/): 1 thread per run, the 1M model trains its 3.07M
  # tokens in about 600 s with its evaluations; learned positions up to 0.5M parameters keep the
  # plan at about 4,400 worker-seconds: under 40 minutes on 2 workers, largest runs first.
  if preset == "smoke":
    c.data.source = "synthetic:"
    c.train.update(batch_size=16, tokens=16 * 64 * 60, warmup_steps=5)
    c.loop.update(eval_every=30, checkpoint_every=30)
    c.tasks.update(families=("add1", "add2", "add2_reversed", "add3_mc", "parity"),
                   weights=(1, 1, 1, 1, 1), eval_examples=16, bigbench="",
                   bigbench_examples=16, lexicon="", parity_tasks=4, parity_bits=6)
    c.sweep.update(n_min=3e3, n_max=1.2e4, sizes=2, seeds=(0,), positions=("rotary",),
                   learned_seeds=(), heldout_rungs=1, fit_fraction=1.0, forecast_boot=20)
  elif preset == "pilot":  # v2's pilot P1 (PREREGISTRATION-emergence-v2.md)
    c.sweep.update(n_min=1.5e5, n_max=1e6, sizes=3, seeds=(0,), heldout_rungs=1)
  elif preset != "cpu":
    raise UserError(f"preset {preset!r}: allowed: {', '.join(PRESETS)}")
  return c


def validate(c) -> None:
  s = common.checked_sweep(c, lm_recipe.validate)
  t = c.tasks
  require(len(t.families) >= 1 and len(t.families) == len(t.weights), "tasks.weights", t.weights,
          f"one positive weight per family of tasks.families ({len(t.families)})")
  require(all(w > 0 for w in t.weights), "tasks.weights", t.weights, "must all be positive")
  unknown = [f for f in t.families if f not in task_families.FAMILIES]
  require(not unknown, "tasks.families", t.families,
          f"unknown {unknown}; allowed: {', '.join(task_families.FAMILIES)}")
  require(0 <= t.text_fraction < 1, "tasks.text_fraction", t.text_fraction, "must be in [0, 1)")
  require(0 < t.heldout_fraction < 1, "tasks.heldout_fraction", t.heldout_fraction,
          "must be in (0, 1)")
  heldout_fractions(t)  # its errors now
  for field in ("eval_examples", "bigbench_examples", "lexicon_size"):
    require(isinstance(t[field], int) and t[field] >= 1, f"tasks.{field}", t[field],
            "must be a positive integer")
  if "unscramble" in t.families:
    require(bool(t.lexicon), "tasks.lexicon", t.lexicon,
            "the unscramble family needs a folder or file of text to take its words from")
  if s is None:
    return
  require(0 < s.n_min <= s.n_max, "sweep.n_min", s.n_min, "must be in (0, sweep.n_max]")
  common.require_sizes(s.sizes, 1, "the number of ladder sizes")
  require(len(s.seeds) >= 1, "sweep.seeds", s.seeds, "needs at least one seed")
  require(set(s.positions) <= {"rotary", "learned"} and len(s.positions) >= 1, "sweep.positions",
          s.positions, "allowed: rotary, learned (one or both)")
  require(isinstance(s.heldout_rungs, int) and 1 <= s.heldout_rungs < s.sizes,
          "sweep.heldout_rungs", s.heldout_rungs,
          f"must be an integer in [1, sweep.sizes) = [1, {s.sizes}): sizes to fit on must remain")
  require(0 < s.fit_fraction <= 1, "sweep.fit_fraction", s.fit_fraction, "must be in (0, 1]")
  require(0 < s.forecast_level < 1, "sweep.forecast_level", s.forecast_level,
          "must be in (0, 1)")
  require(isinstance(s.forecast_boot, int) and s.forecast_boot >= 1, "sweep.forecast_boot",
          s.forecast_boot, "must be a positive integer")
  for field in ("forecast_tolerance", "crossing_tolerance"):
    require(s[field] > 0, f"sweep.{field}", s[field], "must be positive")
  rungs(c)  # the ladder's errors now


def rungs(c) -> list[ladder.Rung]:
  s = c.sweep
  return ladder.ladder(s.n_min, s.n_max, s.sizes, aspect=s.aspect, head_size=s.head_size,
                       ff_ratio=s.ff_ratio, tolerance=0.35)


def plan(c) -> list[ml_collections.ConfigDict]:
  """Every ladder size x seed with rotary positions (sweep.seeds), and the sizes up to
  sweep.learned_n_max x sweep.learned_seeds with learned positions; largest sizes first, so that
  the longest runs do not finish last."""
  s = c.sweep

  def change(positions: str, seed: int, rung: ladder.Rung):
    def apply(run):
      run.model.update(positions=positions, **rung.model_fields())
      run.seed = seed
    return apply

  changes = []
  for positions in s.positions:
    seeds = s.seeds if positions == "rotary" else s.learned_seeds
    sizes = [r for r in rungs(c) if positions == "rotary" or r.n_nonemb <= s.learned_n_max]
    changes += [change(positions, seed, r) for seed in seeds for r in reversed(sizes)]
  runs = common.expand(c, changes)
  return sorted(runs, key=lambda r: -r.model.d_model * r.model.n_layers)  # stable: seeds in order


size = lm_recipe.size


# One run.

def heldout_fractions(t) -> dict[str, float]:
  """{family: held-out fraction} from tasks.family_heldout ("NAME=FRACTION" entries): families
  with few problems (add1 has 100) hold out more than tasks.heldout_fraction, so that their test
  set is not a handful of problems."""
  out = {}
  for item in t.family_heldout:
    name, sep, value = str(item).partition("=")
    try:
      fraction = float(value)
    except ValueError:
      fraction = None
    require(sep == "=" and name in t.families and fraction is not None and 0 < fraction < 1,
            "tasks.family_heldout", t.family_heldout,
            "entries NAME=FRACTION with NAME one of tasks.families and FRACTION in (0, 1)")
    out[name] = fraction
  return out


def families(c) -> list[task_families.Family]:
  """The task families of c.tasks, with the study's hold-out; BIG-bench's own addition problems
  (tasks.bigbench) are excluded from the question-form training as well, so that no example of
  its files is ever a training line."""
  t = c.tasks
  out = []
  for name in t.families:
    params = {}
    if name == "unscramble":
      params["words"] = task_families.lexicon(t.lexicon, size=t.lexicon_size)
    elif name == "parity":
      params.update(n_tasks=t.parity_tasks, n_bits=t.parity_bits, k=t.parity_k,
                    alpha=t.parity_alpha)
    exclude = set()
    if name.endswith("_qa") and t.bigbench:
      exclude = bigbench.bigbench_keys(bigbench_task(c, int(name[3])))
    fraction = heldout_fractions(t).get(name, t.heldout_fraction)
    out.append(task_families.family(name, holdout_seed=t.split_seed,
                                    holdout_fraction=fraction, exclude=exclude, **params))
  return out


def bigbench_task(c, digits: int) -> bigbench.Task:
  """BIG-bench's k-digit addition file (the first tasks.bigbench_examples examples)."""
  task = bigbench.load(os.path.join(c.tasks.bigbench, f"{digits}_digit_addition", "task.json"))
  return dataclasses.replace(task, name=f"bb_add{digits}",
                             examples=tuple(task.examples[:c.tasks.bigbench_examples]))


def eval_tasks(c, fams: list[task_families.Family]) -> list[bigbench.Task]:
  """Held-out examples of every family, then BIG-bench's addition files for the digit counts whose
  question form is trained."""
  tasks = [task_families.eval_task(f, c.tasks.eval_examples) for f in fams]
  if c.tasks.bigbench:
    for name in c.tasks.families:
      if name.endswith("_qa"):
        tasks.append(bigbench_task(c, int(name[3])))
  return tasks


def load_data(c, fams) -> text.TextData:
  """The training mixture: the config's text (research.recipes.lm.load_data) and task lines."""
  base = lm_recipe.load_data(c)
  mixture = task_mixture.TaskMixture(families=tuple(fams), weights=tuple(c.tasks.weights),
                                     text=base.source, text_fraction=c.tasks.text_fraction)
  info = dict(text=base.describe(), text_fraction=c.tasks.text_fraction,
              families=list(c.tasks.families), weights=list(c.tasks.weights))
  return text.TextData(spec=f"tasks+{base.spec}", vocab_size=base.vocab_size,
                       bytes_per_token=1.0, unique_train_tokens=None, entropy_rate_nats=None,
                       seed=c.seed, source=mixture, info=info, split_seed=base.split_seed)


REPORT = dataclasses.replace(
    lm_recipe.REPORT,
    metrics=(("final_val_loss", "text val loss", "nats/token"),
             ("final_add3/exact_match", "add3 exact match", ""),
             ("final_add3/token_accuracy", "add3 per-token accuracy", "")),
    curves=("val_loss", "add3/exact_match"), levels=())


def recipe(c) -> Recipe:
  """A language-model run (research.recipes.lm) on the task mixture, with the tasks' scorer
  beside its held-out loss."""
  fams = families(c)
  base = lm_recipe.recipe(c, load_data(c, fams))
  tasks = eval_tasks(c, fams)
  tokenizer = text.ByteTokenizer()
  for task in tasks:
    bigbench.check_encodable(task, tokenizer)
  scores = scorer.evaluator(lm_recipe.model_config(c), tasks, tokenizer,
                            edit_distance=c.tasks.edit_distance)
  facts = dict(base.facts, tasks=[t.name for t in tasks],
               eval_examples={t.name: len(t.examples) for t in tasks})
  return dataclasses.replace(base, evaluators=[*base.evaluators, scores], facts=facts,
                             report=REPORT)


# Analysis.

FORECAST_TOLERANCE = 0.3  # decades of N (the acceptance)


def analyze(workdir: str) -> dict:
  """metrics.csv, calibration.csv, forecast.csv, fit.json, report.md and the figures."""
  import time

  import pandas as pd
  started = time.perf_counter()
  runs = store.table(workdir)
  out = common.Outputs(workdir)
  out.runs_csv(runs)
  df, cal = ability.metrics_table(workdir)
  out.csv("metrics.csv", df)
  if len(cal):
    out.csv("calibration.csv", cal)
  record = dict(finished=int((runs.status == "finished").sum()), planned=int(len(runs)))
  if not df.empty:
    tasks = [t for t in df.task.unique() if t != "text" and "_t" not in t]
    positions = [p for p in ("rotary", "learned") if p in set(df.positions)]
    record["crossings"] = [x for p in positions
                           for x in ability.crossings(df, tasks, p, FORECAST_TOLERANCE)]
    record["smoothness"] = ability.smoothness(df, tasks, positions[0])
    out.csv("forecast.csv", pd.DataFrame(_forecast_rows(record["crossings"], positions[0])))
    results = _heldout_forecasts(workdir, df, tasks, positions[0], record)
    out.csv("heldout_forecast.csv", pd.DataFrame(record["heldout_forecast"]["rows"]))
    c_tasks = store.read_sweep(workdir)["runs"][0]["config"]["tasks"]
    weights = ability.parity_weights(c_tasks, list(df.task.unique()))
    if weights:
      record["parity"] = _parity(df, weights, positions[0])
    _figures(out, df, cal, tasks, positions[0], record, weights, results)
    record["tasks"] = tasks
  record["analysis_s"] = time.perf_counter() - started
  return out.fit(record, format_report)


def _forecast_rows(crossings: list[dict], positions: str) -> list[dict]:
  return [dict(task=x["task"], n50_observed=x["n50_observed"],
               n50_forecast=x[method]["n50_forecast"], method=method,
               models_used=x["models_used"], decades=x[method]["decades"],
               miss=x[method]["miss"])
          for x in crossings if x["positions"] == positions
          for method in ("per_token", "exact_match")]


def _heldout_forecasts(workdir: str, df, tasks: list[str], positions: str,
                       record: dict) -> list[dict]:
  """The held-out-model validation (research/scaling/ability_forecast.py) of every task that has
  a forecast form, into record["heldout_forecast"]; returns the per-task results (for figures)."""
  from research import config as config_lib
  from research.scaling import ability_forecast as af
  s = config_lib.preset(get_config, store.read_sweep(workdir)).sweep
  rows = df[df.positions == positions]
  entry = dict(heldout_rungs=s.heldout_rungs, fit_fraction=s.fit_fraction,
               level=s.forecast_level, n_boot=s.forecast_boot,
               tolerance=s.forecast_tolerance, crossing_tolerance=s.crossing_tolerance,
               positions=positions, rows=[], tasks=[])
  record["heldout_forecast"] = entry
  try:
    parts = af.split(rows, s.heldout_rungs, s.fit_fraction)
  except UserError as e:
    entry["note"] = str(e)
    return []
  entry.update(heldout=parts["heldout"], fit_sizes=parts["fit_sizes"], c_max=parts["c_max"],
               fit_runs=len(parts["fit_runs"]))
  results = [af.forecast_task(rows, t, parts, level=s.forecast_level, n_boot=s.forecast_boot)
             for t in tasks if af.task_kind(rows, t)]
  entry["rows"] = af.table(results, tolerance_metric=s.forecast_tolerance,
                           tolerance_decades=s.crossing_tolerance)
  for r in results:
    above = bool(np.nanmin(r["observed"]) > s.forecast_level) if len(r["observed"]) else False
    two = [x for x in entry["rows"] if x["task"] == r["task"] and x["method"] == "two_step"]
    entry["tasks"].append(dict(
        task=r["task"], metric=r["kind"]["metric"], heldout_above_level=above,
        passed=(all(x["within"] for x in two) and bool(two[0]["n50_within"])) if above and two
        else None, law=r["chain"].law.params if r["chain"] else None,
        link=r["chain"].link if r["chain"] else None, note=two[0]["note"] if two else ""))
  return results


def _parity(df, weights: dict, positions: str) -> dict:
  """Multitask sparse parity: the mean answer loss's power law in N, each subtask's sharpness."""
  final = ability.final(df[(df.positions == positions) & (df.metric == "target_logprob")])
  mean_loss = ability.weighted_loss(final, weights)
  sharp = {t: ability.sharpness(*zip(*(-final[final.task == t].groupby("N").value.mean())
                                       .items())) for t in weights}
  return dict(law=ability.power_law(mean_loss.index, mean_loss.values), subtask_sharpness=sharp,
              mean_loss={str(k): v for k, v in mean_loss.items()})


def _figures(out, df, cal, tasks: list[str], positions: str, record: dict,
             weights: dict, results: list[dict]) -> None:
  from research.scaling import ability_plots
  levels = {t: ability.chance(t) for t in tasks}
  shown = ability_plots.informative(df, tasks, positions=positions) or tasks[:1]
  record["panels"] = shown  # the other tasks are in report.md's table only
  for x, name in (("C", "exact_match_vs_c"), ("N", "exact_match_vs_n")):
    out.figure(ability_plots.exact_match_panels(df, shown, x=x, chance=levels,
                                                positions=positions), name)
  forecast = [r for r in results if r["task"] in shown or r["kind"]["metric"] !=
              "exact_match"]
  if forecast:
    out.figure(ability_plots.forecast_panels(forecast, df, positions,
                                             record["heldout_forecast"]["fit_fraction"]),
               "forecast")
    if any(r.get("chain") is not None for r in forecast):
      out.figure(ability_plots.two_step_steps(forecast), "two_step")
  choice = [t for t in tasks if len(df[(df.task == t) & (df.metric == "mc_p_correct")])]
  if choice:
    out.figure(ability_plots.choice_decomposition(df, choice, positions), "choices")
  headline = [t for t in ("add1", "add2", "add3", "add4", "add5", "add3_reversed", "mul2",
                          "unscramble", "parity") if t in tasks]
  out.figure(ability_plots.metric_grid(df, headline, ["exact_match"] + list(ability.CONTINUOUS),
                                       positions), "metrics_vs_n")
  mc = [t for t in tasks if len(df[(df.task == t) & (df.metric == "ece")])]
  for task in mc[:1]:
    pooled = ability.pooled_reliability(cal[(cal.task == task) & (cal.positions == positions)])
    out.figure(ability_plots.calibration(df, pooled, task, positions), "calibration")
  if weights:
    out.figure(ability_plots.parity(df, weights, record["parity"]["law"], positions), "parity")
  generated = [t for t in tasks if not t.startswith("bb_")]
  out.figure(ability_plots.along_training(df, [t for t in generated if t.startswith("add")
                                               and "_" not in t][:5], positions),
             "exact_match_vs_tokens")


def _n(value) -> str:
  if value is None:
    return "not reached"
  if isinstance(value, float) and math.isnan(value):
    return "below the ladder"
  return f"{value:,.0f}" if 1 <= value < 1e8 else f"{value:.3g}"


def format_report(record: dict) -> str:
  lines = ["# Emergence study: report", "",
           f"{record['finished']} of {record['planned']} runs finished; analysis "
           f"{record['analysis_s']:.1f} s.", ""]
  if "crossings" not in record:
    return "\n".join(lines) + "\n"
  lines += ["## Where exact match crosses 50% (N non-embedding; seed means, last checkpoint)", "",
            "Sparse parity is left out: its one-bit answer is right half the time by chance.", "",
            "| task | positions | max exact match | N50 observed | C50 observed | "
            "forecast per-token (decades) | forecast exact match (decades) | models used |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
  for x in record["crossings"]:
    def fc(method):
      f = x[method]
      if f["n50_forecast"] is None:
        return "none (miss)"
      d = "" if f["decades"] is None else f" ({f['decades']:+.2f}{', miss' if f['miss'] else ''})"
      return f"{_n(f['n50_forecast'])}{d}"

    def fc_or_none(method):
      f = x[method]
      if f["n50_forecast"] is None:
        return "none (miss)" if f["miss"] else "none"
      return fc(method)
    c50 = x["c50_observed"]
    lines.append(f"| {x['task']} | {x['positions']} | {x['exact_match_max']:.2f} | "
                 f"{_n(x['n50_observed'])} | "
                 f"{'-' if c50 is None or math.isnan(c50) else f'{c50:.3g}'} | "
                 f"{fc_or_none('per_token')} | {fc_or_none('exact_match')} | "
                 f"{x['models_used']} |")
  lines += _heldout_report(record.get("heldout_forecast"))
  if record.get("panels"):
    lines += ["", "Tasks drawn as panels (seed-mean exact match at least 0.1 above chance at "
              f"some size): {', '.join(record['panels'])}; the others are in the tables only."]
  lines += ["", "## Smoothness in log N (BIG-bench breakthroughness and linearity; "
            "edit distance, Brier and the top wrong choice's mass negated so that up is better)",
            "",
            "| task | metric | breakthroughness | linearity | monotone | improving steps |",
            "|---|---|---:|---:|---|---|"]
  for s in record["smoothness"]:
    lines.append(f"| {s['task']} | {s['metric']} | {s['breakthroughness']:.2f} | "
                 f"{s['linearity']:.2f} | {s['monotone']} | {s['improving_steps']} |")
  if "parity" in record:
    law = record["parity"]["law"]
    lines += ["", "## Multitask sparse parity", ""]
    if law:
      lines.append(f"Mean answer loss = {law['A']:.3g} N^-{law['alpha']:.3f} (R2 {law['r2']:.3f}).")
    lines.append("Sharpness of each subtask's loss curve (largest fall between neighbouring sizes"
                 " as a fraction of the whole fall): " + ", ".join(
                     f"{t.rsplit('_', 1)[1]} {v:.2f}" for t, v in
                     record["parity"]["subtask_sharpness"].items()))
  return "\n".join(lines) + "\n"


def _finite(value) -> str:
  """An interval's end: '-' when there is none, 'inf' for resamples that never reach."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return "inf" if math.isinf(value) else _n(value)


def _heldout_report(entry: dict | None) -> list[str]:
  if not entry:
    return []
  lines = ["", f"## Held-out models forecast from smaller ones ({entry['positions']} positions)",
           ""]
  if "heldout" not in entry:
    return lines + [f"No forecast: {entry.get('note', '')}"]
  lines += [f"Held out: the top {entry['heldout_rungs']} sizes (N = "
            f"{', '.join(_n(n) for n in entry['heldout'])}); fitted on the {entry['fit_runs']} "
            f"runs of at most {entry['fit_fraction']:g} of their compute (sizes "
            f"{', '.join(_n(n) for n in entry['fit_sizes'])}). A forecast passes when every "
            f"held-out size's seed-mean metric is within {entry['tolerance']:g} and the "
            f"{entry['level']:g} crossing within {entry['crossing_tolerance']:g} decades of N; "
            f"intervals: 95% over {entry['n_boot']} resamples of seeds within sizes.", "",
            "| task | metric | N | observed | two-step (95%) | extrapolated metric | "
            "extrapolated per-token | N50 observed | N50 two-step (95%; decades) | "
            "N50 metric / per-token (decades) | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  rows = entry["rows"]

  def f(v, fmt="{:.2f}"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

  def dec(v):
    return "" if v is None else f" ({v:+.2f})"
  for r in [x for x in rows if x["method"] == "two_step"]:
    same = {x["method"]: x for x in rows if x["task"] == r["task"] and x["N"] == r["N"]}
    em, tok = same.get("exact_match"), same.get("per_token")
    direct = " / ".join(f"{_n(x['n50_predicted'])}{dec(x['decades'])}" if x else "-"
                        for x in (em, tok))
    lines.append(
        f"| {r['task']} | {r['metric']} | {_n(r['N'])} | {f(r['observed'])} | "
        f"{f(r['predicted'])} [{f(r['lo'])}, {f(r['hi'])}] | {f(em and em['predicted'])} | "
        f"{f(tok and tok['predicted'])} | {_n(r['n50_observed'])} | "
        f"{_n(r['n50_predicted'])} [{_finite(r['n50_lo'])}, {_finite(r['n50_hi'])}]"
        f"{dec(r['decades'])} | "
        f"{direct} | {r['note']} |")
  verdicts = [t for t in entry["tasks"] if t["heldout_above_level"]]
  lines += ["", "Tasks whose held-out models all exceed the level: " + (", ".join(
      f"{t['task']} {'pass' if t['passed'] else 'miss'}" for t in verdicts) or "none") + "."]
  return lines

