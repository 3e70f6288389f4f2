"""Tests of the colored-shapes data set and the grain input pipeline."""

import itertools
import pathlib
import sys

import jax
import numpy as np
import pytest

from semgan_jax import data
from semgan_jax.data import colored_shapes, pipeline

GRID = data.IMAGE_SIZE - data.SQUARE_SIZE


@pytest.fixture(scope='module')
def shapes():
  return data.render_colored_shapes()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def source(data_dir):
  return data.load_source('colored_shapes', data_dir)


def _disk(center):
  """Independent rasterization of one radius-10 disk, pixel by pixel."""
  cy, cx = (float(c) for c in center)
  disk = np.zeros((data.IMAGE_SIZE, data.IMAGE_SIZE), dtype=bool)
  for y, x in itertools.product(range(data.IMAGE_SIZE), repeat=2):
    disk[y, x] = (y + 0.5 - cy) ** 2 + (x + 0.5 - cx) ** 2 <= data.CIRCLE_RADIUS**2
  return disk


class _IndexSource:
  """In-memory source whose label map spells the element's index in binary (ids 0 and 1)."""

  def __init__(self, size):
    self._size = size

  def __len__(self):
    return self._size

  def __getitem__(self, index):
    bits = (index >> np.arange(16)) & 1
    return {'label': bits.reshape(4, 4).astype(np.uint8)}


def _decode_indices(labels):
  return (labels.reshape(len(labels), 16) << np.arange(16)).sum(axis=1).tolist()


def _label_keys(labels):
  return [label.astype(np.uint8).tobytes() for label in labels]


# --- The rendered data set. -------------------------------------------------------------------


def test_shapes_dtypes(shapes):
  n = data.NUM_EXAMPLES
  assert n == 2916
  assert shapes['label'].shape == (n, 64, 64) and shapes['label'].dtype == np.uint8
  assert shapes['square_yx'].shape == (n, 2) and shapes['square_yx'].dtype == np.int32
  assert shapes['circle_center'].shape == (n, 2) and shapes['circle_center'].dtype == np.float32
  assert shapes['rect_box'].shape == (n, 4) and shapes['rect_box'].dtype == np.int32


def test_classes(shapes):
  assert data.CLASS_NAMES == ('background', 'circle', 'rectangle', 'square')
  assert set(np.unique(shapes['label']).tolist()) == {0, 1, 2, 3}
  np.testing.assert_array_equal(data.PALETTE, [[0, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 0]])
  assert data.PALETTE.dtype == np.uint8


def test_square_positions_cover_grid_once(shapes):
  yx = shapes['square_yx']
  index = np.arange(data.NUM_EXAMPLES)
  np.testing.assert_array_equal(yx, np.stack([index // GRID, index % GRID], axis=1))
  assert len({tuple(p) for p in yx.tolist()}) == GRID * GRID


def test_square_is_10x10_under_the_circle(shapes):
  label = shapes['label']
  for i in range(0, data.NUM_EXAMPLES, 37):
    y, x = shapes['square_yx'][i]
    box = np.zeros_like(label[i], dtype=bool)
    box[y : y + 10, x : x + 10] = True
    is_square = label[i] == colored_shapes.SQUARE
    assert not (is_square & ~box).any(), i
    covered = (box & _disk(shapes['circle_center'][i])).sum()
    assert is_square.sum() == 100 - covered, i


def test_circle(shapes):
  label = shapes['label']
  counts = (label == colored_shapes.CIRCLE).sum(axis=(1, 2))
  area = np.pi * data.CIRCLE_RADIUS**2
  assert (np.abs(counts - area) <= 0.05 * area).all(), (counts.min(), counts.max())
  centers = shapes['circle_center']
  assert (centers >= 10).all() and (centers <= 54).all()
  for i in range(0, data.NUM_EXAMPLES, 211):
    np.testing.assert_array_equal(label[i] == colored_shapes.CIRCLE, _disk(centers[i]))


def test_rectangles(shapes):
  y0, x0, h, w = shapes['rect_box'].T
  assert (h != w).all()
  assert (h >= 6).all() and (h <= 30).all() and (w >= 6).all() and (w <= 30).all()
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + h <= 64).all() and (x0 + w <= 64).all()
  label = shapes['label']
  for i in range(0, data.NUM_EXAMPLES, 53):
    box = np.zeros_like(label[i], dtype=bool)
    box[y0[i] : y0[i] + h[i], x0[i] : x0[i] + w[i]] = True
    is_rect = label[i] == colored_shapes.RECTANGLE
    assert not (is_rect & ~box).any(), i
    # Everything of the box not painted over by the square or the circle is rectangle.
    assert ((label[i] == colored_shapes.BACKGROUND) & box).sum() == 0, i


def test_classes_per_image(shapes):
  present = np.stack([(shapes['label'] == c).any(axis=(1, 2)) for c in range(4)], axis=1)
  assert present[:, :2].all()  # Background and circle are in every image.
  # Only the circle can hide the rectangle or the square, and it rarely covers either whole.
  assert present[:, 2:].mean(axis=0).min() > 0.95


def test_determinism(shapes):
  again = data.render_colored_shapes(seed=data.DEFAULT_SEED)
  for key in shapes:
    np.testing.assert_array_equal(again[key], shapes[key])
  other = data.render_colored_shapes(seed=1)
  np.testing.assert_array_equal(other['square_yx'], shapes['square_yx'])
  assert not np.array_equal(other['rect_box'], shapes['rect_box'])
  assert not np.array_equal(other['circle_center'], shapes['circle_center'])
  assert not np.array_equal(other['label'], shapes['label'])


def test_render_subset(shapes):
  subset = data.render_colored_shapes(num_examples=60)
  np.testing.assert_array_equal(subset['square_yx'], shapes['square_yx'][:60])
  with pytest.raises(ValueError, match='3000'):
    data.render_colored_shapes(num_examples=3000)


# --- The tfds data source. ---------------------------------------------------------------------


def test_source_matches_render(source, shapes):
  assert 'tensorflow' not in sys.modules
  assert len(source) == data.NUM_EXAMPLES
  example = source[0]
  assert example['label'].shape == (64, 64) and example['label'].dtype == np.uint8
  # The builder disables tfds's write shuffle, so index i is square position i.
  for i in range(data.NUM_EXAMPLES):
    example = source[i]
    np.testing.assert_array_equal(example['square_yx'], shapes['square_yx'][i])
    np.testing.assert_array_equal(example['label'], shapes['label'][i])
  np.testing.assert_array_equal(source[17]['rect_box'], shapes['rect_box'][17])
  np.testing.assert_array_equal(source[17]['circle_center'], shapes['circle_center'][17])
  assert 'tensorflow' not in sys.modules


def test_load_source_reuses_prepared_data(source, data_dir):
  files = sorted(p for p in pathlib.Path(data_dir).rglob('*') if p.is_file())
  assert any(p.name.startswith('colored_shapes-train.array_record') for p in files)
  mtimes = [p.stat().st_mtime_ns for p in files]
  again = data.load_source('colored_shapes', data_dir)
  assert len(again) == len(source)
  assert [p.stat().st_mtime_ns for p in files] == mtimes


@pytest.mark.parametrize('process_index', [0, 1])
def test_load_source_multi_process_order(source, data_dir, monkeypatch, process_index):
  events = []
  prepare = pipeline._prepare

  def recording_prepare(name, directory):
    events.append('prepare')
    return prepare(name, directory)

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: process_index)
  monkeypatch.setattr(pipeline, '_prepare', recording_prepare)
  monkeypatch.setattr(
    pipeline.multihost_utils, 'sync_global_devices', lambda tag: events.append(f'sync {tag}')
  )
  again = data.load_source('colored_shapes', data_dir)
  assert len(again) == len(source)
  sync = 'sync semgan_jax.data.prepare'
  assert events == (['prepare', sync, 'prepare'] if process_index == 0 else [sync, 'prepare'])


def test_dataset_spec():
  spec = data.get_dataset_spec('colored_shapes')
  assert spec.num_classes == 4 and spec.image_size == 64 and spec.num_examples == 2916
  assert spec.class_names == data.CLASS_NAMES
  np.testing.assert_array_equal(spec.palette, data.PALETTE)
  assert set(data.DATASETS) == {'colored_shapes', 'streets', 'cityscapes', 'facades'}


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(ValueError, match=r"'nope'.*colored_shapes"):
    data.get_dataset_spec('nope')
  with pytest.raises(ValueError, match=r"'nope'"):
    data.load_source('nope', str(tmp_path))


def test_unwritable_data_dir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  bad_dir = str(blocker / 'data')
  with pytest.raises(ValueError, match=bad_dir):
    data.load_source('colored_shapes', bad_dir)


# --- The grain iterator. -----------------------------------------------------------------------


def _iterator(source, seed=0, batch=8, **kwargs):
  return data.create_input_iterator(
    source, global_batch_size=batch, num_classes=4, seed=seed, **kwargs
  )


def test_batches(source):
  batch = next(_iterator(source, batch=8))
  assert set(batch) == {'label', 'onehot'}
  assert batch['label'].shape == (8, 64, 64) and batch['label'].dtype == np.int32
  assert batch['onehot'].shape == (8, 64, 64, 4) and batch['onehot'].dtype == np.float32
  np.testing.assert_array_equal(batch['onehot'].sum(-1), 1.0)
  np.testing.assert_array_equal(batch['onehot'].argmax(-1), batch['label'])


def test_seeds(source):
  first = [next(_iterator(source, seed=3))['label'] for _ in range(2)]
  np.testing.assert_array_equal(first[0], first[1])
  a, b = _iterator(source, seed=3), _iterator(source, seed=3)
  for _ in range(3):
    np.testing.assert_array_equal(next(a)['label'], next(b)['label'])
  other = next(_iterator(source, seed=4))['label']
  assert not np.array_equal(first[0], other)


def test_resume_from_state(source):
  it = _iterator(source, seed=5)
  next(it)
  next(it)
  state = it.get_state()
  assert state == {'next_index': 2}
  ahead = [next(it)['label'] for _ in range(4)]
  it.set_state(state)
  for expected in ahead:
    np.testing.assert_array_equal(next(it)['label'], expected)
  # A brand-new iterator restored from the same state continues identically too.
  fresh = _iterator(source, seed=5)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)['label'], ahead[0])


def test_process_shards_partition_an_epoch(source, shapes):
  keys = _label_keys(shapes['label'])
  index_of = dict(zip(keys, range(len(keys)), strict=True))
  assert len(index_of) == data.NUM_EXAMPLES  # Every label map is distinct.
  # 1458 examples per shard = 6 local batches of 243.
  seen = []
  for process_index in range(2):
    it = _iterator(source, seed=7, batch=486, process_index=process_index, process_count=2)
    shard = [index_of[k] for _ in range(6) for k in _label_keys(next(it)['label'])]
    assert len(set(shard)) == len(shard) == 1458
    seen.append(set(shard))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(data.NUM_EXAMPLES))


def test_every_epoch_reshuffled():
  source = _IndexSource(24)
  it = data.create_input_iterator(source, global_batch_size=6, num_classes=2, seed=0)
  epochs = [sum((_decode_indices(next(it)['label']) for _ in range(4)), []) for _ in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(24))
  assert epochs[0] != epochs[1] != epochs[2]


def test_indivisible_batch(source):
  with pytest.raises(ValueError, match=r'10.*3'):
    _iterator(source, batch=10, process_count=3)


def test_label_out_of_range():
  it = data.create_input_iterator(_IndexSource(8), global_batch_size=4, num_classes=1, seed=0)
  with pytest.raises(ValueError, match=r'label id 1 .*num_classes 1'):
    next(it)


# --- colorize. ---------------------------------------------------------------------------------


def test_colorize():
  labels = np.array([[[0, 1], [2, 3]]] * 3)
  rgb = data.colorize(labels, data.PALETTE)
  assert rgb.shape == (3, 2, 2, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[1, 0, 1], [0, 0, 255])
  np.testing.assert_array_equal(rgb[2, 1, 0], [0, 255, 0])
  np.testing.assert_array_equal(rgb[0, 1, 1], [255, 0, 0])
  with pytest.raises(ValueError, match='label id 4'):
    data.colorize(np.array([4]), data.PALETTE)
  with pytest.raises(ValueError, match='label id -1'):
    data.colorize(np.array([[-1]]), data.PALETTE)


def test_load_source_expands_home(tmp_path, monkeypatch):
  """'~/...' means the home directory, never a directory literally named '~' in the cwd."""
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.chdir(tmp_path)
  source = data.load_source('colored_shapes', '~/tfds')
  assert len(source) == data.NUM_EXAMPLES
  assert (tmp_path / 'home' / 'tfds' / 'colored_shapes').is_dir()
  assert not (tmp_path / '~').exists()


def test_iterator_without_onehot(tmp_path):
  """include_onehot=False yields the same ids and no one-hot; bad ids are still refused."""
  source = data.load_source('colored_shapes', str(tmp_path))
  kwargs = dict(global_batch_size=8, num_classes=4, seed=3)
  with_onehot = next(data.create_input_iterator(source, **kwargs))
  ids_only = next(data.create_input_iterator(source, include_onehot=False, **kwargs))
  assert set(ids_only) == {'label'}
  np.testing.assert_array_equal(ids_only['label'], with_onehot['label'])
  with pytest.raises(ValueError, match='out of range'):
    next(data.create_input_iterator(source, include_onehot=False, **{**kwargs, 'num_classes': 2}))
