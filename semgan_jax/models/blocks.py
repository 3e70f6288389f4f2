"""Shape-preserving residual blocks of the label-to-photo generator: ResNet, Res2Net and CRB."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.conv import Conv
from semgan_jax.models.layers import channel_shuffle, conv_init, instance_norm, reflect_pad

# All three blocks share one skip convention, pix2pixHD's: `x + branch(x)` with no activation after
# the sum, and a branch that ends in conv-norm. The paper's ablation swaps only the branch, so the
# trunk behaves the same whichever block is used, and a block whose last conv is zero is exactly
# the identity.


class ResnetBlock(nn.Module):
  """pix2pixHD's residual block: reflect-pad → 3×3 conv-IN-ReLU → reflect-pad → 3×3 conv-IN, + x.

  Attributes:
    norm_affine: whether the InstanceNorms learn a scale and bias (pix2pixHD: no).
    dtype: computation dtype.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
  """

  norm_affine: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, H, W, C) to (B, H, W, C)."""
    features = x.shape[-1]
    # No conv bias: the InstanceNorm that follows removes any per-channel offset.
    conv = dict(
      use_bias=False,
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lowering=self.conv_lowering,
    )
    norm = dict(affine=self.norm_affine, dtype=self.dtype, param_dtype=self.param_dtype)
    y = Conv(features, (3, 3), padding='VALID', name='conv1', **conv)(reflect_pad(x, 1))
    y = nn.relu(instance_norm(name='conv1_norm', **norm)(y))
    y = Conv(features, (3, 3), padding='VALID', name='conv2', **conv)(reflect_pad(y, 1))
    y = instance_norm(name='conv2_norm', **norm)(y)
    return x + y


class Res2Block(nn.Module):
  """Res2Net's hierarchical block (Gao et al.), optionally with the CRB's channel shuffle.

  1×1 conv-IN-ReLU → [channel shuffle, CRB only] → split into `scale` groups x_1..x_s of C/s
  channels → y_1 = x_1, y_2 = K_2(x_2), y_i = K_i(x_i + y_{i-1}) for i > 2, each K_i a 3×3
  conv-IN-ReLU → concat(y_1..y_s) → 1×1 conv-IN, + x.

  The group recurrence is Res2Net's equation (1): the first group passes through unconvolved, so
  the block has `scale - 1` 3×3 convolutions and group i sees a receptive field of 2i - 1.
  Inner width is C (no bottleneck), and the 3×3 convolutions are reflect-padded like
  `ResnetBlock`'s, so the blocks of an ablation differ only in the branch topology.

  With `shuffle=True` this is SemanticGAN's Correlated Residual Block: the 1×1 output is
  channel-shuffled with `scale` groups before the split, so every 3×3 group receives channels from
  each of the `scale` groups (C/s² from each when s² divides C). The parameter tree is the same
  either way. Because the shuffle follows a dense 1×1 convolution (and per-channel norms commute
  with permutations), a CRB equals a Res2Block whose 1×1 filters are permuted: with i.i.d. initial
  weights the two have the same function class and initial distribution, and differ only for a
  given set of parameters. (A grouped 1×1 convolution, as in ShuffleNet, would make them differ.)

  With `grouped_in=True` the first 1×1 convolution is grouped (`scale` groups, each C/s → C/s, a
  block-diagonal kernel): without a shuffle, 3×3 group i then sees only input group i; with one
  (`GroupedCorrelatedResidualBlock`), each 3×3 group mixes a slice of every input group. This is
  the reading of the paper under which the shuffle changes the function class; it is ours, not
  the paper's, and is labelled 'crb_grouped' (`GroupedConv1x1` is its first convolution).

  Attributes:
    scale: s, the number of groups; must divide the channel count and be at least 2.
    shuffle: channel-shuffle the 1×1 output before the split (the CRB).
    grouped_in: make the first 1×1 convolution grouped, with `scale` groups.
    norm_affine: whether the InstanceNorms learn a scale and bias (pix2pixHD: no).
    dtype: computation dtype.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
  """

  scale: int = 4
  shuffle: bool = False
  grouped_in: bool = False
  norm_affine: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, H, W, C) to (B, H, W, C)."""
    features = x.shape[-1]
    if self.scale < 2 or features % self.scale:
      raise ValueError(
        f'{type(self).__name__}: scale={self.scale} must be >= 2 and divide the {features} '
        'channels.'
      )
    width = features // self.scale
    conv = dict(
      use_bias=False,
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lowering=self.conv_lowering,
    )
    norm = dict(affine=self.norm_affine, dtype=self.dtype, param_dtype=self.param_dtype)

    if self.grouped_in:
      y = GroupedConv1x1(
        self.scale,
        kernel_init=conv_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name='conv_in',
      )(x)
    else:
      y = Conv(features, (1, 1), name='conv_in', **conv)(x)
    y = nn.relu(instance_norm(name='conv_in_norm', **norm)(y))
    if self.shuffle:
      y = channel_shuffle(y, self.scale)
    splits = jnp.split(y, self.scale, axis=-1)
    outputs = [splits[0]]
    for i in range(1, self.scale):
      # Group 2 has no predecessor to add: y_1 = x_1 is the unprocessed first split.
      h = splits[i] if i == 1 else splits[i] + outputs[-1]
      h = Conv(width, (3, 3), padding='VALID', name=f'conv_group{i}', **conv)(reflect_pad(h, 1))
      outputs.append(nn.relu(instance_norm(name=f'conv_group{i}_norm', **norm)(h)))
    y = Conv(features, (1, 1), name='conv_out', **conv)(jnp.concatenate(outputs, axis=-1))
    y = instance_norm(name='conv_out_norm', **norm)(y)
    return x + y


class CorrelatedResidualBlock(Res2Block):
  """SemanticGAN's CRB: a `Res2Block` whose 1×1 output is channel-shuffled before the split."""

  shuffle: bool = True


class GroupedCorrelatedResidualBlock(Res2Block):
  """Our grouped reading of the CRB: a grouped first 1×1 convolution, then the shuffle."""

  shuffle: bool = True
  grouped_in: bool = True


class GroupedConv1x1(nn.Module):
  """A bias-free 1×1 convolution of (B, H, W, C) with `groups` groups, C/g → C/g each.

  Its `kernel` is (1, 1, C/g, C), Flax's layout for `feature_group_count=groups` (output channels
  [j·C/g, (j+1)·C/g) read input group j), applied as one batched matrix product.

  Attributes:
    groups: g; must divide the channel count.
    kernel_init: the kernel's initializer.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  groups: int
  kernel_init: Callable = conv_init
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    width = features // self.groups
    kernel = self.param('kernel', self.kernel_init, (1, 1, width, features), self.param_dtype)
    # (C/g in, C out) → (g, C/g in, C/g out): group j's block of the block-diagonal kernel.
    blocks = kernel[0, 0].reshape(width, self.groups, width).transpose(1, 0, 2)
    x = x.astype(self.dtype).reshape(*x.shape[:-1], self.groups, width)
    y = jnp.einsum('...gi,gio->...go', x, blocks.astype(self.dtype))
    return y.reshape(*y.shape[:-2], features)


BLOCKS = {
  'resnet': ResnetBlock,
  'res2net': Res2Block,
  'crb': CorrelatedResidualBlock,
  'crb_grouped': GroupedCorrelatedResidualBlock,
}
