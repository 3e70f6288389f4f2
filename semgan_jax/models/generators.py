"""Generators: SemGAN's latent → label map (paper 2) and SemanticGAN's label → photo (paper 1)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.blocks import BLOCKS
from semgan_jax.models.conv import Conv
from semgan_jax.models.layers import (
  ConvTranspose,
  batch_norm,
  conv_init,
  instance_norm,
  reflect_pad,
)

HEADS = ('semantic', 'rgb')


def grid_steps(height: int, width: int, small_size: int) -> tuple[int, tuple[int, int]]:
  """How many stride-2 steps take an H×W map to the grid whose shorter side is `small_size`,
  and that grid's (h, w); both sides must halve exactly that many times."""
  n = num_upsamplings(min(height, width), small_size)
  if height % 2**n or width % 2**n:
    raise ValueError(
      f'{height}x{width} maps cannot be halved {n} times exactly (to a {small_size}-pixel side).'
    )
  return n, (height >> n, width >> n)


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
  """DCGAN-style generator: z → dense → small map → stride-2 transposed convs → head.

  The body is identical for both heads; only the last layer and its activation differ, exactly as
  in the paper's SemGAN-vs-GAN comparison:
    * `head='semantic'`: `num_classes` channels and a softmax over them at every pixel, so each
      pixel is a distribution over classes (SemGAN).
    * `head='rgb'`: 3 channels and a tanh, an RGB image in [-1, 1] of the colorized map (the
      paper's "GAN" baseline).

  Widths halve at every upsampling and end at `base_features` before the head. Maps need not be
  square: the dense layer projects to a grid whose shorter side is `start_size` (4×8 for 64×128).

  Attributes:
    num_classes: K, the number of semantic classes.
    image_size: output height (and width, unless `width` is given).
    base_features: width of the last hidden block; the first is `base_features * 2**(n-1)`.
    kernel_size: transposed-convolution kernel size (`ks` in the paper).
    head: 'semantic' or 'rgb'.
    start_size: the shorter side of the map after the dense projection.
    bn_momentum: BatchNorm running-average momentum (used when sampling in eval mode).
    dtype: computation dtype of the body; the head's softmax/tanh is always float32.
    param_dtype: parameter dtype.
    remat: rematerialise the transposed convolutions in the backward pass (their phase outputs
      are recomputed instead of kept).
    width: output width; 0 for square maps (`image_size`).
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
  remat: bool = False
  width: int = 0

  @property
  def out_channels(self) -> int:
    return self.num_classes if self.head == 'semantic' else 3

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    """Maps latents (B, latent_dim) to (B, H, W, K) class probabilities or (B, H, W, 3) RGB."""
    if self.head not in HEADS:
      raise ValueError(f'head={self.head!r}; expected one of {HEADS}.')
    n_up, (h, w) = grid_steps(self.image_size, self.width or self.image_size, self.start_size)
    norm = dict(momentum=self.bn_momentum, dtype=self.dtype, param_dtype=self.param_dtype)
    conv = dict(kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype)

    up_conv = nn.remat(ConvTranspose) if self.remat else ConvTranspose
    features = self.base_features * 2 ** (n_up - 1)
    x = nn.Dense(h * w * features, name='project', **conv)(z)
    x = x.reshape(z.shape[0], h, w, features)
    x = nn.relu(batch_norm(train, name='project_norm', **norm)(x))
    for i in range(n_up - 1):
      features //= 2
      # No bias: the BatchNorm that follows removes any per-channel offset.
      x = up_conv(
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
    x = up_conv(
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


UPSAMPLES = ('transpose', 'resize')


class LabelToPhotoGenerator(nn.Module):
  """SemanticGAN's generator (pix2pixHD's global generator with a choice of residual block).

  In Johnson et al.'s naming, with b = `base_features` and n = `num_downsamplings` (the paper:
  b=64, n=4): `c7s1-b, d2b, ..., d(2^n)b, C(2^n)b × num_blocks, u(2^(n-1))b, ..., ub, c7s1-3`.
    * c7s1-k: reflect-pad 3, 7×7 conv, InstanceNorm, ReLU.
    * dk: 3×3 conv with stride 2 and zero padding 1, InstanceNorm, ReLU.
    * Ck: a shape-preserving block from `BLOCKS` (`block`).
    * uk: 3×3 transposed conv with stride 2, InstanceNorm, ReLU; its padding (1, 2) makes it
      PyTorch's `ConvTranspose2d(padding=1, output_padding=1)` with a spatially flipped kernel,
      so the size exactly doubles. With `upsample='resize'`: nearest-neighbour ×2, then a 3×3
      conv with zero padding 1 (same parameters; no checkerboard from uneven kernel overlap).
    * c7s1-3: reflect-pad 3, 7×7 conv to RGB, no norm, tanh.
  Convolutions followed by an InstanceNorm have no bias (the norm removes it); kernels are drawn
  from N(0, 0.02).

  The input is the label map one-hot encoded and concatenated, on the channel axis, with the
  instance-boundary map (`semgan_jax.models.inputs.label_to_generator_input` builds it); the
  module accepts any channel count.

  Attributes:
    base_features: width of c7s1; the i-th downsampling has `base_features * 2**i` channels.
    num_downsamplings: number of d (and u) layers; H and W must be divisible by 2 to this power.
    num_blocks: number of residual blocks at the lowest resolution (9 in pix2pixHD).
    block: 'resnet' (pix2pixHD), 'res2net' (Res2Block), 'crb' (Correlated Residual Block) or
      'crb_grouped' (our grouped reading of the CRB, `blocks.GroupedCorrelatedResidualBlock`).
    scale: number of groups of the Res2/CRB blocks; unused by 'resnet'.
    norm_affine: whether the InstanceNorms learn a scale and bias (pix2pixHD: no).
    dtype: computation dtype; the tanh output is float32.
    param_dtype: parameter dtype.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`); 'auto'
      picks per layer shape on CPU and XLA's own elsewhere. Parameters do not depend on it.
    remat: rematerialise each residual block in the backward pass (saves the trunk's
      activations at the cost of recomputing its forward).
    upsample: 'transpose' (pix2pixHD, the paper) or 'resize' (nearest ×2 + conv) for the uk.
  """

  base_features: int = 64
  num_downsamplings: int = 4
  num_blocks: int = 9
  block: str = 'crb'
  scale: int = 4
  norm_affine: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  conv_lowering: str = 'auto'
  remat: bool = False
  upsample: str = 'transpose'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, H, W, C_in) labels ⊕ boundaries to a (B, H, W, 3) image in [-1, 1]."""
    if self.block not in BLOCKS:
      raise ValueError(f'block={self.block!r}; expected one of {sorted(BLOCKS)}.')
    if self.upsample not in UPSAMPLES:
      raise ValueError(f'upsample={self.upsample!r}; expected one of {UPSAMPLES}.')
    if x.ndim != 4:
      raise ValueError(f'generator input must be (B, H, W, C), got shape {x.shape}.')
    factor = 2**self.num_downsamplings
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(
        f'generator input is {x.shape[1]}x{x.shape[2]}; height and width must be divisible by '
        f'2**num_downsamplings = {factor}.'
      )
    conv = dict(
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lowering=self.conv_lowering,
    )
    norm = dict(affine=self.norm_affine, dtype=self.dtype, param_dtype=self.param_dtype)
    block_fields = dict(
      norm_affine=self.norm_affine,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_lowering=self.conv_lowering,
    )
    if self.block != 'resnet':
      block_fields['scale'] = self.scale
    block_cls = nn.remat(BLOCKS[self.block]) if self.remat else BLOCKS[self.block]

    x = x.astype(self.dtype)
    x = Conv(self.base_features, (7, 7), padding='VALID', use_bias=False, name='stem', **conv)(
      reflect_pad(x, 3)
    )
    x = nn.relu(instance_norm(name='stem_norm', **norm)(x))
    for i in range(1, self.num_downsamplings + 1):
      x = Conv(
        self.base_features * 2**i,
        (3, 3),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        name=f'down{i}',
        **conv,
      )(x)
      x = nn.relu(instance_norm(name=f'down{i}_norm', **norm)(x))
    for i in range(self.num_blocks):
      x = block_cls(name=f'block{i}', **block_fields)(x)
    for i in reversed(range(self.num_downsamplings)):
      up = dict(features=self.base_features * 2**i, use_bias=False, name=f'up{i}', **conv)
      if self.upsample == 'resize':
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = Conv(kernel_size=(3, 3), padding=((1, 1), (1, 1)), **up)(x)
      else:
        x = ConvTranspose(kernel_size=(3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), **up)(x)
      x = nn.relu(instance_norm(name=f'up{i}_norm', **norm)(x))
    x = Conv(3, (7, 7), padding='VALID', name='head', **conv)(reflect_pad(x, 3))
    return jnp.tanh(x.astype(jnp.float32))
