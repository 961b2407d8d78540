"""N-gram decontamination against evaluation data (GPT-3's 13-gram overlap, Brown et al. 2020).

Evaluation texts come from files named on the command line (`--eval PATH`, repeatable):
- a BIG-bench task file, or a folder holding task.json files (searched recursively): each example's
  input followed by each of its targets is one text, and the file's canary string is one more;
- a .zip of text files (e.g. ../shared/data/text/heldout/nltk_state_union.zip, read as latin-1);
- any other file, or a folder of them: its text.

Texts are lowercased `\\w+` words. A training document is contaminated when it contains any
NGRAM = 13 consecutive words of an evaluation text; an evaluation text shorter than that (a
BIG-bench question and its answer: "what is 161 plus 390 551", 6 words) is matched whole, when it
has at least MIN_WORDS = 4 words. Words are hashed to 64 bits (blake2b) and n-grams by a
polynomial hash modulo 2^64, vectorised in numpy.
"""

import functools
import hashlib
import json
import os
import zipfile

import numpy as np

from research.data import corpus
from research.data.dedup import words
from research.errors import UserError

NGRAM = 13
MIN_WORDS = 4
_BASE = np.uint64(0x9E3779B97F4A7C15)


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
  return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def _ids(text_words: list[str]) -> np.ndarray:
  return np.fromiter((_word_hash(w) for w in text_words), np.uint64, len(text_words))


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
  """Hashes of every n consecutive word ids (uint64[len - n + 1]; empty when shorter)."""
  count = ids.size - n + 1
  if count <= 0:
    return np.zeros(0, np.uint64)
  h = np.zeros(count, np.uint64)
  with np.errstate(over="ignore"):
    for j in range(n):
      h = h * _BASE + ids[j:j + count]
  return h


def eval_texts(path: str) -> list[tuple[str, str]]:
  """(name, text) of every evaluation text under `path` (see the module's docstring)."""
  if os.path.isdir(path):
    files = corpus.folder_files(path)
    tasks = [f for f in files if os.path.basename(f) == "task.json"]
    return [t for f in (tasks or files) for t in eval_texts(f)]
  if not os.path.isfile(path):
    raise UserError(f"--eval {path!r} does not exist; allowed: BIG-bench task files or folders, "
                    ".zip files of text, text files or folders")
  if path.endswith(".json"):
    return _task_texts(path)
  if path.endswith(".zip"):
    with zipfile.ZipFile(path) as z:
      return [(f"{path}:{n}", z.read(n).decode("latin-1")) for n in sorted(z.namelist())
              if not n.endswith("/")]
  with open(path, "rb") as f:
    return [(path, f.read().decode("utf-8", errors="replace"))]


def _task_texts(path: str) -> list[tuple[str, str]]:
  try:
    with open(path, encoding="utf-8") as f:
      task = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"--eval {path!r}: not a readable JSON task file ({e})") from None
  out = [(f"{path}:canary", task["canary"])] if isinstance(task.get("canary"), str) else []
  for i, ex in enumerate(task.get("examples", [])):
    targets = ex.get("target", "")
    targets = [targets] if isinstance(targets, str) else list(targets) or [""]
    out += [(f"{path}:examples[{i}]", f"{ex.get('input', '')} {t}") for t in targets]
  return out


class EvalIndex:
  """The n-grams of evaluation texts; `find(document)` names the first text it overlaps."""

  def __init__(self, texts: list[tuple[str, str]], n: int = NGRAM, min_words: int = MIN_WORDS):
    self.n, self.names, self.texts = n, [], 0
    by_length: dict[int, list[tuple[np.ndarray, int]]] = {}
    for name, text in texts:
      ids = _ids(words(text.encode("utf-8", errors="replace")))
      if ids.size < min_words:
        continue
      length = min(n, ids.size)
      by_length.setdefault(length, []).append((ngram_hashes(ids, length), len(self.names)))
      self.names.append(name)
      self.texts += 1
    self._tables = {}
    for length, parts in by_length.items():
      hashes = np.concatenate([h for h, _ in parts])
      owner = np.concatenate([np.full(h.size, k, np.int64) for h, k in parts])
      order = np.argsort(hashes, kind="stable")
      self._tables[length] = (hashes[order], owner[order])

  def describe(self) -> dict:
    return {"ngram": self.n, "texts": self.texts,
            "ngrams": int(sum(h.size for h, _ in self._tables.values()))}

  def find(self, data: bytes) -> dict | None:
    """None when no n-gram of an evaluation text is in `data`, else {'reason', 'of', 'ngram'}."""
    doc_words = words(data)
    ids = _ids(doc_words)
    for length in sorted(self._tables, reverse=True):
      table, owner = self._tables[length]
      h = ngram_hashes(ids, length)
      pos = np.searchsorted(table, h)
      hit = (pos < table.size) & (table[np.minimum(pos, table.size - 1)] == h)
      if hit.any():
        i = int(np.argmax(hit))
        return {"reason": "contaminated", "of": self.names[owner[pos[i]]],
                "ngram": " ".join(doc_words[i:i + length])}
    return None


def build(paths, n: int = NGRAM) -> EvalIndex | None:
  """The index of every evaluation text under `paths`; None when there are no paths."""
  paths = list(paths)
  if not paths:
    return None
  return EvalIndex([t for p in paths for t in eval_texts(p)], n)
