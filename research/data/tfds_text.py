"""TFDS text without TensorFlow: a local-text builder and an array_record reader.

A user's folder of text files goes through TFDS as the `local_text` data set:

  name = prepare_local_text("my_corpus/", "data/tfds")     # -> "local_text"
  data = text.load("tfds:local_text", tfds_data_dir="data/tfds")

Data sets are prepared with file_format='array_record' and read with `as_data_source()`;
`tfds.load` and `as_dataset` would need TensorFlow.
"""

import os
import re

from etils import epath
import tensorflow_datasets as tfds

from research.data.corpus import Document, folder_files
from research.errors import UserError

VAL_SPLITS = ("validation", "valid", "val", "test")
_VERSION = re.compile(r"\d+\.\d+\.\d+")


class LocalText(tfds.core.GeneratorBasedBuilder):
  """Every file under a folder (download_config.manual_dir) as one example {'id', 'text'}."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Files of a local folder, raw bytes."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Prepare with research.data.tfds_text.prepare_local_text(src_dir, data_dir), or pass "
      "download_config=tfds.download.DownloadConfig(manual_dir=src_dir) to download_and_prepare.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds's own lookup needs the `importlib_resources` backport for classes in packages.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs reads package metadata files we do not keep.
    return tfds.core.DatasetInfo(
        builder=self, description="A local folder of text files, one example per file.",
        features=tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                             "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(os.fspath(dl_manager.manual_dir))}

  def _generate_examples(self, folder: str):
    for path in folder_files(folder):
      doc_id = os.path.relpath(path, folder)
      with open(path, "rb") as f:
        yield doc_id, {"id": doc_id, "text": f.read()}


def prepare_local_text(src_dir: str, data_dir: str) -> str:
  """Prepares the text files under `src_dir` as `local_text` in `data_dir`; returns the name.

  One corpus per data_dir: preparing another folder into the same data_dir reuses the first.
  """
  if not os.path.isdir(src_dir):
    raise UserError(f"local_text source folder {src_dir!r} does not exist; allowed: a folder "
                    "of text files")
  if not folder_files(src_dir):
    raise UserError(f"local_text source folder {src_dir!r} has no files; allowed: a folder "
                    "of text files")
  builder = LocalText(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=src_dir, try_download_gcs=False))
  return builder.name


def parse_spec(rest: str) -> tuple[str, str | None, str | None]:
  """NAME[/CONFIG][:VERSION][:TRAIN_SPLIT[:VAL_SPLIT]] -> (name, train split, val split)."""
  parts = re.split(r":(?![^\[]*\])", rest)  # colons inside split slices like train[:90%] stay
  name = parts.pop(0)
  if parts and _VERSION.fullmatch(parts[0]):
    name += ":" + parts.pop(0)
  return name, (parts[0] if parts else None), (parts[1] if len(parts) > 1 else None)


def _builder(spec: str, name: str, data_dir: str | None):
  where = f"data_dir {data_dir!r}" if data_dir else "the default TFDS data_dir"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, ValueError) as e:
    raise UserError(f"data source {spec!r}: TFDS data set {name!r} is unknown or unavailable in "
                    f"{where} ({str(e).splitlines()[0]}); allowed: a registered TFDS name or "
                    "'local_text', prepared as array_record") from None
  if not builder.is_prepared():
    raise UserError(
        f"data source {spec!r}: TFDS data set {name!r} is not prepared in {where}; allowed: "
        f"prepared data sets (nothing downloads at run time). Prepare it first: "
        f"tfds.builder({name!r}, data_dir=...).download_and_prepare(file_format='array_record'), "
        "or for a folder of your own text files "
        "research.data.tfds_text.prepare_local_text(src_dir, data_dir)")
  if builder.info.file_format != tfds.core.file_adapters.FileFormat.ARRAY_RECORD:
    raise UserError(f"data source {spec!r}: TFDS data set {name!r} in {where} is stored as "
                    f"{builder.info.file_format}; allowed: array_record (prepare it again with "
                    "file_format='array_record' in another data_dir)")
  return builder


def _documents(spec: str, builder, split: str) -> list[Document]:
  """(id, raw bytes) of every example of `split`, from its 'text' feature."""
  try:
    source = builder.as_data_source(split=split)
  except ValueError as e:
    raise UserError(f"data source {spec!r}: split {split!r}: {str(e).splitlines()[0]} allowed: "
                    f"{sorted(builder.info.splits)}, with TFDS slicing like train[:90%]") from None
  records = source.__getitems__(range(len(source))) if len(source) else []
  if records and "text" not in records[0]:
    raise UserError(f"data source {spec!r}: TFDS data set {builder.name!r} has no 'text' "
                    f"feature (features: {sorted(records[0])}); allowed: data sets with 'text'")
  return [(_as_str(r.get("id", f"{split}/{i}")), _as_bytes(r["text"]))
          for i, r in enumerate(records)]


def _as_bytes(value) -> bytes:
  return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _as_str(value) -> str:
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_documents(spec: str, rest: str,
                   data_dir: str | None) -> tuple[list[Document], list[Document] | None]:
  """(train documents, validation documents or None to hold out by document hash)."""
  name, train_split, val_split = parse_spec(rest)
  builder = _builder(spec, name, data_dir)
  if val_split is None:
    val_split = next((s for s in VAL_SPLITS if s in builder.info.splits), None)
  train = _documents(spec, builder, train_split or "train")
  return train, (None if val_split is None else _documents(spec, builder, val_split))
