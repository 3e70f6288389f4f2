"""Paper 1's Table 1 ablation (residual block × SIPL) on the procedural streets at 32×64, on a CPU.

The reproduction table's runs (experiments/streets_table.py runs each column with three seeds):
configs/streets.py's network (every field not set here, and its comment, is that file's) on the
32x64_1000 streets (1,000 training and 100 validation pairs), 1,000 steps (4 + 4 epochs), about
3-5 minutes a run on 2 cores. Two ERFNets trained on the same photos score the generated photos:
`photos` uses SIPL's own network (`sipl_segmenter`), `judge` an independent one (another seed,
3/4 of the width, `judge_segmenter`) that SIPL never saw, as the paper's mIoU is. Train them
first:

  python -m semgan_jax.main --config=configs/streets_erfnet.py:32x64 --workdir=/tmp/seg_sipl
  python -m semgan_jax.main --config=configs/streets_erfnet.py:32x64 --workdir=/tmp/seg_judge \
    --config.seed=1 --config.model.width=0.75 --config.train.num_steps=2000
  python -m semgan_jax.main --config=configs/streets_ablation.py:f --workdir=/tmp/f \
    --config.sipl_segmenter=/tmp/seg_sipl/erfnet_streets.npz \
    --config.judge_segmenter=/tmp/seg_judge/erfnet_streets.npz

Variants, chosen after a colon: `--config=configs/streets_ablation.py:<column>`
  a-f        Table 1's columns (configs/cityscapes.py's ABLATION): a ResNet, b Res2, e CRB without
             SIPL; c, d, f the same with SIPL (λ2 = 1).
  e_grouped  column e with our grouped reading of the CRB (model.block='crb_grouped').
  f_grouped  column f with it.
FID is off (`--config.evals.photos.fid=True` adds it, with the converted Inception weights).
"""

import ml_collections

from semgan_jax import config_files


def get_config(variant: str = 'f') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is a column a-f, or e_grouped / f_grouped."""
  column, _, reading = (variant or 'f').partition('_')
  if column not in tuple('abcdef') or reading not in ('', 'grouped') or (reading and column < 'e'):
    raise ValueError(
      f'configs/streets_ablation.py: unknown variant {variant!r}; expected one of a-f, '
      'e_grouped or f_grouped.'
    )
  paper = config_files.sibling(__file__, 'cityscapes', column)  # Its block and SIPL, Table 1's.
  config = config_files.sibling(__file__, 'streets')

  config.data.config_name = '32x64_1000'
  config.data.height = 32
  config.data.width = 64

  config.model.block = 'crb_grouped' if reading else paper.model.block
  config.model.upsample = 'transpose'  # The paper's (configs/streets.py now resizes).
  config.optim.epochs_constant = 4  # 1,000 steps of batch 8.
  config.optim.epochs_decay = 4
  # The ERFNets' exports (configs/streets_erfnet.py at 32x64); both are needed by every column.
  config.sipl_segmenter = ml_collections.FieldReference('', field_type=str)
  config.judge_segmenter = ml_collections.FieldReference('', field_type=str)
  config.loss.lambda_sipl = paper.loss.lambda_sipl  # λ2: 1 in c, d, f; 0 otherwise
  config.loss.lambda_l1 = 0.0  # The paper's losses (configs/streets.py adds pix2pix's L1).
  config.loss.erfnet_weights = config.get_ref('sipl_segmenter')

  config.train.ckpt_every_steps = 1_000
  config.train.sample_every_steps = 500

  photos = config.evals.photos
  photos.every_steps = 1_000  # At the end of training (step 1,000).
  photos.miou = True
  photos.segmenter_weights = config.get_ref('sipl_segmenter')
  judge = photos.copy_and_resolve_references()
  judge.swd = False
  judge.fid = False
  judge.segmenter_weights = config.get_ref('judge_segmenter')
  config.evals.judge = judge
  return config
