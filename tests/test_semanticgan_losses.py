"""Tests of SemanticGAN's loss terms: adversarial, feature matching, VGG perceptual, SIPL."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from semgan_jax import losses
from semgan_jax.models import vgg
from semgan_jax.weights import vgg19


def _maps(seed, shapes=((2, 8, 8, 1), (2, 4, 4, 1), (2, 2, 2, 1))):
  """Random logit maps of a 3-scale PatchGAN (sizes differ, so a pooled mean would be wrong)."""
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(shape, np.float32)) for shape in shapes]


def test_adversarial_known_values():
  ones = [jnp.ones((2, 8, 8, 1)), jnp.ones((2, 4, 4, 1))]
  zeros = [jnp.zeros_like(x) for x in ones]
  d, g = losses.multiscale_d_loss, losses.multiscale_g_adv_loss
  # A perfect LSGAN discriminator and a generator that fools it: both losses vanish.
  assert d(ones, zeros, 'lsgan') == 0 and g(ones, 'lsgan') == 0
  # Fully wrong: (1 + 1) per scale, two scales summed, halved.
  assert d(zeros, ones, 'lsgan') == pytest.approx(2.0) and g(zeros, 'lsgan') == 2.0
  # Hinge margins: beyond ±1 costs nothing; at 0.5 / 0 the real side pays 0.5, the fake 1.
  assert d([2 * x for x in ones], [-2 * x for x in ones], 'hinge') == 0
  assert d([0.5 * x for x in ones], zeros, 'hinge') == pytest.approx(0.5 * 2 * 1.5)
  assert g([3 * x for x in ones], 'hinge') == -6.0


@pytest.mark.parametrize('kind', losses.ADVERSARIAL_KINDS)
def test_adversarial_losses_sum_per_scale_means(kind):
  real, fake = _maps(0), _maps(1)

  def per_scale_d(r, f):
    if kind == 'lsgan':
      return np.mean((r - 1) ** 2) + np.mean(f**2)
    if kind == 'bce':
      ones, zeros = np.ones_like(r), np.zeros_like(f)
      bce = optax.sigmoid_binary_cross_entropy
      return np.mean(bce(r, ones)) + np.mean(bce(f, zeros))
    return np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))

  def per_scale_g(f):
    if kind == 'lsgan':
      return np.mean((f - 1) ** 2)
    if kind == 'bce':
      return np.mean(optax.sigmoid_binary_cross_entropy(f, np.ones_like(f)))
    return -np.mean(f)

  want_d = 0.5 * sum(
    per_scale_d(np.asarray(r), np.asarray(f)) for r, f in zip(real, fake, strict=True)
  )
  want_g = sum(per_scale_g(np.asarray(f)) for f in fake)
  d_fn = functools.partial(losses.multiscale_d_loss, kind=kind)
  g_fn = functools.partial(losses.multiscale_g_adv_loss, kind=kind)
  np.testing.assert_allclose(jax.jit(d_fn)(real, fake), want_d, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(g_fn)(fake), want_g, rtol=1e-5)

  # G's loss pushes every scale's logits; D's loss, only through D's own outputs, both sides.
  g_grads = jax.jit(jax.grad(g_fn))(fake)
  assert all(jnp.abs(x).max() > 0 for x in g_grads)
  d_grads = jax.jit(jax.grad(d_fn, argnums=(0, 1)))(real, fake)
  assert all(jnp.abs(x).max() > 0 for side in d_grads for x in side)
  # Large logits stay finite (BCE on logits, not on probabilities).
  huge = [100 * x for x in fake]
  assert jnp.isfinite(losses.multiscale_d_loss(huge, huge, kind))
  assert jnp.isfinite(losses.multiscale_g_adv_loss(huge, kind))


def test_adversarial_rejects_bad_arguments():
  with pytest.raises(ValueError, match="unknown adversarial loss 'wgan'"):
    losses.multiscale_g_adv_loss(_maps(0), 'wgan')
  with pytest.raises(ValueError, match='3 real and 2 fake scales'):
    losses.multiscale_d_loss(_maps(0), _maps(1)[:2])


def _features(seed, scales=3, layers=4):
  """Random D features: per scale, `layers` maps shrinking in space and growing in channels."""
  rng = np.random.default_rng(seed)
  return [
    [
      jnp.asarray(rng.standard_normal((2, 16 >> i, 16 >> i, 8 << i), np.float32))
      for i in range(layers)
    ]
    for _ in range(scales)
  ]


def test_feature_matching_weights_and_gradients():
  real = _features(0)
  fm = jax.jit(losses.multiscale_feature_matching_loss)
  assert fm(real, real) == 0
  # One layer off by 0.5 everywhere: (1/num_D) · (4/(n_layers_D + 1)) · 0.5 = (1/3) · 1 · 0.5.
  fake = [list(scale) for scale in real]
  fake[1][2] = fake[1][2] + 0.5
  np.testing.assert_allclose(fm(real, fake), 0.5 / 3, rtol=1e-6)
  # Two discriminators of 2 feature layers each: the per-layer weight is (1/2) · (4/2).
  two = _features(1, scales=2, layers=2)
  shifted = [[x - 0.25 for x in scale] for scale in two]
  np.testing.assert_allclose(fm(two, shifted), 2 * 2 * (0.5 * 2 * 0.25), rtol=1e-6)
  # General case equals the weighted sum of L1 means.
  other = _features(2)
  want = sum(
    (1 / 3) * (4 / 4) * np.mean(np.abs(np.asarray(r) - np.asarray(f)))
    for rs, fs in zip(real, other, strict=True)
    for r, f in zip(rs, fs, strict=True)
  )
  np.testing.assert_allclose(fm(real, other), want, rtol=1e-5)

  grad_fn = jax.jit(jax.grad(losses.multiscale_feature_matching_loss, argnums=(0, 1)))
  real_grads, fake_grads = grad_fn(real, other)
  assert all(jnp.abs(g).max() > 0 for scale in fake_grads for g in scale)
  assert all(jnp.abs(g).max() == 0 for scale in real_grads for g in scale)  # a fixed target
  with pytest.raises(ValueError, match='4 real and 3 fake feature layers'):
    fm(real, [scale[:3] for scale in real])


def test_perceptual_loss_layer_weights_and_gradients():
  # A stand-in network whose i-th "feature" is (i + 1)·x: the loss is Σ w_i (i + 1) mean|Δ|.
  fake_vgg = lambda x: tuple((i + 1) * x for i in range(5))
  rng = np.random.default_rng(0)
  x, y = (jnp.asarray(rng.standard_normal((2, 8, 8, 3), np.float32)) for _ in range(2))
  want = sum(w * (i + 1) for i, w in enumerate(losses.VGG_LAYER_WEIGHTS)) * np.mean(np.abs(x - y))
  loss = functools.partial(losses.vgg_perceptual_loss, fake_vgg)
  value, (fake_grad, real_grad) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, y)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  assert jnp.abs(fake_grad).min() > 0
  assert jnp.abs(real_grad).max() == 0  # the real images' features are a fixed target
  assert losses.VGG_LAYER_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1)
  with pytest.raises(ValueError, match='returned 4 feature maps'):
    losses.vgg_perceptual_loss(lambda x: (x,) * 4, x, y)


def _random_vgg_params(seed=0):
  """VGG19Features parameters drawn in NumPy (He-scaled, so activations neither die nor explode).

  Much quicker than `init`, whose random number generation XLA:CPU compiles slowly.
  """
  rng = np.random.default_rng(seed)
  params = {}
  for key, shape in vgg19.expected_shapes().items():
    layer, leaf = key.split('/')
    scale = np.sqrt(2 / np.prod(shape[:-1])) if leaf == 'kernel' else 0.1
    params.setdefault(layer, {})[leaf] = (scale * rng.standard_normal(shape)).astype(np.float32)
  return params


def test_perceptual_loss_with_vgg19():
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
  fake = jnp.clip(images + 0.3 * rng.standard_normal(images.shape).astype(np.float32), -1, 1)
  vgg_fn = functools.partial(vgg.VGG19Features().apply, {'params': _random_vgg_params()})
  # Forward only: differentiating VGG19 takes XLA:CPU long to compile, and the stop-gradient
  # logic is the stand-in test's.
  loss = jax.jit(functools.partial(losses.vgg_perceptual_loss, vgg_fn))
  assert loss(images, images) == 0
  value = loss(fake, images)
  assert jnp.isfinite(value) and value > 0
  # Batching fake and real together is exact: the same as two separate forward passes.
  features = jax.jit(vgg_fn)
  separate = sum(
    w * np.mean(np.abs(np.asarray(a) - np.asarray(b)))
    for w, a, b in zip(losses.VGG_LAYER_WEIGHTS, features(fake), features(images), strict=True)
  )
  np.testing.assert_allclose(value, separate, rtol=1e-5)


def _numpy_cross_entropy(logits, labels, ignore_label):
  logits = np.float64(logits)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  valid = labels != ignore_label
  picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  return -picked[valid].mean()


def test_sipl_matches_numpy_cross_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (2, 6, 10, 19)).astype(np.float32)
  labels = rng.integers(0, 19, (2, 6, 10))
  labels[rng.random(labels.shape) < 0.3] = 255  # void
  sipl = jax.jit(losses.sipl_loss, static_argnames='ignore_label')
  want = _numpy_cross_entropy(logits, labels, 255)
  np.testing.assert_allclose(sipl(logits, labels, ignore_label=255), want, rtol=1e-5)
  # Log-probabilities give the same value (log_softmax leaves them unchanged).
  log_probs = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(sipl(log_probs, labels, ignore_label=255), want, rtol=1e-5)
  # The ignored pixels get no gradient; the others do.
  grads = jax.grad(losses.sipl_loss)(jnp.asarray(logits), labels, 255)
  assert np.abs(np.asarray(grads)[labels == 255]).max() == 0
  assert np.abs(np.asarray(grads)[labels != 255]).max() > 0
  # A perfectly confident, correct segmenter costs nothing.
  confident = 100.0 * jax.nn.one_hot(np.where(labels == 255, 0, labels), 19)
  assert sipl(confident, labels, ignore_label=255) == pytest.approx(0, abs=1e-6)


def test_sipl_edge_cases():
  logits = jnp.zeros((1, 2, 2, 4))
  # Everything ignored: 0, not 0/0.
  assert losses.sipl_loss(logits, jnp.full((1, 2, 2), 255), 255) == 0
  # Uniform scores: log K per pixel.
  labels = jnp.array([[[0, 1], [2, 255]]])
  np.testing.assert_allclose(losses.sipl_loss(logits, labels, 255), np.log(4), rtol=1e-6)
  # A label id outside [0, K) that is not the ignore id poisons the loss instead of passing.
  assert jnp.isnan(losses.sipl_loss(logits, jnp.array([[[0, 4], [1, 2]]]), 255))
  assert jnp.isnan(losses.sipl_loss(logits, jnp.array([[[0, -1], [1, 2]]]), 255))
