"""The evaluator: real and generated images streamed through one jitted pass per batch.

Evaluators are chosen by the config, big_vision style: every entry `config.evals.<name>` has a
`type` from `EVALUATOR_TYPES` and that type's fields (see `LABEL_MAP_DEFAULTS`). Each batch goes
through one compiled function that returns what every metric needs (SWD descriptors, Inception
moments, class counts, MS-SSIM of pairs); the host merges those, so memory does not grow with the
number of images except for SWD's descriptors, which the algorithm needs all of (it normalizes
and sorts over the whole set; 3·128·147 float32 ≈ 220 KiB per 64×64 image).

Batches are sharded over the mesh's `data` axis like training. The last batch is padded and
masked, so `num_images` need not be a multiple of the batch size.
"""

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from semgan_jax import parallel
from semgan_jax.evaluation import ms_ssim as ms_ssim_lib
from semgan_jax.evaluation import segmentation, semantic, statistics
from semgan_jax.evaluation import swd as swd_lib

EVALUATOR_TYPES = ('label_maps',)

# Fields of a `label_maps` evaluator (SemGAN and its RGB baseline) and their defaults.
LABEL_MAP_DEFAULTS = {
  'type': 'label_maps',
  'every_steps': 0,  # During training: every N steps and at the end (0: only --mode=eval).
  'num_images': 2916,  # Real and generated maps compared (paper 2: the whole training set).
  'batch_size': 64,  # Global; a multiple of the device count.
  'seed': 0,  # Latents, the real subset, SWD patches and projections.
  'prefix': 'eval',  # Scalars are logged as <prefix>/<metric>.
  'swd': True,  # Sliced Wasserstein distance of palette images (Progressive GAN).
  'ms_ssim': True,  # Mean MS-SSIM of pairs of generated (and of real) images.
  'ms_ssim_variant': 'progan',  # 'progan' (any size ≥ 16) or 'standard' (≥ 176 px).
  'class_frequencies': True,  # Real vs generated class histograms, off-palette pixels.
  'fid': False,  # Needs the converted Inception weights (see semgan_jax.weights.fid_inception).
  'kid': False,  # Kernel Inception Distance from the same features (keeps them: 8 KiB/image).
  'fid_weights': '',  # Path of the converted .npz ('' = the default cache path).
}


class EvalConfigError(ValueError):
  """A `config.evals` entry is malformed; the message names the field."""


def check_fields(name: str, cfg, defaults: dict) -> dict:
  """`cfg` (a dict or ConfigDict) merged over `defaults`; unknown fields and wrong types raise."""
  cfg = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  unknown = sorted(set(cfg) - set(defaults))
  if unknown:
    raise EvalConfigError(
      f'config.evals.{name}: unknown field(s) {unknown}; a {defaults["type"]!r} evaluator takes '
      f'{sorted(defaults)}.'
    )
  merged = {**defaults, **cfg}
  for key, default in defaults.items():
    value = merged[key]
    if isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, int):
      ok = isinstance(value, int) and not isinstance(value, bool)
    else:
      ok = isinstance(value, type(default))
    if not ok:
      raise EvalConfigError(
        f'config.evals.{name}.{key}={value!r}; expected a {type(default).__name__}.'
      )
  return merged


def check_swd_size(name: str, height: int, width: int) -> None:
  """Raises an `EvalConfigError` naming the `swd` field if SWD cannot take images of this size."""
  try:
    swd_lib.level_resolutions(height, width)
  except ValueError as e:
    raise EvalConfigError(f'config.evals.{name}.swd: {e}') from e


def to_host(x) -> np.ndarray:
  """A (possibly multi-process) global array as one numpy array on every process."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def local_rows(rows: np.ndarray) -> np.ndarray:
  """This process's rows of a global batch (each process holds an equal, consecutive share)."""
  local = len(rows) // jax.process_count()
  return rows[jax.process_index() * local : (jax.process_index() + 1) * local]


def to_uint8(outputs: jax.Array) -> jax.Array:
  """A generator's RGB outputs in [-1, 1] as uint8 pixels, rounded and clipped."""
  images = jnp.clip(jnp.round((outputs.astype(jnp.float32) + 1.0) * 127.5), 0, 255)
  return images.astype(jnp.uint8)


class Progress:
  """Log lines with images done, rate and ETA, at most every `interval` seconds."""

  def __init__(self, what: str, total: int, interval: float = 15.0):
    self.what, self.total, self.interval = what, total, interval
    self.start = self.last = time.perf_counter()

  def update(self, done: int) -> None:
    now = time.perf_counter()
    if done < self.total and now - self.last < self.interval:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate else float('nan')
    logging.info(
      '%s: %d/%d images (%.0f%%), %.1f images/s, ETA %.0fs',
      self.what,
      done,
      self.total,
      100.0 * done / self.total,
      rate,
      eta,
    )


@dataclasses.dataclass
class SetStatistics:
  """Everything the metrics need from one set of images, merged over batches on the host."""

  num_images: int = 0
  descriptors: swd_lib.SWDAccumulator = dataclasses.field(default_factory=swd_lib.SWDAccumulator)
  gaussian: statistics.GaussianStats | None = None
  features: list[np.ndarray] = dataclasses.field(default_factory=list)
  class_counts: np.ndarray | None = None
  off_palette: int = 0
  ms_ssim_sum: float = 0.0
  ms_ssim_pairs: int = 0


def check_label_map_config(name: str, cfg, spec, num_examples: int, num_devices: int) -> dict:
  """Checks a `label_maps` entry against the data set and devices; returns it with defaults."""
  c = check_fields(name, cfg, LABEL_MAP_DEFAULTS)
  if c['num_images'] < 2:
    raise EvalConfigError(f'config.evals.{name}.num_images={c["num_images"]}; expected >= 2.')
  if c['num_images'] > num_examples:
    raise EvalConfigError(
      f'config.evals.{name}.num_images={c["num_images"]} exceeds the {num_examples} images of '
      f'{spec.name}: SWD compares equal numbers of real and generated images.'
    )
  batch_size = c['batch_size']
  if batch_size <= 0 or batch_size % num_devices or batch_size % (2 * jax.process_count()):
    raise EvalConfigError(
      f'config.evals.{name}.batch_size={batch_size}; expected a positive even multiple of the '
      f'{num_devices} devices (MS-SSIM pairs the images of a batch) and of twice the '
      f'{jax.process_count()} process(es).'
    )
  if c['every_steps'] < 0:
    raise EvalConfigError(f'config.evals.{name}.every_steps={c["every_steps"]}; expected >= 0.')
  if c['ms_ssim']:
    images = jax.ShapeDtypeStruct((2, spec.image_size, spec.image_size, 3), jnp.uint8)
    try:
      jax.eval_shape(
        functools.partial(ms_ssim_lib.ms_ssim, variant=c['ms_ssim_variant']), images, images
      )
    except ValueError as e:
      raise EvalConfigError(f'config.evals.{name}.ms_ssim_variant: {e}') from e
  if c['swd']:
    check_swd_size(name, spec.image_size, spec.image_size)
  return c


def check_evals_config(evals_config, spec, num_examples: int, num_devices: int) -> None:
  """Checks every `config.evals` entry without building anything (fails before a run starts)."""
  for name, cfg in (evals_config or {}).items():
    if not hasattr(cfg, 'get') or 'type' not in cfg:
      raise EvalConfigError(
        f'config.evals.{name} must be a ConfigDict with a `type` (one of {EVALUATOR_TYPES}).'
      )
    if cfg['type'] == 'label_maps':
      check_label_map_config(name, cfg, spec, num_examples, num_devices)
    else:
      raise EvalConfigError(
        f'config.evals.{name}.type={cfg["type"]!r}; expected one of {EVALUATOR_TYPES}.'
      )


def merge_batch(stats: SetStatistics, out: dict, valid: np.ndarray) -> None:
  """Adds one batch's pass outputs (only its `valid` rows) to a set's statistics."""
  n = int(valid.sum())
  stats.num_images += n
  if 'descriptors' in out:
    levels = [to_host(d)[valid] for d in out['descriptors']]
    stats.descriptors.add([level.reshape(-1, level.shape[-1]) for level in levels])
  if 'moments' in out:
    moments = {k: to_host(v) for k, v in out['moments'].items()}
    if stats.gaussian is None:
      stats.gaussian = statistics.GaussianStats(moments['mean'].shape[0])
    stats.gaussian.add_moments(moments['count'], moments['mean'], moments['scatter'])
  if 'features' in out:
    stats.features.append(to_host(out['features'])[valid])
  if 'class_counts' in out:
    counts = to_host(out['class_counts']).astype(np.int64)
    stats.class_counts = counts if stats.class_counts is None else stats.class_counts + counts
    stats.off_palette += int(to_host(out['off_palette']))
  if 'ms_ssim_sum' in out:
    stats.ms_ssim_sum += float(to_host(out['ms_ssim_sum']))
    stats.ms_ssim_pairs += int(round(float(to_host(out['ms_ssim_pairs']))))


def load_inception(name: str, fid_weights: str) -> tuple[Callable, Any, str]:
  """The FID Inception: (feature_fn(params, images), params, path); errors name the field."""
  from semgan_jax.evaluation import inception_features
  from semgan_jax.weights import fid_inception

  try:
    path = fid_inception.ensure_weights(fid_weights or None)
    params = fid_inception.load_params(path)
  except (OSError, ValueError) as e:
    raise EvalConfigError(f'config.evals.{name}.fid_weights: {e}') from e
  return inception_features.inception_features, params, str(path)


def distribution_metrics(
  cfg: dict, real: SetStatistics, fake: SetStatistics, height: int, width: int
) -> dict:
  """SWD, FID and KID of two sets' statistics of `height`x`width` images, as `cfg` asks."""
  metrics = {}
  if cfg['swd']:
    key = jax.random.fold_in(jax.random.key(cfg['seed']), 4)
    resolutions = swd_lib.level_resolutions(height, width)
    metrics.update(
      swd_lib.sliced_wasserstein_distances(
        real.descriptors.levels(), fake.descriptors.levels(), resolutions, key=key
      )
    )
  if cfg['fid']:
    metrics['fid'] = statistics.frechet_distance(
      real.gaussian.mean, real.gaussian.covariance, fake.gaussian.mean, fake.gaussian.covariance
    )
  if cfg['kid']:
    kid, kid_std = statistics.kernel_inception_distance(
      np.concatenate(real.features), np.concatenate(fake.features), seed=cfg['seed']
    )
    metrics['kid'], metrics['kid_std'] = kid, kid_std
  return metrics


class Evaluator:
  """What every evaluator type shares: its checked config, features, protocol and batching.

  A subclass names its config check (`check_config`), adds its protocol fields (`_protocol`) and
  computes its metrics (`metrics`); `run` times them and returns them with the protocol.

  Args:
    name: the entry's name in `config.evals`.
    cfg: the entry (a dict or ConfigDict), checked by `check_config`.
    spec: the data set's `DatasetSpec`.
    source: random-access source of the evaluated images (`len()`, indexing).
    mesh: the device mesh; batches are sharded on its `data` axis.
    feature_fn: `(params, uint8 images) -> (B, D)` features replacing Inception's pool features
      (e.g. in tests), with `feature_params` its parameters. The parameters are an argument of
      the compiled pass, not a constant baked into it (Inception's are ~90 MB).
    feature_params: the parameters of `feature_fn`.
  """

  check_config: Callable[..., dict]  # (name, cfg, spec, num_examples, num_devices) -> cfg

  def __init__(
    self,
    name: str,
    cfg,
    *,
    spec,
    source,
    mesh,
    feature_fn: Callable | None = None,
    feature_params: Any = None,
  ):
    self.cfg = c = self.check_config(name, cfg, spec, len(source), mesh.devices.size)
    self.name, self.spec, self.source, self.mesh = name, spec, source, mesh
    self.uses_features = c['fid'] or c['kid']
    self.feature_fn, self.feature_params = feature_fn, None
    self.protocol = {'evaluator': name, 'type': c['type'], **self._protocol()}
    if self.uses_features:
      if feature_fn is None:
        self.feature_fn, feature_params, self.protocol['fid_weights'] = load_inception(
          name, c['fid_weights']
        )
      self.feature_params = jax.device_put(feature_params, parallel.replicated(mesh))

  def _protocol(self) -> dict[str, Any]:
    """How the numbers were made: written next to them, since published numbers drift with it."""
    raise NotImplementedError

  def _distribution_outputs(self, images, valid, batch_index, stream, feature_params) -> dict:
    """SWD descriptors and Inception moments or features of one batch (inside the jitted pass)."""
    c = self.cfg
    out = {}
    if c['swd']:
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(c['seed']), stream), batch_index)
      levels = swd_lib.descriptors(images, key)
      out['descriptors'] = [d.reshape(images.shape[0], -1, d.shape[-1]) for d in levels]
    if self.uses_features:
      features = self.feature_fn(feature_params, images).astype(jnp.float32)
      if c['fid']:
        out['moments'] = statistics.batch_moments(features, weights=valid.astype(jnp.float32))
      if c['kid']:
        out['features'] = features
    return out

  def _num_batches(self) -> int:
    return -(-self.cfg['num_images'] // self.cfg['batch_size'])

  def _positions(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch's positions in the evaluated set and which of them are images, not padding."""
    batch_size = self.cfg['batch_size']
    positions = np.arange(batch_index * batch_size, (batch_index + 1) * batch_size)
    return positions, positions < self.cfg['num_images']

  def metrics(self, state) -> dict[str, float]:
    """The metrics of the model of `state`."""
    raise NotImplementedError

  def run(self, state) -> dict[str, Any]:
    """Evaluates the model of `state`.

    Returns:
      {'metrics': {name: float}, 'protocol': {...}}; metric names are bare ('fid', 'swd_avg',
      ...); the caller prefixes them with `cfg['prefix']` when logging.
    """
    start = time.perf_counter()
    metrics = self.metrics(state)
    metrics['eval_seconds'] = time.perf_counter() - start
    return {'metrics': metrics, 'protocol': self.protocol}


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

  check_config = staticmethod(check_label_map_config)

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
    c, size = self.cfg, self.spec.image_size
    protocol = {
      'dataset': self.spec.name,
      'image_size': self.spec.image_size,
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
      protocol['swd'] = (
        f'Progressive GAN: Laplacian pyramid levels {swd_lib.level_resolutions(*(size,) * 2)}, '
        f'{swd_lib.NHOODS_PER_IMAGE} patches of {swd_lib.NHOOD_SIZE}x{swd_lib.NHOOD_SIZE}x3 per '
        f'image and level, {swd_lib.DIR_REPEATS}x{swd_lib.DIRS_PER_REPEAT} projections, x1e3'
      )
    if c['ms_ssim']:
      protocol['ms_ssim'] = f'variant {c["ms_ssim_variant"]}; pairs (2i, 2i+1) of each batch'
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
        images = to_uint8(outputs)
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
    metrics.update(distribution_metrics(c, real, fake, spec.image_size, spec.image_size))
    if c['ms_ssim']:
      metrics['ms_ssim'] = fake.ms_ssim_sum / max(fake.ms_ssim_pairs, 1)
      metrics['ms_ssim_real'] = real.ms_ssim_sum / max(real.ms_ssim_pairs, 1)
    if c['class_frequencies']:
      metrics.update(
        semantic.class_frequency_metrics(real.class_counts, fake.class_counts, spec.class_names)
      )
      pixels = fake.num_images * spec.image_size**2
      metrics['off_palette_fraction'] = fake.off_palette / pixels
    return metrics


def build_evaluators(evals_config, **kwargs) -> dict[str, LabelMapEvaluator]:
  """One evaluator per entry of `config.evals`, by its `type`; kwargs go to the constructor."""
  check_evals_config(evals_config, kwargs['spec'], len(kwargs['source']), kwargs['mesh'].size)
  return {
    name: LabelMapEvaluator(name, cfg, **kwargs) for name, cfg in (evals_config or {}).items()
  }
