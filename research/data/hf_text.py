"""Hugging Face `datasets` as a source of documents, offline: a dataset saved to disk.

    hf:PATH[:TRAIN_SPLIT[:VAL_SPLIT]]

PATH is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (on a machine
with a network: `datasets.load_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT",
split="train").save_to_disk(PATH)`; docs/data.md). A DatasetDict's TRAIN_SPLIT defaults to
`train`, its VAL_SPLIT to the first of validation, valid, val, test that it has (else documents
are held out by hash at load time). Each row is a document: its `text` column, its id the `id`
column when there is one, else `split/row`. Nothing is downloaded.
"""

import os

from research.data.corpus import Document
from research.errors import UserError

VAL_SPLITS = ("validation", "valid", "val", "test")


def _open(spec: str, path: str):
  if not os.path.isdir(path):
    raise UserError(f"data source {spec!r}: {path!r} is not a folder; allowed: a folder written "
                    "by datasets' save_to_disk (nothing downloads at run time)")
  import datasets  # pylint: disable=import-outside-toplevel (slow import)
  try:
    return datasets.load_from_disk(path)
  except (FileNotFoundError, ValueError) as e:
    raise UserError(f"data source {spec!r}: {path!r} is not a saved Hugging Face dataset "
                    f"({str(e).splitlines()[0]}); allowed: a folder written by "
                    "Dataset.save_to_disk or DatasetDict.save_to_disk") from None


def _documents(spec: str, ds, split: str) -> list[Document]:
  if "text" not in ds.column_names:
    raise UserError(f"data source {spec!r}: split {split!r} has no 'text' column (columns: "
                    f"{ds.column_names}); allowed: datasets with a 'text' column")
  ids = ds["id"] if "id" in ds.column_names else [f"{split}/{i}" for i in range(len(ds))]
  return [(str(i), t.encode("utf-8") if isinstance(t, str) else bytes(t or b""))
          for i, t in zip(ids, ds["text"])]


def read_documents(spec: str, rest: str) -> tuple[list[Document], list[Document] | None]:
  """(train documents, validation documents or None to hold out by document hash)."""
  path, _, splits = rest.partition(":")
  train_split, _, val_split = splits.partition(":")
  ds = _open(spec, path)
  if not hasattr(ds, "keys"):  # one Dataset: no splits to choose
    if splits:
      raise UserError(f"data source {spec!r}: {path!r} holds one split, not a DatasetDict; "
                      f"allowed: hf:{path} without splits")
    return _documents(spec, ds, "train"), None
  names = sorted(ds.keys())
  train_split = train_split or "train"
  val_split = val_split or next((s for s in VAL_SPLITS if s in ds), "")
  for split in filter(None, (train_split, val_split)):
    if split not in ds:
      raise UserError(f"data source {spec!r}: split {split!r} is not in {path!r}; allowed: "
                      f"{', '.join(names)}")
  train = _documents(spec, ds[train_split], train_split)
  return train, (_documents(spec, ds[val_split], val_split) if val_split else None)
