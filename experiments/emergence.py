"""Emergent abilities (Wei et al. 2022) and the metric question (Schaeffer et al. 2023) on a
ladder of our own language models.

    python -m launch sweep --config experiments/emergence.py:cpu --workdir runs/emergence

Every model of the ladder (research/models/ladder.py) is trained on the same mixture of text and
generated task lines (research/data/tasks.py: k-digit addition in plain and reversed digit order
and in BIG-bench's question form, 2-digit multiplication, word unscrambling, a multiple-choice
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
  pilot  the pilots that sized the study (results/emergence/pilot/README.md).
  cpu    the study: results/emergence/cpu/, at most 45 minutes on 2 CPU cores.
"""

import dataclasses
import math
import os

import ml_collections
import numpy as np

from experiments import lm
from research import config as config_lib
from research import store, tracking
from research.data import tasks as task_data
from research.data import text
from research.errors import UserError, require
from research.evals import lm as lm_evals
from research.evals import scorer
from research.fileio import atomic_write_text
from research.models import ladder, transformer
from research.train import loop

PRESETS = ("smoke", "pilot", "cpu")

# (family, weight in the task part of the mixture), fixed from the pilots
# (results/emergence/pilot/README.md): an even mixture taught no model of up to 0.23M parameters
# any addition in 2.6M tokens, and a 45% share of plain addition spread evenly over k = 1..5 taught
# the 1M model 1-digit addition only. So 3-digit addition gets the largest share (with its
# multiple-choice form, 32% of the task lines), 2-digit the next, and the other families enough
# to be scored.
CPU_FAMILIES = (
    ("add1", 1), ("add2", 3), ("add3", 6), ("add4", 1.5), ("add5", 1.5),
    ("add1_reversed", 0.5), ("add2_reversed", 0.5), ("add3_reversed", 2), ("add4_reversed", 0.5),
    ("add5_reversed", 0.5),
    ("add2_qa", 0.25), ("add3_qa", 0.25), ("add4_qa", 0.25), ("add5_qa", 0.25),
    ("add3_mc", 1), ("mul2", 0.5), ("unscramble", 0.5), ("parity", 2))


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
      split_seed=0, heldout_fraction=0.1, eval_examples=100,
      bigbench="../shared/data/bigbench/arithmetic", bigbench_examples=100,
      lexicon="../shared/data/text/gutenberg", lexicon_size=1000,
      parity_tasks=8, parity_bits=8, parity_k=2, parity_alpha=0.4, edit_distance=True))
  c.sweep = ml_collections.ConfigDict(dict(
      n_min=1.2e4, n_max=1e6, sizes=6, seeds=(0, 1, 2), positions=("rotary", "learned"),
      learned_seeds=(0,), learned_n_max=5e5, head_size=16, aspect=32.0, ff_ratio=4))
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
                   learned_seeds=())
  elif preset == "pilot":
    c.sweep.update(n_min=1.5e5, n_max=1e6, sizes=2, seeds=(0,), positions=("rotary",),
                   learned_seeds=())
  elif preset != "cpu":
    raise UserError(f"preset {preset!r}: allowed: {', '.join(PRESETS)}")
  return c


def validate(c) -> None:
  s = lm.checked_sweep(c)
  t = c.tasks
  require(len(t.families) >= 1 and len(t.families) == len(t.weights), "tasks.weights", t.weights,
          f"one positive weight per family of tasks.families ({len(t.families)})")
  require(all(w > 0 for w in t.weights), "tasks.weights", t.weights, "must all be positive")
  unknown = [f for f in t.families if f not in task_data.FAMILIES]
  require(not unknown, "tasks.families", t.families,
          f"unknown {unknown}; allowed: {', '.join(task_data.FAMILIES)}")
  require(0 <= t.text_fraction < 1, "tasks.text_fraction", t.text_fraction, "must be in [0, 1)")
  require(0 < t.heldout_fraction < 1, "tasks.heldout_fraction", t.heldout_fraction,
          "must be in (0, 1)")
  for field in ("eval_examples", "bigbench_examples", "lexicon_size"):
    require(isinstance(t[field], int) and t[field] >= 1, f"tasks.{field}", t[field],
            "must be a positive integer")
  if "unscramble" in t.families:
    require(bool(t.lexicon), "tasks.lexicon", t.lexicon,
            "the unscramble family needs a folder or file of text to take its words from")
  if s is None:
    return
  require(0 < s.n_min <= s.n_max, "sweep.n_min", s.n_min, "must be in (0, sweep.n_max]")
  require(isinstance(s.sizes, int) and s.sizes >= 1, "sweep.sizes", s.sizes,
          "must be a positive integer")
  require(len(s.seeds) >= 1, "sweep.seeds", s.seeds, "needs at least one seed")
  require(set(s.positions) <= {"rotary", "learned"} and len(s.positions) >= 1, "sweep.positions",
          s.positions, "allowed: rotary, learned (one or both)")
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
  base = config_lib.to_dict(c)
  del base["sweep"]
  runs = []
  for positions in s.positions:
    seeds = s.seeds if positions == "rotary" else s.learned_seeds
    sizes = [r for r in rungs(c) if positions == "rotary" or r.n_nonemb <= s.learned_n_max]
    for seed in seeds:
      for r in reversed(sizes):
        run = config_lib.from_dict(base)
        with run.unlocked():
          run.model.update(positions=positions, **r.model_fields())
          run.seed = seed
        runs.append(run)
  return sorted(runs, key=lambda r: -r.model.d_model * r.model.n_layers)  # stable: seeds in order


def size(c) -> dict:
  return lm.size(c)


# One run.

def families(c) -> list[task_data.Family]:
  """The task families of c.tasks, with the study's hold-out; BIG-bench's own addition problems
  (tasks.bigbench) are excluded from the question-form training as well, so that no example of
  its files is ever a training line."""
  t = c.tasks
  out = []
  for name in t.families:
    params = {}
    if name == "unscramble":
      params["words"] = task_data.lexicon(t.lexicon, size=t.lexicon_size)
    elif name == "parity":
      params.update(n_tasks=t.parity_tasks, n_bits=t.parity_bits, k=t.parity_k,
                    alpha=t.parity_alpha)
    exclude = set()
    if name.endswith("_qa") and t.bigbench:
      exclude = task_data.bigbench_keys(bigbench_task(c, int(name[3])))
    out.append(task_data.family(name, holdout_seed=t.split_seed,
                                holdout_fraction=t.heldout_fraction, exclude=exclude, **params))
  return out


def bigbench_task(c, digits: int) -> task_data.Task:
  """BIG-bench's k-digit addition file (the first tasks.bigbench_examples examples)."""
  task = task_data.load(os.path.join(c.tasks.bigbench, f"{digits}_digit_addition", "task.json"))
  return _renamed(task, f"bb_add{digits}", task.examples[:c.tasks.bigbench_examples])


def _renamed(task, name, examples):
  return dataclasses.replace(task, name=name, examples=tuple(examples))


def eval_tasks(c, fams: list[task_data.Family]) -> list[task_data.Task]:
  """Held-out examples of every family, then BIG-bench's addition files for the digit counts whose
  question form is trained."""
  tasks = [task_data.eval_task(f, c.tasks.eval_examples) for f in fams]
  if c.tasks.bigbench:
    for name in c.tasks.families:
      if name.endswith("_qa"):
        tasks.append(bigbench_task(c, int(name[3])))
  return tasks


def load_data(c, fams) -> text.TextData:
  base = lm.load_data(c)
  mixture = task_data.TaskMixture(families=tuple(fams), weights=tuple(c.tasks.weights),
                                  text=base.source, text_fraction=c.tasks.text_fraction)
  info = dict(text=base.describe(), text_fraction=c.tasks.text_fraction,
              families=list(c.tasks.families), weights=list(c.tasks.weights))
  return text.TextData(spec=f"tasks+{base.spec}", vocab_size=base.vocab_size,
                       bytes_per_token=1.0, unique_train_tokens=None, entropy_rate_nats=None,
                       seed=c.seed, source=mixture, info=info)


REPORT = loop.Report(
    metrics=(("final_val_loss", "text val loss", "nats/token"),
             ("final_add3/exact_match", "add3 exact match", ""),
             ("final_add3/token_accuracy", "add3 per-token accuracy", "")),
    curves=("val_loss", "add3/exact_match"), unit="tokens", loss_label="loss (nats / token)")


def recipe(c) -> loop.Recipe:
  base = lm.recipe(c)  # the model, optimizer, FLOPs and facts of one language-model run
  fams = families(c)
  data = load_data(c, fams)
  mcfg = lm.model_config(c)
  B, L = c.train.batch_size, c.train.seq_len
  apply_fn = lambda params, tokens: transformer.apply(mcfg, params, tokens)  # noqa: E731
  tasks = eval_tasks(c, fams)
  tokenizer = text.ByteTokenizer()
  for task in tasks:
    task_data.check_encodable(task, tokenizer)
  evaluators = [lm_evals.loss_evaluator(apply_fn, data.val_batches(c.data.val_batches, B, L), 1.0),
                scorer.evaluator(mcfg, tasks, tokenizer, edit_distance=c.tasks.edit_distance)]
  facts = dict(base.facts, data=data.describe(), tasks=[t.name for t in tasks],
               eval_examples={t.name: len(t.examples) for t in tasks})
  return dataclasses.replace(
      base, train_batch=lambda step: data.train_batch(step, B, L, token_budget=c.train.tokens),
      evaluators=evaluators, facts=facts, report=REPORT)


# Analysis.

MAIN_METRICS = ("exact_match", "token_accuracy", "target_logprob", "edit_distance", "brier", "ece",
                "multiple_choice_grade", "exact_match_lo", "exact_match_hi", "answer_tokens",
                "chance")
CONTINUOUS = ("token_accuracy", "target_logprob", "edit_distance", "brier")
FORECAST_TOLERANCE = 0.3  # decades of N (the acceptance)


def chance(task: str) -> float:
  """Exact match of a guess: 0.5 for sparse parity's one-bit answer (a constant guess is right
  half the time), 0 for the other generated answers."""
  return 0.5 if task.startswith("parity") else 0.0


def metrics_table(workdir: str):
  """(metrics, calibration): one row per finished run, evaluated step, task and metric (columns
  run, N (non-embedding), C, step, task, metric, value, and D, seed, positions, N_total); the
  reliability bins of multiple-choice tasks separately (run, N, step, task, bin, confidence,
  accuracy, count)."""
  import pandas as pd
  runs = store.table(workdir)
  rows, calib = [], []
  for r in runs[runs.status == "finished"].to_dict("records"):
    folder = store.run_dir(workdir, r["run"])
    s = store.summary(folder)
    config = store.read_json(os.path.join(folder, store.CONFIG)) or {}
    cfg = config.get("config", config)
    per_step = s["tokens"] / s["steps"]
    per_token = s["flops"] / s["tokens"]
    common = dict(run=r["run"], N=s["params_non_embedding"], N_total=s["params_total"],
                  seed=cfg.get("seed"), positions=cfg.get("model", {}).get("positions"))
    for rec in tracking.read_metrics(os.path.join(folder, "metrics.jsonl"), kind="eval"):
      D = rec["step"] * per_step
      at = dict(common, step=rec["step"], D=D, C=D * per_token)
      if "val_loss" in rec:
        rows.append(dict(at, task="text", metric="val_loss", value=rec["val_loss"]))
      for key, value in rec.items():
        task, _, metric = key.partition("/")
        if not metric:
          continue
        if metric.startswith("reliability_"):
          kind, _, b = metric[len("reliability_"):].rpartition("_")
          calib.append(dict(at, task=task, bin=int(b), kind=kind,
                            value=np.nan if value is None else float(value)))
        elif metric in MAIN_METRICS:
          rows.append(dict(at, task=task, metric=metric, value=value))
  df = pd.DataFrame(rows)
  cal = pd.DataFrame(calib)
  if len(cal):
    cal = cal.pivot_table(index=["run", "N", "seed", "positions", "step", "task", "bin"],
                          columns="kind", values="value").reset_index()
  return df, cal


def crossings(df, tasks, positions: str) -> list[dict]:
  """Per task: the N and C where the seed-mean exact match crosses 50% (last checkpoints), and
  the two forecasts from the sizes below it."""
  from research.scaling import emergence as ability
  out = []
  for task in tasks:
    em = ability.curve(df[df.positions == positions], task, "exact_match")
    if em.empty or chance(task) >= 0.5:  # a 50% crossing of a coin flip says nothing
      continue
    acc = ability.curve(df[df.positions == positions], task, "token_accuracy")
    cs = ability.curve(df[df.positions == positions], task, "exact_match", by="C")
    tokens = ability.curve(df[df.positions == positions], task, "answer_tokens")["mean"].mean()
    n50 = ability.crossing(em.N, em["mean"])
    c50 = ability.crossing(cs.C, cs["mean"])
    entry = dict(task=task, positions=positions, n50_observed=n50, c50_observed=c50,
                 answer_tokens=float(tokens), sizes=len(em), exact_match_max=float(em["mean"].max()))
    f = ability.forecast(em.N, em["mean"], acc["mean"], tokens, n50)
    for method in ("per_token", "exact_match"):
      err = ability.decades(f[method], n50)
      observed = n50 is not None and not math.isnan(n50)
      entry[method] = dict(n50_forecast=f[method], decades=err,  # miss: None when not observed
                           miss=(err is None or abs(err) > FORECAST_TOLERANCE) if observed
                           else None)
    entry["models_used"] = f["models_used"]
    out.append(entry)
  return out


def smoothness(df, tasks, positions: str = "rotary") -> list[dict]:
  """Per task and metric: breakthroughness and linearity (BIG-bench) of the seed-mean curve in
  log N, and whether it is monotone."""
  from research.evals import metrics
  from research.scaling import emergence as ability
  out = []
  for task in tasks:
    for metric in ("exact_match",) + CONTINUOUS:
      c = ability.curve(df[df.positions == positions], task, metric)
      if len(c) < 3:
        continue
      y = c["mean"].to_numpy() * (-1 if metric in ("edit_distance", "brier") else 1)
      steps = np.diff(y)
      out.append(dict(task=task, metric=metric,
                      breakthroughness=metrics.breakthroughness(np.log(c.N), y),
                      linearity=metrics.linearity(np.log(c.N), y),
                      monotone=bool(np.all(steps >= -1e-9)),
                      improving_steps=f"{int(np.sum(steps > 0))}/{len(steps)}"))
  return out


def parity_weights(c_tasks: dict, tasks: list[str]) -> dict:
  """{parity_tNN: training frequency} (subtask i drawn with probability ~ (i+1)^-(alpha+1))."""
  alpha = c_tasks["parity_alpha"]
  return {t: (int(t.rsplit("_t", 1)[1]) + 1) ** -(alpha + 1) for t in tasks
          if t.startswith("parity_t")}


def analyze(workdir: str) -> dict:
  """metrics.csv, calibration.csv, forecast.csv, fit.json, report.md and the figures."""
  import time
  from research.scaling import ability_plots, plots
  from research.scaling import emergence as ability
  started = time.perf_counter()
  runs = store.table(workdir)
  paths = {"runs.csv": os.path.join(workdir, store.RUNS_CSV)}
  atomic_write_text(paths["runs.csv"], runs.to_csv(index=False))
  df, cal = metrics_table(workdir)
  paths["metrics.csv"] = os.path.join(workdir, "metrics.csv")
  atomic_write_text(paths["metrics.csv"], df.to_csv(index=False) if len(df) else "")
  if len(cal):
    paths["calibration.csv"] = os.path.join(workdir, "calibration.csv")
    atomic_write_text(paths["calibration.csv"], cal.to_csv(index=False))
  record = dict(finished=int((runs.status == "finished").sum()), planned=int(len(runs)))
  if df.empty:
    return _write(workdir, paths, record, started)
  sweep = store.read_sweep(workdir)
  c_tasks = sweep["runs"][0]["config"]["tasks"]
  tasks = [t for t in df.task.unique() if t != "text" and "_t" not in t]
  positions = [p for p in ("rotary", "learned") if p in set(df.positions)]
  record["crossings"] = [x for p in positions for x in crossings(df, tasks, p)]
  record["smoothness"] = smoothness(df, tasks, positions[0])
  rows = []
  for x in record["crossings"]:
    if x["positions"] != positions[0]:
      continue
    for method in ("per_token", "exact_match"):
      rows.append(dict(task=x["task"], n50_observed=x["n50_observed"],
                       n50_forecast=x[method]["n50_forecast"], method=method,
                       models_used=x["models_used"], decades=x[method]["decades"],
                       miss=x[method]["miss"]))
  import pandas as pd
  paths["forecast.csv"] = os.path.join(workdir, "forecast.csv")
  atomic_write_text(paths["forecast.csv"], pd.DataFrame(rows).to_csv(index=False))
  weights = parity_weights(c_tasks, list(df.task.unique()))
  if weights:
    final = ability.final(df[(df.positions == positions[0]) & (df.metric == "target_logprob")])
    mean_loss = ability.weighted_loss(final, weights)
    law = ability.power_law(mean_loss.index, mean_loss.values)
    sharp = {t: ability.sharpness(*zip(*(-final[final.task == t].groupby("N").value.mean())
                                         .items())) for t in weights}
    record["parity"] = dict(law=law, subtask_sharpness=sharp,
                            mean_loss={str(k): v for k, v in mean_loss.items()})
  # figures
  out = workdir
  generated = [t for t in tasks if not t.startswith("bb_")]
  levels = {t: chance(t) for t in tasks}
  for x, name in (("C", "exact_match_vs_c"), ("N", "exact_match_vs_n")):
    for p in plots.save(ability_plots.exact_match_panels(df, tasks, x=x, chance=levels,
                                                          positions=positions[0]),
                        os.path.join(out, name)):
      paths[os.path.basename(p)] = p
  headline = [t for t in ("add1", "add2", "add3", "add4", "add5", "add3_reversed", "mul2",
                          "unscramble", "parity") if t in tasks]
  for p in plots.save(ability_plots.metric_grid(df, headline, ["exact_match"] + list(CONTINUOUS),
                                                positions[0]), os.path.join(out, "metrics_vs_n")):
    paths[os.path.basename(p)] = p
  mc = [t for t in tasks if len(df[(df.task == t) & (df.metric == "ece")])]
  for task in mc[:1]:
    pooled = _pooled_reliability(cal[(cal.task == task) & (cal.positions == positions[0])])
    for p in plots.save(ability_plots.calibration(df, pooled, task, positions[0]),
                        os.path.join(out, "calibration")):
      paths[os.path.basename(p)] = p
  if weights:
    for p in plots.save(ability_plots.parity(df, weights, record["parity"]["law"], positions[0]),
                        os.path.join(out, "parity")):
      paths[os.path.basename(p)] = p
  for p in plots.save(ability_plots.along_training(df, [t for t in generated if t.startswith(
      "add") and "_" not in t][:5], positions[0]), os.path.join(out, "exact_match_vs_tokens")):
    paths[os.path.basename(p)] = p
  record["tasks"] = tasks
  return _write(workdir, paths, record, started)


def _pooled_reliability(cal):
  """Reliability bins at each run's last step, pooled over seeds per N."""
  if cal.empty:
    return cal
  last = cal.groupby("run").step.transform("max")
  cal = cal[cal.step == last].copy()
  cal["hits"] = cal.accuracy.fillna(0) * cal["count"]
  cal["conf"] = cal.confidence.fillna(0) * cal["count"]
  pooled = cal.groupby(["N", "bin"])[["hits", "conf", "count"]].sum().reset_index()
  with np.errstate(invalid="ignore", divide="ignore"):
    pooled["accuracy"] = pooled.hits / pooled["count"]
    pooled["confidence"] = pooled.conf / pooled["count"]
  return pooled


def _write(workdir, paths, record, started) -> dict:
  import time
  record["analysis_s"] = time.perf_counter() - started
  return store.write_analysis(workdir, paths, record, format_report)


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
  lines += ["", "## Smoothness in log N (BIG-bench breakthroughness and linearity; "
            "edit distance and Brier negated so that up is better)", "",
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
