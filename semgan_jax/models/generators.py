"""Generators: SemGAN's latent-vector → label-map network and its RGB twin (paper 2)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.layers import batch_norm, conv_init

HEADS = ('semantic', 'rgb')


def num_upsamplings(image_size: int, start_size: int) -> int:
  """How many stride-2 steps take `start_size` to `image_size`; both must be powers of two apart."""
  if image_size <= 0 or start_size <= 0:
    raise ValueError(f'image_size={image_size} and start_size={start_size} must be positive.')
  ratio = image_size // start_size
  if image_size % start_size or ratio < 2 or ratio & (ratio - 1):
    raise ValueError(
      f'image_size={image_size} must be start_size={start_size} times a power of two (>= 2).'
    )
  return int(math.log2(ratio))


class LatentToLabelGenerator(nn.Module):
  """DCGAN-style generator: z → dense → `start_size`² map → stride-2 transposed convs → head.

  The body is identical for both heads; only the last layer and its activation differ, exactly as
  in the paper's SemGAN-vs-GAN comparison:
    * `head='semantic'`: `num_classes` channels and a softmax over them at every pixel, so each
      pixel is a distribution over classes (SemGAN).
    * `head='rgb'`: 3 channels and a tanh, an RGB image in [-1, 1] of the colorized map (the
      paper's "GAN" baseline).

  Widths halve at every upsampling and end at `base_features` before the head.

  Attributes:
    num_classes: K, the number of semantic classes.
    image_size: output height and width.
    base_features: width of the last hidden block; the first is `base_features * 2**(n-1)`.
    kernel_size: transposed-convolution kernel size (`ks` in the paper).
    head: 'semantic' or 'rgb'.
    start_size: spatial size after the dense projection.
    bn_momentum: BatchNorm running-average momentum (used when sampling in eval mode).
    dtype: computation dtype of the body; the head's softmax/tanh is always float32.
    param_dtype: parameter dtype.
  """

  num_classes: int
  image_size: int = 64
  base_features: int = 64
  kernel_size: int = 11
  head: str = 'semantic'
  start_size: int = 4
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def out_channels(self) -> int:
    return self.num_classes if self.head == 'semantic' else 3

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    """Maps latents (B, latent_dim) to (B, H, W, K) class probabilities or (B, H, W, 3) RGB."""
    if self.head not in HEADS:
      raise ValueError(f'head={self.head!r}; expected one of {HEADS}.')
    n_up = num_upsamplings(self.image_size, self.start_size)
    norm = dict(momentum=self.bn_momentum, dtype=self.dtype, param_dtype=self.param_dtype)
    conv = dict(kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype)

    features = self.base_features * 2 ** (n_up - 1)
    x = nn.Dense(self.start_size * self.start_size * features, name='project', **conv)(z)
    x = x.reshape(z.shape[0], self.start_size, self.start_size, features)
    x = nn.relu(batch_norm(train, name='project_norm', **norm)(x))
    for i in range(n_up - 1):
      features //= 2
      # No bias: the BatchNorm that follows removes any per-channel offset.
      x = nn.ConvTranspose(
        features,
        (self.kernel_size,) * 2,
        strides=(2, 2),
        padding='SAME',
        use_bias=False,
        name=f'up{i}',
        **conv,
      )(x)
      x = nn.relu(batch_norm(train, name=f'up{i}_norm', **norm)(x))
    # The head: the only layer in which SemGAN and the RGB baseline differ.
    x = nn.ConvTranspose(
      self.out_channels,
      (self.kernel_size,) * 2,
      strides=(2, 2),
      padding='SAME',
      name=f'head_{self.head}',
      **conv,
    )(x)
    x = x.astype(jnp.float32)
    if self.head == 'semantic':
      return jax.nn.softmax(x, axis=-1)
    return jnp.tanh(x)
