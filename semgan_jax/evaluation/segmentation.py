"""mIoU: a confusion matrix accumulated on device, per-class IoU and their mean on the host."""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
  labels: jax.Array, predictions: jax.Array, num_classes: int, ignore_label: int | None = 255
) -> jax.Array:
  """Counts (true class, predicted class) pairs of one batch; jittable, sums across shards.

  Pixels whose label is `ignore_label` are skipped. Label ids outside [0, num_classes) that are
  not the ignore label cannot be checked under jit; `check_labels` does it on the host.

  Args:
    labels: (B, H, W) integer ground-truth ids.
    predictions: (B, H, W) integer predicted ids in [0, num_classes).
    num_classes: K.
    ignore_label: the void id to skip, or None.

  Returns:
    (K, K) int32 matrix: rows are true classes, columns predicted ones.
  """
  labels = labels.astype(jnp.int32).reshape(-1)
  predictions = predictions.astype(jnp.int32).reshape(-1)
  valid = (labels >= 0) & (labels < num_classes)
  if ignore_label is not None:
    valid &= labels != ignore_label
  index = jnp.where(valid, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index, length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def check_labels(labels, num_classes: int, ignore_label: int | None = 255, name='labels') -> None:
  """Raises a ValueError naming the offending ids if any label is outside the class set."""
  labels = np.asarray(labels)
  bad = (labels < 0) | (labels >= num_classes)
  if ignore_label is not None:
    bad &= labels != ignore_label
  if bad.any():
    ids = np.unique(labels[bad])[:10].tolist()
    allowed = f'[0, {num_classes})' + ('' if ignore_label is None else f' or {ignore_label}')
    raise ValueError(f'{name} contain ids {ids} outside the class set; expected {allowed}.')


def iou_from_confusion(confusion) -> dict:
  """Per-class IoU = TP / (TP + FP + FN) and the mean over classes that occur.

  A class that is neither in the labels nor in the predictions has no IoU (NaN in `per_class`)
  and is left out of the mean, as the Cityscapes scripts do.

  Returns:
    {'miou': float, 'per_class': (K,) float64 array with NaN for absent classes,
     'pixel_accuracy': float}.
  """
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = np.where(union > 0, true_positive / union, np.nan)
  total = confusion.sum()
  return {
    'miou': float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float('nan'),
    'per_class': per_class,
    'pixel_accuracy': float(true_positive.sum() / total) if total else float('nan'),
  }


def make_confusion_step(
  segment_fn: Callable[[Any, jax.Array], jax.Array], num_classes: int, ignore_label: int | None
) -> Callable:
  """A jitted `step(confusion, params, images, labels) -> confusion` for any segmenter.

  `segment_fn(params, images) -> (B, H, W, K)` scores (logits or probabilities) is the pluggable
  network (ERFNet, or anything else); its argmax is scored against `labels`. The running
  confusion matrix stays on the device (donated and updated in place); read it once at the end.
  """

  def step(confusion, params, images, labels):
    scores = segment_fn(params, images)
    predictions = jnp.argmax(scores, axis=-1)
    return confusion + confusion_matrix(labels, predictions, num_classes, ignore_label)

  return jax.jit(step, donate_argnums=0)


def evaluate_miou(
  segment_fn: Callable[[Any, jax.Array], jax.Array],
  params: Any,
  batches: Iterable[tuple[jax.Array, jax.Array]],
  *,
  num_classes: int,
  ignore_label: int | None = 255,
) -> dict:
  """mIoU of a segmenter over a stream of (images, labels) batches.

  Label ids are checked on the host (one clear error naming them); pass device arrays (sharded
  like training batches) to keep the transfer off the critical path.

  Returns:
    `iou_from_confusion`'s dict plus 'confusion' (the (K, K) int64 matrix).
  """
  step = make_confusion_step(segment_fn, num_classes, ignore_label)
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
  for images, labels in batches:
    check_labels(np.asarray(labels), num_classes, ignore_label)
    confusion = step(confusion, params, images, labels)
  confusion = np.asarray(jax.device_get(confusion), np.int64)
  return {**iou_from_confusion(confusion), 'confusion': confusion}
