"""DDPM at several scales: sample quality (FD / FID) against training compute.

    python -m launch run --config experiments/diffusion.py:smoke --workdir runs/ddpm-smoke
    python -m launch sweep --config experiments/diffusion.py:cpu --workdir runs/diffusion
    python -m launch sample --workdir runs/ddpm-smoke --n 64 --sampler ddim --steps 50 --out grid.png

A U-Net (research/models/unet.py) learns to predict the noise of the DDPM forward process
(research/diffusion/ddpm.py; Ho et al. 2020's L_simple) through the same generic loop as the
language models: the recipe's unit is one image, its FLOPs per image are the U-Net's analytic
count (convention "full"), and its evaluators draw samples from the EMA of the weights with the
configured sampler and compare them with real images: FD and KID in the features of the digits
classifier (research/models/digits.py; named FD_digits, never FID) for digit images, or FID and
KID in InceptionV3 features (a weight file you supply) for CIFAR-10.

Presets:
  smoke        a 0.7M-parameter U-Net on scikit-learn's 8x8 digits, about 2 minutes on 2 CPU
               cores: the whole path (data, steps, EMA, DDIM sampling, FD_digits / KID, summary).
  cpu          (a sweep) a ladder of U-Net widths, ~4e4 to 3e6 parameters, on the 8x8 digits and
               on MNIST downsampled to 16x16 (../shared/data/images/mnist), each run evaluated at
               several points of training; planned at about 45 minutes on 2 cores
               (docs/diffusion.md has the measurements it was sized from).
  sweep-smoke  the cpu sweep's path on two tiny digit U-Nets, 40 steps each (the tests).
  gpu-cifar10  Ho et al.'s CIFAR-10 model (35.7M parameters: ch 128, multipliers 1,2,2,2, two
               residual blocks per level, attention at 16x16, dropout 0.1, linear schedule over
               1000 steps, batch 128, Adam 2e-4, EMA 0.9999, 800k steps) on a TFDS cifar10 you
               prepare (docs/data.md), FID with pytorch-fid's Inception weights you supply
               (--config.eval.inception_weights=PATH). A sweep of one run, so that
               `launch sweep --dry-run` prints its plan and cost.

Data come in as images in [0, 1] and are fed to the model in [-1, 1]; batches are indexed by the
step (an epoch-wise permutation seeded by the config's seed), so a resumed run sees the same
batches. The evaluators draw eval.n_samples samples with the same seed at every evaluation, so
successive checkpoints are compared on common noise.
"""

import os
import time

import ml_collections

from experiments import common
from research import config as config_lib
from research import store
from research.diffusion import frontier, samples
from research.errors import UserError, require
from research.fileio import atomic_write_json
from research.recipes import ddpm as ddpm_recipe

PRESETS = ("smoke", "cpu", "sweep-smoke", "gpu-cifar10")
DATASETS, FAMILY = ddpm_recipe.DATASETS, ddpm_recipe.FAMILY
MNIST_DIR = os.path.join("..", "shared", "data", "images", "mnist")
# The model of each data set in the cpu sweep (the width, model.ch, is the swept axis).
SWEEP_MODELS = {
    "digits": dict(image_size=8, channels=1, ch_mult=(1, 2, 2), num_res_blocks=1,
                   attn_resolutions=(4,)),
    "mnist": dict(image_size=16, channels=1, ch_mult=(1, 2, 2), num_res_blocks=1,
                  attn_resolutions=(8,)),
}


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      family=FAMILY, image_size=8, channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
      attn_resolutions=(4,), dropout=0.0, groups=8, dtype="float32"))
  c.diffusion = ml_collections.ConfigDict(dict(schedule="linear", steps=1000))
  c.data = ml_collections.ConfigDict(dict(
      source="digits", mnist_dir=MNIST_DIR, tfds_data_dir="", flip=False))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, steps=800, lr=1e-3, schedule="cosine", warmup_steps=50,
      final_lr_fraction=0.1, cooldown_fraction=0.2, weight_decay=0.0, grad_clip=1.0, b1=0.9,
      b2=0.999, eps=1e-8, microbatches=1, ema_decay=0.995))
  c.eval = ml_collections.ConfigDict(dict(
      n_samples=500, sampler="ddim", sampling_steps=50, eta=0.0, batch_size=250, seed=1,
      features="digits", inception_weights="", kid_subsets=50, kid_subset_size=250))
  config_lib.run_groups(c, log_every=25, eval_every=400, checkpoint_every=400,
                        keep_checkpoints=2)
  if preset in ("cpu", "sweep-smoke"):
    c.model.update(SWEEP_MODELS["digits"], groups=2, dropout=0.0)
    c.train.update(batch_size=64, steps=2000, lr=1e-3, warmup_steps=50)
    c.eval.update(n_samples=500, sampling_steps=50)
    c.loop.update(eval_every=500, checkpoint_every=500, log_every=50)
    c.sweep = ml_collections.ConfigDict(dict(
        widths=(("digits", (6, 10, 16, 28, 52)), ("mnist", (6, 10, 16, 28))),
        datasets=("digits", "mnist"), evals=4, steps=(("digits", 2000), ("mnist", 1200)),
        bootstrap=200, grid=64, compare_sampler="ddpm", compare_steps=1000,
        compare_samples=200, compare_datasets=("digits",)))
  if preset == "sweep-smoke":  # the cpu sweep's path in a minute: the tests' analysis check
    c.train.update(steps=40, warmup_steps=5)
    c.eval.update(n_samples=64, batch_size=64, sampling_steps=10, kid_subsets=5,
                  kid_subset_size=32)
    c.loop.update(log_every=10)
    c.sweep.update(widths=(("digits", (4, 8)),), datasets=("digits",), evals=2,
                   steps=(("digits", 40),), bootstrap=20, grid=16, compare_steps=50,
                   compare_samples=16)
  elif preset == "gpu-cifar10":
    c.model.update(image_size=32, channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                   attn_resolutions=(16,), dropout=0.1, groups=32)
    c.data.update(source="cifar10", flip=True)
    c.train.update(batch_size=128, steps=800_000, lr=2e-4, schedule="constant",
                   warmup_steps=5000, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999)
    c.eval.update(n_samples=10_000, sampler="ddim", sampling_steps=100, batch_size=500,
                  features="inception", kid_subsets=100, kid_subset_size=1000)
    c.loop.update(log_every=100, eval_every=50_000, checkpoint_every=10_000, keep_checkpoints=3)
    c.sweep = ml_collections.ConfigDict(dict(
        widths=(("cifar10", (128,)),), datasets=("cifar10",), evals=16,
        steps=(("cifar10", 800_000),), bootstrap=200, grid=64, compare_sampler="ddpm",
        compare_steps=1000, compare_samples=10_000, compare_datasets=("cifar10",)))
  return c


def _pairs(value, field: str) -> dict:
  """((data set, value), ...) -> {data set: value}."""
  try:
    return {k: v for k, v in value}
  except (TypeError, ValueError):
    raise UserError(f"config field '{field}' = {value!r}: expected ((data set, value), ...)") \
        from None


model_config = ddpm_recipe.model_config
recipe = ddpm_recipe.recipe
size = ddpm_recipe.size


def validate(c) -> None:
  """The family's checks (research/recipes/ddpm.py), and the sweep group's."""
  from research.diffusion import ddpm
  ddpm_recipe.validate(c)
  if "sweep" in c:
    s = c.sweep
    widths = _pairs(s.widths, "sweep.widths")
    for dataset, ws in widths.items():
      require(len(ws) >= 1 and all(isinstance(w, int) and w >= 1 for w in ws), "sweep.widths",
              s.widths, f"{dataset}: must be a non-empty list of positive integers")
      bad = [w for w in ws if w % c.model.groups]
      require(not bad, "sweep.widths", s.widths,
              f"every width must be a multiple of model.groups = {c.model.groups} (not {bad})")
    require(len(s.datasets) >= 1 and all(d in DATASETS for d in s.datasets), "sweep.datasets",
            s.datasets, f"allowed: {', '.join(DATASETS)}")
    steps = _pairs(s.steps, "sweep.steps")
    for field, table in (("sweep.steps", steps), ("sweep.widths", widths)):
      missing = [d for d in s.datasets if d not in table]
      require(not missing, field, s[field.split(".")[1]], f"needs an entry for {missing}")
    require(isinstance(s.evals, int) and s.evals >= 1, "sweep.evals", s.evals,
            "must be a positive number of evaluations per run")
    ddpm.check_sampler(s.compare_sampler, s.compare_steps, c.diffusion.steps,
                       "sweep.compare_sampler")


# Sweeps.

def plan(c) -> list[ml_collections.ConfigDict]:
  """Per data set (in order), each of its widths in sweep.widths: model.ch = width, the data set's
  model shape (SWEEP_MODELS), its step count, sweep.evals evaluations evenly over the run."""
  s = c.sweep
  steps, widths = _pairs(s.steps, "sweep.steps"), _pairs(s.widths, "sweep.widths")

  def change(dataset: str, width: int):
    def apply(run):
      run.data.source = dataset
      if dataset in SWEEP_MODELS:
        run.model.update(SWEEP_MODELS[dataset])
      run.model.ch = width
      run.train.steps = steps[dataset]
      every = max(1, steps[dataset] // s.evals)
      run.loop.update(eval_every=every, checkpoint_every=every)
    return apply

  return common.expand(c, [change(d, w) for d in s.datasets for w in widths[d]])


# Analysis.

RUNS_COLUMNS = ("step", "C", "fd", "kid", "kid_std", "n_samples", "sampler", "sampling_steps",
                "eta", "seed", "features", "fd_name", "fd_floor", "width", "dataset")


def eval_rows(workdir: str):
  """runs.csv's table: the sweep's columns of each run (C renamed C_run) and one row per
  evaluated checkpoint, with C = its step x batch x FLOPs per image."""
  import pandas as pd
  from research import tracking
  runs = store.table(workdir, {"train_loss": "train_loss_last10"})
  runs = runs.rename(columns={"C": "C_run"})
  record = store.read_sweep(workdir)
  configs = {r["run"]: r["config"] for r in record["runs"]}
  rows = []
  for _, run in runs.iterrows():
    folder = store.run_dir(workdir, run.run)
    s = store.summary(folder) or {}
    path = os.path.join(folder, "metrics.jsonl")
    cfg = configs[run.run]
    if not os.path.exists(path) or not s:
      continue
    per_image = s["flops_per_image"]
    for e in tracking.read_metrics(path, kind="eval"):
      rows.append(dict(run.to_dict(), step=e["step"],
                       C=e["step"] * cfg["train"]["batch_size"] * per_image,
                       fd=e["fd"], kid=e["kid"], kid_std=e.get("kid_std"),
                       n_samples=s["eval_n_samples"], sampler=s["eval_sampler"],
                       sampling_steps=s["eval_sampling_steps"], eta=s["eval_eta"],
                       seed=s["eval_seed"], features=s["eval_features"], fd_name=s["fd_name"],
                       fd_floor=s["fd_floor"], width=cfg["model"]["ch"],
                       dataset=cfg["data"]["source"]))
  if not rows:
    return runs, pd.DataFrame(columns=list(runs.columns) + list(RUNS_COLUMNS))
  return runs, pd.DataFrame(rows)


def analyze(workdir: str) -> dict:
  """runs.csv (one row per evaluated checkpoint), fit.json (per data set: the frontier, its
  power-law fit with a bootstrap interval, the real-vs-real floor, FD at the largest compute by
  width, the DDIM-vs-DDPM comparison), fd_vs_compute.png / .pdf and samples_<dataset>_w<width>.png
  grids; report.md."""
  started = time.perf_counter()
  record = store.read_sweep(workdir)
  sweep = config_lib.preset(get_config, record).sweep
  runs, points = eval_rows(workdir)
  files = common.Outputs(workdir)
  files.runs_csv(points)
  out = dict(study="DDPM sample quality against training compute (Ho et al. 2020)",
             planned_runs=int(len(runs)), finished=int((runs.status == "finished").sum()),
             datasets={})
  for dataset, group in points.groupby("dataset", sort=False):
    group = group.reset_index(drop=True)
    floor = float(group.fd_floor.iloc[0])
    front = group.iloc[frontier.frontier(group)]
    last = group.sort_values("step").groupby("width").tail(1).sort_values("width")
    entry = dict(fd_name=group.fd_name.iloc[0], n_samples=int(group.n_samples.iloc[0]),
                 sampler=group.sampler.iloc[0], sampling_steps=int(group.sampling_steps.iloc[0]),
                 seed=int(group.seed.iloc[0]), floor=floor,
                 frontier=dict(C=front.C.tolist(), fd=front.fd.tolist(),
                               width=front.width.tolist()),
                 fit=frontier.fit_frontier(front, floor, sweep.bootstrap),
                 final=dict(width=last.width.tolist(), N=last.N.tolist(), fd=last.fd.tolist(),
                            kid=last.kid.tolist(), C=last.C.tolist()),
                 fd_falls_with_compute={int(w): bool(g.sort_values("step").fd.iloc[-1]
                                                     < g.sort_values("step").fd.iloc[0])
                                        for w, g in group.groupby("width")})
    out["datasets"][dataset] = entry
  files.figure(frontier.fd_figure(points, out), "fd_vs_compute")
  files.saved(sample_grids(workdir, record, runs, sweep.grid))
  for dataset, entry in out["datasets"].items():
    if dataset in sweep.compare_datasets:
      entry["sampler_comparison"] = compare_samplers(workdir, record, runs, dataset, sweep)
  out["analysis_s"] = time.perf_counter() - started
  return files.fit(out, format_report)


def _finished_runs(record, runs, dataset: str | None = None):
  configs = {r["run"]: r["config"] for r in record["runs"]}
  done = runs[runs.status == "finished"]
  return [(r, configs[r]) for r in done.run
          if dataset is None or configs[r]["data"]["source"] == dataset]


def _restore(workdir: str, run: str):
  """(the run's folder, its EMA parameters, their step)."""
  folder = ddpm_recipe.read_run(store.run_dir(workdir, run), "the diffusion study's analysis")
  return (folder, *ddpm_recipe.restore_params(folder))


def sample_grids(workdir: str, record, runs, n: int) -> list[str]:
  """samples_<dataset>_w<width>.png: n DDIM-50 samples (seed 0) from each finished run's EMA."""
  paths = []
  for run, _ in _finished_runs(record, runs):
    folder, params, _ = _restore(workdir, run)
    c = folder.config
    steps = min(50, c.diffusion.steps)
    images = samples.draw(ddpm_recipe.sampler_for(c, "ddim", steps, n), params, n, n, 0)
    paths.append(os.path.join(workdir, f"samples_{c.data.source}_w{c.model.ch}.png"))
    samples.save_png(paths[-1], samples.grid_image(images),
                     scale=4 if c.model.image_size <= 16 else 2)
  return paths


def compare_samplers(workdir: str, record, runs, dataset: str, s) -> dict:
  """The eval sampler against sweep.compare_sampler / compare_steps on the largest finished
  model of `dataset`, both on sweep.compare_samples samples (cached in that run's folder)."""
  from research.diffusion import fid
  done = _finished_runs(record, runs, dataset)
  if not done or s.compare_samples < 2:
    return dict(skipped="no finished run")
  run, _ = max(done, key=lambda rc: rc[1]["model"]["ch"])
  folder = store.run_dir(workdir, run)
  cache = os.path.join(folder, "sampler_comparison.json")
  key = dict(sampler=s.compare_sampler, steps=s.compare_steps, n=s.compare_samples)
  cached = store.read_json(cache)
  if cached and cached.get("key") == key:
    return cached["result"]
  run_folder, params, step = _restore(workdir, run)
  c = run_folder.config
  fn, fd_name, _ = ddpm_recipe.extractor(c)
  _, reference = ddpm_recipe.load_images(c)
  ref = fid.stats_of(ddpm_recipe.features_of(fn, reference, 500))
  result = dict(run=run, width=c.model.ch, step=step, n_samples=s.compare_samples,
                fd_name=fd_name, seed=c.eval.seed)
  batch = min(c.eval.batch_size, s.compare_samples)
  for sampler, steps in ((c.eval.sampler, c.eval.sampling_steps),
                         (s.compare_sampler, s.compare_steps)):
    started = time.perf_counter()
    images = samples.draw(ddpm_recipe.sampler_for(c, sampler, steps, batch), params,
                          s.compare_samples, batch, c.eval.seed)
    result[f"{sampler}_{steps}"] = dict(
        fd=fid.fd(ref, fid.stats_of(ddpm_recipe.features_of(fn, images, 500))),
        seconds=time.perf_counter() - started)
  a, b = (result[f"{c.eval.sampler}_{c.eval.sampling_steps}"]["fd"],
          result[f"{s.compare_sampler}_{s.compare_steps}"]["fd"])
  result["ratio"] = a / b if b else None
  atomic_write_json(cache, dict(key=key, result=result))
  return result


PAPERS = (  # (paper, data set, FID, parameters, sampler)
    ("Ho et al. 2020 (Table 1)", "CIFAR-10", 3.17, "35.7M", "ancestral, 1000 steps"),
    ("Nichol & Dhariwal 2021 (Table 2, L_simple, cosine)", "CIFAR-10", 2.94, "52M",
     "ancestral, 4000 steps"),
    ("Song et al. 2021 (DDIM, Table 1)", "CIFAR-10", 4.67, "35.7M", "DDIM eta 0, 50 steps"),
)


def format_report(out: dict) -> str:
  lines = [f"# {out['study']}", "", f"{out['finished']} of {out['planned_runs']} runs finished.",
           ""]
  for dataset, e in out["datasets"].items():
    f = e["fit"]
    lines += [f"## {dataset}", "",
              f"{e['fd_name']} with {e['n_samples']} samples, {e['sampler']} "
              f"{e['sampling_steps']} steps, sampling seed {e['seed']}; real-vs-real floor "
              f"at that count {e['floor']:.3f}.", ""]
    if "a" in f:
      lines.append(f"Frontier fit {f['law']}: a = {f['a']:.3f} "
                   f"{frontier.interval(f.get('a_interval'))} (95% bootstrap, {f['bootstrap']} "
                   f"resamples of {f['n_points']} frontier points).")
    else:
      lines.append(f"Frontier fit skipped: {f.get('skipped')}")
    lines += ["", "| width | N | C at the last evaluation | FD | KID |", "|---|---|---|---|---|"]
    fin = e["final"]
    for w, n, fd_, kid_, c_ in zip(fin["width"], fin["N"], fin["fd"], fin["kid"], fin["C"]):
      lines.append(f"| {w} | {int(n):,} | {c_:.3g} | {fd_:.3f} | {kid_:.5f} |")
    comp = e.get("sampler_comparison", {})
    if "ratio" in comp:
      lines += ["", f"Sampler comparison on width {comp['width']} ({comp['n_samples']} samples): "
                + ", ".join(f"{k} {v['fd']:.3f} ({v['seconds']:.0f} s)" for k, v in comp.items()
                            if isinstance(v, dict))
                + f"; ratio {comp['ratio']:.3f}."]
    lines.append("")
  lines += ["## Beside the papers (FID on CIFAR-10; not comparable with FD_digits)", "",
            "| paper | data | FID | parameters | sampler |", "|---|---|---|---|---|"]
  lines += [f"| {p} | {d} | {v} | {n} | {smp} |" for p, d, v, n, smp in PAPERS]
  return "\n".join(lines) + "\n"
