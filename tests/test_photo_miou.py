"""ERFNet mIoU in the `photos` evaluator, against a NumPy reference on the streets set (32x64)."""

import dataclasses
import functools
import re

import jax
import numpy as np
import pytest
from flax import traverse_util

from semgan_jax import segmenter
from semgan_jax.data import cityscapes
from semgan_jax.errors import UserInputError
from semgan_jax.evaluation import evaluator as evaluator_lib
from semgan_jax.evaluation import photo_evaluator
from semgan_jax.models import ERFNet, erfnet
from semgan_jax.tasks import TASKS
from semgan_jax.train import runner
from semgan_jax.train.semanticgan_step import translate
from semgan_jax.weights import erfnet as erfnet_weights
from semgan_jax.weights import npz_io

K = segmenter.NUM_SCORED
# A class that the streets maps never hold and that the segmenter is made never to predict.
ABSENT = segmenter.CLASS_NAMES.index('train')


@pytest.fixture(scope='module')
def segmenter_npz(erfnet_npz, tmp_path_factory):
  """The random ERFNet with its output biases shifted: the void channel always the largest
  logit (the evaluator must leave it out of the argmax), `ABSENT` never the largest."""
  flat = traverse_util.flatten_dict(erfnet_weights.load_params(erfnet_npz), sep='/')
  bias = flat['params/decoder/output_conv/bias'].copy()
  bias[erfnet.VOID_CLASS] += 1e3
  bias[ABSENT] -= 1e3
  flat['params/decoder/output_conv/bias'] = bias
  return npz_io.write_npz_atomically(tmp_path_factory.mktemp('segmenter') / 'erfnet.npz', flat)


@pytest.fixture(scope='module')
def miou_config(streets_config, segmenter_npz):
  """mIoU on, SWD off (one small compile); 12 of the 20 validation pairs in batches of 8."""
  config = streets_config.copy_and_resolve_references()
  config.evals.photos.swd = False
  config.evals.photos.miou = True
  config.evals.photos.segmenter_weights = str(segmenter_npz)
  # The reference below rounds G's photos to uint8 outside the evaluator's jitted pass. With
  # resize-conv (configs/streets.py's default) XLA's fused pass rounds a few pixels' last bit
  # differently and flips their class (measured: 2 classes' IoU off by 1e-5); the transposed G
  # rounds alike in both, so the bookkeeping is checked exactly with it.
  config.model.upsample = 'transpose'
  assert config.evals.photos.num_images % config.evals.photos.batch_size  # a padded last batch
  return config


@pytest.fixture(scope='module')
def setup(miou_config, tmp_path_factory):
  """A training run's parts, as the runner builds them before it writes anything (the untrained
  state, the evaluators)."""
  workdir = tmp_path_factory.mktemp('miou') / 'never_written'
  run = runner.open_run(TASKS['semanticgan'], miou_config, str(workdir), mode='train')
  assert not workdir.exists()
  return run


def _confusion(train_ids: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """(K, K) counts of (true, predicted) training ids over non-void pixels, by np.bincount."""
  scored = train_ids != cityscapes.IGNORE_TRAIN_ID
  pairs = train_ids[scored].astype(np.int64) * K + predictions[scored]
  return np.bincount(pairs, minlength=K * K).reshape(K, K)


def _ious(confusion: np.ndarray) -> np.ndarray:
  """TP / (TP + FP + FN) per class; NaN where a class is neither true nor predicted."""
  true_positive = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  return np.array([tp / u if u else np.nan for tp, u in zip(true_positive, union, strict=True)])


def test_miou_matches_a_per_image_reference(miou_config, setup, segmenter_npz):
  spec, load_split, state = setup.spec, setup.data.load_split, setup.state
  evaluator = setup.evaluators['photos']
  result = evaluator.run(state)
  metrics, protocol = result['metrics'], result['protocol']

  # The reference: image by image, G's photo rounded to uint8 and the real photo, each segmented
  # by ERFNet on [0, 1] inputs, the argmax over the 19 training-id channels.
  variables = erfnet_weights.load_params(segmenter_npz)
  segment = jax.jit(lambda images: ERFNet().apply(variables, images))
  generate = jax.jit(functools.partial(translate, num_classes=spec.num_classes))
  source = load_split('validation')
  real_confusion = np.zeros((K, K), np.int64)
  fake_confusion = np.zeros((K, K), np.int64)
  for i in range(miou_config.evals.photos.num_images):
    example = source[i]
    label = np.asarray(example['label'], np.int32)[None]
    fake = np.asarray(generate(state, label, np.asarray(example['instance'], np.int32)[None]))
    fake = np.clip(np.round((fake.astype(np.float64) + 1) * 127.5), 0, 255)
    train_ids = cityscapes.TRAIN_IDS[label]
    counts = {}
    for name, photo in (('real', np.asarray(example['image'])[None]), ('fake', fake)):
      logits = np.asarray(segment(photo.astype(np.float32) / 255.0))
      counts[name] = _confusion(train_ids, logits[..., :K].argmax(-1))
    real_confusion += counts['real']
    fake_confusion += counts['fake']
    if i == 0:
      first_image = counts

  for suffix, confusion in (('', fake_confusion), ('_real', real_confusion)):
    expected = _ious(confusion)
    per_class = [metrics[f'iou{suffix}/{name}'] for name in segmenter.CLASS_NAMES]
    np.testing.assert_allclose(per_class, expected, rtol=1e-12)  # NaN where NaN is expected
    np.testing.assert_allclose(metrics[f'miou{suffix}'], np.nanmean(expected), rtol=1e-12)
    # Only `ABSENT` is in neither the maps nor the predictions: NaN, out of the mean.
    assert np.flatnonzero(np.isnan(expected)).tolist() == [ABSENT] and (expected > 0).any()
    # Unmasked padding (4 more copies of the first pair) would change the scores.
    padded = _ious(confusion + 4 * first_image['fake' if suffix == '' else 'real'])
    assert not np.allclose(padded, expected, equal_nan=True)
  assert metrics['miou'] != metrics['miou_real']
  assert metrics['num_images'] == 12 and 'swd_avg' not in metrics
  assert protocol['miou_segmenter'] == (
    f'ERFNet (erfnet_pytorch) of width 1.0, weights: {segmenter_npz}'
  )
  assert protocol['miou_input'].startswith('32x64') and 'no resize' in protocol['miou_input']
  assert protocol['miou_labels'] == 'Cityscapes label ids -> 19 train ids, void ignored'
  assert 'argmax over the 19' in protocol['miou_prediction']


@pytest.mark.parametrize(
  ('change', 'message'),
  [
    ({'height': 36}, 'ERFNet needs a height and width divisible by 8; the data is 36x64'),
    ({'num_classes': 19}, 'the segmenter reads Cityscapes training ids, .* has 19 classes'),
  ],
)
def test_miou_needs_cityscapes_ids_and_erfnet_sizes(miou_config, setup, change, message):
  spec = dataclasses.replace(setup.spec, **change)
  with pytest.raises(evaluator_lib.EvalConfigError, match=f'config.evals.photos.miou: {message}'):
    photo_evaluator.check_photo_config('photos', miou_config.evals.photos, spec, 20, 8)


def test_missing_segmenter_weights_say_how_to_get_them(miou_config, tmp_path):
  config = miou_config.copy_and_resolve_references()
  config.evals.photos.segmenter_weights = str(tmp_path / 'missing.npz')
  with pytest.raises(UserInputError) as error:
    runner.train(TASKS['semanticgan'], config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  message = str(error.value)
  assert message.startswith(
    f'config.evals.photos.segmenter_weights: no ERFNet weights at {tmp_path}'
  )
  assert 'python -m semgan_jax.weights.erfnet --src erfnet_pretrained.pth' in message
  assert re.search(r'\(or switch mIoU off: --config\.evals\.photos\.miou=False\)$', message)


def test_a_second_evaluator_scores_with_a_narrower_segmenter(miou_config, setup, tmp_path):
  """Two `photos` evaluators, each with its own segmenter: the reproduction table's independent
  judge is a half-width ERFNet, built from its file's shapes; its mIoU is its own."""
  variables = ERFNet(width=0.5).init(jax.random.key(9), np.zeros((1, 32, 64, 3), np.float32))
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep='/')
  narrow = npz_io.write_npz_atomically(tmp_path / 'narrow.npz', flat)
  config = miou_config.copy_and_resolve_references()
  config.evals.judge = config.evals.photos.copy_and_resolve_references()
  config.evals.judge.segmenter_weights = str(narrow)
  run = runner.open_run(TASKS['semanticgan'], config, str(tmp_path / 'never'), mode='train')
  judged = run.evaluators['judge'].run(setup.state)
  assert (
    judged['protocol']['miou_segmenter']
    == f'ERFNet (erfnet_pytorch) of width 0.5, weights: {narrow}'
  )
  reference = setup.evaluators['photos'].run(setup.state)['metrics']
  assert np.isfinite(judged['metrics']['miou']) and judged['metrics']['miou'] != reference['miou']
  assert not (tmp_path / 'never').exists()
