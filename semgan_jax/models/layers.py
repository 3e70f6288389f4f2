"""Shared layer helpers: DCGAN-style initialisers, normalisation factories, a fast ConvTranspose."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from semgan_jax.models.conv import Conv2DModule, conv2d

# DCGAN (Radford et al.) and both papers initialise every weight from N(0, 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def norm_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Norm-layer scales drawn from N(1, 0.02), the DCGAN convention for BatchNorm gammas."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, *, momentum: float, dtype, param_dtype, name: str | None = None):
  """A BatchNorm that uses batch statistics in training and running averages otherwise.

  Under `jax.jit` with a batch sharded over a `data` mesh axis, the batch mean and variance are
  reductions over the *global* batch (XLA inserts the all-reduce), so the statistics are the same
  on 1 or N devices without an `axis_name`.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=momentum,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=norm_scale_init,
    name=name,
  )


leaky_relu = functools.partial(nn.leaky_relu, negative_slope=0.2)


def instance_norm(*, affine: bool = False, dtype, param_dtype, name: str | None = None):
  """InstanceNorm over each sample's spatial axes, per channel (NHWC), with PyTorch's epsilon.

  `affine=False` is the default because pix2pixHD, the SemanticGAN baseline, builds
  `InstanceNorm2d(affine=False)`: the layer then has no parameters and only whitens. With
  `affine=True` a per-channel scale (DCGAN's N(1, 0.02)) and a zero-initialised bias are learned.
  Statistics are per sample, so they do not depend on the batch or on how it is sharded.
  """
  return nn.InstanceNorm(
    epsilon=1e-5,
    use_scale=affine,
    use_bias=affine,
    scale_init=norm_scale_init,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Mirror-pads the two spatial axes of (B, H, W, C) by `pad`, edge not repeated.

  This is PyTorch's `ReflectionPad2d`; it needs `pad < H` and `pad < W`.
  """
  if pad >= x.shape[1] or pad >= x.shape[2]:
    raise ValueError(f'reflect_pad({pad}) needs a larger map than {x.shape[1]}x{x.shape[2]}.')
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet's channel shuffle on the last axis: (g, C/g) → transpose → flatten.

  Output channel `j * groups + i` is input channel `i * (C // groups) + j`, so consecutive output
  channels come from different input groups. Shuffling with `groups` then with `C // groups`
  restores the input.

  Args:
    x: (..., C) array.
    groups: number of groups; must divide C.

  Returns:
    The array with its channels permuted, same shape.
  """
  channels = x.shape[-1]
  if groups <= 0 or channels % groups:
    raise ValueError(f'channel_shuffle: {channels} channels cannot be split into {groups} groups.')
  x = x.reshape(*x.shape[:-1], groups, channels // groups)
  x = jnp.swapaxes(x, -1, -2)
  return x.reshape(*x.shape[:-2], channels)


def _dilated_input_padding(kernel: int, stride: int, padding) -> tuple[int, int]:
  """The (before, after) zero padding that `lax.conv_transpose` puts around the dilated input.

  'SAME' gives an output exactly `stride` times the input (the formula of `lax.conv_transpose`);
  an explicit pair is used as given, as `lax.conv_transpose` does by default.
  """
  if isinstance(padding, str):
    if padding.upper() != 'SAME':
      raise ValueError(f"ConvTranspose: padding={padding!r}; expected 'SAME' or (low, high) pairs.")
    total = kernel + stride - 2
    before = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    return before, total - before
  before, after = padding
  return int(before), int(after)


def conv_transpose(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int],
  padding,
  lowering: str = 'auto',
) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, padding)` (NHWC, HWIO) computed as `s0·s1` plain convs.

  A transposed convolution convolves the input dilated with `stride - 1` zeros between pixels, so
  most of its multiplications hit zeros, and XLA:CPU differentiates it slowly (a 4×4 stride-2 layer
  of SemGAN's generator is ~4× slower forward-and-backward than this form; ~6× at 6×6). Output
  pixel `o = s·i + a` only meets the kernel taps `t ≡ pad_before − a (mod s)`, so each output
  phase `a` is an ordinary stride-1 convolution of the undilated input with the sub-kernel
  `kernel[t0::s]`; the phases are then interleaved. The result, its gradients and the parameter
  layout are those of `lax.conv_transpose` (kernel not flipped, `transpose_kernel=False`, as
  `flax.linen.ConvTranspose`). Where the output size is not a multiple of the stride, the call
  falls back to `lax.conv_transpose`.

  Args:
    x: (B, H, W, Cin).
    kernel: (kh, kw, Cin, Cout).
    strides: (sh, sw).
    padding: 'SAME' or ((before, after), (before, after)) on the dilated input.
    lowering: how each phase's convolution is computed (`semgan_jax.models.conv.conv2d`).

  Returns:
    (B, H', W', Cout), as `lax.conv_transpose`.
  """
  pad_pairs = [padding] * 2 if isinstance(padding, str) else list(padding)
  pads = [
    _dilated_input_padding(k, s, p)
    for k, s, p in zip(kernel.shape[:2], strides, pad_pairs, strict=True)
  ]
  sizes_in = x.shape[1:3]
  sizes_out = [
    (n - 1) * s + 1 + before + after - k + 1
    for n, s, (before, after), k in zip(sizes_in, strides, pads, kernel.shape[:2], strict=True)
  ]
  if any(n % s for n, s in zip(sizes_out, strides, strict=True)) or any(n <= 0 for n in sizes_out):
    return lax.conv_transpose(x, kernel, tuple(strides), pads)

  def phase(a: int, axis: int) -> tuple[int, tuple[int, int]]:
    # Output o = s*i + a reads dilated-padded position o + t, which holds x[j] when
    # o + t - before = s*j: taps t = t0 + s*m read x[i + c + m].
    k, s, n_in, (before, _) = kernel.shape[axis], strides[axis], sizes_in[axis], pads[axis]
    t0 = (before - a) % s
    taps = len(range(t0, k, s))
    c = (a + t0 - before) // s
    n_out = sizes_out[axis] // s
    return t0, (-c, n_out + c + taps - 1 - n_in)

  rows = []
  for a in range(strides[0]):
    t0_h, pad_h = phase(a, 0)
    columns = []
    for b in range(strides[1]):
      t0_w, pad_w = phase(b, 1)
      sub_kernel = kernel[t0_h :: strides[0], t0_w :: strides[1]]
      if sub_kernel.shape[0] == 0 or sub_kernel.shape[1] == 0:  # kernel smaller than the stride
        n_h, n_w = sizes_out[0] // strides[0], sizes_out[1] // strides[1]
        columns.append(jnp.zeros((x.shape[0], n_h, n_w, kernel.shape[3]), x.dtype))
        continue
      columns.append(conv2d(x, sub_kernel, (1, 1), (pad_h, pad_w), lowering))
    rows.append(jnp.stack(columns, axis=3))  # (B, h, w, sw, C)
  y = jnp.stack(rows, axis=2)  # (B, h, sh, w, sw, C)
  batch, h, sh, w, sw, channels = y.shape
  return y.reshape(batch, h * sh, w * sw, channels)


class ConvTranspose(Conv2DModule):
  """`flax.linen.ConvTranspose` for 2-D NHWC inputs, computed by `conv_transpose` (phase-split).

  Same fields (those used here), parameter names, shapes and results as the Flax layer, so
  checkpoints are interchangeable; only the computation differs, and is several times faster to
  differentiate on a CPU. `padding` is 'SAME' or explicit pairs on the dilated input.
  """

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_transpose(x, kernel, self.strides, self.padding, self.lowering)
