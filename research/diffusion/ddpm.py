"""Denoising diffusion: noise schedules, the forward process, the simple loss, EMA, samplers.

Ho et al. (2020), "Denoising Diffusion Probabilistic Models"; Nichol & Dhariwal (2021),
"Improved DDPM" (the cosine schedule, respacing); Song et al. (2021), "DDIM".

Notation: T diffusion steps, indices t = 0 .. T - 1 (the paper's t = 1 .. T); beta_t the noise
added at step t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s <= t} alpha_s. The forward process
in closed form: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I). The model predicts
the noise epsilon (`eps_fn(x_t, t)`); the simple loss is E |eps - eps_theta(x_t, t)|^2 over t
uniform, x_0 from the data and eps ~ N(0, I) (Ho et al.'s L_simple, a mean over pixels).

Samplers run over a sequence of timesteps tau_S > ... > tau_1 (all T, or fewer evenly spaced:
`timesteps`), as one `lax.scan`, jitted, deterministic given the seed:
  * "ddpm": ancestral sampling from the posterior q(x_{prev} | x_t, x_0_hat), variance
    beta_tilde (Ho et al. eq. 7; over fewer steps the respaced betas of Nichol & Dhariwal,
    beta = 1 - alpha_bar_t / alpha_bar_prev);
  * "ddim": x_prev = sqrt(alpha_bar_prev) x_0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat
    + sigma z, sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t
    / alpha_bar_prev); eta = 0 (the default) is deterministic given x_T, eta = 1 is "ddpm".
Both predict x_0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t), clip it to
the data range [-1, 1] (as Ho et al.'s and the DDIM code do) and re-derive eps_hat from it.

EMA of the weights (Ho et al. use decay 0.9999): `with_ema` wraps an optax optimizer so that
its state carries the moving average of the parameters, updated every step; `ema_params(state)`
reads it. The training loop stays generic: a recipe hands the loop `eval_params` to evaluate the
EMA (research.train.recipe.Recipe).
Shape suffixes: B batch, H height, W width, C channels, S sampling steps.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.errors import UserError, require

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
COSINE_S = 0.008        # Nichol & Dhariwal's offset
MAX_BETA = 0.999        # ... and their clipping of beta near t = T
MAX_T = 100_000         # diffusion steps: the schedule's arrays have T entries


# Schedules.

def betas(schedule: str, T: int) -> np.ndarray:
  """float64[T]. linear: Ho et al.'s 1e-4 .. 0.02 over T = 1000, scaled by 1000 / T for other T
  (Nichol & Dhariwal's `get_named_beta_schedule`), clipped at 0.999 (T < 20); cosine: alpha_bar(t) = f(t) / f(0),
  f(t) = cos((t / T + s) / (1 + s) pi / 2)^2, betas clipped at 0.999."""
  require(schedule in SCHEDULES, "diffusion.schedule", schedule, f"allowed: {', '.join(SCHEDULES)}")
  require(isinstance(T, int) and 2 <= T <= MAX_T, "diffusion.steps", T,
          f"must be an integer in [2, {MAX_T}] (Ho et al. use 1000)")
  if schedule == "linear":
    scale = 1000.0 / T
    return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64), MAX_BETA)
  f = lambda t: np.cos((t / T + COSINE_S) / (1 + COSINE_S) * np.pi / 2) ** 2  # noqa: E731
  t = np.arange(T + 1, dtype=np.float64)
  alpha_bar = f(t) / f(0.0)
  return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)


class Schedule(NamedTuple):
  """The per-step constants, float32 arrays of length T."""
  betas: jax.Array
  alphas_bar: jax.Array

  @property
  def T(self) -> int:
    return self.betas.shape[0]


def make_schedule(schedule: str, T: int) -> Schedule:
  b = betas(schedule, T)
  return Schedule(jnp.asarray(b, jnp.float32), jnp.asarray(np.cumprod(1.0 - b), jnp.float32))


# The forward process and the loss.

def _bcast(v_B, x):
  return v_B.reshape((-1,) + (1,) * (x.ndim - 1))


def q_sample(sched: Schedule, x0_BxHxWxC, t_B, eps_BxHxWxC) -> jax.Array:
  """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: a draw from q(x_t | x_0)."""
  ab = sched.alphas_bar[t_B]
  return _bcast(jnp.sqrt(ab), x0_BxHxWxC) * x0_BxHxWxC + _bcast(jnp.sqrt(1 - ab),
                                                                 x0_BxHxWxC) * eps_BxHxWxC


def simple_loss(eps_fn: Callable, sched: Schedule, x0_BxHxWxC, rng) -> tuple[jax.Array, dict]:
  """L_simple: mean over batch and pixels of (eps - eps_fn(x_t, t, rng))^2, t uniform in [0, T).
  aux: "units" = the number of images (the loop's unit)."""
  B = x0_BxHxWxC.shape[0]
  t_rng, eps_rng, model_rng = jax.random.split(rng, 3)
  t_B = jax.random.randint(t_rng, (B,), 0, sched.T)
  eps = jax.random.normal(eps_rng, x0_BxHxWxC.shape, jnp.float32)
  x_t = q_sample(sched, x0_BxHxWxC, t_B, eps)
  loss = jnp.mean((eps - eps_fn(x_t, t_B, model_rng)) ** 2)
  return loss, {"units": jnp.asarray(B, jnp.float32)}


# EMA of the parameters, kept in the optimizer's state.

class EmaState(NamedTuple):
  inner: Any
  ema: Any
  count: jax.Array


def with_ema(inner: optax.GradientTransformation, decay: float,
             warmup: bool = True) -> optax.GradientTransformation:
  """`inner`, whose state also carries an exponential moving average of the parameters.

  Each update folds in the parameters it is given (those before this step's update, so the
  average lags one step, which no decay of practical interest notices): ema <- d ema +
  (1 - d) params, with d = min(decay, (1 + n) / (10 + n)) after n updates when `warmup` (the
  TensorFlow ExponentialMovingAverage's num_updates rule, so that a short run's average is not
  dominated by its initialisation), else d = decay. Needs `params` in `update`.
  """

  def init(params):
    return EmaState(inner.init(params), jax.tree.map(jnp.array, params),
                    jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("with_ema needs the parameters in update(updates, state, params)")
    updates, inner_state = inner.update(updates, state.inner, params)
    n = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + n) / (10.0 + n)) if warmup else jnp.asarray(decay)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, params)
    return updates, EmaState(inner_state, ema, state.count + 1)

  return optax.GradientTransformation(init, update)


def ema_params(opt_state):
  """The EMA parameters of a `with_ema` optimizer state."""
  if not isinstance(opt_state, EmaState):
    raise TypeError(f"not a with_ema optimizer state: {type(opt_state).__name__}")
  return opt_state.ema


# Samplers.

def timesteps(T: int, steps: int) -> np.ndarray:
  """int32[steps], increasing: `steps` timesteps of [0, T) evenly spaced, always 0 and ending
  near T - 1 (all of them when steps == T)."""
  if not 1 <= steps <= T:
    raise UserError(f"sampling steps {steps}: must be between 1 and the {T} diffusion steps the "
                    "model was trained with")
  return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int32))


def predict_x0(x_t, eps, ab):
  return (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def _clipped(x_t, eps, ab, clip: bool):
  x0 = predict_x0(x_t, eps, ab)
  if clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
  return x0, eps


def ddpm_step(x_t, eps, ab, ab_prev, z, clip: bool = True):
  """One ancestral step x_t -> x_prev: the posterior mean of q(x_prev | x_t, x_0_hat) plus
  sqrt(beta_tilde) z, with beta = 1 - ab / ab_prev (Ho et al. eq. 7)."""
  x0, _ = _clipped(x_t, eps, ab, clip)
  beta = 1.0 - ab / ab_prev
  mean = (jnp.sqrt(ab_prev) * beta / (1.0 - ab)) * x0 + (
      jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)) * x_t
  var = beta * (1.0 - ab_prev) / (1.0 - ab)
  return mean + jnp.sqrt(var) * z


def ddim_step(x_t, eps, ab, ab_prev, z, eta: float = 0.0, clip: bool = True):
  """One DDIM step x_t -> x_prev (Song et al. 2021, eq. 12)."""
  x0, eps = _clipped(x_t, eps, ab, clip)
  sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab)) * jnp.sqrt(1.0 - ab / ab_prev)
  return (jnp.sqrt(ab_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
          + sigma * z)


def check_sampler(sampler: str, steps: int, T: int, field: str = "sampler") -> None:
  if sampler not in SAMPLERS:
    raise UserError(f"{field} {sampler!r} is unknown: choose one of {', '.join(SAMPLERS)}")
  timesteps(T, steps)


def make_sampler(eps_fn: Callable, sched: Schedule, shape: tuple, sampler: str, steps: int,
                 eta: float = 0.0, clip: bool = True) -> Callable:
  """A jitted (params, key) -> samples of `shape` (B, H, W, C) in [-1, 1] (clipped).

  `eps_fn(params, x_t, t_B)` predicts the noise. The loop over the `steps` timesteps is one
  `lax.scan`; the noise comes from the key alone, so a key gives the same samples every time.
  """
  check_sampler(sampler, steps, sched.T)
  ts = timesteps(sched.T, steps)
  ab_all = np.asarray(sched.alphas_bar, np.float64)
  ab = jnp.asarray(ab_all[ts][::-1], jnp.float32)                        # from t = tau_S down
  ab_prev = jnp.asarray(np.concatenate([[1.0], ab_all[ts][:-1]])[::-1], jnp.float32)
  t_seq = jnp.asarray(ts[::-1].copy(), jnp.int32)

  def sample(params, key):
    init_key, loop_key = jax.random.split(key)
    x_T = jax.random.normal(init_key, shape, jnp.float32)

    def body(x, inputs):
      i, t, a, a_prev = inputs
      eps = eps_fn(params, x, jnp.full((shape[0],), t, jnp.int32))
      z = jax.random.normal(jax.random.fold_in(loop_key, i), shape, jnp.float32)
      if sampler == "ddpm":
        x = ddpm_step(x, eps, a, a_prev, z, clip)
      else:
        x = ddim_step(x, eps, a, a_prev, z, eta, clip)
      return x, None

    n = len(ts)
    x0, _ = jax.lax.scan(body, x_T, (jnp.arange(n, dtype=jnp.int32), t_seq, ab, ab_prev))
    return jnp.clip(x0, -1.0, 1.0)

  return jax.jit(sample)


def to_images(x_BxHxWxC) -> np.ndarray:
  """Samples in [-1, 1] -> float32 images in [0, 1]."""
  return np.clip((np.asarray(x_BxHxWxC, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def from_images(images_BxHxWxC) -> np.ndarray:
  """Images in [0, 1] -> the model's range [-1, 1]."""
  return np.asarray(images_BxHxWxC, np.float32) * 2.0 - 1.0


def train_step_flops(cfg, images: int = 4) -> tuple[float, float]:
  """(our analytic count, XLA's cost analysis) of the FLOPs of one jitted train step of the
  U-Net `cfg` (research.models.unet) on `images` images: L_simple, Adam with the EMA. The check
  of the U-Net's FLOP count (tests/test_unet.py, benchmarks/unet_flops.py)."""
  import functools
  from research.models import unet
  from research.train.step import init_state, train_step
  schedule = make_schedule("linear", 1000)
  optimizer = with_ema(optax.adam(1e-3), 0.99)

  def loss(params, batch, rng):
    eps_fn = lambda x, t, r: unet.apply(cfg, params, x, t, train=True, rng=r)  # noqa: E731
    return simple_loss(eps_fn, schedule, batch["images"], rng)

  state = jax.eval_shape(lambda: init_state(lambda r: unet.init_params(cfg, r), optimizer, 0))
  shape = (images, cfg.image_size, cfg.image_size, cfg.channels)
  batch = {"images": jax.ShapeDtypeStruct(shape, jnp.float32)}
  step = jax.jit(functools.partial(train_step, loss_fn=loss, optimizer=optimizer))
  cost = step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(unet.train_flops_per_image(cfg) * images), float(cost["flops"])
