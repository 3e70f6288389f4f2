"""Multi-host code paths for real: two processes joined by jax.distributed over localhost."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
from conftest import FAST_COMPILE_FLAGS, read_scalars

TIMEOUT_S = 600


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_and_checkpoint(
  repo_root, compilation_cache_dir, tiny_config, tmp_path
):
  """2 processes x 1 CPU device: per-process input slices, one sharded step, shared checkpoints."""
  env = dict(os.environ)
  # One CPU device per process: the mesh spans the two processes.
  env['XLA_FLAGS'] = FAST_COMPILE_FLAGS
  env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=compilation_cache_dir)
  workdir = tmp_path / 'run'
  common = [
    sys.executable,
    '-m',
    'semgan_jax.main',
    '--config=configs/shapes.py:tiny',
    f'--config.data.data_dir={tiny_config.data.data_dir}',
    f'--workdir={workdir}',
  ]
  port = _free_port()
  processes = [
    subprocess.Popen(
      common
      + [
        '--config.evals.maps.every_steps=4',  # The evaluator's multi-process path, at step 4.
        '--distributed',
        f'--coordinator_address=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=repo_root,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for i, (p, (_, stderr)) in enumerate(zip(processes, outputs, strict=True)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n{stderr[-4000:]}'
  # Both processes saw the whole mesh, and each read its own slice of every batch.
  assert 'JAX process 0/2, 1 local / 2 global devices.' in outputs[0][1]
  assert 'JAX process 1/2, 1 local / 2 global devices.' in outputs[1][1]
  final = workdir / 'checkpoints' / '4'
  assert (final / 'state').is_dir()
  for i in range(2):
    assert (final / 'data' / f'process_{i}-of-2.json').read_text().strip()
  # Only process 0 writes samples and summaries.
  assert (workdir / 'samples' / 'step_0000004.png').exists()
  during = json.loads((workdir / 'eval' / 'step_0000004.json').read_text())
  (workdir / 'eval' / 'step_0000004.json').unlink()

  # A checkpoint written by two processes loads in one (a different topology).
  result = subprocess.run(
    common + ['--mode=sample', '--num_samples=4'],
    cwd=repo_root,
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  ids = np.load(workdir / 'samples' / 'sample_step4.npy')
  assert ids.shape == (4, 64, 64) and ids.min() >= 0 and ids.max() < 4

  # The evaluation made by two processes equals one process's evaluation of the same checkpoint.
  result = subprocess.run(
    common + ['--mode=eval'], cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-4000:]
  alone = json.loads((workdir / 'eval' / 'step_0000004.json').read_text())
  two, one = during['evaluators']['maps']['metrics'], alone['evaluators']['maps']['metrics']
  assert two['num_images'] == one['num_images'] == 16
  for key in ('swd_avg', 'ms_ssim', 'ms_ssim_real', 'class_freq_l1'):
    np.testing.assert_allclose(two[key], one[key], rtol=1e-4, err_msg=key)


def _two_processes(repo_root, env, args, signal_after_step=None):
  """Runs `python -m semgan_jax.main *args` as 2 processes joined over localhost; with
  `signal_after_step`, both get SIGTERM once process 0 logged that step. Returns their stderr."""
  port = _free_port()
  processes = [
    subprocess.Popen(
      [sys.executable, '-m', 'semgan_jax.main', *args, '--distributed']
      + [f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=repo_root,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  head = ''
  try:
    if signal_after_step is not None:
      for line in processes[0].stderr:
        head += line
        if re.search(rf'\bstep {signal_after_step}/', line):
          for p in processes:
            p.send_signal(signal.SIGTERM)
          break
    errs = [p.communicate(timeout=TIMEOUT_S)[1] for p in processes]
  finally:
    for p in processes:
      p.kill()
  errs[0] = head + errs[0]
  for i, (p, err) in enumerate(zip(processes, errs, strict=True)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n{err[-4000:]}'
  return errs


def test_semanticgan_on_two_processes_survives_sigterm(
  repo_root, compilation_cache_dir, streets_config, tmp_path
):
  """SemanticGAN with a photo evaluation on 2 processes; SIGTERM to both saves one step
  collectively, and the resumed run's next losses are the uninterrupted run's."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = FAST_COMPILE_FLAGS
  env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=compilation_cache_dir)

  def args(workdir, num_steps, evaluate=False):
    return [
      '--config=configs/streets.py:tiny',
      f'--config.data.data_dir={streets_config.data.data_dir}',
      f'--workdir={workdir}',
      f'--config.train.num_steps={num_steps}',
      '--config.train.log_every_steps=1',
      '--config.train.ckpt_every_steps=1000',
      '--config.train.sample_every_steps=1000',
      # The photo evaluator's multi-process path at step 2 (the losses do not depend on it).
      f'--config.evals.photos.every_steps={2 if evaluate else 0}',
      '--config.evals.photos.num_images=8',
    ]

  preempted = tmp_path / 'preempted'
  errs = _two_processes(repo_root, env, args(preempted, 1000, True), signal_after_step=3)
  stops = [re.search(r'SIGTERM: preempted at step (\d+); saved', err) for err in errs]
  assert all(stops), errs[0][-4000:]
  (stop,) = {int(s.group(1)) for s in stops}  # Both processes stopped at the same step.
  assert 'Traceback' not in errs[0] + errs[1]
  for i in range(2):
    assert (preempted / 'checkpoints' / str(stop) / 'data' / f'process_{i}-of-2.json').is_file()
  assert (preempted / 'eval' / 'step_0000002.json').is_file()
  end = stop + 1
  errs = _two_processes(repo_root, env, args(preempted, end))
  assert f'Restored checkpoint at step {stop}' in errs[0]
  straight = tmp_path / 'straight'
  _two_processes(repo_root, env, args(straight, end))

  def losses(workdir):
    scalars = read_scalars(workdir)[end]
    return {k: v for k, v in scalars.items() if k.startswith('train/') and 'per_sec' not in k}

  assert losses(preempted) == losses(straight)
