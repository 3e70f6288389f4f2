"""The `miou` evaluator: a segmenter's own mIoU on a split's real photos (the segmenter task).

Scored as `semgan_jax.segmenter` says (training ids, void and padded rows ignored, argmax over the
19 scored classes), at the data set's resolution; one jitted pass per batch returns its confusion
matrix.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from semgan_jax import parallel, segmenter
from semgan_jax.evaluation import evaluator as base

MIOU_DEFAULTS = {
  'type': 'miou',
  'every_steps': 0,  # During training: every N steps and at the end (0: only --mode=eval).
  'split': 'validation',
  'num_images': 0,  # 0: the whole split.
  'batch_size': 8,  # Global; a multiple of the device count.
  'prefix': 'eval',
}


def check_miou_config(name: str, cfg, spec, num_examples: int, num_devices: int) -> dict:
  """Checks a `miou` entry; returns it with defaults and `num_images` resolved."""
  c = base.check_counts(
    name,
    base.check_fields(name, cfg, MIOU_DEFAULTS),
    spec,
    num_examples,
    least=1,
    batch=(num_devices, f'multiple of the {num_devices} devices'),
  )
  problem = segmenter.data_error(spec.num_classes, spec.height, spec.width)
  if problem:
    raise base.EvalConfigError(f'config.evals.{name}: {problem} ({spec.name}).')
  return c


class MiouEvaluator(base.Evaluator):
  """Validation mIoU, pixel accuracy and per-class IoU of the segmenter of `state`.

  Args:
    name, cfg, spec, source, mesh: as in `base.Evaluator` (`cfg` checked against
      `MIOU_DEFAULTS`).
    segment_fn: `(state, uint8 photos) -> (B, H, W, 20)` logits of the state's segmenter.
  """

  defaults = MIOU_DEFAULTS
  check_config = staticmethod(check_miou_config)

  def __init__(self, name: str, cfg, *, segment_fn: Callable, **kwargs):
    super().__init__(name, cfg, **kwargs)

    def confusion(state, photos, labels):
      return segmenter.confusion(labels, segment_fn(state, photos))

    replicated, sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    self._pass = jax.jit(confusion, in_shardings=(replicated, sharded, sharded))

  def _protocol(self) -> dict[str, Any]:
    return {
      'split': self.cfg['split'],
      'num_images': self.cfg['num_images'],
      'size': f'{self.spec.height}x{self.spec.width}',
      **segmenter.PROTOCOL,
    }

  def _batch(self, batch_index: int):
    """(uint8 photos, training ids) of one batch as global arrays; padded rows are all void."""
    positions, valid = self._positions(batch_index)
    rows = base.local_rows(positions)
    examples = [self.source[int(i)] for i in base.local_rows(np.where(valid, positions, 0))]
    photos = np.stack([np.asarray(e['image'], np.uint8) for e in examples])
    labels = segmenter.train_ids(np.stack([np.asarray(e['label'], np.int32) for e in examples]))
    labels[rows >= self.cfg['num_images']] = segmenter.VOID
    return parallel.make_global_batch((photos, labels), self.mesh)

  def metrics(self, state) -> dict[str, float]:
    confusion = np.zeros((segmenter.NUM_SCORED, segmenter.NUM_SCORED), np.int64)
    progress = base.Progress(f'eval {self.name}', self.cfg['num_images'])
    for batch_index in range(self._num_batches()):
      confusion += base.to_host(self._pass(state, *self._batch(batch_index)))
      progress.update(min((batch_index + 1) * self.cfg['batch_size'], self.cfg['num_images']))
    return segmenter.miou_metrics(confusion)
