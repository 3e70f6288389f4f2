"""The embedded streets default (issue 13, item 3): where its photos' noise comes from, over seeds.

  python experiments/streets_default.py                     # up-sampling and schedule, ~1.5 h
  python experiments/streets_default.py --variants=resize_16ep,l1 \
      --out=experiments/results/streets_l1                  # the L1 term, ~1.5 h
  python experiments/streets_default.py --variants=l1_30,l1 \
      --out=experiments/results/streets_l1_weight           # its weight, ~1.5-2 h
  python experiments/streets_default.py --variants=ema995 --seeds=0 --out=/tmp/s  # one screen

Each run is `python -m semgan_jax.main --config=configs/streets.py` (the README's command, 64×128,
2,000 steps with resize-conv up-sampling and pix2pix's L1 term, 13 to 18 minutes on 2 cores) with a
variant's overrides and `--config.seed=S`: the paper's transposed convolutions and resize-conv
at the old default's 1,000 steps (~7.5 minutes each) and without the L1 term, resize-conv at
2,000 steps without it, the default, and one-seed screens of other remedies. Each is evaluated
at its last step on the 100 validation pairs (SWD per level, L1). Then `speckle.py`'s spectrum
of each run's photos against the real ones: the power in the high band (1/4 to 1/2 cycle per
pixel), on the Nyquist lines, where a stride-2 transposed convolution's checkerboard lands, and
in the colour-opponent channels' high band, where colour noise shows (1 = the real photos').
Writes `--out` (default experiments/results/streets_default/): `table.md`, `table.json` (with
each change's Δ and Welch verdict) and `samples.png` (the first seed's final label | generated
| real grids)."""

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402

CONFIG = 'configs/streets.py'
# The old default's schedule: 4 + 4 epochs of the 1,000 pairs (1,000 steps), evaluated at the end.
SHORT = (
  '--config.optim.epochs_constant=4',
  '--config.optim.epochs_decay=4',
  '--config.evals.photos.every_steps=1000',
)
NO_L1 = ('--config.loss.lambda_l1=0',)  # The default before the L1 term.
VARIANTS = {  # name → (row, overrides of configs/streets.py, whose default is `l1`)
  'transpose': (
    'transposed conv (the paper; the old default)',
    ('--config.model.upsample=transpose', *NO_L1, *SHORT),
  ),
  'resize': ('resize-conv', (*NO_L1, *SHORT)),
  'resize_16ep': ('resize-conv, 8 + 8 epochs', NO_L1),
  'l1': ('resize-conv, 8 + 8 epochs, L1 term, weight 100 (the default)', ()),
  # One-seed screens of the noise (RESULTS.md lists their commands and figures).
  'resize_lr4': ('resize-conv, lr 4e-4', ('--config.optim.lr=4e-4', *NO_L1, *SHORT)),
  'lr4_16ep': ('resize-conv, 8 + 8 epochs, lr 4e-4', ('--config.optim.lr=4e-4', *NO_L1)),
  'batch4_16ep': (
    'resize-conv, 8 + 8 epochs, batch 4 (4,000 steps)',
    ('--config.data.batch_size=4', '--config.evals.photos.every_steps=4000', *NO_L1),
  ),
  'ema995': (
    "resize-conv, 8 + 8 epochs, EMA of G's weights (0.995)",
    ('--config.model.g_ema_decay=0.995', *NO_L1),
  ),
  'noise2': (
    'resize-conv, 8 + 8 epochs, instance noise 0.2',
    ('--config.loss.instance_noise_std=0.2', *NO_L1),
  ),
  'l1_10': ('resize-conv, 8 + 8 epochs, L1 term, weight 10', ('--config.loss.lambda_l1=10',)),
  'l1_30': ('resize-conv, 8 + 8 epochs, L1 term, weight 30', ('--config.loss.lambda_l1=30',)),
}
# (name, variant with, variant without): the changes measured against the seeds' spread.
COMPARISONS = (
  ('resize-conv instead of transposed conv (4 + 4 epochs)', 'resize', 'transpose'),
  ('8 + 8 epochs instead of 4 + 4 (resize-conv)', 'resize_16ep', 'resize'),
  ('resize-conv, 8 + 8 epochs, against the old default', 'resize_16ep', 'transpose'),
  ('lr 4e-4 instead of 2e-4 (resize-conv, 4 + 4 epochs)', 'resize_lr4', 'resize'),
  ('L1 term, weight 100 (resize-conv, 8 + 8 epochs)', 'l1', 'resize_16ep'),
  ('L1 weight 30 instead of 100', 'l1_30', 'l1'),
)
P = 'photos'
COLUMNS = (
  common.Column(P, 'swd_64', 'SWD 64', 1),
  common.Column(P, 'swd_32', 'SWD 32', 1),
  common.Column(P, 'swd_16', 'SWD 16', 1),
  common.Column(P, 'swd_avg', 'SWD avg', 1),
  common.Column(P, 'l1', 'L1', 4),
  common.Column(P, 'speckle/high', 'high-band power', 2),
  common.Column(P, 'speckle/nyq', 'Nyquist power', 2),
  common.Column(P, 'speckle/chroma_high', 'colour high-band power', 2),
  common.Column(P, 'minutes', 'minutes', 1),
)


def speckle(workdir: pathlib.Path) -> dict[str, float]:
  """Band powers of the run's photos relative to the real ones (cached in speckle.json)."""
  import speckle as speckle_lib

  cache = workdir / 'speckle.json'
  keys = [f'speckle/{band}' for band in speckle_lib.BANDS]
  if cache.exists():
    cached = json.loads(cache.read_text())
    if all(key in cached for key in keys):  # Else written before a band was added.
      return cached
  generated, real, _, _ = speckle_lib.translate_validation(str(workdir), None)
  gen, ref = speckle_lib.band_power(generated), speckle_lib.band_power(real)
  ratios = {f'speckle/{band}': gen[band] / ref[band] for band in speckle_lib.BANDS}
  cache.write_text(json.dumps(ratios, indent=2, sort_keys=True))
  return ratios


def comparisons_table(rows: dict, columns=COLUMNS[3:5]) -> tuple[str, list[dict]]:
  """Each comparison whose two rows were run: Δ ± SE of SWD avg and L1 (lower is better), with
  Welch's verdict (`common.effect`)."""
  header = ['change', *[f'Δ{c.header} ± SE | verdict' for c in columns]]
  lines = ['| ' + ' | '.join(header) + ' |', '|---|' + '---|---|' * len(columns)]
  data = []
  for name, with_, without in COMPARISONS:
    a, b = VARIANTS[with_][0], VARIANTS[without][0]
    if a not in rows or b not in rows:
      continue
    cells, entry = [name], {'change': name, 'with': a, 'without': b}
    for c in columns:
      delta, se, threshold = common.effect(rows, c.key, [a], [b])
      verdict = common.verdict(delta, threshold, True, None)
      cells += [f'{delta:+.{c.decimals}f} ± {se:.{c.decimals}f}', verdict]
      entry[c.key] = {'delta': delta, 'se': se, 'threshold': threshold, 'verdict': verdict}
    lines.append('| ' + ' | '.join(cells) + ' |')
    data.append(entry)
  return '\n'.join(lines), data


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--variants', default='transpose,resize,resize_16ep', help=f'of {sorted(VARIANTS)}'
  )
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (at least 3)')
  parser.add_argument('--out', default='', help='output folder')
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  unknown = set(args.variants.split(',')) - set(VARIANTS)
  if unknown:
    parser.error(f'unknown variants {sorted(unknown)}; expected some of {sorted(VARIANTS)}')
  variants = [VARIANTS[v] for v in args.variants.split(',')]
  out = pathlib.Path(args.out or common.ROOT / 'experiments' / 'results' / 'streets_default')
  start = time.perf_counter()
  runs = [common.Run(row, CONFIG, s, overrides) for s in seeds for row, overrides in variants]
  records = common.run_all(runs, out)
  for record in records:
    metrics = record['evaluators'][P]['metrics']
    metrics.update(
      speckle(out / 'runs' / common.run_name(record['run']['row'], record['run']['seed']))
    )
    metrics['minutes'] = record['seconds'] / 60
  rows = common.aggregate(records, COLUMNS)
  comparisons_md, comparisons = comparisons_table(rows)
  info = common.provenance()
  markdown = '\n'.join(
    [
      f'### The streets default: {", ".join(args.variants.split(","))}',
      '',
      common.markdown_table(rows, COLUMNS, {}, ''),
      '',
      f'Mean ± sample std over seeds {seeds}; 100 validation pairs at 64×128; band powers are '
      "relative to the real photos (1 = theirs); minutes are each run's wall time with its "
      'evaluation.',
      '',
      "Changes against the seeds' spread (Δ = mean with − mean without; verdict by Welch's "
      't-test at 5%):',
      '',
      comparisons_md,
      '',
      *common.footer(records, start, info, 'streets_default.py', args),
    ]
  )
  data = {'rows': rows, 'comparisons': comparisons, 'runs': records, 'provenance': info}
  common.write_outputs(out, 'table', markdown, data)
  common.samples_figure(out, records, out / 'samples.png', vertical=True)
  print(markdown)


if __name__ == '__main__':
  main()
