"""Discriminators: the DCGAN-style critic of SemGAN, returning its intermediate features."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.generators import num_upsamplings
from semgan_jax.models.layers import batch_norm, conv_init, leaky_relu


class DCGANDiscriminator(nn.Module):
  """Stride-2 conv → LeakyReLU(0.2) blocks down to `end_size`², then one logit.

  BatchNorm on every block but the first (DCGAN). The discriminator input is the one-hot label map
  (real) or the generator's softmax (fake) for SemGAN, and an RGB image for the baseline; the
  module is agnostic to the channel count.

  Returns `(logits, features)`: `logits` has shape (B,), `features` is the list of every block's
  activations (post-activation), which feature matching reads.

  Attributes:
    image_size: input height and width.
    base_features: width of the first block; doubles at every block.
    kernel_size: convolution kernel size (`ks`; the paper uses one `ks` for G and D).
    end_size: spatial size of the last block.
    bn_momentum: BatchNorm momentum.
    dtype: computation dtype; logits are float32.
    param_dtype: parameter dtype.
  """

  image_size: int = 64
  base_features: int = 64
  kernel_size: int = 11
  end_size: int = 4
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, list[jax.Array]]:
    """Scores (B, H, W, C) inputs; returns (B,) logits and every block's features."""
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
        f'discriminator input is {x.shape[1]}x{x.shape[2]}, expected '
        f'{self.image_size}x{self.image_size}.'
      )
    n_down = num_upsamplings(self.image_size, self.end_size)
    conv = dict(kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype)
    features = []
    x = x.astype(self.dtype)
    for i in range(n_down):
      x = nn.Conv(
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
    logits = nn.Dense(1, name='logit', **conv)(x.reshape(x.shape[0], -1))
    return logits[:, 0].astype(jnp.float32), features
