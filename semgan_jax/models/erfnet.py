"""ERFNet (Romera et al., 2017): the Cityscapes segmenter whose cross-entropy is SemanticGAN's SIPL.

The network is erfnet_pytorch's (github.com/Eromera/erfnet_pytorch, `train/erfnet.py`) layer for
layer, so that its published Cityscapes weights load unchanged (`semgan_jax.weights.erfnet`):

  encoder  DownsamplerBlock 3→16 (`initial_block`), then `layers_0..14`: DownsamplerBlock 16→64,
           5 × NonBottleneck1D(64, dilation 1), DownsamplerBlock 64→128,
           2 × NonBottleneck1D(128, dilations 2, 4, 8, 16)
  decoder  `layers_0..5`: UpsamplerBlock 128→64, 2 × NonBottleneck1D(64), UpsamplerBlock 64→16,
           2 × NonBottleneck1D(16); `output_conv`: a 2×2 stride-2 transposed conv to the classes

Every convolution has a bias; every BatchNorm has erfnet_pytorch's epsilon 1e-3 and uses the
batch's statistics in training, its running averages otherwise (`train=False`, how SIPL runs the
frozen network). Parameter and module names are erfnet_pytorch's (`encoder/layers_3/conv3x1_1`,
`decoder/output_conv`), so the converter only renames `layers.i` to `layers_i`. The encoder's 1×1
`output_conv`, which erfnet_pytorch only uses to pre-train the encoder alone, is not built.

Transposed convolutions: PyTorch's `ConvTranspose2d` equals `lax.conv_transpose` (our
`ConvTranspose`) with the kernel flipped spatially and its in/out axes swapped, and padding
`k - 1 - p` before and `k - 1 - p + output_padding` after. The upsampler's
`ConvTranspose2d(3, stride=2, padding=1, output_padding=1)` is therefore padding (1, 2), the output
layer's `ConvTranspose2d(2, stride=2, padding=0)` padding (1, 1); the converter flips the kernels.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.layers import ConvTranspose

# Cityscapes' 19 training ids and, as channel 19, the void class (label 255) that erfnet_pytorch
# trains with (at zero loss weight); its published model has these 20 outputs.
NUM_CLASSES = 20
VOID_CLASS = 19
# Height and width must be divisible by this: each DownsamplerBlock concatenates a stride-2
# convolution (which rounds up) with a 2×2 max pool (which rounds down).
SIZE_DIVISOR = 8
# torch's BatchNorm2d(eps=1e-3) with its default momentum 0.1: new = 0.9 * old + 0.1 * batch.
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.9
# The published network's feature counts: initial block, encoder, bottleneck (× `ERFNet.width`).
BASE_FEATURES = (16, 64, 128)


def features(width: float) -> tuple[int, int, int]:
  """The three feature counts of an ERFNet `width` times as wide as the published one.

  `width` is a multiple of 1/16 (every count a whole number, so `width_of` reads it back) and at
  least 1/4 (the initial block's conv adds 16·width - 3 channels to the RGB max pool).
  """
  first = width * BASE_FEATURES[0]
  if first != int(first) or first < 4:
    raise ValueError(
      f'ERFNet width={width}: expected a multiple of 1/16 that is at least 0.25 (16·width '
      f'features in the initial block, at least 4).'
    )
  return tuple(int(n * width) for n in BASE_FEATURES)


def width_of(variables) -> float:
  """The `width` of the ERFNet whose variables ({'params', ...}) these are, from their shapes."""
  bias = variables['params']['encoder']['initial_block']['bn']['bias']
  return bias.shape[0] / BASE_FEATURES[0]


def _batch_norm(train: bool, *, dtype, param_dtype, name: str):
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPSILON,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


class DownsamplerBlock(nn.Module):
  """Halves H and W: [3×3 stride-2 conv to `features - C` channels ⊕ 2×2 max pool] → BN → ReLU.

  Attributes:
    features: output channels; more than the input's C.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = nn.Conv(
      self.features - x.shape[-1],
      (3, 3),
      strides=(2, 2),
      padding=((1, 1), (1, 1)),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='conv',
    )(x)
    pool = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.concatenate([conv, pool], axis=-1)
    norm = _batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')
    return nn.relu(norm(x))


class NonBottleneck1D(nn.Module):
  """ERFNet's residual block of factorised convolutions; keeps the shape.

  conv3×1 → ReLU → conv1×3 → BN → ReLU → conv3×1 and conv1×3 dilated by `dilation` (with
  ReLU between) → BN → channel dropout → ReLU of the sum with the input. The dropout drops whole
  feature maps (torch's `Dropout2d`) and only in training.

  Attributes:
    dropout_rate: probability of dropping a feature map; 0 builds no dropout.
    dilation: dilation of the second pair of convolutions (padded to keep the size).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  dropout_rate: float
  dilation: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(_batch_norm, train, dtype=self.dtype, param_dtype=self.param_dtype)
    d = self.dilation
    y = nn.relu(conv((3, 1), padding=((1, 1), (0, 0)), name='conv3x1_1')(x))
    y = conv((1, 3), padding=((0, 0), (1, 1)), name='conv1x3_1')(y)
    y = nn.relu(norm(name='bn1')(y))
    y = conv((3, 1), padding=((d, d), (0, 0)), kernel_dilation=(d, 1), name='conv3x1_2')(y)
    y = nn.relu(y)
    y = conv((1, 3), padding=((0, 0), (d, d)), kernel_dilation=(1, d), name='conv1x3_2')(y)
    y = norm(name='bn2')(y)
    if self.dropout_rate:
      y = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(y)
    return nn.relu(y + x)


class UpsamplerBlock(nn.Module):
  """Doubles H and W: 3×3 stride-2 transposed conv → BN → ReLU.

  Attributes:
    features: output channels.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # torch's ConvTranspose2d(3, stride=2, padding=1, output_padding=1), kernel flipped.
    x = ConvTranspose(
      self.features,
      (3, 3),
      strides=(2, 2),
      padding=((1, 2), (1, 2)),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='conv',
    )(x)
    norm = _batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')
    return nn.relu(norm(x))


def _residual_block(remat: bool):
  """NonBottleneck1D, rematerialised when asked (`train`, its third argument, is static)."""
  return nn.remat(NonBottleneck1D, static_argnums=(2,)) if remat else NonBottleneck1D


class Encoder(nn.Module):
  """ERFNet's encoder: (B, H, W, 3) → (B, H/8, W/8, 128·width) features.

  The dropout rates are those of erfnet_pytorch's training code (0.03 at 1/4, 0.3 at 1/8
  resolution; its `eval/erfnet.py` copy says 0.1, which only matters when fine-tuning).

  Attributes:
    width: feature counts relative to the published network's (`features`).
    dtype: computation dtype.
    param_dtype: parameter dtype.
    remat: rematerialise the residual blocks in the backward pass.
  """

  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fields = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    first, middle, last = features(self.width)
    x = DownsamplerBlock(first, name='initial_block', **fields)(x, train)
    block = _residual_block(self.remat)
    layers = [
      functools.partial(DownsamplerBlock, middle),
      *[functools.partial(block, 0.03, 1)] * 5,
      functools.partial(DownsamplerBlock, last),
      *[functools.partial(block, 0.3, d) for d in (2, 4, 8, 16)] * 2,
    ]
    for i, layer in enumerate(layers):
      x = layer(name=f'layers_{i}', **fields)(x, train)
    return x


class Decoder(nn.Module):
  """ERFNet's decoder: (B, H/8, W/8, 128·width) features → (B, H, W, num_classes) logits.

  Attributes:
    num_classes: output channels.
    width: feature counts relative to the published network's (`features`).
    dtype: computation dtype.
    param_dtype: parameter dtype.
    remat: rematerialise the residual blocks in the backward pass.
  """

  num_classes: int
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fields = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    first, middle, _ = features(self.width)
    block = _residual_block(self.remat)
    layers = [
      functools.partial(UpsamplerBlock, middle),
      *[functools.partial(block, 0.0, 1)] * 2,
      functools.partial(UpsamplerBlock, first),
      *[functools.partial(block, 0.0, 1)] * 2,
    ]
    for i, layer in enumerate(layers):
      x = layer(name=f'layers_{i}', **fields)(x, train)
    # torch's ConvTranspose2d(2, stride=2, padding=0), kernel flipped.
    return ConvTranspose(
      self.num_classes,
      (2, 2),
      strides=(2, 2),
      padding=((1, 1), (1, 1)),
      name='output_conv',
      **fields,
    )(x)


class ERFNet(nn.Module):
  """ERFNet: RGB images in [0, 1] → per-pixel class logits at the input resolution.

  Images are fed as erfnet_pytorch feeds them, `ToTensor()` output: RGB scaled to [0, 1], with no
  mean/std normalisation (its published model was trained on Cityscapes resized to 512×1024).
  Callers with generator images in [-1, 1] map them with `(x + 1) / 2` first.

  Attributes:
    num_classes: output channels; `NUM_CLASSES` (19 Cityscapes training ids, then `VOID_CLASS`)
      for the published model.
    width: feature counts relative to the published network's 16/64/128 (a multiple of 1/16,
      at least 0.25). The published weights are width 1; a narrower network is, e.g., an independent
      segmenter to score generated photos with (`width_of` reads it back from variables).
    dtype: computation dtype; the logits are float32.
    param_dtype: parameter dtype.
    remat: rematerialise the 15 residual (non-bottleneck-1D) blocks in the backward pass: their
      activations are recomputed instead of kept, for less memory in training.
  """

  num_classes: int = NUM_CLASSES
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Segments a batch of images.

    Args:
      images: (B, H, W, 3) RGB in [0, 1]; H and W divisible by 8.
      train: use batch statistics in the BatchNorms and update their running averages (the
        `batch_stats` collection must then be mutable; the variance is averaged biased, where
        torch averages the unbiased one) and apply dropout (a `dropout` rng is needed). The
        default, False, uses the running averages and no dropout: deterministic, as SIPL's
        frozen network.

    Returns:
      (B, H, W, num_classes) float32 logits (not softmaxed); with the published weights channel c
      < 19 is Cityscapes training id c and channel 19 the void class.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'ERFNet expects (B, H, W, 3) RGB images; got shape {images.shape}.')
    height, width = images.shape[1:3]
    if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
      raise ValueError(
        f'ERFNet input is {height}x{width}; height and width must be divisible by '
        f'{SIZE_DIVISOR} (three downsamplings that concatenate a convolution and a max pool).'
      )
    fields = dict(width=self.width, dtype=self.dtype, param_dtype=self.param_dtype)
    fields['remat'] = self.remat
    x = Encoder(name='encoder', **fields)(images.astype(self.dtype), train)
    x = Decoder(self.num_classes, name='decoder', **fields)(x, train)
    return x.astype(jnp.float32)
