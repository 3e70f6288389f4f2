"""Multi-host code paths for real: two processes joined by jax.distributed over localhost."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
from conftest import FAST_COMPILE_FLAGS

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
