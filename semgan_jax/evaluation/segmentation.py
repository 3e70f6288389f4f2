"""mIoU: a confusion matrix accumulated on device, per-class IoU and their mean on the host."""

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
