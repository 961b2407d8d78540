"""Noise schedules, the forward process, the loss, EMA and the samplers (research/diffusion/ddpm)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.diffusion import ddpm
from research.errors import ConfigError, UserError
from research.models import unet


@pytest.mark.parametrize("schedule", ddpm.SCHEDULES)
def test_alpha_bar_is_monotone_in_0_1(schedule):
  for T in (10, 1000):
    s = ddpm.make_schedule(schedule, T)
    ab = np.asarray(s.alphas_bar)
    assert np.all(np.diff(ab) < 0) and 0 < ab[-1] and ab[0] < 1
    assert np.all((np.asarray(s.betas) > 0) & (np.asarray(s.betas) <= ddpm.MAX_BETA))


def test_linear_schedule_is_ho_et_als():
  b = ddpm.betas("linear", 1000)
  assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
  assert ddpm.betas("linear", 100)[-1] == pytest.approx(0.2)  # scaled by 1000 / T


def test_cosine_schedule_and_its_clipping():
  T = 1000
  b = ddpm.betas("cosine", T)
  f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
  ab = np.cumprod(1 - b)
  np.testing.assert_allclose(ab[:900], (f(np.arange(1, T + 1)) / f(0))[:900], rtol=1e-6)
  assert b[-1] == ddpm.MAX_BETA  # f(T) = 0 would make beta 1: clipped at 0.999
  assert np.all(b <= 0.999)


def test_unknown_schedule_names_the_field():
  with pytest.raises(ConfigError, match="diffusion.schedule"):
    ddpm.betas("quadratic", 100)


def test_forward_process_closed_form_matches_the_chain():
  """x_t from t single steps x_s = sqrt(alpha_s) x_{s-1} + sqrt(beta_s) e_s has mean
  sqrt(alpha_bar_t) x_0 and variance 1 - alpha_bar_t (Ho et al. eq. 4)."""
  T, n = 50, 40000
  s = ddpm.make_schedule("linear", T)
  betas = np.asarray(s.betas, np.float64)
  rng = np.random.default_rng(0)
  x0 = 0.7
  x = np.full(n, x0)
  for t in range(T):
    x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(n)
    if t in (0, 9, T - 1):
      ab = float(s.alphas_bar[t])
      assert x.mean() == pytest.approx(np.sqrt(ab) * x0, abs=0.02)
      assert x.var() == pytest.approx(1 - ab, abs=0.02)
  eps = jnp.ones((2, 1, 1, 1))
  got = ddpm.q_sample(s, jnp.full((2, 1, 1, 1), x0), jnp.array([0, T - 1]), eps)
  ab = np.asarray(s.alphas_bar)[[0, T - 1]]
  np.testing.assert_allclose(np.ravel(got), np.sqrt(ab) * x0 + np.sqrt(1 - ab), rtol=1e-6)


def test_simple_loss_of_a_zero_predictor_is_the_noise_variance():
  s = ddpm.make_schedule("linear", 100)
  loss, aux = ddpm.simple_loss(lambda x, t, r: jnp.zeros_like(x), s, jnp.zeros((256, 8, 8, 1)),
                               jax.random.key(0))
  assert float(loss) == pytest.approx(1.0, abs=0.05)
  assert float(aux["units"]) == 256


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_with_eta_1_is_the_ddpm_step(clip):
  k = jax.random.split(jax.random.key(0), 3)
  x, eps, z = (jax.random.normal(key, (4, 3)) for key in k)
  ab, ab_prev = 0.3, 0.5
  np.testing.assert_allclose(ddpm.ddpm_step(x, eps, ab, ab_prev, z, clip),
                             ddpm.ddim_step(x, eps, ab, ab_prev, z, 1.0, clip), rtol=1e-5,
                             atol=1e-5)
  # eta = 0 ignores the noise
  np.testing.assert_array_equal(ddpm.ddim_step(x, eps, ab, ab_prev, z, 0.0, clip),
                                ddpm.ddim_step(x, eps, ab, ab_prev, 2 * z, 0.0, clip))


def test_timesteps():
  np.testing.assert_array_equal(ddpm.timesteps(10, 10), np.arange(10))
  ts = ddpm.timesteps(1000, 50)
  assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999
  with pytest.raises(UserError, match="between 1 and the 10 diffusion steps"):
    ddpm.timesteps(10, 11)
  with pytest.raises(UserError, match="unknown"):
    ddpm.check_sampler("euler", 5, 10)


def _linear_eps(params, x, t):
  return params["w"] * x + 0.01 * t[:, None, None, None].astype(jnp.float32) / 100.0


def test_samplers_are_deterministic_given_the_seed():
  s = ddpm.make_schedule("linear", 100)
  params = {"w": jnp.asarray(0.5)}
  for sampler in ddpm.SAMPLERS:
    fn = ddpm.make_sampler(_linear_eps, s, (3, 4, 4, 1), sampler, 20)
    a, b = fn(params, jax.random.key(0)), fn(params, jax.random.key(0))
    c = fn(params, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (3, 4, 4, 1) and float(jnp.abs(a).max()) <= 1.0


def test_ddim_eta_0_depends_only_on_x_T():
  """Two runs from the same x_T but different step noise agree (DDIM with eta 0 is an ODE
  solver); with eta 1 they differ."""
  s = ddpm.make_schedule("cosine", 100)
  params = {"w": jnp.asarray(0.3)}
  x_T = jax.random.normal(jax.random.key(5), (2, 4, 4, 1))
  ab = np.asarray(s.alphas_bar)
  ts = ddpm.timesteps(100, 10)[::-1]

  def run(eta, key):
    x = x_T
    for i, t in enumerate(ts):
      prev = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
      eps = _linear_eps(params, x, jnp.full((2,), t))
      x = ddpm.ddim_step(x, eps, ab[t], prev, jax.random.normal(jax.random.fold_in(key, i),
                                                                 x.shape), eta)
    return x

  np.testing.assert_allclose(run(0.0, jax.random.key(0)), run(0.0, jax.random.key(1)), atol=1e-6)
  assert not np.allclose(run(1.0, jax.random.key(0)), run(1.0, jax.random.key(1)))


def test_sampler_on_a_tiny_unet():
  cfg = unet.UNetConfig(image_size=8, channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                        attn_resolutions=(4,), dropout=0.0, groups=4)
  params = unet.init_params(cfg, jax.random.key(0))
  s = ddpm.make_schedule("linear", 50)
  fn = ddpm.make_sampler(lambda p, x, t: unet.apply(cfg, p, x, t), s, (2, 8, 8, 1), "ddpm", 5)
  out = np.asarray(fn(params, jax.random.key(0)))
  assert out.shape == (2, 8, 8, 1) and np.all(np.isfinite(out)) and np.abs(out).max() <= 1
  images = ddpm.to_images(out)
  assert images.min() >= 0 and images.max() <= 1


def test_ema_follows_the_parameters():
  opt = ddpm.with_ema(optax.sgd(0.1), 0.9, warmup=False)
  params = {"w": jnp.asarray(2.0)}
  state = opt.init(params)
  expected = 2.0
  for _ in range(5):
    grads = {"w": params["w"]}  # d/dw of w^2 / 2
    updates, new_state = opt.update(grads, state, params)
    expected = 0.9 * expected + 0.1 * float(params["w"])
    params, state = optax.apply_updates(params, updates), new_state
    assert float(ddpm.ema_params(state)["w"]) == pytest.approx(expected, rel=1e-6)
  warm = ddpm.with_ema(optax.sgd(0.1), 0.9999)
  s0 = warm.init({"w": jnp.asarray(0.0)})
  _, s1 = warm.update({"w": jnp.asarray(0.0)}, s0, {"w": jnp.asarray(1.0)})
  assert float(ddpm.ema_params(s1)["w"]) == pytest.approx(0.9)  # d = (1 + 0) / (10 + 0)
