"""Learning-rate schedules: warmup, then constant / cosine to a floor / WSD with a 1-sqrt cooldown."""

import ml_collections
import numpy as np
import pytest

from research.errors import ConfigError
from research.train import optim


def train_cfg(**kw):
  base = dict(lr=1.0, schedule="constant", warmup_steps=10, final_lr_fraction=0.1,
              cooldown_fraction=0.2, weight_decay=0.1, grad_clip=1.0, b1=0.9, b2=0.95, eps=1e-8)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def values(cfg, steps=100):
  fn = optim.schedule(cfg, steps)
  return np.array([float(fn(s)) for s in range(steps + 1)])


def test_linear_warmup_then_constant():
  lr = values(train_cfg())
  np.testing.assert_allclose(lr[:11], np.linspace(0, 1, 11), atol=1e-6)
  np.testing.assert_allclose(lr[10:], 1.0)


def test_cosine_decays_monotonically_to_the_floor():
  lr = values(train_cfg(schedule="cosine"))
  assert np.all(np.diff(lr[10:]) <= 1e-7)
  assert lr[100] == pytest.approx(0.1, abs=1e-6)
  assert lr[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-2)  # half way: half the range


def test_wsd_is_flat_then_cools_down_as_one_minus_sqrt():
  lr = values(train_cfg(schedule="wsd", cooldown_fraction=0.2))
  np.testing.assert_allclose(lr[10:81], 1.0, atol=1e-6)          # stable phase
  t = (np.arange(80, 101) - 80) / 20
  np.testing.assert_allclose(lr[80:], 0.1 + 0.9 * (1 - np.sqrt(t)), atol=1e-6)


def test_no_warmup():
  assert values(train_cfg(warmup_steps=0))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("field,value", [("schedule", "linear"), ("lr", -1.0),
                                          ("warmup_steps", 101), ("final_lr_fraction", 2.0)])
def test_bad_schedule_fields(field, value):
  with pytest.raises(ConfigError, match=f"train.{field}"):
    optim.validate(train_cfg(**{field: value}), 100)


def test_weight_decay_mask_spares_vectors():
  mask = optim.decay_mask({"kernel": np.zeros((2, 2)), "scale": np.zeros(2)})
  assert mask == {"kernel": True, "scale": False}
