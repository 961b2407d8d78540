"""Training rows for the emergence study: generated task examples mixed with text.

`TaskMixture`: step-indexed rows of byte tokens mixing the examples of task families
(research/data/task_families.py) with the rows of a text source, each row a pure function of
(seed, row index), so a resumed run sees the same batches.
"""

import dataclasses
from typing import Protocol

import numpy as np

from research.data.task_families import Family
from research.errors import UserError

_ROW_DOMAIN, _VAL_DOMAIN, _BATCH_DOMAIN = 12, 13, 14  # RNG seed domains (eval_task's is 11)


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
