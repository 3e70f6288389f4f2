"""Image utilities shared by training, sampling and evaluation: pixel conversions, grids, PNGs.

The pixel conventions, written once (numpy arrays in and out on the host, jax arrays under jit):
photos are uint8 [0, 255] on disk, [-1, 1] floats where generators output or discriminators read
them (`uint8_to_signed`, `signed_to_uint8`), and [0, 1] floats where ERFNet reads them
(`to_unit`).
"""

import math
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image


def _xp(images):
  return np if isinstance(images, np.ndarray) else jnp


def uint8_to_signed(images):
  """uint8 [0, 255] photos → float32 [-1, 1], the generator's output range."""
  return images.astype(np.float32) / 127.5 - 1.0


def signed_to_uint8(images):
  """[-1, 1] float images → uint8 [0, 255], rounded and clipped."""
  xp = _xp(images)
  return xp.clip(xp.round((images.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_unit(images):
  """Photos → float32 [0, 1]: uint8 ones divided by 255, [-1, 1] ones mapped affinely."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return (images + 1.0) / 2.0


def make_grid(images: np.ndarray, *, columns: int | None = None, pad: int = 2) -> np.ndarray:
  """Tiles (N, H, W, 3) uint8 images into one (rows·(H+pad)+pad, …, 3) image, white gaps."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y : y + h, x : x + w] = image
  return grid


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
  """Integer nearest-neighbour upscaling, so small label maps stay crisp in viewers."""
  return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
  """Calls `write(binary file)` on a temporary file beside `path`, then renames it to `path`, so
  that readers never see a partial file; creates the parent directories."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp'
  with tmp.open('wb') as f:
    write(f)
  os.replace(tmp, path)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes a uint8 (H, W, 3) image atomically."""
  write_atomically(path, lambda f: Image.fromarray(np.asarray(image, np.uint8)).save(f, 'PNG'))


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], frame_ms: int) -> None:
  """Writes uint8 (H, W, 3) frames as a looping animated GIF, `frame_ms` per frame, atomically."""
  first, *rest = (Image.fromarray(np.asarray(f, np.uint8)) for f in frames)
  write_atomically(
    path,
    lambda f: first.save(f, 'GIF', save_all=True, append_images=rest, duration=frame_ms, loop=0),
  )
