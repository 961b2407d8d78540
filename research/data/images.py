"""Image sets: MNIST IDX files, scikit-learn's 8x8 digits, folders of images and `.npz` arrays.

Every loader hands out float32 batches (B, H, W, C) with values in [0, 1], C = 1 or 3.
Bad input (mixed sizes or channels, values out of range, unreadable files) raises `UserError`
naming the file and what is allowed.
"""

import dataclasses
import glob
import gzip
import os
from typing import Callable, Iterator

import numpy as np

from research.errors import UserError
from research.fileio import npz_names, read_npz

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
  """An IDX file (LeCun's MNIST format), gzipped or not, or split into `.partKofN` gzip parts."""
  parts = sorted(glob.glob(glob.escape(path) + ".part*of*"))
  if os.path.isfile(path):
    parts = [path]
  if not parts:
    raise UserError(f"IDX file {path!r} does not exist (nor its .partKofN pieces)")
  raw = b"".join(open(p, "rb").read() for p in parts)
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
    raise UserError(f"{path!r} is not an IDX file (bad magic number {raw[:4]!r})")
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  data = np.frombuffer(raw, _IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise UserError(f"IDX file {path!r}: header says {shape}, found {data.size} values")
  return data.reshape(shape)


def load_mnist(root: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """MNIST images (N, 28, 28) uint8 and labels (N,) from the IDX files in `root`."""
  prefix = {"train": "train", "test": "t10k"}[split]
  images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
  labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
  return images, labels.astype(np.int32)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 8x8 digits (1797, 8, 8) as float32 in [0, 1], and labels."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)


def to_unit_range(x, source: str) -> np.ndarray:
  """uint8 (or integer 0..255) -> /255; floats must already lie in [0, 1]. NHWC float32 out."""
  x = np.asarray(x)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    hint = (" (channels first? store images as (N, H, W, C))"
            if x.ndim == 4 and x.shape[1] in (1, 3) else "")
    raise UserError(f"{source}: images of shape {x.shape}; expected (N, H, W) or (N, H, W, C) "
                    f"with C = 1 or 3{hint}")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if x.dtype.kind in "iu":
    lo, hi = int(x.min(initial=0)), int(x.max(initial=0))
    if lo < 0 or hi > 255:
      raise UserError(f"{source}: integer pixel values in [{lo}, {hi}]; expected 0..255")
    return x.astype(np.float32) / 255.0
  if x.dtype.kind != "f":
    raise UserError(f"{source}: pixel dtype {x.dtype}; expected uint8 or floats in [0, 1]")
  if x.size and not np.all(np.isfinite(x)):
    raise UserError(f"{source}: pixel values include NaN or infinity")
  lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
  if lo < 0 or hi > 1:
    raise UserError(f"{source}: float pixel values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
                    "(or uint8 0..255)")
  return x.astype(np.float32)


@dataclasses.dataclass
class ImageSet:
  """A set of same-size images, read in batches: `batches(b)` yields (B, H, W, C) in [0, 1]."""
  source: str
  n: int
  read: Callable[[int, int], np.ndarray]  # (start, stop) -> float32 NHWC in [0, 1]

  def batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
    stop = self.n if limit is None else min(limit, self.n)
    for start in range(0, stop, batch_size):
      yield self.read(start, min(start + batch_size, stop))


def from_array(x, source: str = "array") -> ImageSet:
  x = to_unit_range(x, source)
  return ImageSet(source, len(x), lambda a, b: x[a:b])


def from_npz(path: str, what: str = "image .npz") -> ImageSet:
  """The only array in an `.npz`, or its `images` array (research.fileio.read_npz: a damaged or
  foreign file is a UserError naming `what` and the path)."""
  names = npz_names(path, what)
  key = names[0] if len(names) == 1 else "images" if "images" in names else None
  if key is None:
    raise UserError(f"{path!r} holds arrays {names}; an image .npz holds one array or one "
                    "named 'images'")
  x = read_npz(path, what, keys=(key,))[key]
  return from_array(x, f"{path!r} array {key!r}")


def _image_mode(mode: str) -> str:
  """The mode an image is read in: grey ("L") for grey and integer modes, else "RGB"."""
  return "L" if mode in ("L", "1", "I;16", "I", "F") else "RGB"


def _read_image(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert(_image_mode(image.mode)))
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UserError(f"image {path!r} cannot be read: {e}") from e
  return array


def _image_shape(path: str) -> tuple[int, ...]:
  """The shape `_read_image` will give, from the file's header alone (no pixels decoded)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as image:
      width, height = image.size
      grey = _image_mode(image.mode) == "L"
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UserError(f"image {path!r} cannot be read: {e}") from e
  return (height, width) if grey else (height, width, 3)


def from_folder(folder: str) -> ImageSet:
  """Image files in `folder` (sorted by name), all of one size and channel count."""
  files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise UserError(f"folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
  first = _read_image(files[0])
  for path in files[1:]:  # headers only: mixed sizes are refused before any work
    _check_shape(path, _image_shape(path), files[0], first.shape)

  def read(start: int, stop: int) -> np.ndarray:
    arrays = []
    for path in files[start:stop]:
      array = _read_image(path)
      _check_shape(path, array.shape, files[0], first.shape)
      arrays.append(array)
    return to_unit_range(np.stack(arrays), f"folder {folder!r}")

  return ImageSet(f"folder {folder!r}", len(files), read)


def _check_shape(path: str, shape, first_path: str, first_shape) -> None:
  if tuple(shape) != tuple(first_shape):
    raise UserError(f"image {path!r} has shape {tuple(shape)} but {first_path!r} has "
                    f"{tuple(first_shape)}: all images must share one size and channel count")


def open_images(path: str, what: str = "image .npz") -> ImageSet:
  """A folder of image files or an `.npz` of an array of images (`what` names it in errors)."""
  if os.path.isdir(path):
    return from_folder(path)
  if os.path.isfile(path) and path.endswith(".npz"):
    return from_npz(path, what)
  raise UserError(f"{path!r} is neither a folder of images nor an .npz file")
