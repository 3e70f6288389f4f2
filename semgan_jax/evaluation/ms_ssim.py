"""MS-SSIM of image pairs (standard and Progressive GAN variants): the diversity signal."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = ('standard', 'progan')
# Wang et al. 2003; they do not sum to 1, but are the published ones (also in TF and ProGAN).
WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
_NUM_SCALES = len(WEIGHTS)


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
  """Normalized 1-D Gaussian centred between the taps: the factor of MATLAB's fspecial kernel.

  The 2-D kernel exp(-(x² + y²) / 2σ²) / sum is the outer product of this with itself, for odd and
  even sizes alike (ProGAN's even sizes centre it half a pixel off the taps, as this does).
  """
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(coords**2) / (2.0 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable 'valid' Gaussian filter over the H and W axes of (B, H, W, C), per channel."""
  # Weighted sums of shifted slices: exact float32 on every backend (no TF32 convolutions), and
  # XLA fuses them into one loop.
  for axis in (1, 2):
    size = x.shape[axis] - len(taps) + 1
    out = taps[0] * jax.lax.slice_in_dim(x, 0, size, axis=axis)
    for k in range(1, len(taps)):
      out = out + taps[k] * jax.lax.slice_in_dim(x, k, k + size, axis=axis)
    x = out
  return x


def _ssim_maps(x: jax.Array, y: jax.Array, taps: np.ndarray, max_val: jax.Array):
  """Luminance and contrast-structure maps, (B, H', W', C) each, with 'valid' filtering."""
  # Variances as E[x²] - E[x]² cancel badly in float32 for pixel values near 255; a constant
  # shift per image and channel leaves (co)variances unchanged and keeps the terms small.
  x_shift = jnp.mean(x, axis=(1, 2), keepdims=True)
  y_shift = jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - x_shift, y - y_shift
  # The five moments filtered in one pass, stacked as channels: one op to compile, not five.
  moments = _filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), taps)
  mu_x, mu_y, xx, yy, xy = jnp.split(moments, 5, axis=-1)
  var_x = xx - mu_x * mu_x
  var_y = yy - mu_y * mu_y
  cov = xy - mu_x * mu_y
  mu_x, mu_y = mu_x + x_shift, mu_y + y_shift
  c1 = (K1 * max_val) ** 2
  c2 = (K2 * max_val) ** 2
  luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  contrast_structure = (2.0 * cov + c2) / (var_x + var_y + c2)
  return luminance, contrast_structure


def _downsample_standard(x: jax.Array) -> jax.Array:
  """2x2 average pooling; an odd side first repeats its last row/column (TF's symmetric pad)."""
  _, h, w, _ = x.shape
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='symmetric')
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _downsample_progan(x: jax.Array) -> jax.Array:
  """The mean of each 2x2 block (ProGAN's `_HoxDownsample`; sides are even, see `_check`)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _ms_ssim_standard(x: jax.Array, y: jax.Array, max_val: jax.Array) -> jax.Array:
  """Wang et al. as `tf.image.ssim_multiscale`: MS-SSIM per channel, then the channel mean."""
  taps = _gaussian_taps(FILTER_SIZE, FILTER_SIGMA)
  factors = []
  for scale in range(_NUM_SCALES):
    if scale:
      x, y = _downsample_standard(x), _downsample_standard(y)
    luminance, cs = _ssim_maps(x, y, taps, max_val)
    # Contrast-structure at the finer scales, full SSIM at the coarsest; (B, C) each.
    term = cs if scale < _NUM_SCALES - 1 else luminance * cs
    factors.append(jax.nn.relu(jnp.mean(term, axis=(1, 2))))
  per_channel = jnp.prod(jnp.stack(factors, -1) ** jnp.asarray(WEIGHTS, jnp.float32), axis=-1)
  return jnp.mean(per_channel, axis=-1)


def _ms_ssim_progan(x: jax.Array, y: jax.Array, max_val: jax.Array) -> jax.Array:
  """Progressive GAN's `metrics/ms_ssim.py`: a shrinking filter, channels averaged per scale."""
  factors = []
  for scale in range(_NUM_SCALES):
    if scale:
      x, y = _downsample_progan(x), _downsample_progan(y)
    _, h, w, _ = x.shape
    # The filter may not exceed the image; sigma shrinks in proportion (ProGAN's rule).
    size = min(FILTER_SIZE, h, w)
    taps = _gaussian_taps(size, size * FILTER_SIGMA / FILTER_SIZE)
    luminance, cs = _ssim_maps(x, y, taps, max_val)
    term = cs if scale < _NUM_SCALES - 1 else luminance * cs
    # Clipped at zero like ProGAN (a negative base would make the fractional power NaN).
    factors.append(jax.nn.relu(jnp.mean(term, axis=(1, 2, 3))))
  return jnp.prod(jnp.stack(factors, -1) ** jnp.asarray(WEIGHTS, jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames='variant')
def _ms_ssim(x: jax.Array, y: jax.Array, variant: str, max_val: jax.Array) -> jax.Array:
  if variant == 'standard':
    return _ms_ssim_standard(x, y, max_val)
  return _ms_ssim_progan(x, y, max_val)


def _standard_min_side() -> int:
  """Smallest side whose coarsest scale still fits the 11-tap filter (sides round up at halving)."""
  side = FILTER_SIZE
  for _ in range(_NUM_SCALES - 1):
    side = 2 * side - 1  # The smallest side that rounds up to `side` when halved.
  return side


STANDARD_MIN_SIDE = _standard_min_side()  # 161; 176 = 11·16 if sides must halve exactly.
PROGAN_SIDE_MULTIPLE = 2 ** (_NUM_SCALES - 1)


def _check(img1, img2, variant: str, max_val: float | None) -> float:
  """Raises a ValueError for unusable inputs; returns max_val as a float."""
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}.')
  if tuple(img1.shape) != tuple(img2.shape):
    raise ValueError(f'MS-SSIM needs images of equal shape, got {img1.shape} and {img2.shape}.')
  if len(img1.shape) != 4:
    raise ValueError(f'MS-SSIM expects (B, H, W, C) images, got shape {tuple(img1.shape)}.')
  dtypes = {np.dtype(img1.dtype), np.dtype(img2.dtype)}
  if dtypes == {np.dtype(np.uint8)}:
    max_val = 255.0 if max_val is None else max_val
  elif all(jnp.issubdtype(d, jnp.floating) for d in dtypes):
    if max_val is None:
      raise ValueError(
        'Float images need an explicit max_val (their dynamic range, e.g. 1.0 for [0, 1]).'
      )
  else:
    raise ValueError(f'MS-SSIM expects uint8 or float images, got {sorted(map(str, dtypes))}.')
  if not max_val > 0:
    raise ValueError(f'max_val must be positive, got {max_val}.')
  _, h, w, _ = img1.shape
  if variant == 'standard' and min(h, w) < STANDARD_MIN_SIDE:
    raise ValueError(
      f"variant='standard' needs images of at least {STANDARD_MIN_SIDE}x{STANDARD_MIN_SIDE} so "
      f'the {FILTER_SIZE}x{FILTER_SIZE} filter fits at the coarsest of {_NUM_SCALES} scales, '
      f"got {h}x{w}; use variant='progan' for smaller images."
    )
  if variant == 'progan' and (h % PROGAN_SIDE_MULTIPLE or w % PROGAN_SIDE_MULTIPLE):
    raise ValueError(
      f"variant='progan' halves images {_NUM_SCALES - 1} times by 2x2 blocks, so both sides "
      f'must be multiples of {PROGAN_SIDE_MULTIPLE}, got {h}x{w}.'
    )
  return float(max_val)


def ms_ssim(
  img1: jax.Array, img2: jax.Array, *, variant: str, max_val: float | None = None
) -> jax.Array:
  """Multi-scale structural similarity of each image pair (jittable).

  Both variants use 5 scales, an 11x11 Gaussian with σ = 1.5, 'valid' filtering, k1 = 0.01,
  k2 = 0.03 and the weights `WEIGHTS`; contrast-structure terms at the 4 finer scales and the full
  SSIM at the coarsest are clipped at 0 and combined as a weighted geometric mean.
    * 'standard': as `tf.image.ssim_multiscale` (Wang et al.): the filter never shrinks (sides
      >= 161, 176 for exact halving), odd sides are padded by repeating the edge before 2x2
      average pooling, and MS-SSIM is computed per channel, then averaged over channels.
    * 'progan': as Progressive GAN's `metrics/ms_ssim.py`: the filter shrinks to min(11, h, w) at
      small scales with σ scaled by the same factor, 2x2 block means (sides multiples of 16), and
      SSIM / contrast-structure averaged over channels at each scale before combining.

  Args:
    img1: (B, H, W, C) uint8 or float images.
    img2: images of the same shape.
    variant: 'standard' or 'progan'; report it with every number, the two differ.
    max_val: dynamic range of the pixel values; 255 by default for uint8, required for floats
      (e.g. 1.0 for images in [0, 1]). The luminance term assumes intensities from 0 up, so map
      [-1, 1] images to [0, 1] (or uint8) rather than passing max_val=2.

  Returns:
    float32 (B,) MS-SSIM of each pair, in [0, 1]; 1 for identical images.
  """
  max_val = _check(img1, img2, variant, max_val)
  # Cast before the jitted core and trace max_val, so uint8 and float inputs share one program.
  x, y = jnp.asarray(img1, jnp.float32), jnp.asarray(img2, jnp.float32)
  return _ms_ssim(x, y, variant, jnp.float32(max_val))


def pairwise_ms_ssim(
  images: jax.Array,
  key: jax.Array | None = None,
  *,
  variant: str,
  max_val: float | None = None,
) -> dict[str, jax.Array]:
  """MS-SSIM between different images of one batch: high values mean low diversity (jittable).

  Pairing: the batch is shuffled by `jax.random.permutation(key, B)` (kept in order without a key)
  and shuffled position 2i is paired with 2i + 1: B // 2 disjoint pairs, no image with itself, an
  odd last image left out. Without a key this is ProGAN's pairing (image 2i with image 2i + 1).
  Average the scores of all batches (not the batch means, if batch sizes differ).

  Args:
    images: (B, H, W, C) uint8 or float images, B >= 2, sizes as `ms_ssim` needs.
    key: optional PRNG key for the pairing.
    variant: 'standard' or 'progan', see `ms_ssim`.
    max_val: dynamic range, see `ms_ssim`.

  Returns:
    {'ms_ssim_<variant>': float32 (B // 2,) per-pair scores}; the name records the variant.
  """
  if len(images.shape) < 1 or images.shape[0] < 2:
    raise ValueError(f'Pairwise MS-SSIM needs at least 2 images, got shape {tuple(images.shape)}.')
  num_pairs = images.shape[0] // 2
  order = jnp.arange(images.shape[0]) if key is None else jax.random.permutation(key, len(images))
  first = images[order[0 : 2 * num_pairs : 2]]
  second = images[order[1 : 2 * num_pairs : 2]]
  return {f'ms_ssim_{variant}': ms_ssim(first, second, variant=variant, max_val=max_val)}
