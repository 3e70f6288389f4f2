"""The procedural colored-shapes label maps (a circle, a rectangle and a square on 64x64)."""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

CLASS_NAMES = ('background', 'circle', 'rectangle', 'square')
NUM_CLASSES = 4
IMAGE_SIZE = 64
SQUARE_SIZE = 10
CIRCLE_RADIUS = 10
# One image per top-left position of the square: 54 x 54 positions keep it fully inside.
GRID_SIZE = IMAGE_SIZE - SQUARE_SIZE
NUM_EXAMPLES = GRID_SIZE * GRID_SIZE
DEFAULT_SEED = 0
RECT_MIN_SIDE = 6
RECT_MAX_SIDE = 30

BACKGROUND, CIRCLE, RECTANGLE, SQUARE = range(NUM_CLASSES)

PALETTE = np.array(
  [
    (0, 0, 0),  # background: black
    (0, 0, 255),  # circle: blue
    (0, 255, 0),  # rectangle: green
    (255, 0, 0),  # square: red
  ],
  dtype=np.uint8,
)

_DESCRIPTION = f"""\
Colored shapes: {NUM_EXAMPLES} semantic label maps of {IMAGE_SIZE}x{IMAGE_SIZE} pixels with \
{NUM_CLASSES} classes (0 background, 1 circle, 2 rectangle, 3 square), after Section 5.0.1 of \
"Adversarial Pixel-Level Generation of Semantic Images". Image i holds a {SQUARE_SIZE}x\
{SQUARE_SIZE} square whose top-left corner is position i of the {GRID_SIZE}x{GRID_SIZE} grid \
(row-major), a rectangle of random size ({RECT_MIN_SIDE} to {RECT_MAX_SIDE} pixels a side, never \
square) and place, and a circle of radius {CIRCLE_RADIUS} at a random place, painted in that \
order (rectangle, square, circle on top) so the circle can cover the square completely. The \
data are rendered procedurally from seed {DEFAULT_SEED}; nothing is downloaded.
"""

_CITATION = """\
@article{ghelfi2019adversarial,
  title={Adversarial Pixel-Level Generation of Semantic Images},
  author={Ghelfi, Emanuele and Galeone, Paolo and De Simoni, Michele and Di Mattia, Federico},
  journal={arXiv preprint arXiv:1906.12195},
  year={2019}
}
"""


def _draw_rect_sides(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws n (height, width) pairs from [6, 30], re-drawing both sides of every square pair."""
  height = rng.integers(RECT_MIN_SIDE, RECT_MAX_SIDE + 1, size=n)
  width = rng.integers(RECT_MIN_SIDE, RECT_MAX_SIDE + 1, size=n)
  equal = np.flatnonzero(height == width)
  while equal.size:
    height[equal] = rng.integers(RECT_MIN_SIDE, RECT_MAX_SIDE + 1, size=equal.size)
    width[equal] = rng.integers(RECT_MIN_SIDE, RECT_MAX_SIDE + 1, size=equal.size)
    equal = equal[height[equal] == width[equal]]
  return height, width


def disk_mask(circle_center: np.ndarray) -> np.ndarray:
  """Rasterizes disks of radius CIRCLE_RADIUS on the IMAGE_SIZE x IMAGE_SIZE pixel grid.

  A pixel belongs to a disk when the distance from its center (y + 0.5, x + 0.5) to the disk's
  center is at most CIRCLE_RADIUS.

  Args:
    circle_center: (..., 2) centers as (y, x) in pixel units.

  Returns:
    Boolean array (..., IMAGE_SIZE, IMAGE_SIZE).
  """
  center = np.asarray(circle_center, dtype=np.float64)
  coords = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5
  dy = coords[:, None] - center[..., 0, None, None]
  dx = coords[None, :] - center[..., 1, None, None]
  return dy * dy + dx * dx <= CIRCLE_RADIUS * CIRCLE_RADIUS


def _box_mask(y0: np.ndarray, x0: np.ndarray, height, width) -> np.ndarray:
  """Boolean (N, IMAGE_SIZE, IMAGE_SIZE) masks of axis-aligned boxes."""
  coords = np.arange(IMAGE_SIZE)
  in_rows = (coords[None, :] >= y0[:, None]) & (coords[None, :] < (y0 + height)[:, None])
  in_cols = (coords[None, :] >= x0[:, None]) & (coords[None, :] < (x0 + width)[:, None])
  return in_rows[:, :, None] & in_cols[:, None, :]


def render_colored_shapes(
  seed: int = DEFAULT_SEED, num_examples: int = NUM_EXAMPLES
) -> dict[str, np.ndarray]:
  """Renders the colored-shapes label maps.

  Example i places the square at position i of the 54 x 54 grid (y = i // 54, x = i % 54), so
  `num_examples` smaller than NUM_EXAMPLES gives the first rows of that grid. Rectangles and
  circles come from `np.random.default_rng(seed)`.

  Args:
    seed: Seed of the random rectangles and circles.
    num_examples: How many images to render, 1 to NUM_EXAMPLES.

  Returns:
    A dict with `label` (N, 64, 64) uint8 class ids, `square_yx` (N, 2) int32 top-left corner of
    the square, `circle_center` (N, 2) float32 (y, x) center of the circle and `rect_box` (N, 4)
    int32 (y0, x0, height, width) of the rectangle.

  Raises:
    ValueError: If num_examples is not in [1, NUM_EXAMPLES].
  """
  if not 1 <= num_examples <= NUM_EXAMPLES:
    raise ValueError(f'num_examples must be in [1, {NUM_EXAMPLES}], got {num_examples}')
  n = num_examples
  rng = np.random.default_rng(seed)

  rect_h, rect_w = _draw_rect_sides(rng, n)
  # integers() takes array bounds, so each rectangle gets its own range of valid corners.
  rect_y0 = rng.integers(0, IMAGE_SIZE - rect_h + 1)
  rect_x0 = rng.integers(0, IMAGE_SIZE - rect_w + 1)
  # Any center in [r, size - r] keeps every pixel center within r of it inside the image. The
  # center is rounded to float32 before rasterizing so the stored center reproduces the disk.
  circle_center = rng.uniform(CIRCLE_RADIUS, IMAGE_SIZE - CIRCLE_RADIUS, size=(n, 2))
  circle_center = circle_center.astype(np.float32)

  index = np.arange(n)
  square_y, square_x = index // GRID_SIZE, index % GRID_SIZE

  label = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
  label[_box_mask(rect_y0, rect_x0, rect_h, rect_w)] = RECTANGLE
  label[_box_mask(square_y, square_x, SQUARE_SIZE, SQUARE_SIZE)] = SQUARE
  label[disk_mask(circle_center)] = CIRCLE

  return {
    'label': label,
    'square_yx': np.stack([square_y, square_x], axis=1).astype(np.int32),
    'circle_center': circle_center,
    'rect_box': np.stack([rect_y0, rect_x0, rect_h, rect_w], axis=1).astype(np.int32),
  }


class ColoredShapes(tfds.core.GeneratorBasedBuilder):
  """The colored-shapes data set, rendered from DEFAULT_SEED (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # tfds derives this from the package's resources through `importlib_resources`, a package this
  # environment lacks (the lookup fails inside `download_and_prepare`); the file is all it needs.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs would let a README.md or CITATIONS.bib that
    # happens to sit in this package override the description and citation.
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'label': tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
          'square_yx': tfds.features.Tensor(shape=(2,), dtype=np.int32),
          'circle_center': tfds.features.Tensor(shape=(2,), dtype=np.float32),
          'rect_box': tfds.features.Tensor(shape=(4,), dtype=np.int32),
        }
      ),
      supervised_keys=None,
      homepage=None,
      citation=_CITATION,
      # Keep storage order == generation order, so data-source index i is square position i.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    data = render_colored_shapes(DEFAULT_SEED)
    for i in range(NUM_EXAMPLES):
      yield i, {key: value[i] for key, value in data.items()}
