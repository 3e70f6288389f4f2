"""Per-map object statistics of label maps: connected components and, on colored shapes, shapes.

SWD and MS-SSIM compare distributions of patches and do not say whether a map holds one square
or three, or whether its circle is round. These scores do, for real and generated maps alike, so
that each generated value has the real one beside it:

* `components/<class>`: mean number of 4-connected components of the class per map;
* `single/<class>`: fraction of maps with exactly one component of the class;
* `small_components`: mean number per map of components (any class but 0) under
  `SMALL_PIXELS` pixels: stray pixels and specks;
* on colored shapes, of the largest component of each shape (maps without it do not count):
  `shape/circle_iou` (IoU with the radius-10 disk centred on the component's centroid),
  `shape/square_iou` (IoU with the 10x10 square centred there) and `shape/rectangle_fill`
  (its area over its bounding box's).

They run on the host (scipy), a few milliseconds per batch of 64 maps.
"""

import numpy as np
from scipy import ndimage

from semgan_jax.data import colored_shapes

SMALL_PIXELS = 9  # Smaller than a 3x3 block.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
  return ndimage.label(mask, structure=_FOUR_CONNECTED)


def _largest(mask: np.ndarray) -> np.ndarray | None:
  """The largest 4-connected component of a boolean map, None if it is empty."""
  blobs, count = _components(mask)
  if not count:
    return None
  sizes = np.bincount(blobs.ravel())[1:]
  return blobs == 1 + int(np.argmax(sizes))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def _centroid(component: np.ndarray) -> np.ndarray:
  """(y, x) of the component's centre, in the pixel-centre coordinates of `disk_mask`."""
  ys, xs = np.nonzero(component)
  return np.array([ys.mean() + 0.5, xs.mean() + 0.5])


def _shape_scores(labels: np.ndarray) -> dict[str, float]:
  """The colored-shapes scores of one (64, 64) map; NaN for a shape the map lacks."""
  nan = float('nan')
  scores = {'shape/circle_iou': nan, 'shape/square_iou': nan, 'shape/rectangle_fill': nan}
  circle = _largest(labels == colored_shapes.CIRCLE)
  if circle is not None:
    disk = colored_shapes.disk_mask(_centroid(circle))
    scores['shape/circle_iou'] = _iou(circle, disk)
  square = _largest(labels == colored_shapes.SQUARE)
  if square is not None:
    side = colored_shapes.SQUARE_SIZE
    y0, x0 = np.floor(_centroid(square) - side / 2 + 0.5).astype(int)
    box = np.zeros_like(square)
    box[max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)] = True
    scores['shape/square_iou'] = _iou(square, box)
  rectangle = _largest(labels == colored_shapes.RECTANGLE)
  if rectangle is not None:
    rows, cols = np.nonzero(rectangle.any(axis=1))[0], np.nonzero(rectangle.any(axis=0))[0]
    bbox = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    scores['shape/rectangle_fill'] = float(rectangle.sum() / bbox)
  return scores


def map_scores(
  labels: np.ndarray, class_names: tuple[str, ...], dataset: str
) -> dict[str, np.ndarray]:
  """The per-map scores of a batch of label maps.

  Args:
    labels: (B, H, W) integer class ids.
    class_names: the data set's class names, by id.
    dataset: the data set's name; 'colored_shapes' adds the shape scores.

  Returns:
    {score name: (B,) float64}, NaN where a score does not apply to a map.
  """
  labels = np.asarray(labels)
  out = {}
  counts = np.zeros((len(labels), len(class_names)), np.int64)
  small = np.zeros(len(labels), np.int64)
  for b, label_map in enumerate(labels):
    for k in range(len(class_names)):
      blobs, count = _components(label_map == k)
      counts[b, k] = count
      if k and count:
        small[b] += int((np.bincount(blobs.ravel())[1:] < SMALL_PIXELS).sum())
  for k, name in enumerate(class_names):
    out[f'components/{name}'] = counts[:, k].astype(np.float64)
    out[f'single/{name}'] = (counts[:, k] == 1).astype(np.float64)
  out['small_components'] = small.astype(np.float64)
  if dataset == 'colored_shapes':
    shapes = [_shape_scores(label_map) for label_map in labels]
    for name in shapes[0] if shapes else ():
      out[name] = np.array([s[name] for s in shapes], np.float64)
  return out


def summarize(scores: dict[str, list[np.ndarray]]) -> dict[str, float]:
  """The mean of every score over the maps it applies to (NaN when it applied to none)."""
  out = {}
  for name, parts in scores.items():
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[~np.isnan(values)]
    out[name] = float(values.mean()) if values.size else float('nan')
  return out
