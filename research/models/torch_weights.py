"""PyTorch state_dict files read into numpy arrays, without PyTorch.

`read_state_dict` gives the arrays by torch name of a file torch.save wrote (the zip format of
PyTorch >= 1.6 or the legacy format before it) or of an `.npz` export of one. The unpickler is
restricted: it accepts tensors, their storages and OrderedDicts, and refuses anything else.
"""

import collections
import os
import pickle
import zipfile
from typing import Mapping

import numpy as np

from research.errors import UserError
from research.fileio import read_npz


def to_numpy(value) -> np.ndarray:
  """A state_dict value as a numpy array: a torch tensor (detached, on the CPU) or an array."""
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def read_state_dict(path: str, what: str = "weight file",
                    missing: str = "") -> dict[str, np.ndarray]:
  """Arrays by torch name from a `.npz` export or from the `.pth` file itself.

  Errors name the file as `what` ("Inception weight file"); `missing`, if given, follows the error
  for a path that does not exist (what to give instead).
  """
  if not os.path.isfile(path):
    raise UserError(f"{what} {path!r} does not exist" + (f"; {missing}" if missing else ""))
  if path.endswith(".npz"):
    return read_npz(path, what)
  return _read_torch_file(path, what)


_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """numpy stand-in for torch._utils._rebuild_tensor(_v2): a strided view of a flat storage."""
  del unused
  item = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size),
                                         tuple(s * item for s in stride)).copy()


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch state_dict without torch: tensors become numpy arrays."""

  def __init__(self, file, storage):
    super().__init__(file)
    self._storage = storage  # (dtype, key, numel) -> flat numpy array

  def find_class(self, module, name):
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name])
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a state_dict")

  def persistent_load(self, pid):
    _, dtype, key, _, numel = pid[:5]
    flat = self._storage(dtype, str(key), int(numel))
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # legacy storage views: (view key, offset, size)
      flat = flat[view[1]:view[1] + view[2]]
    return flat


def _read_zip_state_dict(path: str) -> dict:
  """The zip format of torch.save (PyTorch >= 1.6): data.pkl plus one file per storage."""
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
      raise pickle.UnpicklingError("zip archive without data.pkl")
    prefix = pickles[0][:-len("data.pkl")]

    def storage(dtype, key, numel):
      return np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype.newbyteorder("<"),
                           count=numel)

    with archive.open(pickles[0]) as f:
      return _TorchUnpickler(f, storage).load()


def _read_legacy_state_dict(path: str) -> dict:
  """The pre-1.6 torch.save format: pickles, then each storage as int64 count + raw bytes."""
  with open(path, "rb") as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise pickle.UnpicklingError("not a PyTorch file (bad magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    dtypes = {}

    def placeholder(dtype, key, numel):
      dtypes[key] = dtype
      return np.zeros(numel, dtype)

    _TorchUnpickler(f, placeholder).load()
    flats = {}
    for key in pickle.load(f):
      count = int.from_bytes(f.read(8), "little")
      dtype = dtypes[str(key)].newbyteorder("<")
      flats[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
  # The tensors were built before the data was read: rebuild them from the stored storages.
  with open(path, "rb") as f:
    for _ in range(3):
      pickle.load(f)
    return _TorchUnpickler(f, lambda dtype, key, numel: flats[key]).load()


def _read_torch_file(path: str, what: str) -> dict[str, np.ndarray]:
  """A .pth read without PyTorch (zip or legacy torch.save format)."""
  reader = _read_zip_state_dict if zipfile.is_zipfile(path) else _read_legacy_state_dict
  try:
    state = reader(path)
  except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError,
          AttributeError) as e:
    kind = "zip" if zipfile.is_zipfile(path) else "legacy"
    raise UserError(f"{what} {path!r} ({kind} format) is not a PyTorch state_dict: "
                    f"{type(e).__name__}: {str(e)[:200]}") from e
  if not isinstance(state, Mapping):
    raise UserError(f"{what} {path!r} holds a {type(state).__name__}, not a state_dict")
  return {k: np.asarray(v) for k, v in state.items()}
