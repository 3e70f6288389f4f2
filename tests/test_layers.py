"""The phase-split transposed convolution equals `lax.conv_transpose`, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from semgan_jax.models.layers import ConvTranspose, conv_transpose

CASES = [
  # (kernel, strides, padding, input H, W): SemGAN's 'SAME' stride-2 layers (ks 3..11, including
  # kernels that overhang a 2×2 input), SemanticGAN's pix2pixHD layer, and other strides.
  (4, (2, 2), 'SAME', 4, 5),
  (3, (2, 2), 'SAME', 5, 4),
  (6, (2, 2), 'SAME', 4, 4),
  (11, (2, 2), 'SAME', 2, 3),
  (3, (2, 2), ((1, 2), (1, 2)), 4, 6),
  (1, (3, 3), 'SAME', 2, 3),
  (5, (3, 1), 'SAME', 3, 4),
  (4, (1, 1), 'SAME', 5, 5),
  (3, (2, 2), ((0, 1), (2, 0)), 4, 4),  # asymmetric explicit padding
  (3, (2, 2), ((0, 0), (1, 1)), 4, 4),  # odd output height: falls back to lax.conv_transpose
]


@pytest.mark.parametrize('kernel_size,strides,padding,height,width', CASES)
def test_conv_transpose_matches_lax(kernel_size, strides, padding, height, width):
  rng = np.random.default_rng(kernel_size)
  x = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 5)), jnp.float32)
  ref_fn = lambda inputs, k: lax.conv_transpose(
    inputs, k, strides, padding, precision=lax.Precision.HIGHEST
  )
  new_fn = lambda inputs, k: conv_transpose(inputs, k, strides, padding)
  expected = ref_fn(x, kernel)
  cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
  got = new_fn(x, kernel)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-5 * kernel_size**2)
  # Gradients of <fn(x, kernel), cotangent> with respect to the kernel and the input.
  ref_grads = jax.grad(lambda k, i: jnp.sum(ref_fn(i, k) * cotangent), argnums=(0, 1))(kernel, x)
  new_grads = jax.grad(lambda k, i: jnp.sum(new_fn(i, k) * cotangent), argnums=(0, 1))(kernel, x)
  for g_new, g_ref in zip(new_grads, ref_grads, strict=True):
    np.testing.assert_allclose(g_new, g_ref, atol=2e-4 * kernel_size**2)


def test_module_is_a_drop_in_for_flax_conv_transpose():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 6)), jnp.float32)
  fields = dict(features=5, kernel_size=(4, 4), strides=(2, 2), padding='SAME')
  ours, flax_layer = ConvTranspose(**fields), nn.ConvTranspose(**fields)
  params = flax_layer.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), flax_layer.apply(params, x), atol=1e-5)
  no_bias = ConvTranspose(**fields, use_bias=False).init(jax.random.key(0), x)
  assert set(no_bias['params']) == {'kernel'}
  half = ConvTranspose(**fields, dtype=jnp.bfloat16).apply(params, x)
  assert half.dtype == jnp.bfloat16


def test_module_rejects_non_image_input():
  with pytest.raises(ValueError, match=r'\(B, H, W, C\)'):
    ConvTranspose(3, (3, 3)).init(jax.random.key(0), jnp.ones((4, 3)))
