"""Tests of the CMP Facades builder on a small fake copy of the two official archives."""

import io
import sys
import zipfile

import ml_collections
import numpy as np
import pytest
from conftest import _load_config_module
from PIL import Image

from semgan_jax import data
from semgan_jax.data import facades
from semgan_jax.errors import UserInputError
from semgan_jax.tasks import TASKS
from semgan_jax.tasks import base as tasks_base
from semgan_jax.train import runner

CONFIG = '32x32'
# (folder, stem, (H, W) of the original). One tall facade: squeezed to the square, as the paper.
FACADES = (
  ('base', 'cmp_b0001', (64, 64)),
  ('base', 'cmp_b0002', (96, 64)),
  ('base', 'cmp_b0003', (64, 64)),
  ('extended', 'cmp_x0001', (64, 64)),
  ('extended', 'cmp_x0002', (64, 64)),
)
BASE_ZIP, EXTENDED_ZIP = (archive for archive, _ in facades.ARCHIVES)


def _fake_facade(stem, shape):
  """A flat photo and an annotation (values 1 to 12) of blocks that a 32x32 resize keeps."""
  rng = np.random.default_rng(list(stem.encode()))
  block = (shape[0] // 32, shape[1] // 32)
  values = rng.integers(1, facades.NUM_CLASSES + 1, size=(32, 32)).astype(np.uint8)
  values[0, 0], values[-1, -1] = 1, facades.NUM_CLASSES  # Both ends of the range.
  values = np.kron(values, np.ones(block, np.uint8))
  color = rng.integers(0, 256, size=3).astype(np.uint8)  # A flat photo: survives any resize.
  photo = np.broadcast_to(color, (*shape, 3)).copy()
  return photo, values


def _jpg(photo):
  buffer = io.BytesIO()
  Image.fromarray(photo).save(buffer, format='JPEG', quality=100)
  return buffer.getvalue()


def _palette_png(values):
  """A palette ('P') PNG, as the database's annotations are."""
  image = Image.frombytes('P', (values.shape[1], values.shape[0]), values.tobytes())
  image.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def _files(skip=(), replace=None):
  """{relative path: bytes} of a fake manual directory; `replace` maps a path to new bytes."""
  files = {'label_names.txt': b'fake', 'readme.txt': b'fake'}
  for folder, stem, shape in FACADES:
    photo, values = _fake_facade(stem, shape)
    files[f'{folder}/{stem}.jpg'] = _jpg(photo)
    files[f'{folder}/{stem}.png'] = _palette_png(values)
    files[f'{folder}/{stem}.xml'] = b'<annotation/>'  # Present in the archives; not read.
  files.update(replace or {})
  return {path: content for path, content in files.items() if path not in skip}


def _write(root, files, layouts=('zip', 'zip')):
  """Writes the base and extended trees, each zipped (as downloaded) or extracted."""
  root.mkdir(parents=True, exist_ok=True)
  for (archive, folder), layout in zip(facades.ARCHIVES, layouts, strict=True):
    mine = {p: c for p, c in files.items() if p.startswith(folder + '/') or '/' not in p}
    if layout == 'folder':
      for path, content in mine.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    elif layout == 'zip':
      with zipfile.ZipFile(root / archive, 'w') as zf:
        for path, content in mine.items():
          zf.writestr(path, content)
  return root


def _load(tmp_path, manual_dir):
  return data.load_source(
    'facades', str(tmp_path / 'tfds'), config_name=CONFIG, manual_dir=manual_dir
  )


def _assert_nothing_prepared(tmp_path):
  config_dir = tmp_path / 'tfds' / 'facades' / CONFIG
  leftovers = sorted(p.name for p in config_dir.iterdir()) if config_dir.exists() else []
  assert leftovers == [], leftovers  # No version folder, and no temporary one either.


@pytest.mark.parametrize('layouts', [('zip', 'zip'), ('folder', 'folder'), ('zip', 'folder')])
def test_prepare_reads_base_then_extended(tmp_path, layouts):
  manual = _write(tmp_path / 'manual', _files(), layouts)
  source = _load(tmp_path, str(manual))
  assert 'tensorflow' not in sys.modules
  assert len(source) == len(FACADES)
  for i, (_, stem, shape) in enumerate(FACADES):  # Base then extended, by file name.
    photo, values = _fake_facade(stem, shape)
    example = source[i]
    assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
    assert example['label'].shape == (32, 32) and example['label'].dtype == np.uint8
    # JPEG rounds a flat colour by a level or two.
    assert np.abs(example['image'].astype(int) - photo[0, 0].astype(int)).max() <= 3
    # Nearest neighbour on aligned blocks, values 1..12 become classes 0..11.
    block = (shape[0] // 32, shape[1] // 32)
    np.testing.assert_array_equal(example['label'], values[:: block[0], :: block[1]] - 1)
    assert example['label'].min() == 0 and example['label'].max() == facades.NUM_CLASSES - 1


def test_spec():
  spec = data.get_dataset_spec('facades')
  assert spec.manual_download and not spec.paired
  assert (spec.height, spec.width, spec.config_name, spec.image_size) == (128, 128, '128x128', 128)
  assert spec.num_classes == 12 and spec.class_names[0] == 'background'
  assert spec.class_names[2] == 'window' and spec.class_names[-1] == 'shop'
  assert spec.palette.shape == (12, 3) and len({tuple(c) for c in spec.palette}) == 12
  assert spec.num_examples == 606
  assert set(spec.config_names) == {'128x128', '256x256', '32x32'}


def test_missing_archives_message(tmp_path):
  nowhere = tmp_path / 'no_such_dir'
  with pytest.raises(data.FacadesFilesError) as info:
    _load(tmp_path, str(nowhere))
  message = str(info.value)
  for expected in (str(nowhere), BASE_ZIP, EXTENDED_ZIP, facades.DOWNLOAD_URL, 'base/cmp_b'):
    assert expected in message
  _assert_nothing_prepared(tmp_path)


def test_missing_extended_archive(tmp_path):
  manual = _write(tmp_path / 'manual', _files(), ('zip', None))
  with pytest.raises(data.FacadesFilesError) as info:
    _load(tmp_path, str(manual))
  first_line = str(info.value).split('\n')[0]
  assert EXTENDED_ZIP in first_line and BASE_ZIP not in first_line
  _assert_nothing_prepared(tmp_path)


@pytest.mark.parametrize('layouts', [('zip', 'zip'), ('folder', 'folder')])
def test_photo_without_annotation(tmp_path, layouts):
  manual = _write(tmp_path / 'manual', _files(skip={'extended/cmp_x0001.png'}), layouts)
  with pytest.raises(data.FacadesFilesError, match=r'cmp_x0001\.jpg has no annotation'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)


def test_annotation_without_photo(tmp_path):
  manual = _write(tmp_path / 'manual', _files(skip={'base/cmp_b0002.jpg'}))
  with pytest.raises(data.FacadesFilesError, match=r'cmp_b0002\.png has no photo'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)


def test_corrupt_file_mid_generation_leaves_nothing(tmp_path):
  """A file that cannot be decoded, found while writing, aborts the whole data set."""
  bad = 'extended/cmp_x0002.png'  # The last facade: the others are written first.
  manual = _write(tmp_path / 'manual', _files(replace={bad: b'\x89PNG truncated'}))
  with pytest.raises(ValueError, match=rf'Cannot decode .*{EXTENDED_ZIP}:{bad}'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)
  # Once the file is fixed, preparing again works: nothing stale is in the way.
  _write(tmp_path / 'manual', _files())
  assert len(_load(tmp_path, str(manual))) == len(FACADES)


@pytest.mark.parametrize('value', [0, 13, 255])
def test_value_out_of_range(tmp_path, value):
  _, values = _fake_facade('cmp_b0003', (64, 64))
  values[5, 7] = value
  manual = _write(tmp_path / 'manual', _files(replace={'base/cmp_b0003.png': _palette_png(values)}))
  with pytest.raises(ValueError, match=rf'base/cmp_b0003\.png holds value {value}; .*1 .* 12'):
    _load(tmp_path, str(manual))
  _assert_nothing_prepared(tmp_path)


def test_rgb_annotation_is_refused():
  photo, values = _fake_facade('cmp_b0001', (64, 64))
  rgb = io.BytesIO()
  Image.fromarray(np.stack([values] * 3, axis=-1)).save(rgb, format='PNG')
  with pytest.raises(ValueError, match=r'a\.png is not a single-channel class map \(mode RGB\)'):
    facades.read_example(_jpg(photo), rgb.getvalue(), height=32, width=32, names=('p', 'a.png'))


def test_wrong_annotation_size_is_refused():
  photo, values = _fake_facade('cmp_b0001', (64, 64))
  with pytest.raises(ValueError, match=r'a\.png is 32x64 \(W x H\) but its photo p is 64x64'):
    facades.read_example(
      _jpg(photo), _palette_png(values[:, :32]), height=32, width=32, names=('p', 'a.png')
    )


def test_semgan_learns_facade_maps(tmp_path):
  """configs/facades_semgan.py:tiny on the fake archives trains; a missing manual directory is
  one error naming the archives, before the workdir exists."""
  manual = _write(tmp_path / 'manual', _files())
  config = _load_config_module('facades_semgan').get_config('tiny')
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.manual_dir = str(tmp_path / 'nowhere')
  with pytest.raises(UserInputError, match=BASE_ZIP):
    runner.train(TASKS['semgan'], config, str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused').exists()
  config.data.manual_dir = str(manual)
  config.evals = ml_collections.ConfigDict()  # 5 training maps: too few to evaluate.
  config.train.sample_every_steps = 4
  state = runner.train(TASKS['semgan'], config, str(tmp_path / 'run'))
  assert int(state.step) == 4
  source = tasks_base.split_loader(config)('train')
  assert len(source) == len(FACADES)


@pytest.mark.parametrize('variant', ['', 'quick'])
def test_configs_match_the_data_set(variant):
  """The paper and CPU variants read the 128x128 maps and keep Table 4's best ld and lr."""
  config = _load_config_module('facades_semgan').get_config(variant)
  spec = tasks_base.dataset_spec(config)
  assert (spec.name, spec.height, spec.width, spec.num_classes) == ('facades', 128, 128, 12)
  assert (config.model.latent_dim, config.optim.lr) == (300, 2e-4)
  assert config.model.kernel_size == (7 if not variant else 4)
  with pytest.raises(ValueError, match='unknown variant'):
    _load_config_module('facades_semgan').get_config('huge')
