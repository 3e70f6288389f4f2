"""Tests of SemanticGAN's networks: channel shuffle, blocks, generator, discriminators, inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semgan_jax.models import blocks
from semgan_jax.models.blocks import (
  BLOCKS,
  CorrelatedResidualBlock,
  Res2Block,
  ResnetBlock,
)
from semgan_jax.models.conv import Conv
from semgan_jax.models.discriminators import (
  MultiScaleDiscriminator,
  downsample_for_discriminator,
)
from semgan_jax.models.generators import LabelToPhotoGenerator
from semgan_jax.models.inputs import instance_boundary_map, label_to_generator_input
from semgan_jax.models.layers import ConvTranspose, channel_shuffle, reflect_pad

# Small widths keep compiles short; depth and topology are the real ones.
G_FIELDS = dict(base_features=4, num_blocks=2, num_downsamplings=3)
D_FIELDS = dict(base_features=4)
SIZES = ((32, 64), (64, 64))
C_IN = 5  # 4 classes + the boundary map.


def _key(seed=0):
  # RBG keys compile several times faster on XLA:CPU.
  return jax.random.key(seed, impl='rbg')


def _count(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


# --- Layers. -----------------------------------------------------------------------------------


def test_channel_shuffle_is_shufflenet_reshape_transpose():
  channels, groups = 12, 3
  x = np.broadcast_to(np.arange(channels, dtype=np.float32), (2, 3, 4, channels))
  out = np.asarray(channel_shuffle(jnp.asarray(x), groups))
  expected = np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)
  np.testing.assert_array_equal(out, np.broadcast_to(expected, x.shape))
  assert sorted(out[0, 0, 0].tolist()) == list(range(channels))  # a permutation
  # Consecutive outputs come from different groups.
  assert [int(c) // (channels // groups) for c in out[0, 0, 0, :groups]] == [0, 1, 2]


def test_channel_shuffle_twice_with_complementary_groups_is_identity():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 24)), jnp.float32)
  for groups in (2, 3, 4, 6):
    once = channel_shuffle(x, groups)
    assert not np.array_equal(once, x)
    np.testing.assert_array_equal(channel_shuffle(once, 24 // groups), x)


@pytest.mark.parametrize('groups', [0, 4, 5])
def test_channel_shuffle_rejects_groups_that_do_not_divide(groups):
  with pytest.raises(ValueError, match='cannot be split'):
    channel_shuffle(jnp.zeros((1, 2, 2, 6)), groups)


def test_reflect_pad_mirrors_without_repeating_the_edge():
  x = jnp.arange(3.0).reshape(1, 1, 3, 1) * jnp.ones((1, 3, 1, 1))
  np.testing.assert_array_equal(reflect_pad(x, 1)[0, 1, :, 0], [1, 0, 1, 2, 1])
  with pytest.raises(ValueError, match='larger map'):
    reflect_pad(x, 3)


# --- Blocks. -----------------------------------------------------------------------------------

BLOCK_X = np.random.default_rng(1).normal(size=(2, 6, 6, 16)).astype(np.float32)


@pytest.fixture(scope='module')
def block_params():
  """Parameters of every block type for BLOCK_X; res2net and crb share theirs."""
  return {
    name: jax.jit(cls(scale=4).init if name != 'resnet' else cls().init)(_key(), BLOCK_X)
    for name, cls in BLOCKS.items()
  }


def test_blocks_registry():
  assert BLOCKS == {
    'resnet': ResnetBlock,
    'res2net': Res2Block,
    'crb': CorrelatedResidualBlock,
    'crb_grouped': blocks.GroupedCorrelatedResidualBlock,
  }
  assert not Res2Block().shuffle and CorrelatedResidualBlock().shuffle
  assert not CorrelatedResidualBlock().grouped_in
  assert blocks.GroupedCorrelatedResidualBlock().shuffle
  assert blocks.GroupedCorrelatedResidualBlock().grouped_in


def test_grouped_crb_parameters_and_its_conv_in_is_flax_grouped_conv(block_params):
  params = block_params['crb_grouped']['params']
  kernel = params['conv_in']['kernel']
  assert kernel.shape == (1, 1, 4, 16)  # Flax's layout for feature_group_count=4.
  # Grouped 1×1 in (16·16/4), the same 3×3 groups and 1×1 out as the CRB.
  assert _count(params) == 16 * 16 // 4 + 3 * (9 * 4 * 4) + 16 * 16
  flax_grouped = nn.Conv(16, (1, 1), feature_group_count=4, use_bias=False)
  expected = flax_grouped.apply({'params': {'kernel': kernel}}, BLOCK_X)
  ours = blocks.GroupedConv1x1(4).apply({'params': {'kernel': kernel}}, BLOCK_X)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_the_shuffle_changes_what_a_grouped_conv_in_lets_each_group_see(block_params):
  """After a dense 1×1 every split sees every input channel, shuffled or not (so the CRB is a
  re-parametrized Res2Block); after a grouped one, split i sees only input group i, and only the
  shuffle gives it a slice of every group."""
  variables = {'params': block_params['crb_grouped']['params']['conv_in']}

  def first_stage(x, shuffle):
    y = blocks.GroupedConv1x1(4).apply(variables, x)
    return channel_shuffle(y, 4) if shuffle else y

  for shuffle in (False, True):
    pixel = jnp.asarray(BLOCK_X[:1, :1, :1])
    jac = jax.jacobian(first_stage)(pixel, shuffle)
    jac = np.asarray(jac).reshape(16, 16)  # (output channel, input channel)
    # Which input groups reach each output split of 4 channels.
    reach = np.abs(jac).reshape(4, 4, 4, 4).sum(axis=(1, 3)) > 0
    expected = np.ones((4, 4), bool) if shuffle else np.eye(4, dtype=bool)
    np.testing.assert_array_equal(reach, expected)


def test_crb_and_res2block_have_the_same_parameter_tree(block_params):
  res2, crb = block_params['res2net'], block_params['crb']
  assert jax.tree.structure(res2) == jax.tree.structure(crb)
  assert jax.tree.map(jnp.shape, res2) == jax.tree.map(jnp.shape, crb)
  assert _count(res2) == _count(crb)
  # 1×1 in, three 3×3 group convs of 16/4 channels, 1×1 out; no biases (InstanceNorm follows).
  assert _count(res2) == 16 * 16 + 3 * (9 * 4 * 4) + 16 * 16


def test_crb_differs_from_res2block_only_by_the_shuffle(block_params, monkeypatch):
  params = block_params['res2net']
  res2 = Res2Block(scale=4).apply(params, BLOCK_X)
  crb = CorrelatedResidualBlock(scale=4).apply(params, BLOCK_X)
  assert np.abs(np.asarray(res2 - crb)).max() > 1e-3
  # A CRB equals a Res2Block whose 1×1 filters are permuted like the shuffle permutes channels.
  permutation = np.asarray(channel_shuffle(jnp.arange(16), 4))
  permuted = jax.tree.map(lambda a: a, params)
  kernel = params['params']['conv_in']['kernel']
  permuted['params']['conv_in']['kernel'] = kernel[..., permutation]
  np.testing.assert_allclose(Res2Block(scale=4).apply(permuted, BLOCK_X), crb, atol=1e-5)
  # With the shuffle made the identity, the two blocks are the same function.
  monkeypatch.setattr(blocks, 'channel_shuffle', lambda x, groups: x)
  np.testing.assert_array_equal(CorrelatedResidualBlock(scale=4).apply(params, BLOCK_X), res2)


@pytest.mark.parametrize(
  'name,last',
  [('resnet', 'conv2'), ('res2net', 'conv_out'), ('crb', 'conv_out'), ('crb_grouped', 'conv_out')],
)
def test_blocks_keep_shape_and_have_an_identity_skip(block_params, name, last):
  module = BLOCKS[name]() if name == 'resnet' else BLOCKS[name](scale=4)
  params = block_params[name]
  out = module.apply(params, BLOCK_X)
  assert out.shape == BLOCK_X.shape
  assert np.abs(np.asarray(out) - BLOCK_X).max() > 1e-2
  # A zero last conv gives a zero branch (InstanceNorm of a constant map is 0) and, with no
  # activation after the sum, the block is exactly the identity: negative inputs survive.
  zeroed = jax.tree.map(lambda a: a, params)
  zeroed['params'][last]['kernel'] = jnp.zeros_like(params['params'][last]['kernel'])
  np.testing.assert_array_equal(module.apply(zeroed, BLOCK_X), BLOCK_X)


def test_res2block_rejects_a_scale_that_does_not_divide_the_channels():
  for scale in (1, 3):
    with pytest.raises(ValueError, match='scale'):
      CorrelatedResidualBlock(scale=scale).init(_key(), jnp.zeros((1, 4, 4, 16)))


# --- Generator. --------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def generator_outputs():
  """{block: (params, [output at each of SIZES])}, from one compiled program."""
  rng = np.random.default_rng(2)
  inputs = [rng.normal(size=(2, h, w, C_IN)).astype(np.float32) for h, w in SIZES]

  @jax.jit
  def build(key):
    out = {}
    for name in BLOCKS:
      module = LabelToPhotoGenerator(block=name, **G_FIELDS)
      params = module.init(key, inputs[0])
      out[name] = (params, [module.apply(params, x) for x in inputs])
    return out

  return jax.device_get(build(_key()))


@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_generator_output_shape_and_range(generator_outputs, name):
  _, images = generator_outputs[name]
  for (h, w), image in zip(SIZES, images, strict=True):
    assert image.shape == (2, h, w, 3) and image.dtype == np.float32
    assert np.all(np.abs(image) < 1) and image.std() > 1e-3


def test_generator_layers_follow_the_johnson_naming(generator_outputs):
  params = generator_outputs['crb'][0]['params']
  # c7s1-4, d8, d16, d32, C32 ×2, u16, u8, u4, c7s1-3.
  assert params['stem']['kernel'].shape == (7, 7, C_IN, 4)
  assert [params[f'down{i}']['kernel'].shape[-1] for i in (1, 2, 3)] == [8, 16, 32]
  assert [params[f'up{i}']['kernel'].shape[-1] for i in (2, 1, 0)] == [16, 8, 4]
  assert params['head']['kernel'].shape == (7, 7, 4, 3) and 'bias' in params['head']
  assert sorted(k for k in params if k.startswith('block')) == ['block0', 'block1']
  assert 'bias' not in params['down1']  # the InstanceNorm removes it
  res2 = generator_outputs['res2net'][0]
  assert jax.tree.map(np.shape, res2) == jax.tree.map(np.shape, generator_outputs['crb'][0])


def test_resize_upsampling_keeps_the_parameters_and_avoids_the_checkerboard():
  """upsample='resize' has the transposed convolutions' parameter tree. On a constant input its
  u-layer (nearest ×2, 3×3 conv) is constant away from the border; the 3×3 stride-2 transposed
  convolution alternates between 1, 2 and 4 kernel taps per pixel: a period-2 pattern."""
  x = jnp.ones((1, 32, 32, C_IN))
  params = LabelToPhotoGenerator(**G_FIELDS).init(_key(), x)
  resized = LabelToPhotoGenerator(upsample='resize', **G_FIELDS).init(_key(), x)
  assert jax.tree.map(np.shape, resized) == jax.tree.map(np.shape, params)
  with pytest.raises(ValueError, match='upsample='):
    LabelToPhotoGenerator(upsample='bilinear', **G_FIELDS).init(_key(), x)

  flat = jnp.ones((1, 8, 8, 16))
  up = dict(features=8, kernel_size=(3, 3), use_bias=False, kernel_init=nn.initializers.normal(1))
  transpose = ConvTranspose(strides=(2, 2), padding=((1, 2), (1, 2)), **up)
  resize = Conv(padding=((1, 1), (1, 1)), **up)
  kernel = transpose.init(_key(), flat)
  doubled = jnp.repeat(jnp.repeat(flat, 2, axis=1), 2, axis=2)
  inner = (0, slice(2, -2), slice(2, -2))
  assert float(np.ptp(resize.apply(kernel, doubled)[inner], axis=(0, 1)).max()) < 1e-4
  assert float(np.ptp(transpose.apply(kernel, flat)[inner], axis=(0, 1)).min()) > 1e-2


def test_generator_rejects_bad_sizes_and_blocks():
  with pytest.raises(ValueError, match='divisible by 2\\*\\*num_downsamplings = 8'):
    LabelToPhotoGenerator(**G_FIELDS).init(_key(), jnp.zeros((1, 36, 64, C_IN)))
  with pytest.raises(ValueError, match='block='):
    LabelToPhotoGenerator(block='dense', **G_FIELDS).init(_key(), jnp.zeros((1, 32, 32, C_IN)))


# --- Discriminators. ---------------------------------------------------------------------------


def test_multiscale_discriminator_shapes():
  rng = np.random.default_rng(3)
  inputs = [
    (rng.normal(size=(2, h, w, C_IN)), rng.uniform(-1, 1, size=(2, h, w, 3))) for h, w in SIZES
  ]
  module = MultiScaleDiscriminator(**D_FIELDS)

  @jax.jit
  def build(key):
    params = module.init(key, *inputs[0])
    return params, [module.apply(params, *x) for x in inputs]

  params, outputs = jax.device_get(build(_key()))
  assert sorted(params['params']) == ['scale0', 'scale1', 'scale2']
  for (h, w), scales in zip(SIZES, outputs, strict=True):
    assert len(scales) == 3
    for features in scales:
      # D4, D8, D16, D32 then the logits; padding 2 maps n to n // 2 + 1 (stride 2), n + 1 (1).
      assert len(features) == 5
      expected, size = [], (h, w)
      for stride, width in ((2, 4), (2, 8), (2, 16), (1, 32), (1, 1)):
        size = tuple(n // 2 + 1 if stride == 2 else n + 1 for n in size)
        expected.append((2, *size, width))
      assert [f.shape for f in features] == expected
      assert features[-1].dtype == np.float32
      h, w = -(-h // 2), -(-w // 2)  # the next scale: AvgPool(3, 2, 1) gives ceil(n / 2)
  first = params['params']['scale0']
  assert 'bias' in first['conv0'] and 'bias' not in first['conv1'] and 'conv0_norm' not in first


def test_discriminator_downsampling_excludes_padding():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  out = np.asarray(downsample_for_discriminator(x))[0, :, :, 0]
  assert out.shape == (2, 2)
  assert out[0, 0] == np.mean([0, 1, 4, 5])  # the corner averages 4 pixels, not 9
  assert out[1, 1] == np.mean([5, 6, 7, 9, 10, 11, 13, 14, 15])


def test_multiscale_discriminator_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match='differ'):
    MultiScaleDiscriminator(**D_FIELDS).init(
      _key(), jnp.zeros((1, 32, 32, C_IN)), jnp.zeros((1, 16, 16, 3))
    )


# --- Inputs. -----------------------------------------------------------------------------------

INSTANCES = np.array(
  [
    [1, 1, 1, 2],
    [1, 1, 1, 2],
    [3, 3, 1, 2],
    [3, 3, 3, 3],
  ]
)
EDGES = np.array(
  [
    [0, 0, 1, 1],
    [1, 1, 1, 1],
    [1, 1, 1, 1],
    [0, 0, 1, 1],
  ]
)


def test_instance_boundary_map_marks_both_sides_of_every_boundary():
  out = np.asarray(instance_boundary_map(INSTANCES[None]))
  assert out.shape == (1, 4, 4, 1) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, :, :, 0], EDGES)
  np.testing.assert_array_equal(jax.jit(instance_boundary_map)(INSTANCES[None, :, :, None]), out)
  assert not np.asarray(instance_boundary_map(np.zeros((1, 3, 3), np.int32))).any()


def test_label_to_generator_input():
  labels = np.array([[[0, 1, 2, 3]] * 4])
  out = np.asarray(label_to_generator_input(labels, INSTANCES[None], num_classes=4))
  assert out.shape == (1, 4, 4, 5)
  np.testing.assert_array_equal(out[..., :4].argmax(-1), labels)
  np.testing.assert_array_equal(out[..., :4].sum(-1), 1)
  np.testing.assert_array_equal(out[0, :, :, 4], EDGES)


def test_label_to_generator_input_rejects_out_of_range_ids():
  for bad in (4, -1):
    labels = np.zeros((1, 4, 4), np.int32)
    labels[0, 1, 2] = bad
    for array in (labels, jnp.asarray(labels)):
      with pytest.raises(ValueError, match='label ids must lie in'):
        label_to_generator_input(array, INSTANCES[None], num_classes=4)
  with pytest.raises(ValueError, match='integer'):
    label_to_generator_input(np.zeros((1, 4, 4)), INSTANCES[None], num_classes=4)
  # Under jit the ids cannot be checked: an id out of range becomes an all-zero one-hot.
  labels[0, 1, 2] = 4
  out = jax.jit(label_to_generator_input, static_argnums=2)(labels, INSTANCES[None], 4)
  assert out[0, 1, 2, :4].sum() == 0
