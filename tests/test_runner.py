"""The runner, once per task of `TASKS`: exact resume, outputs, refused configs and workdirs."""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import _load_config_module, read_scalars

from semgan_jax import tasks
from semgan_jax.errors import UserInputError
from semgan_jax.tasks import TASKS
from semgan_jax.train import checkpointing, optim, runner

# The tiny variant of each trained task's config file (the dream task trains nothing: it chains
# two trained runs, tests/test_dream.py).
CONFIG_FILES = {'semgan': 'shapes', 'semanticgan': 'streets', 'segmenter': 'streets_erfnet'}
TRAINED = sorted(name for name, task in TASKS.items() if 'train' in task.modes)


def test_every_trained_task_has_a_tiny_config():
  assert set(CONFIG_FILES) == set(TRAINED)
  assert set(TASKS) - set(TRAINED) == {'dream'}


def tiny(name: str, tfds_dir: str):
  config = _load_config_module(CONFIG_FILES[name]).get_config('tiny')
  config.data.data_dir = tfds_dir
  config.train.ckpt_every_steps = 2  # Checkpoints at steps 2 and 4.
  config.train.log_every_steps = 1
  if config.optim.schedule == 'poly':
    # The segmenter's lr decays until train.num_steps by default; the resumed runs stop at step 2
    # first, so the decay's length is fixed here to give every run the same schedule.
    config.optim.decay_steps = 4
  return config


def _leaves(state) -> dict:
  tree = checkpointing.state_to_tree(state)
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(tree)}


@pytest.fixture(scope='module', params=TRAINED)
def runs(request, tfds_dir, tmp_path_factory):
  """Per task: the tiny run straight through (a), and one stopped at step 2 then resumed (b)."""
  name = request.param
  config = tiny(name, tfds_dir)
  assert tasks.get_task(config) is TASKS[name] and config.train.num_steps == 4
  root = tmp_path_factory.mktemp(name)
  task = TASKS[name]
  straight = runner.train(task, config, str(root / 'a'))
  half = config.copy_and_resolve_references()
  half.train.num_steps = 2
  runner.train(task, half, str(root / 'b'))
  resumed = runner.train(task, config, str(root / 'b'))
  return {'task': task, 'config': config, 'root': root, 'a': straight, 'b': resumed}


def test_resume_is_exact(runs):
  a, b = runs['a'], runs['b']
  assert int(a.step) == int(b.step) == 4
  leaves_a, leaves_b = _leaves(a), _leaves(b)
  assert leaves_a.keys() == leaves_b.keys()
  for key in leaves_a:
    np.testing.assert_array_equal(leaves_a[key], leaves_b[key], err_msg=key)
  scalars_a, scalars_b = (read_scalars(runs['root'] / w) for w in 'ab')
  for step in (3, 4):
    drop = ('train/steps_per_sec', 'eval/eval_seconds')  # timings
    same = [{k: v for k, v in s[step].items() if k not in drop} for s in (scalars_a, scalars_b)]
    assert same[0].keys() == same[1].keys(), step
    # Equal, NaN included (the IoU of a class absent from labels and predictions).
    np.testing.assert_array_equal(*([s[k] for k in sorted(same[0])] for s in same), err_msg=step)


def test_outputs_and_the_learning_rate(runs):
  task, config, workdir = runs['task'], runs['config'], runs['root'] / 'a'
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == [
    '2',
    '4',
  ]
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['model'] == config.model.to_dict()
  scalars = read_scalars(workdir)
  assert sorted(scalars) == [1, 2, 3, 4]
  per_epoch = optim.steps_per_epoch(
    len(task.open_data(config, None, train=False).load_split('train')), config.data.batch_size
  )
  schedule = optim.build_schedule(config.optim, num_steps=4, per_epoch=per_epoch)
  # Every task logs its learning rate, at every logged step.
  assert scalars[4]['train/lr'] == pytest.approx(float(schedule(4)))
  if task.sample_name:
    samples = sorted(p.name for p in (workdir / 'samples').iterdir())
    assert samples == ['step_0000002.png', 'step_0000004.png']


def test_eval_and_sample_modes(runs, file_listing):
  task, config, workdir = runs['task'], runs['config'], runs['root'] / 'a'
  results = runner.evaluate(task, config, str(workdir), step=2)
  assert results['step'] == 2 and (workdir / 'eval' / 'step_0000002.json').is_file()
  assert list(results['evaluators']) == list(config.evals.keys())
  for entry in results['evaluators'].values():
    assert entry['protocol']['type'] in runner.registry.EVALUATORS
  if task.sample_name:
    paths = runner.sample(task, config, str(workdir), num_samples=2)
    assert pathlib.Path(paths['png']).name == f'{task.sample_name}_step4.png'
  else:
    before = file_listing(workdir)
    with pytest.raises(UserInputError, match='has no samples'):
      runner.sample(task, config, str(workdir), num_samples=2)
    assert file_listing(workdir) == before


def test_a_run_stopped_during_its_final_evaluation_evaluates_when_run_again(runs, tmp_path):
  """Killed after the last checkpoint, before the results were written: running the same
  command again trains nothing and writes the final evaluation, with the same numbers."""
  task, config = runs['task'], runs['config']
  if not any(entry.every_steps for entry in config.evals.values()):
    pytest.skip('no evaluator runs during training')
  workdir = tmp_path / 'copy'
  shutil.copytree(runs['root'] / 'a', workdir)
  final = workdir / 'eval' / 'step_0000004.json'
  expected = json.loads(final.read_text())['evaluators']
  final.unlink()
  runner.train(task, config, str(workdir))
  again = json.loads(final.read_text())['evaluators']
  for name, entry in expected.items():
    drop = ('eval_seconds',)
    got = {k: v for k, v in again[name]['metrics'].items() if k not in drop}
    want = {k: v for k, v in entry['metrics'].items() if k not in drop}
    np.testing.assert_array_equal(*([d[k] for k in sorted(want)] for d in (got, want)))
    assert got.keys() == want.keys()
  written = final.stat().st_mtime_ns
  runner.train(task, config, str(workdir))  # Now complete: nothing is evaluated again.
  assert final.stat().st_mtime_ns == written


def test_changed_training_fields_resume(runs):
  """Steps, lr, cadences and how the networks compute may change between runs."""
  config = runs['config'].copy_and_resolve_references()
  config.optim.lr *= 1.5
  config.train.log_every_steps = 2
  config.model.remat = True
  # Already at step 4: nothing to train, but the checkpoint is accepted and restored.
  assert int(runner.train(runs['task'], config, str(runs['root'] / 'a')).step) == 4


# An architecture field of each task; the SemanticGAN and segmenter rows change the resolution.
INCOMPATIBLE = {
  'semgan': {'model.kernel_size': 5},
  'semanticgan': {'data.config_name': '64x128', 'data.height': 64, 'data.width': 128},
  'segmenter': {'data.config_name': '64x128', 'data.height': 64, 'data.width': 128},
}


def _set(config, fields: dict):
  config = config.copy_and_resolve_references()
  for field, value in fields.items():
    *sections, name = field.split('.')
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  return config


def test_incompatible_workdir_is_refused(runs, file_listing):
  workdir = runs['root'] / 'a'
  fields = INCOMPATIBLE[runs['task'].name]
  before = file_listing(workdir)
  with pytest.raises(checkpointing.CheckpointError, match='incompatible') as info:
    runner.train(runs['task'], _set(runs['config'], fields), str(workdir))
  assert all(field in str(info.value) for field in fields)
  assert file_listing(workdir) == before


def test_another_task_in_the_workdir_is_refused(runs, tfds_dir):
  other = 'semanticgan' if runs['task'].name == 'semgan' else 'semgan'
  with pytest.raises(checkpointing.CheckpointError, match='task'):
    runner.train(TASKS[other], tiny(other, tfds_dir), str(runs['root'] / 'a'))


# Each row: one field the hostile user set, and what the one-line error must say.
SHARED_BAD = [
  ({'train.log_every_steps': 0}, 'config.train.log_every_steps=0'),
  ({'train.ckpt_every_steps': 0}, 'config.train.ckpt_every_steps=0'),
  ({'train.max_checkpoints': 0}, 'config.train.max_checkpoints=0'),
  ({'optim.lr': -1.0}, 'config.optim.lr=-1.0'),
  ({'optim.schedule': 'cosine'}, "config.optim.schedule='cosine'"),
  ({'train.num_steps': -5}, 'config.train.num_steps=-5'),
  ({'model.dtype': 'foo'}, "config.model.dtype='foo'"),
  ({'seed': -1}, 'config.seed=-1'),
  ({'data.batch_size': 0}, 'config.data.batch_size=0'),
  ({'data.batch_size': 12}, 'batch_size=12'),  # Not a multiple of the 8 devices.
  ({'data.num_classes': 5}, 'num_classes=5'),
]
TASK_BAD = {
  'semgan': [
    ({'train.sample_every_steps': 0}, 'config.train.sample_every_steps=0'),
    ({'model.head': 'foo'}, 'config.model.head'),
    ({'model.kernel_size': 0}, 'config.model.kernel_size=0'),
    ({'model.g_base_features': 0}, 'config.model.g_base_features=0'),
    ({'loss.fm_layer': 4}, 'config.loss.fm_layer=4'),
    ({'evals.maps.num_images': 100_000}, 'config.evals.maps.num_images=100000'),
    ({'data.image_size': 32}, 'config.data.image_size=32'),
    ({'data.name': 'nope'}, "'nope'"),
    ({'loss.generator': 'hinge'}, "config.loss.generator='hinge'"),
    ({'train.num_samples': 0}, 'config.train.num_samples=0'),
    ({'model.g_ema_decay': 1.0}, 'config.model.g_ema_decay=1.0'),
    ({'loss.instance_noise_std': -0.1}, 'config.loss.instance_noise_std=-0.1'),
    ({'loss.instance_noise_steps': -1}, 'config.loss.instance_noise_steps=-1; expected >= 0'),
  ],
  'semanticgan': [
    ({'train.sample_every_steps': 0}, 'config.train.sample_every_steps=0'),
    ({'model.scale': 0}, 'config.model.scale=0'),
    ({'model.num_d': 0}, 'config.model.num_d=0'),
    ({'model.g_base_features': 0}, 'config.model.g_base_features=0'),
    ({'model.dtype': 'float16'}, "config.model.dtype='float16'"),
    ({'evals.photos.num_images': 1000}, 'config.evals.photos.num_images=1000'),
    ({'evals.photos.batch_size': 3}, 'config.evals.photos.batch_size=3'),
    ({'evals.photos.every_steps': -1}, 'config.evals.photos.every_steps=-1; expected >= 0'),
    ({'evals.photos.type': 'label_maps'}, "config.task='semanticgan' is evaluated with"),
    ({'optim.schedule': 'constant', 'train.num_steps': 0}, 'config.train.num_steps=0'),
    ({'loss.instance_noise_std': -0.1}, 'config.loss.instance_noise_std=-0.1'),
    ({'loss.lambda_l1': -1.0}, 'config.loss.lambda_l1=-1.0'),
    ({'loss.instance_noise_steps': -5}, 'config.loss.instance_noise_steps=-5; expected >= 0'),
  ],
  'segmenter': [
    ({'model.num_classes': 19}, 'config.model.num_classes=19; expected 20'),
    ({'data.height': 48}, 'config.data.height/width=48x64, but streets:32x64 is 32x64'),
    ({'evals.miou.num_images': 500}, 'config.evals.miou.num_images=500; expected 1 to the 20'),
    ({'evals.miou.every_steps': -2}, 'config.evals.miou.every_steps=-2; expected >= 0'),
  ],
}
BAD = [(name, *row) for name in TRAINED for row in SHARED_BAD + TASK_BAD[name]]


@pytest.mark.parametrize(('name', 'fields', 'message'), BAD)
def test_a_bad_field_writes_nothing(tfds_dir, tmp_path, name, fields, message):
  workdir = tmp_path / 'run'
  with pytest.raises(UserInputError, match=re.escape(message)):
    runner.train(TASKS[name], _set(tiny(name, tfds_dir), fields), str(workdir))
  assert not workdir.exists()


def test_a_refused_run_leaves_the_workdir_usable(tfds_dir, tmp_path):
  """A config.json without checkpoints (an earlier refused or killed run) is no architecture."""
  workdir = tmp_path / 'run'
  config = tiny('semgan', tfds_dir)
  config.train.num_steps = 1
  workdir.mkdir()
  other = _set(config, {'model.kernel_size': 5})
  checkpointing.write_config(str(workdir), other)
  assert int(runner.train(TASKS['semgan'], config, str(workdir)).step) == 1
  assert json.loads((workdir / 'config.json').read_text())['model']['kernel_size'] == 3


def test_unwritable_workdir(tfds_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  workdir = str(blocker / 'workdir')
  with pytest.raises(UserInputError, match='cannot be written') as info:
    runner.train(TASKS['semgan'], tiny('semgan', tfds_dir), workdir)
  assert workdir in str(info.value)
  assert blocker.read_text() == 'not a directory'


def test_eval_and_sample_without_checkpoint_write_nothing(tfds_dir, tmp_path):
  workdir = tmp_path / 'never_trained'
  config = tiny('semgan', tfds_dir)
  with pytest.raises(UserInputError, match='train first'):
    runner.sample(TASKS['semgan'], config, str(workdir), num_samples=2)
  with pytest.raises(UserInputError, match='num_samples=0'):
    runner.sample(TASKS['semgan'], config, str(workdir), num_samples=0)
  with pytest.raises(UserInputError, match='train first'):
    runner.evaluate(TASKS['semgan'], config, str(workdir))
  assert not workdir.exists()


def test_unknown_task_is_named():
  config = _load_config_module('shapes').get_config('tiny')
  config.task = 'paint'
  with pytest.raises(UserInputError, match="config.task='paint'"):
    tasks.get_task(config)


@pytest.mark.parametrize(
  ('config_file', 'field', 'old', 'other'),
  [('streets', 'upsample', 'transpose', 'resize'), ('streets_erfnet', 'width', 1.0, 0.5)],
)
def test_a_field_added_later_compares_at_its_old_value(tmp_path, config_file, field, old, other):
  """Workdirs written before `model.upsample` / `model.width` existed resume under configs that
  hold the old behaviour's value, and are refused under another (configs/streets.py's own
  default is now 'resize': such a workdir needs `--config.model.upsample=transpose`)."""
  config = _load_config_module(config_file).get_config('tiny')
  config.model[field] = old
  saved = config.to_dict()
  del saved['model'][field]
  (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(saved))
  fields = ('task', 'model')
  checkpointing.check_config_compatible(str(tmp_path), config, fields)
  config.model[field] = other
  with pytest.raises(checkpointing.CheckpointError, match=f'model.{field}: checkpoint has'):
    checkpointing.check_config_compatible(str(tmp_path), config, fields)
