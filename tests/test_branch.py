"""WSD cooldown branches: a run started from another run's checkpoint (`loop.init_from`)."""

import os

import pytest

from launch.__main__ import main
from lm_helpers import losses, run_tiny, tiny_args
from research import tracking

CONSTANT = ("train.schedule=constant",)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
  """A constant-rate run of 20 steps that keeps its checkpoint at step 10."""
  workdir = tmp_path_factory.mktemp("branches") / "parent"
  assert run_tiny(workdir, 20, *CONSTANT, "loop.keep_steps=(10,)") == 0
  assert sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == [10, 20]
  return workdir


def test_a_branch_with_the_parents_schedule_continues_it_exactly(parent):
  branch = parent.parent / "same"
  assert run_tiny(branch, 20, *CONSTANT, "loop.init_from=parent@10") == 0
  assert losses(branch) == losses(parent)  # steps 0-9 copied, 10-19 trained again: same bits


def test_a_cooldown_branch_shares_the_parents_losses_up_to_the_branch_step(parent):
  branch = parent.parent / "cooldown"
  assert run_tiny(branch, 16, "train.schedule=wsd", "train.cooldown_fraction=0.25",
                  "train.final_lr_fraction=0.0", "loop.init_from=parent@10") == 0
  mine, theirs = losses(branch), losses(parent)
  assert sorted(mine) == list(range(16))
  assert {s: mine[s] for s in range(11)} == {s: theirs[s] for s in range(11)}  # 10: same state
  rates = {r["step"]: r["lr"] for r in tracking.read_metrics(str(branch / "metrics.jsonl"))}
  assert rates[11] == rates[0 + 10] and rates[15] < 0.5 * rates[10]  # the 1 - sqrt tail
  assert mine[15] != theirs[15]


@pytest.mark.parametrize("override,expected", [
    ("loop.init_from=missing@10", "no run folder at"),
    ("loop.init_from=parent@7", "has no checkpoint at step 7 (it has [10, 20]"),
    ("loop.init_from=parent", "expected PARENT_RUN_FOLDER@STEP"),
])
def test_a_missing_parent_or_step_is_one_line(parent, capsys, override, expected):
  workdir = parent.parent / "bad"
  assert main(["run"] + tiny_args(workdir, 20, *CONSTANT, override)) == 2
  err = capsys.readouterr().err
  assert expected in err and len(err.strip().splitlines()) == 1, err
  assert not workdir.exists()


@pytest.mark.parametrize("extra,expected", [
    (("model.d_ff=32", "train.warmup_steps=4"), "these fields differ: model.d_ff, "
                                                 "train.warmup_steps"),
    (("train.schedule=cosine",), "the learning rate at step 3 is"),
])
def test_a_branch_that_is_not_a_continuation_is_refused(parent, capsys, extra, expected):
  workdir = parent.parent / "other"
  assert main(["run"] + tiny_args(workdir, 20, *CONSTANT, "loop.init_from=parent@10",
                                  *extra)) == 2
  err = capsys.readouterr().err
  assert expected in err, err
  assert not workdir.exists()
