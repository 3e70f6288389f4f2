"""Procedural street scenes: paired Cityscapes-id label maps, instance maps and rendered photos.

`render_street` renders one example (scene.py: the camera, layout and painting order; things.py:
trees, poles, cars and persons; canvas.py: the painting primitives and noise textures); `Streets`
is the tfds builder of the data set (builder.py).
"""

# The public names of the package (re-exported).
from semgan_jax.data.streets.builder import Streets, StreetsConfig  # noqa: F401
from semgan_jax.data.streets.constants import (  # noqa: F401
  BUILDING,
  CAR,
  CLASS_IDS,
  DEFAULT_HEIGHT,
  DEFAULT_SEED,
  DEFAULT_WIDTH,
  EGO_VEHICLE,
  NUM_CLASSES,
  PERSON,
  POLE,
  ROAD,
  SIDEWALK,
  SKY,
  SMALL_SPLITS,
  SPLITS,
  TERRAIN,
  TINY_SPLITS,
  TRAFFIC_LIGHT,
  TRAFFIC_SIGN,
  VEGETATION,
)
from semgan_jax.data.streets.scene import render_street  # noqa: F401
