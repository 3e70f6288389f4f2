"""SemGAN (latent → label map) on the procedural streets' layouts: the dream chain's first half.

It learns the label maps of `configs/streets.py`'s data set at its resolution (64×128), over the
13 classes of the `streets` label set (the 12 Cityscapes label ids the scenes draw, and 'other'),
so that `--mode=dream` (configs/dream_streets.py) can hand its maps to the SemanticGAN trained by
configs/streets.py. Every field not set here, and its comment, is configs/shapes.py's.

Variants, chosen after a colon: `--config=configs/streets_semgan.py:<variant>`
  (none)  a CPU run of about 10 minutes on 2 cores: shapes.py:quick's network, batch 16,
          2,400 steps.
  tiny    a few steps of a minute network at 32×64, for tests and smoke checks.
"""

import ml_collections

from semgan_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '' or 'tiny'."""
  if variant not in ('', 'tiny'):
    raise ValueError(
      f"configs/streets_semgan.py: unknown variant {variant!r}; expected '' or 'tiny'."
    )
  config = config_files.sibling(__file__, 'shapes', 'tiny' if variant == 'tiny' else 'quick')
  config.task = 'semgan'  # A task of semgan_jax.tasks.TASKS.

  data = config.data
  del data['image_size']  # Non-square maps: height and width instead.
  data.name = 'streets'  # Its label maps only (photos and instances are not read).
  data.config_name = '64x128'  # The builder config (resolution) to prepare and read.
  data.height = 64
  data.width = 128
  # The label-id maps read as a compact class set (semgan_jax/data/label_sets.py): one softmax
  # channel per class the scenes draw, mapped back to label ids by the dream chain.
  data.label_set = 'streets'
  data.num_classes = 13

  # The quick schedule, shortened to fit a CPU: 13 classes make a 64x128 step 3x a shapes step
  # (the head, D's first layer and the instance noise grow with the class count), so batch 16
  # and 2,400 steps: noise decayed to 0 by step 1,200, the lr to 0 over the last 800 steps.
  data.batch_size = 16
  config.train.num_steps = 2_400
  config.loss.instance_noise_steps = 1_200
  config.optim.decay_start_step = 1_600
  config.optim.decay_steps = 800
  config.train.ckpt_every_steps = 800
  config.train.sample_every_steps = 400
  # 1,000 training maps at 64x128: the evaluation compares 512 of them with 512 generated ones,
  # at the end of training.
  config.evals.maps.every_steps = 2_400
  config.evals.maps.num_images = 512
  if variant == 'tiny':
    data.config_name = '32x64'
    data.height = 32
    data.width = 64
    data.batch_size = 8
    config.train.num_steps = 4
    config.train.ckpt_every_steps = 2
    config.train.sample_every_steps = 2
    config.evals.maps.every_steps = 0
    config.evals.maps.num_images = 16
  return config
