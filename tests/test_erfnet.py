"""Tests of ERFNet and the torch-free converter of erfnet_pytorch's Cityscapes weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_zip
from flax import traverse_util

from semgan_jax.models import ERFNet
from semgan_jax.models.erfnet import NUM_CLASSES, NonBottleneck1D
from semgan_jax.weights import erfnet

# Non-square, so a swapped axis cannot pass; the 4×8 map at 1/8 resolution still reaches the taps
# of the dilation-2 and -4 convolutions (and of dilation 8 along W).
IMAGES_SHAPE = (2, 32, 64, 3)

# erfnet_pytorch's network, written here from its `train/erfnet.py` independently of the library:
# ('down', in, out) DownsamplerBlock, ('nb', channels, dilation) non_bottleneck_1d,
# ('up', in, out) UpsamplerBlock. Both the synthetic state dict and the reference forward use it.
INITIAL_BLOCK = ('down', 3, 16)
ENCODER_LAYERS = (
  ('down', 16, 64),
  *[('nb', 64, 1)] * 5,
  ('down', 64, 128),
  *[('nb', 128, d) for d in (2, 4, 8, 16)] * 2,
)
DECODER_LAYERS = (
  ('up', 128, 64),
  ('nb', 64, 1),
  ('nb', 64, 1),
  ('up', 64, 16),
  ('nb', 16, 1),
  ('nb', 16, 1),
)
BN_EPS = 1e-3


# --- A synthetic erfnet_pytorch checkpoint. ------------------------------------------------------


def _block_shapes(name, kind, a, b) -> dict[str, tuple[int, ...]]:
  """The state-dict tensors of one block, in torch's layouts, registration order."""
  bn = lambda bn_name, c: (
    {f'{name}.{bn_name}.{leaf}': (c,) for leaf in ('weight', 'bias', 'running_mean', 'running_var')}
    | {f'{name}.{bn_name}.num_batches_tracked': ()}
  )
  if kind == 'down':  # a → b channels: the conv makes b - a, the max pool passes a through
    return {f'{name}.conv.weight': (b - a, a, 3, 3), f'{name}.conv.bias': (b - a,)} | bn('bn', b)
  if kind == 'up':  # ConvTranspose2d weights are (in, out, kh, kw)
    return {f'{name}.conv.weight': (a, b, 3, 3), f'{name}.conv.bias': (b,)} | bn('bn', b)
  shapes = {}
  for i in (1, 2):
    shapes[f'{name}.conv3x1_{i}.weight'] = (a, a, 3, 1)
    shapes[f'{name}.conv3x1_{i}.bias'] = (a,)
    shapes[f'{name}.conv1x3_{i}.weight'] = (a, a, 1, 3)
    shapes[f'{name}.conv1x3_{i}.bias'] = (a,)
    shapes |= bn(f'bn{i}', a)
  return shapes


def _published_shapes() -> dict[str, tuple[int, ...]]:
  """Every tensor of erfnet_pytorch's 20-class `Net` state dict, without `module.`."""
  shapes = _block_shapes('encoder.initial_block', *INITIAL_BLOCK)
  for i, layer in enumerate(ENCODER_LAYERS):
    shapes |= _block_shapes(f'encoder.layers.{i}', *layer)
  # The encoder's classifier, only used when erfnet_pytorch trains the encoder alone.
  shapes |= {'encoder.output_conv.weight': (NUM_CLASSES, 128, 1, 1)}
  shapes |= {'encoder.output_conv.bias': (NUM_CLASSES,)}
  for i, layer in enumerate(DECODER_LAYERS):
    shapes |= _block_shapes(f'decoder.layers.{i}', *layer)
  shapes |= {'decoder.output_conv.weight': (16, NUM_CLASSES, 2, 2)}
  shapes |= {'decoder.output_conv.bias': (NUM_CLASSES,)}
  return shapes


def _random_state_dict(seed=0) -> dict[str, np.ndarray]:
  """The published keys and shapes with random values that keep activations of order 1.

  Kernels are N(0, 1/prod(shape[1:])), a convolution's fan-in; BatchNorm running statistics and
  affine terms are random too, so a converter that mixed up BatchNorm tensors changes the output.
  """
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in _published_shapes().items():
    leaf = name.rsplit('.', 1)[1]
    if leaf == 'num_batches_tracked':
      value = np.full(shape, 1000.0)
    elif leaf == 'weight' and len(shape) == 4:
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    elif leaf in ('weight', 'running_var'):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # biases, running means
      value = 0.1 * rng.standard_normal(shape)
    state[name] = value.astype(np.float32)
  return state


@pytest.fixture(scope='module')
def state_dict():
  return _random_state_dict()


@pytest.fixture(scope='module')
def converted(state_dict, tmp_path_factory):
  """The random state dict saved as erfnet_pytorch's file (legacy format, from DataParallel on a
  GPU, torch < 0.4: no step counters), converted, and loaded."""
  root = tmp_path_factory.mktemp('erfnet')
  published = {
    f'module.{name}': value
    for name, value in state_dict.items()
    if not name.endswith('num_batches_tracked')
  }
  torch_zip.write_legacy(
    root / 'erfnet_pretrained.pth',
    published,
    rebuild='_rebuild_tensor',
    storage_module='torch.cuda',
  )
  return erfnet.load_params(erfnet.convert(root / 'erfnet_pretrained.pth', root / 'erfnet.npz'))


@pytest.fixture(scope='module')
def images():
  return np.random.default_rng(1).uniform(0, 1, IMAGES_SHAPE).astype(np.float32)


@pytest.fixture(scope='module')
def logits(converted, images):
  """Eval-mode logits of the converted model, computed twice by one compiled program."""
  apply = jax.jit(ERFNet().apply)
  return apply(converted, images), apply(converted, images)


# --- Reference forward: NumPy float64, NCHW, torch layouts and semantics. -----------------------


def _conv2d(x, weight, bias, stride=1, padding=(0, 0), dilation=(1, 1)):
  """torch's conv2d: cross-correlation of the zero-padded input, one kernel tap at a time."""
  (kh, kw), (ph, pw), (dh, dw) = weight.shape[2:], padding, dilation
  x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
  h = (x.shape[2] - dh * (kh - 1) - 1) // stride + 1
  w = (x.shape[3] - dw * (kw - 1) - 1) // stride + 1
  y = np.zeros((x.shape[0], weight.shape[0], h, w))
  for i in range(kh):
    for j in range(kw):
      rows = slice(i * dh, i * dh + stride * (h - 1) + 1, stride)
      cols = slice(j * dw, j * dw + stride * (w - 1) + 1, stride)
      y += np.einsum('nchw,oc->nohw', x[:, :, rows, cols], weight[:, :, i, j])
  return y + bias[:, None, None]


def _max_pool_2x2(x):
  n, c, h, w = x.shape
  return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _conv_transpose2d(x, weight, bias, stride, padding, output_padding):
  """torch's ConvTranspose2d: input pixel (h, w) adds itself × kernel at (stride·h, stride·w) of a
  full map; the output is that map less `padding` at the start and with `output_padding` extra
  at the end. `weight` is (in, out, kh, kw)."""
  n, _, h, w = x.shape
  kh, kw = weight.shape[2:]
  out_h = (h - 1) * stride - 2 * padding + kh + output_padding
  out_w = (w - 1) * stride - 2 * padding + kw + output_padding
  full_h = max((h - 1) * stride + kh, padding + out_h)
  full_w = max((w - 1) * stride + kw, padding + out_w)
  full = np.zeros((n, weight.shape[1], full_h, full_w))
  for i in range(kh):
    for j in range(kw):
      rows = slice(i, i + stride * (h - 1) + 1, stride)
      cols = slice(j, j + stride * (w - 1) + 1, stride)
      full[:, :, rows, cols] += np.einsum('nchw,co->nohw', x, weight[:, :, i, j])
  return full[:, :, padding : padding + out_h, padding : padding + out_w] + bias[:, None, None]


def _reference_logits(state, images):
  """erfnet_pytorch's `Net` in eval mode, from the torch-layout state dict (no conversion)."""
  p = lambda name: np.float64(state[name])
  relu = lambda x: np.maximum(x, 0.0)

  def bn(x, name):
    scale = p(f'{name}.weight') / np.sqrt(p(f'{name}.running_var') + BN_EPS)
    shift = p(f'{name}.bias') - p(f'{name}.running_mean') * scale
    return x * scale[:, None, None] + shift[:, None, None]

  def block(x, name, kind, a, b):
    if kind == 'down':
      conv = _conv2d(x, p(f'{name}.conv.weight'), p(f'{name}.conv.bias'), 2, (1, 1))
      return relu(bn(np.concatenate([conv, _max_pool_2x2(x)], axis=1), f'{name}.bn'))
    if kind == 'up':
      y = _conv_transpose2d(x, p(f'{name}.conv.weight'), p(f'{name}.conv.bias'), 2, 1, 1)
      return relu(bn(y, f'{name}.bn'))
    conv = lambda y, conv_name, padding, dilation: _conv2d(
      y, p(f'{name}.{conv_name}.weight'), p(f'{name}.{conv_name}.bias'), 1, padding, dilation
    )
    y = relu(conv(x, 'conv3x1_1', (1, 0), (1, 1)))
    y = relu(bn(conv(y, 'conv1x3_1', (0, 1), (1, 1)), f'{name}.bn1'))
    y = relu(conv(y, 'conv3x1_2', (b, 0), (b, 1)))
    y = bn(conv(y, 'conv1x3_2', (0, b), (1, b)), f'{name}.bn2')
    return relu(y + x)  # eval mode: Dropout2d is the identity

  x = np.float64(images).transpose(0, 3, 1, 2)
  x = block(x, 'encoder.initial_block', *INITIAL_BLOCK)
  for i, layer in enumerate(ENCODER_LAYERS):
    x = block(x, f'encoder.layers.{i}', *layer)
  for i, layer in enumerate(DECODER_LAYERS):
    x = block(x, f'decoder.layers.{i}', *layer)
  x = _conv_transpose2d(x, p('decoder.output_conv.weight'), p('decoder.output_conv.bias'), 2, 0, 0)
  return x.transpose(0, 2, 3, 1)


@pytest.mark.parametrize('kernel, padding, output_padding', [(3, 1, 1), (2, 0, 0)])
def test_reference_conv_transpose_is_the_adjoint_of_conv(kernel, padding, output_padding):
  # torch defines ConvTranspose2d as the gradient of Conv2d with respect to its input, with the
  # same weight tensor: <conv(y), x> = <conv_transpose(x), y>; output_padding picks the size 2H.
  rng = np.random.default_rng(3)
  weight = rng.standard_normal((3, 2, kernel, kernel))  # Conv2d 2 → 3 channels, its adjoint 3 → 2
  x, y = rng.standard_normal((1, 3, 4, 5)), rng.standard_normal((1, 2, 8, 10))
  conv = _conv2d(y, weight, np.zeros(3), 2, (padding, padding))
  transposed = _conv_transpose2d(x, weight, np.zeros(2), 2, padding, output_padding)
  assert conv.shape == x.shape and transposed.shape == y.shape
  np.testing.assert_allclose(np.sum(conv * x), np.sum(transposed * y), rtol=1e-12)


# --- The model. ----------------------------------------------------------------------------------


def test_logits_shape_dtype_and_eval_determinism(converted, images, logits):
  first, second = logits
  assert first.shape == (*IMAGES_SHAPE[:3], NUM_CLASSES) and first.dtype == jnp.float32
  assert np.all(np.isfinite(first))
  np.testing.assert_array_equal(first, second)
  low = jax.eval_shape(ERFNet(dtype=jnp.bfloat16).apply, converted, images)
  assert low.dtype == jnp.float32  # logits stay float32 whatever the computation dtype


def test_forward_matches_torch_semantics_reference(state_dict, images, logits):
  want = _reference_logits(state_dict, images)
  assert 0.1 < np.abs(want).max() < 100  # activations neither dead nor exploding
  assert np.abs(want[0] - want[1]).max() > 0.1 * np.abs(want).max()
  np.testing.assert_allclose(logits[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_train_mode_uses_batch_statistics_and_dropout(state_dict, converted, images):
  apply = jax.jit(functools.partial(ERFNet().apply, train=True, mutable=['batch_stats']))
  key = lambda seed: {'dropout': jax.random.key(seed, impl='rbg')}
  logits, updates = apply(converted, images, rngs=key(0))
  other, _ = apply(converted, images, rngs=key(1))
  assert logits.shape == (*IMAGES_SHAPE[:3], NUM_CLASSES) and np.all(np.isfinite(logits))
  assert np.abs(logits - other).max() > 0  # the encoder's dropout draws from the rng

  # The first BatchNorm's running statistics move 10% towards the batch's, as torch's momentum
  # 0.1 (the variance is the biased one; torch would use the unbiased, 1/2047 larger here).
  name = 'encoder.initial_block'
  x = np.float64(images).transpose(0, 3, 1, 2)
  conv = _conv2d(x, state_dict[f'{name}.conv.weight'], state_dict[f'{name}.conv.bias'], 2, (1, 1))
  pre_norm = np.concatenate([conv, _max_pool_2x2(x)], axis=1)
  stats = updates['batch_stats']['encoder']['initial_block']['bn']
  for ours, theirs, batch in (
    ('mean', 'running_mean', pre_norm.mean(axis=(0, 2, 3))),
    ('var', 'running_var', pre_norm.var(axis=(0, 2, 3))),
  ):
    want = 0.9 * state_dict[f'{name}.bn.{theirs}'] + 0.1 * batch
    np.testing.assert_allclose(stats[ours], want, rtol=1e-5, atol=1e-6, err_msg=ours)


def test_dropout_drops_whole_feature_maps():
  # Zero kernels and a BatchNorm bias of 1 make the block's residual branch 1 everywhere; torch's
  # Dropout2d zeroes whole (sample, channel) maps and doubles the rest at rate 0.5.
  block = NonBottleneck1D(0.5, 1)
  x = jnp.zeros((4, 8, 8, 16))
  variables = jax.eval_shape(functools.partial(block.init, train=False), jax.random.key(0), x)
  params, batch_stats = (
    jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), variables[c])
    for c in ('params', 'batch_stats')
  )
  params['bn2']['bias'] = jnp.ones(16)
  out, _ = block.apply(
    {'params': params, 'batch_stats': batch_stats},
    x,
    train=True,
    rngs={'dropout': jax.random.key(0, impl='rbg')},
    mutable=['batch_stats'],
  )
  maps = np.asarray(out).transpose(0, 3, 1, 2).reshape(4 * 16, 64)
  assert np.all(maps == maps[:, :1])  # constant over each map
  assert set(np.unique(maps).tolist()) == {0.0, 2.0}


@pytest.mark.parametrize('shape', [(1, 32, 60, 3), (1, 36, 64, 3), (1, 32, 64, 1), (32, 64, 3)])
def test_rejects_unsupported_input_shapes(shape):
  image = jax.ShapeDtypeStruct(shape, jnp.float32)
  match = 'divisible by 8' if shape[-1] == 3 and len(shape) == 4 else r'\(B, H, W, 3\)'
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(ERFNet().init, jax.random.key(0), image)


# --- The converter. ------------------------------------------------------------------------------


def test_parameter_tree(converted):
  assert converted.keys() == {'params', 'batch_stats'}
  params = converted['params']
  assert params['encoder'].keys() == {'initial_block'} | {f'layers_{i}' for i in range(15)}
  assert params['decoder'].keys() == {'output_conv'} | {f'layers_{i}' for i in range(6)}
  # erfnet_pytorch's weights and biases (not the BatchNorm buffers), but the encoder's classifier.
  want = sum(
    np.prod(shape)
    for name, shape in _published_shapes().items()
    if name.endswith(('.weight', '.bias')) and not name.startswith('encoder.output_conv.')
  )
  assert sum(v.size for v in jax.tree.leaves(params)) == want == 2_064_256
  assert erfnet.source_name('batch_stats/encoder/layers_7/bn2/var') == (
    'encoder.layers.7.bn2.running_var'
  )


def test_zip_without_prefix_converts_like_the_legacy_file(state_dict, converted, tmp_path):
  # A state dict re-saved by torch >= 1.6 from the bare model: zip, no `module.`, step counters.
  torch_zip.write_zip(tmp_path / 'resaved.pth', state_dict)
  out = erfnet.convert(tmp_path / 'resaved.pth', tmp_path / 'sub' / 'erfnet.npz')
  assert [p.name for p in out.parent.iterdir()] == ['erfnet.npz']  # no temporary file left behind
  got = traverse_util.flatten_dict(erfnet.load_params(out), sep='/')
  want = traverse_util.flatten_dict(converted, sep='/')
  assert got.keys() == want.keys() == erfnet.expected_shapes().keys()
  for key, value in want.items():
    assert got[key].dtype == np.float32
    np.testing.assert_array_equal(got[key], value, key)


def test_converter_refuses_other_checkpoints(state_dict, tmp_path):
  out = tmp_path / 'out.npz'
  nineteen = dict(state_dict)
  nineteen['decoder.output_conv.weight'] = nineteen['decoder.output_conv.weight'][:, :19]
  torch_zip.write_zip(tmp_path / 'nineteen.pth', nineteen)
  with pytest.raises(
    ValueError, match=r'decoder\.output_conv\.weight has shape \(16, 19, 2, 2\), expected \(16, 20'
  ):
    erfnet.convert(tmp_path / 'nineteen.pth', out)

  missing = {k: v for k, v in state_dict.items() if k != 'encoder.layers.9.bn2.running_var'}
  torch_zip.write_zip(tmp_path / 'missing.pth', missing)
  with pytest.raises(ValueError, match=r'encoder\.layers\.9\.bn2\.running_var is missing'):
    erfnet.convert(tmp_path / 'missing.pth', out)

  extra = dict(state_dict, **{'decoder.layers.6.conv.weight': np.zeros((16, 16, 3, 3))})
  torch_zip.write_zip(tmp_path / 'extra.pth', extra)
  with pytest.raises(ValueError, match=r'decoder\.layers\.6\.conv\.weight is not a variable'):
    erfnet.convert(tmp_path / 'extra.pth', out)

  both = dict(state_dict, **{'module.decoder.output_conv.bias': np.zeros(NUM_CLASSES)})
  torch_zip.write_zip(tmp_path / 'both.pth', both)
  with pytest.raises(ValueError, match=r'decoder\.output_conv\.bias both with and without'):
    erfnet.convert(tmp_path / 'both.pth', out)
  assert not out.exists()


def test_load_params_refuses_wrong_architecture(converted, tmp_path):
  flat = traverse_util.flatten_dict(converted, sep='/')
  missing = {k: v for k, v in flat.items() if k != 'batch_stats/decoder/layers_0/bn/var'}
  np.savez(tmp_path / 'missing.npz', **missing)
  with pytest.raises(
    ValueError,
    match=r'missing.npz is .* wrong architecture.*batch_stats/decoder/layers_0/bn/var is missing '
    r'\(expected shape \(64,\)\)',
  ):
    erfnet.load_params(tmp_path / 'missing.npz')

  kernel = 'params/decoder/output_conv/kernel'
  reshaped = dict(flat, **{kernel: np.zeros((2, 2, 16, 19), np.float32)})
  np.savez(tmp_path / 'reshaped.npz', **reshaped)
  with pytest.raises(ValueError, match=f'{kernel} has shape \\(2, 2, 16, 19\\), expected'):
    erfnet.load_params(tmp_path / 'reshaped.npz')


def test_missing_weights_and_cli(state_dict, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  default = tmp_path / 'cache' / 'semgan_jax' / 'weights' / 'erfnet_cityscapes.npz'
  assert erfnet.default_weights_path() == default

  for call in (erfnet.ensure_weights, lambda: erfnet.load_params(default)):
    with pytest.raises(FileNotFoundError) as error:
      call()
    message = str(error.value)
    assert f'no ERFNet weights at {default}' in message
    assert (
      'https://github.com/Eromera/erfnet_pytorch/tree/master/trained_models/erfnet_pretrained.pth'
    ) in message
    assert 'python -m semgan_jax.weights.erfnet --src erfnet_pretrained.pth' in message
    assert '--out' not in message and 'never downloads' in message
  elsewhere = tmp_path / 'elsewhere.npz'
  with pytest.raises(FileNotFoundError, match=f'--src erfnet_pretrained.pth --out {elsewhere}'):
    erfnet.ensure_weights(elsewhere)

  src = tmp_path / 'erfnet_pretrained.pth'
  torch_zip.write_zip(src, {f'module.{k}': v for k, v in state_dict.items()})
  assert erfnet.main(['--src', str(src)]) == 0
  assert f'wrote 304 tensors from {src} to {default}' in capsys.readouterr().out
  assert erfnet.ensure_weights() == default
  with pytest.raises(SystemExit) as exit_info:
    erfnet.main(['--src', str(tmp_path / 'missing.pth')])
  assert exit_info.value.code == 1
  assert 'error: no PyTorch archive at' in capsys.readouterr().err


def test_remat_recomputes_the_same_gradients(images):
  """ERFNet(remat=True): the same parameter tree and, in both modes, the same gradients."""
  x = jnp.asarray(images[:1, :32, :64])
  plain, remat = ERFNet(num_classes=4), ERFNet(num_classes=4, remat=True)
  variables = plain.init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(remat.init(jax.random.key(0), x))

  def loss(module, train):
    def fn(params):
      logits, _ = module.apply(
        {**variables, 'params': params},
        x,
        train=train,
        rngs={'dropout': jax.random.key(1)},
        mutable=['batch_stats'],
      )
      return jnp.sum(logits**2)

    return jax.jit(jax.grad(fn))

  for train in (False, True):
    want = loss(plain, train)(variables['params'])
    got = loss(remat, train)(variables['params'])
    # Rounding is judged against the largest gradient: a bias before a BatchNorm in train mode
    # has a zero gradient up to rounding noise, which another program's fusion changes freely.
    scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(want))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale)
