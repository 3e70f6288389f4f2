"""Tests of the generators, the discriminator, their initialisation and the GAN losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semgan_jax import losses
from semgan_jax.models import DCGANDiscriminator, LatentToLabelGenerator
from semgan_jax.models.generators import num_upsamplings

K = 4
BATCH = 3
LATENT = 8
# Small widths keep compiles short; the architecture (depth, heads) is the real one.
G_FIELDS = dict(num_classes=K, base_features=4, kernel_size=3)
D_FIELDS = dict(image_size=64, base_features=8, kernel_size=3)


def _key(seed=0):
  # The modules accept any typed key; RBG keys compile several times faster on XLA:CPU.
  return jax.random.key(seed, impl='rbg')


@pytest.fixture(scope='module')
def latents():
  return np.random.default_rng(0).normal(size=(BATCH, LATENT)).astype(np.float32)


@pytest.fixture(scope='module')
def d_inputs():
  labels = np.random.default_rng(1).integers(0, K, size=(BATCH, 64, 64))
  return np.eye(K, dtype=np.float32)[labels]


@pytest.fixture(scope='module')
def built(latents, d_inputs):
  """Every module of these tests, initialised and applied (eval mode) in one compiled program."""
  modules = {
    'semantic': LatentToLabelGenerator(**G_FIELDS),
    'rgb': LatentToLabelGenerator(head='rgb', **G_FIELDS),
    'semantic32': LatentToLabelGenerator(image_size=32, start_size=4, **G_FIELDS),
  }
  discriminator = DCGANDiscriminator(**D_FIELDS)

  @jax.jit
  def build(key):
    out = {
      name: module.init_with_output(key, latents, train=False) for name, module in modules.items()
    }
    out['discriminator'] = discriminator.init_with_output(key, d_inputs, train=False)
    return out

  return jax.device_get(build(_key()))


# --- Generators. -----------------------------------------------------------------------------


def _check_semantic(probs, size):
  assert probs.shape == (BATCH, size, size, K)
  assert probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
  assert probs.min() >= 0.0 and probs.max() <= 1.0
  ids = probs.argmax(axis=-1)
  assert set(np.unique(ids).tolist()) <= set(range(K))
  # Different latents give different maps (the output is not a constant).
  assert np.abs(probs[0] - probs[1]).max() > 0


def test_semantic_generator_outputs_distributions(built):
  probs, _ = built['semantic']
  _check_semantic(probs, 64)


def test_semantic_generator_at_32(built):
  probs, variables = built['semantic32']
  _check_semantic(probs, 32)
  # 4 → 32 is three stride-2 steps: two hidden blocks and the head.
  assert sorted(k for k in variables['params'] if k.startswith('up')) == [
    'up0',
    'up0_norm',
    'up1',
    'up1_norm',
  ]


def test_rgb_twin_differs_only_in_the_head(built):
  rgb, rgb_vars = built['rgb']
  sem_params, rgb_params = built['semantic'][1]['params'], rgb_vars['params']
  assert set(sem_params) - set(rgb_params) == {'head_semantic'}
  assert set(rgb_params) - set(sem_params) == {'head_rgb'}
  for name in set(sem_params) & set(rgb_params):
    for leaf in sem_params[name]:
      a, b = sem_params[name][leaf], rgb_params[name][leaf]
      assert a.shape == b.shape, (name, leaf)
      # Same key and the same layer name → the same initial weights.
      np.testing.assert_array_equal(a, b, err_msg=f'{name}/{leaf}')
  sem_head, rgb_head = sem_params['head_semantic'], rgb_params['head_rgb']
  assert sem_head['kernel'].shape[:-1] == rgb_head['kernel'].shape[:-1]
  assert (sem_head['kernel'].shape[-1], rgb_head['kernel'].shape[-1]) == (K, 3)
  assert (sem_head['bias'].shape, rgb_head['bias'].shape) == ((K,), (3,))
  # The batch statistics are those of the shared body.
  assert jax.tree.structure(built['semantic'][1]['batch_stats']) == jax.tree.structure(
    rgb_vars['batch_stats']
  )

  assert rgb.shape == (BATCH, 64, 64, 3)
  assert rgb.min() >= -1.0 and rgb.max() <= 1.0
  assert np.abs(rgb[0] - rgb[1]).max() > 0


def test_generator_rejects_unknown_head(latents):
  with pytest.raises(ValueError, match='foo'):
    jax.eval_shape(LatentToLabelGenerator(head='foo', **G_FIELDS).init, _key(), latents)


# --- Discriminator. --------------------------------------------------------------------------


def test_discriminator_logits_and_features(built):
  (logits, features), variables = built['discriminator']
  assert logits.shape == (BATCH,) and logits.dtype == np.float32
  assert np.all(np.isfinite(logits))
  assert len(features) == int(np.log2(64 // 4)) == 4
  base = D_FIELDS['base_features']
  expected = [(BATCH, s, s, base * 2**i) for i, s in enumerate((32, 16, 8, 4))]
  assert [f.shape for f in features] == expected
  # Features are LeakyReLU(0.2) outputs: negative values exist and are 0.2x a pre-activation.
  assert min(f.min() for f in features) < 0
  # BatchNorm on every block but the first.
  assert sorted(k for k in variables['batch_stats']) == ['down1_norm', 'down2_norm', 'down3_norm']


def test_discriminator_rejects_wrong_input_size():
  discriminator = DCGANDiscriminator(**D_FIELDS)
  x = jnp.zeros((2, 32, 32, K))
  with pytest.raises(ValueError, match='32x32') as info:
    jax.eval_shape(discriminator.init, _key(), x)
  assert '64x64' in str(info.value)


@pytest.mark.parametrize(
  ('image_size', 'start_size', 'expected'), [(64, 4, 4), (32, 4, 3), (64, 32, 1), (8, 4, 1)]
)
def test_num_upsamplings(image_size, start_size, expected):
  assert num_upsamplings(image_size, start_size) == expected


@pytest.mark.parametrize(('image_size', 'start_size'), [(48, 4), (64, 64), (64, 5), (4, 8)])
def test_num_upsamplings_rejects_non_power_of_two(image_size, start_size):
  with pytest.raises(ValueError, match=f'image_size={image_size}'):
    num_upsamplings(image_size, start_size)


def test_discriminator_rejects_non_power_of_two_sizes():
  discriminator = DCGANDiscriminator(image_size=48, base_features=4, kernel_size=3)
  with pytest.raises(ValueError, match='power of two'):
    jax.eval_shape(discriminator.init, _key(), jnp.zeros((2, 48, 48, K)))


# --- Initialisation. -------------------------------------------------------------------------


def test_init_statistics(built):
  d_params = built['discriminator'][1]['params']
  g_params = built['semantic'][1]['params']
  # Enough weights for a tight estimate: 3*3*32*64 = 18432 (D) and 8*4*4*32 = 4096 (G).
  for kernel in (d_params['down3']['kernel'], g_params['project']['kernel']):
    assert kernel.size >= 4096
    np.testing.assert_allclose(kernel.std(), 0.02, rtol=0.2)
    assert abs(kernel.mean()) < 0.002
  for params in (d_params, g_params):
    for name, layer in params.items():
      if 'bias' in layer:
        np.testing.assert_array_equal(layer['bias'], 0.0, err_msg=name)
      if name.endswith('_norm'):
        # DCGAN: BatchNorm scales from N(1, 0.02).
        assert np.abs(layer['scale'] - 1.0).max() < 0.1
        assert layer['scale'].std() > 0


# --- Losses. ---------------------------------------------------------------------------------


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_d_bce_loss_matches_numpy():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(scale=3.0, size=(2, 16)).astype(np.float32)
  expected = -np.mean(_np_log_sigmoid(real)) - np.mean(_np_log_sigmoid(-fake))
  np.testing.assert_allclose(jax.jit(losses.d_bce_loss)(real, fake), expected, rtol=1e-5)
  # Confident and right is cheap, confident and wrong is expensive.
  assert float(jax.jit(losses.d_bce_loss)(real * 0 + 10, fake * 0 - 10)) < 1e-3


def test_g_non_saturating_loss_matches_numpy():
  fake = np.random.default_rng(1).normal(scale=3.0, size=16).astype(np.float32)
  expected = -np.mean(_np_log_sigmoid(fake))
  np.testing.assert_allclose(jax.jit(losses.g_non_saturating_loss)(fake), expected, rtol=1e-5)


def test_feature_matching_loss():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(2, 5, 4, 4, 6)).astype(np.float32)
  fm = jax.jit(jax.value_and_grad(losses.feature_matching_loss, argnums=(0, 1)))

  loss, (g_real, g_fake) = fm(real, real)
  # Zero up to rounding: XLA may reduce the two (equal) arguments in different orders.
  assert abs(float(loss)) < 1e-12
  np.testing.assert_allclose(g_fake, 0.0, atol=1e-9)

  loss, (g_real, g_fake) = fm(real, fake)
  expected = np.mean(np.square(real.mean(axis=0) - fake.mean(axis=0)))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(loss) > 0
  # The real features are a fixed target: no gradient flows into them.
  np.testing.assert_array_equal(g_real, 0.0)
  assert np.abs(g_fake).max() > 0
  # Per-example shifts that cancel in the batch mean do not change the loss.
  shift = rng.normal(size=(5, 1, 1, 1)).astype(np.float32)
  shift -= shift.mean()
  np.testing.assert_allclose(fm(real, fake + shift)[0], loss, rtol=1e-4)
