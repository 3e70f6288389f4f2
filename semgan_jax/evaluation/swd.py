"""Sliced Wasserstein distance (SWD) between image sets, computed as Progressive GAN's code does."""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
DESCRIPTOR_SIZE = NHOOD_SIZE * NHOOD_SIZE * 3
BYTES_PER_IMAGE_AND_LEVEL = NHOODS_PER_IMAGE * DESCRIPTOR_SIZE * 4  # float32: 75,264 bytes.

# The 5x5 binomial filter [1,4,6,4,1]⊗[1,4,6,4,1]/256 of cv2.pyrDown is separable; filtering rows
# and columns with its 1-D factor gives the same result with exact float32 taps.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def level_resolutions(height: int, width: int) -> list[int]:
  """Pyramid levels of SWD: the shorter side halved until it would drop below 16.

  ProGAN counts levels from the image height; for images that are not taller than wide (all square
  images included) the two agree. 64x64 images give [64, 32, 16].

  Args:
    height: image height.
    width: image width.

  Returns:
    The shorter side at every level, finest first; these name the `swd_<res>` results.
  """
  res = min(height, width)
  resolutions = []
  while res >= MIN_RESOLUTION:
    resolutions.append(res)
    res //= 2
  return resolutions


def _check_images(images) -> list[int]:
  """Raises a ValueError unless `images` are uint8 (B, H, W, 3) the pyramid can use."""
  shape = tuple(images.shape)
  if np.dtype(images.dtype) != np.uint8:
    raise ValueError(f'SWD expects uint8 images in [0, 255], got dtype {images.dtype}.')
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f'SWD expects RGB images of shape (B, H, W, 3), got shape {shape}.')
  _, height, width, _ = shape
  if min(height, width) < MIN_RESOLUTION:
    raise ValueError(f'SWD needs images of at least 16x16, got {height}x{width}.')
  # Each pyr_down keeps every 2nd pixel and pyr_up doubles the size again, so the Laplacian
  # difference only lines up when every level but the coarsest has even sides. ProGAN assumes
  # power-of-two sizes, which always pass this check.
  halvings = len(level_resolutions(height, width)) - 1
  if height % 2**halvings or width % 2**halvings:
    raise ValueError(
      f'SWD halves {height}x{width} images {halvings} times, so both sides must be divisible '
      f'by {2**halvings} (powers of two always are).'
    )
  return level_resolutions(height, width)


def _filter_axis(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
  """Correlates `x` with `taps` along `axis`, mirror boundary (scipy 'mirror', numpy 'reflect')."""
  half = len(taps) // 2
  size = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (half, half)
  x = jnp.pad(x, pad, mode='reflect')
  out = taps[0] * jax.lax.slice_in_dim(x, 0, size, axis=axis)
  for k in range(1, len(taps)):
    out = out + taps[k] * jax.lax.slice_in_dim(x, k, k + size, axis=axis)
  return out


def _blur(x: jax.Array, taps: np.ndarray) -> jax.Array:
  return _filter_axis(_filter_axis(x, taps, 1), taps, 2)


def _pyr_down(x: jax.Array) -> jax.Array:
  """Binomial blur, then every 2nd pixel (cv2.pyrDown)."""
  return _blur(x, _BINOMIAL)[:, ::2, ::2]


def _pyr_up(x: jax.Array) -> jax.Array:
  """Zero insertion, then the binomial filter times 4 (cv2.pyrUp)."""
  b, h, w, c = x.shape
  up = jnp.zeros((b, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2].set(x)
  # Three of four pixels are zeros, so the 2-D filter is scaled by 4 = 2 per axis.
  return _blur(up, 2.0 * _BINOMIAL)


@functools.partial(jax.jit, static_argnames='num_levels')
def laplacian_pyramid(images: jax.Array, num_levels: int) -> list[jax.Array]:
  """The Laplacian pyramid of ProGAN's SWD: band-pass levels, then the low-pass residual.

  Args:
    images: (B, H, W, C) images, any real dtype (computed in float32); sides divisible by
      2**(num_levels - 1).
    num_levels: number of levels, the finest (full resolution) included.

  Returns:
    `num_levels` float32 arrays, (B, H / 2**i, W / 2**i, C); level i is the image at that scale
    minus the upsampled next level, the last one is the blurred image itself.
  """
  pyramid = [jnp.asarray(images, jnp.float32)]
  for _ in range(1, num_levels):
    pyramid.append(_pyr_down(pyramid[-1]))
    pyramid[-2] = pyramid[-2] - _pyr_up(pyramid[-1])
  return pyramid


@jax.jit
def reconstruct_laplacian_pyramid(pyramid: Sequence[jax.Array]) -> jax.Array:
  """Inverts `laplacian_pyramid`: upsample the coarser image and add the band, finest last.

  Args:
    pyramid: the levels returned by `laplacian_pyramid`.

  Returns:
    The float32 (B, H, W, C) images the pyramid was built from (up to rounding).
  """
  images = pyramid[-1]
  for level in pyramid[-2::-1]:
    images = _pyr_up(images) + level
  return images


@functools.partial(jax.jit, static_argnames='images_shape')
def patch_coordinates(key: jax.Array, images_shape: tuple[int, ...]) -> list[jax.Array]:
  """Random 7x7 neighbourhood centres, 128 per image and level, as ProGAN draws them.

  Centres are uniform over [3, size - 3) on each axis (numpy's `randint(3, size - 3)` in ProGAN),
  so a patch never crosses the border. Descriptor n belongs to image n // 128.

  Args:
    key: a PRNG key; level i uses `fold_in(key, i)`.
    images_shape: (B, H, W, 3), the shape of the images (a tuple: it is static under jit).

  Returns:
    Per level, finest first, an int32 (B * 128, 2) array of (row, column) centres.
  """
  batch, height, width, _ = images_shape
  n = batch * NHOODS_PER_IMAGE
  half = NHOOD_SIZE // 2
  coordinates = []
  for i in range(len(level_resolutions(height, width))):
    key_y, key_x = jax.random.split(jax.random.fold_in(key, i))
    h, w = height // 2**i, width // 2**i
    y = jax.random.randint(key_y, (n,), half, h - half, jnp.int32)
    x = jax.random.randint(key_x, (n,), half, w - half, jnp.int32)
    coordinates.append(jnp.stack([y, x], axis=-1))
  return coordinates


def _gather_patches(level: jax.Array, centres: jax.Array) -> jax.Array:
  """(B, h, w, 3) level, (N, 2) centres → (N, 147) descriptors in (channel, row, col) order."""
  half = NHOOD_SIZE // 2
  offsets = jnp.arange(-half, half + 1)
  image = jnp.arange(centres.shape[0]) // NHOODS_PER_IMAGE
  rows = centres[:, 0, None] + offsets
  cols = centres[:, 1, None] + offsets
  patches = level[image[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, 7, 7, 3)
  # Any fixed order gives the same distance in distribution (the directions are i.i.d.), but
  # ProGAN's NCHW order lets the same projection matrices reproduce its numbers exactly.
  return patches.transpose(0, 3, 1, 2).reshape(centres.shape[0], DESCRIPTOR_SIZE)


@jax.jit
def _descriptors_at(images: jax.Array, coordinates: list[jax.Array]) -> list[jax.Array]:
  pyramid = laplacian_pyramid(images, len(coordinates))
  return [_gather_patches(level, c) for level, c in zip(pyramid, coordinates, strict=True)]


@jax.jit
def _descriptors(images: jax.Array, key: jax.Array) -> list[jax.Array]:
  # Positions, pyramid and gathers in one program: one compile per image shape, one dispatch.
  return _descriptors_at(images, patch_coordinates(key, tuple(images.shape)))


def descriptors_at(images: jax.Array, coordinates: Sequence[jax.Array]) -> list[jax.Array]:
  """Per-level 7x7x3 neighbourhood descriptors of the images at given centres.

  Label maps are compared as palette-colorized RGB images; the palette changes the score, so use
  the project's fixed one.

  Args:
    images: uint8 (B, H, W, 3) images.
    coordinates: per level, an int (B * 128, 2) array of (row, column) centres in [3, size - 3);
      descriptor n is taken from image n // 128.

  Returns:
    Per level, finest first, a float32 (B * 128, 147) array, not yet normalized (ProGAN normalizes
    over the whole set, see `sliced_wasserstein_distances`).
  """
  resolutions = _check_images(images)
  if len(coordinates) != len(resolutions):
    raise ValueError(f'Expected coordinates for {len(resolutions)} levels, got {len(coordinates)}.')
  n = images.shape[0] * NHOODS_PER_IMAGE
  for c in coordinates:
    if tuple(c.shape) != (n, 2):
      raise ValueError(f'Expected ({n}, 2) coordinates per level, got shape {tuple(c.shape)}.')
  return _descriptors_at(images, [jnp.asarray(c, jnp.int32) for c in coordinates])


def descriptors(images: jax.Array, key: jax.Array) -> list[jax.Array]:
  """Per-level descriptors at random neighbourhoods, 128 per image and level (jittable).

  Args:
    images: uint8 (B, H, W, 3) images, sides as `level_resolutions` needs (powers of two work).
    key: PRNG key for the neighbourhood positions; fold in the batch index for each new batch.

  Returns:
    Per level, finest first, a float32 (B * 128, 147) array; feed them to `SWDAccumulator.add`.
  """
  _check_images(images)
  return _descriptors(images, key)


class SWDAccumulator:
  """Collects one image set's descriptors on the host, batch by batch.

  The set must be normalized as a whole, so every descriptor is kept until the distance is taken;
  memory grows linearly with the number of images, as in ProGAN (which keeps the same arrays):
  75,264 bytes per image and level (128 descriptors of 147 float32). That is 220.5 KiB per image at
  64x64 (3 levels), 367.5 KiB at 256x256 (5 levels), 3.76 GB for 10,000 images of 256x256.
  """

  def __init__(self):
    self._chunks: list[list[np.ndarray]] = []
    self.num_images = 0

  def add(self, level_descriptors: Sequence[jax.Array]) -> None:
    """Copies one batch's descriptors (the output of `descriptors`) to host memory.

    Args:
      level_descriptors: per level, a (B * 128, 147) array.
    """
    arrays = [np.asarray(jax.device_get(d), np.float32) for d in level_descriptors]
    if self._chunks and len(arrays) != len(self._chunks[0]):
      raise ValueError(f'Expected {len(self._chunks[0])} levels, got {len(arrays)}.')
    rows = arrays[0].shape[0] if arrays else 0
    for a in arrays:
      if a.shape != (rows, DESCRIPTOR_SIZE) or rows % NHOODS_PER_IMAGE:
        raise ValueError(
          f'Expected (B * {NHOODS_PER_IMAGE}, {DESCRIPTOR_SIZE}) descriptors at every level, '
          f'got {[x.shape for x in arrays]}.'
        )
    self._chunks.append(arrays)
    self.num_images += rows // NHOODS_PER_IMAGE

  def levels(self) -> list[np.ndarray]:
    """All descriptors so far: per level, a float32 (num_images * 128, 147) array."""
    if not self._chunks:
      raise ValueError('SWDAccumulator is empty: add descriptors first.')
    if len(self._chunks) > 1:
      # Keep the concatenation instead of the chunks, so memory is not doubled by a second call.
      self._chunks = [[np.concatenate(level) for level in zip(*self._chunks, strict=True)]]
    return list(self._chunks[0])

  @property
  def nbytes(self) -> int:
    """Host memory held by the descriptors."""
    return sum(a.nbytes for chunk in self._chunks for a in chunk)


@functools.partial(jax.jit, static_argnames=('num_levels', 'dir_repeats', 'dirs_per_repeat'))
def random_projections(
  key: jax.Array,
  num_levels: int,
  *,
  dir_repeats: int = DIR_REPEATS,
  dirs_per_repeat: int = DIRS_PER_REPEAT,
) -> jax.Array:
  """Random unit directions in descriptor space, drawn afresh per level as in ProGAN.

  Args:
    key: PRNG key.
    num_levels: number of pyramid levels.
    dir_repeats: independent sets of directions per level; the distance is averaged over them.
    dirs_per_repeat: directions per set.

  Returns:
    float32 (num_levels, dir_repeats, 147, dirs_per_repeat); every column has unit length.
  """
  shape = (num_levels, dir_repeats, DESCRIPTOR_SIZE, dirs_per_repeat)
  dirs = jax.random.normal(key, shape, jnp.float32)
  return dirs / jnp.sqrt(jnp.sum(jnp.square(dirs), axis=-2, keepdims=True))


def _normalize_per_channel(desc: jax.Array) -> jax.Array:
  """Zero mean, unit std per colour channel over all descriptors and positions of the set."""
  d = desc.reshape(desc.shape[0], 3, NHOOD_SIZE * NHOOD_SIZE)
  d = d - jnp.mean(d, axis=(0, 2), keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(d), axis=(0, 2), keepdims=True))
  # A channel that is constant over the whole set (a collapsed generator drawing only background)
  # has std 0; ProGAN's division would make every distance NaN. Its centred values are all 0
  # either way, so dividing by 1 keeps them 0 and leaves every other case exactly as ProGAN's.
  d = d / jnp.where(std > 0, std, 1.0)
  return d.reshape(desc.shape)


@jax.jit
def _project(real: jax.Array, fake: jax.Array, dirs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both sets normalized and projected on (147, dirs) directions: two (dirs, N) arrays."""
  # HIGHEST: GPUs would otherwise project in TF32 and lose three digits of the distance.
  project = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  return (
    project(_normalize_per_channel(real), dirs).T,
    project(_normalize_per_channel(fake), dirs).T,
  )


@jax.jit
def _sorted_distance(proj_real: jax.Array, proj_fake: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(jnp.sort(proj_real, axis=1) - jnp.sort(proj_fake, axis=1)))


def _level_distance(real: jax.Array, fake: jax.Array, directions: jax.Array) -> float:
  """SWD of one level (not yet ×10³), directions (repeats, 147, dirs); one repeat at a time.

  Sorting is where the time goes (4·128 sorts of N = 128·images values per set and level).
  XLA:CPU's sort is ~20x slower than NumPy's, so on a CPU backend the sort runs in NumPy (as
  ProGAN's own code does); accelerators sort on the device.
  """
  on_cpu = jax.default_backend() == 'cpu'
  distances = []
  for dirs in directions:
    proj_real, proj_fake = _project(real, fake, dirs)
    if on_cpu:
      proj_real, proj_fake = (
        np.sort(np.asarray(proj_real), axis=1),
        np.sort(np.asarray(proj_fake), axis=1),
      )
      distances.append(float(np.mean(np.abs(proj_real - proj_fake), dtype=np.float64)))
    else:
      distances.append(float(_sorted_distance(proj_real, proj_fake)))
  return float(np.mean(distances))


def sliced_wasserstein_distances(
  real_levels: Sequence[jax.Array],
  fake_levels: Sequence[jax.Array],
  resolutions: Sequence[int],
  *,
  key: jax.Array | None = None,
  projections: Sequence[jax.Array] | None = None,
) -> dict[str, float]:
  """ProGAN's SWD between two sets of descriptors, ×10³ per level and averaged over levels.

  Each set is normalized on its own (zero mean, unit std per colour channel), then, for each of 4
  repeats of 128 random unit directions, both sets are projected, the projections sorted, and the
  mean absolute difference taken: the 1-D Wasserstein-1 distance averaged over directions. A colour
  channel that is constant over a whole set (no std) is left at 0 rather than made NaN.

  Args:
    real_levels: per level, the (N, 147) descriptors of one set (e.g. `SWDAccumulator.levels()`).
    fake_levels: the same for the other set; N must be equal (the same number of images).
    resolutions: the resolution of each level (`level_resolutions(H, W)`), used to name results.
    key: PRNG key for the directions (see `random_projections`); or pass `projections`.
    projections: per level, (repeats, 147, dirs) unit directions, instead of `key`.

  Returns:
    `swd_<res>` for each level and `swd_avg`, as Python floats, all ×10³.
  """
  num_levels = len(resolutions)
  if len(real_levels) != num_levels or len(fake_levels) != num_levels:
    raise ValueError(
      f'Expected {num_levels} levels for resolutions {list(resolutions)}, got '
      f'{len(real_levels)} real and {len(fake_levels)} fake.'
    )
  for res, real, fake in zip(resolutions, real_levels, fake_levels, strict=True):
    if real.ndim != 2 or real.shape[1] != DESCRIPTOR_SIZE or real.shape[0] == 0:
      raise ValueError(f'Expected (N, {DESCRIPTOR_SIZE}) descriptors, got {real.shape} at {res}.')
    if real.shape != fake.shape:
      raise ValueError(
        f'SWD needs as many real as fake descriptors (the same number of images), got '
        f'{real.shape[0]} real and {fake.shape[0]} fake at resolution {res}.'
      )
  if (key is None) == (projections is None):
    raise ValueError('Pass exactly one of `key` and `projections`.')
  if projections is None:
    projections = random_projections(key, num_levels)
  if len(projections) != num_levels:
    raise ValueError(f'Expected projections for {num_levels} levels, got {len(projections)}.')

  results = {}
  for res, real, fake, dirs in zip(resolutions, real_levels, fake_levels, projections, strict=True):
    dirs = jnp.asarray(dirs, jnp.float32)
    if dirs.ndim != 3 or dirs.shape[1] != DESCRIPTOR_SIZE:
      raise ValueError(
        f'Expected (repeats, {DESCRIPTOR_SIZE}, dirs) projections, got {dirs.shape}.'
      )
    distance = _level_distance(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32), dirs)
    results[f'swd_{res}'] = float(distance) * 1e3
  results['swd_avg'] = float(np.mean(list(results.values())))
  return results
