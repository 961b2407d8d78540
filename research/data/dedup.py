"""Duplicate documents: exact copies, and near-duplicates by MinHash (Lee et al. 2022).

- **Exact**: the same bytes once line ends are LF and leading / trailing whitespace is dropped
  (sha256 of that).
- **Near**: word 5-gram shingles (lowercased `\\w+` words), a 128-permutation MinHash
  (`datasketch`), LSH candidates at the threshold, kept as a near-duplicate when the estimated
  Jaccard similarity of the shingle sets is >= NEAR_THRESHOLD = 0.8 (Lee et al. used 0.8 with
  5-grams and 9,000 permutations; with 128 the estimate's standard error is about 0.035 at
  J = 0.8).

Documents are taken in order; a document that duplicates an earlier kept one is flagged with the
id of the one it copies, so the first copy stays.
"""

import hashlib
import re

NEAR_THRESHOLD = 0.8
SHINGLE_WORDS = 5
NUM_PERM = 128
_WORD = re.compile(r"\w+")


def words(data: bytes) -> list[str]:
  return _WORD.findall(data.decode("utf-8", errors="replace").lower())


def exact_key(data: bytes) -> str:
  return hashlib.sha256(data.replace(b"\r\n", b"\n").strip()).hexdigest()


def minhash(data: bytes, shingle_words: int = SHINGLE_WORDS, num_perm: int = NUM_PERM):
  from datasketch import MinHash  # pylint: disable=import-outside-toplevel
  w = words(data)
  n = max(1, len(w) - shingle_words + 1)
  shingles = {" ".join(w[i:i + shingle_words]).encode() for i in range(n)} if w else {b""}
  m = MinHash(num_perm=num_perm, seed=1)
  m.update_batch(list(shingles))
  return m


class Deduplicator:
  """Flags each document that copies (exactly, or at Jaccard >= threshold) an earlier one."""

  def __init__(self, threshold: float = NEAR_THRESHOLD, near: bool = True):
    from datasketch import MinHashLSH  # pylint: disable=import-outside-toplevel
    if not 0.0 < threshold <= 1.0:
      from research.errors import UserError  # pylint: disable=import-outside-toplevel
      raise UserError(f"near-duplicate threshold {threshold!r}: allowed: a Jaccard similarity "
                      "in (0, 1]")
    self.threshold, self.near = threshold, near
    self._exact: dict[str, str] = {}
    self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM) if near else None
    self._hashes = {}

  def check(self, doc_id: str, data: bytes, *, add: bool = True) -> dict | None:
    """None for a new document (then remembered when `add`), else {'reason', 'of', ...}."""
    key = exact_key(data)
    if key in self._exact:
      return {"reason": "duplicate", "of": self._exact[key]}
    found = None
    if self.near:
      m = minhash(data)
      best = [(m.jaccard(self._hashes[c]), c) for c in self._lsh.query(m)]
      best = max((b for b in best if b[0] >= self.threshold), default=None)
      if best is not None:
        found = {"reason": "near_duplicate", "of": best[1], "jaccard": round(float(best[0]), 4)}
      elif add:
        self._lsh.insert(doc_id, m)
        self._hashes[doc_id] = m
    if found is None and add:
      self._exact[key] = doc_id
    return found


def jaccard(a: bytes, b: bytes, shingle_words: int = SHINGLE_WORDS) -> float:
  """The exact Jaccard similarity of two documents' shingle sets (to check the estimate)."""
  def shingles(data):
    w = words(data)
    return {tuple(w[i:i + shingle_words]) for i in range(max(1, len(w) - shingle_words + 1))}
  sa, sb = shingles(a), shingles(b)
  return len(sa & sb) / max(1, len(sa | sb)) if sa or sb else 1.0
