"""Label-map metrics of SemGAN: off-palette pixels, class frequencies and their distance."""

import jax
import jax.numpy as jnp
import numpy as np


def palette_distances(images: jax.Array, palette) -> jax.Array:
  """Squared RGB distance of every pixel to every palette colour: (B, H, W, K) float32."""
  colors = jnp.asarray(np.asarray(palette, np.uint8), jnp.float32)
  pixels = images.astype(jnp.float32)[..., None, :]
  return jnp.sum(jnp.square(pixels - colors), axis=-1)


def off_palette_count(images: jax.Array, palette, tolerance: float = 0.0) -> jax.Array:
  """How many pixels of uint8 RGB images are farther than `tolerance` from every palette colour.

  With tolerance 0 a pixel counts as on-palette only if it equals a palette colour exactly
  (after the generator's [-1, 1] output is rounded to uint8). The semantic head's argmax maps
  are on-palette by construction; the RGB baseline's images need not be.

  Args:
    images: (B, H, W, 3) uint8 images.
    palette: (K, 3) uint8 class colours.
    tolerance: Euclidean RGB distance (0–441) still accepted as the colour.

  Returns:
    () int32 count; divide by the pixel count for the fraction.
  """
  nearest = palette_distances(images, palette).min(axis=-1)
  return jnp.sum(nearest > tolerance**2).astype(jnp.int32)


def nearest_palette_labels(images: jax.Array, palette) -> jax.Array:
  """Class ids of uint8 RGB images by the nearest palette colour (reads RGB-baseline outputs)."""
  return jnp.argmin(palette_distances(images, palette), axis=-1).astype(jnp.int32)


def class_counts(labels: jax.Array, num_classes: int) -> jax.Array:
  """(K,) int32 pixel count per class of a (B, H, W) batch of ids in [0, K)."""
  return jnp.bincount(labels.reshape(-1).astype(jnp.int32), length=num_classes).astype(jnp.int32)


def class_frequency_metrics(real_counts, generated_counts, class_names=None) -> dict[str, float]:
  """Distances between the real and generated class-frequency histograms, and per-class shares.

  Returns:
    'class_freq_l1': Σ_k |p_k - q_k| (twice the total-variation distance, in [0, 2]);
    'class_freq_js': Jensen-Shannon divergence in bits, in [0, 1];
    'class_share/<name>' and 'real_class_share/<name>': generated and real pixel shares.
  """
  p = np.asarray(real_counts, np.float64)
  q = np.asarray(generated_counts, np.float64)
  if p.sum() <= 0 or q.sum() <= 0:
    raise ValueError('class-frequency metrics need at least one pixel in each set.')
  p, q = p / p.sum(), q / q.sum()
  m = (p + q) / 2

  def kl(a, b):
    mask = a > 0
    return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

  names = list(class_names) if class_names is not None else [str(k) for k in range(len(p))]
  results = {
    'class_freq_l1': float(np.abs(p - q).sum()),
    'class_freq_js': (kl(p, m) + kl(q, m)) / 2,
  }
  for name, share, real_share in zip(names, q, p, strict=True):
    results[f'class_share/{name}'] = float(share)
    results[f'real_class_share/{name}'] = float(real_share)
  return results
