"""The `photos` evaluator (SemanticGAN): translations of held-out label maps vs their real photos.

Every batch of (label map, instance map, photo) pairs goes through one jitted pass that translates
the maps and returns what the metrics need for both the generated and the real photos: SWD
descriptors, Inception moments (FID) or features (KID), and the paired L1 error. mIoU of a frozen
segmenter on the generated photos arrives with ERFNet.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from semgan_jax import parallel
from semgan_jax.evaluation import evaluator as base

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
}


def check_photo_config(name: str, cfg, spec, num_examples: int, num_devices: int) -> dict:
  """Checks a `photos` entry; returns it with defaults and `num_images` resolved."""
  c = base.check_fields(name, cfg, PHOTO_DEFAULTS)
  if c['num_images'] == 0:
    c['num_images'] = num_examples
  if not 2 <= c['num_images'] <= num_examples:
    raise base.EvalConfigError(
      f'config.evals.{name}.num_images={c["num_images"]}; expected 2 to the {num_examples} '
      f'pairs of {spec.name}:{c["split"]} (0: all).'
    )
  if c['batch_size'] <= 0 or c['batch_size'] % num_devices:
    raise base.EvalConfigError(
      f'config.evals.{name}.batch_size={c["batch_size"]}; expected a positive multiple of the '
      f'{num_devices} devices.'
    )
  if c['swd']:
    base.check_swd_size(name, spec.height, spec.width)
  return c


class PhotoEvaluator(base.Evaluator):
  """SWD, FID/KID and L1 of G's translations of held-out label maps against the real photos.

  Args:
    name: the entry's name in `config.evals`.
    cfg: the entry, checked against `PHOTO_DEFAULTS`.
    spec: the data set's `DatasetSpec` (paired).
    source: random-access source of `cfg['split']`.
    translate_fn: `(state, labels, instances) -> (B, H, W, 3)` photos in [-1, 1].
    **kwargs: `mesh` and optionally `feature_fn`, `feature_params`, as in `base.Evaluator`.
  """

  check_config = staticmethod(check_photo_config)

  def __init__(self, name: str, cfg, *, translate_fn: Callable, **kwargs):
    super().__init__(name, cfg, **kwargs)
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

  def _compile(self, translate_fn: Callable) -> None:
    sharded, replicated = parallel.batch_sharded(self.mesh), parallel.replicated(self.mesh)

    def both_passes(state, batch, valid, batch_index, feature_params):
      fake = base.to_uint8(translate_fn(state, batch['label'], batch['instance']))
      real = batch['image']
      l1 = jnp.abs(fake.astype(jnp.float32) - real.astype(jnp.float32)).mean(axis=(1, 2, 3))
      return (
        self._distribution_outputs(real, valid, batch_index, 3, feature_params),
        self._distribution_outputs(fake, valid, batch_index, 2, feature_params),
        jnp.sum(jnp.where(valid, l1, 0.0)) / 127.5,  # in the [-1, 1] units of the generator
      )

    self._pass = jax.jit(both_passes, in_shardings=(replicated, sharded, sharded, None, replicated))

  def _batch(self, batch_index: int):
    positions, valid = self._positions(batch_index)
    examples = [self.source[int(i)] for i in base.local_rows(np.where(valid, positions, 0))]
    batch = {
      'image': np.stack([np.asarray(e['image'], np.uint8) for e in examples]),
      'label': np.stack([np.asarray(e['label'], np.int32) for e in examples]),
      'instance': np.stack([np.asarray(e['instance'], np.int32) for e in examples]),
    }
    batch['label'] = np.where(batch['label'] < 0, 0, batch['label'])  # license plates (-1)
    return (
      parallel.make_global_batch(batch, self.mesh),
      parallel.make_global_batch(base.local_rows(valid), self.mesh),
      valid,
    )

  def metrics(self, state) -> dict[str, float]:
    """Translates the split's label maps with `state`'s G; the metrics against the real photos."""
    real, fake = base.SetStatistics(), base.SetStatistics()
    l1_sum = 0.0
    progress = base.Progress(f'eval {self.name}', self.cfg['num_images'])
    for batch_index in range(self._num_batches()):
      batch, valid_device, valid = self._batch(batch_index)
      real_out, fake_out, l1 = self._pass(
        state, batch, valid_device, batch_index, self.feature_params
      )
      base.merge_batch(real, real_out, valid)
      base.merge_batch(fake, fake_out, valid)
      l1_sum += float(base.to_host(l1))
      progress.update(fake.num_images)
    metrics = {'num_images': float(fake.num_images), 'l1': l1_sum / fake.num_images}
    metrics.update(
      base.distribution_metrics(self.cfg, real, fake, self.spec.height, self.spec.width)
    )
    return metrics


def build_photo_evaluators(evals_config, *, spec, load_split, mesh, translate_fn) -> dict:
  """One `PhotoEvaluator` per `config.evals` entry; `load_split(name) -> source`."""
  evaluators = {}
  for name, cfg in (evals_config or {}).items():
    if cfg.get('type') != 'photos':
      raise base.EvalConfigError(
        f"config.evals.{name}.type={cfg.get('type')!r}; SemanticGAN configs take 'photos'."
      )
    split = cfg.get('split', PHOTO_DEFAULTS['split'])
    evaluators[name] = PhotoEvaluator(
      name, cfg, spec=spec, source=load_split(split), mesh=mesh, translate_fn=translate_fn
    )
  return evaluators


__all__ = ['PHOTO_DEFAULTS', 'PhotoEvaluator', 'build_photo_evaluators', 'check_photo_config']
