"""Discriminators returning their features: SemGAN's DCGAN critic, SemanticGAN's PatchGANs."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.conv import Conv
from semgan_jax.models.generators import grid_steps
from semgan_jax.models.layers import batch_norm, conv_init, instance_norm, leaky_relu


class DCGANDiscriminator(nn.Module):
  """Stride-2 conv → LeakyReLU(0.2) blocks until the shorter side is `end_size`, then one logit.

  BatchNorm on every block but the first (DCGAN). The discriminator input is the one-hot label map
  (real) or the generator's softmax (fake) for SemGAN, and an RGB image for the baseline; the
  module is agnostic to the channel count.

  Returns `(logits, features)`: `logits` has shape (B,), `features` is the list of every block's
  activations (post-activation), which feature matching reads.

  Attributes:
    image_size: input height (and width, unless `width` is given).
    base_features: width of the first block; doubles at every block.
    kernel_size: convolution kernel size (`ks`; the paper uses one `ks` for G and D).
    end_size: the shorter side of the last block's map.
    bn_momentum: BatchNorm momentum.
    dtype: computation dtype; logits are float32.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
    width: input width; 0 for square inputs (`image_size`).
  """

  image_size: int = 64
  base_features: int = 64
  kernel_size: int = 11
  end_size: int = 4
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'
  width: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, list[jax.Array]]:
    """Scores (B, H, W, C) inputs; returns (B,) logits and every block's features."""
    size = (self.image_size, self.width or self.image_size)
    if x.shape[1:3] != size:
      raise ValueError(
        f'discriminator input is {x.shape[1]}x{x.shape[2]}, expected {size[0]}x{size[1]}.'
      )
    n_down, _ = grid_steps(*size, self.end_size)
    conv = dict(
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lowering=self.conv_lowering,
    )
    features = []
    x = x.astype(self.dtype)
    for i in range(n_down):
      x = Conv(
        self.base_features * 2**i,
        (self.kernel_size,) * 2,
        strides=(2, 2),
        padding='SAME',
        use_bias=i == 0,  # Blocks with a BatchNorm need no bias: the norm removes it.
        name=f'down{i}',
        **conv,
      )(x)
      if i > 0:
        x = batch_norm(
          train,
          momentum=self.bn_momentum,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f'down{i}_norm',
        )(x)
      x = leaky_relu(x)
      features.append(x)
    dense = dict(kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype)
    logits = nn.Dense(1, name='logit', **dense)(x.reshape(x.shape[0], -1))
    return logits[:, 0].astype(jnp.float32), features


class PatchGANDiscriminator(nn.Module):
  """pix2pixHD's PatchGAN (70×70 receptive field for `num_layers=3`): a map of real/fake logits.

  `D64-D128-D256-D512` then a conv to one channel, for `base_features=64`: 4×4 convolutions with
  zero padding 2 (pix2pixHD's ceil((4 - 1) / 2)), strides 2 for all D layers but the last, which
  has stride 1, as has the final conv. LeakyReLU(0.2) after every D layer; InstanceNorm after all
  but the first. Widths are `base_features * 2**i` capped at `8 * base_features` (pix2pixHD's cap
  of 512 for its 64). Convolutions followed by a norm have no bias.

  The padding of 2 makes a stride-2 layer map n to n // 2 + 1 and a stride-1 layer n to n + 1,
  so a 64×64 input gives 33, 17, 9, 10 and a 11×11 logit map.

  Attributes:
    base_features: width of the first layer.
    num_layers: number of stride-2 layers (pix2pixHD's `n_layers`); the net has num_layers + 2
      convolutions.
    norm_affine: whether the InstanceNorms learn a scale and bias (pix2pixHD: no).
    dtype: computation dtype; logits are float32.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
  """

  base_features: int = 64
  num_layers: int = 3
  norm_affine: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """Scores (B, H, W, C) inputs.

    Returns:
      `num_layers + 2` arrays: every D layer's activations (after the LeakyReLU), which feature
      matching reads, then the (B, H', W', 1) float32 logit map.
    """
    conv = dict(
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lowering=self.conv_lowering,
    )
    norm = dict(affine=self.norm_affine, dtype=self.dtype, param_dtype=self.param_dtype)
    features = []
    x = x.astype(self.dtype)
    for i in range(self.num_layers + 1):
      x = Conv(
        min(self.base_features * 2**i, 8 * self.base_features),
        (4, 4),
        strides=(2, 2) if i < self.num_layers else (1, 1),
        padding=((2, 2), (2, 2)),
        use_bias=i == 0,
        name=f'conv{i}',
        **conv,
      )(x)
      if i > 0:
        x = instance_norm(name=f'conv{i}_norm', **norm)(x)
      x = leaky_relu(x)
      features.append(x)
    x = Conv(1, (4, 4), padding=((2, 2), (2, 2)), name='logits', **conv)(x)
    features.append(x.astype(jnp.float32))
    return features


def downsample_for_discriminator(x: jax.Array) -> jax.Array:
  """pix2pixHD's pyramid step: 3×3 average pool, stride 2, padding 1 not counted; n → ceil(n/2)."""
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)


class MultiScaleDiscriminator(nn.Module):
  """`num_d` independent PatchGANs on the input at ×1, ×1/2, ×1/4, ... (pix2pixHD).

  The module concatenates the conditioning and the image itself, conditioning first as in
  pix2pixHD, so callers cannot swap or forget them; the concatenation (label map included) is
  then average-pooled for the coarser scales, as pix2pixHD does.

  Attributes:
    num_d: number of scales (3 in pix2pixHD and the paper).
    base_features: `PatchGANDiscriminator.base_features` of every scale.
    num_layers: `PatchGANDiscriminator.num_layers` of every scale.
    norm_affine: whether the InstanceNorms learn a scale and bias (pix2pixHD: no).
    dtype: computation dtype; logits are float32.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
  """

  num_d: int = 3
  base_features: int = 64
  num_layers: int = 3
  norm_affine: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'

  @nn.compact
  def __call__(self, labels: jax.Array, images: jax.Array) -> list[list[jax.Array]]:
    """Scores images given their conditioning.

    Args:
      labels: (B, H, W, C_label) conditioning, i.e. the generator's input (one-hot labels ⊕
        instance boundaries).
      images: (B, H, W, 3) real or generated images in [-1, 1].

    Returns:
      One list per scale, finest (×1) first, each `PatchGANDiscriminator`'s list of features
      ending with its logit map.
    """
    if labels.shape[:3] != images.shape[:3]:
      raise ValueError(
        f'labels {labels.shape} and images {images.shape} differ in batch or spatial size.'
      )
    x = jnp.concatenate([labels.astype(self.dtype), images.astype(self.dtype)], axis=-1)
    outputs = []
    for i in range(self.num_d):
      if i > 0:
        x = downsample_for_discriminator(x)
      outputs.append(
        PatchGANDiscriminator(
          base_features=self.base_features,
          num_layers=self.num_layers,
          norm_affine=self.norm_affine,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          conv_lowering=self.conv_lowering,
          name=f'scale{i}',
        )(x)
      )
    return outputs
