"""The `photos` evaluator (SemanticGAN): translations of held-out label maps vs their real photos.

Every batch of (label map, instance map, photo) pairs goes through one jitted pass that translates
the maps and returns what the metrics need for both the generated and the real photos: SWD
descriptors, Inception moments (FID) or features (KID), the paired L1 error and, with `miou`, the
confusion matrices of a frozen ERFNet's segmentation against the input label map.

mIoU follows `semgan_jax.segmenter`'s conventions (training ids, void and padded rows ignored,
argmax over the 19 scored classes), on the uint8 photos at the data set's resolution: the
generated ones are rounded to uint8 first, as when they are saved and segmented (erfnet_pytorch's
own `eval_iou.py` drops void predictions instead, which only miss the pixel's class). The real
photos' mIoU (`miou_real`) is the segmenter's own score on the same pairs: the upper bound that
papers (pix2pixHD's "original images" row) report next to the generated photos' score.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from semgan_jax import images as images_lib
from semgan_jax import parallel, segmenter
from semgan_jax.evaluation import evaluator as base
from semgan_jax.models import erfnet
from semgan_jax.weights import erfnet as erfnet_weights

PHOTO_DEFAULTS = {
  'type': 'photos',
  'every_steps': 0,  # During training: every N steps and at the end (0: only --mode=eval).
  'split': 'validation',  # Held-out pairs: their label maps in, their photos as the real set.
  'num_images': 0,  # 0: the whole split.
  'batch_size': 8,  # Global; a multiple of the device count.
  'seed': 0,  # SWD patches and projections.
  'prefix': 'eval',
  'swd': True,
  'fid': False,  # Needs the converted Inception weights (semgan_jax.weights.fid_inception).
  'kid': False,
  'fid_weights': '',
  'miou': False,  # ERFNet's mIoU on the generated and real photos; needs Cityscapes label ids.
  'segmenter_weights': '',  # The converted ERFNet .npz ('' = the default cache path).
}


def check_photo_config(name: str, cfg, spec, num_examples: int, num_devices: int) -> dict:
  """Checks a `photos` entry; returns it with defaults and `num_images` resolved."""
  c = base.check_counts(
    name,
    base.check_fields(name, cfg, PHOTO_DEFAULTS),
    spec,
    num_examples,
    least=2,
    batch=(num_devices, f'multiple of the {num_devices} devices'),
  )
  if c['swd']:
    base.check_swd_size(name, spec.height, spec.width)
  problem = c['miou'] and segmenter.data_error(spec.num_classes, spec.height, spec.width)
  if problem:
    raise base.EvalConfigError(f'config.evals.{name}.miou: {problem} ({spec.name}).')
  return c


def load_segmenter(name: str, segmenter_weights: str) -> tuple[dict, str]:
  """ERFNet's variables ({'params', 'batch_stats'}) and their path; errors name the field."""
  try:
    path = erfnet_weights.ensure_weights(segmenter_weights or None)
    variables = erfnet_weights.load_params(path)
  except (OSError, ValueError) as e:
    raise base.EvalConfigError(
      f'config.evals.{name}.segmenter_weights: {e} (or switch mIoU off: '
      f'--config.evals.{name}.miou=False)'
    ) from e
  return variables, str(path)


class PhotoEvaluator(base.Evaluator):
  """SWD, FID/KID, L1 and ERFNet mIoU of G's translations of held-out label maps vs real photos.

  Args:
    name: the entry's name in `config.evals`.
    cfg: the entry, checked against `PHOTO_DEFAULTS`.
    spec: the data set's `DatasetSpec` (paired).
    source: random-access source of `cfg['split']`.
    translate_fn: `(state, labels, instances) -> (B, H, W, 3)` photos in [-1, 1].
    **kwargs: `mesh` and optionally `feature_fn`, `feature_params`, as in `base.Evaluator`.
  """

  defaults = PHOTO_DEFAULTS
  check_config = staticmethod(check_photo_config)

  def __init__(self, name: str, cfg, *, translate_fn: Callable, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.segmenter_params = None
    if self.cfg['miou']:
      # An argument of the compiled pass (replicated), not a constant baked into it.
      variables, path = load_segmenter(name, self.cfg['segmenter_weights'])
      self._segmenter_width = erfnet.width_of(variables)
      self.segmenter_params = jax.device_put(variables, parallel.replicated(self.mesh))
      self.protocol.update(self._miou_protocol(path))
    self._compile(translate_fn)

  def _protocol(self) -> dict[str, Any]:
    c, spec = self.cfg, self.spec
    protocol = {
      'dataset': f'{spec.name}:{c["split"]}',
      'size': f'{spec.height}x{spec.width}',
      'num_images': c['num_images'],
      'generated': "G's translation of each pair's label and instance maps",
      'real': 'the photos of the same pairs, uint8',
    }
    if c['swd']:
      protocol['swd'] = 'Progressive GAN, as the label_maps evaluator'
    return protocol

  def _miou_protocol(self, weights_path: str) -> dict[str, str]:
    spec = self.spec
    return {
      'miou_segmenter': f'ERFNet (erfnet_pytorch) of width {self._segmenter_width}, weights: '
      f'{weights_path}',
      'miou_input': (
        f"{spec.height}x{spec.width}, the data set's resolution, no resize; uint8 photos / 255 "
        '(generated ones rounded to uint8 first)'
      ),
      **{f'miou_{key}': value for key, value in segmenter.PROTOCOL.items()},
    }

  def _compile(self, translate_fn: Callable) -> None:
    sharded, replicated = parallel.batch_sharded(self.mesh), parallel.replicated(self.mesh)

    def confusion(images, labels, segmenter_params):
      model = erfnet.ERFNet(width=erfnet.width_of(segmenter_params))  # From the static shapes.
      return segmenter.confusion(labels, segmenter.logits(model, segmenter_params, images))

    def both_passes(state, batch, valid, batch_index, feature_params, segmenter_params):
      fake = images_lib.signed_to_uint8(translate_fn(state, batch['label'], batch['instance']))
      real = batch['image']
      l1 = jnp.abs(fake.astype(jnp.float32) - real.astype(jnp.float32)).mean(axis=(1, 2, 3))
      real_out = self._distribution_outputs(real, valid, batch_index, 3, feature_params)
      fake_out = self._distribution_outputs(fake, valid, batch_index, 2, feature_params)
      if self.cfg['miou']:
        labels = jnp.where(
          valid[:, None, None], segmenter.train_ids(batch['label']), segmenter.VOID
        )
        real_out['confusion'] = confusion(real, labels, segmenter_params)
        fake_out['confusion'] = confusion(fake, labels, segmenter_params)
      # L1 in the [-1, 1] units of the generator.
      return real_out, fake_out, jnp.sum(jnp.where(valid, l1, 0.0)) / 127.5

    self._pass = jax.jit(
      both_passes, in_shardings=(replicated, sharded, sharded, None, replicated, replicated)
    )

  def _batch(self, batch_index: int):
    positions, valid = self._positions(batch_index)
    examples = [self.source[int(i)] for i in base.local_rows(np.where(valid, positions, 0))]
    batch = {
      'image': np.stack([np.asarray(e['image'], np.uint8) for e in examples]),
      'label': np.stack([np.asarray(e['label'], np.int32) for e in examples]),
      'instance': np.stack([np.asarray(e['instance'], np.int32) for e in examples]),
    }
    batch['label'] = np.maximum(batch['label'], 0)  # license plates (-1): 'unlabeled'
    return (
      parallel.make_global_batch(batch, self.mesh),
      parallel.make_global_batch(base.local_rows(valid), self.mesh),
      valid,
    )

  def metrics(self, state) -> dict[str, float]:
    """Translates the split's label maps with `state`'s G; the metrics against the real photos."""
    real, fake = base.SetStatistics(), base.SetStatistics()
    l1_sum = 0.0
    real_confusion = np.zeros((segmenter.NUM_SCORED, segmenter.NUM_SCORED), np.int64)
    fake_confusion = np.zeros_like(real_confusion)
    progress = base.Progress(f'eval {self.name}', self.cfg['num_images'])
    for batch_index in range(self._num_batches()):
      batch, valid_device, valid = self._batch(batch_index)
      real_out, fake_out, l1 = self._pass(
        state, batch, valid_device, batch_index, self.feature_params, self.segmenter_params
      )
      base.merge_batch(real, real_out, valid)
      base.merge_batch(fake, fake_out, valid)
      if self.cfg['miou']:  # the padded rows were ignored on the device
        real_confusion += base.to_host(real_out['confusion'])
        fake_confusion += base.to_host(fake_out['confusion'])
      l1_sum += float(base.to_host(l1))
      progress.update(fake.num_images)
    metrics = {'num_images': float(fake.num_images), 'l1': l1_sum / fake.num_images}
    metrics.update(
      base.distribution_metrics(self.cfg, real, fake, self.spec.height, self.spec.width)
    )
    if self.cfg['miou']:
      metrics.update(segmenter.miou_metrics(fake_confusion))
      metrics.update(segmenter.miou_metrics(real_confusion, '_real'))
    return metrics
