"""The dream task (paper 2 §6.1): latents → SemGAN label maps → SemanticGAN photos.

Nothing is trained: `--mode=dream` restores a SemGAN run and a SemanticGAN run (configs/
dream_streets.py names their workdirs) and chains them. SemGAN's maps (argmax of its softmax)
become the translator's Cityscapes label ids through SemGAN's label set
(`semgan_jax.data.label_sets`); instance maps come from the connected components of each thing
class (car, person, ...), as Cityscapes numbers instances (`label_id * 1000 + k`, stuff pixels
carry their label id); the translator reads the one-hot ids and the instances' boundary map.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from scipy import ndimage

from semgan_jax import data as data_lib
from semgan_jax import images
from semgan_jax.data import cityscapes_labels, label_sets
from semgan_jax.tasks.base import Task, UserInputError, expect, expect_positive
from semgan_jax.train.checkpointing import CONFIG_FILE
from semgan_jax.train.semanticgan_step import translate
from semgan_jax.train.semgan_step import generate, sample_latents
from semgan_jax.train.state import map_size


@dataclasses.dataclass(frozen=True)
class Half:
  """One trained run of the chain: its config (from its workdir), workdir and checkpoint step
  (None: the newest readable one)."""

  config: ml_collections.ConfigDict
  workdir: str
  step: int | None


def read_run_config(workdir: str, field: str) -> ml_collections.ConfigDict:
  """The config a training run wrote into `workdir`; one line naming `field` if there is none."""
  path = epath.Path(os.path.expanduser(workdir)) / CONFIG_FILE
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except FileNotFoundError:
    raise UserInputError(
      f'config.dream.{field}={workdir!r} holds no trained run ({CONFIG_FILE} is missing); '
      'train it first (README, "Dream street scenes").'
    ) from None
  except (OSError, ValueError) as e:
    raise UserInputError(f'config.dream.{field}: {path} cannot be read ({e}).') from e


def class_to_label_id(config: ml_collections.ConfigDict) -> np.ndarray:
  """The Cityscapes label id of each class of a SemGAN run (its label set's, or the identity when
  it was trained on the label ids themselves); UserInputError when its classes are not streets'
  or Cityscapes' classes."""
  d = config.data
  if d.get('label_set'):
    return label_sets.get_label_set(d.label_set).to_label_id
  spec = data_lib.get_dataset_spec(d.name, d.get('config_name'))
  expect(
    list(spec.class_names) == list(cityscapes_labels.CLASS_NAMES),
    f'the SemGAN run learned the classes of {d.name} ({", ".join(spec.class_names[:4])}, ...), '
    'which a label-to-photo translator of Cityscapes label ids cannot read; train SemGAN on a '
    'street data set with a label set (configs/streets_semgan.py).',
  )
  return np.arange(spec.num_classes, dtype=np.int32)


def instance_maps(label_ids: np.ndarray, thing_ids=cityscapes_labels.THING_IDS) -> np.ndarray:
  """Cityscapes-style instance ids of (B, H, W) label-id maps: every 4-connected blob of a thing
  class is one instance, `label_id * 1000 + k` (k from 0, in scan order); other pixels carry
  their label id."""
  label_ids = np.asarray(label_ids)
  out = label_ids.astype(np.int32)
  for b, labels in enumerate(label_ids):
    for thing in np.intersect1d(np.unique(labels), thing_ids):
      blobs, _ = ndimage.label(labels == thing)
      mask = blobs > 0
      out[b][mask] = thing * 1000 + blobs[mask] - 1
  return out


def slerp(z0: jax.Array, z1: jax.Array, steps: int) -> jax.Array:
  """`steps` latents from z0 to z1 along the great circle (Gaussian latents keep their norm)."""
  t = jnp.linspace(0.0, 1.0, steps)[:, None]
  cos = jnp.dot(z0, z1) / (jnp.linalg.norm(z0) * jnp.linalg.norm(z1))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  sin = jnp.sin(omega)
  linear = (1 - t) * z0 + t * z1
  curved = (jnp.sin((1 - t) * omega) * z0 + jnp.sin(t * omega) * z1) / jnp.maximum(sin, 1e-12)
  return jnp.where(sin > 1e-6, curved, linear)


class DreamTask(Task):
  """The chain of a trained SemGAN and a trained SemanticGAN; run by `--mode=dream` only."""

  name = 'dream'
  modes = ('dream',)
  sample_name = 'dream'

  def halves(self, config) -> dict[str, Half]:
    """The two runs `config.dream` names, read and checked against each other before anything
    is restored or written: {'semgan': Half, 'semanticgan': Half}."""
    dr = config.dream
    expect_positive(dr, 'dream', ('num_samples', 'interpolation_frames'))
    expect(dr.frame_ms > 0, f'config.dream.frame_ms={dr.frame_ms}; expected > 0.')
    halves = {}
    for role in ('semgan', 'semanticgan'):
      field = f'{role}_workdir'
      expect(bool(dr[field]), f'config.dream.{field} is empty; expected a {role} workdir.')
      run = read_run_config(dr[field], field)
      trained = run.get('task', 'semgan')
      expect(
        trained == role,
        f'config.dream.{field}={dr[field]!r} holds a {trained!r} run; expected a {role!r} run.',
      )
      step = dr[f'{role}_step']
      expect(step >= 0, f'config.dream.{role}_step={step}; expected >= 0 (0: the newest).')
      halves[role] = Half(run, dr[field], step or None)
    maps, photos = halves['semgan'].config, halves['semanticgan'].config
    both = f'(config.dream.semgan_workdir={dr.semgan_workdir!r}, semanticgan_workdir='
    both += f'{dr.semanticgan_workdir!r})'
    expect(
      maps.model.head == 'semantic',
      f'the SemGAN run draws RGB images (model.head={maps.model.head!r}), not label maps {both}.',
    )
    try:
      to_ids = class_to_label_id(maps)
    except ValueError as e:
      raise UserInputError(f'{e} {both}') from e
    expect(
      int(to_ids.max()) < photos.data.num_classes,
      f"SemGAN's classes become label ids up to {int(to_ids.max())}, but the translator reads "
      f'{photos.data.num_classes} label ids {both}.',
    )
    size, wanted = map_size(maps.data), (photos.data.height, photos.data.width)
    expect(
      size == wanted,
      f'SemGAN draws {size[0]}x{size[1]} maps, but the translator was trained at '
      f'{wanted[0]}x{wanted[1]} {both}.',
    )
    return halves

  def make_dreamer(self, config, halves: dict[str, Half], states: dict):
    """`(rng, count) -> {'label_ids', 'photos', 'strip_ids', 'strip_photos'}` (numpy): `count`
    dreamed scenes, and `config.dream.interpolation_frames` along a latent interpolation, from
    the restored `states` of `halves` (both keyed by role)."""
    maps_config, photos_config = halves['semgan'].config, halves['semanticgan'].config
    to_ids = jnp.asarray(class_to_label_id(maps_config))
    latent_dim, num_ids = maps_config.model.latent_dim, photos_config.data.num_classes
    draw = jax.jit(lambda state, z: to_ids[jnp.argmax(generate(state, z), axis=-1)])
    paint = jax.jit(lambda state, ids, inst: translate(state, ids, inst, num_classes=num_ids))

    def chain(z):
      ids = np.asarray(draw(states['semgan'], z))
      return ids, np.asarray(paint(states['semanticgan'], ids, instance_maps(ids)))

    def dream(rng, count):
      sample_key, ends_key = jax.random.split(rng)
      label_ids, photos = chain(sample_latents(sample_key, count, latent_dim))
      z0, z1 = sample_latents(ends_key, 2, latent_dim)
      strip_ids, strip_photos = chain(slerp(z0, z1, config.dream.interpolation_frames))
      return {
        'label_ids': label_ids,
        'photos': photos,
        'strip_ids': strip_ids,
        'strip_photos': strip_photos,
      }

    return dream

  def write(self, config, outputs: dict, out_dir: str, *, seed: int, steps: dict) -> dict:
    """Writes a dream's pictures into `out_dir` (process 0), named after `seed`: a grid of
    (label map | photo) rows, the label ids as `.npy`, the interpolation as a PNG strip (maps
    above photos) and a GIF; returns the paths, keyed by what they hold."""
    pictures = dream_images(outputs)
    out = epath.Path(out_dir)
    paths = {
      'grid': out / f'dream_seed{seed}.png',
      'label_ids': out / f'dream_seed{seed}.npy',
      'strip': out / f'interpolation_seed{seed}.png',
      'animation': out / f'interpolation_seed{seed}.gif',
    }
    if jax.process_index() == 0:
      images.write_png(paths['grid'], images.upscale_nearest(pictures['grid'], 2))
      images.write_atomically(paths['label_ids'], lambda f: np.save(f, outputs['label_ids']))
      images.write_png(paths['strip'], images.upscale_nearest(pictures['strip'], 2))
      frames = [images.upscale_nearest(f, 2) for f in pictures['frames']]
      images.write_gif(paths['animation'], frames, config.dream.frame_ms)
      logging.info(
        'Dreamed %d scenes from SemGAN step %d and SemanticGAN step %d (seed %d): %s',
        len(outputs['label_ids']),
        steps['semgan'],
        steps['semanticgan'],
        seed,
        ', '.join(os.fspath(p) for p in paths.values()),
      )
    return {k: os.fspath(v) for k, v in paths.items()}


def pair_tiles(label_ids: np.ndarray, photos: np.ndarray) -> np.ndarray:
  """(N, H, W) label ids and (N, H, W, 3) photos in [-1, 1] → (2N, H, W, 3) uint8 tiles:
  each colorized map followed by its photo."""
  colored = data_lib.colorize(label_ids, cityscapes_labels.PALETTE)
  tiles = np.stack([colored, images.signed_to_uint8(photos)], axis=1)
  return tiles.reshape(-1, *tiles.shape[2:])


def dream_images(outputs: dict) -> dict:
  """The pictures of a dream: 'grid' (rows of label map | photo), 'strip' (the interpolation,
  maps above photos) and 'frames' (each interpolation step's label map | photo)."""
  grid = images.make_grid(pair_tiles(outputs['label_ids'], outputs['photos']), columns=2)
  frames = pair_tiles(outputs['strip_ids'], outputs['strip_photos'])
  n = len(outputs['strip_ids'])
  strip = images.make_grid(np.concatenate([frames[0::2], frames[1::2]]), columns=n)
  pairs = [images.make_grid(frames[i : i + 2], columns=2) for i in range(0, len(frames), 2)]
  return {'grid': grid, 'strip': strip, 'frames': pairs}
