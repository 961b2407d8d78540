"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

import json
import os
import tempfile
from typing import Any

from research.errors import EnvironmentFault, UserError, describe_os_error


def writable_folder(path: str, what: str = "--workdir", *, create: bool = True) -> str:
  """Checks, before any work, that files can be written in the folder `path` (made when `create`):
  a UserError (exit 2) for a path that cannot be a folder (empty, an existing file, below a file),
  an EnvironmentFault (exit 3) when the machine refuses (read-only, no permission, disk full).
  Returns the path."""
  if not str(path).strip():
    raise UserError(f"{what} is empty: give a folder path")
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{what} {path!r} is an existing file, not a folder; choose another path")
  parent = os.path.dirname(os.path.abspath(path))
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise UserError(f"{what} {path!r} lies below {parent!r}, which is a file, not a folder")
  try:
    if create:
      os.makedirs(path, exist_ok=True)
    probe_dir = path if os.path.isdir(path) else parent
    fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".write-check-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise EnvironmentFault(f"{what} {path!r}: cannot write there: "
                           f"{describe_os_error(e)}") from e
  return path


def writable_file(path: str, what: str) -> str:
  """Checks, before any work, that the file `path` can be written: not an existing folder (a
  UserError) and in a folder this process can write (`writable_folder`; nothing is created)."""
  if os.path.isdir(path):
    raise UserError(f"{what} {path!r} is an existing folder; give a file path")
  writable_folder(os.path.dirname(os.path.abspath(path)), f"{what}'s folder", create=False)
  return path


def write_after_printing(write, lost: str):
  """write()'s result, for outputs whose numbers are already on stdout: a write the disk refuses
  is an EnvironmentFault (exit 3) that begins with `lost`, saying what could not be written."""
  try:
    return write()
  except OSError as e:
    raise EnvironmentFault(f"{lost}: {describe_os_error(e)}") from e


def atomic_write_bytes(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make results unreadable to others
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
  """numpy scalars and arrays to plain Python for json.dumps."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# Reading .npz files: one checked reader for every .npz the project reads.

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def npz_names(path: str, what: str = "file") -> list[str]:
  """The array names in the `.npz` at `path`, read without loading the arrays; a UserError naming
  `what` and the path for a file that is missing, empty, truncated or not an .npz."""
  with _open_npz(path, what) as data:
    return list(data.files)


def read_npz(path: str, what: str = "file", keys=None, optional=()) -> dict:
  """The arrays of the `.npz` at `path` by name: all of them, or with `keys` those (each must be
  there) and the names in `optional` that are there. Pickled objects are refused.

  Every problem is one UserError naming `what` ("statistics file"), the path and what is wrong:
  missing, a folder, empty, truncated or not a zip archive, a single .npy array, a zip that is
  not an .npz, missing keys, pickled objects, a damaged array."""
  with _open_npz(path, what) as data:
    names = list(data.files)
    if keys is None:
      wanted = names
    else:
      missing = [k for k in keys if k not in names]
      if missing:
        raise UserError(f"{what} {path!r} lacks {missing}; it has {sorted(names)}")
      wanted = list(keys) + [k for k in optional if k in names and k not in keys]
    return {name: _npz_array(data, name, path, what) for name in wanted}


def _open_npz(path: str, what: str):
  """np.load of an .npz after the checks that numpy leaves to tracebacks."""
  import zipfile

  import numpy as np
  where = f"{what} {path!r}"
  if not os.path.exists(path):
    raise UserError(f"{where} does not exist")
  if os.path.isdir(path):
    raise UserError(f"{where} is a folder, not an .npz file")
  with open(path, "rb") as f:
    head = f.read(len(_NPY_MAGIC))
  if not head:
    raise UserError(f"{where} is empty (0 bytes): not an .npz file (an interrupted write?)")
  if not zipfile.is_zipfile(path):
    if head.startswith(_ZIP_MAGIC):
      problem = "is truncated or damaged: a zip archive without its end (an interrupted copy?)"
    elif head == _NPY_MAGIC:
      problem = "is a single .npy array, not an .npz archive of named arrays"
    elif head.startswith(b"\x80"):
      problem = "is a Python pickle, not an .npz: pickled objects are refused"
    else:
      problem = "is not an .npz file (not a zip archive of .npy arrays)"
    raise UserError(f"{where} {problem}")
  try:
    data = np.load(path, allow_pickle=False)
  except (ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{where} is not a readable .npz: {type(e).__name__}: {e}") from e
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise UserError(f"{where} is not an .npz archive of named arrays")
  if not data.files:
    data.close()
    raise UserError(f"{where} holds no arrays")
  return data


def _npz_array(data, name: str, path: str, what: str):
  """One array of an open .npz, its problems as one UserError."""
  import zipfile
  import zlib

  import numpy as np
  where = f"{what} {path!r}"
  try:
    value = data[name]
  except ValueError as e:
    if "allow_pickle" in str(e) or "pickled" in str(e):
      raise UserError(f"{where}: array {name!r} holds pickled Python objects, which are refused "
                      "(save plain numeric arrays)") from e
    raise UserError(f"{where}: array {name!r} cannot be read: {e}") from e
  except (EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
    raise UserError(f"{where} is damaged: array {name!r} cannot be read "
                    f"({type(e).__name__}: {e})") from e
  if not isinstance(value, np.ndarray):
    raise UserError(f"{where} is a zip archive but not an .npz: member {name!r} is not a .npy "
                    "array")
  return value
