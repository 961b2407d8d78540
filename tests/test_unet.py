"""The U-Net's analytic parameter and FLOP counts against its parameter tree and XLA's count."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.diffusion import ddpm
from research.errors import ConfigError
from research.models import unet

TINY = unet.UNetConfig(image_size=8, channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                       attn_resolutions=(4,), dropout=0.1, groups=4)
CONFIGS = [
    TINY,
    unet.UNetConfig(image_size=16, channels=3, ch=12, ch_mult=(1, 2, 3), num_res_blocks=2,
                    attn_resolutions=(8, 4), groups=3),
    unet.UNetConfig(image_size=28, channels=1, ch=16, ch_mult=(1, 1, 2), num_res_blocks=1,
                    attn_resolutions=(), groups=8),
]


def tree_count(cfg) -> int:
  params = jax.eval_shape(lambda: unet.init_params(cfg, jax.random.key(0)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("cfg", CONFIGS, ids=["tiny", "rgb16-3levels", "mnist28"])
def test_param_counts_match_the_tree(cfg):
  counts = unet.param_counts(cfg)
  assert counts.total == tree_count(cfg)
  assert counts.embedding == 0 and counts.non_embedding == counts.total


def test_ho_et_al_cifar10_model_has_35_7m_parameters():
  cfg = unet.UNetConfig()  # the defaults are Ho et al.'s CIFAR-10 model
  assert tree_count(cfg) == unet.param_counts(cfg).total
  assert round(unet.param_counts(cfg).total / 1e6, 1) == 35.7


def test_conv_taps_leave_out_the_padding():
  assert unet.conv_taps(8, 1) == (3 * 8 - 2) ** 2
  assert unet.conv_taps(8, 2) == (3 * 4 - 1) ** 2  # SAME, stride 2: one padded row at the end
  assert unet.conv_taps(1, 1) == 1


def test_train_step_flops_within_10_percent_of_xla():
  # Norms, swish, dropout's random bits and the optimizer are not counted: they are 20% of
  # XLA's count of this train step at ch 8, 13% at ch 16 and fall as 1 / ch (the smoke preset
  # has ch 32).
  cfg = unet.UNetConfig(**{**TINY.__dict__, "ch": 32, "groups": 8})
  ours, xla = ddpm.train_step_flops(cfg, images=4)
  print(f"analytic {ours:.4g} vs XLA {xla:.4g}: ratio {ours / xla:.3f}")
  assert abs(ours - xla) / xla < 0.10, (ours, xla)


def test_apply_shapes_and_dropout():
  cfg = TINY
  params = unet.init_params(cfg, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t = jnp.array([0, 99])
  f = jax.jit(lambda p, x, t, r: (unet.apply(cfg, p, x, t),
                                  unet.apply(cfg, p, x, t, train=True, rng=r)))
  # the last convs are zero-initialised (no dropout effect at init): perturb every weight
  params = jax.tree.map(lambda v: v + 0.1, params)
  eval_out, train_a = f(params, x, t, jax.random.key(2))
  _, train_b = f(params, x, t, jax.random.key(2))
  _, train_c = f(params, x, t, jax.random.key(3))
  assert eval_out.shape == x.shape and eval_out.dtype == jnp.float32
  np.testing.assert_array_equal(train_a, train_b)      # same dropout key, same output
  assert not np.allclose(train_a, train_c)              # dropout is on in training
  assert unet.timestep_embedding(t, 8).shape == (2, 8)


@pytest.mark.parametrize("field,change,match", [
    ("image_size", dict(image_size=10, ch_mult=(1, 2, 2)), "divisible by 4"),
    ("groups", dict(groups=3), "must divide model.ch"),
    ("attn_resolutions", dict(attn_resolutions=(16,)), "resolutions"),
])
def test_bad_shapes_name_the_field(field, change, match):
  cfg = unet.UNetConfig(**{**TINY.__dict__, **change})
  with pytest.raises(ConfigError, match=match) as e:
    unet.validate(cfg)
  assert e.value.field == f"model.{field}"


def test_only_the_full_flop_convention():
  with pytest.raises(ConfigError, match="tracking.flop_convention"):
    unet.train_flops_per_image(TINY, "6N")
