"""The `label_maps` evaluator (SemGAN and its RGB baseline): generated label maps vs real ones.

SWD, MS-SSIM, FID/KID and class frequencies of maps generated from fixed latents against a fixed
random subset of the training split, both palette-colorized.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from semgan_jax import images as images_lib
from semgan_jax import parallel
from semgan_jax.evaluation import components as components_lib
from semgan_jax.evaluation import ms_ssim as ms_ssim_lib
from semgan_jax.evaluation import segmentation, semantic
from semgan_jax.evaluation import swd as swd_lib
from semgan_jax.evaluation.evaluator import (
  EvalConfigError,
  Evaluator,
  Progress,
  SetStatistics,
  check_counts,
  check_fields,
  check_swd_size,
  distribution_metrics,
  local_rows,
  merge_batch,
  to_host,
)

# Fields of a `label_maps` evaluator (SemGAN and its RGB baseline) and their defaults.
LABEL_MAP_DEFAULTS = {
  'type': 'label_maps',
  'every_steps': 0,  # During training: every N steps and at the end (0: only --mode=eval).
  'num_images': 2916,  # Real and generated maps compared (paper 2: the whole training set; 0: all).
  'batch_size': 64,  # Global; a multiple of the device count.
  'seed': 0,  # Latents, the real subset, SWD patches and projections.
  'prefix': 'eval',  # Scalars are logged as <prefix>/<metric>.
  'swd': True,  # Sliced Wasserstein distance of palette images (Progressive GAN).
  'ms_ssim': True,  # Mean MS-SSIM of pairs of generated (and of real) images.
  'ms_ssim_variant': 'progan',  # 'progan' (any size ≥ 16) or 'standard' (≥ 176 px).
  'class_frequencies': True,  # Real vs generated class histograms, off-palette pixels.
  # Connected components per class and map (and shape scores on colored shapes): components.py.
  'components': True,
  'fid': False,  # Needs the converted Inception weights (see semgan_jax.weights.fid_inception).
  'kid': False,  # Kernel Inception Distance from the same features (keeps them: 8 KiB/image).
  'fid_weights': '',  # Path of the converted .npz ('' = the default cache path).
}


def check_label_map_config(name: str, cfg, spec, num_examples: int, num_devices: int) -> dict:
  """Checks a `label_maps` entry against the data set and devices; returns it with defaults."""
  processes = jax.process_count()
  multiple = math.lcm(num_devices, 2 * processes)
  c = check_counts(
    name,
    check_fields(name, cfg, LABEL_MAP_DEFAULTS),
    spec,
    num_examples,
    least=2,  # SWD and MS-SSIM compare equal numbers of real and generated images, in pairs.
    batch=(
      multiple,
      f'even multiple of the {num_devices} devices (MS-SSIM pairs the images of '
      f'a batch) and of twice the {processes} process(es)',
    ),
  )
  if c['ms_ssim']:
    images = jax.ShapeDtypeStruct((2, spec.height, spec.width, 3), jnp.uint8)
    try:
      jax.eval_shape(
        functools.partial(ms_ssim_lib.ms_ssim, variant=c['ms_ssim_variant']), images, images
      )
    except ValueError as e:
      raise EvalConfigError(f'config.evals.{name}.ms_ssim_variant: {e}') from e
  if c['swd']:
    check_swd_size(name, spec.height, spec.width)
  return c


class LabelMapEvaluator(Evaluator):
  """SWD, MS-SSIM, FID/KID and class-frequency metrics of generated label maps vs real ones.

  Generated maps come from fixed latents (the same every call), real ones from a fixed random
  subset of the training split. Semantic-head outputs are argmax-ed and colorized with the data
  set's palette; RGB-baseline outputs are compared as generated and read back to classes by the
  nearest palette colour. The real set's statistics are computed once and kept.

  Args:
    name: the entry's name in `config.evals`.
    cfg: the entry (a dict or ConfigDict), checked against `LABEL_MAP_DEFAULTS`.
    source: random-access source of the data set (`len()`, indexing → {'label': (H, W)}).
    generate_fn: `(state, z) -> outputs`, softmax maps (B, H, W, K) or RGB in [-1, 1].
    head: 'semantic' or 'rgb'.
    latent_dim: size of z.
    **kwargs: `spec`, `mesh` and optionally `feature_fn`, `feature_params`, as in `Evaluator`.
  """

  defaults = LABEL_MAP_DEFAULTS
  check_config = staticmethod(check_label_map_config)

  @classmethod
  def split(cls, cfg) -> str:
    return 'train'  # The real maps are a subset of the training split.

  def __init__(
    self, name: str, cfg, *, generate_fn: Callable, head: str, latent_dim: int, **kwargs
  ):
    self.head, self.latent_dim = head, latent_dim
    super().__init__(name, cfg, **kwargs)
    self._palette = jnp.asarray(self.spec.palette, jnp.uint8)
    self._generate = generate_fn
    self._real_stats: SetStatistics | None = None
    self._compile()

  # Construction helpers.

  def _protocol(self) -> dict[str, Any]:
    c, spec = self.cfg, self.spec
    protocol = {
      'dataset': spec.name,
      # Square sets keep the number alone, as results written before non-square maps.
      'image_size': spec.height if spec.height == spec.width else f'{spec.height}x{spec.width}',
      'num_images': c['num_images'],
      'seed': c['seed'],
      'generated': (
        'argmax of the softmax, palette-colorized'
        if self.head == 'semantic'
        else 'RGB output rounded to uint8 (classes: nearest palette colour)'
      ),
      'real': 'palette-colorized training label maps, a seeded random subset',
      'palette': np.asarray(self.spec.palette).tolist(),
    }
    if c['swd']:
      levels = swd_lib.level_resolutions(spec.height, spec.width)
      protocol['swd'] = (
        f'Progressive GAN: Laplacian pyramid levels {levels}, '
        f'{swd_lib.NHOODS_PER_IMAGE} patches of {swd_lib.NHOOD_SIZE}x{swd_lib.NHOOD_SIZE}x3 per '
        f'image and level, {swd_lib.DIR_REPEATS}x{swd_lib.DIRS_PER_REPEAT} projections, x1e3'
      )
    if c['ms_ssim']:
      protocol['ms_ssim'] = f'variant {c["ms_ssim_variant"]}; pairs (2i, 2i+1) of each batch'
    if c['components']:
      protocol['components'] = (
        'per map: 4-connected components of each class (mean count, fraction of maps with '
        f'exactly one), components under {components_lib.SMALL_PIXELS} px of classes > 0'
        + (
          '; shapes: IoU of the largest circle / square component with the radius-10 disk / '
          '10x10 square at its centroid, rectangle area over bounding box'
          if spec.name == 'colored_shapes'
          else ''
        )
      )
    if self.uses_features:
      if self.feature_fn is not None:
        protocol['fid'] = 'features from a user-supplied feature_fn (not comparable with FID)'
      else:
        from semgan_jax.evaluation import inception_features

        protocol['fid'] = (
          'FID Inception-v3 (2015-12-05) pool features, resize: '
          f'{inception_features.RESIZE_CONVENTION}'
        )
    return protocol

  def _compile(self) -> None:
    c, spec = self.cfg, self.spec
    batch_size, num_images = c['batch_size'], c['num_images']
    base_key = jax.random.key(c['seed'])
    replicated = parallel.replicated(self.mesh)
    sharded = parallel.batch_sharded(self.mesh)

    def measure(images, labels, valid, batch_index, stream, feature_params):
      """Everything the metrics need from one batch of uint8 images and class ids."""
      out = self._distribution_outputs(images, valid, batch_index, stream, feature_params)
      if c['class_frequencies']:
        ignored = jnp.where(valid[:, None, None], labels, spec.num_classes)
        out['class_counts'] = semantic.class_counts(ignored, spec.num_classes + 1)[:-1]
        masked = jnp.where(valid[:, None, None, None], images, self._palette[0])
        out['off_palette'] = semantic.off_palette_count(masked, spec.palette)
      if c['ms_ssim']:
        scores = ms_ssim_lib.ms_ssim(
          images[0::2], images[1::2], variant=c['ms_ssim_variant'], max_val=255.0
        )
        valid_f = valid.astype(jnp.float32)
        pair_valid = valid_f[0::2] * valid_f[1::2]
        out['ms_ssim_sum'] = jnp.sum(scores * pair_valid)
        out['ms_ssim_pairs'] = jnp.sum(pair_valid)
      if c['components']:
        out['labels'] = labels.astype(jnp.uint8)  # Scored on the host (components.py).
      return out

    def valid_mask(batch_index):
      return jnp.arange(batch_size) + batch_index * batch_size < num_images

    def generated_pass(state, batch_index, feature_params):
      key = jax.random.fold_in(jax.random.fold_in(base_key, 1), batch_index)
      z = jax.random.normal(key, (batch_size, self.latent_dim), jnp.float32)
      z = jax.lax.with_sharding_constraint(z, sharded)
      outputs = self._generate(state, z)
      if self.head == 'semantic':
        labels = jnp.argmax(outputs, axis=-1).astype(jnp.int32)
        images = self._palette[labels]
      else:
        images = images_lib.signed_to_uint8(outputs)
        labels = semantic.nearest_palette_labels(images, spec.palette)
      return measure(images, labels, valid_mask(batch_index), batch_index, 2, feature_params)

    def real_pass(labels, batch_index, feature_params):
      images = self._palette[labels]
      return measure(images, labels, valid_mask(batch_index), batch_index, 3, feature_params)

    self._generated_pass = jax.jit(generated_pass, in_shardings=(replicated, None, replicated))
    self._real_pass = jax.jit(real_pass, in_shardings=(sharded, None, replicated))
    # A fixed random subset (and order) of the data set; a seeded permutation, so that pairs of
    # neighbouring real maps are not neighbouring positions of the (ordered) data set.
    order = np.random.default_rng(c['seed']).permutation(len(self.source))
    self._real_indices = order[:num_images]

  # Streaming.

  def _merge(self, stats: SetStatistics, out: dict, valid: np.ndarray) -> None:
    if 'labels' in out:
      labels = to_host(out.pop('labels'))[valid]
      scores = components_lib.map_scores(labels, self.spec.class_names, self.spec.name)
      for name, values in scores.items():
        stats.map_scores.setdefault(name, []).append(values)
    merge_batch(stats, out, valid)

  def _real_batch(self, batch_index: int) -> tuple[jax.Array, np.ndarray]:
    """This batch's real label maps as a global array (each process loads its rows only)."""
    positions, valid = self._positions(batch_index)
    indices = self._real_indices[np.where(valid, positions, 0)]
    labels = np.stack(
      [np.asarray(self.source[int(i)]['label'], np.int32) for i in local_rows(indices)]
    )
    segmentation.check_labels(labels, self.spec.num_classes, None, name=f'{self.spec.name} maps')
    return parallel.make_global_batch(labels, self.mesh), valid

  def _stream(self, what: str, run_batch: Callable[[int], tuple[dict, np.ndarray]]):
    stats = SetStatistics()
    progress = Progress(f'eval {self.name} [{what}]', self.cfg['num_images'])
    for batch_index in range(self._num_batches()):
      out, valid = run_batch(batch_index)
      self._merge(stats, out, valid)
      progress.update(stats.num_images)
    return stats

  def real_statistics(self) -> SetStatistics:
    """The real set's statistics (computed on the first call, then kept)."""
    if self._real_stats is None:

      def run_batch(batch_index):
        labels, valid = self._real_batch(batch_index)
        return self._real_pass(labels, batch_index, self.feature_params), valid

      self._real_stats = self._stream('real', run_batch)
    return self._real_stats

  def generated_statistics(self, state) -> SetStatistics:
    def run_batch(batch_index):
      out = self._generated_pass(state, batch_index, self.feature_params)
      return out, self._positions(batch_index)[1]

    return self._stream('generated', run_batch)

  def metrics(self, state) -> dict[str, float]:
    """The metrics of the generator of `state` against the real set."""
    return self.compare(self.real_statistics(), self.generated_statistics(state))

  def compare(self, real: SetStatistics, fake: SetStatistics) -> dict[str, float]:
    """The metrics of a generated set's statistics against the real set's."""
    c, spec = self.cfg, self.spec
    metrics: dict[str, float] = {'num_images': float(fake.num_images)}
    metrics.update(distribution_metrics(c, real, fake, spec.height, spec.width))
    if c['ms_ssim']:
      metrics['ms_ssim'] = fake.ms_ssim_sum / max(fake.ms_ssim_pairs, 1)
      metrics['ms_ssim_real'] = real.ms_ssim_sum / max(real.ms_ssim_pairs, 1)
    if c['class_frequencies']:
      metrics.update(
        semantic.class_frequency_metrics(real.class_counts, fake.class_counts, spec.class_names)
      )
      pixels = fake.num_images * spec.height * spec.width
      metrics['off_palette_fraction'] = fake.off_palette / pixels
    if c['components']:
      metrics.update(components_lib.summarize(fake.map_scores))
      real_scores = components_lib.summarize(real.map_scores)
      metrics.update({f'real_{name}': value for name, value in real_scores.items()})
    return metrics
