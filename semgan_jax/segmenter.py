"""The Cityscapes segmenter's conventions, written once: what ERFNet reads and how it is scored.

SIPL's loss, the `photos` evaluator's mIoU, the segmenter task and its `miou` evaluator all go
through these functions:
- labels: Cityscapes label ids; -1 (license plate) counts as 0 'unlabeled', as cityscapesScripts'
  evaluation treats it; label ids become the 19 training ids of `cityscapes.TRAIN_IDS`, every
  other id is void (`VOID`, ignored by the loss and the scores);
- inputs: photos in [0, 1] (`images.to_unit`: uint8 / 255, or [-1, 1] mapped affinely), at the
  data set's resolution, which must be divisible by `erfnet.SIZE_DIVISOR`;
- outputs: 20 channels, the 19 training ids and void; void is trained at zero weight, so its
  logit means nothing and a prediction is the argmax over the 19 (every pixel gets a real class,
  as in the Cityscapes benchmark).
"""

import jax
import jax.numpy as jnp
import numpy as np

from semgan_jax import images as images_lib
from semgan_jax.data import cityscapes
from semgan_jax.evaluation import segmentation
from semgan_jax.models import erfnet

NUM_SCORED = cityscapes.NUM_TRAIN_IDS
VOID = cityscapes.IGNORE_TRAIN_ID
CLASS_NAMES = cityscapes.TRAIN_ID_NAMES
PROTOCOL = {
  'labels': 'Cityscapes label ids -> 19 train ids, void ignored',
  'prediction': 'argmax over the 19 train-id logits (void channel 19 left out), no resize',
}


def data_error(num_classes: int, height: int, width: int) -> str | None:
  """Why a data set of `num_classes` label ids at `height`x`width` cannot be segmented, or None."""
  if num_classes != cityscapes.NUM_CLASSES:
    return (
      f'the segmenter reads Cityscapes training ids, mapped from the {cityscapes.NUM_CLASSES} '
      f'Cityscapes label ids, but the data has {num_classes} classes'
    )
  if height % erfnet.SIZE_DIVISOR or width % erfnet.SIZE_DIVISOR:
    return (
      f'ERFNet needs a height and width divisible by {erfnet.SIZE_DIVISOR}; the data is '
      f'{height}x{width}'
    )
  return None


def train_ids(label_ids):
  """Cityscapes label ids (numpy or jax, any shape) → training ids, `VOID` where none."""
  xp = np if isinstance(label_ids, np.ndarray) else jnp
  table = xp.asarray(cityscapes.TRAIN_IDS, xp.int32)
  return table[xp.maximum(label_ids, 0)]


def logits(model: erfnet.ERFNet, variables, photos: jax.Array, **apply_kwargs):
  """ERFNet's (B, H, W, 20) logits of photos (uint8 or [-1, 1] floats); kwargs go to `apply`."""
  return model.apply(variables, images_lib.to_unit(photos), **apply_kwargs)


def predictions(scores: jax.Array) -> jax.Array:
  """The predicted training id of each pixel: the argmax over the 19 scored classes."""
  return jnp.argmax(scores[..., :NUM_SCORED], axis=-1)


def confusion(labels: jax.Array, scores: jax.Array) -> jax.Array:
  """The (19, 19) confusion matrix of `scores` against training-id `labels` (void skipped)."""
  return segmentation.confusion_matrix(labels, predictions(scores), NUM_SCORED, VOID)


def miou_metrics(confusion_matrix: np.ndarray, suffix: str = '') -> dict[str, float]:
  """`miou<suffix>`, `pixel_accuracy<suffix>` and `iou<suffix>/<class>` (NaN: class absent)."""
  scores = segmentation.iou_from_confusion(confusion_matrix)
  metrics = {f'miou{suffix}': scores['miou'], f'pixel_accuracy{suffix}': scores['pixel_accuracy']}
  for name, iou in zip(CLASS_NAMES, scores['per_class'], strict=True):
    metrics[f'iou{suffix}/{name}'] = float(iou)
  return metrics
