"""Table (c): how the CRB is read. Res2Block, the paper's CRB as implemented, and a grouped reading.

  python experiments/crb_table.py            # after (or instead of) streets_table.py

SemanticGAN's CRB shuffles the channels of the Res2Block's first 1×1 convolution before the
split. After a dense 1×1 convolution that is a permutation of its filters (semgan_jax.models.blocks
explains it): the CRB as the paper describes it re-parametrizes Res2Block, with the same parameter
count, FLOPs and function class. Only if that 1×1 convolution is grouped (groups = scale, as in
ShuffleNet) does the shuffle change what each 3×3 group sees; that reading is ours and labelled as
such (`model.block='crb_grouped'`). The rows are configs/streets_ablation.py's columns b, e and
e_grouped, and with SIPL d, f and f_grouped, three seeds each; the runs are table (b)'s (in its
folder, `--runs`), so only the grouped ones are new. Parameter counts and forward FLOPs (XLA's
cost analysis of one G forward, XLA's own convolutions) are given for the streets generator at
32×64 and for the paper's generator at 1024×512. Writes `--out` (default
experiments/results/crb_reading/): `table.md`, `table.json`, `samples.png`.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import streets_table  # noqa: E402

# configs/streets_ablation.py variant → row. Table (b)'s rows keep its names: a run's folder is
# named after its row, and these runs are table (b)'s.
ROWS = {
  **{v: streets_table.COLUMN_ROWS[v][0] for v in 'be'},
  'e_grouped': 'e′: grouped CRB (our reading)',
  **{v: streets_table.COLUMN_ROWS[v][0] for v in 'df'},
  'f_grouped': 'f′: grouped CRB + SIPL',
}
# SIPL does not change G: the rows with it share the costs of these.
WITHOUT_SIPL = {
  'b': 'b',
  'e': 'e',
  'e_grouped': 'e_grouped',
  'd': 'b',
  'f': 'e',
  'f_grouped': 'e_grouped',
}
EFFECTS = (
  ('CRB vs Res2 (e vs b)', 'e', 'b'),
  ('CRB vs Res2, with SIPL (f vs d)', 'f', 'd'),
  ('grouped CRB vs CRB (e′ vs e)', 'e_grouped', 'e'),
  ('grouped CRB vs CRB, with SIPL (f′ vs f)', 'f_grouped', 'f'),
  ('grouped CRB vs Res2 (e′ vs b)', 'e_grouped', 'b'),
)


def generator_cost(variant: str, paper_scale: bool) -> tuple[int, float]:
  """(parameters, forward GFLOPs of one image) of a variant's generator."""
  import jax
  import jax.numpy as jnp

  from semgan_jax import config_files
  from semgan_jax.models.inputs import label_to_generator_input
  from semgan_jax.train.semanticgan_step import build_semanticgan_models

  if paper_scale:  # configs/cityscapes.py's column, with the grouped block where asked.
    column, _, reading = variant.partition('_')
    config = config_files.load(common.ROOT / 'configs' / 'cityscapes.py', column)
    config.model.block = 'crb_grouped' if reading else config.model.block
  else:
    config = config_files.load(common.ROOT / 'configs' / 'streets_ablation.py', variant)
  config.model.conv_lowering = 'xla'
  generator, _ = build_semanticgan_models(config)
  d = config.data
  labels = jnp.zeros((1, d.height, d.width), jnp.int32)
  x = label_to_generator_input(labels, labels, d.num_classes)
  params = jax.eval_shape(generator.init, jax.random.key(0), x)
  count = sum(leaf.size for leaf in jax.tree.leaves(params))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  cost = jax.jit(generator.apply).lower(zeros, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return int(count), float(cost.get('flops', 0.0)) / 1e9


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (at least 3)')
  parser.add_argument('--fid', choices=('auto', 'on', 'off'), default='auto')
  parser.add_argument('--runs', default='', help="table (b)'s folder, where the runs are")
  parser.add_argument('--out', default='', help='output folder')
  parser.add_argument('--steps', type=int, default=0, help='train every run this many steps only')
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  fid = {'on': True, 'off': False}.get(args.fid, None)
  fid = streets_table.fid_installed() if fid is None else fid
  extra = (f'--config.train.num_steps={args.steps}',) if args.steps else ()
  results = common.ROOT / 'experiments' / 'results'
  runs_dir = pathlib.Path(args.runs or results / 'streets_ablation')
  out = pathlib.Path(args.out or results / 'crb_reading')
  start = time.perf_counter()
  common.run_all(streets_table.segmenter_runs(extra), runs_dir)
  runs = streets_table.column_runs(runs_dir, ROWS, seeds, fid, extra)
  records = common.run_all(runs, runs_dir)

  costs = {
    variant: {
      'streets': generator_cost(variant, paper_scale=False),
      'paper': generator_cost(variant, paper_scale=True),
    }
    for variant in sorted(set(WITHOUT_SIPL.values()))
  }
  costs = {variant: costs[WITHOUT_SIPL[variant]] for variant in ROWS}
  cost_lines = [
    '| row | G parameters, streets 32×64 | G GFLOPs/image, streets | G parameters, paper '
    '1024×512 | G GFLOPs/image, paper |',
    '|---|---|---|---|---|',
  ]
  for variant, row in ROWS.items():
    (p_s, f_s), (p_p, f_p) = costs[variant]['streets'], costs[variant]['paper']
    cost_lines.append(f'| {row} | {p_s:,} | {f_s:.3f} | {p_p:,} | {f_p:.1f} |')

  columns = (streets_table.FID_COLUMNS if fid else ()) + streets_table.BASE_COLUMNS
  rows = common.aggregate(records, columns)
  effects_md, effects = streets_table.effects_table(
    rows, fid, effects=EFFECTS, row_names=ROWS, paper=False
  )
  info = common.provenance()
  markdown = '\n'.join(
    [
      '### Table (c), the CRB read two ways (procedural streets at 32×64)',
      '',
      common.markdown_table(rows, columns, {}, ''),
      '',
      'Effects (Δ = first row − second, mean over seeds; "within seed variance" where Welch\'s '
      't-test at 5% does not separate the two rows):',
      '',
      effects_md,
      '',
      '\n'.join(cost_lines),
      '',
      f'Mean ± sample std over seeds {seeds}; 100 validation pairs per evaluation.',
      *common.footer(
        records, start, info, 'crb_table.py', args, ', shared with table (b) for b, d, e, f'
      ),
    ]
  )
  common.write_outputs(
    out,
    'table',
    markdown,
    {'rows': rows, 'effects': effects, 'costs': costs, 'runs': records, 'provenance': info},
  )
  common.samples_figure(runs_dir, records, out / 'samples.png')
  print(markdown)


if __name__ == '__main__':
  main()
