"""Shared layer helpers: DCGAN-style initialisers and normalisation factories."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

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
