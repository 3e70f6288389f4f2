"""Table (a): SemGAN vs the RGB baseline on colored shapes (paper 2, §5.0.1, Figure 4), over seeds.

  python experiments/shapes_table.py --setting=quick   # the README's quick run, 3 seeds × 2 heads
  python experiments/shapes_table.py --setting=long    # 1.5x the steps, 47 min

Each run is `python -m semgan_jax.main --config=configs/shapes.py:quick` (plus the setting's
overrides, `--config.model.head=rgb` for the baseline and `--config.seed=S`), trained and
evaluated at its last step on 1,024 maps. Writes into `--out` (default
experiments/results/shapes_<setting>/): `table.md`, `table.json` (every seed's metrics, the
commands, machine and versions) and `samples.png` (seed 0's final grids, SemGAN left). Re-running
skips the finished runs and resumes an interrupted one.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402

CONFIG = 'configs/shapes.py:quick'
# Setting -> overrides of the quick variant.
SETTINGS = {
  'quick': (),
  'long': (
    # The quick schedule stretched 1.5x (4,500 steps, noise and constant lr to 3,000, then the
    # decay), so that 6 runs fit the hour on 2 cores (7.3-8.4 min each).
    '--config.train.num_steps=4500',
    '--config.loss.instance_noise_steps=3000',
    '--config.optim.decay_start_step=3000',
    '--config.optim.decay_steps=1500',
    '--config.train.ckpt_every_steps=1500',
    '--config.evals.maps.every_steps=4500',
  ),
}
ROWS = {'SemGAN (softmax)': (), 'GAN (RGB)': ('--config.model.head=rgb',)}
M = 'maps'
COLUMNS = (
  common.Column(M, 'swd_16', 'SWD 16', 1),
  common.Column(M, 'swd_32', 'SWD 32', 1),
  common.Column(M, 'swd_64', 'SWD 64', 1),
  common.Column(M, 'swd_avg', 'SWD avg', 1),
  common.Column(M, 'ms_ssim', 'MS-SSIM', 3),
  common.Column(M, 'off_palette_fraction', 'off-palette', 4),
  common.Column(M, 'class_freq_l1', 'class-freq L1', 3),
  common.Column(M, 'single/square', 'one square', 2),
  common.Column(M, 'shape/circle_iou', 'circle IoU', 2),
  common.Column(M, 'small_components', 'specks/map', 2),
)
# The real maps' values of the columns that have one (written under the table).
REAL = {
  'ms_ssim_real': 'MS-SSIM',
  'real_single/square': 'one square',
  'real_shape/circle_iou': 'circle IoU',
  'real_small_components': 'specks/map',
}


def runs(setting: str, seeds: list[int]) -> list[common.Run]:
  return [
    common.Run(row, CONFIG, seed, SETTINGS[setting] + extra)
    for seed in seeds
    for row, extra in ROWS.items()
  ]


def agreement(rows: dict) -> dict[str, str]:
  """The paper's direction (SemGAN below GAN on SWD, above all at 64; no off-palette pixels),
  checked on these numbers."""
  sem, rgb = rows.get('SemGAN (softmax)'), rows.get('GAN (RGB)')
  if not (sem and rgb):
    return {}

  def mean(row, name):
    return row[name]['mean']

  def gap(name):  # SemGAN's lead in standard deviations of the two rows together.
    spread = max((sem[name]['std'] ** 2 + rgb[name]['std'] ** 2) ** 0.5, 1e-9)
    return (mean(rgb, name) - mean(sem, name)) / spread

  lower = [f'SWD {n}' for n in (16, 32, 64) if mean(sem, f'swd_{n}') < mean(rgb, f'swd_{n}')]
  note = (
    f'paper: SemGAN below GAN at every SWD level, most at 64; here lower at '
    f'{", ".join(lower) or "no level"} (SWD 64 gap {gap("swd_64"):+.1f} σ, avg '
    f'{gap("swd_avg"):+.1f} σ)'
  )
  palette = (
    f'off-palette {mean(sem, "off_palette_fraction"):.4f} vs '
    f'{mean(rgb, "off_palette_fraction"):.4f} (paper: GAN colours "not related to any label")'
  )
  return {'SemGAN (softmax)': note, 'GAN (RGB)': palette}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--setting', choices=sorted(SETTINGS), default='quick')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (at least 3)')
  parser.add_argument('--out', default='', help='output folder')
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  out = pathlib.Path(args.out or common.ROOT / 'experiments' / 'results' / f'shapes_{args.setting}')
  start = time.perf_counter()
  records = common.run_all(runs(args.setting, seeds), out)
  rows = common.aggregate(records, COLUMNS)
  real = {
    header: records[0]['evaluators'][M]['metrics'].get(name, float('nan'))
    for name, header in REAL.items()
  }
  notes = agreement(rows)
  info = common.provenance()
  markdown = '\n'.join(
    [
      f'### Table (a), colored shapes, setting `{args.setting}`',
      '',
      common.markdown_table(rows, COLUMNS, notes),
      '',
      'Real maps: ' + ', '.join(f'{k} {v:.3f}' for k, v in real.items()) + '.',
      f'Mean ± sample std over seeds {seeds}; 1,024 maps per evaluation; lower SWD is better.',
      *common.footer(records, start, info, 'shapes_table.py', args),
    ]
  )
  common.write_outputs(
    out,
    'table',
    markdown,
    {'rows': rows, 'real': real, 'notes': notes, 'runs': records, 'provenance': info},
  )
  # 256 colours: the maps have four, and the RGB grids lose nothing visible (half the bytes).
  common.samples_figure(out, records, out / 'samples.png', colors=256)
  print(markdown)


if __name__ == '__main__':
  main()
