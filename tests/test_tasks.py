"""Tasks: BIG-bench JSON in and out, prompts, generators, hold-out, training rows."""

import json
import time

import numpy as np
import pytest

from conftest import require_shared
from research.data import bigbench, task_families, task_mixture
from research.data import text
from research.errors import UserError


def _write(path, obj):
  path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
  return str(path)


# BIG-bench JSON ---------------------------------------------------------------------------------

def test_round_trip(tmp_path):
  examples = [bigbench.Example("1+2=", "03", key="add:1:1:2"),
              bigbench.Example("q", targets=("a", "b")),
              bigbench.Example("m", target_scores={"x": 1, "y": 0.0}, group="t01")]
  task = bigbench.Task("toy", tuple(examples),
                       metrics=("exact_str_match", "multiple_choice_grade"),
                       description="d", keywords=("k",), example_input_prefix="",
                       append_choices_to_input=False, stop_string="\n", extra={"canary": "c"})
  bigbench.dump(task, tmp_path / "t.json")
  assert bigbench.load(tmp_path / "t.json") == task
  for name in ("add3_mc", "add2_qa", "parity"):
    gen = task_families.eval_task(task_families.family(name), 20)
    bigbench.dump(gen, tmp_path / f"{name}.json")
    assert bigbench.load(tmp_path / f"{name}.json") == gen


def test_prompt_defaults_and_few_shot():
  ex = bigbench.Example("What is 1 plus 2?", "3", target_scores={"3": 1, "banana": 0, "7": 0})
  task = bigbench.Task("t", (ex,))
  assert bigbench.prompt(task, ex, choices=False) == "\nQ: What is 1 plus 2?\nA: "
  shown = bigbench.shown_choices(ex)
  assert sorted(shown) == ["3", "7", "banana"]
  assert bigbench.prompt(task, ex) == ("\nQ: What is 1 plus 2?" +
                                       "".join("\n  choice: " + c for c in shown) + "\nA: ")
  shot = bigbench.Example("What is 2 plus 2?", "4")
  assert bigbench.prompt(task, ex, shots=[shot], choices=False) == (
      "\nQ: What is 2 plus 2?\nA: 4\n\nQ: What is 1 plus 2?\nA: ")
  prefixed = bigbench.Task("t", (ex,), task_prefix="Add.\n")
  assert bigbench.prompt(prefixed, ex, [shot], choices=False).startswith("Add.\n\nQ: What is 2")
  assert bigbench.postprocess(task, " 12. more") == " 12"  # BIG-bench's default regex
  assert bigbench.postprocess(bigbench.Task("t", (ex,), stop_string="\n", output_regex=r"\d+"),
                              "0127\n5+5") == "0127"


@pytest.mark.parametrize("content, field", [
    ("{not json", "not a JSON file"),
    ({"name": "x"}, "needs 'examples'"),
    ({"examples": [{"target": "1"}]}, "examples[0]: needs 'input'"),
    ({"examples": [{"input": "a", "target": "1"}, {"input": "b"}]},
     "examples[1]: needs 'target' (a string or list of strings) or 'target_scores'"),
    ({"examples": [{"input": "a", "target": 3}]}, "examples[0]: target:"),
    ({"examples": [{"input": "a", "target_scores": {"x": "high"}}]},
     "examples[0]: target_scores['x']: needs a number"),
    ({"examples": [{"input": "a", "target": "1"}], "example_input_prefix": 3},
     "example_input_prefix: needs a string"),
])
def test_bad_files(tmp_path, content, field):
  path = _write(tmp_path / "task.json", content)
  with pytest.raises(UserError) as e:
    bigbench.load(path)
  assert path in str(e.value) and field in str(e.value) and "\n" not in str(e.value)


def test_parent_task_names_subtasks(tmp_path):
  (tmp_path / "sub_a").mkdir()
  _write(tmp_path / "sub_a" / "task.json", {"examples": [{"input": "a", "target": "b"}]})
  with pytest.raises(UserError, match="a parent task; its subtasks are in the folders beside it "
                     r"\(sub_a/task.json\)"):
    bigbench.load(_write(tmp_path / "task.json", {"name": "parent", "description": "p"}))


def test_every_real_bigbench_file_loads():
  root = require_shared("bigbench")
  files = sorted(root.rglob("task.json"))
  assert len(files) >= 20
  for path in files:
    if path.parent == root / "arithmetic":
      with pytest.raises(UserError, match="parent task"):
        bigbench.load(path)
      continue
    task = bigbench.load(path)
    assert task.examples and task.metrics and "canary" in task.extra
    assert bigbench.prompt(task, task.examples[0]).startswith("\nQ: ")


def test_qa_form_matches_bigbench_prompt():
  real = bigbench.load(require_shared("bigbench", "arithmetic", "3_digit_addition", "task.json"))
  ex = real.examples[0]  # What is 161 plus 390?
  ours = task_families.family("add3_qa")
  mine = bigbench.Example("What is 161 plus 390?", "551", key="add:3:161:390")
  ours_task = task_families.eval_task(ours, 3)
  assert bigbench.prompt(ours_task, mine) == bigbench.prompt(real, ex, choices=False)
  assert ours.render(mine) == bigbench.prompt(real, ex, choices=False) + ex.target + "\n"
  # BIG-bench itself shows the file's choices (append_choices_to_input defaults to true).
  assert "\n  choice: 551" in bigbench.prompt(real, ex)
  assert "add:3:161:390" in bigbench.bigbench_keys(real)
  # Operand ranges: BIG-bench's k-digit operands are 10^(k-1)..10^k-1 (0..9 for k = 1).
  for k in (1, 2, 3):
    keys = bigbench.bigbench_keys(bigbench.load(
        require_shared("bigbench", "arithmetic", f"{k}_digit_addition", "task.json")))
    ops = [int(x) for key in keys for x in key.split(":")[2:]]
    assert min(ops) >= (10**(k - 1) if k > 1 else 0) and max(ops) < 10**k
    draws = task_families.family(f"add{k}_qa").samples(np.random.default_rng(k), 300)
    ops = [int(x) for e in draws for x in e.key.split(":")[2:]]
    assert min(ops) >= (10**(k - 1) if k > 1 else 0) and max(ops) < 10**k


def test_check_encodable():
  task = task_families.eval_task(task_families.family("add2"), 5)
  bigbench.check_encodable(task, text.ByteTokenizer())

  class Digits:  # a tokenizer with only digits and '+', '=' (ids 0..11)
    vocab_size = 12

    def encode(self, s):
      return ["0123456789+=".index(c) if c in "0123456789+=" else 99 for c in s]

    def decode(self, ids):
      return "".join("0123456789+="[i] for i in ids)

  bigbench.check_encodable(task, Digits())
  with pytest.raises(UserError, match=r"task 'add2_qa': examples\[0\]: prompt .* outside"):
    bigbench.check_encodable(task_families.eval_task(task_families.family("add2_qa"), 5), Digits())


# Generators -------------------------------------------------------------------------------------

def test_carries_balanced_and_formats():
  rng = np.random.default_rng(0)
  for k in (2, 3, 5):
    draws = task_families.family(f"add{k}").samples(rng, 4000)
    a = np.array([int(e.key.split(":")[2]) for e in draws])
    b = np.array([int(e.key.split(":")[3]) for e in draws])
    freq = np.bincount(task_families.carry_count(a, b), minlength=k + 1) / len(draws)
    assert np.allclose(freq, 1 / (k + 1), atol=0.03), (k, freq)
    e = draws[0]
    assert e.input == f"{a[0]:0{k}d}+{b[0]:0{k}d}=" and e.target == f"{a[0] + b[0]:0{k + 1}d}"


def test_reversed_is_reversed_plain():
  plain = task_families.family("add3").samples(np.random.default_rng(5), 200)
  rev = task_families.family("add3_reversed").samples(np.random.default_rng(5), 200)
  assert [e.key for e in plain] == [e.key for e in rev]
  assert all(p.target[::-1] == r.target and p.input == r.input for p, r in zip(plain, rev))


def test_mc_mul_unscramble_parity():
  mc = task_families.eval_task(task_families.family("add3_mc"), 50)
  assert mc.preferred_score == "multiple_choice_grade" and not mc.append_choices_to_input
  for e in mc.examples:
    assert len(e.target_scores) == 4 and e.target_scores[e.target] == 1.0
    misses = {abs(int(c) - int(e.target)) for c in e.target_scores if c != e.target}
    assert misses <= {1, 10, 100, 1000} and all(len(c) == 4 for c in e.target_scores)
    assert bigbench.prompt(mc, e) == e.input
  e = task_families.family("mul2").sample(np.random.default_rng(0))
  x, y = map(int, e.input[:-1].split("*"))
  assert 10 <= x <= 99 and e.target == f"{x * y:04d}"
  words = task_families.lexicon_from_text("The plate, a Plate; plates plate house houses house "
                                          "aaaa aaaa to be house", size=10, min_count=2)
  assert words == ("house", "plate")
  fam = task_families.family("unscramble", words=words)
  for e in fam.samples(np.random.default_rng(1), 20):
    scrambled = e.input[len("unscramble "):-1]
    assert sorted(scrambled) == sorted(e.target) and scrambled != e.target
  par = task_families.family("parity")
  draws = par.samples(np.random.default_rng(0), 4000)
  counts = np.bincount([int(e.group[1:]) for e in draws], minlength=16)
  p = np.arange(1, 17.0)**-1.4
  assert np.allclose(counts / 4000, p / p.sum(), atol=0.02)
  for e in draws[:50]:
    assert len(e.input) == len("p03 0110100110010110=") and e.target in "01"


def test_heldout_never_trained_and_exclusion():
  assert task_families.heldout("add:3:1:2", 0, 0.5) == task_families.heldout("add:3:1:2", 0, 0.5)
  frac = np.mean([task_families.heldout(f"k{i}", 3, 0.2) for i in range(5000)])
  assert abs(frac - 0.2) < 0.02
  fam = task_families.family("add1", holdout_fraction=0.3)
  ev = task_families.eval_task(fam, 1000)
  assert 10 < len(ev.examples) < 60 and len({e.key for e in ev.examples}) == len(ev.examples)
  assert ev == task_families.eval_task(task_families.family("add1", holdout_fraction=0.3), 1000)
  trained = {e.key for e in fam.samples(np.random.default_rng(0), 3000)}
  assert trained.isdisjoint({e.key for e in ev.examples})
  with pytest.raises(UserError, match="nothing left to train on"):
    task_families.family("add1", exclude={f"add:1:{a}:{b}" for a in range(10) for b in range(10)})
  with pytest.raises(UserError, match="unknown; allowed: add1"):
    task_families.family("add9")


def test_qa_training_excludes_bigbench_keys():
  real = bigbench.load(require_shared("bigbench", "arithmetic", "2_digit_addition", "task.json"))
  keys = bigbench.bigbench_keys(real)
  fam = task_families.family("add2_qa", exclude=keys)
  drawn = {e.key for e in fam.samples(np.random.default_rng(0), 20000)}
  assert drawn.isdisjoint(keys) and len(drawn) > 4000


# Training rows ----------------------------------------------------------------------------------

def _mixture(text_fraction=0.25):
  fams = [task_families.family(n) for n in ("add1", "add3", "add3_reversed", "add2_qa",
                                            "add3_mc", "mul2", "parity")]
  fams.append(task_families.family("unscramble", words=("plate", "house", "water", "under",
                                                        "light", "great", "right", "place")))
  return task_mixture.TaskMixture(tuple(fams), text=text.load("synthetic:").source,
                                  text_fraction=text_fraction)


def test_rows_never_show_heldout_problems():
  mix = _mixture()
  rows = mix.train_rows(0, 0, 2000, 129)
  assert rows.dtype == np.int32 and rows.min() >= 0 and rows.max() < 256
  stream = "\n" + "\n".join(bytes(r.astype(np.uint8)).decode() for r in rows)
  seen = 0
  for fam in mix.families:
    for e in task_families.eval_task(fam, 200).examples:
      shown = fam.render(e)
      line = shown if shown.startswith("\n") else "\n" + shown
      assert line not in stream, (fam.name, shown)
      assert ("\n" + bigbench.prompt(fam.task([e]), e).lstrip("\n")) not in stream, (fam.name, e)
  for fam in mix.families:  # while training problems do appear
    e = fam.sample(np.random.default_rng(0))
    seen += fam.render(e).strip("\n") in stream
  assert seen >= 1


def test_rows_deterministic_and_text_fraction():
  mix = _mixture(0.3)
  a = mix.train_rows(7, 100, 16, 65)
  assert np.array_equal(a, mix.train_rows(7, 100, 16, 65))
  assert not np.array_equal(a, mix.train_rows(8, 100, 16, 65))
  task_only = task_mixture.TaskMixture(mix.families)
  whole = task_only.train_rows(3, 0, 40, 65)  # rows are a function of (seed, start, count)
  assert np.array_equal(whole, task_only.train_rows(3, 0, 40, 65))
  assert not np.array_equal(whole[:20], task_only.train_rows(3, 20, 20, 65))
  is_text = mix.text_rows(0, 0, 2000)
  assert abs(is_text.mean() - 0.3) < 0.04
  rows = mix.train_rows(0, 0, 200, 65)
  has_newline = (rows == ord("\n")).any(axis=1)
  assert np.array_equal(~has_newline, mix.text_rows(0, 0, 200))  # text rows: Markov symbols
  val = mix.val_rows(0, 4, 65)
  assert val.shape == (4, 65) and np.array_equal(val, mix.text.val_rows(0, 4, 65))
  assert task_only.val_rows(0, 4, 65).shape == (4, 65)
  start = time.perf_counter()
  for step in range(10):
    mix.train_rows(0, step * 32, 32, 129)
  print(f"\nTaskMixture: {(time.perf_counter() - start) * 100:.2f} ms per batch of 32 x 129")
