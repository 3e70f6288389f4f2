"""Tests of the reproduction scripts' harness (experiments/common.py) on tiny runs."""

import json
import os
import sys

import numpy as np
import pytest
from conftest import FAST_COMPILE_FLAGS, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'experiments'))

import common  # noqa: E402
import shapes_table  # noqa: E402
import speckle  # noqa: E402
import streets_default  # noqa: E402
import streets_table  # noqa: E402

COLUMNS = (
  common.Column('maps', 'swd_avg', 'SWD avg', 1),
  common.Column('maps', 'single/square', 'one square', 2),
)


@pytest.fixture(scope='module')
def env(compilation_cache_dir):
  return dict(
    os.environ,
    XLA_FLAGS=FAST_COMPILE_FLAGS,
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )


def _runs(tfds_dir, seeds):
  extra = (f'--config.data.data_dir={tfds_dir}', '--config.evals.maps.every_steps=4')
  return [common.Run('SemGAN tiny', 'configs/shapes.py:tiny', s, extra) for s in seeds]


def test_runs_are_recorded_skipped_and_reproduced(tfds_dir, tmp_path, env):
  out = tmp_path / 'a'
  records = common.run_all(_runs(tfds_dir, [0, 1]), out, env)
  assert [r['run']['seed'] for r in records] == [0, 1] and all(r['step'] == 4 for r in records)
  assert (out / 'runs' / 'semgan_tiny_seed0' / 'experiment.json').exists()
  assert '--config.seed=1' in records[1]['command']
  rows = common.aggregate(records, COLUMNS)
  values = rows['SemGAN tiny']['swd_avg']['values']
  assert rows['SemGAN tiny']['seeds'] == [0, 1] and values[0] != values[1]
  table = common.markdown_table(rows, COLUMNS, {'SemGAN tiny': 'note'})
  mean, std = rows['SemGAN tiny']['swd_avg']['mean'], rows['SemGAN tiny']['swd_avg']['std']
  assert f'| SemGAN tiny | 2 | {mean:.1f} ± {std:.1f} |' in table and table.endswith('note |')

  # A finished run is not run again: its record is read back.
  (out / 'runs' / 'semgan_tiny_seed0' / 'checkpoints').rename(tmp_path / 'moved')
  # (Compared as JSON: the records hold NaN scores, which are unequal to themselves.)
  reread = common.run_all(_runs(tfds_dir, [0]), out, env)
  assert json.dumps(reread, sort_keys=True) == json.dumps(records[:1], sort_keys=True)
  # The same seed in another folder gives the same numbers.
  again = common.run_all(_runs(tfds_dir, [0]), tmp_path / 'b', env)
  a, b = (r['evaluators']['maps']['metrics'] for r in (again[0], records[0]))
  del a['eval_seconds'], b['eval_seconds']
  assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_failed_run_says_where_its_log_is(tfds_dir, tmp_path, env):
  bad = common.Run('bad', 'configs/shapes.py:tiny', 0, ('--config.model.head=nope',))
  with pytest.raises(RuntimeError, match=r'bad_seed0 failed \(exit 1\); .*bad_seed0.log'):
    common.run_one(bad, tmp_path, env)
  assert not (tmp_path / 'runs' / 'bad_seed0' / 'experiment.json').exists()


def test_shapes_table_rows_and_agreement():
  runs = shapes_table.runs('quick', [0, 1, 2])
  assert len(runs) == 6 and {r.row for r in runs} == set(shapes_table.ROWS)
  assert all(r.config == 'configs/shapes.py:quick' for r in runs)
  long = shapes_table.runs('long', [0])
  assert '--config.train.num_steps=4500' in long[0].overrides

  def row(swd, off):
    entry = {'mean': swd, 'std': 1.0}
    return {**{f'swd_{n}': entry for n in (16, 32, 64, 'avg')}, 'off_palette_fraction': off}

  notes = shapes_table.agreement(
    {'SemGAN (softmax)': row(40.0, {'mean': 0.0}), 'GAN (RGB)': row(50.0, {'mean': 0.02})}
  )
  assert 'lower at SWD 16, SWD 32, SWD 64' in notes['SemGAN (softmax)']
  assert '0.0200' in notes['GAN (RGB)']
  json.dumps(notes)


def test_streets_table_runs_use_both_segmenters(tmp_path):
  names = {c: row for c, (row, _) in streets_table.COLUMN_ROWS.items()}
  runs = streets_table.column_runs(tmp_path, names, [0, 1, 2], fid=False)
  assert len(runs) == 18 and [r.seed for r in runs[:6]] == [0] * 6  # seed-major
  assert runs[0].config == 'configs/streets_ablation.py:a'
  sipl, judge = streets_table.segmenter_paths(tmp_path).values()
  assert f'--config.sipl_segmenter={sipl}' in runs[0].overrides
  assert f'--config.judge_segmenter={judge}' in runs[0].overrides
  assert sipl != judge and not any('fid' in flag for flag in runs[0].overrides)
  segmenters = streets_table.segmenter_runs()
  assert [r.seed for r in segmenters] == [0, 1]
  assert '--config.model.width=0.75' in segmenters[1].overrides


def test_effects_are_judged_against_the_seed_spread():
  def rows(b_mean, std):
    def entry(mean):
      return {'mean': mean, 'std': std, 'values': [mean - std, mean, mean + std]}

    a = {'swd_avg': entry(50.0), 'judge/miou': entry(0.30)}
    b = {'swd_avg': entry(b_mean), 'judge/miou': entry(0.30)}
    return {'a: ResNet': a, 'b: Res2': b}

  effects = (('Res2 for ResNet', 'b', 'a'),)
  # SE √(2·3²/3) ≈ 2.45 on 4 degrees of freedom: Welch's test needs |Δ| > t(0.975, 4)·SE = 6.80.
  markdown, data = streets_table.effects_table(rows(40.0, 3.0), fid=False, effects=effects)
  assert data[0]['swd_avg'][2] == 'agrees' and data[0]['paper_fid_delta'] == pytest.approx(-1.431)
  assert data[0]['judge_miou'][2] == 'within seed variance'  # Δ = 0
  assert '| Res2 for ResNet | -1.43 | -10.00 ± 2.45 | agrees |' in markdown
  _, data = streets_table.effects_table(rows(60.0, 3.0), fid=False, effects=effects)
  assert data[0]['swd_avg'][2] == 'disagrees'
  _, data = streets_table.effects_table(rows(44.0, 3.0), fid=False, effects=effects)
  assert data[0]['swd_avg'][2] == 'within seed variance'  # 6 < 6.80, though beyond 2 SE
  _, data = streets_table.effects_table(rows(40.0, 3.0), fid=False, effects=effects, paper=False)
  assert data[0]['swd_avg'][2] == 'better' and data[0]['paper_fid_delta'] is None
  # Pooled rows: the runs of both rows on each side (here the same as one row each, doubled).
  pooled = (('both', ('b', 'b'), ('a', 'a')),)
  _, data = streets_table.effects_table(rows(44.0, 3.0), fid=False, effects=pooled)
  delta, se, verdict = data[0]['swd_avg']
  assert delta == pytest.approx(-6.0) and se < 2.45 and verdict == 'agrees'  # 6 seeds a side


def _with_flags(config, flags):
  """`config` with `--config.a.b=v` flags applied, each value cast to the field's type."""
  config = config.copy_and_resolve_references()
  for flag in flags:
    path, value = flag.removeprefix('--config.').split('=', 1)
    *parents, name = path.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = type(node[name])(value)
  return config


def test_streets_default_variants_and_changes():
  from semgan_jax import config_files

  default = config_files.load(REPO_ROOT / 'configs' / 'streets.py')
  configs = {
    name: _with_flags(default, flags) for name, (_, flags) in streets_default.VARIANTS.items()
  }
  # The default is the 8 + 8 epoch resize-conv run with the L1 term; every variant but the L1
  # screen is without it; three are the old default's 1,000 steps.
  assert configs['l1'].to_dict() == default.to_dict()
  assert default.model.upsample == 'resize' and default.optim.epochs_constant == 8
  assert default.loss.lambda_l1 == 100
  without = {name: c.loss.lambda_l1 for name, c in configs.items() if not name.startswith('l1')}
  assert set(without.values()) == {0}
  assert (
    configs['resize_16ep'].to_dict()
    == _with_flags(default, ['--config.loss.lambda_l1=0']).to_dict()
  )
  assert configs['transpose'].model.upsample == 'transpose'
  for name in ('transpose', 'resize', 'resize_lr4'):
    optim = configs[name].optim
    assert (optim.epochs_constant, optim.epochs_decay) == (4, 4)
    assert configs[name].evals.photos.every_steps == 1000
  assert configs['resize_lr4'].optim.lr == 4e-4 and configs['resize'].model.upsample == 'resize'

  def entry(mean, std=0.01):
    return {'mean': mean, 'std': std, 'values': [mean - std, mean, mean + std]}

  row = {v: row for v, (row, _) in streets_default.VARIANTS.items()}
  rows = {
    row['transpose']: {'swd_avg': entry(80.0, 5.0), 'l1': entry(0.26)},
    row['resize']: {'swd_avg': entry(55.0, 5.0), 'l1': entry(0.26)},
  }
  markdown, data = streets_default.comparisons_table(rows)
  assert len(data) == 1  # Only the comparison whose two variants were run.
  assert data[0]['swd_avg']['verdict'] == 'better' and data[0]['swd_avg']['delta'] == -25.0
  assert data[0]['l1']['verdict'] == 'within seed variance'
  assert (
    '| resize-conv instead of transposed conv (4 + 4 epochs) | -25.0 ± 4.1 | better |' in markdown
  )


def test_streets_ablation_config_columns():
  from semgan_jax import config_files

  path = REPO_ROOT / 'configs' / 'streets_ablation.py'
  variants = {column: column for column in 'abcdef'} | {'e_grouped': 'e', 'f_grouped': 'f'}
  for variant, column in variants.items():
    config = config_files.load(path, variant)
    paper = config_files.load(REPO_ROOT / 'configs' / 'cityscapes.py', column)
    block = 'crb_grouped' if variant.endswith('grouped') else paper.model.block
    assert (config.model.block, config.loss.lambda_sipl) == (block, paper.loss.lambda_sipl)
    assert config.loss.lambda_l1 == paper.loss.lambda_l1 == 0  # The paper's losses.
    assert (config.data.config_name, config.data.height, config.data.width) == (
      '32x64_1000',
      32,
      64,
    )
  config.sipl_segmenter, config.judge_segmenter = 'sipl.npz', 'judge.npz'
  assert config.loss.erfnet_weights == config.evals.photos.segmenter_weights == 'sipl.npz'
  assert config.evals.judge.segmenter_weights == 'judge.npz'
  assert config.evals.photos.miou and config.evals.judge.miou and not config.evals.judge.swd
  for bad in ('g', 'a_grouped', 'e_other'):
    with pytest.raises(ValueError, match=f'unknown variant {bad!r}'):
      config_files.load(path, bad)


def test_crb_table_reuses_table_b_runs(tmp_path):
  import crb_table

  names = {c: row for c, (row, _) in streets_table.COLUMN_ROWS.items()}
  table_b = {r.name for r in streets_table.column_runs(tmp_path, names, [0, 1, 2], fid=True)}
  table_c = streets_table.column_runs(tmp_path, crb_table.ROWS, [0, 1, 2], True)
  new = [r for r in table_c if r.name not in table_b]
  # Only the grouped reading is trained again; every other run is one of table (b)'s.
  assert len(table_c) == 18 and {r.config.split(':')[1] for r in new} == {'e_grouped', 'f_grouped'}
  assert len(new) == 6


def test_speckle_bands_and_classes_tell_colour_noise_from_grey():
  """Colour-opponent bands see colour noise that grey grain leaves alone, and the per-class
  breakdown puts it in the class that has it."""
  rng = np.random.default_rng(0)
  grain = 120.0 + rng.normal(0, 8, (4, 32, 32, 1)) + rng.normal(0, 1, (4, 32, 32, 3))
  real = np.clip(grain, 0, 255).astype(np.uint8)
  labels = np.zeros((4, 32, 32), np.int64)
  labels[:, :, 16:] = 1
  colour = grain.copy()
  colour[:, :, 16:] += rng.normal(0, 8, (4, 32, 16, 3))  # Colour noise on class 1 only.
  colour = np.clip(colour, 0, 255).astype(np.uint8)
  noisy, clean = speckle.band_power(colour), speckle.band_power(real)
  assert noisy['chroma_high'] > 10 * clean['chroma_high']
  assert noisy['high'] < 2 * clean['high']
  rows = speckle.class_chroma(colour, real, labels, ('a', 'b'))
  ratios = {name: (ratio, share) for name, _, ratio, share in rows}
  assert ratios['b'][0] > 10 and ratios['b'][1] > 0.9
  assert ratios['a'][0] < 2
