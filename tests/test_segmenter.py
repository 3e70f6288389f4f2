"""The segmenter task on the procedural streets set: its step, mIoU and the export SIPL loads."""

import jax
import numpy as np
import pytest
from conftest import _load_config_module

from semgan_jax import losses, segmenter
from semgan_jax.errors import UserInputError
from semgan_jax.models import erfnet
from semgan_jax.tasks import TASKS, semanticgan
from semgan_jax.tasks import segmenter as segmenter_task
from semgan_jax.train import runner, semanticgan_step
from semgan_jax.weights import erfnet as erfnet_weights


@pytest.fixture(scope='module')
def config(tfds_dir):
  """configs/streets_erfnet.py:tiny (32x64) reading the session's data dir; copy before changing."""
  config = _load_config_module('streets_erfnet').get_config('tiny')
  config.data.data_dir = tfds_dir
  return config


def test_training_moves_erfnet_and_exports_what_sipl_loads(config, streets_config, tmp_path):
  workdir = tmp_path / 'a'
  trained = runner.train(TASKS['segmenter'], config, str(workdir))
  initial = segmenter_task.create_segmenter_state(config, jax.random.key(0)).variables['params']
  assert any(
    np.any(np.asarray(a) != np.asarray(b))
    for a, b in zip(*map(jax.tree.leaves, (initial, trained.params)), strict=True)
  )
  # The export holds the trained variables and passes the weights module's checks.
  path = workdir / segmenter_task.EXPORT_FILE
  loaded = erfnet_weights.load_params(path)
  for a, b in zip(*map(jax.tree.leaves, (trained.variables, loaded)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  sipl = streets_config.copy_and_resolve_references()
  sipl.loss.lambda_sipl, sipl.loss.erfnet_weights = 1.0, str(path)
  frozen = semanticgan.load_frozen_params(sipl)
  assert set(frozen) == {'erfnet'} and set(frozen['erfnet']) == {'params', 'batch_stats'}
  # The miou evaluator's number is the confusion of the exported network on the split.
  run = runner.open_run(TASKS['segmenter'], config, str(workdir), mode='eval')
  metrics = run.evaluators['miou'].run(trained)['metrics']
  pairs = [run.data.load_split('validation')[i] for i in range(config.evals.miou.num_images)]
  photos = np.stack([p['image'] for p in pairs])
  labels = segmenter.train_ids(np.stack([np.asarray(p['label'], np.int32) for p in pairs]))
  logits = segmenter_task.segment(trained, photos)
  expected = segmenter.miou_metrics(np.asarray(segmenter.confusion(labels, logits)))
  assert metrics['miou'] == pytest.approx(expected['miou'])
  assert metrics['pixel_accuracy'] == pytest.approx(expected['pixel_accuracy'])


def test_train_ids_follow_cityscapes():
  ids = np.array([[-1, 0, 7, 8, 26, 33, 34]])
  np.testing.assert_array_equal(segmenter.train_ids(ids), [[255, 255, 0, 1, 13, 18, 255]])
  assert segmenter.data_error(35, 32, 64) is None
  assert 'divisible by 8' in segmenter.data_error(35, 30, 64)
  assert '35 Cityscapes label ids' in segmenter.data_error(4, 32, 64)


def test_a_narrower_segmenter_trains_exports_and_judges(config, streets_config, tmp_path):
  """A half-width ERFNet (the independent judge of the reproduction table) goes through the same
  export, and SIPL and the mIoU evaluator build it from the file's shapes."""
  narrow = config.copy_and_resolve_references()
  narrow.model.width = 0.5
  workdir = tmp_path / 'narrow'
  runner.train(TASKS['segmenter'], narrow, str(workdir))
  loaded = erfnet_weights.load_params(workdir / segmenter_task.EXPORT_FILE)
  assert erfnet.width_of(loaded) == 0.5
  assert loaded['params']['encoder']['initial_block']['bn']['bias'].shape == (8,)
  assert loaded['params']['encoder']['layers_6']['bn']['bias'].shape == (64,)
  # SIPL with it: the frozen network's loss of a batch equals its cross-entropy, built at width 0.5.
  sipl_config = streets_config.copy_and_resolve_references()
  sipl_config.loss.lambda_sipl = 1.0
  sipl_config.loss.erfnet_weights = str(workdir / segmenter_task.EXPORT_FILE)
  frozen = semanticgan.load_frozen_params(sipl_config)
  run = runner.open_run(TASKS['segmenter'], narrow, str(workdir), mode='eval')
  example = run.data.load_split('validation')[0]
  batch = {'label': np.asarray(example['label'], np.int32)[None]}
  fake = np.asarray(example['image'], np.float32)[None] / 127.5 - 1
  loss = semanticgan_step.make_sipl_loss()(frozen, fake, batch)
  logits = erfnet.ERFNet(width=0.5).apply(loaded, (fake + 1) / 2)
  expected = losses.sipl_loss(logits, segmenter.train_ids(batch['label']), segmenter.VOID)
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize('width', [0.2, 0.3, 0.0])
def test_a_width_erfnet_cannot_have_is_refused_before_anything_is_written(config, tmp_path, width):
  bad = config.copy_and_resolve_references()
  bad.model.width = width
  with pytest.raises(UserInputError, match=r'config.model.width: ERFNet width=.* multiple of 1/16'):
    runner.train(TASKS['segmenter'], bad, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()
