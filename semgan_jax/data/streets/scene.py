"""One procedural street scene: camera and layout, then stuff, things and light painted in turn."""

import numpy as np

from semgan_jax.data.streets.canvas import (
  _Canvas,
  _ClassRuns,
  _cloud_bank,
  _crop,
  _noise_banks,
  _paint,
)
from semgan_jax.data.streets.constants import (
  _SPLIT_CODES,
  BUILDING,
  DEFAULT_HEIGHT,
  DEFAULT_SEED,
  DEFAULT_WIDTH,
  EGO_VEHICLE,
  ROAD,
  SIDEWALK,
  SKY,
  TERRAIN,
  VEGETATION,
)
from semgan_jax.data.streets.things import _Car, _Person, _Pole, _Tree

# Buildings (or tree clumps) per side of the street; the last one reaches the vanishing point.
_MAX_FACADE_SEGMENTS = 48

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


def _frac(x):
  """The fractional part x - floor(x) (in [0, 1) also for negative x; cheaper than x % 1)."""
  return x - np.floor(x)


def _planar(color):
  """A colour as a (3, 1) column, to broadcast over planar (3, n) pixels."""
  return np.asarray(color, np.float32)[:, None]


class _Scene:
  """A street scene seen by a pinhole camera over a flat street, painted step by step.

  Making one draws the camera and the layout; `paint_stuff`, `paint_things`, `paint_ego_vehicle`
  and `finish` then paint over each other, each drawing its own choices from the layout generator
  `rng`, so they run once each and in that order (which fixes every example). The texture
  generator `trng` only picks the crops of the noise banks.

  Ground rows are parameterised by t: 0 on the horizon, 1 on the bottom row. A ground point at
  t is 1 / t times as far as the bottom row, so t is proportional to the image scale there.
  Lateral positions (rel) are in road half widths from the centre line.
  """

  def __init__(self, height: int, width: int, rng: np.random.Generator, trng: np.random.Generator):
    self.h, self.w, self.rng = height, width, rng
    h, w = height, width
    fine_bank, color_bank, leafy_bank = _noise_banks(h, w)
    self.fine = _crop(fine_bank, trng, h, w)
    self.leafy = _crop(leafy_bank, trng, h, w)
    self.clouds = _crop(_cloud_bank(h, w), trng, h, w)
    self.pixel_noise = _crop(color_bank, trng, h, w)  # Sensor noise, + 0.5 for rounding.

    self.ys = ys = np.arange(h, dtype=np.float32) + 0.5
    self.xs = xs = np.arange(w, dtype=np.float32) + 0.5
    self.horizon = horizon = h * rng.uniform(0.36, 0.5)
    self.vanish_x = w * rng.uniform(0.35, 0.65)
    self.camera_m = rng.uniform(1.4, 2.2)  # Camera height above the road.
    self.road_half_m = rng.uniform(4.0, 6.5)
    # Sidewalk width in road half widths, left and right; a park side has grass between its
    # sidewalk and a tree line.
    self.sidewalk = rng.uniform(0.3, 0.6, size=2)
    self.park_side = rng.random(2) < 0.25
    setback = np.where(self.park_side, rng.uniform(0.5, 2.5, size=2), 0.0)

    self.t_row = np.clip((ys - horizon) / (h - horizon), 0.0, None)  # (H,), 0 above the horizon.
    self.below = ys > horizon
    dx = xs - self.vanish_x  # (W,)
    self.side = side = (dx >= 0).astype(int)  # 0 left, 1 right.
    self.rel = np.abs(dx)[None, :] / np.maximum(self.road_half(self.t_row), 1e-3)[:, None]
    self.outer = (1.0 + self.sidewalk[side]).astype(np.float32)  # (W,) where sidewalks end.
    front = self.outer + setback[side]  # (W,) where the facade or tree line stands.
    # The row where each column's facade (or tree line) meets the ground, and its scale there.
    ground_t = np.maximum(np.abs(dx) / (front * self.road_half(1.0)), 1e-3)
    self.ground_y = self.row_of_depth(ground_t)  # (W,), may lie below the image for near columns.
    self._lay_out_facades(ground_t, column_scale=self.px_per_m(ground_t))

  def _lay_out_facades(self, ground_t, column_scale):
    """Facade segments (buildings, or clumps of trees) of random length along the street.

    Distance along the street is proportional to 1 / t, so equal lengths shrink towards the
    vanishing point. Sets the per-column (W,) attributes of the facade each column shows.
    """
    rng, side, size = self.rng, self.side, (2, _MAX_FACADE_SEGMENTS)
    seg_len = rng.uniform(1.5, 5.0, size=size)
    seg_start = 0.3 + np.cumsum(seg_len, axis=1) - seg_len
    seg_height_m = rng.uniform(7.0, 26.0, size=size)
    seg_is_tree = rng.random(size) < 0.12
    seg_color = rng.integers(0, len(_BUILDING_COLORS), size=size)
    seg_floors = seg_height_m / rng.uniform(2.8, 3.6, size=size)
    seg_window_cols = np.round(seg_len * 4.0 / rng.uniform(2.5, 3.5, size=size))
    seg_tint = rng.uniform(0.85, 1.1, size=(*size, 1)).astype(np.float32)
    z = 1.0 / ground_t
    seg_per_side = [np.searchsorted(seg_start[s], z, side='right') - 1 for s in range(2)]
    seg = np.where(side == 0, seg_per_side[0], seg_per_side[1])
    seg = np.clip(seg, 0, _MAX_FACADE_SEGMENTS - 1)  # (W,) the segment each column shows.
    seg_u = (z - seg_start[side, seg]) / seg_len[side, seg]  # Position within the segment, 0..1.
    self.facade_top = self.ground_y - seg_height_m[side, seg] * column_scale
    self.floors = seg_floors[side, seg]
    self.is_window_col = (_frac(seg_u * seg_window_cols[side, seg]) - 0.5) ** 2 < 0.0625
    self.color_index, self.tint = seg_color[side, seg], seg_tint[side, seg]
    xs, w = self.xs, self.w
    bumps = 1.5 * np.sin(xs * (37.0 / w)) + 1.0 * np.sin(xs * (91.0 / w) + 1.3)
    self.tree_top = self.ground_y - column_scale * (rng.uniform(6.0, 10.0) + bumps)
    self.is_park_col = self.park_side[side]
    self.is_tree_col = seg_is_tree[side, seg] | self.is_park_col

  # --- Geometry. ---------------------------------------------------------------------------------

  def row_of_depth(self, t):
    return self.horizon + t * (self.h - self.horizon)

  def px_per_m(self, t):
    # A ground point on row horizon + d lies camera_m metres below the eye, so there d pixels
    # span camera_m metres; t = d / (h - horizon) is therefore proportional to the scale.
    return t * (self.h - self.horizon) / self.camera_m

  def road_half(self, t):
    return self.road_half_m * self.px_per_m(t)

  def lateral_x(self, t, rel_pos):
    return self.vanish_x + rel_pos * self.road_half(t)

  def visible_depth(self, rel_pos, far_z):
    """A depth t at which lateral position rel_pos is inside the image, uniform in distance."""
    edge = (self.w - self.vanish_x) if rel_pos > 0 else self.vanish_x
    t_max = min(1.0, 0.95 * edge / max(abs(rel_pos) * self.road_half(1.0), 1e-3))
    return 1.0 / self.rng.uniform(1.0 / t_max, max(far_z, 1.0 / t_max + 1e-3))

  def random_side(self):
    return -1.0 if self.rng.random() < 0.5 else 1.0

  def side_pos(self, x_sign, low, high):
    """A lateral position on side x_sign's sidewalk, [low, high) of the way across it."""
    return x_sign * (1.0 + self.sidewalk[int(x_sign > 0)] * self.rng.uniform(low, high))

  # --- Stuff. ------------------------------------------------------------------------------------

  def _stuff_label(self) -> np.ndarray:
    h, w, ys, below, rel = self.h, self.w, self.ys, self.below, self.rel
    label = np.full((h, w), SKY, dtype=np.uint8)
    label[below[:, None] & np.broadcast_to(self.is_park_col, (h, w))] = TERRAIN
    label[below[:, None] & np.broadcast_to(~self.is_park_col, (h, w))] = SIDEWALK
    before_ground = ys[:, None] < self.ground_y[None, :]
    is_tree_col = self.is_tree_col[None, :]
    label[before_ground & (ys[:, None] >= self.facade_top[None, :]) & ~is_tree_col] = BUILDING
    label[before_ground & (ys[:, None] >= self.tree_top[None, :]) & is_tree_col] = VEGETATION
    label[below[:, None] & (rel < self.outer[None, :])] = SIDEWALK
    label[below[:, None] & (rel < 1.0)] = ROAD
    return label

  def paint_stuff(self):
    """Paints the label map of the stuff classes, and each class's texture onto the photo."""
    label = self._stuff_label()
    runs = _ClassRuns(label)
    # Flat, contiguous copies of the per-pixel inputs, for cheap 1-d gathers.
    self.fine_f, self.leafy_f = np.ravel(self.fine).copy(), np.ravel(self.leafy).copy()
    self.clouds_f, self.rel_f = np.ravel(self.clouds).copy(), self.rel.ravel()
    # depth_z is the distance in units of the bottom row's, (H,).
    self.depth_z = (1.0 / np.maximum(self.t_row, 1e-3)).astype(np.float32)
    # Each texture draws its parameters when made, whether or not its class is in the image.
    runs.fill(SKY, self._sky_texture())
    runs.fill(ROAD, self._road_texture())
    runs.fill(SIDEWALK, self._sidewalk_texture())
    runs.fill(BUILDING, self._building_texture())
    runs.fill(VEGETATION, self._vegetation_texture())
    runs.fill(TERRAIN, self._terrain_texture())
    self.canvas = _Canvas(
      label=label, instance=label.astype(np.int32), photo=runs.photo(), leafy=self.leafy
    )

  def _sky_texture(self):
    rng = self.rng
    if rng.random() < 0.3:  # Overcast.
      sky_top = np.array([150, 156, 168], np.float32) * np.float32(rng.uniform(0.9, 1.05))
      self.sky_low = np.array([205, 206, 210], np.float32)
    else:
      sky_top = np.array([58, 108, 190], np.float32) * np.float32(rng.uniform(0.85, 1.1))
      self.sky_low = np.array([186, 206, 228], np.float32)
    grad = np.clip(self.ys / max(self.horizon, 1.0), 0.0, 1.0)[None, :]
    sky_rows = _planar(sky_top) + _planar(self.sky_low - sky_top) * grad  # (3, H)
    cloud_threshold = np.float32(1.0 - rng.uniform(0.0, 0.8))

    def texture(idx, rows, cols):
      cloud = np.clip((self.clouds_f[idx] - cloud_threshold) * 3.0, 0.0, 0.85)
      color = sky_rows[:, rows]
      return color + (np.float32(240.0) - color) * cloud

    return texture

  def _road_texture(self):
    """Asphalt with dashed centre and solid edge lines; dashes repeat in distance, i.e. in 1 / t."""
    dash = _frac(self.depth_z * np.float32(self.rng.uniform(1.2, 2.0))) < 0.5
    asphalt = np.float32(self.rng.uniform(62, 100))

    def texture(idx, rows, cols):
      r = self.rel_f[idx]
      marks = ((r < 0.025) & dash[rows]) | ((r > 0.9) & (r < 0.93))
      lum = np.where(
        marks & (self.t_row[rows] > 0.02),
        np.float32(205.0),
        asphalt * (1 + 0.07 * self.fine_f[idx]),
      )
      return _planar((1.0, 1.0, 1.03)) * lum

    return texture

  def _sidewalk_texture(self):
    """Paving slabs: joints across (in distance) and along the sidewalk, a light curb stone."""
    pave = np.array([(150, 146, 140), (168, 132, 120), (128, 128, 134)], np.float32)
    pave = _planar(pave[self.rng.integers(0, 3)])
    across = _frac(self.depth_z * np.float32(self.rng.uniform(3.0, 5.0))) < 0.12
    slabs_across = (3.0 / self.sidewalk[self.side]).astype(np.float32)  # (W,)

    def texture(idx, rows, cols):
      r = self.rel_f[idx]
      joint = across[rows] | (_frac((r - 1.0) * slabs_across[cols]) < 0.1)
      shade = np.where(joint, np.float32(0.8), np.float32(1.0))
      shade = np.where(r < 1.06, np.float32(1.18), shade) * (1.0 + 0.05 * self.fine_f[idx])
      return pave * shade

    return texture

  def _building_texture(self):
    # Facades: a colour per building, floors of windows, mortar rows on brick, a dark cornice, and
    # the sun from the left (the right-hand facades face it, the left-hand ones are in shade).
    light = np.where(self.side == 1, np.float32(1.08), np.float32(0.8))
    # Per-column facade attributes in one table, so a single gather serves every pixel.
    facade_cols = np.stack(
      [
        self.ground_y,
        1.0 / np.maximum(self.ground_y - self.facade_top, 1e-3),  # 1 / facade height in pixels.
        self.floors,
        self.is_window_col,
        _IS_BRICK[self.color_index],
        *(_BUILDING_COLORS[self.color_index] * (self.tint * light[:, None])).T,  # RGB
      ],
    ).astype(np.float32)  # (8, W)
    glass = _planar((52, 62, 78))

    def texture(idx, rows, cols):
      attrs = facade_cols[:, cols]
      ground, inv_height, floors, window_col, brick = attrs[:5]
      v = (ground - self.ys[rows]) * inv_height  # 0 at the ground, 1 at the top.
      floor_pos = v * floors
      in_floor = _frac(floor_pos)
      window = (
        (np.abs(in_floor - 0.575) < 0.225) & (floor_pos > 1.0) & (v < 0.93) & (window_col > 0)
      )
      # Mortar rows (brick only) darken, the cornice darkens more; grain everywhere.
      grain = 1.0 + 0.05 * self.fine_f[idx]
      shade = (1.0 - 0.18 * brick * (_frac(floor_pos * 4.0) < 0.14)) * grain
      shade = np.where(v > 0.97, np.float32(0.7), shade)
      return np.where(window, glass + 40.0 * np.clip(1.0 - v, 0, 1), attrs[5:] * shade)

    return texture

  def _vegetation_texture(self):
    self.green = _planar((58, 96, 40)) * np.float32(self.rng.uniform(0.8, 1.2))  # Trees reuse it.
    return lambda idx, rows, cols: self.green * self.leafy_f[idx]

  def _terrain_texture(self):
    grass = _planar((112, 138, 64)) * np.float32(self.rng.uniform(0.85, 1.1))
    return lambda idx, rows, cols: grass * (0.9 + 0.15 * self.leafy_f[idx])

  # --- Things, the ego vehicle, light. -----------------------------------------------------------

  def paint_things(self):
    """Places street trees, poles, cars and persons at random depths; paints them far to near."""
    rng, things = self.rng, []
    for s, x_sign in enumerate((-1.0, 1.0)):
      for _ in range(rng.integers(2, 6) if self.park_side[s] else rng.integers(0, 4)):
        things.append(_Tree(self, self.side_pos(x_sign, 0.75, 0.95)))
    for _ in range(rng.integers(1, 4)):
      things.append(_Pole(self, self.side_pos(self.random_side(), 0.1, 0.2)))
    for _ in range(rng.integers(2, 7)):
      lane = (-0.82, -0.45, 0.45, 0.82)[np.searchsorted([0.2, 0.5, 0.8], rng.random())]
      things.append(_Car(self, lane + rng.uniform(-0.08, 0.08)))
    for _ in range(rng.integers(1, 5)):
      if rng.random() < 0.2:  # Crossing the road.
        things.append(_Person(self, rng.uniform(-0.9, 0.9)))
      else:
        things.append(_Person(self, self.side_pos(self.random_side(), 0.1, 0.8)))
    for thing in sorted(things, key=lambda thing: thing.t):
      t = thing.t
      yb, cx = self.row_of_depth(t), self.lateral_x(t, thing.rel_pos)
      thing.draw(self.canvas, self.px_per_m(t), yb, cx)

  def paint_ego_vehicle(self):
    """The bonnet of the ego vehicle, as in most Cityscapes frames."""
    rng, h, w, xs = self.rng, self.h, self.w, self.xs
    if rng.random() < 0.8:
      bonnet = h * rng.uniform(0.05, 0.1)
      top = h - bonnet * (1.0 - ((xs - w / 2) / (0.8 * w)) ** 2)
      r0 = int(h - bonnet)  # Only the bottom rows can hold the bonnet.
      ego = self.ys[r0:, None] >= top[None, :]
      paint = np.array([40, 42, 48], np.float32) * np.float32(rng.uniform(0.8, 1.6))
      sheen = 1.0 + 0.5 * np.exp(-(((xs - w / 2) / (0.2 * w)) ** 2))  # (W,)
      color = (_planar(paint) * sheen)[:, None, :]
      _paint(self.canvas, (r0, h, 0, w), ego, EGO_VEHICLE, EGO_VEHICLE, color)

  def finish(self) -> dict[str, np.ndarray]:
    """Atmosphere, light and sensor noise over the photo; returns the example."""
    # Haze towards the horizon and a slight darkening towards the bottom, as one affine map per row.
    ys, h = self.ys, self.h
    haze = 0.35 * np.exp(-np.abs(ys - self.horizon) / (0.12 * h))
    darken = 1.0 - 0.12 * (ys / h) ** 2
    gain = ((1.0 - haze) * darken).astype(np.float32)  # (H,)
    offset = _planar(self.sky_low) * (haze * darken)  # (3, H)
    out = self.canvas.photo
    out *= gain[None, :, None]
    out += offset[:, :, None]
    out += self.pixel_noise
    image = np.clip(out, 0, 255, out=out).transpose(1, 2, 0).astype(np.uint8)
    return {'image': image, 'label': self.canvas.label, 'instance': self.canvas.instance}


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
  rng, trng = np.random.default_rng(layout_seq), np.random.default_rng(texture_seq)
  scene = _Scene(height, width, rng, trng)
  scene.paint_stuff()
  scene.paint_things()
  scene.paint_ego_vehicle()
  return scene.finish()
