"""Tests of the procedural streets data set and the paired input iterator."""

import sys

import numpy as np
import pytest

from semgan_jax import data
from semgan_jax.data import cityscapes, paired, streets

H, W = 64, 128  # Renders are checked at 64x128; the tfds data set is prepared at 32x64.
TINY = '32x64'
THINGS = (streets.CAR, streets.PERSON)


@pytest.fixture(scope='module')
def scenes():
  return [data.render_street(i, height=H, width=W) for i in range(40)]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def source(data_dir):
  return data.load_source('streets', data_dir, config_name=TINY)


@pytest.fixture(scope='module')
def index_of_image(source):
  """Each example's index, looked up by its photo's bytes (every photo is distinct)."""
  index = {source[i]['image'].tobytes(): i for i in range(len(source))}
  assert len(index) == len(source)
  return index


class _ListSource:
  """An in-memory source of given examples."""

  def __init__(self, examples):
    self._examples = examples

  def __len__(self):
    return len(self._examples)

  def __getitem__(self, index):
    return self._examples[index]


def _example(label, image=None, instance=None):
  label = np.asarray(label)
  if image is None:
    image = np.zeros(label.shape + (3,), np.uint8)
  return {'image': image, 'label': label, 'instance': instance if instance is not None else label}


def _iterator(source, seed=0, batch=10, **kwargs):
  return data.create_paired_iterator(
    source, global_batch_size=batch, num_classes=35, seed=seed, **kwargs
  )


# --- The renderer. -------------------------------------------------------------------------------


def test_shapes_dtypes(scenes):
  for scene in scenes[:3]:
    assert scene['image'].shape == (H, W, 3) and scene['image'].dtype == np.uint8
    assert scene['label'].shape == (H, W) and scene['label'].dtype == np.uint8
    assert scene['instance'].shape == (H, W) and scene['instance'].dtype == np.int32
  big = data.render_street(0)
  assert big['image'].shape == (128, 256, 3) and big['label'].shape == (128, 256)


def test_determinism(scenes):
  again = data.render_street(3, height=H, width=W)
  for key in ('image', 'label', 'instance'):
    np.testing.assert_array_equal(again[key], scenes[3][key])
  for other in (
    data.render_street(4, height=H, width=W),
    data.render_street(3, height=H, width=W, seed=1),
    data.render_street(3, height=H, width=W, split='validation'),
  ):
    assert not np.array_equal(other['label'], scenes[3]['label'])
    assert not np.array_equal(other['image'], scenes[3]['image'])


def test_same_scene_at_every_size(scenes):
  """The layout is drawn in resolution-independent units: 128x256 is 64x128, finer."""
  for i in range(5):
    big = data.render_street(i)['label']
    agree = (cityscapes.resize_nearest(big, H, W) == scenes[i]['label']).mean()
    assert agree > 0.9, (i, agree)


def test_classes(scenes):
  labels = np.stack([s['label'] for s in scenes])
  present = set(np.unique(labels).tolist())
  assert present <= set(streets.CLASS_IDS)
  assert present >= set(streets.CLASS_IDS) - {streets.TRAFFIC_LIGHT}, sorted(present)
  for label in labels:  # Every scene has sky, road and at least one car.
    assert {streets.SKY, streets.ROAD, streets.CAR} <= set(np.unique(label).tolist())
  assert (
    len(streets.CLASS_IDS) == 12
    and max(streets.CLASS_IDS) < data.get_dataset_spec('streets').num_classes
  )


def test_instances_follow_cityscapes_convention(scenes):
  cars_per_scene = []
  for scene in scenes:
    label, instance = scene['label'].astype(np.int32), scene['instance']
    thing = np.isin(label, THINGS)
    np.testing.assert_array_equal(instance[~thing], label[~thing])  # Stuff: the label id.
    np.testing.assert_array_equal(instance[thing] // 1000, label[thing])  # Things: id*1000+k.
    ids = np.unique(instance[thing])
    assert (ids % 1000 < 20).all()
    cars_per_scene.append(int((ids // 1000 == streets.CAR).sum()))
  assert min(cars_per_scene) >= 1 and np.mean(cars_per_scene) >= 2.5, cars_per_scene


def test_photos_differ_by_class(scenes):
  """Each class has its own look, so a translator and a segmenter have something to learn."""
  images = np.stack([s['image'] for s in scenes]).reshape(-1, 3).astype(np.float64)
  labels = np.stack([s['label'] for s in scenes]).reshape(-1)
  classes = [streets.SKY, streets.ROAD, streets.SIDEWALK, streets.BUILDING, streets.VEGETATION]
  classes += [streets.TERRAIN, streets.CAR, streets.PERSON, streets.POLE]
  means = {c: images[labels == c].mean(axis=0) for c in classes}
  for i, a in enumerate(classes):
    for b in classes[i + 1 :]:
      assert np.linalg.norm(means[a] - means[b]) > 10, (a, b, means[a], means[b])
  # A nearest-class-mean colour classifier already beats the majority class by far.
  dist = np.stack([np.linalg.norm(images - means[c], axis=1) for c in classes])
  guess = np.asarray(classes)[dist.argmin(axis=0)]
  known = np.isin(labels, classes)
  accuracy = (guess[known] == labels[known]).mean()
  majority = max((labels[known] == c).mean() for c in classes)
  assert accuracy > majority + 0.15, (accuracy, majority)
  # Textures, not flat fills: pixels of one class in one image vary.
  scene = scenes[0]
  assert scene['image'][scene['label'] == streets.ROAD].std(axis=0).min() > 3


def test_bad_arguments():
  with pytest.raises(ValueError, match='split'):
    data.render_street(0, split='test')
  with pytest.raises(ValueError, match='non-negative'):
    data.render_street(-1)


# --- The tfds data set. ------------------------------------------------------------------------


def test_source_matches_render(source, data_dir):
  assert 'tensorflow' not in sys.modules
  assert len(source) == streets.TINY_SPLITS['train']
  for i in (0, 7, 199):
    example, expected = source[i], data.render_street(i, height=32, width=64)
    for key in ('image', 'label', 'instance'):
      np.testing.assert_array_equal(example[key], expected[key])
    assert example['instance'].dtype == np.int32 and example['label'].dtype == np.uint8
  val = data.load_source('streets', data_dir, config_name=TINY, split='validation')
  assert len(val) == streets.TINY_SPLITS['validation']
  expected = data.render_street(5, height=32, width=64, split='validation')
  np.testing.assert_array_equal(val[5]['image'], expected['image'])
  assert 'tensorflow' not in sys.modules


def test_spec():
  spec = data.get_dataset_spec('streets')
  assert spec.paired and not spec.manual_download
  assert (spec.height, spec.width, spec.image_size, spec.config_name) == (128, 256, 128, '128x256')
  assert spec.num_examples == 2000 and spec.num_classes == 35
  assert spec.class_names == cityscapes.CLASS_NAMES
  np.testing.assert_array_equal(spec.palette, cityscapes.PALETTE)
  assert spec.config_names == ('128x256', '64x128', '32x64', '32x64_1000')
  small = data.get_dataset_spec('streets', '64x128')
  assert (small.height, small.width, small.num_examples) == (64, 128, 1000)
  tiny = data.get_dataset_spec('streets', TINY)
  assert (tiny.height, tiny.width, tiny.num_examples) == (32, 64, 200)
  many_tiny = data.get_dataset_spec('streets', '32x64_1000')  # For the reproduction table.
  assert (many_tiny.height, many_tiny.width, many_tiny.num_examples) == (32, 64, 1000)
  shapes = data.get_dataset_spec('colored_shapes')
  assert (shapes.height, shapes.width, shapes.paired, shapes.config_name) == (64, 64, False, None)
  with pytest.raises(ValueError, match=r"'32x32'.*'128x256', '64x128', '32x64', '32x64_1000'"):
    data.get_dataset_spec('streets', '32x32')


def test_load_source_arguments(data_dir, tmp_path):
  with pytest.raises(ValueError, match="no split 'test'"):
    data.load_source('streets', data_dir, config_name=TINY, split='test')
  with pytest.raises(ValueError, match='manual_dir'):
    data.load_source('streets', data_dir, config_name=TINY, manual_dir=str(tmp_path))
  with pytest.raises(ValueError, match='Unknown config'):
    data.load_source('colored_shapes', str(tmp_path), config_name='64x128')


# --- The paired iterator. ----------------------------------------------------------------------


def test_batches(source, index_of_image):
  batch = next(_iterator(source, batch=6))
  assert set(batch) == {'image', 'label', 'instance'}
  assert batch['image'].shape == (6, 32, 64, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].shape == (6, 32, 64) and batch['label'].dtype == np.int32
  assert batch['instance'].shape == (6, 32, 64) and batch['instance'].dtype == np.int32
  for image, label, instance in zip(
    *(batch[k] for k in ('image', 'label', 'instance')), strict=True
  ):
    example = source[index_of_image[image.tobytes()]]  # The photo's own maps came with it.
    np.testing.assert_array_equal(label, example['label'])
    np.testing.assert_array_equal(instance, example['instance'])


def test_process_shards_partition_an_epoch(source, index_of_image):
  seen = []
  for process_index in range(2):  # 100 examples per process: 5 local batches of 20.
    it = _iterator(source, seed=7, batch=40, process_index=process_index, process_count=2)
    shard = [index_of_image[im.tobytes()] for _ in range(5) for im in next(it)['image']]
    assert len(set(shard)) == len(shard) == 100
    assert set(shard) == set(range(process_index, len(source), 2))  # The strided slice.
    seen.append(set(shard))
  assert seen[0] | seen[1] == set(range(len(source)))


def test_resume_from_state(source):
  it = _iterator(source, seed=5)
  next(it)
  next(it)
  state = it.get_state()
  ahead = [next(it) for _ in range(3)]
  fresh = _iterator(source, seed=5)
  fresh.set_state(state)
  for expected in ahead:
    batch = next(fresh)
    for key in ('image', 'label', 'instance'):
      np.testing.assert_array_equal(batch[key], expected[key])
  other = next(_iterator(source, seed=6))
  assert not np.array_equal(other['image'], next(_iterator(source, seed=5))['image'])


def test_license_plate_becomes_unlabeled():
  label = np.array([[-1, 7], [26, 34]], np.int32)
  batch = next(_iterator(_ListSource([_example(label)]), batch=1))
  np.testing.assert_array_equal(batch['label'][0], [[0, 7], [26, 34]])
  np.testing.assert_array_equal(batch['instance'][0], label)  # Instances are left alone.


@pytest.mark.parametrize(
  ('example', 'message'),
  [
    (_example(np.full((2, 2), 35)), 'label id 35 is out of range for num_classes 35'),
    (_example(np.full((2, 2), -2)), 'label id -2 is out of range'),
    (
      _example(np.zeros((2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)),
      r'label map is 2x3 .*2x2',
    ),
    (_example(np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.float32)), 'image must be uint8'),
    (_example(np.zeros((2, 2), np.float32)), 'label must hold integer ids'),
    (
      _example(np.zeros((2, 2), np.uint8), instance=np.zeros((3, 2), np.int32)),
      r'instance map is 3x2 but its image is 2x2',
    ),
  ],
)
def test_iterator_rejects_bad_examples(example, message):
  with pytest.raises(ValueError, match=message):
    next(_iterator(_ListSource([example] * 2), batch=2))


def test_iterator_arguments(source):
  with pytest.raises(ValueError, match=r'10.*3'):
    _iterator(source, batch=10, process_count=3)
  with pytest.raises(ValueError, match='process_index 2'):
    _iterator(source, batch=4, process_index=2, process_count=2)


def test_map_in_order_keeps_order_and_raises_at_the_item():
  assert list(paired.map_in_order(lambda x: x * x, range(50))) == [x * x for x in range(50)]

  def fail_at_7(x):
    if x == 7:
      raise ValueError('item 7')
    return x

  out = []
  with pytest.raises(ValueError, match='item 7'):
    for value in paired.map_in_order(fail_at_7, range(100)):
      out.append(value)
  assert out == list(range(7))
