"""Synthetic tasks for the emergence study, and BIG-bench JSON task files in and out.

Three parts:
- The BIG-bench JSON task format (Srivastava et al. 2022, "Beyond the Imitation Game"): `Task`
  and `Example`, `load` (any task file, validated), `dump`, and `prompt`, the string a model sees,
  built as BIG-bench's JSON tasks build it (google/BIG-bench, bigbench/api/json_task.py:
  `default_format_fn`, `make_nshot_dataset` and the defaults read in `JsonTask`).
- Generators (`family(name)`): k-digit addition in plain and reversed digit order with balanced
  carries, the same problems in BIG-bench's own "What is A plus B?" form, 2-digit multiplication,
  word unscrambling, a multiple-choice addition task for calibration, and multitask sparse parity
  (Michaud et al. 2023). Every problem has a canonical key; a hash of (seed, key) holds a fraction
  of the problems out of training for evaluation (`heldout`), so no evaluation problem is ever a
  training problem, in any surface form.
- `TaskMixture`: step-indexed training rows (byte tokens) mixing task examples with text, each row
  a pure function of (seed, row index), so a resumed run sees the same batches.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Callable, Protocol, Sequence

import numpy as np

from research import fileio
from research.errors import UserError

# BIG-bench's defaults for a JSON task's optional formatting fields, as read by JsonTask in
# google/BIG-bench bigbench/api/json_task.py (the same defaults in lm-evaluation-harness's and
# HF datasets' ports of it). `output_regex` falls back to DEFAULT_OUTPUT_REGEX only when neither
# it nor `stop_string` is given.
DEFAULT_FORMAT = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
    "few_shot_example_separator": "\n",
    "stop_string": None,
    "output_regex": None,
}
DEFAULT_OUTPUT_REGEX = r"[^\.\?\!\;\n]+"
CHOICE_SEED = 42  # choices are shown in np.random.RandomState(42).permutation(sorted(choices))
LINE_END = "\n"  # written after every training example
_TARGET_HELP = "needs 'target' (a string or list of strings) or 'target_scores' (choice -> score)"
_KNOWN_FIELDS = {"name", "description", "keywords", "metrics", "preferred_score", "examples",
                 *DEFAULT_FORMAT}


@dataclasses.dataclass(frozen=True)
class Example:
  """One BIG-bench example: input and target(s) and/or target_scores (multiple choice).

  `targets` holds every acceptable answer (BIG-bench allows a list); `target` is the first, the
  canonical one. Give either. `key` is the canonical problem id used for hold-out (the same for
  every surface form of a problem, e.g. "add:3:161:390"); `group` names a subtask ("t03").
  """

  input: str
  target: str | None = None
  target_scores: dict[str, float] | None = None
  key: str = ""
  group: str = ""
  targets: tuple[str, ...] = ()

  def __post_init__(self):
    targets = tuple(self.targets)
    if not targets and self.target is not None:
      targets = (self.target,)
    if targets and self.target is not None and targets[0] != self.target:
      raise ValueError(f"Example: target {self.target!r} is not targets[0] {targets[0]!r}")
    object.__setattr__(self, "targets", targets)
    object.__setattr__(self, "target", targets[0] if targets else None)
    if self.target_scores is not None:
      object.__setattr__(self, "target_scores",
                         {str(c): float(s) for c, s in self.target_scores.items()})


@dataclasses.dataclass(frozen=True)
class Task:
  """A BIG-bench JSON task: examples, metrics (BIG-bench names) and prompt formatting."""

  name: str
  examples: tuple[Example, ...]
  metrics: tuple[str, ...] = ("exact_str_match",)
  preferred_score: str = "exact_str_match"
  description: str = ""
  keywords: tuple[str, ...] = ()
  task_prefix: str = DEFAULT_FORMAT["task_prefix"]
  example_input_prefix: str = DEFAULT_FORMAT["example_input_prefix"]
  example_output_prefix: str = DEFAULT_FORMAT["example_output_prefix"]
  choice_prefix: str = DEFAULT_FORMAT["choice_prefix"]
  append_choices_to_input: bool = DEFAULT_FORMAT["append_choices_to_input"]
  few_shot_example_separator: str = DEFAULT_FORMAT["few_shot_example_separator"]
  stop_string: str | None = None
  output_regex: str | None = None
  extra: dict = dataclasses.field(default_factory=dict)  # other top-level fields (canary, ...)


# ---------------------------------------------------------------------------------------------
# Prompts, as BIG-bench builds them for JSON tasks (bigbench/api/json_task.py): an example is
# example_input_prefix + input [+ choice_prefix + choice ... ] + example_output_prefix; with
# shots, the shots (each formatted alike and followed by its answer) and the query are joined by
# few_shot_example_separator; task_prefix goes once in front of everything.

def answer(example: Example) -> str:
  """The canonical answer: the first target, else the first choice with the highest score."""
  if example.target is not None:
    return example.target
  best = max(example.target_scores.values())
  return next(c for c, s in example.target_scores.items() if s == best)


def shown_choices(example: Example) -> list[str]:
  """The choices in the order the prompt shows them.

  BIG-bench permutes sorted(choices) with a numpy RandomState; its JsonTask draws the
  permutations of successive examples from one generator, so an example's order there depends on
  its position in the file. Here each example is permuted by RandomState(CHOICE_SEED), as
  lm-evaluation-harness's port of BIG-bench does, so the order depends on the example alone.
  """
  choices = sorted(example.target_scores or {})
  return [str(c) for c in np.random.RandomState(CHOICE_SEED).permutation(choices)]


def _format(task: Task, example: Example, choices: bool | None) -> str:
  text = task.example_input_prefix + example.input
  if choices is None:
    choices = task.append_choices_to_input
  if choices and example.target_scores:
    text += "".join(task.choice_prefix + c for c in shown_choices(example))
  return text + task.example_output_prefix


def prompt(task: Task, example: Example, shots: Sequence[Example] = (),
           choices: bool | None = None) -> str:
  """The string the model sees for `example`, zero-shot or after the given `shots`.

  `choices` overrides the task's append_choices_to_input (None: the task's own). BIG-bench uses
  one prompt for generative and multiple-choice scoring, so a file with target_scores and the
  default append_choices_to_input (BIG-bench's arithmetic files) shows its choices, the answer
  among them, even to exact_str_match; pass choices=False for the bare question. A shot is
  followed by its canonical answer (BIG-bench draws one of several targets at random).
  """
  parts = [_format(task, s, choices) + answer(s) for s in shots]
  return task.task_prefix + task.few_shot_example_separator.join(
      parts + [_format(task, example, choices)])


def postprocess(task: Task, text: str) -> str:
  """A generated continuation as BIG-bench scores it: cut after the stop string (which is kept,
  as BIG-bench keeps it), then the first match of the output regex ('' when none)."""
  regex = task.output_regex
  if regex is None and task.stop_string is None:
    regex = DEFAULT_OUTPUT_REGEX
  if task.stop_string:
    index = text.find(task.stop_string)
    if index > 0:
      text = text[:index + len(task.stop_string)]
  if regex:
    text = next(iter(re.findall(regex, text)), "")
  return text


# ---------------------------------------------------------------------------------------------
# Files.

def load(path: str) -> Task:
  """Reads a BIG-bench JSON task file; UserError names the file and the field on bad input."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except OSError as e:
    raise UserError(f"{path}: cannot read the task file ({e.strerror})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not a JSON file ({e})") from None
  return from_json(data, path)


def from_json(data, path: str = "<task>") -> Task:
  """A Task from the parsed JSON of a task file; `path` names it in errors."""
  if not isinstance(data, dict):
    raise UserError(f"{path}: needs a JSON object with 'examples'; got {type(data).__name__}")
  if "examples" not in data:
    subtasks = _subtasks(path)
    if subtasks:
      more = ", ..." if len(subtasks) > 3 else ""
      raise UserError(f"{path}: no 'examples': a parent task; its subtasks are in the folders "
                      f"beside it ({', '.join(subtasks[:3])}{more})")
    raise UserError(f"{path}: needs 'examples' (a list of objects with 'input' and 'target' or "
                    "'target_scores')")
  raw = data["examples"]
  if not isinstance(raw, list) or not raw:
    raise UserError(f"{path}: examples: needs a non-empty list of examples")
  examples = tuple(_example(e, f"{path}: examples[{i}]") for i, e in enumerate(raw))
  fields = {}
  for field, default in DEFAULT_FORMAT.items():
    value = data.get(field, default)
    kind = bool if field == "append_choices_to_input" else str
    if not (isinstance(value, kind) or (value is None and default is None)):
      raise UserError(f"{path}: {field}: needs a {'boolean' if kind is bool else 'string'}; "
                      f"got {value!r}")
    fields[field] = value
  metrics = data.get("metrics")
  if metrics is None:  # infer from the examples, as BIG-bench's two kinds of scoring
    metrics = (["exact_str_match"] if any(e.targets for e in examples) else []) + (
        ["multiple_choice_grade"] if any(e.target_scores for e in examples) else [])
  if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
    raise UserError(f"{path}: metrics: needs a non-empty list of metric names such as "
                    f"'exact_str_match'; got {metrics!r}")
  preferred = data.get("preferred_score", metrics[0])
  if not isinstance(preferred, str):
    raise UserError(f"{path}: preferred_score: needs a metric name; got {preferred!r}")
  keywords = data.get("keywords", [])
  if not (isinstance(keywords, list) and all(isinstance(k, str) for k in keywords)):
    raise UserError(f"{path}: keywords: needs a list of strings; got {keywords!r}")
  for field in ("name", "description"):
    if not isinstance(data.get(field, ""), str):
      raise UserError(f"{path}: {field}: needs a string; got {data[field]!r}")
  name = data.get("name") or os.path.basename(os.path.dirname(os.path.abspath(path)))
  extra = {k: v for k, v in data.items() if k not in _KNOWN_FIELDS}
  return Task(name=name, examples=examples, metrics=tuple(metrics), preferred_score=preferred,
              description=data.get("description", ""), keywords=tuple(keywords), extra=extra,
              **fields)


def _subtasks(path: str) -> list[str]:
  folder = os.path.dirname(os.path.abspath(path))
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return []
  return [f"{n}/task.json" for n in names if os.path.isfile(os.path.join(folder, n, "task.json"))]


def _example(raw, where: str) -> Example:
  if not isinstance(raw, dict):
    raise UserError(f"{where}: needs an object with 'input' and 'target' or 'target_scores'")
  if not isinstance(raw.get("input"), str):
    raise UserError(f"{where}: needs 'input' (a string)")
  target, scores = raw.get("target"), raw.get("target_scores")
  if target is None and scores is None:
    raise UserError(f"{where}: {_TARGET_HELP}")
  if isinstance(target, str):
    targets = (target,)
  elif target is None:
    targets = ()
  elif isinstance(target, list) and target and all(isinstance(t, str) for t in target):
    targets = tuple(target)
  else:
    raise UserError(f"{where}: target: {_TARGET_HELP}; got {target!r}")
  if scores is not None:
    if not isinstance(scores, dict) or not scores:
      raise UserError(f"{where}: target_scores: needs an object of choice -> score; got "
                      f"{scores!r}")
    for choice, score in scores.items():
      if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise UserError(f"{where}: target_scores[{choice!r}]: needs a number; got {score!r}")
  for field in ("key", "group"):
    if not isinstance(raw.get(field, ""), str):
      raise UserError(f"{where}: {field}: needs a string; got {raw[field]!r}")
  return Example(raw["input"], targets=targets, target_scores=scores,
                 key=raw.get("key", ""), group=raw.get("group", ""))


def to_json(task: Task) -> dict:
  """The task as BIG-bench JSON: formatting fields only where they differ from the defaults."""
  data = dict(task.extra)
  data.update(name=task.name, description=task.description, metrics=list(task.metrics),
              preferred_score=task.preferred_score)
  if task.keywords:
    data["keywords"] = list(task.keywords)
  for field, default in DEFAULT_FORMAT.items():
    if getattr(task, field) != default:
      data[field] = getattr(task, field)
  data["examples"] = [_example_json(e) for e in task.examples]
  return data


def _example_json(e: Example) -> dict:
  out = {"input": e.input}
  if e.targets:
    out["target"] = e.targets[0] if len(e.targets) == 1 else list(e.targets)
  if e.target_scores is not None:
    out["target_scores"] = dict(e.target_scores)
  out.update({f: getattr(e, f) for f in ("key", "group") if getattr(e, f)})
  return out


def dump(task: Task, path: str) -> None:
  """Writes `task` as a BIG-bench JSON task file (atomically); `load` reads it back equal."""
  fileio.atomic_write_json(path, to_json(task))


class Tokenizer(Protocol):
  vocab_size: int

  def encode(self, text: str) -> Sequence[int]: ...
  def decode(self, ids) -> str: ...


def check_encodable(task: Task, tokenizer: Tokenizer) -> None:
  """UserError naming the task and example unless every prompt and answer round-trips through
  the tokenizer with ids below its vocab_size."""
  vocab = getattr(tokenizer, "vocab_size", None)
  for i, e in enumerate(task.examples):
    texts = [("prompt", prompt(task, e))] + [("target", t) for t in e.targets] + [
        ("choice", c) for c in (e.target_scores or {})]
    for what, s in texts:
      ids = np.asarray(tokenizer.encode(s), dtype=np.int64).reshape(-1)
      bad = ids[(ids < 0) | (ids >= vocab)] if vocab is not None else ids[ids < 0]
      if bad.size:
        raise UserError(f"task {task.name!r}: examples[{i}]: {what} {s!r} encodes to id "
                        f"{int(bad[0])}, outside the vocabulary of {vocab} tokens")
      if tokenizer.decode(ids) != s:
        raise UserError(f"task {task.name!r}: examples[{i}]: {what} {s!r} does not survive the "
                        f"tokenizer (decodes to {tokenizer.decode(ids)!r})")


def bigbench_keys(task: Task) -> set[str]:
  """The canonical keys ("add:K:A:B") of a BIG-bench addition task's problems ("What is A plus
  B?"), so that training can exclude them."""
  keys = set()
  for i, e in enumerate(task.examples):
    m = re.fullmatch(r"What is (\d+) plus (\d+)\?", e.input.strip())
    if not m:
      raise UserError(f"task {task.name!r}: examples[{i}]: input {e.input!r} is not an addition "
                      "problem 'What is A plus B?'")
    a, b = m.group(1), m.group(2)
    keys.add(f"add:{max(len(a), len(b))}:{int(a)}:{int(b)}")
  return keys


# ---------------------------------------------------------------------------------------------
# Hold-out.

def heldout(key: str, seed: int, fraction: float) -> bool:
  """True when problem `key` is held out for evaluation: the first 8 bytes of
  sha256("seed:key") as a fraction of 2^64 fall below `fraction`."""
  digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
  return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


# ---------------------------------------------------------------------------------------------
# Families of generated problems.

_COMPACT = dict(task_prefix="", example_input_prefix="", example_output_prefix="",
                few_shot_example_separator=LINE_END, stop_string=LINE_END)
_QA = dict(DEFAULT_FORMAT, stop_string=LINE_END, output_regex=r"[-+]?\d+")
_ENUMERATE_MAX = 10_000  # problem spaces up to this size are enumerated; larger ones rejected
_EVAL_DOMAIN, _ROW_DOMAIN, _VAL_DOMAIN, _BATCH_DOMAIN = 11, 12, 13, 14  # RNG seed domains


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
  """A generator of problems of one kind, with a hold-out and an exclusion set.

  `draw(rng, n)` gives n candidate examples from the training distribution, held out or not;
  `space()` (small problem spaces) gives every problem in buckets sampled with equal probability
  (carry counts for addition), None for spaces sampled by rejection; `realize(rng, problem)`
  (optional) turns a problem of the space into an example (unscrambling: scrambles the word).
  `sample` never returns a held-out or excluded problem.
  """

  name: str
  description: str
  draw: Callable[[np.random.Generator, int], list[Example]] = dataclasses.field(repr=False)
  space: Callable[[], list[list[Example]]] | None = dataclasses.field(repr=False)
  fmt: dict = dataclasses.field(repr=False)
  metrics: tuple[str, ...] = ("exact_str_match",)
  holdout_seed: int = 0
  holdout_fraction: float = 0.1
  exclude: frozenset = frozenset()
  eval_draw: Callable[[np.random.Generator, int], list[Example]] | None = dataclasses.field(
      default=None, repr=False)
  realize: Callable[[np.random.Generator, Example], Example] | None = dataclasses.field(
      default=None, repr=False)
  _buckets: list = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if self.space is not None:
      buckets = [[e for e in b if self.allowed(e.key)] for b in self.space()]
      buckets = [b for b in buckets if b]
      if not buckets:
        raise UserError(f"task family {self.name!r}: nothing left to train on: every problem is "
                        f"held out (fraction {self.holdout_fraction}) or excluded "
                        f"({len(self.exclude)} keys)")
      object.__setattr__(self, "_buckets", buckets)
    elif not self.samples(np.random.default_rng(0), 1, tries=64):
      raise UserError(f"task family {self.name!r}: nothing left to train on: no allowed problem "
                      f"in {64 * 64} draws (hold-out fraction {self.holdout_fraction}, "
                      f"{len(self.exclude)} excluded keys)")

  def is_heldout(self, key: str) -> bool:
    return heldout(key, self.holdout_seed, self.holdout_fraction)

  def allowed(self, key: str) -> bool:
    """Whether training may use problem `key`."""
    return key not in self.exclude and not self.is_heldout(key)

  def sample(self, rng: np.random.Generator) -> Example:
    """One training example (never held out, never excluded)."""
    return self.samples(rng, 1)[0]

  def samples(self, rng: np.random.Generator, n: int, tries: int | None = None) -> list[Example]:
    """n training examples; with `tries`, at most that many rounds of rejection (may be short)."""
    if self._buckets is not None:
      b = rng.integers(len(self._buckets), size=n)
      u = rng.random(n)
      out = [self._buckets[i][int(x * len(self._buckets[i]))] for i, x in zip(b, u)]
      return [self.realize(rng, e) for e in out] if self.realize else out
    out, rounds = [], 0
    while len(out) < n and (tries is None or rounds < tries):
      need = n - len(out)
      out += [e for e in self.draw(rng, need + int(need * self.holdout_fraction) + 1)
              if self.allowed(e.key)]
      rounds += 1
    return out[:n]

  def render(self, example: Example) -> str:
    """The training text of an example: its zero-shot prompt, the answer and LINE_END."""
    return (self.fmt["task_prefix"] + self.fmt["example_input_prefix"] + example.input +
            self.fmt["example_output_prefix"] + answer(example) + LINE_END)

  def task(self, examples: Sequence[Example]) -> Task:
    """A BIG-bench Task of `examples` with this family's formatting and metrics."""
    preferred = "multiple_choice_grade" if "multiple_choice_grade" in self.metrics else (
        self.metrics[0])
    return Task(name=self.name, examples=tuple(examples), metrics=self.metrics,
                preferred_score=preferred, description=self.description, **self.fmt)


def eval_task(fam: Family, n: int) -> Task:
  """n distinct held-out problems of `fam` (all of them when fewer exist), as a BIG-bench Task.

  Deterministic given the family's hold-out seed; drawn from the family's own distribution
  (balanced carries; parity subtasks uniformly, so every subtask is measured).
  """
  if n < 1:
    raise UserError(f"eval_task {fam.name!r}: n={n}; allowed: n >= 1")
  if fam.holdout_fraction <= 0:
    raise UserError(f"eval_task {fam.name!r}: holdout_fraction is 0, nothing is held out; "
                    "allowed: a family with holdout_fraction > 0")
  rng = np.random.default_rng([fam.holdout_seed, _EVAL_DOMAIN, _name_id(fam.name)])
  if fam.space is not None:
    pool = [e for b in fam.space() for e in b if fam.is_heldout(e.key)]
    pool = [pool[i] for i in rng.permutation(len(pool))[:n]]
    return fam.task([fam.realize(rng, e) for e in pool] if fam.realize else pool)
  draw = fam.eval_draw or fam.draw
  chosen, keys = [], set()
  for _ in range(1000):
    need = n - len(chosen)
    if need <= 0:
      break
    for e in draw(rng, min(50_000, int(1.5 * need / fam.holdout_fraction) + 64)):
      if e.key not in keys and fam.is_heldout(e.key):
        keys.add(e.key)
        chosen.append(e)
  return fam.task(chosen[:n])


def _name_id(name: str) -> int:
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


# Addition --------------------------------------------------------------------------------------

def _pair_table(lo: int) -> tuple[np.ndarray, np.ndarray]:
  """Digit pairs (a, b), both in lo..9, by (carry in, carry out): table [2, 2, 100, 2] (padded)
  and counts [2, 2]."""
  a, b = np.meshgrid(np.arange(lo, 10), np.arange(lo, 10), indexing="ij")
  a, b = a.ravel(), b.ravel()
  table, counts = np.zeros((2, 2, 100, 2), np.int64), np.zeros((2, 2), np.int64)
  for cin in (0, 1):
    for cout in (0, 1):
      pairs = np.stack([a, b], 1)[(a + b + cin >= 10) == bool(cout)]
      table[cin, cout, :len(pairs)], counts[cin, cout] = pairs, len(pairs)
  return table, counts


def _mask_table(k: int) -> tuple[np.ndarray, np.ndarray]:
  """The 2^k carry patterns (bit j: column j carries) by number of carries: [k + 1, C] padded,
  and counts [k + 1]."""
  masks = np.arange(2**k)
  ones = np.array([bin(m).count("1") for m in masks])
  table = np.zeros((k + 1, max(math.comb(k, c) for c in range(k + 1))), np.int64)
  counts = np.array([np.sum(ones == c) for c in range(k + 1)])
  for c in range(k + 1):
    table[c, :counts[c]] = masks[ones == c]
  return table, counts


_PAIRS = {lo: _pair_table(lo) for lo in (0, 1)}
_MASKS = {k: _mask_table(k) for k in range(1, 11)}


def balanced_operands(rng: np.random.Generator, n: int, k: int,
                      leading: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """n pairs of k-digit operands whose number of carrying columns is uniform over 0..k.

  Draws the carry count c, then which c columns carry (uniformly), then each column's digits
  (units first) uniformly among the pairs that give that column's carry from the carry coming
  in. `leading`: the top digits are 1..9 (no zero padding), BIG-bench's k-digit operands.
  """
  masks, mask_counts = _MASKS[k]
  u = rng.random((n, k + 1))
  c = rng.integers(0, k + 1, size=n)
  pattern = masks[c, (u[:, k] * mask_counts[c]).astype(np.int64)]
  a, b = np.zeros(n, np.int64), np.zeros(n, np.int64)
  cin = np.zeros(n, np.int64)
  for j in range(k):
    table, counts = _PAIRS[1 if (leading and j == k - 1 and k > 1) else 0]
    cout = (pattern >> j) & 1
    pick = table[cin, cout, (u[:, j] * counts[cin, cout]).astype(np.int64)]
    a += pick[:, 0] * 10**j
    b += pick[:, 1] * 10**j
    cin = cout
  return a, b


def carry_count(a, b) -> np.ndarray:
  """The number of columns of a + b that produce a carry."""
  a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
  count, carry = np.zeros(a.shape, np.int64), np.zeros(a.shape, np.int64)
  while np.any((a > 0) | (b > 0) | (carry > 0)):
    carry = ((a % 10 + b % 10 + carry) >= 10).astype(np.int64)
    count += carry
    a, b = a // 10, b // 10
  return count


def _addition(k: int, form: str) -> dict:
  leading = form == "qa" and k > 1

  def make(a, b, rng=None) -> list[Example]:
    s = a + b
    if form == "qa":
      return [Example(f"What is {x} plus {y}?", str(z), key=f"add:{k}:{x}:{y}")
              for x, y, z in zip(a.tolist(), b.tolist(), s.tolist())]
    inputs = [f"{x:0{k}d}+{y:0{k}d}=" for x, y in zip(a.tolist(), b.tolist())]
    keys = [f"add:{k}:{x}:{y}" for x, y in zip(a.tolist(), b.tolist())]
    answers = [f"{z:0{k + 1}d}" for z in s.tolist()]
    if form == "reversed":
      answers = [t[::-1] for t in answers]
    if form != "mc":
      return [Example(i, t, key=key) for i, t, key in zip(inputs, answers, keys)]
    near = _near_misses(rng, s, 2 * (10**k - 1))
    return [Example(i, t, key=key, target_scores={f"{c:0{k + 1}d}": float(c == z)
                                                  for c in sorted([z, *m])})
            for i, t, key, z, m in zip(inputs, answers, keys, s.tolist(), near.tolist())]

  def draw(rng, n):
    return make(*balanced_operands(rng, n, k, leading), rng)

  lo = 10**(k - 1) if leading else 0

  def space():  # every problem, bucketed by carry count
    a, b = np.meshgrid(np.arange(lo, 10**k), np.arange(lo, 10**k), indexing="ij")
    a, b = a.ravel(), b.ravel()
    c = carry_count(a, b)
    return [make(a[c == i], b[c == i]) for i in range(k + 1)]
  fmt = _QA if form == "qa" else dict(_COMPACT, output_regex=r"\d+")
  if form == "mc":
    fmt = dict(fmt, append_choices_to_input=False)
  what = {"plain": "answer zero-padded to k+1 digits",
          "reversed": "answer zero-padded to k+1 digits, units digit first",
          "qa": "BIG-bench's arithmetic form 'What is A plus B?'",
          "mc": "multiple choice: the answer and 3 near misses (+-10^j)"}[form]
  small = (10**k - lo)**2 <= _ENUMERATE_MAX and form != "mc"
  return dict(draw=draw, space=space if small else None, fmt=fmt,
              description=f"{k}-digit addition with balanced carries; {what}.")


def _near_misses(rng, s: np.ndarray, top: int) -> np.ndarray:
  """[n, 3] distinct numbers answer +- 10^j (j in 0..3) within 0..top, chosen at random."""
  offsets = np.array([sign * 10**j for j in range(4) for sign in (1, -1)])
  cand = s[:, None] + offsets[None, :]
  keys = np.where((cand >= 0) & (cand <= top), rng.random(cand.shape), np.inf)
  return np.take_along_axis(cand, np.argsort(keys, axis=1)[:, :3], axis=1)


# Multiplication, unscrambling, sparse parity ----------------------------------------------------

def _multiplication() -> dict:
  a, b = np.meshgrid(np.arange(10, 100), np.arange(10, 100), indexing="ij")
  problems = [Example(f"{x}*{y}=", f"{x * y:04d}", key=f"mul:2:{x}:{y}")
              for x, y in zip(a.ravel().tolist(), b.ravel().tolist())]

  def draw(rng, n):
    return [problems[i] for i in rng.integers(len(problems), size=n)]
  return dict(draw=draw, space=lambda: [problems], fmt=dict(_COMPACT, output_regex=r"\d+"),
              description="2-digit by 2-digit multiplication, the product zero-padded to 4 "
              "digits (a control).")


def _unscramble(words: Sequence[str] = ()) -> dict:
  words = tuple(words)
  if not words:
    raise UserError("task family 'unscramble': words: needs a non-empty lexicon (see lexicon())")
  for w in words:
    if not (isinstance(w, str) and w.isascii() and w.isalpha() and w.islower() and len(set(w)) > 1):
      raise UserError(f"task family 'unscramble': words: {w!r}: allowed: lowercase ASCII words "
                      "of at least two distinct letters")

  def scramble(rng, word):
    letters = np.array(list(word))
    while True:
      s = "".join(letters[rng.permutation(len(word))])
      if s != word:
        return s

  def realize(rng, problem):
    return Example(f"unscramble {scramble(rng, problem.target)}=", problem.target,
                   key=problem.key)

  def draw(rng, n):
    return [realize(rng, words_[i]) for i in rng.integers(len(words_), size=n)]

  words_ = [Example("", w, key=f"unscramble:{w}") for w in words]  # the key is the word
  return dict(draw=draw, space=lambda: [words_], realize=realize,
              fmt=dict(_COMPACT, output_regex=r"[a-z]+"),
              description="Word unscrambling: a random permutation of a word's letters (never "
              "the word itself).")


def _parity(n_tasks: int = 16, n_bits: int = 16, k: int = 3, alpha: float = 0.4,
            subset_seed: int = 0) -> dict:
  """Multitask sparse parity (Michaud et al. 2023, "The Quantization Model of Neural Scaling",
  sec. 3): subtask i (0-based) asks for the parity of a fixed k-subset of the n_bits data bits and
  is drawn with probability proportional to (i+1)^-(alpha+1); the paper uses 500 subtasks, 100
  bits, k=3 and alpha=0.4. A control prefix "pNN" names the subtask (the paper's one-hot bits)."""
  if not (n_tasks >= 1 and 1 <= k <= n_bits and math.comb(n_bits, k) >= n_tasks and alpha >= 0):
    raise UserError(f"task family 'parity': n_tasks={n_tasks}, n_bits={n_bits}, k={k}, "
                    f"alpha={alpha}: allowed: 1 <= k <= n_bits, alpha >= 0 and at least n_tasks "
                    f"distinct k-subsets (C(n_bits, k) >= n_tasks)")
  rng = np.random.default_rng([subset_seed, 7])
  subsets = []
  while len(subsets) < n_tasks:
    s = tuple(sorted(rng.choice(n_bits, k, replace=False).tolist()))
    if s not in subsets:
      subsets.append(s)
  subsets = np.array(subsets)
  probs = np.arange(1, n_tasks + 1, dtype=np.float64)**-(alpha + 1)
  probs /= probs.sum()
  width = max(2, len(str(n_tasks - 1)))

  def make(t, bits):
    y = bits[np.arange(len(t))[:, None], subsets[t]].sum(1) % 2
    raw = (bits + 48).astype(np.uint8).tobytes().decode()
    return [Example(f"p{i:0{width}d} {raw[j * n_bits:(j + 1) * n_bits]}=", str(v),
                    key=f"parity:{i}:{raw[j * n_bits:(j + 1) * n_bits]}", group=f"t{i:0{width}d}")
            for j, (i, v) in enumerate(zip(t.tolist(), y.tolist()))]

  def draw(rng, n):
    return make(rng.choice(n_tasks, size=n, p=probs), rng.integers(0, 2, size=(n, n_bits)))

  def eval_draw(rng, n):
    return make(np.arange(n) % n_tasks, rng.integers(0, 2, size=(n, n_bits)))
  return dict(draw=draw, space=None, eval_draw=eval_draw, fmt=dict(_COMPACT, output_regex="[01]"),
              description=f"Multitask sparse parity: {n_tasks} subtasks, {n_bits} bits, parity "
              f"of {k} of them, subtask i drawn with probability ~ (i+1)^-{alpha + 1:g}.")


def _families() -> dict[str, Callable]:
  out = {}
  for k in range(1, 6):
    for suffix, form in (("", "plain"), ("_reversed", "reversed"), ("_qa", "qa")):
      out[f"add{k}{suffix}"] = (lambda k=k, form=form: _addition(k, form))
  out["add3_mc"] = lambda: _addition(3, "mc")
  out["mul2"] = _multiplication
  out["unscramble"] = _unscramble
  out["parity"] = _parity
  return out


FAMILIES = _families()  # name -> builder(**params) of the Family fields (see Family)


def family(name: str, *, holdout_seed: int = 0, holdout_fraction: float = 0.1,
           exclude=(), **params) -> Family:
  """The task family `name` (a key of FAMILIES) with its parameters.

  `holdout_fraction` of the problems (by hash of (holdout_seed, key)) are held out for
  evaluation; `exclude` are keys never trained on (e.g. BIG-bench's own problems). Parameters:
  unscramble needs words=[...] (see `lexicon`); parity takes n_tasks, n_bits, k, alpha,
  subset_seed.
  """
  if name not in FAMILIES:
    raise UserError(f"task family {name!r}: unknown; allowed: {', '.join(FAMILIES)}")
  if not 0.0 <= holdout_fraction < 1.0:
    raise UserError(f"task family {name!r}: holdout_fraction={holdout_fraction!r}; allowed: a "
                    "fraction in [0, 1)")
  try:
    built = FAMILIES[name](**params)
  except TypeError as e:
    raise UserError(f"task family {name!r}: parameters {sorted(params)}: {e}") from None
  metrics = ("exact_str_match", "multiple_choice_grade") if name.endswith("_mc") else (
      "exact_str_match",)
  return Family(name=name, metrics=metrics, holdout_seed=holdout_seed,
                holdout_fraction=holdout_fraction, exclude=frozenset(exclude), **built)


def lexicon(paths: str | Sequence[str], size: int = 2000, min_count: int = 5) -> tuple[str, ...]:
  """The `size` most frequent lowercase alphabetic words of 4-8 letters in text files or folders
  (at least `min_count` occurrences; ties alphabetical). See `lexicon_from_text`."""
  from research.data import corpus  # pylint: disable=import-outside-toplevel
  paths = [paths] if isinstance(paths, str) else list(paths)
  docs = corpus.read_files("lexicon", ",".join(os.fspath(p) for p in paths))
  return lexicon_from_text(b"\n".join(d for _, d in docs).decode("utf-8", "ignore"), size,
                           min_count)


def lexicon_from_text(text: str, size: int = 2000, min_count: int = 5) -> tuple[str, ...]:
  """Frequent words of `text`: runs of ASCII letters written all in lowercase (so names at the
  start of a sentence are not counted as words), 4-8 letters, not all one letter."""
  counts: dict[str, int] = {}
  for w in re.findall(r"(?<![A-Za-z])[a-z]{4,8}(?![A-Za-z])", text):
    counts[w] = counts.get(w, 0) + 1
  ranked = sorted((w for w, c in counts.items() if c >= min_count and len(set(w)) > 1),
                  key=lambda w: (-counts[w], w))
  return tuple(ranked[:size])


# ---------------------------------------------------------------------------------------------
# Training rows.

class _Rows(Protocol):
  def train_rows(self, seed: int, start: int, count: int, length: int) -> np.ndarray: ...
  def val_rows(self, seed: int, count: int, length: int) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True, eq=False)
class TaskMixture:
  """Rows of byte tokens mixing task examples with text (the CorpusSource protocol).

  Row r is a pure function of (seed, r): with probability `text_fraction` it is row r of the text
  source (its rows come from one call per batch, so with a source whose rows depend on the whole
  call, such as markov.ChainSource, a text row depends on (seed, start, count) as that source's
  own rows do), else training examples of families drawn by `weights`, each rendered as its
  zero-shot prompt + answer + "\\n", packed from the row's start and cut at its end. Validation
  rows come from the text source (the study evaluates tasks separately), or without one from the
  task stream under another seed domain.
  """

  families: tuple[Family, ...]
  weights: tuple[float, ...] = ()
  text: _Rows | None = None
  text_fraction: float = 0.0

  def __post_init__(self):
    families = tuple(self.families)
    weights = tuple(float(w) for w in self.weights) or (1.0,) * len(families)
    if not families or len(weights) != len(families) or min(weights) < 0 or sum(weights) <= 0:
      raise UserError(f"task mixture: weights {list(weights)} for {len(families)} families; "
                      "allowed: one weight >= 0 per family, some > 0")
    if not 0.0 <= self.text_fraction <= 1.0 or (self.text_fraction > 0 and self.text is None):
      raise UserError(f"task mixture: text_fraction={self.text_fraction!r}; allowed: 0..1, "
                      "and > 0 only with a text source")
    object.__setattr__(self, "families", families)
    object.__setattr__(self, "weights", weights)
    rng = np.random.default_rng(0)  # the mean rendered length, to size each row's draws
    lengths = [np.mean([len(f.render(e)) for e in f.samples(rng, 16)]) for f in families]
    object.__setattr__(self, "_mean_length", float(np.dot(lengths, weights) / sum(weights)))

  def text_rows(self, seed: int, start: int, count: int) -> np.ndarray:
    """bool[count]: which of rows start.. are text rows."""
    return np.array([self._rng(seed, r, _ROW_DOMAIN).random() < self.text_fraction
                     for r in range(start, start + count)], dtype=bool)

  def train_rows(self, seed: int, start: int, count: int, length: int) -> np.ndarray:
    """Rows start..start+count-1: a pure function of (seed, start, count), which the step-indexed
    batches of research.data.text always request alike. The task rows of a batch are filled from
    one draw per family (each family's generator is vectorised), which is what keeps a batch of a
    many-family mixture at a few milliseconds."""
    out = np.empty((count, length), np.int32)
    rngs = [self._rng(seed, r, _ROW_DOMAIN) for r in range(start, start + count)]
    is_text = np.array([rng.random() < self.text_fraction for rng in rngs], dtype=bool)
    if is_text.any():  # one call: row i of the text source's rows start.. for text row start + i
      out[is_text] = self.text.train_rows(seed, start, count, length)[is_text]
    task_rows = np.flatnonzero(~is_text)
    if task_rows.size:
      rng = np.random.default_rng([seed, _BATCH_DOMAIN, start, count])
      out[task_rows] = self._task_rows(rng, task_rows.size, length)
    return out

  def _task_rows(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """`count` rows of examples, each row starting at an example and cut at its end."""
    p = np.asarray(self.weights) / sum(self.weights)
    n = int(count * (length / self._mean_length + 2) * 1.25) + 8
    which = rng.choice(len(self.families), size=n, p=p)
    texts = np.empty(n, dtype=object)
    for f in np.unique(which):
      slots = np.flatnonzero(which == f)
      texts[slots] = [self.families[f].render(e)
                      for e in self.families[f].samples(rng, slots.size)]
    out = np.empty((count, length), np.int32)
    position = 0
    for row in range(count):
      parts, size = [], 0
      while size < length:
        if position == n:  # rarely: more short examples than planned
          return np.concatenate([out[:row], self._task_rows(rng, count - row, length)])
        parts.append(texts[position])
        size += len(texts[position])
        position += 1
      out[row] = np.frombuffer("".join(parts).encode("utf-8"), dtype=np.uint8)[:length]
    return out

  def val_rows(self, seed: int, count: int, length: int) -> np.ndarray:
    if self.text is not None:
      return self.text.val_rows(seed, count, length)
    return np.stack([self._task_row(self._rng(seed, r, _VAL_DOMAIN), length)
                     for r in range(count)]).astype(np.int32)

  @staticmethod
  def _rng(seed: int, r: int, domain: int) -> np.random.Generator:
    return np.random.default_rng([seed, domain, r])

  def _task_row(self, rng: np.random.Generator, length: int) -> np.ndarray:
    p = np.asarray(self.weights) / sum(self.weights)
    parts, size = [], 0
    while size < length:  # enough examples of the mean length (from the first ones) to fill it
      mean = sum(map(len, parts)) / len(parts) if parts else self._mean_length
      which = rng.choice(len(self.families), size=int((length - size) / mean) + 1, p=p)
      drawn = {f: iter(self.families[f].samples(rng, int(np.sum(which == f))))
               for f in np.unique(which)}
      for f in which:
        text = self.families[f].render(next(drawn[f]))
        parts.append(text)
        size += len(text)
        if size >= length:
          break
    data = "".join(parts).encode("utf-8")
    return np.frombuffer(data, dtype=np.uint8)[:length]
