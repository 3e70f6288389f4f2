"""Streaming feature statistics, the Fréchet distance, KID, mIoU and the label-map metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from semgan_jax.evaluation import segmentation, semantic, statistics


def _scipy_frechet(mu1, sigma1, mu2, sigma2):
  """The reference formula of the FID papers and pytorch-fid, in float64 with scipy's sqrtm."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  covmean = covmean.real
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _random_gaussian(rng, dim, n):
  a = rng.normal(size=(dim, dim))
  features = rng.normal(size=(n, dim)) @ a + rng.normal(size=dim)
  return features


def test_streaming_moments_match_numpy_in_any_batching():
  rng = np.random.default_rng(0)
  features = _random_gaussian(rng, 16, 301) * 50 + 1000  # Large offset: centring matters.
  whole = statistics.GaussianStats(16)
  whole.add(features)
  streamed = statistics.GaussianStats(16)
  for chunk in np.array_split(features, [7, 8, 100, 250]):
    moments = jax.device_get(statistics.batch_moments(jnp.asarray(chunk, jnp.float32)))
    streamed.add_moments(moments['count'], moments['mean'], moments['scatter'])
  np.testing.assert_allclose(whole.mean, features.mean(0), rtol=1e-12)
  np.testing.assert_allclose(whole.covariance, np.cov(features, rowvar=False), rtol=1e-10)
  assert streamed.count == 301
  np.testing.assert_allclose(streamed.mean, features.mean(0), rtol=1e-6)
  np.testing.assert_allclose(
    streamed.covariance, np.cov(features, rowvar=False), rtol=1e-4, atol=1e-3
  )


def test_masked_batch_moments_ignore_padding():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(10, 4)).astype(np.float32)
  weights = np.array([1] * 6 + [0] * 4, np.float32)
  padded = features.copy()
  padded[6:] = 1e3  # Garbage in the padded rows must not leak into the moments.
  masked = jax.device_get(statistics.batch_moments(jnp.asarray(padded), jnp.asarray(weights)))
  plain = jax.device_get(statistics.batch_moments(jnp.asarray(features[:6])))
  assert masked['count'] == 6
  np.testing.assert_allclose(masked['mean'], plain['mean'], rtol=1e-6)
  np.testing.assert_allclose(masked['scatter'], plain['scatter'], rtol=1e-5, atol=1e-6)


def test_covariance_needs_two_samples():
  stats = statistics.GaussianStats(3)
  stats.add(np.ones((1, 3)))
  with pytest.raises(ValueError, match='at least 2'):
    _ = stats.covariance


def test_frechet_distance_matches_scipy_reference():
  rng = np.random.default_rng(2)
  a, b = _random_gaussian(rng, 32, 500), _random_gaussian(rng, 32, 400)
  mu1, sigma1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, sigma2 = b.mean(0), np.cov(b, rowvar=False)
  ours = statistics.frechet_distance(mu1, sigma1, mu2, sigma2)
  reference = _scipy_frechet(mu1, sigma1, mu2, sigma2)
  np.testing.assert_allclose(ours, reference, rtol=1e-8)
  assert ours > 1.0


def test_frechet_distance_known_values():
  dim = 8
  zero, eye = np.zeros(dim), np.eye(dim)
  # A set against itself (a singular covariance too: fewer samples than dimensions).
  rng = np.random.default_rng(3)
  few = rng.normal(size=(5, dim))
  mu, sigma = few.mean(0), np.cov(few, rowvar=False)
  # Rank-deficient: the square roots of ~1e-16 round-off eigenvalues leave ~1e-8 of ~10.
  assert abs(statistics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
  # A mean shift adds |shift|²; N(0, I) vs N(0, 4I) is D·(1 + 4 - 2·2) = D.
  shift = np.arange(dim, dtype=np.float64)
  np.testing.assert_allclose(
    statistics.frechet_distance(zero, eye, shift, eye), shift @ shift, rtol=1e-12
  )
  np.testing.assert_allclose(statistics.frechet_distance(zero, eye, zero, 4 * eye), dim)


def test_frechet_distance_shape_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match='same D'):
    statistics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_statistics_file_round_trip(tmp_path):
  stats = statistics.GaussianStats(4)
  stats.add(np.random.default_rng(4).normal(size=(20, 4)))
  path = str(tmp_path / 'stats.npz')
  stats.save(path)
  mu, sigma, count = statistics.load_statistics(path)
  np.testing.assert_array_equal(mu, stats.mean)
  np.testing.assert_array_equal(sigma, stats.covariance)
  assert count == 20
  np.savez(tmp_path / 'other.npz', x=np.zeros(2))
  with pytest.raises(ValueError, match='not a feature-statistics file'):
    statistics.load_statistics(str(tmp_path / 'other.npz'))


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
  same, _ = statistics.kernel_inception_distance(a, b, num_subsets=20, subset_size=100)
  different, _ = statistics.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=100)
  assert abs(same) < 0.05
  assert different > 10 * max(abs(same), 1e-3)


def test_confusion_matrix_and_miou_against_a_hand_built_example():
  labels = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.int32)[None]
  predictions = np.array([[0, 1, 1, 1], [2, 0, 0, 2]], np.int32)[None]
  confusion = np.asarray(segmentation.confusion_matrix(labels, predictions, 3, ignore_label=255))
  expected = np.array(
    [
      [1, 1, 0],  # true 0: one right, one called 1
      [0, 2, 1],  # true 1: two right, one called 2
      [1, 0, 1],  # true 2: one called 0, one right; the 255 pixel is ignored
    ]
  )
  np.testing.assert_array_equal(confusion, expected)
  result = segmentation.iou_from_confusion(confusion)
  # IoU_k = TP / (row + column - TP).
  per_class = [1 / (2 + 2 - 1), 2 / (3 + 3 - 2), 1 / (2 + 2 - 1)]
  np.testing.assert_allclose(result['per_class'], per_class)
  np.testing.assert_allclose(result['miou'], np.mean(per_class))
  np.testing.assert_allclose(result['pixel_accuracy'], 4 / 7)


def test_confusion_matrix_accumulates_under_jit_on_a_sharded_batch():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 5, size=(8, 6, 6)).astype(np.int32)
  predictions = rng.integers(0, 5, size=(8, 6, 6)).astype(np.int32)
  step = jax.jit(lambda lab, pred: segmentation.confusion_matrix(lab, pred, 5, None))
  total = jnp.zeros((5, 5), jnp.int32)
  for half in (slice(0, 8), slice(0, 8)):
    total = total + step(
      jax.device_put(labels[half], sharding), jax.device_put(predictions, sharding)
    )
  expected = np.zeros((5, 5), np.int64)
  np.add.at(expected, (labels.ravel(), predictions.ravel()), 1)
  np.testing.assert_array_equal(np.asarray(total), 2 * expected)


def test_absent_classes_are_left_out_of_the_mean():
  confusion = np.array([[3, 0, 0], [0, 0, 0], [1, 0, 2]])
  result = segmentation.iou_from_confusion(confusion)
  assert np.isnan(result['per_class'][1])
  np.testing.assert_allclose(result['miou'], np.mean([3 / 4, 2 / 3]))


def test_label_ids_outside_the_class_set_are_named():
  segmentation.check_labels(np.array([0, 1, 255]), 2)
  with pytest.raises(ValueError, match=r'ids \[2, 7\] outside the class set'):
    segmentation.check_labels(np.array([0, 2, 7, 255]), 2)


PALETTE = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)


def test_softmax_head_maps_are_never_off_palette():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(4, 16, 16, 4)).astype(np.float32)
  labels = jnp.argmax(jax.nn.softmax(logits), axis=-1)
  images = jnp.asarray(PALETTE)[labels]
  assert int(semantic.off_palette_count(images, PALETTE)) == 0
  np.testing.assert_array_equal(semantic.nearest_palette_labels(images, PALETTE), labels)


def test_rgb_outputs_off_palette_count_and_tolerance():
  images = np.zeros((1, 2, 2, 3), np.uint8)
  images[0, 0, 0] = [0, 0, 250]  # 5 away from blue
  images[0, 1, 1] = [128, 128, 128]  # far from everything
  assert int(semantic.off_palette_count(images, PALETTE)) == 2
  assert int(semantic.off_palette_count(images, PALETTE, tolerance=5.0)) == 1
  np.testing.assert_array_equal(
    np.asarray(semantic.nearest_palette_labels(images, PALETTE))[0, 0], [1, 0]
  )


def test_class_frequency_metrics():
  labels = np.array([[[0, 0], [1, 3]]], np.int32)
  counts = np.asarray(semantic.class_counts(labels, 4))
  np.testing.assert_array_equal(counts, [2, 1, 0, 1])
  same = semantic.class_frequency_metrics(counts, counts, ('bg', 'circle', 'rect', 'square'))
  assert same['class_freq_l1'] == 0 and same['class_freq_js'] == 0
  assert same['class_share/bg'] == 0.5
  disjoint = semantic.class_frequency_metrics([1, 0, 0, 0], [0, 0, 0, 1])
  np.testing.assert_allclose(disjoint['class_freq_l1'], 2.0)
  np.testing.assert_allclose(disjoint['class_freq_js'], 1.0)
  with pytest.raises(ValueError, match='at least one pixel'):
    semantic.class_frequency_metrics([0, 0], [1, 0])
