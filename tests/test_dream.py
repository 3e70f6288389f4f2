"""SemGAN on street layouts (label sets, non-square maps) and the dream chain (--mode=dream)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE_FLAGS, _load_config_module
from PIL import Image

from semgan_jax.data import cityscapes_labels, label_sets
from semgan_jax.data.streets import constants as streets
from semgan_jax.errors import UserInputError
from semgan_jax.models import DCGANDiscriminator, LatentToLabelGenerator
from semgan_jax.tasks import TASKS, dream
from semgan_jax.train import runner


@pytest.mark.parametrize('name', sorted(label_sets.LABEL_SETS))
def test_label_sets_are_total_and_map_back(name):
  chosen = label_sets.get_label_set(name)
  k = chosen.num_classes
  assert chosen.from_label_id.shape == (cityscapes_labels.NUM_CLASSES,)  # Every label id...
  assert chosen.from_label_id.min() >= 0 and chosen.from_label_id.max() < k  # ...has a class,
  assert sorted(set(chosen.from_label_id.tolist())) == list(range(k))  # every class an id,
  assert chosen.to_label_id.shape == (k,) and chosen.to_label_id.max() < 35  # and one back.
  assert chosen.palette.shape == (k, 3) and len({tuple(c) for c in chosen.palette}) == k
  for cls, label_id in enumerate(chosen.to_label_id):
    assert chosen.from_label_id[label_id] == cls, chosen.class_names[cls]


def test_the_streets_set_keeps_every_class_the_scenes_draw():
  chosen = label_sets.get_label_set('streets')
  ids = np.array(streets.CLASS_IDS)
  np.testing.assert_array_equal(chosen.to_label_id[chosen.from_label_id[ids]], ids)
  assert chosen.class_names[0] == 'other' and chosen.to_label_id[0] == 0
  assert chosen.from_label_id[cityscapes_labels.CLASS_NAMES.index('bus')] == 0
  with pytest.raises(ValueError, match='unknown label set'):
    label_sets.get_label_set('nope')


def test_relabeled_source_refuses_ids_outside_cityscapes():
  chosen = label_sets.get_label_set('streets')
  source = label_sets.RelabeledSource([{'label': np.array([[7, 26], [40, 1]])}], chosen)
  with pytest.raises(ValueError, match='label id 40 is not a Cityscapes label id'):
    source[0]


def test_connected_components_give_one_instance_per_blob():
  car, person, road = 26, 24, 7
  labels = np.full((1, 6, 8), road)
  labels[0, 0:2, 0:2] = car  # Blob 0 of cars.
  labels[0, 2:4, 2:4] = car  # Touches blob 0 at a corner only: 4-connectivity keeps it apart.
  labels[0, 0:3, 6:8] = car  # Blob 2.
  labels[0, 4:6, 0:3] = person
  labels[0, 5, 3] = person  # The same person blob.
  inst = dream.instance_maps(labels)[0]
  np.testing.assert_array_equal(np.unique(inst[labels[0] == car]), [26000, 26001, 26002])
  assert len(np.unique(inst[0:2, 0:2])) == len(np.unique(inst[2:4, 2:4])) == 1
  assert inst[0, 0] != inst[2, 2]
  np.testing.assert_array_equal(np.unique(inst[labels[0] == person]), [24000])
  assert (inst[labels[0] == road] == road).all()  # Stuff keeps its label id.


def test_slerp_runs_from_one_latent_to_the_other():
  z0, z1 = jax.random.normal(jax.random.key(0), (2, 16))
  path = dream.slerp(z0, z1, 5)
  np.testing.assert_allclose(path[0], z0, atol=1e-5)
  np.testing.assert_allclose(path[-1], z1, atol=1e-5)
  norms = jnp.linalg.norm(path, axis=1)
  assert float(norms.min()) > 0.8 * min(jnp.linalg.norm(z0), jnp.linalg.norm(z1))


def test_semgan_networks_draw_and_score_non_square_maps():
  g = LatentToLabelGenerator(num_classes=5, image_size=32, width=64, base_features=4, kernel_size=4)
  z = jnp.zeros((2, 8))
  variables = g.init(jax.random.key(0), z, train=False)
  maps = g.apply(variables, z, train=False)
  assert maps.shape == (2, 32, 64, 5)
  assert variables['params']['project']['kernel'].shape[1] == 4 * 8 * 4 * 2**2  # A 4x8 grid.
  d = DCGANDiscriminator(image_size=32, width=64, base_features=4, kernel_size=4)
  d_vars = d.init(jax.random.key(1), maps, train=False)
  logits, features = d.apply(d_vars, maps, train=False)
  assert logits.shape == (2,) and features[-1].shape[1:3] == (4, 8)
  with pytest.raises(ValueError, match='cannot be halved'):
    LatentToLabelGenerator(num_classes=5, image_size=32, width=60).init(jax.random.key(0), z)


@pytest.fixture(scope='module')
def trained_pair(tfds_dir, tmp_path_factory):
  """The tiny streets SemGAN (13 classes at 32x64) and the tiny streets SemanticGAN."""
  root = tmp_path_factory.mktemp('pair')
  configs = {
    'semgan': _load_config_module('streets_semgan').get_config('tiny'),
    'semanticgan': _load_config_module('streets').get_config('tiny'),
  }
  configs['semanticgan'].evals.photos.every_steps = 0  # Not evaluated here.
  for role, config in configs.items():
    config.data.data_dir = tfds_dir
    runner.train(TASKS[role], config, str(root / role))
  return {'root': root, 'configs': configs}


def test_semgan_learns_street_layouts_in_their_classes(trained_pair, tfds_dir):
  config = trained_pair['configs']['semgan']
  workdir = str(trained_pair['root'] / 'semgan')
  results = runner.evaluate(TASKS['semgan'], config, workdir)
  entry = results['evaluators']['maps']
  assert entry['protocol']['image_size'] == '32x64'
  names = label_sets.get_label_set('streets').class_names
  assert {f'class_share/{n}' for n in names} <= set(entry['metrics'])
  assert np.isfinite(entry['metrics']['swd_avg']) and entry['metrics']['off_palette_fraction'] == 0
  paths = runner.sample(TASKS['semgan'], config, workdir, num_samples=3)
  ids = np.load(paths['npy'])
  assert ids.shape == (3, 32, 64) and ids.min() >= 0 and ids.max() < 13


def _dream_cli(repo_root, compilation_cache_dir, *args):
  env = dict(
    os.environ,
    XLA_FLAGS=FAST_COMPILE_FLAGS,
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  command = [sys.executable, '-m', 'semgan_jax.main', *args]
  return subprocess.run(
    command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False
  )


def test_dream_end_to_end(trained_pair, repo_root, compilation_cache_dir):
  root = trained_pair['root']
  workdir = root / 'dream'
  result = _dream_cli(
    repo_root,
    compilation_cache_dir,
    '--mode=dream',
    '--config=configs/dream_streets.py',
    f'--workdir={workdir}',
    f'--config.dream.semgan_workdir={root / "semgan"}',
    f'--config.dream.semanticgan_workdir={root / "semanticgan"}',
    '--config.dream.interpolation_frames=3',
    '--num_samples=5',
    '--sample_seed=7',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = workdir / 'dream'
  assert sorted(p.name for p in out.iterdir()) == [
    'dream_seed7.npy',
    'dream_seed7.png',
    'interpolation_seed7.gif',
    'interpolation_seed7.png',
  ]
  ids = np.load(out / 'dream_seed7.npy')
  assert ids.shape == (5, 32, 64) and ids.dtype == np.int32
  # The translator's label ids: those of the streets classes (or 0 for 'other').
  assert set(np.unique(ids).tolist()) <= {0, *streets.CLASS_IDS}
  with Image.open(out / 'dream_seed7.png') as grid:  # 5 rows of (map | photo), upscaled 2x.
    assert grid.size == (2 * (2 * 66 + 2), 2 * (5 * 34 + 2))
  with Image.open(out / 'interpolation_seed7.png') as strip:  # Maps above photos, 3 frames.
    assert strip.size == (2 * (3 * 66 + 2), 2 * (2 * 34 + 2))
  with Image.open(out / 'interpolation_seed7.gif') as gif:
    assert gif.n_frames == 3 and gif.size == (2 * (2 * 66 + 2), 2 * 36)


def _fake_run(path, config):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps(config.to_dict()))
  return str(path)


def _dream_config(
  tmp_path, semgan_changes=(), semanticgan_changes=(), semgan_file='streets_semgan'
):
  config = _load_config_module('dream_streets').get_config()
  halves = {
    'semgan': _load_config_module(semgan_file).get_config('tiny'),
    'semanticgan': _load_config_module('streets').get_config('tiny'),
  }
  for role, changes in (('semgan', semgan_changes), ('semanticgan', semanticgan_changes)):
    for field, value in changes:
      section, name = field.split('.')
      halves[role][section][name] = value
    config.dream[f'{role}_workdir'] = _fake_run(tmp_path / role, halves[role])
  return config


@pytest.mark.parametrize(
  ('semgan_file', 'semgan_changes', 'semanticgan_changes', 'message'),
  [
    ('streets_semgan', (), (('data.height', 64), ('data.width', 128)), 'draws 32x64 maps, but'),
    ('streets_semgan', (('model.head', 'rgb'),), (), 'draws RGB images'),
    ('shapes', (), (), 'train SemGAN on a street data set with a label set'),
    ('streets_semgan', (), (('data.num_classes', 20),), 'up to 26, but the translator reads 20'),
  ],
)
def test_mismatched_halves_are_one_error_naming_both(
  tmp_path, semgan_file, semgan_changes, semanticgan_changes, message
):
  config = _dream_config(tmp_path, semgan_changes, semanticgan_changes, semgan_file)
  with pytest.raises(UserInputError, match=message) as info:
    TASKS['dream'].halves(config)
  assert str(tmp_path / 'semgan') in str(info.value)
  assert str(tmp_path / 'semanticgan') in str(info.value)


def test_a_bad_dream_config_writes_nothing(tmp_path, repo_root, compilation_cache_dir):
  config = _dream_config(tmp_path)
  swapped = [
    f'--config.dream.semgan_workdir={config.dream.semanticgan_workdir}',
    f'--config.dream.semanticgan_workdir={config.dream.semgan_workdir}',
  ]
  missing = [f'--config.dream.semgan_workdir={tmp_path / "nowhere"}']
  cases = {
    "holds a 'semanticgan' run; expected a 'semgan' run": ['--mode=dream', *swapped],
    'holds no trained run (config.json is missing)': ['--mode=dream', *missing],
    '--mode=train does not run config.task=': ['--mode=train'],
  }
  for message, args in cases.items():
    workdir = tmp_path / 'out'
    result = _dream_cli(
      repo_root,
      compilation_cache_dir,
      '--config=configs/dream_streets.py',
      f'--workdir={workdir}',
      *args,
    )
    assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
    assert not workdir.exists()
  result = _dream_cli(
    repo_root,
    compilation_cache_dir,
    '--mode=dream',
    '--config=configs/shapes.py:tiny',
    f'--workdir={tmp_path / "out"}',
  )
  assert "--mode=dream does not run config.task='semgan'" in result.stderr, result.stderr[-2000:]


def test_a_bad_label_set_writes_nothing(tfds_dir, tmp_path):
  unknown = _load_config_module('streets_semgan').get_config('tiny')
  shapes = _load_config_module('shapes').get_config('tiny')
  shapes.data.label_set = 'streets'
  cases = {
    "config.data: unknown label set 'nope'": (unknown, 'nope'),
    'reads Cityscapes label ids, which colored_shapes does not hold': (shapes, 'streets'),
  }
  for message, (config, name) in cases.items():
    config.data.data_dir, config.data.label_set = tfds_dir, name
    with pytest.raises(UserInputError, match=message):
      runner.train(TASKS['semgan'], config, str(tmp_path / 'run'))
    assert not (tmp_path / 'run').exists()
