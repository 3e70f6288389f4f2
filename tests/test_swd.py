"""Tests of the SWD metric against a NumPy/SciPy transcription of Progressive GAN's algorithm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from semgan_jax.evaluation import swd

# --- Reference: ProGAN's metrics/sliced_wasserstein.py, transcribed to NumPy/SciPy (NCHW). ------
# Differences from the original are only in where randomness comes from: patch centres and
# projection directions are passed in, so both implementations see the same ones.

_REF_KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0


def _ref_pyr_down(x):
  return ndimage.convolve(x, _REF_KERNEL[None, None], mode='mirror')[:, :, ::2, ::2]


def _ref_pyr_up(x):
  b, c, h, w = x.shape
  up = np.zeros((b, c, 2 * h, 2 * w), x.dtype)
  up[:, :, ::2, ::2] = x
  return ndimage.convolve(up, 4.0 * _REF_KERNEL[None, None], mode='mirror')


def _ref_laplacian_pyramid(images_nchw, num_levels):
  levels = [np.float32(images_nchw)]
  for _ in range(1, num_levels):
    levels.append(_ref_pyr_down(levels[-1]))
    levels[-2] = levels[-2] - _ref_pyr_up(levels[-1])
  return levels


def _ref_descriptors(level_nchw, centres):
  """(N, 3, 7, 7) neighbourhoods; descriptor n from image n // 128, centre (row, col)."""
  n = centres.shape[0]
  image = (np.arange(n) // 128)[:, None, None, None]
  channel = np.arange(3)[None, :, None, None]
  rows = (centres[:, 0, None] + np.arange(-3, 4))[:, None, :, None]
  cols = (centres[:, 1, None] + np.arange(-3, 4))[:, None, None, :]
  return level_nchw[image, channel, rows, cols]


def _ref_finalize(desc):
  desc = desc - np.mean(desc, axis=(0, 2, 3), keepdims=True)
  desc = desc / np.std(desc, axis=(0, 2, 3), keepdims=True)
  return desc.reshape(desc.shape[0], -1)


def _ref_sliced_wasserstein(a, b, directions):
  results = []
  for dirs in directions:  # (147, dirs) per repeat.
    proj_a = np.sort(a @ dirs, axis=0)
    proj_b = np.sort(b @ dirs, axis=0)
    results.append(np.mean(np.abs(proj_a - proj_b)))
  return np.mean(results)


def _ref_swd(real_nhwc, fake_nhwc, real_centres, fake_centres, projections):
  """Per-level SWD ×10³ and their average, as ProGAN's API.end computes them."""
  num_levels = len(projections)
  sets = []
  for images, centres in ((real_nhwc, real_centres), (fake_nhwc, fake_centres)):
    pyramid = _ref_laplacian_pyramid(images.transpose(0, 3, 1, 2), num_levels)
    sets.append(
      [_ref_finalize(_ref_descriptors(lv, c)) for lv, c in zip(pyramid, centres, strict=True)]
    )
  dist = [
    _ref_sliced_wasserstein(r, f, p) * 1e3 for r, f, p in zip(*sets, projections, strict=True)
  ]
  return dist + [np.mean(dist)]


def _key(seed):
  # RBG keys compile several times faster than threefry on XLA:CPU; the metric takes any key.
  return jax.random.key(seed, impl='rbg')


# --- Test data. -----------------------------------------------------------------------------------


def _images(seed, batch, size, *, low=0, high=255):
  """Smooth random shapes plus fine noise, so every pyramid level carries signal."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(low, high, size=(batch, size // 8, size // 8, 3))
  smooth = coarse.repeat(8, axis=1).repeat(8, axis=2)
  noisy = smooth + rng.normal(0.0, 0.08 * (high - low), size=smooth.shape)
  return np.clip(np.round(noisy), low, high).astype(np.uint8)


def _run_both(real, fake, seed=0, *, same_centres=False):
  """(ours, reference) SWD lists (levels…, avg) with shared centres and directions."""
  key = _key(seed)
  k_real, k_fake, k_dirs = jax.random.split(key, 3)
  resolutions = swd.level_resolutions(*real.shape[1:3])
  real_centres = swd.patch_coordinates(k_real, real.shape)
  fake_centres = real_centres if same_centres else swd.patch_coordinates(k_fake, fake.shape)
  projections = swd.random_projections(k_dirs, len(resolutions))
  ours = swd.sliced_wasserstein_distances(
    swd.descriptors_at(real, real_centres),
    swd.descriptors_at(fake, fake_centres),
    resolutions,
    projections=projections,
  )
  ref = _ref_swd(
    real,
    fake,
    [np.asarray(c) for c in real_centres],
    [np.asarray(c) for c in fake_centres],
    np.asarray(projections),
  )
  names = [f'swd_{r}' for r in resolutions] + ['swd_avg']
  assert list(ours) == names
  return np.array([ours[n] for n in names]), np.array(ref)


@pytest.mark.parametrize('size', [32, 64])
def test_matches_progan_reference(size):
  ours, ref = _run_both(_images(0, 4, size), _images(1, 4, size, low=40, high=220))
  assert np.all(ref > 1.0), ref  # Different sets: a real signal at every level.
  np.testing.assert_allclose(ours, ref, rtol=1e-5)  # Measured: 4e-7.


def test_identical_sets_give_zero():
  images = _images(2, 4, 64)
  levels = swd.descriptors_at(images, swd.patch_coordinates(_key(3), images.shape))
  result = swd.sliced_wasserstein_distances(levels, levels, [64, 32, 16], key=_key(4))
  assert set(result) == {'swd_64', 'swd_32', 'swd_16', 'swd_avg'}
  np.testing.assert_allclose(list(result.values()), 0.0, atol=1e-6)


def test_brightness_offset_is_normalized_away_but_noise_is_not():
  real = _images(5, 4, 64, low=20, high=200)
  brighter = real + np.uint8(40)  # No clipping: the offset is exact.
  key = _key(6)
  projections = swd.random_projections(key, 3)
  centres = swd.patch_coordinates(_key(7), real.shape)
  real_levels = swd.descriptors_at(real, centres)
  shifted = swd.sliced_wasserstein_distances(
    real_levels, swd.descriptors_at(brighter, centres), [64, 32, 16], projections=projections
  )
  # The offset lives only in the low-pass level, where per-set normalization removes it.
  np.testing.assert_allclose(list(shifted.values()), 0.0, atol=5e-3)  # Measured: 7e-4.

  rng = np.random.default_rng(8)
  noisy = np.clip(real + rng.normal(0, 12, real.shape), 0, 255).astype(np.uint8)
  # The same centres in both sets, so only the noise separates them (not patch sampling).
  ours, ref = _run_both(real, noisy, seed=9, same_centres=True)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  assert ours[0] > 2 * ours[-2] > 0  # Fine noise shows most in the finest band.


def test_pyramid_matches_scipy():
  images = _images(10, 2, 64)
  ours = swd.laplacian_pyramid(images, 3)
  ref = _ref_laplacian_pyramid(images.transpose(0, 3, 1, 2), 3)
  for lv, rv in zip(ours, ref, strict=True):
    # A couple of float32 ulps at 255 (scipy filters in float64); measured 3e-5.
    np.testing.assert_allclose(np.asarray(lv).transpose(0, 3, 1, 2), rv, rtol=1e-5, atol=1e-4)


def test_pyramid_reconstructs_the_image():
  images = _images(11, 2, 64)
  pyramid = swd.laplacian_pyramid(images, 3)
  assert [p.shape[1] for p in pyramid] == [64, 32, 16]
  np.testing.assert_allclose(swd.reconstruct_laplacian_pyramid(pyramid), images, atol=1e-4)


def test_descriptors_jit_and_accumulator():
  images = _images(12, 4, 32)
  key = _key(13)
  eager = swd.descriptors(images, key)
  jitted = jax.jit(swd.descriptors)(images, key)
  for a, b in zip(eager, jitted, strict=True):
    assert a.shape == (4 * 128, 147)
    np.testing.assert_array_equal(a, b)

  acc = swd.SWDAccumulator()
  acc.add(eager)
  acc.add(swd.descriptors(images[::-1], jax.random.fold_in(key, 1)))
  levels = acc.levels()
  assert acc.num_images == 8 and [lv.shape for lv in levels] == [(1024, 147)] * 2
  assert acc.nbytes == 8 * 2 * swd.BYTES_PER_IMAGE_AND_LEVEL == 8 * 2 * 75_264
  np.testing.assert_array_equal(levels[1][:512], eager[1])
  # Other draws of the same images: only patch-sampling noise, which is large for 4 images.
  result = swd.sliced_wasserstein_distances(
    [lv[512:] for lv in levels], eager, [32, 16], key=_key(14)
  )
  assert set(result) == {'swd_32', 'swd_16', 'swd_avg'} and 0 < result['swd_avg'] < 200


@pytest.mark.parametrize(
  'images, message',
  [
    (np.zeros((2, 32, 32, 3), np.float32), 'uint8'),
    (np.zeros((32, 32, 3), np.uint8), r'\(B, H, W, 3\)'),
    (np.zeros((2, 32, 32, 4), np.uint8), r'\(B, H, W, 3\)'),
    (np.zeros((2, 8, 8, 3), np.uint8), 'at least 16x16'),
    (np.zeros((2, 64, 66, 3), np.uint8), 'divisible by 4'),
  ],
)
def test_bad_images(images, message):
  with pytest.raises(ValueError, match=message):
    swd.descriptors(images, _key(0))


def test_unequal_set_sizes():
  real = [np.zeros((2 * 128, 147), np.float32)] * 2  # Two images' worth at two levels.
  fake = [np.zeros((3 * 128, 147), np.float32)] * 2
  with pytest.raises(ValueError, match='as many real as fake'):
    swd.sliced_wasserstein_distances(real, fake, [32, 16], key=_key(2))


def test_a_constant_set_gives_a_finite_distance():
  """A collapsed generator (every image one colour) scores a large finite SWD, not NaN."""
  rng = np.random.default_rng(11)
  real = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  constant = np.zeros_like(real)
  key = jax.random.key(0)
  real_levels = swd.descriptors(jnp.asarray(real), key)
  constant_levels = swd.descriptors(jnp.asarray(constant), key)
  result = swd.sliced_wasserstein_distances(
    real_levels, constant_levels, swd.level_resolutions(32, 32), key=key
  )
  assert all(np.isfinite(v) for v in result.values())
  assert result['swd_avg'] > 100.0
