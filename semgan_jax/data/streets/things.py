"""What stands in a street scene: street trees, poles with signs or lights, cars and persons."""

import numpy as np

from semgan_jax.data.streets.canvas import _ellipse, _rect, _trapezoid
from semgan_jax.data.streets.constants import (
  CAR,
  PERSON,
  POLE,
  TRAFFIC_LIGHT,
  TRAFFIC_SIGN,
  VEGETATION,
)

# Objects smaller than this many pixels across are drawn with fewer parts (their details would
# not cover a pixel, and every part costs time).
_DETAIL_PX = 10.0

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


def _thin_width(width_px: float) -> float:
  """Keeps thin objects (poles, trunks) at least one pixel wide, so they never vanish."""
  return max(width_px, 1.0)


class _Thing:
  """An object on the ground at lateral position rel_pos (in road half widths) and depth t.

  Made, it draws its depth and then its looks from the scene's layout generator; `draw` paints it
  onto the canvas at scale s (pixels per metre), with its foot on row yb, centred on column cx.
  """

  far_z = 10.0  # How far it may stand, as 1 / t.

  def __init__(self, scene, rel_pos: float):
    self.rel_pos = rel_pos
    self.t = scene.visible_depth(rel_pos, self.far_z)

  def draw(self, canvas, s: float, yb: float, cx: float):
    raise NotImplementedError


class _Tree(_Thing):
  """A street tree: a trunk and an elliptic crown of foliage."""

  far_z = 12.0

  def __init__(self, scene, rel_pos):
    super().__init__(scene, rel_pos)
    rng = scene.rng
    self.trunk_m, self.crown_rx = rng.uniform(2.5, 4.0), rng.uniform(1.6, 2.8)
    self.crown_ry = rng.uniform(2, 3)
    self.crown = scene.green * np.float32(rng.uniform(0.8, 1.15))

  def draw(self, canvas, s, yb, cx):
    half = _thin_width(0.35 * s) / 2
    _rect(
      canvas, yb - self.trunk_m * s, yb, cx - half, cx + half, VEGETATION, VEGETATION, (86, 66, 48)
    )
    cy = yb - (self.trunk_m + 0.7 * self.crown_ry) * s
    ry, rx = self.crown_ry * s, self.crown_rx * s
    _ellipse(canvas, cy, cx, ry, rx, VEGETATION, VEGETATION, self.crown, texture=True)


class _Pole(_Thing):
  """A pole, bare or with a traffic sign (round or square) or a traffic light on top."""

  def __init__(self, scene, rel_pos):
    super().__init__(scene, rel_pos)
    rng = scene.rng
    self.pole_m = rng.uniform(3.5, 6.5)
    self.kind = ('sign', 'light', 'bare')[np.searchsorted([0.5, 0.8], rng.random())]
    self.round_sign = rng.random() < 0.5
    self.rim, self.face = [((200, 30, 30), (235, 235, 235)), ((30, 70, 170), (230, 230, 230))][
      rng.integers(0, 2)
    ]
    self.lamp = rng.integers(0, 3)

  def draw(self, canvas, s, yb, cx):
    half, top = _thin_width(0.16 * s) / 2, yb - self.pole_m * s
    _rect(canvas, top, yb, cx - half, cx + half, POLE, POLE, (140, 142, 146), shade=(1.1, 0.8))
    rim, face = self.rim, self.face
    if self.kind == 'sign':
      r = max(0.4 * s, 1.0)
      cy = top + r
      if self.round_sign:
        _ellipse(canvas, cy, cx, r, r, TRAFFIC_SIGN, TRAFFIC_SIGN, rim)
        _ellipse(canvas, cy, cx, 0.6 * r, 0.6 * r, TRAFFIC_SIGN, TRAFFIC_SIGN, face)
      else:
        _rect(canvas, cy - r, cy + r, cx - r, cx + r, TRAFFIC_SIGN, TRAFFIC_SIGN, face)
        q = 0.6 * r
        _rect(canvas, cy - q, cy + q, cx - q, cx + q, TRAFFIC_SIGN, TRAFFIC_SIGN, rim)
    elif self.kind == 'light':
      bw, bh = max(0.2 * s, 1.0), max(1.0 * s, 3.0)
      _rect(canvas, top, top + bh, cx - bw, cx + bw, TRAFFIC_LIGHT, TRAFFIC_LIGHT, (34, 34, 36))
      lamp_color = [(240, 40, 30), (250, 180, 20), (60, 230, 90)][self.lamp]
      r = 0.6 * bw
      cy = top + (self.lamp + 0.5) * bh / 3
      _ellipse(canvas, cy, cx, r, r, TRAFFIC_LIGHT, TRAFFIC_LIGHT, lamp_color)


class _Car(_Thing):
  """A car seen from behind (red lamps) or from the front, boxes under a trapezoid cabin."""

  far_z = 14.0

  def __init__(self, scene, rel_pos):
    super().__init__(scene, rel_pos)
    rng = scene.rng
    self.color = _CAR_COLORS[rng.integers(0, len(_CAR_COLORS))] * np.float32(rng.uniform(0.85, 1.1))
    self.width_m, self.height_m = rng.uniform(1.7, 2.0), rng.uniform(1.35, 1.7)
    self.lamp = (200, 24, 24) if rng.random() < 0.6 else (236, 236, 220)  # Rear or front view.

  def draw(self, canvas, s, yb, cx):
    cw, ch = self.width_m * s, self.height_m * s
    color, ins = self.color, canvas.new_instance(CAR)

    def part(y0, y1, x0, x1, part_color, **kwargs):  # A box in units of the car's size.
      y0, y1, x0, x1 = yb - y0 * ch, yb - y1 * ch, cx + x0 * cw, cx + x1 * cw
      _rect(canvas, y0, y1, x0, x1, CAR, ins, part_color, **kwargs)

    part(0.14, 0.0, -0.5, 0.5, (34, 34, 36))  # Shadowed underside.
    part(0.58, 0.12, -0.5, 0.5, color, shade=(1.1, 0.85))  # Body.
    _trapezoid(canvas, yb - ch, yb - 0.56 * ch, cx, 0.36 * cw, 0.45 * cw, CAR, ins, color * 0.95)
    y0, y1 = yb - 0.94 * ch, yb - 0.62 * ch  # Windscreen.
    _trapezoid(canvas, y0, y1, cx, 0.3 * cw, 0.39 * cw, CAR, ins, (46, 56, 70), shade=(1.3, 0.8))
    for sign in (-1, 1):
      part(0.2, 0.0, sign * 0.47 - 0.1, sign * 0.47 + 0.1, (16, 16, 18))  # Wheel.
    if cw >= _DETAIL_PX:  # Lamps and plate only where they span pixels.
      for sign in (-1, 1):
        part(0.5, 0.4, sign * 0.41 - 0.07, sign * 0.41 + 0.07, self.lamp)
      part(0.32, 0.22, -0.12, 0.12, (228, 228, 228))  # Number plate.


class _Person(_Thing):
  """A pedestrian: legs, shirt, head and hair; blocks where only a few pixels tall."""

  def __init__(self, scene, rel_pos):
    super().__init__(scene, rel_pos)
    rng = scene.rng
    self.height_m = rng.uniform(1.55, 1.95)
    self.shirt, self.trousers = rng.uniform(20, 230, size=3), rng.uniform(20, 120, size=3)
    self.skin = _SKIN_COLORS[rng.integers(0, len(_SKIN_COLORS))]
    self.hair = np.full(3, rng.uniform(15, 90))

  def draw(self, canvas, s, yb, cx):
    ph = self.height_m * s
    shirt, trousers, ins = self.shirt, self.trousers, canvas.new_instance(PERSON)

    def part(y0, y1, x0, x1, part_color, **kwargs):  # A box in units of the person's height.
      y0, y1, x0, x1 = yb - y0 * ph, yb - y1 * ph, cx + x0 * ph, cx + x1 * ph
      _rect(canvas, y0, y1, x0, x1, PERSON, ins, part_color, **kwargs)

    if ph >= 2 * _DETAIL_PX:
      part(0.48, 0.0, -0.12, -0.015, trousers)  # Legs.
      part(0.48, 0.0, 0.015, 0.12, trousers)
      part(0.82, 0.46, -0.15, 0.15, shirt, shade=(1.1, 0.85))
      _ellipse(canvas, yb - 0.9 * ph, cx, 0.085 * ph, 0.065 * ph, PERSON, ins, self.skin)
      _ellipse(canvas, yb - 0.94 * ph, cx, 0.05 * ph, 0.066 * ph, PERSON, ins, self.hair)
    else:  # A few pixels tall: legs, body and head as blocks.
      part(0.48, 0.0, -0.1, 0.1, trousers)
      part(0.82, 0.46, -0.14, 0.14, shirt)
      part(0.98, 0.82, -0.07, 0.07, self.skin)
