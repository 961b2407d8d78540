"""BIG-bench JSON task files in and out, and the prompts a model sees for them.

The task format of Srivastava et al. 2022 ("Beyond the Imitation Game"): `Task` and `Example`,
`load` (any task file, validated), `dump`, and `prompt`, the string a model sees, built as
BIG-bench's JSON tasks build it (google/BIG-bench, bigbench/api/json_task.py:
`default_format_fn`, `make_nshot_dataset` and the defaults read in `JsonTask`); `postprocess`, a
generated continuation as BIG-bench scores it. The generated families
(research/data/task_families.py) make Tasks of this format too.
"""

import dataclasses
import json
import math
import os
import re
from typing import Protocol, Sequence

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
