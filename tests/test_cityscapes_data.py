"""Tests of the Cityscapes builder on a small fake copy of the official archives."""

import io
import sys
import zipfile

import ml_collections
import numpy as np
import pytest
from conftest import _load_config_module
from PIL import Image

from semgan_jax import data, tasks
from semgan_jax.data import cityscapes, label_sets
from semgan_jax.tasks import TASKS
from semgan_jax.tasks import base as tasks_base
from semgan_jax.train import runner

HEIGHT, WIDTH = 64, 128  # The fake originals; the '32x64' config halves them.
BLOCK = 4  # Label and instance maps are made of aligned 4 x 4 blocks.
CONFIG = '32x64'
CITIES = {'train': {'aachen': 2, 'bochum': 1}, 'val': {'frankfurt': 1, 'lindau': 1}}


def _stems(split):
  return sorted(
    f'{city}_{seq:06d}_{frame:06d}'
    for city, n in CITIES[split].items()
    for seq, frame in [(k, 19 + k) for k in range(n)]
  )


def _fake_example(stem):
  """A photo, label-id map and instance map that identify their stem."""
  rng = np.random.default_rng(list(stem.encode()))
  blocks = (HEIGHT // BLOCK, WIDTH // BLOCK)
  label = rng.integers(0, 34, size=blocks)
  things = np.isin(label, cityscapes.THING_IDS)
  instance = np.where(things, label * 1000 + rng.integers(0, 5, blocks), label).astype(np.int32)
  label = label.astype(np.uint8)
  label = np.kron(label, np.ones((BLOCK, BLOCK), np.uint8))
  instance = np.kron(instance, np.ones((BLOCK, BLOCK), np.int32))
  color = rng.integers(0, 256, size=3).astype(np.uint8)  # A flat photo: survives any resize.
  photo = np.broadcast_to(color, (HEIGHT, WIDTH, 3)).copy()
  return photo, label, instance


def _png(array):
  buffer = io.BytesIO()
  if array.dtype == np.int32:
    # Cityscapes' instanceIds files are 16-bit grayscale PNGs.
    Image.fromarray(array.astype(np.uint16)).save(buffer, format='PNG')
  else:
    Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def _files(skip=(), label_shape=None):
  """{relative path: bytes} of a fake manual directory (both trees, train and val)."""
  files = {}
  for split in CITIES:
    for stem in _stems(split):
      city = stem.rsplit('_', 2)[0]
      photo, label, instance = _fake_example(stem)
      if label_shape is not None and stem == label_shape[0]:
        label = np.zeros(label_shape[1], np.uint8)
      photo_path = f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png'
      gt = f'gtFine/{split}/{city}/{stem}_gtFine'
      files[photo_path] = _png(photo)
      files[f'{gt}_labelIds.png'] = _png(label)
      files[f'{gt}_instanceIds.png'] = _png(instance)
      files[f'{gt}_color.png'] = _png(photo)  # Present in the real archive; not read.
  return {path: content for path, content in files.items() if path not in skip}


def _write(root, files, layout):
  root.mkdir(parents=True, exist_ok=True)
  if layout == 'folder':
    for path, content in files.items():
      (root / path).parent.mkdir(parents=True, exist_ok=True)
      (root / path).write_bytes(content)
  else:
    for tree, archive in (
      ('leftImg8bit', cityscapes.PHOTO_ARCHIVE),
      ('gtFine', cityscapes.LABEL_ARCHIVE),
    ):
      with zipfile.ZipFile(root / archive, 'w') as zf:
        zf.writestr('README', 'fake')
        for path, content in files.items():
          if path.startswith(tree + '/'):
            zf.writestr(path, content)
  return root


def _load(tmp_path, manual_dir, split='train'):
  return data.load_source(
    'cityscapes', str(tmp_path / 'tfds'), split=split, config_name=CONFIG, manual_dir=manual_dir
  )


def _version_dir(tmp_path):
  return tmp_path / 'tfds' / 'cityscapes' / CONFIG / '1.0.0'


def _assert_nothing_prepared(tmp_path):
  config_dir = tmp_path / 'tfds' / 'cityscapes' / CONFIG
  leftovers = sorted(p.name for p in config_dir.iterdir()) if config_dir.exists() else []
  assert leftovers == [], leftovers  # No version folder, and no temporary one either.


@pytest.mark.parametrize('layout', ['folder', 'zip'])
def test_prepare_matches_pairs_and_keeps_ids(tmp_path, layout):
  manual = _write(tmp_path / 'manual', _files(), layout)
  train = _load(tmp_path, str(manual))
  val = _load(tmp_path, str(manual), split='validation')
  assert 'tensorflow' not in sys.modules
  assert len(train) == 3 and len(val) == 2
  for source, split in ((train, 'train'), (val, 'val')):
    for i, stem in enumerate(_stems(split)):  # Stored in sorted <city>_<seq>_<frame> order.
      photo, label, instance = _fake_example(stem)
      example = source[i]
      assert example['image'].shape == (32, 64, 3) and example['image'].dtype == np.uint8
      assert example['label'].shape == (32, 64) and example['label'].dtype == np.uint8
      assert example['instance'].shape == (32, 64) and example['instance'].dtype == np.int32
      # The photo of this stem (a flat colour), with the maps of the same stem.
      np.testing.assert_array_equal(example['image'], photo[::2, ::2])
      # Nearest neighbour on aligned blocks: every id comes back exactly, none is invented.
      np.testing.assert_array_equal(example['label'], label[::2, ::2])
      np.testing.assert_array_equal(example['instance'], instance[::2, ::2])
      assert set(np.unique(example['label'])) == set(np.unique(label))


def test_spec():
  spec = data.get_dataset_spec('cityscapes')
  assert spec.paired and spec.manual_download
  assert (spec.height, spec.width, spec.config_name) == (512, 1024, '512x1024')
  assert spec.num_classes == 35 and len(spec.class_names) == 35 and spec.palette.shape == (35, 3)
  assert spec.num_examples == 2975
  assert set(spec.config_names) == {'512x1024', '256x512', '128x256', '128x128', '32x64'}
  small = data.get_dataset_spec('cityscapes', '256x512')
  assert (small.height, small.width, small.image_size) == (256, 512, 256)


def test_label_table():
  names, palette = cityscapes.CLASS_NAMES, cityscapes.PALETTE
  assert names[7] == 'road' and names[11] == 'building' and names[26] == 'car'
  assert names[23] == 'sky' and names[33] == 'bicycle' and names[34] == 'unused'
  np.testing.assert_array_equal(palette[7], [128, 64, 128])
  np.testing.assert_array_equal(palette[26], [0, 0, 142])
  np.testing.assert_array_equal(palette[21], [107, 142, 35])
  assert cityscapes.THING_IDS == tuple(range(24, 34))
  train_ids = cityscapes.TRAIN_IDS
  assert sorted(set(train_ids.tolist()) - {255}) == list(range(19))
  assert train_ids[7] == 0 and train_ids[26] == 13 and train_ids[33] == 18 and train_ids[0] == 255


def test_missing_files_message(tmp_path):
  nowhere = tmp_path / 'no_such_dir'
  with pytest.raises(data.CityscapesFilesError) as info:
    _load(tmp_path, str(nowhere))
  message = str(info.value)
  for expected in (
    str(nowhere),
    cityscapes.PHOTO_ARCHIVE,
    cityscapes.LABEL_ARCHIVE,
    'https://www.cityscapes-dataset.com/downloads/',
    '_gtFine_labelIds.png',
    '_gtFine_instanceIds.png',
  ):
    assert expected in message
  _assert_nothing_prepared(tmp_path)


def test_default_manual_dir_is_under_data_dir(tmp_path):
  with pytest.raises(data.CityscapesFilesError, match='downloads/manual'):
    _load(tmp_path, None)


def test_only_labels_present(tmp_path):
  files = {p: c for p, c in _files().items() if p.startswith('gtFine/')}
  manual = _write(tmp_path / 'manual', files, 'folder')
  with pytest.raises(data.CityscapesFilesError, match=cityscapes.PHOTO_ARCHIVE) as info:
    _load(tmp_path, str(manual))
  assert cityscapes.LABEL_ARCHIVE + ' (' not in str(info.value).split('\n')[0]


@pytest.mark.parametrize('layout', ['folder', 'zip'])
def test_photo_without_label(tmp_path, layout):
  missing = 'gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png'
  manual = _write(tmp_path / 'manual', _files(skip={missing}), layout)
  with pytest.raises(data.CityscapesFilesError, match='bochum_000000_000019_leftImg8bit.png'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)


def test_label_without_photo(tmp_path):
  missing = 'leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png'
  manual = _write(tmp_path / 'manual', _files(skip={missing}), 'folder')
  with pytest.raises(data.CityscapesFilesError, match='lindau_000000_000019_gtFine_labelIds.png'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)


def test_wrong_label_size_mid_generation_leaves_nothing(tmp_path):
  """A bad file found while writing aborts the whole data set, not just that example."""
  bad_stem = _stems('train')[-1]  # The last train example: the others are written first.
  manual = _write(tmp_path / 'manual', _files(label_shape=(bad_stem, (60, 128))), 'folder')
  with pytest.raises(ValueError, match=rf'{bad_stem}_gtFine_labelIds.png is 128x60'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)
  # Once the file is fixed, preparing again works: nothing stale is in the way.
  _write(tmp_path / 'manual', _files(), 'folder')
  assert len(_load(tmp_path, str(manual))) == 3
  assert _version_dir(tmp_path).is_dir()


def test_read_example_rejects_bad_ids():
  photo, label, instance = _fake_example('aachen_000000_000019')
  label[0, 0] = 40
  with pytest.raises(ValueError, match='x.png holds label id 40'):
    cityscapes.read_example(
      _png(photo), _png(label), _png(instance), height=32, width=64, names=('p', 'x.png', 'i')
    )


def test_resize_nearest_copies_input_values():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 35, size=(37, 53)).astype(np.uint8)
  for shape in ((16, 32), (50, 100), (37, 53)):
    out = cityscapes.resize_nearest(ids, *shape)
    assert out.shape == shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(ids))
  np.testing.assert_array_equal(cityscapes.resize_nearest(ids, 37, 53), ids)
  blocks = np.kron(ids, np.ones((3, 3), np.uint8))
  np.testing.assert_array_equal(cityscapes.resize_nearest(blocks, 37, 53), ids)


def test_dream_cityscapes_scenes_in_22_classes(tmp_path):
  """configs/cityscapes_semgan.py:tiny on the fake archives reads the label ids through the
  cityscapes22 table and trains; a tiny SemanticGAN on the same archives paints its maps
  (configs/dream_cityscapes.py), whose ids are those the 22 classes stand for."""
  manual = _write(tmp_path / 'manual', _files(), 'zip')
  config = _load_config_module('cityscapes_semgan').get_config('tiny')
  config.data.data_dir, config.data.manual_dir = str(tmp_path / 'tfds'), str(manual)
  config.evals = ml_collections.ConfigDict()  # 3 training maps: too few to evaluate.
  config.train.sample_every_steps = 4
  state = runner.train(TASKS['semgan'], config, str(tmp_path / 'semgan'))
  assert int(state.step) == 4
  cityscapes22 = label_sets.get_label_set('cityscapes22')
  raw = _load(tmp_path, str(manual))
  relabeled = tasks_base.split_loader(config)('train')
  assert len(relabeled) == len(raw) == 3
  for i in range(3):
    np.testing.assert_array_equal(
      relabeled[i]['label'], cityscapes22.from_label_id[raw[i]['label']]
    )

  photos = _load_config_module('streets').get_config('tiny')  # Its network, on Cityscapes.
  photos.data.update(name='cityscapes', data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  photos.evals = ml_collections.ConfigDict()
  runner.train(TASKS['semanticgan'], photos, str(tmp_path / 'semanticgan'))
  dream = _load_config_module('dream_cityscapes').get_config()
  dream.dream.update(
    semgan_workdir=str(tmp_path / 'semgan'),
    semanticgan_workdir=str(tmp_path / 'semanticgan'),
    interpolation_frames=2,
  )
  written = runner.dream(
    TASKS['dream'], dream, str(tmp_path / 'dream'), get_task=tasks.get_task, num_samples=3
  )
  assert written
  ids = np.load(tmp_path / 'dream' / 'dream' / 'dream_seed0.npy')
  assert ids.shape == (3, 32, 64)
  assert set(np.unique(ids).tolist()) <= set(cityscapes22.to_label_id.tolist())


@pytest.mark.parametrize(
  ('variant', 'size'), [('', (128, 128)), ('quick', (128, 128)), ('small', (128, 256))]
)
def test_semgan_configs_match_the_data_set(variant, size):
  """Each variant reads a prepared resolution in 22 classes, with Table 3's best ld and lr; the
  small one is the resolution of configs/cityscapes.py:<column>,small, its dream partner."""
  config = _load_config_module('cityscapes_semgan').get_config(variant)
  spec = tasks_base.dataset_spec(config)
  assert (spec.height, spec.width, spec.num_classes) == (*size, 22)
  assert (config.model.latent_dim, config.optim.lr) == (128, 2e-4)
  if variant == 'small':
    partner = _load_config_module('cityscapes').get_config('f,small')
    assert (partner.data.height, partner.data.width) == size
