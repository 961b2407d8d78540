"""Reading prepared shards (research/data/prepare.py): the `prepared:DIR` data source.

The shards of a split are memory-mapped and read as one virtual stream; batches come from the
same step-indexed order as every finite corpus (text.CorpusSource: non-overlapping windows,
a keyed Feistel permutation per epoch), so a batch is a pure function of (DIR, seed, step,
batch size, sequence length) and a resumed run reads what the uninterrupted run read. Nothing is
read into memory but the rows of a batch.

A config that trains on DIR carries the prepared set's identity, `data.tokenizer_sha256` and
`data.prepared_sha256` (set by `resolve` from DIR/manifest.json when the config is loaded), so
its run id changes with the tokenizer and with the data.
"""

import json
import os

import numpy as np

from research.errors import UserError

IDENTITY_FIELDS = ("tokenizer_sha256", "prepared_sha256")
# A prepared folder's files (research/data/prepare.py writes them) and its splits.
LEDGER, MANIFEST, TOKEN_BYTES = "ledger.json", "manifest.json", "token_bytes.npy"
SPLITS = ("val", "train")


def read_manifest(spec: str, folder: str) -> dict:
  path = os.path.join(folder, MANIFEST)
  if not os.path.isfile(path):
    more = (" (its preparation is unfinished: run the same prepare command again to finish it)"
            if os.path.exists(os.path.join(folder, LEDGER)) else "")
    raise UserError(f"data source {spec!r}: {path!r} does not exist{more}; allowed: a folder "
                    "written by python -m launch data prepare")
  with open(path) as f:
    return json.load(f)


def identity(folder: str) -> dict:
  """{'tokenizer_sha256', 'prepared_sha256'} of DIR; '' for both while DIR is not prepared."""
  path = os.path.join(folder, MANIFEST)
  if not os.path.isfile(path):
    return dict.fromkeys(IDENTITY_FIELDS, "")
  with open(path) as f:
    manifest = json.load(f)
  return {"tokenizer_sha256": manifest["tokenizer"]["sha256"],
          "prepared_sha256": manifest["fingerprint"]}


class ShardStream:
  """The memory-mapped shards of one split as one read-only stream of token ids."""

  def __init__(self, spec: str, folder: str, shards: list[dict], dtype: str):
    self.maps = []
    for s in shards:
      path = os.path.join(folder, s["file"])
      expected = s["tokens"] * np.dtype(dtype).itemsize
      if not os.path.isfile(path) or os.path.getsize(path) != expected:
        raise UserError(f"data source {spec!r}: shard {path!r} is missing or not "
                        f"{expected:,} bytes; allowed: a complete prepared folder (prepare it "
                        "again into a new folder)")
      self.maps.append(np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r"))
    self.offsets = np.cumsum([0] + [m.size for m in self.maps]).astype(np.int64)
    self.size = int(self.offsets[-1])

  def __getitem__(self, index) -> np.ndarray:
    index = np.asarray(index, np.int64)
    flat = index.ravel()
    shard = np.searchsorted(self.offsets, flat, side="right") - 1
    out = np.empty(flat.shape, np.int32)
    for s in np.unique(shard):
      mask = shard == s
      out[mask] = self.maps[s][flat[mask] - self.offsets[s]]
    return out.reshape(index.shape)


def read(spec: str, folder: str, *, split_seed: int = 0) -> dict:
  """What research.data.text.load needs to make the TextData of a prepared folder: the streams
  of both splits, the tokenizer's vocabulary, bytes per training token, the unique training
  tokens, the per-token byte table and the source's info."""
  manifest = read_manifest(spec, folder)
  settings = manifest["settings"]
  if split_seed != settings["split_seed"]:
    raise UserError(f"data source {spec!r}: data.split_seed {split_seed} differs from the "
                    f"split seed {settings['split_seed']} the folder was prepared with; "
                    f"allowed: {settings['split_seed']} (or prepare again with --split-seed)")
  streams = {split: ShardStream(spec, folder, manifest["splits"][split]["shards"],
                                settings["dtype"]) for split in SPLITS}
  train, val = manifest["splits"]["train"], manifest["splits"]["val"]
  token_bytes = np.load(os.path.join(folder, TOKEN_BYTES)).astype(np.int32)
  info = {"documents_train": train["documents"], "documents_val": val["documents"],
          "unique_val_tokens": val["tokens"], "val_document_ids": val["document_ids"],
          "tokenizer": manifest["tokenizer"], "prepared_sha256": manifest["fingerprint"],
          "source_sha256": manifest["source"]["sha256"],
          "removed_documents": manifest["filter"]["removed_documents"],
          "flagged": manifest["filter"]["counts"]}
  return dict(train=streams["train"], val=streams["val"],
              vocab_size=int(manifest["tokenizer"]["vocab_size"]),
              bytes_per_token=train["bytes"] / max(1, train["tokens"]),
              unique_train_tokens=train["tokens"], token_bytes=token_bytes, info=info)


def tokenizer_file(spec: str, folder: str) -> str:
  """The path of the tokenizer's copy in a prepared folder ('' for bytes)."""
  name = read_manifest(spec, folder)["tokenizer"]["file"]
  return os.path.join(folder, name) if name else ""
