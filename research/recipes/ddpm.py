"""The DDPM U-Net as a family: its config's checks, its images, its size, its sample-quality
evaluator and the recipe of one run (research.train.recipe.Recipe), and the parameters of a
trained run (the EMA of the weights when it keeps one).

A config of this family has the groups `model` (research.models.unet.UNetConfig's fields and
`family = "unet"`), `diffusion` (the noise schedule), `data` (digits, mnist or cifar10), `train`
(steps, batch, optimizer, schedule, EMA decay), `eval` (the sampler and the features of FD / KID)
and the loop's groups. The unit is one image: D counts images, C the U-Net's analytic training
FLOPs per image (convention "full") times D. Images come in [0, 1] and are fed to the model in
[-1, 1]; batches are indexed by the step (an epoch-wise permutation seeded by the config's seed),
so a resumed run sees the same batches. The evaluator draws eval.n_samples samples with the same
seed at every evaluation, so successive checkpoints are compared on common noise.
"""

import functools

import numpy as np

from research import runs
from research.diffusion import samples
from research.errors import UserError, require
from research.train import optim
from research.train.recipe import Recipe, Report

FAMILY = "unet"
DATASETS = ("digits", "mnist", "cifar10")
LENGTH_FIELDS = ("train.steps",)
EMA_PATH = ("opt_state", "ema")  # where research.diffusion.ddpm.with_ema keeps the average


def model_config(c):
  from research.models import unet
  fields = {k: v for k, v in c.model.to_dict().items() if k != "family"}
  fields["ch_mult"] = tuple(fields["ch_mult"])
  fields["attn_resolutions"] = tuple(fields["attn_resolutions"])
  return unet.UNetConfig(**fields)


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
    images = samples.draw(self.sample, params, e.n_samples, self.batch, e.seed)
    return self.scores(features_of(self.fn, images, 500))


def report(fd_name: str, kid_name: str) -> Report:
  return Report(
      header=(("params", "total {params_total:,}"),),
      metrics=(("final_fd", f"{fd_name:<10}", "(EMA weights; see eval_* for the sampler)"),
               ("final_kid", f"{kid_name:<10}", ""),
               ("fd_floor", "real floor", f"{fd_name} of real images, same sample count")),
      curves=("fd",), levels=(), unit="images",
      loss_label="L_simple (epsilon MSE per pixel)", curves_label=fd_name)


def recipe(c) -> Recipe:
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
  epochs = t.steps * t.batch_size / len(train_images)
  facts = {
      "model_family": FAMILY,
      "params_total": unet.param_counts(mcfg).total,
      "flop_convention": c.tracking.flop_convention,
      "flops_per_image": flops,
      "images_budget": t.steps * t.batch_size,
      "epochs": epochs,
      "data": {"source": c.data.source, "train_images": len(train_images),
               "image_size": mcfg.image_size, "reference_images": len(reference)},
      "data_note": f"{epochs:.2f} epochs of the {len(train_images):,} training images",
      "eval_sampler": c.eval.sampler, "eval_sampling_steps": c.eval.sampling_steps,
      "eval_eta": c.eval.eta, "eval_n_samples": c.eval.n_samples, "eval_seed": c.eval.seed,
      "eval_features": c.eval.features, "fd_name": quality.fd_name,
      "kid_name": quality.kid_name, "eval_weights": "ema" if t.ema_decay > 0 else "trained",
      "fd_floor": quality.floor["fd"], "kid_floor": quality.floor["kid"],
  }
  return Recipe(
      init=lambda rng: unet.init_params(mcfg, rng),
      loss=loss,
      train_batch=batch_source(train_images, t.batch_size, c.seed, c.data.flip),
      num_steps=t.steps, batch_size=t.batch_size, optimizer=opt,
      lr_schedule=optim.schedule(t, t.steps),
      flops_per_unit=flops, compute_dtype=mcfg.dtype,
      evaluators=[quality], facts=facts,
      report=report(quality.fd_name, quality.kid_name),
      activation_bytes=lambda rows, model_parallel: unet.activation_bytes(mcfg, rows),
      eval_params=(lambda state: ddpm.ema_params(state.opt_state)) if t.ema_decay > 0 else None,
      length_fields=LENGTH_FIELDS)


def size(c) -> dict:
  from research.models import unet
  mcfg = model_config(c)
  n = unet.param_counts(mcfg).total
  d = c.train.steps * c.train.batch_size
  return dict(N=n, N_nonemb=n, D=d, C=float(d) * unet.train_flops_per_image(mcfg),
              flop_convention=c.tracking.flop_convention, steps=c.train.steps)


def set_steps(c, steps: int) -> None:
  """Make the (unlocked) config train `steps` steps (research.train.branch)."""
  c.train.steps = steps


def sampler_for(c, sampler: str, steps: int, batch: int, eta: float | None = None):
  """A jitted (params, key) -> images (batch, H, W, C) in [-1, 1] of the run's U-Net."""
  return samples.sampler(model_config(c), c.diffusion.schedule, c.diffusion.steps, sampler, steps,
                         batch, c.eval.eta if eta is None else eta)


def read_run(workdir: str, purpose: str = "launch sample"):
  """A U-Net run's folder (research.runs.RunFolder); a UserError for another family's."""
  return runs.read(workdir, FAMILY, purpose)


def restore_params(run: "runs.RunFolder", step: int | None = None):
  """(the EMA parameters, or the trained ones of a run without EMA; the checkpoint's step)."""
  import jax

  from research.models import unet
  mcfg = model_config(run.config)
  shapes = jax.eval_shape(lambda: unet.init_params(mcfg, jax.random.key(0)))
  path = EMA_PATH if run.config.train.ema_decay > 0 else ("params",)
  return runs.restore(run, path, shapes, step)
