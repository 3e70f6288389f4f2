"""Procedural street scenes: paired Cityscapes-id label maps, instance maps and rendered photos."""

import dataclasses
import functools
import math

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from semgan_jax.data import cityscapes, paired

# Cityscapes label ids of the classes the scenes use (see cityscapes.CLASS_NAMES).
EGO_VEHICLE, ROAD, SIDEWALK, BUILDING = 1, 7, 8, 11
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 17, 19, 20, 21, 22, 23
PERSON, CAR = 24, 26
CLASS_IDS = (
  EGO_VEHICLE,
  ROAD,
  SIDEWALK,
  BUILDING,
  POLE,
  TRAFFIC_LIGHT,
  TRAFFIC_SIGN,
  VEGETATION,
  TERRAIN,
  SKY,
  PERSON,
  CAR,
)
NUM_CLASSES = cityscapes.NUM_CLASSES
DEFAULT_SEED = 0
DEFAULT_HEIGHT, DEFAULT_WIDTH = 128, 256
SPLITS = {'train': 2000, 'validation': 200}
# The smaller configs hold the first examples of the same splits, so they prepare in seconds.
SMALL_SPLITS = {'train': 1000, 'validation': 100}  # '64x128'.
TINY_SPLITS = {'train': 200, 'validation': 20}  # '32x64', for tests.
# Folded into every example's seed, so the two splits never share a scene.
_SPLIT_CODES = {'train': 0, 'validation': 1}

# Buildings (or tree clumps) per side of the street; the last one reaches the vanishing point.
_MAX_FACADE_SEGMENTS = 48
# Objects smaller than this many pixels across are drawn with fewer parts (their details would
# not cover a pixel, and every part costs time).
_DETAIL_PX = 10.0

_BUILDING_COLORS = np.array(
  [
    (176, 164, 146),  # sandstone
    (150, 82, 66),  # red brick
    (196, 190, 178),  # plaster
    (120, 118, 116),  # concrete
    (168, 126, 92),  # yellow brick
    (214, 206, 190),  # white render
    (98, 88, 84),  # dark brick
  ],
  dtype=np.float32,
)
# Which of _BUILDING_COLORS are brick and get mortar rows.
_IS_BRICK = np.array([0, 1, 0, 0, 1, 0, 1], dtype=bool)
_CAR_COLORS = np.array(
  [
    (200, 200, 205),
    (30, 30, 34),
    (140, 24, 28),
    (28, 52, 120),
    (120, 124, 130),
    (230, 230, 226),
    (40, 90, 60),
    (190, 150, 40),
  ],
  dtype=np.float32,
)
_SKIN_COLORS = np.array([(224, 180, 150), (190, 140, 105), (140, 96, 70), (96, 64, 48)], np.float32)

_DESCRIPTION = f"""\
Procedural street scenes: label maps of Cityscapes label ids ({len(CLASS_IDS)} of the 35 classes: \
ego vehicle, road, sidewalk, building, pole, traffic light, traffic sign, vegetation, terrain, \
sky, person, car), instance maps in the Cityscapes convention (label_id * 1000 + k for cars and \
persons, the label id elsewhere) and photos rendered from the label maps with per-class textures. \
Every example is a pure function of (seed {DEFAULT_SEED}, split, index); nothing is downloaded. \
Splits: {SPLITS} at 128x256, the first {SMALL_SPLITS} of them at 64x128 and \
{TINY_SPLITS} at 32x64.
"""


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


def _frac(x):
  """The fractional part x - floor(x) (in [0, 1) also for negative x; cheaper than x % 1)."""
  return x - np.floor(x)


def _thin_width(width_px: float) -> float:
  """Keeps thin objects (poles, trunks) at least one pixel wide, so they never vanish."""
  return max(width_px, 1.0)


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


def render_street(
  index: int,
  *,
  seed: int = DEFAULT_SEED,
  split: str = 'train',
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
) -> dict[str, np.ndarray]:
  """Renders one street scene.

  The scene's layout is drawn in resolution-independent units, so the same (seed, split, index)
  gives the same scene at every size. A flat road runs to a vanishing point on the horizon between
  two sidewalks; beyond them each side is a row of buildings (with windows, and the odd tree
  clump) or a park (grass and a tree line). Street trees, poles with signs or traffic lights,
  cars on the road and persons on the sidewalks (sometimes crossing) are placed at random depths
  and painted far to near; the bonnet of the ego vehicle may show at the bottom.

  Args:
    index: Index of the example within its split, any non-negative integer.
    seed: Seed of the whole data set.
    split: 'train' or 'validation'; the splits never share a scene.
    height: Image height in pixels.
    width: Image width in pixels.

  Returns:
    A dict with `image` uint8 (H, W, 3), `label` uint8 (H, W) Cityscapes label ids (a subset of
    CLASS_IDS) and `instance` int32 (H, W): `label_id * 1000 + k` on the k-th car or person
    (k counted from 0 per class, in painting order), the label id everywhere else.

  Raises:
    ValueError: If the split is unknown, the index negative or the size below 16 x 16.
  """
  if split not in _SPLIT_CODES:
    raise ValueError(f'Unknown split {split!r}; expected one of {sorted(_SPLIT_CODES)}')
  if index < 0:
    raise ValueError(f'index must be non-negative, got {index}')
  if height < 16 or width < 16:
    raise ValueError(f'height and width must be at least 16, got {height}x{width}')
  layout_seq, texture_seq = np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).spawn(2)
  rng = np.random.default_rng(layout_seq)
  trng = np.random.default_rng(texture_seq)
  h, w = height, width
  fine_bank, color_bank, leafy_bank = _noise_banks(h, w)
  fine = _crop(fine_bank, trng, h, w)
  leafy = _crop(leafy_bank, trng, h, w)
  clouds = _crop(_cloud_bank(h, w), trng, h, w)
  pixel_noise = _crop(color_bank, trng, h, w)  # Sensor noise, + 0.5 for rounding.

  # --- Geometry: a pinhole camera over a flat street. --------------------------------------------
  ys = np.arange(h, dtype=np.float32) + 0.5
  xs = np.arange(w, dtype=np.float32) + 0.5
  horizon = h * rng.uniform(0.36, 0.5)
  vanish_x = w * rng.uniform(0.35, 0.65)
  camera_m = rng.uniform(1.4, 2.2)  # Camera height above the road.
  road_half_m = rng.uniform(4.0, 6.5)
  # Sidewalk width in road half widths, left and right; a park side has grass between its
  # sidewalk and a tree line.
  sidewalk = rng.uniform(0.3, 0.6, size=2)
  park_side = rng.random(2) < 0.25
  setback = np.where(park_side, rng.uniform(0.5, 2.5, size=2), 0.0)

  # Ground rows are parameterised by t: 0 on the horizon, 1 on the bottom row. A ground point at
  # t is 1 / t times as far as the bottom row, so t is proportional to the image scale there.
  def row_of_depth(t):
    return horizon + t * (h - horizon)

  def px_per_m(t):
    # A ground point on row horizon + d lies camera_m metres below the eye, so there d pixels
    # span camera_m metres; t = d / (h - horizon) is therefore proportional to the scale.
    return t * (h - horizon) / camera_m

  def road_half(t):
    return road_half_m * px_per_m(t)

  t_row = np.clip((ys - horizon) / (h - horizon), 0.0, None)  # (H,), 0 at and above the horizon.
  below = ys > horizon
  dx = xs - vanish_x  # (W,)
  side = (dx >= 0).astype(int)  # 0 left, 1 right.
  # Lateral distance from the centre line in road half widths.
  rel = np.abs(dx)[None, :] / np.maximum(road_half(t_row), 1e-3)[:, None]
  outer = (1.0 + sidewalk[side]).astype(np.float32)  # (W,) where each column's sidewalk ends.
  front = outer + setback[side]  # (W,) where the facade or tree line stands.

  # The row where each column's facade (or tree line) meets the ground, and its scale there.
  ground_t = np.maximum(np.abs(dx) / (front * road_half(1.0)), 1e-3)
  ground_y = row_of_depth(ground_t)  # (W,), may lie below the image for near columns.
  column_scale = px_per_m(ground_t)  # (W,) pixels per metre on the facade.

  # Facade segments (buildings, or clumps of trees) of random length along the street. Distance
  # along the street is proportional to 1 / t, so equal lengths shrink towards the vanishing point.
  seg_len = rng.uniform(1.5, 5.0, size=(2, _MAX_FACADE_SEGMENTS))
  seg_start = 0.3 + np.cumsum(seg_len, axis=1) - seg_len
  seg_height_m = rng.uniform(7.0, 26.0, size=(2, _MAX_FACADE_SEGMENTS))
  seg_is_tree = rng.random((2, _MAX_FACADE_SEGMENTS)) < 0.12
  seg_color = rng.integers(0, len(_BUILDING_COLORS), size=(2, _MAX_FACADE_SEGMENTS))
  seg_floors = seg_height_m / rng.uniform(2.8, 3.6, size=(2, _MAX_FACADE_SEGMENTS))
  seg_window_cols = np.round(seg_len * 4.0 / rng.uniform(2.5, 3.5, size=(2, _MAX_FACADE_SEGMENTS)))
  seg_tint = rng.uniform(0.85, 1.1, size=(2, _MAX_FACADE_SEGMENTS, 1)).astype(np.float32)
  z = 1.0 / ground_t
  seg_per_side = [np.searchsorted(seg_start[s], z, side='right') - 1 for s in range(2)]
  seg = np.clip(np.where(side == 0, seg_per_side[0], seg_per_side[1]), 0, _MAX_FACADE_SEGMENTS - 1)
  seg_u = (z - seg_start[side, seg]) / seg_len[side, seg]  # Position within the segment, 0..1.
  facade_top = ground_y - seg_height_m[side, seg] * column_scale
  bumps = 1.5 * np.sin(xs * (37.0 / w)) + 1.0 * np.sin(xs * (91.0 / w) + 1.3)
  tree_top = ground_y - column_scale * (rng.uniform(6.0, 10.0) + bumps)
  is_park_col = park_side[side]
  is_tree_col = seg_is_tree[side, seg] | is_park_col

  # --- Stuff: label map. ------------------------------------------------------------------------
  label = np.full((h, w), SKY, dtype=np.uint8)
  label[below[:, None] & np.broadcast_to(is_park_col, (h, w))] = TERRAIN
  label[below[:, None] & np.broadcast_to(~is_park_col, (h, w))] = SIDEWALK
  before_ground = ys[:, None] < ground_y[None, :]
  label[before_ground & (ys[:, None] >= facade_top[None, :]) & ~is_tree_col[None, :]] = BUILDING
  label[before_ground & (ys[:, None] >= tree_top[None, :]) & is_tree_col[None, :]] = VEGETATION
  label[below[:, None] & (rel < outer[None, :])] = SIDEWALK
  label[below[:, None] & (rel < 1.0)] = ROAD

  # --- Stuff: photo. -----------------------------------------------------------------------------
  # Each class's texture is computed on that class's pixels only, in the order of one stable sort
  # of the flat label map (so every class is a contiguous run), and the runs are put back in
  # image order with a single gather. Colours are planar: (3, n), never (n, 3).
  flat_label = label.ravel()
  order = np.argsort(flat_label, kind='stable')
  bounds = np.searchsorted(flat_label[order], np.arange(257), side='left')
  by_class = np.empty((3, h * w), dtype=np.float32)
  # Flat, contiguous copies of the per-pixel inputs, for cheap 1-d gathers.
  fine_f, leafy_f = np.ravel(fine).copy(), np.ravel(leafy).copy()
  clouds_f, rel_f = np.ravel(clouds).copy(), rel.ravel()

  def fill(label_id, texture):
    start, stop = bounds[label_id], bounds[label_id + 1]
    if stop > start:
      idx = order[start:stop]
      rows = idx // w
      by_class[:, start:stop] = texture(idx, rows, idx - rows * w)

  def col(color):
    return np.asarray(color, np.float32)[:, None]

  overcast = rng.random() < 0.3
  if overcast:
    sky_top = np.array([150, 156, 168], np.float32) * np.float32(rng.uniform(0.9, 1.05))
    sky_low = np.array([205, 206, 210], np.float32)
  else:
    sky_top = np.array([58, 108, 190], np.float32) * np.float32(rng.uniform(0.85, 1.1))
    sky_low = np.array([186, 206, 228], np.float32)
  grad = np.clip(ys / max(horizon, 1.0), 0.0, 1.0)[None, :]
  sky_rows = col(sky_top) + col(sky_low - sky_top) * grad  # (3, H)
  cloud_threshold = np.float32(1.0 - rng.uniform(0.0, 0.8))

  def sky_texture(idx, rows, cols):
    cloud = np.clip((clouds_f[idx] - cloud_threshold) * 3.0, 0.0, 0.85)
    color = sky_rows[:, rows]
    return color + (np.float32(240.0) - color) * cloud

  # Asphalt with dashed centre and solid edge lines; dashes repeat in distance, i.e. in 1 / t.
  depth_z = (1.0 / np.maximum(t_row, 1e-3)).astype(np.float32)  # (H,)
  dash = _frac(depth_z * np.float32(rng.uniform(1.2, 2.0))) < 0.5
  asphalt = np.float32(rng.uniform(62, 100))

  def road_texture(idx, rows, cols):
    r = rel_f[idx]
    marks = ((r < 0.025) & dash[rows]) | ((r > 0.9) & (r < 0.93))
    lum = np.where(
      marks & (t_row[rows] > 0.02), np.float32(205.0), asphalt * (1 + 0.07 * fine_f[idx])
    )
    return col((1.0, 1.0, 1.03)) * lum

  # Paving slabs: joints across (in distance) and along the sidewalk, a light curb stone.
  pave = np.array([(150, 146, 140), (168, 132, 120), (128, 128, 134)], np.float32)
  pave = col(pave[rng.integers(0, 3)])
  across = _frac(depth_z * np.float32(rng.uniform(3.0, 5.0))) < 0.12
  slabs_across = (3.0 / sidewalk[side]).astype(np.float32)  # (W,)

  def sidewalk_texture(idx, rows, cols):
    r = rel_f[idx]
    joint = across[rows] | (_frac((r - 1.0) * slabs_across[cols]) < 0.1)
    shade = np.where(joint, np.float32(0.8), np.float32(1.0))
    shade = np.where(r < 1.06, np.float32(1.18), shade) * (1.0 + 0.05 * fine_f[idx])
    return pave * shade

  # Facades: a colour per building, floors of windows, mortar rows on brick, a dark cornice, and
  # the sun from the left (the right-hand facades face it, the left-hand ones are in shade).
  light = np.where(side == 1, np.float32(1.08), np.float32(0.8))
  # Per-column facade attributes in one table, so a single gather serves every pixel.
  facade_cols = np.stack(
    [
      ground_y,
      1.0 / np.maximum(ground_y - facade_top, 1e-3),  # 1 / facade height in pixels.
      seg_floors[side, seg],
      (_frac(seg_u * seg_window_cols[side, seg]) - 0.5) ** 2 < 0.0625,  # A window column.
      _IS_BRICK[seg_color[side, seg]],
      *(_BUILDING_COLORS[seg_color[side, seg]] * (seg_tint[side, seg] * light[:, None])).T,  # RGB
    ],
  ).astype(np.float32)  # (8, W)
  glass = col((52, 62, 78))

  def building_texture(idx, rows, cols):
    attrs = facade_cols[:, cols]
    ground, inv_height, floors, window_col, brick = attrs[:5]
    v = (ground - ys[rows]) * inv_height  # 0 at the ground, 1 at the top.
    floor_pos = v * floors
    in_floor = _frac(floor_pos)
    window = (np.abs(in_floor - 0.575) < 0.225) & (floor_pos > 1.0) & (v < 0.93) & (window_col > 0)
    # Mortar rows (brick only) darken, the cornice darkens more; grain everywhere.
    shade = (1.0 - 0.18 * brick * (_frac(floor_pos * 4.0) < 0.14)) * (1.0 + 0.05 * fine_f[idx])
    shade = np.where(v > 0.97, np.float32(0.7), shade)
    return np.where(window, glass + 40.0 * np.clip(1.0 - v, 0, 1), attrs[5:] * shade)

  green = col((58, 96, 40)) * np.float32(rng.uniform(0.8, 1.2))
  grass = col((112, 138, 64)) * np.float32(rng.uniform(0.85, 1.1))

  fill(SKY, sky_texture)
  fill(ROAD, road_texture)
  fill(SIDEWALK, sidewalk_texture)
  fill(BUILDING, building_texture)
  fill(VEGETATION, lambda idx, rows, cols: green * leafy_f[idx])
  fill(TERRAIN, lambda idx, rows, cols: grass * (0.9 + 0.15 * leafy_f[idx]))
  position = np.empty_like(order)
  position[order] = np.arange(h * w)  # Where each pixel landed in the sort.
  photo = np.take(by_class, position, axis=1).reshape(3, h, w)
  canvas = _Canvas(label=label, instance=label.astype(np.int32), photo=photo, leafy=leafy)

  # --- Things and small objects, painted far to near. -------------------------------------------
  objects = []  # (t, draw function)

  def lateral_x(t, rel_pos):
    return vanish_x + rel_pos * road_half(t)

  def visible_depth(rel_pos, far_z):
    """A depth t at which lateral position rel_pos is inside the image, uniform in distance."""
    edge = (w - vanish_x) if rel_pos > 0 else vanish_x
    t_max = min(1.0, 0.95 * edge / max(abs(rel_pos) * road_half(1.0), 1e-3))
    return 1.0 / rng.uniform(1.0 / t_max, max(far_z, 1.0 / t_max + 1e-3))

  def random_side():
    return -1.0 if rng.random() < 0.5 else 1.0

  def side_pos(x_sign, low, high):
    return x_sign * (1.0 + sidewalk[int(x_sign > 0)] * rng.uniform(low, high))

  def add_tree(rel_pos):
    t = visible_depth(rel_pos, 12.0)
    trunk_m, crown_rx, crown_ry = rng.uniform(2.5, 4.0), rng.uniform(1.6, 2.8), rng.uniform(2, 3)
    crown = green * np.float32(rng.uniform(0.8, 1.15))

    def draw():
      s, yb, cx = px_per_m(t), row_of_depth(t), lateral_x(t, rel_pos)
      half = _thin_width(0.35 * s) / 2
      _rect(
        canvas, yb - trunk_m * s, yb, cx - half, cx + half, VEGETATION, VEGETATION, (86, 66, 48)
      )
      cy = yb - (trunk_m + 0.7 * crown_ry) * s
      _ellipse(
        canvas, cy, cx, crown_ry * s, crown_rx * s, VEGETATION, VEGETATION, crown, texture=True
      )

    objects.append((t, draw))

  def add_pole(rel_pos):
    t = visible_depth(rel_pos, 10.0)
    pole_m = rng.uniform(3.5, 6.5)
    kind = ('sign', 'light', 'bare')[np.searchsorted([0.5, 0.8], rng.random())]
    round_sign = rng.random() < 0.5
    rim, face = [((200, 30, 30), (235, 235, 235)), ((30, 70, 170), (230, 230, 230))][
      rng.integers(0, 2)
    ]
    lamp = rng.integers(0, 3)

    def draw():
      s, yb, cx = px_per_m(t), row_of_depth(t), lateral_x(t, rel_pos)
      half, top = _thin_width(0.16 * s) / 2, yb - pole_m * s
      _rect(canvas, top, yb, cx - half, cx + half, POLE, POLE, (140, 142, 146), shade=(1.1, 0.8))
      if kind == 'sign':
        r = max(0.4 * s, 1.0)
        cy = top + r
        if round_sign:
          _ellipse(canvas, cy, cx, r, r, TRAFFIC_SIGN, TRAFFIC_SIGN, rim)
          _ellipse(canvas, cy, cx, 0.6 * r, 0.6 * r, TRAFFIC_SIGN, TRAFFIC_SIGN, face)
        else:
          _rect(canvas, cy - r, cy + r, cx - r, cx + r, TRAFFIC_SIGN, TRAFFIC_SIGN, face)
          q = 0.6 * r
          _rect(canvas, cy - q, cy + q, cx - q, cx + q, TRAFFIC_SIGN, TRAFFIC_SIGN, rim)
      elif kind == 'light':
        bw, bh = max(0.2 * s, 1.0), max(1.0 * s, 3.0)
        _rect(canvas, top, top + bh, cx - bw, cx + bw, TRAFFIC_LIGHT, TRAFFIC_LIGHT, (34, 34, 36))
        lamp_color = [(240, 40, 30), (250, 180, 20), (60, 230, 90)][lamp]
        r = 0.6 * bw
        cy = top + (lamp + 0.5) * bh / 3
        _ellipse(canvas, cy, cx, r, r, TRAFFIC_LIGHT, TRAFFIC_LIGHT, lamp_color)

    objects.append((t, draw))

  def add_car(rel_pos):
    t = visible_depth(rel_pos, 14.0)
    color = _CAR_COLORS[rng.integers(0, len(_CAR_COLORS))] * np.float32(rng.uniform(0.85, 1.1))
    width_m, height_m = rng.uniform(1.7, 2.0), rng.uniform(1.35, 1.7)
    lamp = (200, 24, 24) if rng.random() < 0.6 else (236, 236, 220)  # Rear or front view.

    def draw():
      s, yb, cx = px_per_m(t), row_of_depth(t), lateral_x(t, rel_pos)
      cw, ch = width_m * s, height_m * s
      ins = canvas.new_instance(CAR)

      def part(y0, y1, x0, x1, part_color, **kwargs):
        _rect(
          canvas,
          yb - y0 * ch,
          yb - y1 * ch,
          cx + x0 * cw,
          cx + x1 * cw,
          CAR,
          ins,
          part_color,
          **kwargs,
        )

      part(0.14, 0.0, -0.5, 0.5, (34, 34, 36))  # Shadowed underside.
      part(0.58, 0.12, -0.5, 0.5, color, shade=(1.1, 0.85))  # Body.
      _trapezoid(canvas, yb - ch, yb - 0.56 * ch, cx, 0.36 * cw, 0.45 * cw, CAR, ins, color * 0.95)
      _trapezoid(
        canvas,
        yb - 0.94 * ch,
        yb - 0.62 * ch,
        cx,
        0.3 * cw,
        0.39 * cw,
        CAR,
        ins,
        (46, 56, 70),
        shade=(1.3, 0.8),
      )  # Windscreen.
      for sign in (-1, 1):
        part(0.2, 0.0, sign * 0.47 - 0.1, sign * 0.47 + 0.1, (16, 16, 18))  # Wheel.
      if cw >= _DETAIL_PX:  # Lamps and plate only where they span pixels.
        for sign in (-1, 1):
          part(0.5, 0.4, sign * 0.41 - 0.07, sign * 0.41 + 0.07, lamp)
        part(0.32, 0.22, -0.12, 0.12, (228, 228, 228))  # Number plate.

    objects.append((t, draw))

  def add_person(rel_pos):
    t = visible_depth(rel_pos, 10.0)
    height_m = rng.uniform(1.55, 1.95)
    shirt, trousers = rng.uniform(20, 230, size=3), rng.uniform(20, 120, size=3)
    skin = _SKIN_COLORS[rng.integers(0, len(_SKIN_COLORS))]
    hair = np.full(3, rng.uniform(15, 90))

    def draw():
      s, yb, cx = px_per_m(t), row_of_depth(t), lateral_x(t, rel_pos)
      ph = height_m * s
      ins = canvas.new_instance(PERSON)

      def part(y0, y1, x0, x1, part_color, **kwargs):
        _rect(
          canvas,
          yb - y0 * ph,
          yb - y1 * ph,
          cx + x0 * ph,
          cx + x1 * ph,
          PERSON,
          ins,
          part_color,
          **kwargs,
        )

      if ph >= 2 * _DETAIL_PX:
        part(0.48, 0.0, -0.12, -0.015, trousers)  # Legs.
        part(0.48, 0.0, 0.015, 0.12, trousers)
        part(0.82, 0.46, -0.15, 0.15, shirt, shade=(1.1, 0.85))
        _ellipse(canvas, yb - 0.9 * ph, cx, 0.085 * ph, 0.065 * ph, PERSON, ins, skin)
        _ellipse(canvas, yb - 0.94 * ph, cx, 0.05 * ph, 0.066 * ph, PERSON, ins, hair)
      else:  # A few pixels tall: legs, body and head as blocks.
        part(0.48, 0.0, -0.1, 0.1, trousers)
        part(0.82, 0.46, -0.14, 0.14, shirt)
        part(0.98, 0.82, -0.07, 0.07, skin)

    objects.append((t, draw))

  for s, x_sign in enumerate((-1.0, 1.0)):
    for _ in range(rng.integers(2, 6) if park_side[s] else rng.integers(0, 4)):
      add_tree(side_pos(x_sign, 0.75, 0.95))
  for _ in range(rng.integers(1, 4)):
    add_pole(side_pos(random_side(), 0.1, 0.2))
  for _ in range(rng.integers(2, 7)):
    lane = (-0.82, -0.45, 0.45, 0.82)[np.searchsorted([0.2, 0.5, 0.8], rng.random())]
    add_car(lane + rng.uniform(-0.08, 0.08))
  for _ in range(rng.integers(1, 5)):
    if rng.random() < 0.2:  # Crossing the road.
      add_person(rng.uniform(-0.9, 0.9))
    else:
      add_person(side_pos(random_side(), 0.1, 0.8))
  for _, draw in sorted(objects, key=lambda item: item[0]):
    draw()

  # The bonnet of the ego vehicle, as in most Cityscapes frames.
  if rng.random() < 0.8:
    bonnet = h * rng.uniform(0.05, 0.1)
    top = h - bonnet * (1.0 - ((xs - w / 2) / (0.8 * w)) ** 2)
    r0 = int(h - bonnet)  # Only the bottom rows can hold the bonnet.
    ego = ys[r0:, None] >= top[None, :]
    paint = np.array([40, 42, 48], np.float32) * np.float32(rng.uniform(0.8, 1.6))
    sheen = 1.0 + 0.5 * np.exp(-(((xs - w / 2) / (0.2 * w)) ** 2))  # (W,)
    _paint(canvas, (r0, h, 0, w), ego, EGO_VEHICLE, EGO_VEHICLE, (col(paint) * sheen)[:, None, :])

  # --- Atmosphere, light and sensor noise. ------------------------------------------------------
  # Haze towards the horizon and a slight darkening towards the bottom, as one affine map per row.
  haze = 0.35 * np.exp(-np.abs(ys - horizon) / (0.12 * h))
  darken = 1.0 - 0.12 * (ys / h) ** 2
  gain = ((1.0 - haze) * darken).astype(np.float32)  # (H,)
  offset = col(sky_low) * (haze * darken)  # (3, H)
  out = canvas.photo
  out *= gain[None, :, None]
  out += offset[:, :, None]
  out += pixel_noise
  image = np.clip(out, 0, 255, out=out).transpose(1, 2, 0).astype(np.uint8)
  return {'image': image, 'label': canvas.label, 'instance': canvas.instance}


class StreetsConfig(tfds.core.BuilderConfig):
  """A resolution of the streets data set, with its split sizes."""

  def __init__(self, *, height: int, width: int, splits: dict[str, int], **kwargs):
    super().__init__(name=f'{height}x{width}', **kwargs)
    self.height = height
    self.width = width
    self.splits = dict(splits)


class Streets(tfds.core.GeneratorBasedBuilder):
  """Procedural street scenes rendered from DEFAULT_SEED (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The same scenes at every resolution (the layout is drawn in resolution-independent units).
  BUILDER_CONFIGS = [
    StreetsConfig(height=128, width=256, splits=SPLITS, description='128x256 (H x W), default.'),
    StreetsConfig(height=64, width=128, splits=SMALL_SPLITS, description='64x128, CPU runs.'),
    StreetsConfig(height=32, width=64, splits=TINY_SPLITS, description='32x64, for tests.'),
  ]
  # See ColoredShapes.code_path: tfds cannot find the file through importlib_resources here.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=paired.paired_features(config.height, config.width, png=False),
      supervised_keys=None,
      homepage=None,
      # Storage order == index order, so data-source element i is render_street(i, split=...).
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    return {
      split: self._generate_examples(split, n) for split, n in self.builder_config.splits.items()
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config

    def make(i):
      return render_street(i, split=split, height=config.height, width=config.width)

    yield from enumerate(paired.map_in_order(make, range(num_examples)))
