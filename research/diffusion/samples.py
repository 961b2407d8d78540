"""Drawing samples from a trained U-Net and showing them: the jitted sampler of a run's model and
schedule, n images from a seed, a grid image and its PNG."""

import io
import math

import numpy as np

from research.fileio import atomic_write_bytes


def sampler(mcfg, schedule: str, diffusion_steps: int, name: str, steps: int, batch: int,
            eta: float = 0.0):
  """A jitted (params, key) -> images (batch, H, W, C) in [-1, 1] of the U-Net `mcfg`
  (research.models.unet.UNetConfig) trained on the `schedule` of `diffusion_steps` steps:
  research.diffusion.ddpm's `name` sampler ("ddpm" or "ddim") in `steps` steps."""
  from research.diffusion import ddpm
  from research.models import unet
  sched = ddpm.make_schedule(schedule, diffusion_steps)
  eps_fn = lambda params, x, t: unet.apply(mcfg, params, x, t)  # noqa: E731
  shape = (batch, mcfg.image_size, mcfg.image_size, mcfg.channels)
  return ddpm.make_sampler(eps_fn, sched, shape, name, steps, eta)


def draw(sample_fn, params, n: int, batch: int, seed: int) -> np.ndarray:
  """n images in [0, 1]: batch i from fold_in(key(seed), i)."""
  import jax

  from research.diffusion import ddpm
  out = []
  for i in range(math.ceil(n / batch)):
    out.append(ddpm.to_images(sample_fn(params, jax.random.fold_in(jax.random.key(seed), i))))
  return np.concatenate(out)[:n]


def grid_image(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """(N, H, W, C) in [0, 1] -> one uint8 (rows x H + pad, columns x W + pad, 3) mosaic."""
  n, h, w, ch = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  pad = 1
  out = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.float32)
  for i, x in enumerate(images):
    r, col = divmod(i, columns)
    out[pad + r * (h + pad):pad + r * (h + pad) + h,
        pad + col * (w + pad):pad + col * (w + pad) + w] = x if ch == 3 else x[..., :1]
  return (out * 255).round().astype(np.uint8)


def save_png(path: str, array: np.ndarray, scale: int = 1) -> None:
  from PIL import Image
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  atomic_write_bytes(path, buffer.getvalue())


def save_npz(path: str, images: np.ndarray) -> None:
  """Images in [0, 1] as an (N, H, W, C) uint8 array named `images`, written atomically: the
  image .npz that `python -m launch fid` reads."""
  buffer = io.BytesIO()
  np.savez(buffer, images=(images * 255).round().astype(np.uint8))
  atomic_write_bytes(path, buffer.getvalue())
