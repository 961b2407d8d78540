"""Documents of a finite corpus: read from files, cut at blank lines, held out by document.

A document is (id, raw bytes). A file is one document whose id is its path relative to the
folder or glob base it was found under (or its name, for a file given directly), so the held-out
split does not depend on the current directory. A corpus of fewer than MIN_FILE_DOCUMENTS
documents is cut at blank lines into chunks first; then documents are held out in the order of a
hash of (seed, document id). See docs/data.md.
"""

import glob
import hashlib
import os
import re

import numpy as np

from research.errors import UserError

MIN_FILE_DOCUMENTS = 10  # fewer files than this: files are cut into chunks at blank lines
MAX_CHUNK_BYTES = 32 * 1024  # target chunk size when files are cut into documents
MIN_CHUNK_BYTES = 1024

Document = tuple[str, bytes]  # (document id, raw bytes)


def read_files(spec: str, paths: str) -> list[Document]:
  """The documents of comma-separated files, folders (recursive) and globs, in order.

  `spec` names the data source in error messages.
  """
  return [(doc_id, _read(spec, path)) for path, doc_id in _text_files(spec, paths)]


def _text_files(spec: str, paths: str) -> list[tuple[str, str]]:
  """(file, document id) for comma-separated files, folders (recursive) and globs, in order."""
  files = []
  for path in paths.split(","):
    if glob.has_magic(path):
      base = os.path.dirname(path.split("*")[0].split("?")[0].split("[")[0])
      matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
      if not matches:
        raise UserError(f"data source {spec!r}: glob {path!r} matches no file; "
                        "allowed: existing files, folders or globs")
      files += [(p, os.path.relpath(p, base or ".")) for p in matches]
    elif os.path.isdir(path):
      files += [(p, os.path.relpath(p, path)) for p in folder_files(path)]
    elif os.path.isfile(path):
      files.append((path, os.path.basename(path)))
    else:
      raise UserError(f"data source {spec!r}: path {path!r} does not exist "
                      f"(relative paths resolve against {os.getcwd()!r}); "
                      "allowed: existing files, folders or globs")
  unique = {}
  for path, doc_id in files:
    unique.setdefault(os.path.realpath(path), (path, doc_id))
  return list(unique.values())


def folder_files(folder: str) -> list[str]:
  """Regular, non-hidden files under `folder`, recursively, sorted."""
  found = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
  return [p for p in found if os.path.isfile(p)]


def _read(spec: str, path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"data source {spec!r}: cannot read {path!r} ({e.strerror}); "
                    "allowed: readable files") from None


def split_at_blank_lines(doc_id: str, data: bytes, target: int) -> list[Document]:
  """Cuts `data` into chunks of about `target` bytes (at most 2x) at blank-line boundaries."""
  if len(data) <= 2 * target:
    return [(doc_id, data)]
  ends = np.array([m.end() for m in re.finditer(rb"\r?\n[ \t]*\r?\n", data)], dtype=np.int64)
  cuts, start = [0], 0
  while len(data) - start > 2 * target:
    i = np.searchsorted(ends, start + target)
    start = int(ends[i]) if i < len(ends) and ends[i] <= start + 2 * target else start + target
    cuts.append(start)
  cuts.append(len(data))
  return [(f"{doc_id}#{i}", data[a:b]) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]


def _chunk_size(docs: list[Document]) -> int:
  total = sum(len(d) for _, d in docs)
  return int(np.clip(total // 32, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES))


def _doc_hash(seed: int, doc_id: str) -> bytes:
  return hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()


def hold_out(docs: list[Document], seed: int,
             val_fraction: float) -> tuple[list[Document], list[Document]]:
  """Splits documents into (train, val): in hash order, documents that keep the held-out bytes
  under 1.5 x val_fraction of all bytes, until val_fraction is reached; at least one."""
  order = sorted(range(len(docs)), key=lambda i: _doc_hash(seed, docs[i][0]))
  goal, held, val = val_fraction * sum(len(d) for _, d in docs), 0, set()
  for i in order:
    if val and held >= goal:
      break
    if not val or held + len(docs[i][1]) <= 1.5 * goal:
      val.add(i)
      held += len(docs[i][1])
  return ([d for i, d in enumerate(docs) if i not in val],
          [d for i, d in enumerate(docs) if i in val])


def train_val_split(spec: str, docs: list[Document], seed: int,
                    val_fraction: float) -> tuple[list[Document], list[Document]]:
  """(train, val) documents of a non-empty corpus that has no validation split of its own.

  Fewer than MIN_FILE_DOCUMENTS documents are first cut at blank lines into chunks of about
  1/32 of the corpus (MIN_CHUNK_BYTES to MAX_CHUNK_BYTES), then `hold_out` takes about
  val_fraction of the bytes. A corpus that stays a single document raises UserError.
  """
  if len(docs) < MIN_FILE_DOCUMENTS:
    target = _chunk_size(docs)
    docs = [c for doc_id, data in docs for c in split_at_blank_lines(doc_id, data, target)]
  if len(docs) < 2:
    raise UserError(f"data source {spec!r}: a single document of {len(docs[0][1]):,} bytes "
                    "cannot be split into training and held-out text; allowed: at least 2 "
                    f"documents (files, or text of over {2 * MIN_CHUNK_BYTES} bytes)")
  return hold_out(docs, seed, val_fraction)
