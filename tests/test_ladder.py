"""The model ladder: a target non-embedding N to a transformer shape, one rule for every study."""

import math

import pytest

from research.errors import UserError
from research.models import ladder, transformer


@pytest.mark.parametrize("n", [1e5, 1e6, 3e6, 1e7, 8.5e7, 1e9])
def test_rung_reaches_its_target_with_the_rule(n):
  r = ladder.rung(n)
  assert abs(r.n_nonemb / n - 1) <= 0.2
  cfg = transformer.TransformerConfig(**r.model_fields())
  assert transformer.param_counts(cfg).non_embedding == r.n_nonemb  # the exact count
  assert r.d_model % 16 == 0 and r.n_heads == r.d_model // 16 and r.d_ff == 4 * r.d_model
  if n >= 1e6:  # past the smallest depths, d_model / n_layers stays near the aspect ratio
    assert 32 / 1.5 <= r.d_model / r.n_layers <= 32 * 1.5


def test_ladder_grows_in_depth_and_width():
  rungs = ladder.ladder(1e5, 1e8, 7)
  assert len(rungs) == 7
  for a, b in zip(rungs, rungs[1:]):
    assert b.n_layers >= a.n_layers and b.d_model >= a.d_model and b.n_nonemb > a.n_nonemb
  spacing = [math.log(b.n_nonemb / a.n_nonemb) for a, b in zip(rungs, rungs[1:])]
  assert max(spacing) / min(spacing) < 2  # about even in log N


def test_unreachable_targets_are_named():
  with pytest.raises(UserError, match="below the smallest shape"):
    ladder.rung(100)
  with pytest.raises(UserError, match="not reachable within 20%"):
    ladder.rung(2e4)  # between 1 x 32 (12k) and 1 x 48 (28k) at head size 16
  assert ladder.rung(2e4, head_size=8).n_nonemb == pytest.approx(2e4, rel=0.2)
