"""Tokenize once into shards: `python -m launch data prepare --source S --tokenizer T --out DIR`.

A source of documents (text:, tfds:, hf:; research/data/text.py) goes through three passes:
1. **filter** (research/data/dedup.py, decontaminate.py): exact duplicates, MinHash
   near-duplicates and documents that share an n-gram with the evaluation data are flagged;
   those of the kinds in `remove` are dropped, the rest only reported;
2. **split**: the source's own validation split, else documents held out by hash
   (research/data/corpus.py, the same rule as text.load);
3. **tokenize** each split into shards `DIR/{val,train}/NNNNN.bin`: flat little-endian uint16
   token ids (uint32 for a vocabulary over 65,536), each document followed by the tokenizer's
   end-of-document id, whole documents per shard, a shard closed once it holds `shard_tokens`.

Resumable after kill -9: every file is written atomically, and `DIR/ledger.json` records the
settings, the filter's result and, per split, the shards committed and the next document; a
re-run with the same settings deletes the temporary files of writes the kill cut short,
continues from there and writes the same bytes an uninterrupted run writes. `DIR/manifest.json`
is written last (the folder is complete once it exists): token and document counts, the
tokenizer's hash, the source's checksum, what was flagged and removed.
"""

import hashlib
import json
import os

import numpy as np

from research import fileio
from research.data import corpus, dedup, decontaminate, text, tokenizers
from research.data.prepared import LEDGER, MANIFEST, SPLITS, TOKEN_BYTES  # noqa: F401 (named here)
from research.errors import UserError

REASONS = ("duplicate", "near_duplicate", "contaminated")
FORMAT = "flat little-endian token ids, each document followed by the end-of-document id"
DEFAULT_SHARD_TOKENS = 1 << 24
_BATCH_DOCS = 64  # documents per call of a tokenizer's encode_batch


def source_sha256(train: list[corpus.Document], val: list[corpus.Document] | None) -> str:
  """A checksum of the documents (ids and bytes, in order) of both splits."""
  h = hashlib.sha256()
  for split, docs in (("train", train), ("val", val or [])):
    for doc_id, data in docs:
      h.update(f"{split}\0{doc_id}\0{len(data)}\0".encode())
      h.update(data)
  return h.hexdigest()


def dtype_for(vocab_size: int) -> str:
  return "uint16" if vocab_size <= 1 << 16 else "uint32"


def _progress(iterable, total: int, desc: str, enabled: bool):
  if not enabled:
    return iterable
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(iterable, total=total, desc=desc, unit="doc", dynamic_ncols=True)


def filter_documents(train, val, *, eval_paths=(), remove=REASONS,
                     near_threshold=dedup.NEAR_THRESHOLD, ngram=decontaminate.NGRAM,
                     progress: bool = False) -> dict:
  """Flags training documents (and, without a validation split, any document): exact and near
  duplicates of an earlier document (a validation document counts as earlier), and those sharing
  an n-gram with the evaluation texts under `eval_paths`. Returns the JSON-able report:
  {'flagged': [{'id', 'reason', 'of', ...}], 'counts', 'removed', 'settings', 'eval'}."""
  bad = [r for r in remove if r not in REASONS]
  if bad:
    raise UserError(f"--remove {','.join(remove)}: unknown {bad}; allowed: a comma-separated "
                    f"subset of {', '.join(REASONS)}, or none")
  index = decontaminate.build(eval_paths, ngram)
  finder = dedup.Deduplicator(near_threshold)
  for doc_id, data in val or []:
    finder.check("val:" + doc_id, data)
  flagged = []
  for doc_id, data in _progress(train, len(train), "filter", progress):
    hit = finder.check(doc_id, data)
    if hit is None and index is not None:
      hit = index.find(data)
    if hit is not None:
      flagged.append({"id": doc_id, "bytes": len(data), **hit})
  counts = {r: sum(f["reason"] == r for f in flagged) for r in REASONS}
  return {"flagged": flagged, "counts": counts, "removed": sorted(set(remove)),
          "settings": {"near_threshold": near_threshold, "shingle_words": dedup.SHINGLE_WORDS,
                       "num_perm": dedup.NUM_PERM, "ngram": ngram,
                       # relative to the working directory: the set's identity (its fingerprint, a run's
              # id) must not depend on where the checkout lives
              "eval": [os.path.relpath(p) for p in eval_paths]},
          "eval": index.describe() if index is not None else None}


def split_documents(spec, train, val, report: dict, split_seed: int,
                    val_fraction: float) -> dict[str, list[corpus.Document]]:
  """{'val': ..., 'train': ...} after dropping the flagged documents of the removed kinds."""
  drop = {f["id"] for f in report["flagged"] if f["reason"] in report["removed"]}
  kept = [d for d in train if d[0] not in drop and d[1]]
  if not kept:
    raise UserError(f"data source {spec!r}: no training document is left after filtering")
  if val is None:
    kept, val = corpus.train_val_split(spec, kept, split_seed, val_fraction)
  return {"val": [d for d in val if d[1]], "train": kept}


def _write_shard(out: str, split: str, number: int, parts: list[np.ndarray], dtype: str,
                 n_docs: int, n_bytes: int) -> dict:
  name = f"{split}/{number:05d}.bin"
  data = np.concatenate(parts).astype(dtype).tobytes()
  fileio.atomic_write_bytes(os.path.join(out, name), data)
  return {"file": name, "tokens": int(sum(p.size for p in parts)), "documents": n_docs,
          "bytes": n_bytes, "sha256": hashlib.sha256(data).hexdigest()}


def tokenize_split(out: str, split: str, docs, tok, ledger: dict, shard_tokens: int, *,
                   progress: bool = False, on_shard=None) -> dict:
  """Tokenizes `docs` into shards from where the ledger stopped; commits the ledger after every
  shard; returns the split's entry {'shards', 'next_document', 'done'}."""
  entry = ledger["splits"].setdefault(split, {"shards": [], "next_document": 0, "done": False})
  if entry["done"]:
    return entry
  dtype = ledger["settings"]["dtype"]
  token_bytes = tok.token_bytes
  encode = getattr(tok, "encode_batch", None) or (lambda ts: [tok.encode(t) for t in ts])
  eot = np.array([tok.eot_id], np.int32)
  parts, n_tokens, n_docs, n_bytes = [], 0, 0, 0
  start = entry["next_document"]
  bar = _progress(None, len(docs), f"tokenize {split}", progress) if progress else None
  if bar is not None:
    bar.update(start)
  for first in range(start, len(docs), _BATCH_DOCS):
    batch = docs[first:first + _BATCH_DOCS]
    for k, ids in enumerate(encode([tokenizers.as_text(d) for _, d in batch])):
      ids = np.concatenate([ids, eot])
      parts.append(ids)
      n_tokens, n_docs = n_tokens + ids.size, n_docs + 1
      n_bytes += int(token_bytes[ids].sum())
      if n_tokens >= shard_tokens:
        shard = _write_shard(out, split, len(entry["shards"]), parts, dtype, n_docs, n_bytes)
        entry["shards"].append(shard)
        entry["next_document"] = first + k + 1
        fileio.atomic_write_json(os.path.join(out, LEDGER), ledger)
        parts, n_tokens, n_docs, n_bytes = [], 0, 0, 0
        if on_shard is not None:
          on_shard(split, shard)
    if bar is not None:
      bar.update(len(batch))
  if parts:
    entry["shards"].append(_write_shard(out, split, len(entry["shards"]), parts, dtype, n_docs,
                                        n_bytes))
  entry["next_document"], entry["done"] = len(docs), True
  fileio.atomic_write_json(os.path.join(out, LEDGER), ledger)
  if bar is not None:
    bar.close()
  return entry


def _read_json(path: str) -> dict | None:
  """The JSON file at `path`, or None when there is none yet."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: unreadable ({e}); delete the folder and prepare again") from None


def _check_same(out: str, found: dict | None, settings: dict, what: str) -> None:
  if found is not None and found["settings"] != settings:
    changed = sorted(k for k in settings if found["settings"].get(k) != settings[k])
    raise UserError(f"--out {out!r} holds a {what} of other settings (differing: "
                    f"{', '.join(changed)}); allowed: the same settings to resume, or another "
                    "--out")


def prepare(spec: str, tokenizer: str, out: str, *, eval_paths=(), remove=REASONS,
            near_threshold: float = dedup.NEAR_THRESHOLD, ngram: int = decontaminate.NGRAM,
            split_seed: int = 0, val_fraction: float = 0.05,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, tfds_data_dir: str | None = None,
            progress: bool = True, on_shard=None) -> dict:
  """Prepares `spec` with `tokenizer` into `out` (or finishes an interrupted preparation);
  returns the manifest."""
  if not isinstance(shard_tokens, int) or shard_tokens < 1:
    raise UserError(f"--shard-tokens {shard_tokens!r}: allowed: a positive number of tokens")
  if not 0.0 < val_fraction < 1.0:
    raise UserError(f"--val-fraction {val_fraction!r}: allowed: a fraction in (0, 1)")
  if not isinstance(ngram, int) or ngram < decontaminate.MIN_WORDS:
    raise UserError(f"--ngram {ngram!r}: allowed: an integer >= {decontaminate.MIN_WORDS}")
  tok = tokenizers.load(tokenizer)
  scheme = spec.partition(":")[0]
  if scheme not in text.DOCUMENT_SCHEMES:
    raise UserError(f"--source {spec!r}: allowed: a source of documents, one of "
                    f"{', '.join(s + ':...' for s in text.DOCUMENT_SCHEMES)}")
  train, val = text.read_documents(spec, tfds_data_dir)
  fileio.writable_folder(out, "--out")
  settings = {"source": spec, "source_sha256": source_sha256(train, val),
              "tokenizer": tokenizers.identity(tok), "dtype": dtype_for(tok.vocab_size),
              "shard_tokens": shard_tokens, "split_seed": split_seed,
              "val_fraction": val_fraction, "remove": sorted(set(remove)),
              "near_threshold": near_threshold, "ngram": ngram,
              # relative to the working directory: the set's identity (its fingerprint, a run's
              # id) must not depend on where the checkout lives
              "eval": [os.path.relpath(p) for p in eval_paths]}
  manifest = _read_json(os.path.join(out, MANIFEST))
  _check_same(out, manifest, settings, "prepared data set")
  if manifest is not None:
    return manifest
  ledger = _read_json(os.path.join(out, LEDGER))
  _check_same(out, ledger, settings, "preparation")
  _remove_torn_writes(out)
  if ledger is None:
    ledger = {"settings": settings, "filter": None, "splits": {}}
  if ledger["filter"] is None:
    ledger["filter"] = filter_documents(train, val, eval_paths=eval_paths, remove=remove,
                                        near_threshold=near_threshold, ngram=ngram,
                                        progress=progress)
    fileio.atomic_write_json(os.path.join(out, LEDGER), ledger)
  splits = split_documents(spec, train, val, ledger["filter"], split_seed, val_fraction)
  tok_file = tokenizers.copy_into(tok, out)
  for split in SPLITS:
    tokenize_split(out, split, splits[split], tok, ledger, shard_tokens, progress=progress,
                   on_shard=on_shard)
  buf = _npy_bytes(tok.token_bytes)
  fileio.atomic_write_bytes(os.path.join(out, TOKEN_BYTES), buf)
  manifest = _manifest(settings, ledger, splits, tok_file, train)
  fileio.atomic_write_json(os.path.join(out, MANIFEST), manifest)
  return manifest


def _remove_torn_writes(out: str) -> None:
  """Deletes the temporary files of atomic writes that a killed preparation left half-written
  (fileio's `.tmp-NAME...`), so that a resumed folder holds just what an uninterrupted one does."""
  for folder in (out, *(os.path.join(out, split) for split in SPLITS)):
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        if name.startswith(".tmp-"):
          os.unlink(os.path.join(folder, name))


def _npy_bytes(array: np.ndarray) -> bytes:
  import io  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  np.save(buf, array)
  return buf.getvalue()


def fingerprint(settings: dict) -> str:
  """The identity of a prepared data set: a hash of its settings (source checksum, tokenizer
  hash, filter and split)."""
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _manifest(settings, ledger, splits, tok_file, source_train) -> dict:
  report = ledger["filter"]
  removed = [f for f in report["flagged"] if f["reason"] in report["removed"]]
  out = {"format": FORMAT, "settings": settings, "fingerprint": fingerprint(settings),
         "tokenizer": {**settings["tokenizer"], "file": os.path.basename(tok_file)},
         "source": {"spec": settings["source"], "sha256": settings["source_sha256"],
                    "documents": len(source_train)},
         "filter": {**report, "removed_documents": len(removed),
                    "removed_bytes": int(sum(f["bytes"] for f in removed))},
         "splits": {}}
  for split in SPLITS:
    shards = ledger["splits"][split]["shards"]
    out["splits"][split] = {
        "documents": len(splits[split]), "tokens": int(sum(s["tokens"] for s in shards)),
        "bytes": int(sum(s["bytes"] for s in shards)), "shards": shards,
        "document_ids": [d for d, _ in splits[split]][:100] if split == "val" else []}
  return out
