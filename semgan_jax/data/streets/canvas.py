"""What street scenes are painted with: canvas, painting primitives, class textures, noise."""

import dataclasses
import functools
import math

import numpy as np


@dataclasses.dataclass
class _Canvas:
  """The three maps a scene is painted into, plus the per-image texture crops."""

  label: np.ndarray  # (H, W) uint8 label ids
  instance: np.ndarray  # (H, W) int32
  # Planar (3, H, W) float32, 0..255: numpy is far faster on long rows than on RGB triples.
  photo: np.ndarray
  leafy: np.ndarray  # (H, W) float32 multiplicative foliage texture around 1
  next_instance: dict[int, int] = dataclasses.field(default_factory=dict)

  def new_instance(self, label_id: int) -> int:
    k = self.next_instance.get(label_id, 0)
    self.next_instance[label_id] = k + 1
    return label_id * 1000 + k


def _rows_cols(canvas: _Canvas, y0: float, y1: float, x0: float, x1: float):
  """Integer pixel ranges whose centres fall in [y0, y1) x [x0, x1), clipped to the image."""
  height, width = canvas.label.shape
  # math.ceil on Python floats: this runs for every primitive, and numpy scalars are slow here.
  r0, r1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5), height)
  c0, c1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5), width)
  return r0, r1, c0, c1


def _paint(canvas, region, mask, label_id, instance_id, color, texture=False, shade=None):
  """Writes one primitive's pixels (mask within the region's box, or all of it) into the maps."""
  r0, r1, c0, c1 = region
  if r1 <= r0 or c1 <= c0:
    return
  color = np.asarray(color, dtype=np.float32)
  color = color.reshape(3, 1, 1) if color.size == 3 else color
  if texture:
    color = canvas.leafy[None, r0:r1, c0:c1] * color
  if shade is not None:
    # A vertical light gradient over the primitive: lit from above, darker towards the ground.
    ramp = np.arange(r1 - r0, dtype=np.float32) * np.float32(
      (shade[1] - shade[0]) / max(r1 - r0 - 1, 1)
    )
    color = color * (ramp + np.float32(shade[0]))[None, :, None]
  if mask is None:  # Plain slices: most primitives are boxes, and these are several times faster.
    canvas.label[r0:r1, c0:c1] = label_id
    canvas.instance[r0:r1, c0:c1] = instance_id
    canvas.photo[:, r0:r1, c0:c1] = color
    return
  np.copyto(canvas.label[r0:r1, c0:c1], label_id, where=mask)
  np.copyto(canvas.instance[r0:r1, c0:c1], instance_id, where=mask)
  np.copyto(canvas.photo[:, r0:r1, c0:c1], color, where=mask[None])


def _rect(canvas, y0, y1, x0, x1, label_id, instance_id, color, **kwargs):
  _paint(canvas, _rows_cols(canvas, y0, y1, x0, x1), None, label_id, instance_id, color, **kwargs)


def _ellipse(canvas, cy, cx, ry, rx, label_id, instance_id, color, **kwargs):
  region = _rows_cols(canvas, cy - ry, cy + ry, cx - rx, cx + rx)
  r0, r1, c0, c1 = region
  dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) / max(ry, 1e-3)
  dx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx) / max(rx, 1e-3)
  mask = dy[:, None] ** 2 + dx[None, :] ** 2 <= 1.0
  _paint(canvas, region, mask, label_id, instance_id, color, **kwargs)


def _trapezoid(canvas, y0, y1, cx, half_top, half_bottom, label_id, instance_id, color, **kwargs):
  """A symmetric trapezoid around column cx, half_top wide at row y0 and half_bottom at y1."""
  half = max(half_top, half_bottom)
  region = _rows_cols(canvas, y0, y1, cx - half, cx + half)
  r0, r1, c0, c1 = region
  rows = np.arange(r0, r1, dtype=np.float32) + 0.5
  frac = (rows - y0) / max(y1 - y0, 1e-3)
  row_half = half_top + (half_bottom - half_top) * frac
  cols = np.arange(c0, c1, dtype=np.float32) + 0.5
  mask = np.abs(cols[None, :] - cx) < row_half[:, None]
  _paint(canvas, region, mask, label_id, instance_id, color, **kwargs)


class _ClassRuns:
  """A photo coloured class by class from a label map, each class by its own texture function.

  Each class's texture is computed on that class's pixels only, in the order of one stable sort
  of the flat label map (so every class is a contiguous run), and the runs are put back in
  image order with a single gather. Colours are planar: (3, n), never (n, 3).
  """

  def __init__(self, label: np.ndarray):
    self.shape = label.shape
    flat_label = label.ravel()
    self.order = np.argsort(flat_label, kind='stable')
    self.bounds = np.searchsorted(flat_label[self.order], np.arange(257), side='left')
    self.colors = np.empty((3, label.size), dtype=np.float32)

  def fill(self, label_id, texture):
    """Colours the class's pixels with texture(idx, rows, cols): their flat indices and position."""
    start, stop = self.bounds[label_id], self.bounds[label_id + 1]
    if stop > start:
      width = self.shape[1]
      idx = self.order[start:stop]
      rows = idx // width
      self.colors[:, start:stop] = texture(idx, rows, idx - rows * width)

  def photo(self) -> np.ndarray:
    """The colours in image order, planar (3, H, W)."""
    position = np.empty_like(self.order)
    position[self.order] = np.arange(self.order.size)  # Where each pixel landed in the sort.
    return np.take(self.colors, position, axis=1).reshape(3, *self.shape)


@functools.lru_cache(maxsize=8)
def _noise_banks(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fixed noise textures of twice the image size; every image reads a random crop of them.

  Drawing fresh full-size noise for every image costs more than the rest of the rendering, and a
  random crop of a larger fixed field looks just as random at this scale. The banks depend only on
  the size, so every crop is still a pure function of the example's seed.
  """
  rng = np.random.default_rng([height, width, 7])
  bank_h, bank_w = 2 * height, 2 * width
  fine = rng.standard_normal((bank_h, bank_w), dtype=np.float32)
  # Planar sensor noise (sigma 3.5 levels), plus 0.5 so that the final cast to uint8 rounds.
  color = 3.5 * rng.standard_normal((3, bank_h, bank_w), dtype=np.float32) + 0.5
  # Foliage: clumps a few pixels across (smoothed coarse noise) plus fine leaf grain.
  cell = max(2, height // 32)
  coarse = rng.standard_normal((bank_h // cell + 2, bank_w // cell + 2), dtype=np.float32)
  clumps = _upsample_bilinear(coarse, cell)[:bank_h, :bank_w]
  leafy = 1.0 + 0.28 * clumps + 0.12 * fine[::-1, ::-1]
  return fine, color, np.clip(leafy, 0.35, 1.6).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _cloud_bank(height: int, width: int) -> np.ndarray:
  """Soft large-scale noise in [0, 1] for clouds, twice the image size."""
  rng = np.random.default_rng([height, width, 11])
  cell = max(4, height // 8)
  coarse = rng.random((2 * height // cell + 2, 2 * width // cell + 2), dtype=np.float32)
  return _upsample_bilinear(coarse, cell)[: 2 * height, : 2 * width]


def _upsample_bilinear(grid: np.ndarray, factor: int) -> np.ndarray:
  """Bilinear upsampling of a 2-d grid by an integer factor (separable interpolation)."""

  def axis_weights(n: int) -> np.ndarray:
    pos = (np.arange(n * factor, dtype=np.float32) + 0.5) / factor - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = np.zeros((n * factor, n), dtype=np.float32)
    w[np.arange(n * factor), lo] += 1.0 - (pos - lo)
    w[np.arange(n * factor), hi] += pos - lo
    return w

  return axis_weights(grid.shape[0]) @ grid @ axis_weights(grid.shape[1]).T


def _crop(bank: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A random (..., height, width) window of a bank."""
  y, x = rng.integers(0, height), rng.integers(0, width)
  return bank[..., y : y + height, x : x + width]
