"""conv2d's lowerings: values and both gradients equal XLA's convolution; Conv is nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from semgan_jax.models import conv

CASES = [
  # (input H, W, Cin, Cout, kernel, stride, padding)
  (9, 11, 5, 7, 3, 1, 'VALID'),
  (9, 11, 5, 7, 3, 2, ((1, 1), (1, 1))),  # G's downsampling
  (10, 12, 6, 4, 4, 2, ((2, 2), (2, 2))),  # PatchGAN's strided layers
  (7, 9, 6, 5, 4, 1, ((2, 2), (2, 2))),  # PatchGAN's stride-1 layer: output larger than input
  (8, 8, 3, 2, 7, 1, 'SAME'),
  (6, 10, 4, 3, 2, 1, ((0, 1), (0, 1))),  # a phase of the transposed convolution
  (5, 5, 8, 6, 1, 1, 'VALID'),  # Res2Block's 1×1
  (8, 9, 3, 4, 3, 2, 'SAME'),
  (6, 7, 2, 3, 3, 1, 1),
  (9, 10, 3, 4, 3, 1, ((-1, 2), (2, -1))),  # negative pads crop, as lax's
]


def _reference(x, kernel, strides, padding):
  return lax.conv_general_dilated(
    x,
    kernel,
    strides,
    padding if isinstance(padding, str) else conv._padding_pairs(padding, None, None, None),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision=lax.Precision.HIGHEST,
  )


@pytest.mark.parametrize('lowering', ['xla', 'im2col', 'kn2row', 'auto'])
@pytest.mark.parametrize('case', CASES, ids=str)
def test_values_and_gradients_equal_xla(case, lowering):
  h, w, cin, cout, k, s, padding = case
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, h, w, cin))
  kernel = jax.random.normal(keys[1], (k, k, cin, cout))
  want = _reference(x, kernel, (s, s), padding)
  weights = jax.random.normal(keys[2], want.shape)

  def loss(fn):
    return lambda x, kernel: jnp.sum(fn(x, kernel) * weights)

  ours = lambda x, kernel: conv.conv2d(  # noqa: E731
    x, kernel, (s, s), padding, lowering, precision=lax.Precision.HIGHEST
  )
  got = jax.jit(ours)(x, kernel)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  got_grads = jax.jit(jax.grad(loss(ours), (0, 1)))(x, kernel)
  want_grads = jax.grad(loss(lambda x, k: _reference(x, k, (s, s), padding)), (0, 1))(x, kernel)
  for g, r in zip(got_grads, want_grads, strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_auto_picks_per_shape_on_cpu_and_xla_elsewhere():
  pairs = [(2, 2), (2, 2)]
  trunk = ((1, 10, 18, 1024), (3, 3, 1024, 1024), (1, 1), [(0, 0), (0, 0)])
  patchgan_s1 = ((1, 33, 65, 256), (4, 4, 256, 512), (1, 1), pairs)
  head = ((1, 134, 262, 64), (7, 7, 64, 3), (1, 1), [(0, 0), (0, 0)])
  vgg_small = ((1, 128, 256, 64), (3, 3, 64, 64), (1, 1), [(1, 1), (1, 1)])
  vgg_large = ((1, 512, 1024, 64), (3, 3, 64, 64), (1, 1), [(1, 1), (1, 1)])
  strided = ((1, 256, 512, 39), (4, 4, 39, 64), (2, 2), pairs)
  stem = ((1, 134, 262, 36), (7, 7, 36, 64), (1, 1), [(0, 0), (0, 0)])
  picks = {
    'trunk': (trunk, 'im2col'),
    'patchgan_s1': (patchgan_s1, 'im2col'),
    'head': (head, 'kn2row'),
    'vgg_small': (vgg_small, 'xla'),  # 3×3 taps: kn2row's sum of slices costs more
    'vgg_large': (vgg_large, 'xla'),
    'phase_2x2': (((1, 64, 128, 128), (2, 2, 128, 64), (1, 1), [(0, 1), (0, 1)]), 'kn2row'),
    'semgan_small_map': (
      ((32, 16, 16, 128), (11, 11, 128, 256), (2, 2), [(5, 5), (5, 5)]),
      'im2col',
    ),
    'strided': (strided, 'xla'),
    'stem': (stem, 'xla'),
  }
  for name, (args, want) in picks.items():
    assert conv.choose_lowering(*args, backend='cpu') == want, name
    assert conv.choose_lowering(*args, backend='gpu') == 'xla', name
    assert conv.choose_lowering(*args, backend='tpu') == 'xla', name


def test_conv_module_is_flax_conv():
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
  for fields in (dict(strides=(2, 2), padding=((1, 1), (1, 1))), dict(use_bias=False)):
    ours = conv.Conv(4, (3, 3), **fields)
    flax_conv = nn.Conv(4, (3, 3), **fields)
    variables = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables
    )
    np.testing.assert_allclose(
      ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-5, atol=1e-5
    )


def test_bad_lowering_and_shapes_are_named():
  x, kernel = jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2))
  with pytest.raises(ValueError, match="lowering='fast'"):
    conv.conv2d(x, kernel, lowering='fast')
  with pytest.raises(ValueError, match=r'input \(1, 4, 4, 3\).*kernel \(3, 3, 2, 2\)'):
    conv.conv2d(x, jnp.zeros((3, 3, 2, 2)))
