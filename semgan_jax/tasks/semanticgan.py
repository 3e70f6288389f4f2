"""The SemanticGAN task (paper 1): label map → photo, pix2pixHD's losses and SIPL.

configs/streets.py, configs/cityscapes.py. The pure step is `semgan_jax.train.semanticgan_step`.
"""

import functools

import jax
import numpy as np

from semgan_jax import data as data_lib
from semgan_jax import images, parallel, segmenter
from semgan_jax.data import paired
from semgan_jax.models import BLOCKS, conv
from semgan_jax.models.generators import UPSAMPLES
from semgan_jax.tasks.base import (
  Task,
  UserInputError,
  dataset_spec,
  expect,
  expect_positive,
  open_split_data,
)
from semgan_jax.train.semanticgan_step import (
  build_vgg,
  create_semanticgan_state,
  make_semanticgan_step,
  make_sipl_loss,
  translate,
)


def load_frozen_params(config) -> dict:
  """Weights of the frozen networks the losses need: VGG19 when `loss.lambda_vgg > 0`, ERFNet
  when `loss.lambda_sipl > 0`. A missing or wrong file is one line naming the field to fix."""
  from semgan_jax.weights import erfnet as erfnet_weights
  from semgan_jax.weights import vgg19

  needed = (
    ('vgg', 'lambda_vgg', 'vgg_weights', 'the VGG19 perceptual loss', vgg19),
    ('erfnet', 'lambda_sipl', 'erfnet_weights', 'SIPL (a frozen ERFNet)', erfnet_weights),
  )
  frozen = {}
  for key, weight_field, path_field, what, module in needed:
    if config.loss[weight_field] <= 0:
      continue
    try:
      frozen[key] = module.load_params(module.ensure_weights(config.loss[path_field] or None))
    except (OSError, ValueError) as e:
      raise UserInputError(
        f'config.loss.{weight_field}={config.loss[weight_field]} asks for {what}, but: {e} (or '
        f'switch the loss off: --config.loss.{weight_field}=0)'
      ) from e
  return frozen


def extra_g_losses(config) -> dict:
  """G's loss terms beyond pix2pixHD's: SIPL, weighted λ2 = `loss.lambda_sipl`, when on."""
  if config.loss.lambda_sipl <= 0:
    return {}
  return {'sipl': (config.loss.lambda_sipl, make_sipl_loss())}


def first_pairs(source, count: int) -> dict[str, np.ndarray]:
  """The first `count` pairs of a split, stacked: fixed inputs for sample grids."""
  examples = [source[i] for i in range(min(count, len(source)))]
  stacked = {
    key: np.stack([np.asarray(e[key]) for e in examples]) for key in ('image', 'label', 'instance')
  }
  return {
    'image': stacked['image'].astype(np.uint8),
    'label': np.maximum(stacked['label'], 0).astype(np.int32),  # license plates: 'unlabeled'
    'instance': stacked['instance'].astype(np.int32),
  }


def triplet_grid(labels, generated, real, palette) -> np.ndarray:
  """Rows of (colorized label map | generated photo | real photo), as one uint8 image."""
  colored = data_lib.colorize(labels, palette)
  fake = images.signed_to_uint8(generated)
  tiles = np.stack([colored, fake, np.asarray(real, np.uint8)], axis=1)
  return images.make_grid(tiles.reshape(-1, *tiles.shape[2:]), columns=3)


def _added_loss_fields(config) -> dict:
  """The loss fields added after the first runs (the L1 term, instance noise), as the step's
  keyword arguments; off in runs whose config.json predates them."""
  loss = config.loss
  return {
    'lambda_l1': loss.get('lambda_l1', 0.0),
    'instance_noise_std': loss.get('instance_noise_std', 0.0),
    'instance_noise_steps': loss.get('instance_noise_steps', 0),
  }


class SemanticGANTask(Task):
  """SemanticGAN: a pix2pixHD-style generator (ResNet, Res2Net or CRB blocks) against
  multi-scale PatchGAN discriminators, with feature matching, VGG and SIPL terms."""

  name = 'semanticgan'
  architecture_fields = (
    'model',
    'data.name',
    'data.config_name',
    'data.height',
    'data.width',
    'data.num_classes',
  )
  dtypes = ('float32', 'bfloat16')
  sample_name = 'triplets'

  def check_config(self, config):
    spec = dataset_spec(config)
    d, m, loss = config.data, config.model, config.loss
    expect(spec.paired, f'config.data.name={d.name!r} has no photos; expected a paired data set.')
    expect(m.block in BLOCKS, f'config.model.block={m.block!r}; expected one of {sorted(BLOCKS)}.')
    upsample = m.get('upsample', 'transpose')
    expect(
      upsample in UPSAMPLES,
      f'config.model.upsample={upsample!r}; expected one of {UPSAMPLES}.',
    )
    expect(
      m.conv_lowering in conv.LOWERINGS,
      f'config.model.conv_lowering={m.conv_lowering!r}; expected one of {conv.LOWERINGS}.',
    )
    names = ('g_base_features', 'num_blocks', 'd_base_features', 'num_d', 'd_num_layers')
    expect_positive(m, 'model', names)
    expect(
      m.num_downsamplings >= 0,
      f'config.model.num_downsamplings={m.num_downsamplings}; expected >= 0.',
    )
    trunk = m.g_base_features * 2**m.num_downsamplings
    expect(
      m.block == 'resnet' or (m.scale >= 2 and trunk % m.scale == 0),
      f'config.model.scale={m.scale}; a {m.block!r} block splits its {trunk} channels '
      '(g_base_features·2**num_downsamplings) into `scale` groups, so expected a divisor >= 2.',
    )
    factor = 2**m.num_downsamplings
    expect(
      d.height % factor == 0 and d.width % factor == 0,
      f'config.data.height/width={d.height}x{d.width} must be divisible by 2**'
      f'config.model.num_downsamplings={factor}.',
    )
    expect(
      loss.adversarial in ('lsgan', 'bce', 'hinge'),
      f"config.loss.adversarial={loss.adversarial!r}; expected 'lsgan', 'bce' or 'hinge'.",
    )
    for name in ('lambda_feat', 'lambda_vgg', 'lambda_sipl'):
      expect(loss[name] >= 0, f'config.loss.{name}={loss[name]}; expected >= 0.')
    for name, value in _added_loss_fields(config).items():
      expect(value >= 0, f'config.loss.{name}={value}; expected >= 0.')
    expect(
      0.0 <= m.g_ema_decay < 1.0, f'config.model.g_ema_decay={m.g_ema_decay}; expected [0, 1).'
    )
    problem = segmenter.data_error(d.num_classes, d.height, d.width)
    expect(
      loss.lambda_sipl <= 0 or problem is None,
      f'config.loss.lambda_sipl={loss.lambda_sipl}: {problem} (config.data).',
    )
    return spec

  def open_data(self, config, spec, *, train):
    return open_split_data(config, spec, train, paired.create_paired_iterator)

  def load_frozen(self, config):
    return load_frozen_params(config)

  def init_state(self, config, rng, frozen, tx):
    return create_semanticgan_state(config, rng, frozen, tx)

  def make_train_step(self, config, spec):
    loss = config.loss
    return make_semanticgan_step(
      num_classes=spec.num_classes,
      adversarial=loss.adversarial,
      lambda_feat=loss.lambda_feat,
      lambda_vgg=loss.lambda_vgg,
      extra_g_losses=extra_g_losses(config),
      vgg=build_vgg(config),
      **_added_loss_fields(config),
    )

  def evaluator_kwargs(self, config, spec):
    return {'photos': {'translate_fn': functools.partial(translate, num_classes=spec.num_classes)}}

  def networks(self, state):
    return {'Generator': state.g_params, 'Discriminator': state.d_params}

  def describe(self, summary):
    optional = ''.join(
      f' {name} {summary[f"train/g_{name}"]:.3f}'
      for name in ('vgg', 'sipl')
      if f'train/g_{name}' in summary
    )
    return (
      f'g_loss {summary["train/g_loss"]:.4f} (adv {summary["train/g_adv"]:.3f} feat '
      f'{summary["train/g_feat"]:.3f}{optional}) | d_loss {summary["train/d_loss"]:.4f} | '
      f'L1 {summary["train/g_l1_to_real"]:.3f}'
    )

  def describe_run(self, config, spec, data):
    return (
      f'SemanticGAN ({config.model.block} blocks) on {spec.name} {spec.height}x{spec.width}, '
      f'{len(data.load_split("train"))} images/epoch'
    )

  def make_sampler(self, config, spec, data, mesh, count, rng):
    del rng  # The first validation pairs, always the same.
    fixed = first_pairs(data.load_split('validation'), count)
    translate_fn = jax.jit(
      functools.partial(translate, num_classes=spec.num_classes),
      out_shardings=parallel.replicated(mesh),
    )

    def sample(state):
      generated = jax.device_get(translate_fn(state, fixed['label'], fixed['instance']))
      return triplet_grid(fixed['label'], generated, fixed['image'], spec.palette), None

    return sample
