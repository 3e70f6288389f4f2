"""FID Inception pool features of uint8 images: pytorch-fid's preprocessing, then the network."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from semgan_jax.models.inception import FIDInceptionV3

INPUT_SIZE = 299
# How images reach 299×299. It changes FID scores, so it is named wherever scores are reported.
RESIZE_CONVENTION = 'pytorch-fid bilinear (align_corners=False, no antialias)'


def _check_images(images) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'expected (B, H, W, 3) RGB images; got shape {tuple(images.shape)}.')
  if images.dtype != jnp.uint8:
    raise ValueError(f'expected uint8 images in [0, 255]; got dtype {images.dtype}.')


def preprocess_for_inception(images: jax.Array) -> jax.Array:
  """uint8 images → the network's 299×299 float32 inputs in [-1, 1], as pytorch-fid makes them.

  pytorch-fid scales to [0, 1], resizes with `F.interpolate(mode='bilinear',
  align_corners=False)`, then maps to [-1, 1] with 2x - 1. `jax.image.resize` with
  `antialias=False` is the same interpolation (half-pixel centres, edge samples clamped); with
  antialiasing, downsampling would low-pass first and shift the scores.

  Args:
    images: (B, H, W, 3) uint8 in [0, 255].

  Returns:
    (B, 299, 299, 3) float32 in [-1, 1].

  Raises:
    ValueError: wrong rank, channel count or dtype (checked at trace time).
  """
  _check_images(images)
  x = images.astype(jnp.float32) / 255.0
  x = jax.image.resize(
    x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), method='bilinear', antialias=False
  )
  return 2.0 * x - 1.0


def inception_features(params, images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """(B, 2048) float32 pool features of uint8 images; pure, for use inside a caller's `jax.jit`.

  Pass `params` as an argument of the caller's jitted function rather than closing over it, so
  the ~90 MB of weights are not baked into the compiled program as constants.

  Args:
    params: `FIDInceptionV3` parameters (`semgan_jax.weights.fid_inception.load_params`).
    images: (B, H, W, 3) uint8 in [0, 255].
    dtype: the network's computation dtype.

  Returns:
    (B, 2048) float32 features.
  """
  return FIDInceptionV3(dtype=dtype).apply({'params': params}, preprocess_for_inception(images))


def make_feature_fn(params, dtype=jnp.float32) -> Callable[[jax.Array], jax.Array]:
  """A jitted `features(images_uint8) -> (B, 2048) float32` bound to `params`.

  The weights are put on the default device once and passed to the compiled function as an
  argument on every call (not embedded as constants, not re-sent from host memory).

  Args:
    params: `FIDInceptionV3` parameters.
    dtype: the network's computation dtype.

  Returns:
    The feature function; it raises ValueError on inputs that are not (B, H, W, 3) uint8.
  """
  params = jax.device_put(params)
  apply = jax.jit(inception_features, static_argnames='dtype')

  def features(images: jax.Array) -> jax.Array:
    _check_images(images)
    return apply(params, images, dtype=dtype)

  return features
