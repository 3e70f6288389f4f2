"""The streets data set's classes, default seed and size, and split sizes."""

from semgan_jax.data import cityscapes

# Cityscapes label ids of the classes the scenes use (see cityscapes.CLASS_NAMES).
EGO_VEHICLE, ROAD, SIDEWALK, BUILDING = 1, 7, 8, 11
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 17, 19, 20, 21, 22, 23
PERSON, CAR = 24, 26
CLASS_IDS = (EGO_VEHICLE, ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN)
CLASS_IDS += (VEGETATION, TERRAIN, SKY, PERSON, CAR)
NUM_CLASSES = cityscapes.NUM_CLASSES
DEFAULT_SEED = 0
DEFAULT_HEIGHT, DEFAULT_WIDTH = 128, 256
SPLITS = {'train': 2000, 'validation': 200}
# The smaller configs hold the first examples of the same splits, so they prepare in seconds.
SMALL_SPLITS = {'train': 1000, 'validation': 100}  # '64x128' and '32x64_1000'.
TINY_SPLITS = {'train': 200, 'validation': 20}  # '32x64', for tests.
# Folded into every example's seed, so the two splits never share a scene.
_SPLIT_CODES = {'train': 0, 'validation': 1}
