"""benchmarks/semanticgan_step.py runs on a tiny network and writes the JSON of its table."""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / 'benchmarks' / 'semanticgan_step.py'


def _run(*args, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_backend_optimization_level=0')
  return subprocess.run(
    [sys.executable, str(SCRIPT), *args, f'--json={tmp_path / "bench.json"}'],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO_ROOT,
    timeout=600,
  )


def test_tiny_row_writes_the_measurements(tmp_path):
  done = _run(
    '--tiny', '--sizes=64x32', '--networks=pix2pixhd', '--no-semgan', '--rounds=2',
    tmp_path=tmp_path,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((tmp_path / 'bench.json').read_text())
  assert result['ceiling']['xla_gflops'] > 0 and result['ceiling']['numpy_gflops'] > 0
  (row,) = result['rows']
  assert (row['network'], row['width'], row['height']) == ('pix2pixhd', 64, 32)
  for key in ('step_s', 'forward_s'):
    stats = row[key]
    assert stats['n'] == 2 and 0 < stats['min'] <= stats['median'] <= stats['max']
  assert row['compile_s'] > 0 and row['step_gflop'] > row['forward_gflop'] > 0
  assert row['step_gflops'] == row['step_gflop'] / row['step_s']['median']
  assert row['peak_rss_mb'] > 100 and row['images_per_s'] > 0
  assert row['g_params'] > 0 and 'pix2pixhd' not in row  # no checkout given
  assert '| pix2pixhd | 64×32 |' in done.stdout


def test_pix2pixhd_mode_names_what_is_missing(tmp_path):
  done = _run('--pix2pixhd', str(tmp_path), tmp_path=tmp_path)
  assert done.returncode != 0 and 'expected a checkout of NVIDIA/pix2pixHD' in done.stderr
  (tmp_path / 'models').mkdir()
  (tmp_path / 'models' / 'pix2pixHD_model.py').write_text('')
  missing = tmp_path / 'no-python'
  done = _run('--pix2pixhd', str(tmp_path), f'--torch-python={missing}', tmp_path=tmp_path)
  assert done.returncode != 0 and 'pip install torch==2.13.0' in done.stderr
  assert not (tmp_path / 'bench.json').exists()
