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

import functools
import math
import os

import ml_collections
import numpy as np

from research import config as config_lib
from research import store
from research.errors import UserError, require
from research.fileio import atomic_write_json, atomic_write_text
from research.train import loop, optim

PRESETS = ("smoke", "cpu", "sweep-smoke", "gpu-cifar10")
DATASETS = ("digits", "mnist", "cifar10")
FAMILY = "unet"
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


def model_config(c):
  from research.models import unet
  fields = {k: v for k, v in c.model.to_dict().items() if k != "family"}
  fields["ch_mult"] = tuple(fields["ch_mult"])
  fields["attn_resolutions"] = tuple(fields["attn_resolutions"])
  return unet.UNetConfig(**fields)


def _pairs(value, field: str) -> dict:
  """((data set, value), ...) -> {data set: value}."""
  try:
    return {k: v for k, v in value}
  except (TypeError, ValueError):
    raise UserError(f"config field '{field}' = {value!r}: expected ((data set, value), ...)") \
        from None


def _is_family(c) -> bool:
  return "model" in c and c.model.get("family") == FAMILY


def validate(c) -> None:
  """Every check that needs no data and no compilation."""
  from research.diffusion import ddpm
  from research.models import unet
  require(_is_family(c), "model.family", c.model.get("family") if "model" in c else None,
          f"this study trains the {FAMILY!r} family")
  unet.validate(model_config(c))
  require(c.data.source in DATASETS, "data.source", c.data.source,
          f"allowed: {', '.join(DATASETS)}")
  native = {"digits": 8, "cifar10": 32}.get(c.data.source)
  if native is not None:
    require(c.model.image_size == native, "model.image_size", c.model.image_size,
            f"data.source {c.data.source!r} has {native}x{native} images")
  else:
    require(c.model.image_size <= 28, "model.image_size", c.model.image_size,
            "MNIST is 28x28; a smaller size downsamples it")
  want = 3 if c.data.source == "cifar10" else 1
  require(c.model.channels == want, "model.channels", c.model.channels,
          f"data.source {c.data.source!r} has {want} channel(s)")
  ddpm.betas(c.diffusion.schedule, c.diffusion.steps)
  e = c.eval
  require(e.sampler in ddpm.SAMPLERS, "eval.sampler", e.sampler,
          f"allowed: {', '.join(ddpm.SAMPLERS)}")
  require(isinstance(e.sampling_steps, int) and 1 <= e.sampling_steps <= c.diffusion.steps,
          "eval.sampling_steps", e.sampling_steps,
          f"must be between 1 and diffusion.steps = {c.diffusion.steps}")
  require(0.0 <= e.eta <= 1.0, "eval.eta", e.eta, "must be in [0, 1]")
  require(isinstance(e.n_samples, int) and e.n_samples >= 2, "eval.n_samples", e.n_samples,
          "must be at least 2 (a covariance needs two samples)")
  require(isinstance(e.batch_size, int) and e.batch_size >= 1, "eval.batch_size", e.batch_size,
          "must be a positive integer")
  require(e.features in ("digits", "inception"), "eval.features", e.features,
          "allowed: digits (FD_digits), inception (FID)")
  require(e.features != "digits" or c.data.source != "cifar10", "eval.features", e.features,
          "the digits classifier's features mean nothing for CIFAR-10: use inception")
  t = c.train
  require(isinstance(t.steps, int) and t.steps >= 1, "train.steps", t.steps,
          "must be a positive integer")
  require(isinstance(t.batch_size, int) and t.batch_size >= 1, "train.batch_size", t.batch_size,
          "must be a positive integer")
  require(0.0 <= t.ema_decay < 1.0, "train.ema_decay", t.ema_decay,
          "must be in [0, 1) (0: no EMA, evaluate the trained weights)")
  require(c.tracking.flop_convention in unet.FLOP_CONVENTIONS, "tracking.flop_convention",
          c.tracking.flop_convention, f"a U-Net's FLOPs are counted under "
          f"{', '.join(unet.FLOP_CONVENTIONS)} only")
  require(c.mesh.model == 1, "mesh.model", c.mesh.model,
          "the U-Net has no tensor-parallel rules: use data / fsdp parallelism")
  optim.validate(t, t.steps)
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


# Data.

def load_images(c) -> tuple[np.ndarray, np.ndarray]:
  """(training images, reference images for FD / KID), float32 (N, H, W, C) in [0, 1].

  digits: all 1797 images both ways (there is no held-out split worth the name); MNIST: the
  60,000 training images and the 10,000 test images, resized to model.image_size (antialiased);
  cifar10: the TFDS train and test splits."""
  from research.data import images as image_data
  source = c.data.source
  if source == "digits":
    x, _ = image_data.load_sklearn_digits()
    x = x[..., None]
    return x, x
  if source == "mnist":
    out = []
    for split in ("train", "test"):
      raw, _ = image_data.load_mnist(c.data.mnist_dir, split)
      out.append(_resize(raw.astype(np.float32)[..., None] / 255.0, c.model.image_size))
    return out[0], out[1]
  return _load_tfds_cifar10(c.data.tfds_data_dir or None)


def _resize(x, size: int) -> np.ndarray:
  if x.shape[1] == size:
    return x
  import jax
  out = [np.asarray(jax.image.resize(x[i:i + 4096], (len(x[i:i + 4096]), size, size, x.shape[-1]),
                                     "linear", antialias=True)) for i in range(0, len(x), 4096)]
  return np.clip(np.concatenate(out), 0.0, 1.0).astype(np.float32)


def _load_tfds_cifar10(data_dir):
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise UserError("data.source 'cifar10' needs tensorflow_datasets (pip install "
                    "tensorflow-datasets)") from e
  out = []
  for split in ("train", "test"):
    try:
      source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001  (not prepared, or another format)
      raise UserError(f"data.source 'cifar10': TFDS cifar10 is not prepared in "
                      f"{data_dir or 'the default TFDS folder'} ({type(e).__name__}: "
                      f"{str(e)[:200]}); prepare it with file_format='array_record' "
                      "(docs/data.md)") from e
    out.append(np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float32)
               / 255.0)
  return out[0], out[1]


def batch_source(images: np.ndarray, batch_size: int, seed: int, flip: bool):
  """step -> {"images": (B, H, W, C) in [-1, 1]}: epoch e is a permutation seeded by (seed, e)."""
  n = len(images)

  @functools.lru_cache(maxsize=4)
  def perm(epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)

  def train_batch(step: int) -> dict:
    pos = step * batch_size + np.arange(batch_size)
    idx = np.array([perm(int(e))[i] for e, i in zip(pos // n, pos % n)])
    x = images[idx]
    if flip:
      mirror = np.random.default_rng([seed, 1 << 30, step]).random(batch_size) < 0.5
      x = np.where(mirror[:, None, None, None], x[:, :, ::-1], x)
    return {"images": x * 2.0 - 1.0}

  return train_batch


# Evaluation.

def extractor(c):
  """(feature function, FD's name, KID's name)."""
  from research.diffusion import compare
  if c.eval.features == "digits":
    from research.models import digits
    fn = digits.DigitsFeatures()
  else:
    from research.models import inception
    if not c.eval.inception_weights:
      raise UserError("config field 'eval.inception_weights' = '': FID needs pytorch-fid's "
                      f"{inception.WEIGHTS_FILE} or its .npz export (nothing is downloaded)")
    fn = inception.InceptionFeatures(inception.load_variables(c.eval.inception_weights))
  fd_name, kid_name = compare.metric_names(c.eval.features)
  return fn, fd_name, kid_name


def features_of(fn, images, batch_size: int) -> np.ndarray:
  return np.concatenate([fn(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def sampler_for(c, sampler: str, steps: int, batch: int, eta: float | None = None):
  """A jitted (params, key) -> images (batch, H, W, C) in [-1, 1]."""
  from research.diffusion import ddpm
  from research.models import unet
  mcfg = model_config(c)
  sched = ddpm.make_schedule(c.diffusion.schedule, c.diffusion.steps)
  eps_fn = lambda params, x, t: unet.apply(mcfg, params, x, t)  # noqa: E731
  shape = (batch, mcfg.image_size, mcfg.image_size, mcfg.channels)
  return ddpm.make_sampler(eps_fn, sched, shape, sampler, steps,
                           c.eval.eta if eta is None else eta)


def draw(sample_fn, params, n: int, batch: int, seed: int) -> np.ndarray:
  """n images in [0, 1]: batch i from fold_in(key(seed), i)."""
  import jax
  from research.diffusion import ddpm
  out = []
  for i in range(math.ceil(n / batch)):
    out.append(ddpm.to_images(sample_fn(params, jax.random.fold_in(jax.random.key(seed), i))))
  return np.concatenate(out)[:n]


class SampleQuality:
  """An evaluator: params -> {"fd", "kid", "kid_std"} of eval.n_samples samples against the
  reference images; also the real-vs-real floor at the same sample count (`floor`)."""

  def __init__(self, c, reference: np.ndarray, train_images: np.ndarray):
    from research.diffusion import fid
    self.c = c
    self.fn, self.fd_name, self.kid_name = extractor(c)
    e = c.eval
    self.batch = min(e.batch_size, e.n_samples)
    ref_feats = features_of(self.fn, reference, 500)
    self.ref_stats = fid.stats_of(ref_feats, c.eval.features)
    keep = np.random.default_rng(0).permutation(len(ref_feats))[:max(e.kid_subset_size, 2000)]
    self.ref_kid = ref_feats[keep]
    # The floor: n real training images (a fixed draw) against the same reference.
    pick = np.random.default_rng(1).permutation(len(train_images))[:e.n_samples]
    self.floor = self.scores(features_of(self.fn, train_images[pick], 500))
    self.sample = sampler_for(c, e.sampler, e.sampling_steps, self.batch)

  def scores(self, feats) -> dict:
    from research.diffusion import fid
    e = self.c.eval
    kid_mean, kid_std = fid.kid(self.ref_kid, feats, e.kid_subsets, e.kid_subset_size, seed=0)
    return {"fd": fid.fd(self.ref_stats, fid.stats_of(feats)), "kid": kid_mean,
            "kid_std": kid_std}

  def __call__(self, params) -> dict:
    e = self.c.eval
    images = draw(self.sample, params, e.n_samples, self.batch, e.seed)
    return self.scores(features_of(self.fn, images, 500))


def report(fd_name: str, kid_name: str) -> loop.Report:
  return loop.Report(
      metrics=(("final_fd", f"{fd_name:<10}", "(EMA weights; see eval_* for the sampler)"),
               ("final_kid", f"{kid_name:<10}", ""),
               ("fd_floor", "real floor", f"{fd_name} of real images, same sample count")),
      curves=("fd",), levels=(), unit="images",
      loss_label="L_simple (epsilon MSE per pixel)", curves_label=fd_name)


def recipe(c) -> loop.Recipe:
  from research.diffusion import ddpm
  from research.models import unet
  mcfg = model_config(c)
  sched = ddpm.make_schedule(c.diffusion.schedule, c.diffusion.steps)
  train_images, reference = load_images(c)
  quality = SampleQuality(c, reference, train_images)
  t = c.train
  base = optim.optimizer(t)
  opt = ddpm.with_ema(base, t.ema_decay) if t.ema_decay > 0 else base

  def loss(params, batch, rng):
    eps_fn = lambda x, ts, r: unet.apply(mcfg, params, x, ts, train=True, rng=r)  # noqa: E731
    return ddpm.simple_loss(eps_fn, sched, batch["images"], rng)

  flops = unet.train_flops_per_image(mcfg, c.tracking.flop_convention)
  counts = unet.param_counts(mcfg)
  facts = {
      "model_family": FAMILY,
      "params_total": counts.total, "params_embedding": 0,
      "params_non_embedding": counts.total,
      "flop_convention": c.tracking.flop_convention,
      "flops_per_token": {c.tracking.flop_convention: flops},
      "flops_per_image": flops,
      "images_budget": t.steps * t.batch_size,
      "epochs": t.steps * t.batch_size / len(train_images),
      "data": {"source": c.data.source, "unique_train_tokens": len(train_images),
               "image_size": mcfg.image_size, "reference_images": len(reference)},
      "eval_sampler": c.eval.sampler, "eval_sampling_steps": c.eval.sampling_steps,
      "eval_eta": c.eval.eta, "eval_n_samples": c.eval.n_samples, "eval_seed": c.eval.seed,
      "eval_features": c.eval.features, "fd_name": quality.fd_name,
      "kid_name": quality.kid_name, "eval_weights": "ema" if t.ema_decay > 0 else "trained",
      "fd_floor": quality.floor["fd"], "kid_floor": quality.floor["kid"],
  }
  return loop.Recipe(
      init=lambda rng: unet.init_params(mcfg, rng),
      loss=loss,
      train_batch=batch_source(train_images, t.batch_size, c.seed, c.data.flip),
      num_steps=t.steps, batch_size=t.batch_size, optimizer=opt,
      lr_schedule=optim.schedule(t, t.steps),
      flops_per_token=flops, compute_dtype=mcfg.dtype,
      evaluators=[quality], facts=facts,
      report=report(quality.fd_name, quality.kid_name),
      activation_bytes=lambda rows, model_parallel: unet.activation_bytes(mcfg, rows),
      eval_params=(lambda state: ddpm.ema_params(state.opt_state)) if t.ema_decay > 0 else None)


# Checkpoints, for `launch sample` and the analysis.

def config_of_run(run_dir: str) -> ml_collections.ConfigDict:
  """The run's config from its config.json; a UserError unless it is a U-Net run."""
  record = store.read_json(os.path.join(run_dir, store.CONFIG))
  if record is None:
    raise UserError(f"--workdir {run_dir!r} holds no run (no {store.CONFIG})")
  model = record.get("config", {}).get("model", {})
  if model.get("family") != FAMILY:
    kind = model.get("family") or ("a transformer" if "d_model" in model else "unknown")
    raise UserError(f"--workdir {run_dir!r}: its checkpoint is of model family {kind!r}, not "
                    f"{FAMILY!r} (the diffusion study's U-Net); launch sample draws only from "
                    "diffusion runs")
  return config_lib.from_dict(record["config"])


def restore_params(run_dir: str, c, step: int | None = None):
  """(the EMA parameters, or the trained ones without EMA; the checkpoint's step) of a run."""
  import jax
  from research import checkpoint
  from research.diffusion import ddpm
  from research.models import unet
  from research.train.step import init_state
  mcfg = model_config(c)
  t = c.train
  base = optim.optimizer(t)
  opt = ddpm.with_ema(base, t.ema_decay) if t.ema_decay > 0 else base
  abstract = jax.eval_shape(lambda: init_state(lambda r: unet.init_params(mcfg, r), opt, c.seed))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = checkpoint.abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
  folder = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(folder):
    raise UserError(f"--workdir {run_dir!r} has no checkpoints yet")
  ckpt = checkpoint.Checkpointer(folder, read_only=True)
  try:
    restored = ckpt.restore(target, step=step)
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"--workdir {run_dir!r} has no readable checkpoint")
  state, _, at = restored
  return (ddpm.ema_params(state.opt_state) if t.ema_decay > 0 else state.params), at


def grid_image(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """(N, H, W, C) in [0, 1] -> one uint8 (rows x H + pad, columns x W + pad, 3) mosaic."""
  n, h, w, ch = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  pad = 1
  out = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.float32)
  for i, x in enumerate(images):
    r, col = divmod(i, columns)
    out[pad + r * (h + pad):pad + r * (h + pad) + h,
        pad + col * (w + pad):pad + col * (w + pad) + w] = x if ch == 3 else x[..., :1]
  return (out * 255).round().astype(np.uint8)


def save_png(path: str, array: np.ndarray, scale: int = 1) -> None:
  import io
  from PIL import Image
  from research.fileio import atomic_write_bytes
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  atomic_write_bytes(path, buffer.getvalue())


# Sweeps.

def size(c) -> dict:
  from research.models import unet
  mcfg = model_config(c)
  n = unet.param_counts(mcfg).total
  d = c.train.steps * c.train.batch_size
  return dict(N=n, N_nonemb=n, D=d, C=float(d) * unet.train_flops_per_image(mcfg),
              flop_convention=c.tracking.flop_convention, steps=c.train.steps)


def plan(c) -> list[ml_collections.ConfigDict]:
  """Per data set (in order), each of its widths in sweep.widths: model.ch = width, the data set's
  model shape (SWEEP_MODELS), its step count, sweep.evals evaluations evenly over the run."""
  s = c.sweep
  base = config_lib.to_dict(c)
  del base["sweep"]
  steps, widths = _pairs(s.steps, "sweep.steps"), _pairs(s.widths, "sweep.widths")
  runs = []
  for dataset in s.datasets:
    for width in widths[dataset]:
      run = config_lib.from_dict(base)
      with run.unlocked():
        run.data.source = dataset
        if dataset in SWEEP_MODELS:
          run.model.update(SWEEP_MODELS[dataset])
        run.model.ch = width
        run.train.steps = steps[dataset]
        every = max(1, steps[dataset] // s.evals)
        run.loop.update(eval_every=every, checkpoint_every=every)
      runs.append(run)
  return runs


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


def frontier(points) -> np.ndarray:
  """Indices of the compute frontier: points (sorted by C) whose FD is below every point of
  smaller or equal C."""
  order = np.argsort(points.C.to_numpy(), kind="stable")
  best, keep = np.inf, []
  for i in order:
    if points.fd.iloc[i] < best:
      best = points.fd.iloc[i]
      keep.append(i)
  return np.array(keep, int)


def fit_frontier(points, floor: float, n_boot: int) -> dict:
  """FD - floor = A C^-a on the frontier (research.scaling.fit's power law, Huber in log
  space), with a bootstrap interval over the frontier points."""
  from research.scaling import fit
  x = points.C.to_numpy(float)
  y = points.fd.to_numpy(float) - floor
  ok = y > 0
  if ok.sum() < 3:
    return dict(skipped=f"{int(ok.sum())} frontier point(s) above the floor; a fit needs 3")
  law = fit.fit_law("power", {"X": x[ok] / 1e12}, y[ok], keep=16, maxiter=500)
  boot = fit.bootstrap_law(law, {"X": x[ok] / 1e12}, y[ok], n_boot=n_boot, seed=0)
  p = law.params
  return dict(law="FD - floor = A (C / 1e12)^-a", a=p["alpha"], A=p.get("A", p.get("a")),
              a_interval=boot["intervals"].get("alpha"), n_points=int(ok.sum()),
              bootstrap=n_boot, converged=law.converged, floor=floor)


def analyze(workdir: str) -> dict:
  """runs.csv (one row per evaluated checkpoint), fit.json (per data set: the frontier, its
  power-law fit with a bootstrap interval, the real-vs-real floor, FD at the largest compute by
  width, the DDIM-vs-DDPM comparison), fd_vs_compute.png / .pdf and samples_<dataset>_w<width>.png
  grids; report.md."""
  import time
  started = time.perf_counter()
  record = store.read_sweep(workdir)
  sweep = config_lib.preset(get_config, record).sweep
  runs, points = eval_rows(workdir)
  paths = {"runs.csv": os.path.join(workdir, store.RUNS_CSV)}
  atomic_write_text(paths["runs.csv"], points.to_csv(index=False))
  out = dict(study="DDPM sample quality against training compute (Ho et al. 2020)",
             planned_runs=int(len(runs)), finished=int((runs.status == "finished").sum()),
             datasets={})
  for dataset, group in points.groupby("dataset", sort=False):
    group = group.reset_index(drop=True)
    floor = float(group.fd_floor.iloc[0])
    front = group.iloc[frontier(group)]
    last = group.sort_values("step").groupby("width").tail(1).sort_values("width")
    entry = dict(fd_name=group.fd_name.iloc[0], n_samples=int(group.n_samples.iloc[0]),
                 sampler=group.sampler.iloc[0], sampling_steps=int(group.sampling_steps.iloc[0]),
                 seed=int(group.seed.iloc[0]), floor=floor,
                 frontier=dict(C=front.C.tolist(), fd=front.fd.tolist(),
                               width=front.width.tolist()),
                 fit=fit_frontier(front, floor, sweep.bootstrap),
                 final=dict(width=last.width.tolist(), N=last.N.tolist(), fd=last.fd.tolist(),
                            kid=last.kid.tolist(), C=last.C.tolist()),
                 fd_falls_with_compute={int(w): bool(g.sort_values("step").fd.iloc[-1]
                                                     < g.sort_values("step").fd.iloc[0])
                                        for w, g in group.groupby("width")})
    out["datasets"][dataset] = entry
  figure = fd_figure(points, out)
  if figure is not None:
    from research.scaling import plots
    for path in plots.save(figure, os.path.join(workdir, "fd_vs_compute")):
      paths[os.path.basename(path)] = path
  paths.update(sample_grids(workdir, record, runs, sweep.grid))
  for dataset, entry in out["datasets"].items():
    if dataset in sweep.compare_datasets:
      entry["sampler_comparison"] = compare_samplers(workdir, record, runs, dataset, sweep)
  out["analysis_s"] = time.perf_counter() - started
  return store.write_analysis(workdir, paths, out, format_report)


def fd_figure(points, out: dict):
  """FD and KID against training FLOPs, one curve per width, per data set; the frontier, its
  fit and the real-vs-real floor."""
  if points.empty:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  datasets = list(out["datasets"])
  fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 8), squeeze=False)
  for j, dataset in enumerate(datasets):
    entry, group = out["datasets"][dataset], points[points.dataset == dataset]
    widths = sorted(group.width.unique())
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    for row, metric in enumerate(("fd", "kid")):
      ax = axes[row, j]
      for colour, w in zip(colours, widths):
        g = group[group.width == w].sort_values("C")
        ax.plot(g.C, g[metric], "o-", color=colour, ms=3, lw=1,
                label=f"width {w} (N = {int(g.N.iloc[0]):,})")
      name = entry["fd_name"] if metric == "fd" else entry["fd_name"].replace("FD", "KID")
      if metric == "fd":
        ax.axhline(entry["floor"], color="grey", ls=":", label="real vs real (floor)")
        f = entry["fit"]
        front = entry["frontier"]
        ax.plot(front["C"], front["fd"], "k*", ms=8, label="compute frontier")
        if "a" in f:
          c = np.geomspace(min(front["C"]), max(front["C"]), 50)
          ax.plot(c, f["floor"] + f["A"] * (c / 1e12) ** -f["a"], "k--", lw=1,
                  label=f"fit: a = {f['a']:.2f} {_interval(f.get('a_interval'))}")
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("training compute C (FLOPs, convention 'full')")
      ax.set_ylabel(f"{name} ({entry['n_samples']} samples, {entry['sampler']} "
                    f"{entry['sampling_steps']} steps)")
      ax.set_title(f"{dataset}", fontsize=10)
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def _interval(iv) -> str:
  return f"[{iv[0]:.2f}, {iv[1]:.2f}]" if iv else ""


def _finished_runs(record, runs, dataset: str | None = None):
  configs = {r["run"]: r["config"] for r in record["runs"]}
  done = runs[runs.status == "finished"]
  return [(r, configs[r]) for r in done.run
          if dataset is None or configs[r]["data"]["source"] == dataset]


def sample_grids(workdir: str, record, runs, n: int) -> dict:
  """samples_<dataset>_w<width>.png: n DDIM-50 samples (seed 0) from each finished run's EMA."""
  paths = {}
  for run, cfg_dict in _finished_runs(record, runs):
    c = config_lib.from_dict(cfg_dict)
    params, _ = restore_params(store.run_dir(workdir, run), c)
    steps = min(50, c.diffusion.steps)
    images = draw(sampler_for(c, "ddim", steps, n), params, n, n, 0)
    name = f"samples_{c.data.source}_w{c.model.ch}.png"
    save_png(os.path.join(workdir, name), grid_image(images), scale=4 if c.model.image_size <= 16
             else 2)
    paths[name] = os.path.join(workdir, name)
  return paths


def compare_samplers(workdir: str, record, runs, dataset: str, s) -> dict:
  """The eval sampler against sweep.compare_sampler / compare_steps on the largest finished
  model of `dataset`, both on sweep.compare_samples samples (cached in that run's folder)."""
  from research.diffusion import fid
  done = _finished_runs(record, runs, dataset)
  if not done or s.compare_samples < 2:
    return dict(skipped="no finished run")
  run, cfg_dict = max(done, key=lambda rc: rc[1]["model"]["ch"])
  folder = store.run_dir(workdir, run)
  cache = os.path.join(folder, "sampler_comparison.json")
  key = dict(sampler=s.compare_sampler, steps=s.compare_steps, n=s.compare_samples)
  cached = store.read_json(cache)
  if cached and cached.get("key") == key:
    return cached["result"]
  c = config_lib.from_dict(cfg_dict)
  params, step = restore_params(folder, c)
  fn, fd_name, _ = extractor(c)
  train_images, reference = load_images(c)
  ref = fid.stats_of(features_of(fn, reference, 500))
  result = dict(run=run, width=c.model.ch, step=step, n_samples=s.compare_samples,
                fd_name=fd_name, seed=c.eval.seed)
  batch = min(c.eval.batch_size, s.compare_samples)
  for sampler, steps in ((c.eval.sampler, c.eval.sampling_steps),
                         (s.compare_sampler, s.compare_steps)):
    started = __import__("time").perf_counter()
    images = draw(sampler_for(c, sampler, steps, batch), params, s.compare_samples, batch,
                  c.eval.seed)
    result[f"{sampler}_{steps}"] = dict(
        fd=fid.fd(ref, fid.stats_of(features_of(fn, images, 500))),
        seconds=__import__("time").perf_counter() - started)
  a, b = (result[f"{c.eval.sampler}_{c.eval.sampling_steps}"]["fd"],
          result[f"{s.compare_sampler}_{s.compare_steps}"]["fd"])
  result["ratio"] = a / b if b else None
  atomic_write_json(cache, dict(key=key, result=result))
  del train_images
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
                   f"{_interval(f.get('a_interval'))} (95% bootstrap, {f['bootstrap']} "
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
