"""The `photos` evaluator (SemanticGAN): translations of held-out label maps vs their real photos.

Every batch of (label map, instance map, photo) pairs goes through one jitted pass that translates
the maps and returns what the metrics need for both the generated and the real photos: SWD
descriptors, Inception moments (FID) or features (KID), and the paired L1 error. mIoU of a frozen
segmenter on the generated photos arrives with ERFNet.
"""

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from semgan_jax import parallel
from semgan_jax.evaluation import evaluator as base
from semgan_jax.evaluation import statistics
from semgan_jax.evaluation import swd as swd_lib

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
  cfg = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
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
    try:
      swd_lib.level_resolutions(spec.height, spec.width)
    except ValueError as e:
      raise base.EvalConfigError(f'config.evals.{name}.swd: {e}') from e
  return c


class PhotoEvaluator:
  """SWD, FID/KID and L1 of G's translations of held-out label maps against the real photos.

  Args:
    name: the entry's name in `config.evals`.
    cfg: the entry, checked against `PHOTO_DEFAULTS`.
    spec: the data set's `DatasetSpec` (paired).
    source: random-access source of `cfg['split']`.
    mesh: the device mesh; batches are sharded on its `data` axis.
    translate_fn: `(state, labels, instances) -> (B, H, W, 3)` photos in [-1, 1].
    feature_fn, feature_params: replace the Inception features (tests), as in `LabelMapEvaluator`.
  """

  def __init__(
    self,
    name: str,
    cfg,
    *,
    spec,
    source,
    mesh,
    translate_fn: Callable,
    feature_fn: Callable | None = None,
    feature_params: Any = None,
  ):
    self.cfg = c = check_photo_config(name, cfg, spec, len(source), mesh.devices.size)
    self.name, self.spec, self.source, self.mesh = name, spec, source, mesh
    self.uses_features = c['fid'] or c['kid']
    self.protocol = {
      'evaluator': name,
      'type': 'photos',
      'dataset': f'{spec.name}:{c["split"]}',
      'size': f'{spec.height}x{spec.width}',
      'num_images': c['num_images'],
      'generated': "G's translation of each pair's label and instance maps",
      'real': 'the photos of the same pairs, uint8',
    }
    if c['swd']:
      self.protocol['swd'] = 'Progressive GAN, as the label_maps evaluator'
    if self.uses_features:
      if feature_fn is None:
        feature_fn, feature_params, path = base.load_inception(name, c['fid_weights'])
        self.protocol['fid_weights'] = path
      self.feature_params = jax.device_put(feature_params, parallel.replicated(mesh))
    else:
      self.feature_params = None
    self.feature_fn = feature_fn
    self._compile(translate_fn)

  def _compile(self, translate_fn: Callable) -> None:
    c = self.cfg
    base_key = jax.random.key(c['seed'])
    sharded, replicated = parallel.batch_sharded(self.mesh), parallel.replicated(self.mesh)

    def measure(images, valid, batch_index, stream, feature_params):
      out = {}
      if c['swd']:
        key = jax.random.fold_in(jax.random.fold_in(base_key, stream), batch_index)
        levels = swd_lib.descriptors(images, key)
        out['descriptors'] = [d.reshape(images.shape[0], -1, d.shape[-1]) for d in levels]
      if self.uses_features:
        features = self.feature_fn(feature_params, images).astype(jnp.float32)
        if c['fid']:
          out['moments'] = statistics.batch_moments(features, weights=valid.astype(jnp.float32))
        if c['kid']:
          out['features'] = features
      return out

    def both_passes(state, batch, valid, batch_index, feature_params):
      fake = translate_fn(state, batch['label'], batch['instance'])
      fake = jnp.clip(jnp.round((fake.astype(jnp.float32) + 1.0) * 127.5), 0, 255)
      fake = fake.astype(jnp.uint8)
      real = batch['image']
      l1 = jnp.abs(fake.astype(jnp.float32) - real.astype(jnp.float32)).mean(axis=(1, 2, 3))
      return (
        measure(real, valid, batch_index, 3, feature_params),
        measure(fake, valid, batch_index, 2, feature_params),
        jnp.sum(jnp.where(valid, l1, 0.0)) / 127.5,  # in the [-1, 1] units of the generator
      )

    self._pass = jax.jit(both_passes, in_shardings=(replicated, sharded, sharded, None, replicated))

  def _batch(self, batch_index: int):
    batch_size, num_images = self.cfg['batch_size'], self.cfg['num_images']
    positions = np.arange(batch_index * batch_size, (batch_index + 1) * batch_size)
    valid = positions < num_images
    local = batch_size // jax.process_count()
    mine = np.where(valid, positions, 0)[
      jax.process_index() * local : (jax.process_index() + 1) * local
    ]
    examples = [self.source[int(i)] for i in mine]
    batch = {
      'image': np.stack([np.asarray(e['image'], np.uint8) for e in examples]),
      'label': np.stack([np.asarray(e['label'], np.int32) for e in examples]),
      'instance': np.stack([np.asarray(e['instance'], np.int32) for e in examples]),
    }
    batch['label'] = np.where(batch['label'] < 0, 0, batch['label'])  # license plates (-1)
    local_valid = valid[jax.process_index() * local : (jax.process_index() + 1) * local]
    return (
      parallel.make_global_batch(batch, self.mesh),
      parallel.make_global_batch(local_valid, self.mesh),
      valid,
    )

  def run(self, state) -> dict[str, Any]:
    """Translates the split's label maps with `state`'s G; returns metrics and protocol."""
    start = time.perf_counter()
    c = self.cfg
    real, fake = base.SetStatistics(), base.SetStatistics()
    l1_sum = 0.0
    progress = base.Progress(f'eval {self.name}', c['num_images'])
    for batch_index in range(-(-c['num_images'] // c['batch_size'])):
      batch, valid_device, valid = self._batch(batch_index)
      real_out, fake_out, l1 = self._pass(
        state, batch, valid_device, batch_index, self.feature_params
      )
      base.merge_batch(real, real_out, valid)
      base.merge_batch(fake, fake_out, valid)
      l1_sum += float(base.to_host(l1))
      progress.update(fake.num_images)
    resolutions = swd_lib.level_resolutions(self.spec.height, self.spec.width)
    metrics = {'num_images': float(fake.num_images), 'l1': l1_sum / fake.num_images}
    metrics.update(base.distribution_metrics(c, real, fake, resolutions))
    metrics['eval_seconds'] = time.perf_counter() - start
    return {'metrics': metrics, 'protocol': self.protocol}


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
