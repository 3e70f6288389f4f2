"""An ERFNet segmenter trained on the procedural streets photos: SIPL's frozen network, no download.

Its exported `.npz` (`train.export_path`) is what `configs/streets.py` takes as
`loss.erfnet_weights` (SIPL) and `evals.photos.segmenter_weights` (mIoU):

  python -m semgan_jax.main --config=configs/streets_erfnet.py --workdir=/tmp/erfnet_streets
  python -m semgan_jax.main --config=configs/streets.py --workdir=/tmp/streets \
    --config.loss.lambda_sipl=1 --config.loss.erfnet_weights=/tmp/erfnet_streets/erfnet_streets.npz

Variants, chosen after a colon: `--config=configs/streets_erfnet.py:<variant>`
  (none)  a CPU run of about 10 minutes on 2 cores at 64×128 (600 steps, ~5 epochs).
  32x64   the 32x64_1000 photos (1,000 pairs), 1,000 steps (8 epochs, ~2 min): the segmenters of
          configs/streets_ablation.py.
  tiny    a few steps at 32×64, for tests and smoke checks.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '', '32x64' or 'tiny'."""
  config = ml_collections.ConfigDict()
  config.task = 'segmenter'  # A task of semgan_jax.tasks.TASKS: what main.py trains.
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'streets'  # A paired data set of semgan_jax.data.DATASETS (its photos).
  config.data.config_name = '64x128'  # The builder config (resolution) to prepare and read.
  config.data.height = 64  # ERFNet needs both sizes divisible by 8.
  config.data.width = 128
  config.data.num_classes = 35  # Cityscapes label ids, mapped to the 19 training ids + void.
  config.data.batch_size = 8  # Global.
  config.data.data_dir = '~/tensorflow_datasets'

  config.model = ml_collections.ConfigDict()
  # 19 Cityscapes training ids + void (channel 19): the published model's outputs, which
  # semgan_jax.weights.erfnet loads and SIPL reads.
  config.model.num_classes = 20
  # Feature counts relative to the published ERFNet's 16/64/128 (a multiple of 1/16, >= 0.25); a
  # narrower, differently seeded network is an independent judge of generated photos.
  config.model.width = 1.0
  config.model.dtype = 'float32'
  config.model.remat = False  # Recompute the residual blocks in the backward pass (less memory).

  # erfnet_pytorch's optimizer: Adam(5e-4, (0.9, 0.999), eps 1e-8) with weight decay 1e-4 added
  # to the gradient (torch's coupled L2), lr decayed to 0 as (1 - step / num_steps)^0.9.
  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 5e-4
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'poly'  # All schedules: semgan_jax/train/optim.py.
  config.optim.power = 0.9  # The poly schedule's exponent (1: linear decay to 0).
  config.optim.decay_start_step = 0
  config.optim.decay_steps = 0  # Steps of the decay to 0 (0: until train.num_steps).

  config.train = ml_collections.ConfigDict()
  # ~1.1 steps/s on 2 CPU cores (XLA optimized): about 9 minutes, ~5 epochs of the 1000 pairs.
  config.train.num_steps = 600
  config.train.log_every_steps = 50
  config.train.ckpt_every_steps = 300
  config.train.max_checkpoints = 3
  # A step with a non-finite loss stops the run (nothing is saved from it); True skips its update
  # instead, counted in train/skipped_nonfinite.
  config.train.skip_nonfinite_steps = False
  # Where the trained variables go, in the format of semgan_jax.weights.erfnet ('' =
  # <workdir>/erfnet_streets.npz); written at the end of training.
  config.train.export_path = ''

  # Validation mIoU over the 19 training ids (void ignored): every `every_steps` and at the end
  # of training (0: only by --mode=eval).
  config.evals = ml_collections.ConfigDict()
  config.evals.miou = ml_collections.ConfigDict()
  config.evals.miou.type = 'miou'  # Fields and defaults: semgan_jax/evaluation/miou_evaluator.py.
  config.evals.miou.every_steps = 300
  config.evals.miou.split = 'validation'
  config.evals.miou.num_images = 0  # 0: the whole split (100 pairs at 64x128).
  config.evals.miou.batch_size = 8  # Global; a multiple of the device count.

  if variant == '32x64':
    config.data.config_name = '32x64_1000'
    config.data.height = 32
    config.data.width = 64
    config.train.num_steps = 1_000
    config.train.ckpt_every_steps = 500
    config.evals.miou.every_steps = 500
  elif variant == 'tiny':
    config.data.config_name = '32x64'
    config.data.height = 32
    config.data.width = 64
    config.train.num_steps = 4
    config.train.log_every_steps = 2
    config.train.ckpt_every_steps = 4
    config.evals.miou.every_steps = 4
    config.evals.miou.num_images = 12  # Of the 20 validation pairs; a padded last batch.
  elif variant:
    raise ValueError(
      f"configs/streets_erfnet.py: unknown variant {variant!r}; expected '', '32x64' or 'tiny'."
    )
  return config
