"""The weight-file protocol, for every published file: format, architecture and finite checks."""

import pickle

import numpy as np
import pytest

from semgan_jax.weights import erfnet, fid_inception, npz_io, published, vgg19

WEIGHT_FILES = {w.WEIGHTS.name: w.WEIGHTS for w in (erfnet, fid_inception, vgg19)}


@pytest.fixture(params=sorted(WEIGHT_FILES))
def weights(request):
  return WEIGHT_FILES[request.param]


def _zeros(weights) -> dict[str, np.ndarray]:
  return {key: np.zeros(shape, np.float32) for key, shape in weights.expected_shapes().items()}


def test_a_well_formed_file_loads_nested(weights, tmp_path):
  path = npz_io.write_npz_atomically(tmp_path / 'w.npz', _zeros(weights))
  tree = weights.load(path)
  key = next(iter(weights.expected_shapes()))
  node = tree
  for part in key.split('/'):
    node = node[part]
  assert node.dtype == np.float32 and node.shape == weights.expected_shapes()[key]


@pytest.mark.parametrize(
  'content',
  [b'this is not a weights file\n', pickle.dumps({'a': 1}), b''],
  ids=['text', 'pickle', 'empty'],
)
def test_a_file_that_is_no_npz_is_one_clear_error(weights, tmp_path, content):
  path = tmp_path / 'garbage.npz'
  path.write_bytes(content)
  with pytest.raises(ValueError, match='garbage.npz is not an .npz archive') as error:
    weights.load(path)
  assert f'python -m {weights.module}' in str(error.value)
  assert 'allow_pickle' not in str(error.value)


def test_an_npz_of_python_objects_is_refused_without_suggesting_pickle(weights, tmp_path):
  path = tmp_path / 'objects.npz'
  np.savez(path, **{key: np.array([{'x': 1}], dtype=object) for key in weights.expected_shapes()})
  with pytest.raises(ValueError, match='objects.npz is not a readable .npz.*Python objects') as e:
    weights.load(path)
  assert 'allow_pickle' not in str(e.value)


def test_a_truncated_npz_is_one_clear_error(weights, tmp_path):
  path = npz_io.write_npz_atomically(tmp_path / 'w.npz', _zeros(weights))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match='w.npz is not'):
    weights.load(path)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_values_are_refused(weights, tmp_path, value):
  arrays = _zeros(weights)
  key = sorted(arrays)[-1]
  arrays[key] = np.full_like(arrays[key], value)
  path = npz_io.write_npz_atomically(tmp_path / 'nan.npz', arrays)
  with pytest.raises(ValueError, match=f'nan.npz: {key} holds {arrays[key].size} NaN or inf'):
    weights.load(path)


def test_the_wrong_architecture_names_the_file_key_and_producer(weights, tmp_path):
  arrays = _zeros(weights)
  key = sorted(arrays)[0]
  arrays[key] = np.zeros((*arrays[key].shape, 2), np.float32)
  path = npz_io.write_npz_atomically(tmp_path / 'other.npz', arrays)
  with pytest.raises(
    ValueError, match=f'other.npz is a weights file of the wrong arch.*{key}'
  ) as e:
    weights.load(path)
  assert f'python -m {weights.module}' in str(e.value)


def test_the_segmenter_export_is_named_among_erfnet_producers(tmp_path):
  arrays = _zeros(erfnet.WEIGHTS)
  arrays.pop(sorted(arrays)[0])
  path = npz_io.write_npz_atomically(tmp_path / 'erfnet_streets.npz', arrays)
  with pytest.raises(ValueError, match="exported by a segmenter run.*task='segmenter'"):
    erfnet.load_params(path)


def test_missing_file_says_how_to_make_it(weights, tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  assert weights.default_path() == tmp_path / 'cache' / 'semgan_jax' / 'weights' / (
    weights.cache_name
  )
  elsewhere = tmp_path / 'elsewhere.npz'
  with pytest.raises(FileNotFoundError, match=f'no {weights.name} weights at .*elsewhere.npz'):
    weights.load(elsewhere)
  assert not elsewhere.exists() and not (tmp_path / 'cache').exists()


def test_the_digest_is_checked_with_the_published_algorithm(tmp_path):
  src = tmp_path / 'file.bin'
  src.write_bytes(b'abc')
  # SHA-1 and SHA-256 of b'abc' (FIPS 180 test vectors).
  assert published.file_digest(src, 'sha1') == 'a9993e364706816aba3e25717850c26c9cd0d89d'
  assert published.file_digest(src, 'sha256').startswith('ba7816bf8f01cfea')
