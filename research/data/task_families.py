"""Generated task families for the emergence study, as BIG-bench tasks (research/data/bigbench.py).

`family(name)`: k-digit addition in plain and reversed digit order with balanced carries, the
same problems in BIG-bench's own "What is A plus B?" form, 2-digit multiplication, word
unscrambling, a multiple-choice addition task for calibration, and multitask sparse parity
(Michaud et al. 2023). Every problem has a canonical key; a hash of (seed, key) holds a fraction
of the problems out of training for evaluation (`heldout`, `eval_task`), so no evaluation problem
is ever a training problem, in any surface form.
"""

import dataclasses
import hashlib
import math
import os
import re
from typing import Callable, Sequence

import numpy as np

from research.data.bigbench import DEFAULT_FORMAT, LINE_END, Example, Task, answer
from research.errors import UserError

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
_EVAL_DOMAIN = 11  # RNG seed domain of eval_task (research/data/task_mixture.py uses 12-14)


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
