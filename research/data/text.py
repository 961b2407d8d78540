"""Text data: a byte tokenizer and step-indexed batches from named sources.

Sources are strings (see docs/data.md):
  synthetic[:order=2,symbols=16,alpha=0.1,chain_seed=0]   a generated k-th order Markov language
                                                            with an exact, known entropy rate
  text:PATH[,PATH...]                                       local files, folders and globs
  tfds:NAME[:VERSION][:TRAIN_SPLIT[:VAL_SPLIT]]              a prepared array_record TFDS set
  hf:PATH[:TRAIN_SPLIT[:VAL_SPLIT]]                          a Hugging Face dataset saved to disk
  prepared:DIR                                               shards tokenized once (any tokenizer;
                                                            research/data/prepare.py)

Every batch is a pure function of (source, seed, step, batch_size, seq_len), so a resumed run sees
exactly the batches an uninterrupted run saw. Validation text is held out by document
(research/data/corpus.py).
"""

import copy
import dataclasses
import hashlib
from typing import Protocol

import numpy as np

from research.data import corpus
from research.data import markov
from research.data.tokenizers import ByteTokenizer  # noqa: F401 (its home before tokenizers.py)
from research.errors import UserError

VOCAB_SIZE = 256
DOC_SEPARATOR = 0  # byte written after every document in a packed stream (NUL: absent from text)
SCHEMES = ("'synthetic[:k=v,...]', 'text:PATH[,PATH...]', 'tfds:NAME[:TRAIN_SPLIT[:VAL_SPLIT]]', "
           "'hf:PATH[:TRAIN_SPLIT[:VAL_SPLIT]]' or 'prepared:DIR'")
DOCUMENT_SCHEMES = ("text", "tfds", "hf")  # sources of raw documents (read_documents)


class _Source(Protocol):
  """What a TextData needs from a source: token rows of length seq_len + 1."""

  def train_rows(self, seed: int, start: int, count: int, length: int) -> np.ndarray: ...
  def val_rows(self, seed: int, count: int, length: int) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True, eq=False)
class TextData:
  """A loaded source: step-indexed training batches and fixed validation batches."""

  spec: str
  vocab_size: int
  bytes_per_token: float
  unique_train_tokens: int | None
  entropy_rate_nats: float | None
  seed: int
  source: _Source = dataclasses.field(repr=False)
  info: dict = dataclasses.field(default_factory=dict, repr=False)
  split_seed: int = 0  # picks the held-out text; `seed` only orders the training batches
  token_bytes: np.ndarray | None = dataclasses.field(default=None, repr=False)  # bytes per id

  def train_batch(self, step: int, batch_size: int, seq_len: int,
                  token_budget: int | None = None) -> dict[str, np.ndarray]:
    """The batch for `step`; target tokens past `token_budget` (global index) get weight 0."""
    _check_shape(batch_size, seq_len)
    if step < 0:
      raise UserError(f"training step {step}: allowed: a step >= 0")
    rows = self.source.train_rows(self.seed, step * batch_size, batch_size, seq_len + 1)
    batch = _batch(rows)
    if token_budget is not None:
      if token_budget < 0:
        raise UserError(f"token budget {token_budget}: allowed: None (no limit) or >= 0")
      index = step * batch_size * seq_len + np.arange(batch_size * seq_len)
      batch["weights"] = (index < token_budget).astype(np.float32).reshape(batch_size, seq_len)
    return batch

  def val_batches(self, n_batches: int, batch_size: int,
                  seq_len: int) -> list[dict[str, np.ndarray]]:
    """Fixed validation batches from held-out text (the same on every call)."""
    _check_shape(batch_size, seq_len)
    rows = self.source.val_rows(self.split_seed, n_batches * batch_size, seq_len + 1)
    return [_batch(rows[i * batch_size:(i + 1) * batch_size]) for i in range(n_batches)]

  def batch_bytes_per_token(self, batches: list[dict[str, np.ndarray]]) -> float:
    """UTF-8 bytes per target token of `batches` (weighted): the divisor of bits per byte; the
    source's fixed `bytes_per_token` when it has no per-token table (bytes, synthetic)."""
    if self.token_bytes is None:
      return self.bytes_per_token
    n_bytes = sum(float((self.token_bytes[b["targets"]] * b["weights"]).sum()) for b in batches)
    n_tokens = sum(float(b["weights"].sum()) for b in batches)
    return n_bytes / n_tokens if n_tokens else self.bytes_per_token

  def epochs(self, train_tokens: int) -> float:
    """Passes over the unique training tokens that `train_tokens` makes; 0.0 when unlimited."""
    if not self.unique_train_tokens:
      return 0.0
    return train_tokens / self.unique_train_tokens

  def describe(self) -> dict:
    """A JSON-able summary of the source."""
    return {"source": self.spec, "seed": self.seed, "split_seed": self.split_seed,
            "vocab_size": self.vocab_size,
            "bytes_per_token": self.bytes_per_token,
            "unique_train_tokens": self.unique_train_tokens,
            "entropy_rate_nats": self.entropy_rate_nats, **copy.deepcopy(self.info)}


def _check_shape(batch_size: int, seq_len: int) -> None:
  if batch_size < 1 or seq_len < 1:
    raise UserError(f"batch shape (batch_size={batch_size}, seq_len={seq_len}): "
                    "allowed: both >= 1")


def _batch(rows: np.ndarray) -> dict[str, np.ndarray]:
  rows = rows.astype(np.int32)
  return {"inputs": rows[:, :-1], "targets": rows[:, 1:],
          "weights": np.ones(rows[:, 1:].shape, np.float32)}


def budget_warning(data: TextData, train_tokens: int) -> str | None:
  """A warning naming the epoch count when `train_tokens` exceeds the unique training tokens."""
  if data.unique_train_tokens is None or train_tokens <= data.unique_train_tokens:
    return None
  return (f"token budget D={train_tokens:,} exceeds the {data.unique_train_tokens:,} unique "
          f"training tokens of data source '{data.spec}': {data.epochs(train_tokens):.2f} epochs "
          "(repeated data)")


def load(spec: str, *, seed: int = 0, split_seed: int = 0, val_fraction: float = 0.05,
         tfds_data_dir: str | None = None) -> TextData:
  """Loads a source named by `spec`; raises UserError on bad input.

  `seed` orders the training batches (a run's seed); `split_seed` picks the held-out documents
  and the synthetic language's validation rows, so that runs of different seeds are evaluated
  on the same text (a study fixes it once)."""
  if not isinstance(spec, str):
    raise UserError(f"data source {spec!r}: allowed: a string, one of {SCHEMES}")
  for name, value in (("seed", seed), ("split_seed", split_seed)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise UserError(f"data {name} {value!r}: allowed: an integer >= 0")
  if not 0.0 < val_fraction < 1.0:
    raise UserError(f"data val_fraction {val_fraction!r}: allowed: a fraction in (0, 1)")
  scheme, _, rest = spec.partition(":")
  if scheme == "synthetic":
    chain = markov.from_spec(spec, rest)
    return TextData(spec, VOCAB_SIZE, 1.0, None, chain.entropy_rate, seed,
                    markov.ChainSource(chain), {"synthetic": chain.describe()},
                    split_seed=split_seed)
  if scheme == "prepared" and rest:
    from research.data import prepared  # pylint: disable=import-outside-toplevel
    found = prepared.read(spec, rest, split_seed=split_seed)
    return TextData(spec, found["vocab_size"], found["bytes_per_token"],
                    found["unique_train_tokens"], None, seed,
                    CorpusSource(found["train"], found["val"]), found["info"],
                    split_seed=split_seed, token_bytes=found["token_bytes"])
  train_docs, val_docs = read_documents(spec, tfds_data_dir)
  return from_documents(spec, train_docs, val_docs, seed=seed, split_seed=split_seed,
                        val_fraction=val_fraction)


def read_documents(spec: str, tfds_data_dir: str | None = None
                   ) -> tuple[list[corpus.Document], list[corpus.Document] | None]:
  """(training documents, validation documents or None to hold out by document) of a source of
  raw documents: text:, tfds: or hf:."""
  scheme, _, rest = spec.partition(":")
  if scheme == "text" and rest:
    return corpus.read_files(spec, rest), None
  if scheme == "tfds" and rest:
    from research.data import tfds_text  # pylint: disable=import-outside-toplevel (slow import)
    return tfds_text.read_documents(spec, rest, tfds_data_dir)
  if scheme == "hf" and rest:
    from research.data import hf_text  # pylint: disable=import-outside-toplevel (slow import)
    return hf_text.read_documents(spec, rest)
  raise UserError(f"data source {spec!r}: unknown or incomplete source; allowed: {SCHEMES}")


# ---------------------------------------------------------------------------------------------
# Finite corpora: documents (research.data.corpus) -> packed streams -> shuffled windows.

def pack(docs: list[corpus.Document]) -> np.ndarray:
  """One read-only uint8 stream: each document followed by DOC_SEPARATOR."""
  sep = bytes([DOC_SEPARATOR])
  return np.frombuffer(b"".join(d + sep for _, d in docs), dtype=np.uint8)


def from_documents(spec: str, docs: list[corpus.Document],
                   val_docs: list[corpus.Document] | None = None, *,
                   seed: int = 0, split_seed: int = 0, val_fraction: float = 0.05) -> TextData:
  """A TextData over documents; without `val_docs`, holds out about val_fraction by document,
  chosen by `split_seed`."""
  docs = [d for d in docs if d[1]]
  if not docs:
    raise UserError(f"data source {spec!r}: the corpus is empty (no non-empty document); "
                    "allowed: sources with some text")
  if val_docs is None:
    docs, val_docs = corpus.train_val_split(spec, docs, split_seed, val_fraction)
  val_docs = [d for d in val_docs if d[1]]
  if not val_docs:
    raise UserError(f"data source {spec!r}: the validation text is empty; "
                    "allowed: sources with held-out text")
  source = CorpusSource(pack(docs), pack(val_docs))
  info = {"documents_train": len(docs), "documents_val": len(val_docs),
          "unique_val_tokens": int(source.val.size),
          "val_document_ids": [doc_id for doc_id, _ in val_docs][:100]}
  return TextData(spec, VOCAB_SIZE, 1.0, int(source.train.size), None, seed, source, info,
                  split_seed=split_seed)


@dataclasses.dataclass(frozen=True, eq=False)
class CorpusSource:
  """Packed training and validation streams cut into non-overlapping windows."""

  train: np.ndarray
  val: np.ndarray

  def train_rows(self, seed: int, start: int, count: int, length: int) -> np.ndarray:
    n = _n_windows(self.train, length, "training")
    index = start + np.arange(count, dtype=np.int64)
    epoch, position = np.divmod(index, n)
    window = np.empty_like(index)
    for e in np.unique(epoch):
      mask = epoch == e
      window[mask] = permute(position[mask], n, (seed, int(e)))
    return _windows(self.train, window, length)

  def val_rows(self, seed: int, count: int, length: int) -> np.ndarray:
    del seed  # validation order is fixed
    n = _n_windows(self.val, length, "held-out")
    return _windows(self.val, np.arange(count, dtype=np.int64) % n, length)


def _n_windows(stream: np.ndarray, length: int, which: str) -> int:
  n = stream.size // length
  if n == 0:
    raise UserError(f"seq_len {length - 1}: the {which} text has only {stream.size:,} tokens; "
                    f"allowed: seq_len < {stream.size}")
  return n


def _windows(stream: np.ndarray, window: np.ndarray, length: int) -> np.ndarray:
  return stream[window[:, None] * length + np.arange(length)]


# ---------------------------------------------------------------------------------------------
# A random-access permutation of [0, n): a keyed Feistel network with cycle walking, so batch
# rows are found in O(batch) without materialising a permutation of every window.

def permute(index: np.ndarray, n: int, key: tuple[int, ...], rounds: int = 4) -> np.ndarray:
  """Applies a pseudo-random bijection of [0, n), chosen by `key`, to `index`.

  An unbalanced Feistel network on m = ceil(log2 n) bits (round function: multiply-shift
  hashing) with cycle walking for values that land in [n, 2^m).
  """
  m = max(2, (n - 1).bit_length())
  keys = np.frombuffer(hashlib.blake2b(repr(key).encode(), digest_size=8 * rounds).digest(),
                       dtype=np.uint64) | np.uint64(1)
  x = np.asarray(index, dtype=np.uint64).copy()
  todo = np.ones(x.shape, bool)
  while todo.any():
    y = x[todo]
    left_bits, right_bits = m - m // 2, m // 2
    for k in keys:  # (L, R) -> (R, L ^ F(R)); the halves swap sizes each round
      left, right = y >> np.uint64(right_bits), y & np.uint64((1 << right_bits) - 1)
      f = ((right + np.uint64(1)) * k) >> np.uint64(64 - left_bits)
      y = (right << np.uint64(left_bits)) | (left ^ f)
      left_bits, right_bits = right_bits, left_bits
    x[todo] = y
    todo = x >= np.uint64(n)
  return x.astype(np.int64)
