"""The SemGAN task (paper 2): latent → label map, or its RGB baseline (`model.head=rgb`).

configs/shapes.py. The state and pure step are `semgan_jax.train.state` and `.semgan_step`.
"""

import jax
import numpy as np

from semgan_jax import data as data_lib
from semgan_jax import images, parallel
from semgan_jax.models import HEADS
from semgan_jax.models.generators import grid_steps
from semgan_jax.tasks.base import (
  Task,
  UserInputError,
  dataset_spec,
  expect,
  expect_positive,
  open_split_data,
)
from semgan_jax.train.semgan_step import GENERATOR_LOSSES, generate, make_train_step, sample_latents
from semgan_jax.train.state import create_train_state, map_size


def to_images(outputs: np.ndarray, head: str, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Generator outputs → (uint8 RGB images, int class ids).

  Semantic outputs are argmax-ed and colorized, so they are on the palette by construction. RGB
  outputs are shown as generated; their ids are the nearest palette color (the way a user of the
  baseline would have to read them).
  """
  if head == 'semantic':
    ids = np.argmax(outputs, axis=-1).astype(np.int32)
    return data_lib.colorize(ids, palette), ids
  rgb = images.signed_to_uint8(outputs)
  dist = np.square(rgb[..., None, :].astype(np.int32) - palette.astype(np.int32)).sum(-1)
  return rgb, np.argmin(dist, axis=-1).astype(np.int32)


class SemGANTask(Task):
  """SemGAN: G(z) → softmax label maps against a DCGAN discriminator (feature matching)."""

  name = 'semgan'
  architecture_fields = (
    'model',
    'data.name',
    'data.config_name',
    'data.image_size',
    'data.height',
    'data.width',
    'data.label_set',
    'data.num_classes',
  )
  sample_name = 'sample'

  def check_config(self, config):
    spec = dataset_spec(config)
    m, loss = config.model, config.loss
    expect(m.head in HEADS, f'config.model.head={m.head!r}; expected one of {HEADS}.')
    expect(
      loss.generator in GENERATOR_LOSSES,
      f'config.loss.generator={loss.generator!r}; expected one of {GENERATOR_LOSSES}.',
    )
    expect_positive(m, 'model', ('latent_dim', 'kernel_size', 'g_base_features', 'd_base_features'))
    try:  # Discriminator blocks, until the shorter side is 4.
      num_blocks, _ = grid_steps(*map_size(config.data), 4)
    except ValueError as e:
      raise UserInputError(f'config.data: SemGAN cannot draw these maps: {e}') from e
    expect(
      -num_blocks <= loss.fm_layer < num_blocks,
      f'config.loss.fm_layer={loss.fm_layer}; the discriminator has {num_blocks} blocks, '
      f'so expected an index in [{-num_blocks}, {num_blocks - 1}].',
    )
    expect(
      0.0 <= m.g_ema_decay < 1.0, f'config.model.g_ema_decay={m.g_ema_decay}; expected [0, 1).'
    )
    for name in ('instance_noise_std', 'instance_noise_steps'):
      expect(loss[name] >= 0, f'config.loss.{name}={loss[name]}; expected >= 0.')
    return spec

  def open_data(self, config, spec, *, train):
    iterator = data_lib.create_input_iterator  # The step one-hot encodes on the device:
    return open_split_data(config, spec, train, iterator, include_onehot=False)

  def init_state(self, config, rng, frozen, tx):
    del frozen
    return create_train_state(config, rng, tx)

  def make_train_step(self, config, spec):
    loss = config.loss
    return make_train_step(
      palette=spec.palette,
      generator_loss=loss.generator,
      fm_layer=loss.fm_layer,
      instance_noise_std=loss.instance_noise_std,
      instance_noise_steps=loss.instance_noise_steps,
    )

  def evaluator_kwargs(self, config, spec):
    del spec
    m = config.model
    return {'label_maps': {'generate_fn': generate, 'head': m.head, 'latent_dim': m.latent_dim}}

  def networks(self, state):
    return {'Generator': state.g_params, 'Discriminator': state.d_params}

  def describe(self, summary):
    return (
      f'g_loss {summary["train/g_loss"]:.4f} | d_loss {summary["train/d_loss"]:.4f} | '
      f'D(real) {summary["train/d_real_prob"]:.2f} D(fake) {summary["train/d_fake_prob"]:.2f}'
    )

  def describe_run(self, config, spec, data):
    classes = f', label set {config.data.label_set}' if config.data.get('label_set') else ''
    return f'SemGAN ({config.model.head} head) on {spec.name} {spec.height}x{spec.width}{classes}'

  def make_sampler(self, config, spec, data, mesh, count, rng):
    z = sample_latents(rng, count, config.model.latent_dim)
    generate_fn = jax.jit(generate, out_shardings=parallel.replicated(mesh))

    def sample(state):
      outputs = np.asarray(jax.device_get(generate_fn(state, z)))
      rgb, ids = to_images(outputs, config.model.head, spec.palette)
      return images.upscale_nearest(images.make_grid(rgb), 2), ids

    return sample
