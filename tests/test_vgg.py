"""Tests of the VGG19 feature network and the torch-free converter of torchvision's weights."""

import collections
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_zip
from flax import traverse_util
from numpy.lib.stride_tricks import sliding_window_view

from semgan_jax.models import vgg
from semgan_jax.weights import torch_archive, vgg19

# Non-square, and halved to odd sizes (36 → 18 → 9 → 4, 44 → 22 → 11 → 5), so a swapped axis or a
# pool that rounds up instead of down cannot pass.
SMALL_INPUT = (36, 44)


# --- Reference forward: plain NumPy in float64, NHWC. -------------------------------------------


def _conv3x3_relu(x, kernel, bias):
  """im2col 3×3 convolution with zero padding 1, bias, ReLU."""
  kernel = np.float64(kernel)
  cin, cout = kernel.shape[2:]
  windows = sliding_window_view(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), (3, 3), axis=(1, 2))
  b, h, w = windows.shape[:3]
  cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * h * w, 9 * cin)
  y = (cols @ kernel.reshape(9 * cin, cout)).reshape(b, h, w, cout) + np.float64(bias)
  return np.maximum(y, 0.0)


def _max_pool_2x2(x):
  """2×2 stride-2 max pool that drops an odd last row or column (torch's floor mode)."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _reference_features(params, images):
  x = (np.float64(images) + 1) / 2
  x = (x - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)
  out = []
  for block in range(1, 6):
    if block > 1:
      x = _max_pool_2x2(x)
    for index in range(1, {1: 2, 2: 2}.get(block, 4) + 1):
      name = f'conv{block}_{index}'
      if name not in dict(vgg.USED_CONVS):
        break
      x = _conv3x3_relu(x, params[name]['kernel'], params[name]['bias'])
      if index == 1:
        out.append(x)
  return out


@pytest.fixture(scope='module')
def random_params():
  """Random VGG19Features parameters, drawn in NumPy (quicker than `init` on XLA:CPU).

  He-scaled kernels keep the activations alive through 13 layers; biases are nonzero so that
  they are exercised.
  """
  rng = np.random.default_rng(0)
  params = {}
  for key, shape in vgg19.expected_shapes().items():
    layer, leaf = key.split('/')
    scale = np.sqrt(2 / np.prod(shape[:-1])) if leaf == 'kernel' else 0.1
    params.setdefault(layer, {})[leaf] = (scale * rng.standard_normal(shape)).astype(np.float32)
  return params


def test_forward_matches_numpy_reference(random_params):
  images = np.random.default_rng(1).uniform(-1, 1, (2, *SMALL_INPUT, 3)).astype(np.float32)
  apply = jax.jit(vgg.VGG19Features().apply)
  features = apply({'params': random_params}, images)
  reference = _reference_features(random_params, images)
  assert len(features) == len(reference) == 5
  want_shapes = [(36, 44, 64), (18, 22, 128), (9, 11, 256), (4, 5, 512), (2, 2, 512)]
  for i, (got, want, shape) in enumerate(zip(features, reference, want_shapes, strict=True)):
    assert got.shape == (2, *shape) and got.dtype == jnp.float32, i
    assert np.abs(want).max() > 0, i  # not a dead (all-zero) layer
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=i)

  low = jax.jit(vgg.VGG19Features(dtype=jnp.bfloat16).apply)({'params': random_params}, images)
  assert all(f.dtype == jnp.bfloat16 for f in low)
  np.testing.assert_allclose(
    np.float32(low[-1]), reference[-1], atol=0.1 * np.abs(reference[-1]).max()
  )


def test_imagenet_normalize():
  out = vgg.imagenet_normalize(jnp.array([[-1.0] * 3, [1.0] * 3]))
  mean, std = np.array(vgg.IMAGENET_MEAN), np.array(vgg.IMAGENET_STD)
  np.testing.assert_allclose(out, [-mean / std, (1 - mean) / std], rtol=1e-6)


def test_parameter_tree():
  shapes = vgg19.expected_shapes()
  assert len(shapes) == 26  # 13 convolutions up to conv5_1, kernel and bias each
  assert shapes['conv1_1/kernel'] == (3, 3, 3, 64)
  assert shapes['conv5_1/kernel'] == (3, 3, 512, 512) and 'conv5_2/kernel' not in shapes
  source = vgg19.expected_source_shapes()
  assert len(source) == 32 and source['features.34.weight'] == (512, 512, 3, 3)
  assert source['features.5.weight'] == (128, 64, 3, 3)  # conv2_1


# --- The converter. ------------------------------------------------------------------------------


def _torchvision_state_dict(seed=0) -> dict[str, np.ndarray]:
  """torchvision's VGG19 keys and feature shapes with random values; classifier shrunk (ignored)."""
  rng = np.random.default_rng(seed)
  state = {
    name: rng.standard_normal(shape, np.float32)
    for name, shape in vgg19.expected_source_shapes().items()
  }
  for i, shape in (
    (0, (6, 10)),
    (3, (6, 6)),
    (6, (4, 6)),
  ):  # really (4096, 25088), ... (1000, 4096)
    state[f'classifier.{i}.weight'] = rng.standard_normal(shape, np.float32)
    state[f'classifier.{i}.bias'] = rng.standard_normal(shape[:1], np.float32)
  return state


def _assert_converted(params, state):
  flat = traverse_util.flatten_dict(params, sep='/')
  assert flat.keys() == vgg19.expected_shapes().keys()
  for name, _ in vgg.USED_CONVS:
    index = vgg.TORCHVISION_INDICES[name]
    weight = state[f'features.{index}.weight']
    np.testing.assert_array_equal(flat[f'{name}/kernel'], weight.transpose(2, 3, 1, 0), name)
    np.testing.assert_array_equal(flat[f'{name}/bias'], state[f'features.{index}.bias'], name)
    assert flat[f'{name}/kernel'].dtype == np.float32


@pytest.fixture(scope='module')
def state_dict():
  return _torchvision_state_dict()


@pytest.mark.parametrize('kind', ['zip', 'legacy'])
def test_synthetic_checkpoint_converts_exactly(kind, state_dict, tmp_path):
  src = tmp_path / 'vgg19.pth'
  if kind == 'zip':
    torch_zip.write_zip(src, state_dict)
  else:  # torchvision's 2017 file: legacy format, tensors rebuilt with _rebuild_tensor
    torch_zip.write_legacy(src, state_dict)
  out = tmp_path / 'sub' / 'vgg19.npz'
  with pytest.warns(UserWarning, match='not the published'):
    assert vgg19.convert(src, out) == out
  assert [p.name for p in out.parent.iterdir()] == ['vgg19.npz']  # no temporary file left behind
  _assert_converted(vgg19.load_params(out), state_dict)


@pytest.mark.parametrize(
  'layout, rebuild, storage_module',
  [
    ('offsets', '_rebuild_tensor_v2', 'torch'),
    ('views', '_rebuild_tensor', 'torch.cuda'),
  ],
)
def test_legacy_reader_layouts(layout, rebuild, storage_module, tmp_path):
  rng = np.random.default_rng(2)
  state = {'a.weight': rng.standard_normal((2, 3, 3, 3)), 'b': rng.standard_normal(5)}
  src = tmp_path / 'small.pth'
  torch_zip.write_legacy(src, state, layout, rebuild, storage_module)
  assert isinstance(torch_archive.read_archive(src), collections.OrderedDict)  # as a zip's
  tensors = torch_archive.load_tensors(src)
  assert tensors.keys() == state.keys()
  for name, value in state.items():
    np.testing.assert_array_equal(tensors[name], np.float32(value), name)
  torch_zip.write_zip(src, state, layout='offsets')
  np.testing.assert_array_equal(torch_archive.load_tensors(src)['b'], np.float32(state['b']))


def test_legacy_reader_refusals(tmp_path):
  marker = tmp_path / 'pwned'

  class Evil:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  evil = tmp_path / 'evil.pth'
  torch_zip.write_legacy_archive(evil, {'w': Evil()}, {})
  with pytest.raises(
    torch_archive.UnsafeArchiveError, match=r'refused to load the global \w+\.system'
  ):
    torch_archive.load_tensors(evil)
  assert not marker.exists()

  truncated = tmp_path / 'truncated.pth'
  torch_zip.write_legacy(truncated, {'w': np.ones(10)})
  truncated.write_bytes(truncated.read_bytes()[:-4])
  with pytest.raises(torch_archive.TorchArchiveError, match='storage 0 is truncated'):
    torch_archive.load_tensors(truncated)

  other = tmp_path / 'other.pth'
  other.write_bytes(pickle.dumps({'a': 1}, protocol=2))
  with pytest.raises(torch_archive.TorchArchiveError, match='wrong magic number'):
    torch_archive.load_tensors(other)
  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(b'\x00not a pickle at all')
  with pytest.raises(torch_archive.TorchArchiveError, match='not a valid pickle'):
    torch_archive.load_tensors(garbage)
  with pytest.raises(FileNotFoundError, match='no PyTorch archive'):
    vgg19.convert(tmp_path / 'missing.pth', tmp_path / 'out.npz')

  # A storage claiming more elements than the file holds is refused before it is allocated.
  huge = tmp_path / 'huge.pth'
  torch_zip.write_legacy(huge, {'w': np.ones(10)})
  # The persistent id's element count, BININT1 10 before the view's None, becomes BININT 2**30.
  data = huge.read_bytes()
  assert data.count(b'K\nN') == 1
  huge.write_bytes(data.replace(b'K\nN', b'J\x00\x00\x00\x40N'))
  with pytest.raises(torch_archive.TorchArchiveError, match='larger than the file'):
    torch_archive.load_tensors(huge)


def test_wrong_architecture_is_refused(random_params, tmp_path):
  flat = traverse_util.flatten_dict(random_params, sep='/')
  missing = {k: v for k, v in flat.items() if k != 'conv4_3/bias'}
  np.savez(tmp_path / 'missing.npz', **missing)
  with pytest.raises(ValueError, match=r'missing.npz is .* wrong architecture.*conv4_3/bias is'):
    vgg19.load_params(tmp_path / 'missing.npz')

  reshaped = dict(flat, **{'conv2_1/kernel': np.zeros((3, 3, 64, 129), np.float32)})
  np.savez(tmp_path / 'reshaped.npz', **reshaped)
  with pytest.raises(ValueError, match=r'conv2_1/kernel has shape \(3, 3, 64, 129\), expected'):
    vgg19.load_params(tmp_path / 'reshaped.npz')

  extra = dict(flat, **{'conv5_2/kernel': np.zeros((3, 3, 512, 512), np.float32)})
  np.savez(tmp_path / 'extra.npz', **extra)
  with pytest.raises(ValueError, match='conv5_2/kernel is not a variable of VGG19Features'):
    vgg19.load_params(tmp_path / 'extra.npz')

  # Checkpoints of other networks: VGG16 lacks conv3_4 (features.16), VGG19-BN has BN tensors.
  small = {k: np.zeros(v, np.float32) for k, v in vgg19.expected_source_shapes().items()}
  vgg16_like = {k: v for k, v in small.items() if not k.startswith('features.16.')}
  torch_zip.write_zip(tmp_path / 'vgg16.pth', vgg16_like)
  with pytest.raises(ValueError, match=r'VGG19: features\.16\.weight is missing'):
    with pytest.warns(UserWarning):
      vgg19.convert(tmp_path / 'vgg16.pth', tmp_path / 'out.npz')
  bn_like = dict(small, **{'features.1.running_mean': np.zeros(64, np.float32)})
  torch_zip.write_zip(tmp_path / 'bn.pth', bn_like)
  with pytest.raises(ValueError, match=r'features\.1\.running_mean is not a variable of torch'):
    with pytest.warns(UserWarning):
      vgg19.convert(tmp_path / 'bn.pth', tmp_path / 'out.npz')
  assert not (tmp_path / 'out.npz').exists()


def test_missing_weights_and_cli(state_dict, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  default = tmp_path / 'cache' / 'semgan_jax' / 'weights' / 'vgg19.npz'
  assert vgg19.default_weights_path() == default

  for call in (vgg19.ensure_weights, lambda: vgg19.load_params(default)):
    with pytest.raises(FileNotFoundError) as error:
      call()
    message = str(error.value)
    assert f'no VGG19 weights at {default}' in message
    assert 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth' in message
    assert 'python -m semgan_jax.weights.vgg19 --src vgg19-dcbb9e9d.pth' in message
    assert '--out' not in message and 'never downloads' in message
  elsewhere = tmp_path / 'elsewhere.npz'
  with pytest.raises(FileNotFoundError, match=f'--src vgg19-dcbb9e9d.pth --out {elsewhere}'):
    vgg19.ensure_weights(elsewhere)

  src = tmp_path / 'vgg19.pth'
  torch_zip.write_zip(src, state_dict)
  with pytest.warns(UserWarning, match='not the published'):
    assert vgg19.main(['--src', str(src)]) == 0
  assert f'wrote 26 tensors from {src} to {default}' in capsys.readouterr().out
  assert vgg19.ensure_weights() == default
  with pytest.raises(SystemExit) as exit_info:
    vgg19.main(['--src', str(tmp_path / 'missing.pth')])
  assert exit_info.value.code == 1
  assert 'error: no PyTorch archive at' in capsys.readouterr().err
  _assert_converted(vgg19.load_params(vgg19.ensure_weights()), state_dict)
