"""End-to-end tests of the command line (`python -m semgan_jax.main`) in subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAST_COMPILE_FLAGS
from PIL import Image

from semgan_jax.tasks import TASKS

TIMEOUT_S = 600


@pytest.fixture(scope='module')
def cli(repo_root, compilation_cache_dir, tiny_config):
  """Runs the CLI on the tiny config with the session's data set, on the default single device."""
  env = dict(os.environ)
  # The CLI runs as a user would run it, on one CPU device (compiled as fast as the tests).
  env['XLA_FLAGS'] = FAST_COMPILE_FLAGS
  env.update(
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  base = [sys.executable, '-m', 'semgan_jax.main']
  tiny = ['--config=configs/shapes.py:tiny', f'--config.data.data_dir={tiny_config.data.data_dir}']

  def command(*args, config=True):
    return base + (tiny if config else []) + list(args)

  def popen(*args, config=True):
    return subprocess.Popen(
      command(*args, config=config),
      cwd=repo_root,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )

  def run(*args, config=True):
    return communicate(popen(*args, config=config))

  def communicate(process):
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

  run.popen = popen
  run.communicate = communicate
  return run


def _details(result) -> str:
  return f'exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}'


def _error_line(result) -> str:
  """The last line of stderr, where the CLI reports a user error."""
  lines = result.stderr.strip().splitlines()
  return lines[-1] if lines else ''


@pytest.fixture(scope='module')
def trained_workdir(cli, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cli') / 'run'
  result = cli(f'--workdir={workdir}')
  assert result.returncode == 0, _details(result)
  return workdir


def test_train_end_to_end(trained_workdir):
  assert (trained_workdir / 'checkpoints' / '4').is_dir()
  png = trained_workdir / 'samples' / 'step_0000004.png'
  with Image.open(png) as image:
    image.verify()
  with Image.open(png) as image:
    assert image.format == 'PNG' and image.mode == 'RGB'
    # 8 samples of 64x64 on a 3x3 grid with 2-pixel gaps, upscaled 2x.
    assert image.size == (2 * (3 * 66 + 2),) * 2
  config = json.loads((trained_workdir / 'config.json').read_text())
  assert config['model']['head'] == 'semantic'
  assert config['train']['num_steps'] == 4


def test_sample_mode(cli, trained_workdir):
  result = cli(f'--workdir={trained_workdir}', '--mode=sample', '--num_samples=6')
  assert result.returncode == 0, _details(result)
  samples = trained_workdir / 'samples'
  assert str(samples / 'sample_step4.png') in result.stdout
  with Image.open(samples / 'sample_step4.png') as image:
    image.verify()
  ids = np.load(samples / 'sample_step4.npy')
  assert ids.shape == (6, 64, 64)
  assert np.issubdtype(ids.dtype, np.integer)
  assert ids.min() >= 0 and ids.max() < 4


def test_eval_mode(cli, trained_workdir):
  result = cli(f'--workdir={trained_workdir}', '--mode=eval', '--checkpoint_step=2')
  assert result.returncode == 0, _details(result)
  path = trained_workdir / 'eval' / 'step_0000002.json'
  assert str(path) in result.stdout
  results = json.loads(path.read_text())
  metrics = results['evaluators']['maps']['metrics']
  assert metrics['num_images'] == 16
  assert np.isfinite(metrics['swd_avg']) and np.isfinite(metrics['ms_ssim'])
  assert metrics['off_palette_fraction'] == 0.0
  assert results['evaluators']['maps']['protocol']['ms_ssim'].startswith('variant progan')


def test_eval_mode_errors_touch_nothing(cli, trained_workdir, tmp_path, file_listing):
  before = file_listing(trained_workdir)
  wrong = tmp_path / 'wrong_architecture.npz'
  np.savez(wrong, **{'conv/kernel': np.zeros((3, 3, 3, 8), np.float32)})
  runs = {
    'no checkpoint at step 3': cli.popen(
      f'--workdir={trained_workdir}', '--mode=eval', '--checkpoint_step=3'
    ),
    'expected 2 to the 2916 examples': cli.popen(
      f'--workdir={trained_workdir}', '--mode=eval', '--config.evals.maps.num_images=3000'
    ),
    # A weights file of the wrong architecture is named, with the first key that differs.
    'wrong_architecture.npz': cli.popen(
      f'--workdir={trained_workdir}',
      '--mode=eval',
      '--config.evals.maps.fid=True',
      f'--config.evals.maps.fid_weights={wrong}',
    ),
  }
  for expected, process in runs.items():
    result = cli.communicate(process)
    assert result.returncode != 0, _details(result)
    assert 'Traceback' not in result.stderr, _details(result)
    line = _error_line(result)
    assert line.startswith('semgan_jax: error:') and expected in line, _details(result)
  assert file_listing(trained_workdir) == before


def test_incompatible_checkpoint(cli, trained_workdir, file_listing):
  before = file_listing(trained_workdir)
  result = cli(f'--workdir={trained_workdir}', '--config.model.kernel_size=5')
  assert result.returncode != 0, _details(result)
  assert 'Traceback' not in result.stderr, _details(result)
  line = _error_line(result)
  assert line.startswith('semgan_jax: error:') and 'incompatible' in line, _details(result)
  assert 'model.kernel_size' in line
  assert file_listing(trained_workdir) == before


@pytest.fixture(scope='module')
def bad_runs(cli, tmp_path_factory):
  """Each bad invocation, launched together (they only import, parse and fail)."""
  root = tmp_path_factory.mktemp('bad')
  blocker = root / 'a_file'
  blocker.write_text('not a directory')
  cases = {
    'config_file': (root / 'w_config_file', ['--config=configs/nope.py'], False),
    'unknown_field': (root / 'w_unknown_field', ['--config.model.nonexistent=3'], True),
    'bad_value': (root / 'w_bad_value', ['--config.model.head=foo'], True),
    'workdir': (blocker / 'run', [], True),
  }
  processes = {
    name: cli.popen(f'--workdir={workdir}', *args, config=config)
    for name, (workdir, args, config) in cases.items()
  }
  results = {name: cli.communicate(p) for name, p in processes.items()}
  assert blocker.read_text() == 'not a directory'
  return {name: (results[name], cases[name][0]) for name in cases}


@pytest.mark.parametrize(
  ('case', 'expected'),
  [
    ('config_file', 'configs/nope.py'),
    ('unknown_field', 'nonexistent'),
    ('bad_value', 'config.model.head'),
    ('workdir', 'a_file/run'),
  ],
)
def test_bad_input(bad_runs, case, expected):
  result, workdir = bad_runs[case]
  assert result.returncode != 0, _details(result)
  assert expected in result.stderr, _details(result)
  assert not workdir.exists()


@pytest.mark.parametrize('case', ['bad_value', 'workdir'])
def test_user_errors_are_one_line(bad_runs, case):
  result, _ = bad_runs[case]
  assert 'Traceback' not in result.stderr, _details(result)
  assert _error_line(result).startswith('semgan_jax: error:'), _details(result)


@pytest.mark.parametrize('case', ['config_file', 'unknown_field'])
def test_flag_errors_are_one_line(bad_runs, case):
  result, _ = bad_runs[case]
  assert 'Traceback' not in result.stderr, _details(result)


# The tiny variant of each task's config file, run as a user runs it.
CONFIG_FILES = {'semgan': 'shapes', 'semanticgan': 'streets', 'segmenter': 'streets_erfnet'}


@pytest.mark.parametrize('name', sorted(CONFIG_FILES))
def test_every_task_through_every_mode(cli, tiny_config, tmp_path, name):
  """Each task through main.py's lookup: train, then sample (or a one-line refusal), then eval."""
  workdir = tmp_path / name
  args = [
    f'--config=configs/{CONFIG_FILES[name]}.py:tiny',
    f'--config.data.data_dir={tiny_config.data.data_dir}',
    f'--workdir={workdir}',
  ]
  result = cli(*args, config=False)
  assert result.returncode == 0, _details(result)
  assert (workdir / 'checkpoints' / '4').is_dir()
  result = cli(*args, '--mode=sample', '--num_samples=2', config=False)
  task = TASKS[name]
  if task.sample_name:
    assert result.returncode == 0, _details(result)
    with Image.open(workdir / 'samples' / f'{task.sample_name}_step4.png') as image:
      if name == 'semanticgan':  # 2 rows of (label | generated | real) 32x64 tiles, 2 px gaps.
        assert image.size == (3 * 66 + 2, 2 * 34 + 2)
  else:
    assert result.returncode != 0 and 'Traceback' not in result.stderr, _details(result)
    assert 'has no samples' in _error_line(result), _details(result)
  result = cli(*args, '--mode=eval', config=False)
  assert result.returncode == 0, _details(result)
  results = json.loads((workdir / 'eval' / 'step_0000004.json').read_text())
  for entry in results['evaluators'].values():
    assert all(np.isfinite(v) for k, v in entry['metrics'].items() if '/' not in k)
