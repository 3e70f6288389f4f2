"""What every evaluator shares: config checks, batching, streamed statistics, the base class.

Evaluators are chosen by the config, big_vision style: every entry `config.evals.<name>` has a
`type` (a key of `registry.EVALUATORS`) and that type's fields. Each batch goes through one
compiled function that returns what every metric needs (SWD descriptors, Inception moments, class
counts, MS-SSIM of pairs, confusion matrices); the host merges those, so memory does not grow with
the number of images except for SWD's descriptors, which the algorithm needs all of (it
normalizes and sorts over the whole set; 3·128·147 float32 ≈ 220 KiB per 64×64 image).

Batches are sharded over the mesh's `data` axis like training. The last batch is padded and
masked, so `num_images` need not be a multiple of the batch size.
"""

import dataclasses
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
from semgan_jax.evaluation import statistics
from semgan_jax.evaluation import swd as swd_lib


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
  if merged.get('every_steps', 0) < 0:
    raise EvalConfigError(
      f'config.evals.{name}.every_steps={merged["every_steps"]}; expected >= 0.'
    )
  return merged


def check_counts(name: str, c: dict, spec, num_examples: int, *, least: int, batch: tuple) -> dict:
  """Resolves `c['num_images']` (0: all `num_examples`) and checks it and `c['batch_size']`.

  Args:
    name, c, spec: the entry's name, its checked fields and the data set, for the messages.
    num_examples: how many examples the split (or `spec`) holds.
    least: the fewest images the metrics take.
    batch: (what the batch size must be a multiple of, that multiple in words).
  """
  split = f':{c["split"]}' if 'split' in c else ''
  c['num_images'] = c['num_images'] or num_examples
  if not least <= c['num_images'] <= num_examples:
    raise EvalConfigError(
      f'config.evals.{name}.num_images={c["num_images"]}; expected {least} to the {num_examples} '
      f'examples of {spec.name}{split} (0: all).'
    )
  if c['batch_size'] <= 0 or c['batch_size'] % batch[0]:
    raise EvalConfigError(
      f'config.evals.{name}.batch_size={c["batch_size"]}; expected a positive {batch[1]}.'
    )
  return c


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
  map_scores: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)


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

  A subclass names its config fields (`defaults`, with its `type`) and check (`check_config`),
  the predict function it takes from the task (its constructor's keywords), adds its protocol
  fields (`_protocol`) and computes its metrics (`metrics`); `run` times them and returns them
  with the protocol. `split` is the data set split it reads (default: the entry's `split`).

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

  defaults: dict[str, Any]
  check_config: Callable[..., dict]  # (name, cfg, spec, num_examples, num_devices) -> cfg

  @classmethod
  def split(cls, cfg) -> str:
    return cfg.get('split', cls.defaults.get('split', 'train'))

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
    self.uses_features = c.get('fid', False) or c.get('kid', False)
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
