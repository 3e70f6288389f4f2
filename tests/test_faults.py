"""Faults a run survives: SIGTERM/SIGINT (saved, resumable), non-finite steps, corrupt files."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE_FLAGS, read_scalars

from semgan_jax import data
from semgan_jax.errors import UserInputError
from semgan_jax.tasks import TASKS
from semgan_jax.train import checkpointing, faults, runner

TIMEOUT_S = 600


def _poisoned(name: str, at_step: int):
  """The task `name` whose step `at_step` writes NaN into every float of the state and metrics."""
  base = type(TASKS[name])

  class Poisoned(base):
    def make_train_step(self, config, spec):
      step = super().make_train_step(config, spec)

      def poisoned(state, batch, rng):
        new_state, metrics = step(state, batch, rng)
        bad = new_state.step == at_step

        def poison(x):
          if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.where(bad, jnp.nan, x)
          return x

        return jax.tree.map(poison, new_state), jax.tree.map(poison, metrics)

      return poisoned

  return Poisoned()


def _config(tiny_config, **train):
  config = tiny_config.copy_and_resolve_references()
  config.evals.maps.every_steps = 0
  config.train.update(train)
  return config


def _finite_leaves(state) -> bool:
  leaves = jax.tree.leaves(checkpointing.state_to_tree(state))
  return all(np.isfinite(np.asarray(x)).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))


def test_a_nan_step_stops_the_run_before_any_bad_checkpoint(tiny_config, tmp_path):
  config = _config(tiny_config, num_steps=6, log_every_steps=5, ckpt_every_steps=2)
  workdir = str(tmp_path / 'run')
  # Step 3 is neither a logging nor a checkpoint step: the check at the step-4 save catches it.
  message = r'train/\S+ is not finite at step 3.*last good checkpoint is step 2.*optim.lr'
  with pytest.raises(faults.NonFiniteError, match=message):
    runner.train(_poisoned('semgan', 3), config, workdir)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    assert ckpt.all_steps() == [2]
  finally:
    ckpt.close()
  # The same command, with the step no longer diverging, resumes from step 2 and finishes.
  state = runner.train(TASKS['semgan'], config, workdir)
  assert int(state.step) == 6 and _finite_leaves(state)
  assert min(read_scalars(workdir)) == 5  # The first run logged nothing; the second from 3 on.


def test_non_finite_parameters_are_never_saved(tiny_config, tmp_path):
  """A step whose metrics stay finite but whose parameters are NaN is caught at the save."""
  base = type(TASKS['semgan'])

  class NanParams(base):
    def make_train_step(self, config, spec):
      step = super().make_train_step(config, spec)

      def poisoned(state, batch, rng):
        new_state, metrics = step(state, batch, rng)
        nan = jnp.where(new_state.step == 2, jnp.nan, 0.0)
        return jax.tree.map(lambda x: x + nan if x.dtype == jnp.float32 else x, new_state), metrics

      return poisoned

  config = _config(tiny_config, num_steps=4, log_every_steps=1, ckpt_every_steps=1)
  workdir = str(tmp_path / 'run')
  with pytest.raises(faults.NonFiniteError, match=r'is not finite at step 2.*checkpoint is step 1'):
    runner.train(NanParams(), config, workdir)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    assert ckpt.all_steps() == [1]
  finally:
    ckpt.close()


def test_skip_nonfinite_steps_keeps_the_previous_state(tiny_config, tmp_path):
  config = _config(
    tiny_config, num_steps=4, log_every_steps=4, ckpt_every_steps=2, skip_nonfinite_steps=True
  )
  workdir = str(tmp_path / 'run')
  state = runner.train(_poisoned('semgan', 3), config, workdir)
  assert int(state.step) == 4 and _finite_leaves(state)
  scalars = read_scalars(workdir)[4]
  assert scalars[faults.SKIPPED] == 1.0
  assert all(np.isfinite(v) for v in scalars.values())  # Averaged over the steps kept.


# --- Signals, in real processes. -------------------------------------------------------------


@pytest.fixture(scope='module')
def train_command(repo_root, compilation_cache_dir, tiny_config):
  env = dict(os.environ)
  env['XLA_FLAGS'] = FAST_COMPILE_FLAGS
  env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=compilation_cache_dir)

  def popen(workdir, *args):
    command = [
      sys.executable,
      '-m',
      'semgan_jax.main',
      '--config=configs/shapes.py:tiny',
      f'--config.data.data_dir={tiny_config.data.data_dir}',
      f'--workdir={workdir}',
      '--config.evals.maps.every_steps=0',
      '--config.train.log_every_steps=1',
      '--config.train.sample_every_steps=1000',
      *args,
    ]
    return subprocess.Popen(
      command, cwd=repo_root, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

  return popen


def _signal_after(process, signum: int, after_step: int) -> str:
  """Sends `signum` once the process logged `after_step`; returns its whole stderr."""
  lines = []
  for line in process.stderr:
    lines.append(line)
    if re.search(rf'\bstep {after_step}/', line):
      process.send_signal(signum)
      break
  _, rest = process.communicate(timeout=TIMEOUT_S)
  return ''.join(lines) + rest


def _losses(workdir, steps) -> list[dict]:
  scalars = read_scalars(workdir)
  return [
    {k: v for k, v in scalars[s].items() if k.startswith('train/') and 'per_sec' not in k}
    for s in steps
  ]


def test_sigterm_saves_the_current_step_and_resumes_exactly(train_command, tmp_path):
  workdir = tmp_path / 'preempted'
  process = train_command(
    workdir, '--config.train.num_steps=1000', '--config.train.ckpt_every_steps=1000'
  )
  stderr = _signal_after(process, signal.SIGTERM, 3)
  assert process.returncode == 0, stderr[-3000:]
  match = re.search(r'SIGTERM: preempted at step (\d+); saved\. Re-run the same command', stderr)
  assert match, stderr[-3000:]
  assert 'Traceback' not in stderr
  stopped = int(match.group(1))
  assert (workdir / 'checkpoints' / str(stopped)).is_dir()
  end = stopped + 2
  resumed = train_command(workdir, f'--config.train.num_steps={end}')
  _, err = resumed.communicate(timeout=TIMEOUT_S)
  assert resumed.returncode == 0, err[-3000:]
  assert f'Restored checkpoint at step {stopped}' in err
  straight = train_command(tmp_path / 'straight', f'--config.train.num_steps={end}')
  _, err = straight.communicate(timeout=TIMEOUT_S)
  assert straight.returncode == 0, err[-3000:]
  # The resumed run's next losses are the uninterrupted run's, to the bit.
  steps = [stopped + 1, end]
  assert _losses(workdir, steps) == _losses(tmp_path / 'straight', steps)


def test_sigint_saves_and_exits_130(train_command, tmp_path):
  workdir = tmp_path / 'interrupted'
  process = train_command(
    workdir, '--config.train.num_steps=1000', '--config.train.ckpt_every_steps=1000'
  )
  stderr = _signal_after(process, signal.SIGINT, 2)
  assert process.returncode == 130, stderr[-3000:]
  assert 'KeyboardInterrupt' not in stderr and 'Traceback' not in stderr
  stopped = int(re.search(r'SIGINT: preempted at step (\d+)', stderr).group(1))
  assert (workdir / 'checkpoints' / str(stopped)).is_dir()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once(signum):
  script = (
    'import os, signal, time\n'
    'from semgan_jax.train import faults\n'
    'with faults.StopSignals() as stop:\n'
    f'  os.kill(os.getpid(), {int(signum)})\n'
    '  assert stop.should_stop(1, agree=True)\n'
    '  print("asked to stop", flush=True)\n'
    f'  os.kill(os.getpid(), {int(signum)})\n'
    '  time.sleep(30)\n'
    'print("not reached")\n'
  )
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, timeout=TIMEOUT_S
  )
  assert result.stdout == 'asked to stop\n', result.stderr
  assert result.returncode == -signum


# --- Corrupt checkpoints. ---------------------------------------------------------------------


@pytest.fixture(scope='module')
def trained(tiny_config, tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4 (copy it before damaging it)."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  config = _config(tiny_config, num_steps=4, ckpt_every_steps=2, log_every_steps=2)
  runner.train(TASKS['semgan'], config, str(workdir))
  return config, workdir


def _truncate_largest(step_dir):
  files = sorted((p for p in step_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  files[-1].write_bytes(files[-1].read_bytes()[:1000])


DAMAGE = {
  'truncated': _truncate_largest,
  'missing metadata': lambda d: (d / 'state' / '_METADATA').unlink(),
  'empty metadata': lambda d: (d / 'state' / '_METADATA').write_text(''),
}
REASONS = {
  'truncated': 'cannot be read: truncated or damaged (OUT_OF_RANGE',
  'missing metadata': 'cannot be read: state/_METADATA is missing or empty',
  'empty metadata': 'cannot be read: state/_METADATA is missing or empty',
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_an_unreadable_latest_checkpoint_falls_back(trained, tmp_path, damage, caplog, capfd):
  config, source = trained
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  DAMAGE[damage](workdir / 'checkpoints' / '4')
  with caplog.at_level('WARNING'):
    paths = runner.sample(TASKS['semgan'], config, str(workdir), num_samples=2)
  assert paths['png'].endswith('sample_step2.png')
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert len(warnings) == 2, warnings
  assert f'checkpoints/4 {REASONS[damage]}' in warnings[0]
  assert 'Delete that directory' in warnings[0] and (workdir / 'checkpoints' / '4').is_dir()
  assert warnings[1] == 'Falling back to the checkpoint at step 2.'
  # Asked for by number, the damaged step is an error that names it.
  with pytest.raises(
    checkpointing.CheckpointError, match=f'checkpoints/4 {re.escape(REASONS[damage])}'
  ):
    runner.sample(TASKS['semgan'], config, str(workdir), num_samples=2, step=4)
  # Training writes step 4 again: the damaged one is moved aside, not deleted.
  state = runner.train(TASKS['semgan'], config, str(workdir))
  assert int(state.step) == 4
  assert (workdir / 'unreadable_checkpoints' / '4').is_dir()
  assert 'Traceback' not in capfd.readouterr().err


def test_no_readable_checkpoint_is_one_error(trained, tmp_path):
  config, source = trained
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  for step in (2, 4):
    (workdir / 'checkpoints' / str(step) / 'state' / '_METADATA').unlink()
  with pytest.raises(
    checkpointing.CheckpointError, match='checkpoints/2 cannot .*No older checkpoint'
  ):
    runner.evaluate(TASKS['semgan'], config, str(workdir))


# --- Corrupt prepared data and weights. ---------------------------------------------------------


@pytest.fixture
def damaged_data(tfds_dir, tmp_path):
  """A copy of the session's prepared colored_shapes, and its train file."""
  data_dir = tmp_path / 'tfds'
  shutil.copytree(pathlib.Path(tfds_dir) / 'colored_shapes', data_dir / 'colored_shapes')
  (train_file,) = data_dir.glob('colored_shapes/*/colored_shapes-train.array_record*')
  return data_dir, train_file


def test_a_truncated_prepared_file_is_one_error_and_nothing_is_written(
  tiny_config, damaged_data, tmp_path
):
  data_dir, train_file = damaged_data
  train_file.write_bytes(train_file.read_bytes()[: train_file.stat().st_size // 3])
  config = _config(tiny_config)
  config.data.data_dir = str(data_dir)
  workdir = tmp_path / 'run'
  message = f'{train_file}\\) cannot be read .*Prepare it again: delete {train_file.parent}'
  with pytest.raises(UserInputError, match=message):
    runner.train(TASKS['semgan'], config, str(workdir))
  assert not workdir.exists()


def test_a_damaged_record_names_the_file(damaged_data):
  data_dir, train_file = damaged_data
  raw = bytearray(train_file.read_bytes())
  for offset in range(len(raw) // 3, len(raw) // 3 + 64):
    raw[offset] ^= 0xFF
  train_file.write_bytes(bytes(raw))
  source = data.load_source('colored_shapes', str(data_dir))
  with pytest.raises(data.PreparedDataError, match=re.escape(str(train_file))):
    for index in range(len(source)):
      source[index]


def test_saves_between_log_steps_keep_every_step_in_the_average(tiny_config, tmp_path):
  """The finite check at a save reads the pending metrics but leaves them to the next log line."""
  every = _config(tiny_config, num_steps=4, log_every_steps=1, ckpt_every_steps=4)
  runner.train(TASKS['semgan'], every, str(tmp_path / 'every'))
  per_step = read_scalars(tmp_path / 'every')
  sparse = _config(tiny_config, num_steps=4, log_every_steps=4, ckpt_every_steps=1)
  runner.train(TASKS['semgan'], sparse, str(tmp_path / 'sparse'))
  logged = read_scalars(tmp_path / 'sparse')[4]
  for key in ('train/g_loss', 'train/d_loss'):
    mean = np.mean([per_step[s][key] for s in (1, 2, 3, 4)], dtype=np.float32)
    np.testing.assert_allclose(logged[key], mean, rtol=1e-5, err_msg=key)
