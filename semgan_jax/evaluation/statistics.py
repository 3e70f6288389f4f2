"""Streaming Gaussian feature statistics (float64 on the host) and the Fréchet distance (FID)."""

import os

import jax
import jax.numpy as jnp
import numpy as np


def batch_moments(features: jax.Array, weights: jax.Array | None = None) -> dict[str, jax.Array]:
  """One batch's count, mean and centred scatter matrix; jittable, runs where the batch lives.

  Centring inside the batch before the outer product keeps float32 accurate (the raw second
  moment of post-ReLU features is large next to the covariance); the host merges batches in
  float64 with Chan et al.'s pairwise update.

  Args:
    features: (B, D) features.
    weights: optional (B,) 0/1 mask of the rows that count (a padded last batch).

  Returns:
    {'count': () float32, 'mean': (D,) float32, 'scatter': (D, D) float32}, where scatter is
    Σ w (x - mean)(x - mean)ᵀ over the batch.
  """
  features = features.astype(jnp.float32)
  if weights is None:
    weights = jnp.ones(features.shape[:1], jnp.float32)
  weights = weights.astype(jnp.float32)
  count = weights.sum()
  mean = (features * weights[:, None]).sum(axis=0) / jnp.maximum(count, 1.0)
  centred = (features - mean) * weights[:, None]
  scatter = jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST)
  return {'count': count, 'mean': mean, 'scatter': scatter}


class GaussianStats:
  """Mean and covariance of a stream of feature vectors, accumulated in float64.

  Memory is O(D²) whatever the number of samples. Feed it batches with `add` (features) or
  `add_moments` (the output of `batch_moments`, computed on device).
  """

  def __init__(self, dim: int):
    self.dim = dim
    self.count = 0
    self._mean = np.zeros(dim, np.float64)
    self._scatter = np.zeros((dim, dim), np.float64)

  def add_moments(self, count, mean, scatter) -> None:
    """Merges one batch's moments (Chan, Golub & LeVeque's parallel update)."""
    count = int(round(float(count)))
    if count == 0:
      return
    mean = np.asarray(mean, np.float64)
    scatter = np.asarray(scatter, np.float64)
    if mean.shape != (self.dim,) or scatter.shape != (self.dim, self.dim):
      raise ValueError(
        f'feature moments of shape {mean.shape} / {scatter.shape}; expected ({self.dim},) / '
        f'({self.dim}, {self.dim}).'
      )
    total = self.count + count
    delta = mean - self._mean
    self._scatter += scatter + np.outer(delta, delta) * (self.count * count / total)
    self._mean += delta * (count / total)
    self.count = total

  def add(self, features) -> None:
    """Adds a (B, D) batch of features."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != self.dim:
      raise ValueError(f'features of shape {features.shape}; expected (batch, {self.dim}).')
    mean = features.mean(axis=0)
    centred = features - mean
    self.add_moments(features.shape[0], mean, centred.T @ centred)

  @property
  def mean(self) -> np.ndarray:
    return self._mean.copy()

  @property
  def covariance(self) -> np.ndarray:
    """Unbiased covariance (ddof=1, as numpy.cov and the FID reference implementations)."""
    if self.count < 2:
      raise ValueError(
        f'a covariance needs at least 2 samples, got {self.count}; FID needs at least 2 images '
        'in each set (and thousands for a number comparable with published ones).'
      )
    return self._scatter / (self.count - 1)

  def save(self, path: str) -> None:
    """Writes mean, covariance and count to an .npz (atomically), e.g. to cache real statistics."""
    tmp = f'{path}.tmp.{os.getpid()}.npz'
    np.savez(tmp, mu=self.mean, sigma=self.covariance, count=np.int64(self.count))
    os.replace(tmp, path)


def load_statistics(path: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Reads (mu, sigma, count) written by `GaussianStats.save`."""
  with np.load(path, allow_pickle=False) as f:
    missing = {'mu', 'sigma', 'count'} - set(f.files)
    if missing:
      raise ValueError(f'{path}: not a feature-statistics file (missing {sorted(missing)}).')
    return f['mu'], f['sigma'], int(f['count'])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
  eigenvalues, eigenvectors = np.linalg.eigh(matrix)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^½).

  The trace term is computed as tr((A sigma2 A)^½) with A = sigma1^½: A sigma2 A is symmetric
  positive semi-definite and has the eigenvalues of sigma1 sigma2, so a symmetric eigensolver
  gives it without the complex parts and failed convergence that `scipy.linalg.sqrtm` of the
  non-symmetric product meets when covariances are singular (fewer samples than dimensions).

  Returns:
    The distance as a Python float (≥ 0 up to rounding).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(
      f'Fréchet distance of N({mu1.shape}, {sigma1.shape}) and N({mu2.shape}, {sigma2.shape}): '
      'the means must be (D,) and the covariances (D, D) with the same D.'
    )
  root1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
  product = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def kernel_inception_distance(
  features1: np.ndarray,
  features2: np.ndarray,
  *,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
) -> tuple[float, float]:
  """KID (Bińkowski et al.): unbiased MMD² with the cubic polynomial kernel, over random subsets.

  k(x, y) = (xᵀy / D + 1)³. Needs the features themselves (not only moments), so the caller
  keeps them; subsets are drawn without replacement within a subset.

  Returns:
    (mean, std) of MMD² over the subsets.
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  m = min(subset_size, len(x), len(y))
  if m < 2:
    raise ValueError(f'KID needs at least 2 samples in each set, got {len(x)} and {len(y)}.')
  dim = x.shape[1]
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    a = x[rng.choice(len(x), m, replace=False)]
    b = y[rng.choice(len(y), m, replace=False)]
    kaa = (a @ a.T / dim + 1) ** 3
    kbb = (b @ b.T / dim + 1) ** 3
    kab = (a @ b.T / dim + 1) ** 3
    off_diagonal = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    values.append(off_diagonal - 2 * kab.mean())
  return float(np.mean(values)), float(np.std(values))
