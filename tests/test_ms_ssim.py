"""Tests of MS-SSIM against NumPy/SciPy transcriptions of ProGAN's and TF's algorithms."""

import jax
import numpy as np
import pytest
from scipy import signal

from semgan_jax.evaluation import ms_ssim as msssim

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])

# --- References, written from the published algorithms (float64 FFT convolutions). ---------------


def _ref_gaussian_2d(size, sigma):
  """MATLAB's fspecial('gaussian'): centred on the kernel, half a pixel off for even sizes."""
  coords = np.arange(size) - (size - 1) / 2.0
  y, x = np.meshgrid(coords, coords, indexing='ij')
  g = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
  return g / g.sum()


def _ref_ssim_and_cs(img1, img2, size, sigma, max_val, axes):
  """Mean SSIM and contrast-structure over `axes` of the 'valid' maps of (B, H, W, C) images."""
  window = _ref_gaussian_2d(size, sigma)[None, :, :, None]

  def blur(a):
    return signal.fftconvolve(a, window, mode='valid')

  mu1, mu2 = blur(img1), blur(img2)
  var1 = blur(img1 * img1) - mu1 * mu1
  var2 = blur(img2 * img2) - mu2 * mu2
  cov = blur(img1 * img2) - mu1 * mu2
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  cs_map = (2 * cov + c2) / (var1 + var2 + c2)
  ssim_map = (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1) * cs_map
  return ssim_map.mean(axis=axes), cs_map.mean(axis=axes)


def _ref_progan(img1, img2, max_val=255.0):
  """ProGAN's metrics/ms_ssim.py `msssim`, per pair instead of averaged over the batch."""
  im1, im2 = img1.astype(np.float32), img2.astype(np.float32)
  ssims, css = [], []
  for _ in range(5):
    size = min(11, im1.shape[1], im1.shape[2])
    ssim, cs = _ref_ssim_and_cs(im1, im2, size, size * 1.5 / 11, max_val, axes=(1, 2, 3))
    ssims.append(ssim)
    css.append(cs)
    im1, im2 = [
      (a[:, 0::2, 0::2] + a[:, 1::2, 0::2] + a[:, 0::2, 1::2] + a[:, 1::2, 1::2]) * 0.25
      for a in (im1, im2)
    ]
  ssims, css = np.clip(ssims, 0, None), np.clip(css, 0, None)
  return np.prod(css[:-1] ** WEIGHTS[:-1, None], axis=0) * ssims[-1] ** WEIGHTS[-1]


def _ref_standard(img1, img2, max_val=255.0):
  """tf.image.ssim_multiscale: fixed 11x11 filter, per-channel MS-SSIM, then the channel mean."""
  im1, im2 = img1.astype(np.float64), img2.astype(np.float64)
  factors = []
  for scale in range(5):
    if scale:
      pad = ((0, 0), (0, im1.shape[1] % 2), (0, im1.shape[2] % 2), (0, 0))
      im1, im2 = [np.pad(a, pad, mode='symmetric') for a in (im1, im2)]
      b, h, w, c = im1.shape
      im1, im2 = [a.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)) for a in (im1, im2)]
    ssim, cs = _ref_ssim_and_cs(im1, im2, 11, 1.5, max_val, axes=(1, 2))  # (B, C)
    factors.append(np.maximum(ssim if scale == 4 else cs, 0))
  return np.mean(np.prod(np.stack(factors, -1) ** WEIGHTS, axis=-1), axis=-1)


# --- Test data. -----------------------------------------------------------------------------------


def _pairs(seed, batch, height, width=None):
  """uint8 pairs from unrelated to near-identical: a shared smooth image plus per-image noise."""
  width = width or height
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, size=(batch, height // 8 + 1, width // 8 + 1, 3))
  base = coarse.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width]
  noise_level = np.linspace(5, 120, batch)[:, None, None, None]
  img1 = base + rng.normal(size=base.shape) * noise_level
  img2 = base + rng.normal(size=base.shape) * noise_level
  img2[-1] = rng.uniform(0, 255, size=base.shape[1:])  # One unrelated pair.
  return [np.clip(np.round(a), 0, 255).astype(np.uint8) for a in (img1, img2)]


@pytest.mark.parametrize(
  'variant, shape',
  [('progan', (64, 64)), ('progan', (128, 128)), ('progan', (192, 192)), ('standard', (192, 192))]
  + [('standard', (165, 177))],  # Odd sides at several scales: TF's edge-repeating pad.
)
def test_matches_reference(variant, shape):
  img1, img2 = _pairs(0, 6, *shape)
  ours = np.asarray(msssim.ms_ssim(img1, img2, variant=variant))
  ref = (_ref_progan if variant == 'progan' else _ref_standard)(img1, img2)
  assert ours.shape == (6,) and ours.dtype == np.float32
  assert np.ptp(ref) > 0.3  # The pairs span a real range of similarities.
  np.testing.assert_allclose(ours, ref, atol=1e-5)  # Measured: 5e-7.


@pytest.mark.parametrize('variant', msssim.VARIANTS)
def test_identical_images_score_one_and_random_pairs_lie_in_0_1(variant):
  rng = np.random.default_rng(1)
  # The shapes of test_matches_reference, so the compiled programs are reused.
  images = rng.integers(0, 256, size=(6, 192, 192, 3), dtype=np.uint8)
  np.testing.assert_allclose(msssim.ms_ssim(images, images, variant=variant), 1.0, atol=1e-6)
  scores = np.asarray(msssim.ms_ssim(images, images[::-1], variant=variant))
  assert np.all((scores >= 0) & (scores <= 1)), scores
  # Float images in [0, 1] with max_val=1 score as the same uint8 images (only scale changes).
  floats = images.astype(np.float32) / 255.0
  np.testing.assert_allclose(
    msssim.ms_ssim(floats, floats[::-1], variant=variant, max_val=1.0), scores, atol=1e-5
  )


def test_pairwise_pairs_distinct_images():
  img1, img2 = _pairs(2, 6, 64)
  images = np.concatenate([img1, img2, img1[:1]])  # 13 images: 6 pairs and one left out.
  key = jax.random.key(3)
  result = jax.jit(msssim.pairwise_ms_ssim, static_argnames='variant')(
    images, key, variant='progan'
  )
  assert list(result) == ['ms_ssim_progan'] and result['ms_ssim_progan'].shape == (6,)
  order = np.asarray(jax.random.permutation(key, 13))
  first, second = order[0:12:2], order[1:12:2]
  assert len(set(order[:12])) == 12
  expected = msssim.ms_ssim(images[first], images[second], variant='progan')
  np.testing.assert_allclose(result['ms_ssim_progan'], expected, atol=1e-6)
  # Without a key: ProGAN's pairing, image 2i with image 2i + 1.
  in_order = msssim.pairwise_ms_ssim(images[:12], variant='progan')['ms_ssim_progan']
  expected = msssim.ms_ssim(images[0:12:2], images[1:12:2], variant='progan')
  np.testing.assert_allclose(in_order, expected, atol=1e-6)


@pytest.mark.parametrize(
  'shape1, shape2, dtype, kwargs, message',
  [
    ((2, 64, 64, 3), (2, 64, 32, 3), np.uint8, {}, 'equal shape'),
    ((64, 64, 3), (64, 64, 3), np.uint8, {}, r'\(B, H, W, C\)'),
    ((2, 64, 64, 3), (2, 64, 64, 3), np.float32, {}, 'explicit max_val'),
    ((2, 64, 64, 3), (2, 64, 64, 3), np.int32, {'max_val': 255.0}, 'uint8 or float'),
    ((2, 64, 64, 3), (2, 64, 64, 3), np.uint8, {'max_val': 0.0}, 'positive'),
    ((2, 160, 192, 3), (2, 160, 192, 3), np.uint8, {'variant': 'standard'}, '161x161.*160x192'),
    ((2, 72, 64, 3), (2, 72, 64, 3), np.uint8, {}, 'multiples of 16, got 72x64'),
    ((2, 64, 64, 3), (2, 64, 64, 3), np.uint8, {'variant': 'wang'}, 'variant must be'),
  ],
)
def test_bad_inputs(shape1, shape2, dtype, kwargs, message):
  kwargs = {'variant': 'progan', **kwargs}
  with pytest.raises(ValueError, match=message):
    msssim.ms_ssim(np.zeros(shape1, dtype), np.zeros(shape2, dtype), **kwargs)


def test_pairwise_needs_two_images():
  with pytest.raises(ValueError, match='at least 2 images'):
    msssim.pairwise_ms_ssim(np.zeros((1, 64, 64, 3), np.uint8), variant='progan')


def test_standard_matches_tensorflow():
  """Cross-check with tf.image.ssim_multiscale; runs only where TensorFlow is installed."""
  tf = pytest.importorskip('tensorflow')
  for shape in [(192, 192), (165, 177), (161, 161)]:
    img1, img2 = _pairs(4, 6, *shape)
    theirs = tf.image.ssim_multiscale(img1, img2, max_val=255).numpy()
    ours = np.asarray(msssim.ms_ssim(img1, img2, variant='standard'))
    np.testing.assert_allclose(ours, theirs, atol=5e-5)  # Measured: 1e-5, TF's float32 error.
  # TF's own size limit is ours: 161 passes above, 160 does not fit its filter.
  small = np.zeros((1, 160, 160, 3), np.uint8)
  with pytest.raises(tf.errors.InvalidArgumentError):
    tf.image.ssim_multiscale(small, small, max_val=255)
