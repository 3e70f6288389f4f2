"""The embedded streets default (issue 13, item 3): where its photos' noise comes from, over seeds.

  python experiments/streets_default.py --variants=transpose,resize            # 3 seeds each
  python experiments/streets_default.py --variants=resize_16ep --seeds=0       # one screening run

Each run is `python -m semgan_jax.main --config=configs/streets.py` (the README's command, 64×128,
~8.5 minutes at 1,000 steps on 2 cores) with a variant's overrides and `--config.seed=S`,
evaluated at its last step on the 100 validation pairs (SWD per level, L1). Then
`speckle.py`'s spectrum of each run's photos against the real ones: the power in the high band
(1/4 to 1/2 cycle per pixel) and on the Nyquist lines, where a stride-2 transposed convolution's
checkerboard lands (1 = the real photos'). Writes `--out` (default
experiments/results/streets_default/): `table.md`, `table.json` and `samples.png` (the first
seed's final label | generated | real grids).
"""

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402

CONFIG = 'configs/streets.py'
VARIANTS = {  # name → (row, overrides of configs/streets.py)
  'transpose': ('transposed conv (the paper, default)', ()),
  'resize': ('resize-conv', ('--config.model.upsample=resize',)),
  'resize_16ep': (
    'resize-conv, 8 + 8 epochs',
    (
      '--config.model.upsample=resize',
      '--config.optim.epochs_constant=8',
      '--config.optim.epochs_decay=8',
      '--config.evals.photos.every_steps=2000',
    ),
  ),
  'resize_lr4': (
    'resize-conv, lr 4e-4',
    ('--config.model.upsample=resize', '--config.optim.lr=4e-4'),
  ),
}
P = 'photos'
COLUMNS = (
  common.Column(P, 'swd_64', 'SWD 64', 1),
  common.Column(P, 'swd_32', 'SWD 32', 1),
  common.Column(P, 'swd_16', 'SWD 16', 1),
  common.Column(P, 'swd_avg', 'SWD avg', 1),
  common.Column(P, 'l1', 'L1', 4),
  common.Column(P, 'speckle/high', 'high-band power', 2),
  common.Column(P, 'speckle/nyq', 'Nyquist power', 2),
  common.Column(P, 'minutes', 'minutes', 1),
)


def speckle(workdir: pathlib.Path) -> dict[str, float]:
  """Band powers of the run's photos relative to the real ones (cached in speckle.json)."""
  cache = workdir / 'speckle.json'
  if cache.exists():
    return json.loads(cache.read_text())
  import speckle as speckle_lib

  generated, real = speckle_lib.translate_validation(str(workdir), None)
  gen, ref = speckle_lib.band_power(generated), speckle_lib.band_power(real)
  ratios = {f'speckle/{band}': gen[band] / ref[band] for band in speckle_lib.BANDS}
  cache.write_text(json.dumps(ratios, indent=2, sort_keys=True))
  return ratios


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--variants', default='transpose,resize', help=f'of {sorted(VARIANTS)}')
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
  info = common.provenance()
  markdown = '\n'.join(
    [
      '### The streets default: up-sampling and schedule',
      '',
      common.markdown_table(rows, COLUMNS, {}, ''),
      '',
      f'Mean ± sample std over seeds {seeds}; 100 validation pairs at 64×128; band powers are '
      "relative to the real photos (1 = theirs); minutes are each run's wall time with its "
      'evaluation.',
      *common.footer(records, start, info, 'streets_default.py', args),
    ]
  )
  common.write_outputs(out, 'table', markdown, {'rows': rows, 'runs': records, 'provenance': info})
  common.samples_figure(out, records, out / 'samples.png', vertical=True)
  print(markdown)


if __name__ == '__main__':
  main()
