"""ERFNet's training loop on the procedural streets set; SIPL loads its export."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import _load_config_module

from semgan_jax.train import segmenter_loop, semanticgan_loop
from semgan_jax.train.loop import UserInputError
from semgan_jax.weights import erfnet as erfnet_weights


@pytest.fixture(scope='module')
def config(tfds_dir):
  """configs/streets_erfnet.py:tiny (32x64) reading the session's data dir; copy before changing."""
  config = _load_config_module('streets_erfnet').get_config('tiny')
  config.data.data_dir = tfds_dir
  return config


def test_loop_trains_resumes_exactly_and_exports_sipl_weights(config, streets_config, tmp_path):
  config = config.copy_and_resolve_references()
  config.train.ckpt_every_steps = 2  # Checkpoints at steps 2 and 4.
  straight = segmenter_loop.train_segmenter(config, str(tmp_path / 'a'))
  # A copy of the run as it was at step 2 (no checkpoint 4) continues to the same step 4.
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '4')
  config.evals.miou.every_steps = 0  # Evaluated in the straight run only.
  resumed = segmenter_loop.train_segmenter(config, str(tmp_path / 'b'))
  assert int(straight.step) == int(resumed.step) == 4
  initial = segmenter_loop.create_segmenter_state(config, jax.random.key(0)).variables['params']
  trained = straight.variables['params']
  assert any(
    np.any(np.asarray(a) != np.asarray(b))
    for a, b in zip(*map(jax.tree.leaves, (initial, trained)), strict=True)
  )
  for a, b in zip(*map(jax.tree.leaves, (straight.variables, resumed.variables)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Validation mIoU at the last step (12 pairs, a padded batch of 8), and again by --mode=eval.
  results = json.loads((tmp_path / 'a' / 'eval' / 'step_0000004.json').read_text())
  metrics = results['evaluators']['miou']['metrics']
  assert 0 <= metrics['miou'] <= 1 and 0 <= metrics['pixel_accuracy'] <= 1
  again = segmenter_loop.evaluate_segmenter(config, str(tmp_path / 'a'))
  assert again['evaluators']['miou']['metrics']['miou'] == pytest.approx(metrics['miou'])
  # The export is what SIPL loads: the same variables, through the weights module's checks.
  path = tmp_path / 'a' / segmenter_loop.EXPORT_FILE
  loaded = erfnet_weights.load_params(path)
  for a, b in zip(*map(jax.tree.leaves, (straight.variables, loaded)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  sipl = streets_config.copy_and_resolve_references()
  sipl.loss.lambda_sipl, sipl.loss.erfnet_weights = 1.0, str(path)
  frozen = semanticgan_loop.load_frozen_params(sipl)
  assert set(frozen) == {'erfnet'} and set(frozen['erfnet']) == {'params', 'batch_stats'}


@pytest.mark.parametrize(
  ('field', 'value', 'message'),
  [
    ('model.num_classes', 19, r'config.model.num_classes=19; expected 20'),
    ('data.height', 48, r'config.data.height/width=48x64, but streets:32x64 is 32x64'),
    ('data.batch_size', 0, r'config.data.batch_size=0'),
    ('evals.miou.num_images', 500, r'config.evals.miou.num_images=500; expected 1 to the 20'),
    ('optim.lr', 0.0, r'config.optim.lr=0.0'),
  ],
)
def test_bad_config_is_one_line(config, tmp_path, field, value, message):
  bad = config.copy_and_resolve_references()
  *sections, name = field.split('.')
  node = bad
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(UserInputError, match=message):
    segmenter_loop.train_segmenter(bad, str(tmp_path / 'run'))
